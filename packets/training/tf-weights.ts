import { readFileSync } from 'node:fs';
import path from 'node:path';
import { KvpackError } from '../../common/errors.js';
import { weightSpecs, type DecoderArchitecture } from '../../inference/architecture.js';
import type { ModelFolder } from '../../inference/model-folder.js';
import { decodeModel, OnnxDataType, type OnnxTensor } from '../../inference/onnx/proto.js';

/**
 * Reads the decoder weights of a model folder from its ONNX initializers, by Hugging Face name
 * (`model.layers.0.self_attn.q_proj.weight`, …) in `[out_features, in_features]` layout, as the
 * folders that kvpack writes store them. Weights in external data files are read too.
 */
export function readDecoderWeights(folder: ModelFolder): Map<string, Float32Array> {
  const model = decodeModel(readFileSync(folder.onnxPath));
  const byName = new Map(model.graph.initializer.map((tensor) => [tensor.name, tensor]));
  const weights = new Map<string, Float32Array>();
  for (const spec of weightSpecs(folder.arch)) {
    const tensor = byName.get(spec.name);
    if (!tensor) {
      throw new KvpackError(
        'UNSUPPORTED_ONNX_GRAPH',
        `${folder.onnxPath} has no initializer named ${spec.name}. Adapter training reads the weights by their ` +
          'Hugging Face names, as model folders written by `kvpack model import-llama2c` or `init-random` store them; ' +
          'exports that rename or fold weights cannot be trained on.',
        { weight: spec.name },
      );
    }
    const values = readFloatTensor(tensor, folder.onnxPath);
    const expected = spec.shape.reduce((a, b) => a * b, 1);
    if (values.length !== expected) {
      throw new KvpackError(
        'UNSUPPORTED_ONNX_GRAPH',
        `${folder.onnxPath}: initializer ${spec.name} holds ${values.length} values, expected ${expected} for ` +
          `[${spec.shape.join(', ')}] from config.json.`,
      );
    }
    weights.set(spec.name, values);
  }
  return weights;
}

function readFloatTensor(tensor: OnnxTensor, onnxPath: string): Float32Array {
  if (tensor.dataType !== OnnxDataType.FLOAT) {
    throw new KvpackError(
      'UNSUPPORTED_ONNX_GRAPH',
      `${onnxPath}: initializer ${tensor.name} has ONNX data type ${tensor.dataType}; adapter training reads float32 weights only.`,
    );
  }
  const external = tensor.externalData;
  if (external && external.length > 0) {
    return readExternalFloats(tensor.name, external, onnxPath);
  }
  if (tensor.rawData && tensor.rawData.byteLength > 0) {
    return copyFloats(tensor.rawData);
  }
  return Float32Array.from(tensor.floatData ?? []);
}

function readExternalFloats(name: string, entries: Array<{ key: string; value: string }>, onnxPath: string): Float32Array {
  const field = (key: string) => entries.find((entry) => entry.key === key)?.value;
  const location = field('location');
  if (!location) {
    throw new KvpackError('UNSUPPORTED_ONNX_GRAPH', `${onnxPath}: initializer ${name} has external data without a location.`);
  }
  const file = readFileSync(path.resolve(path.dirname(onnxPath), location));
  const offset = Number(field('offset') ?? 0);
  const length = field('length') === undefined ? file.byteLength - offset : Number(field('length'));
  return copyFloats(file.subarray(offset, offset + length));
}

/** Copies little-endian float32 bytes into an aligned array. */
function copyFloats(bytes: Uint8Array): Float32Array {
  const out = new Float32Array(bytes.byteLength / 4);
  new Uint8Array(out.buffer).set(bytes.subarray(0, out.length * 4));
  return out;
}

/** Rejects model types whose decoder layers the training pass does not mirror. */
export function assertTrainableArchitecture(arch: DecoderArchitecture, source: string): void {
  if (arch.modelType !== 'llama' && arch.modelType !== 'qwen2' && arch.modelType !== 'mistral') {
    throw new KvpackError(
      'UNSUPPORTED_ARCHITECTURE',
      `${source}: adapter training mirrors the Llama and Qwen2 decoder layers that kvpack builds; model_type ${arch.modelType} is not supported.`,
    );
  }
}
