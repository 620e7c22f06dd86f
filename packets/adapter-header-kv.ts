import { KvpackError } from '../common/errors.js';
import { concatFloat32 } from '../common/typed-arrays.js';
import { KvCache, type KvLayout } from '../inference/kv-cache.js';
import type { Float32Tensor } from './safetensors.js';

/**
 * The safetensors form of a conditioned-kv adapter's header cache: F32 tensors `header_keys` and
 * `header_values`, each `[layers, kv_heads, P, head_dim]`, which stack the per-layer
 * `[1, kv_heads, P, head_dim]` arrays of a `KvCache` along the first axis.
 */

export const HEADER_KEYS_TENSOR = 'header_keys';
export const HEADER_VALUES_TENSOR = 'header_values';
/** The optional first-slot header cache of a conditioned-kv adapter uses these names with this prefix. */
export const FIRST_SLOT_PREFIX = 'first_';

/** Stacks the layers of a header cache into the two `[layers, kv_heads, P, head_dim]` tensors. */
export function headerKvTensors(headerKv: KvCache, prefix = ''): Map<string, Float32Tensor> {
  const { numLayers, numKvHeads, headDim } = headerKv.layout;
  const shape = [numLayers, numKvHeads, headerKv.length, headDim];
  return new Map<string, Float32Tensor>([
    [prefix + HEADER_KEYS_TENSOR, { shape, data: concatFloat32(headerKv.keys) }],
    [prefix + HEADER_VALUES_TENSOR, { shape: [...shape], data: concatFloat32(headerKv.values) }],
  ]);
}

/** Reads the first-slot header cache (`first_header_keys`, `first_header_values`), or undefined when the file has none. */
export function readFirstSlotHeaderKv(tensors: ReadonlyMap<string, Float32Tensor>, file: string, expectedLayout?: KvLayout): KvCache | undefined {
  const keys = FIRST_SLOT_PREFIX + HEADER_KEYS_TENSOR;
  const values = FIRST_SLOT_PREFIX + HEADER_VALUES_TENSOR;
  if (!tensors.has(keys) && !tensors.has(values)) {
    return undefined;
  }
  const missing = tensors.has(keys) ? values : keys;
  if (!tensors.has(keys) || !tensors.has(values)) {
    throw new KvpackError(
      'ADAPTER_INVALID',
      `${file} has no tensor named ${missing}; a first-slot header needs both ${keys} and ${values} of shape [layers, kv_heads, P, head_dim], or neither.`,
      { file },
    );
  }
  const renamed = new Map<string, Float32Tensor>();
  const keysTensor = tensors.get(keys);
  const valuesTensor = tensors.get(values);
  if (keysTensor) renamed.set(HEADER_KEYS_TENSOR, keysTensor);
  if (valuesTensor) renamed.set(HEADER_VALUES_TENSOR, valuesTensor);
  return readHeaderKv(renamed, `${file} (first-slot header)`, expectedLayout);
}

/**
 * Reads the header cache from the tensors of `file`. Raises ADAPTER_INVALID when a tensor is
 * missing, is not 4-D, has an empty axis, or the two shapes differ, and when the file also contains
 * input-embedding vectors. Raises ADAPTER_MISMATCH, naming both shapes, when `expectedLayout` is
 * given and differs from the tensors' layers, KV heads or head size.
 */
export function readHeaderKv(tensors: ReadonlyMap<string, Float32Tensor>, file: string, expectedLayout?: KvLayout): KvCache {
  rejectEmbeddingVectors(tensors, file);
  const keys = requireHeaderTensor(tensors, HEADER_KEYS_TENSOR, file);
  const values = requireHeaderTensor(tensors, HEADER_VALUES_TENSOR, file);
  if (keys.shape.join() !== values.shape.join()) {
    throw new KvpackError(
      'ADAPTER_INVALID',
      `${file}: tensor ${HEADER_KEYS_TENSOR} has shape [${keys.shape.join(', ')}] but ${HEADER_VALUES_TENSOR} has ` +
        `[${values.shape.join(', ')}]; the keys and values of a header cache must have the same shape.`,
      { file },
    );
  }
  const [numLayers, numKvHeads, length, headDim] = keys.shape;
  if (length < 1) {
    throw new KvpackError(
      'ADAPTER_INVALID',
      `${file}: tensor ${HEADER_KEYS_TENSOR} has shape [${keys.shape.join(', ')}] with P = 0; a conditioned-kv adapter needs at least one header entry per layer.`,
      { file },
    );
  }
  if (numLayers < 1 || numKvHeads < 1 || headDim < 1) {
    throw new KvpackError(
      'ADAPTER_INVALID',
      `${file}: tensor ${HEADER_KEYS_TENSOR} has shape [${keys.shape.join(', ')}] with an empty axis; layers, kv_heads and head_dim must each be at least 1.`,
      { file },
    );
  }
  const layout: KvLayout = { numLayers, numKvHeads, headDim };
  if (expectedLayout) checkLayout(layout, length, expectedLayout, file);
  return new KvCache(layout, length, splitLayers(keys.data, numLayers), splitLayers(values.data, numLayers));
}

function rejectEmbeddingVectors(tensors: ReadonlyMap<string, Float32Tensor>, file: string): void {
  for (const name of ['header', 'trailer']) {
    if (tensors.has(name)) {
      throw new KvpackError(
        'ADAPTER_INVALID',
        `${file}: a conditioned-kv adapter has no input-embedding vectors, but the file holds tensor ${name}; ` +
          `keep only ${HEADER_KEYS_TENSOR} and ${HEADER_VALUES_TENSOR}, or use the reference or conditioned variant for vectors.`,
        { file },
      );
    }
  }
}

function requireHeaderTensor(tensors: ReadonlyMap<string, Float32Tensor>, name: string, file: string): Float32Tensor {
  const tensor = tensors.get(name);
  if (!tensor) {
    throw new KvpackError(
      'ADAPTER_INVALID',
      `${file} has no tensor named ${name}; a conditioned-kv adapter needs F32 tensors ${HEADER_KEYS_TENSOR} and ` +
        `${HEADER_VALUES_TENSOR} of shape [layers, kv_heads, P, head_dim].`,
      { file },
    );
  }
  if (tensor.shape.length !== 4) {
    throw new KvpackError(
      'ADAPTER_INVALID',
      `${file}: tensor ${name} has shape [${tensor.shape.join(', ')}]; expected 4 axes [layers, kv_heads, P, head_dim].`,
      { file },
    );
  }
  return tensor;
}

function checkLayout(layout: KvLayout, length: number, expected: KvLayout, file: string): void {
  if (layout.numLayers === expected.numLayers && layout.numKvHeads === expected.numKvHeads && layout.headDim === expected.headDim) {
    return;
  }
  const adapterShape = `[${layout.numLayers}, ${layout.numKvHeads}, ${length}, ${layout.headDim}]`;
  const modelShape = `[${expected.numLayers}, ${expected.numKvHeads}, ${length}, ${expected.headDim}]`;
  throw new KvpackError(
    'ADAPTER_MISMATCH',
    `${file}: the header cache has shape ${adapterShape} as [layers, kv_heads, P, head_dim], but the model's KV layout needs ` +
      `${modelShape}; the adapter belongs to another model. Train or import a conditioned-kv adapter for this model.`,
    { file, adapterLayout: layout, modelLayout: expected },
  );
}

/** Splits a `[layers, kv_heads, P, head_dim]` array into one copied `[1, kv_heads, P, head_dim]` array per layer. */
function splitLayers(data: Float32Array, numLayers: number): Float32Array[] {
  const size = data.length / numLayers;
  return Array.from({ length: numLayers }, (_, layer) => data.slice(layer * size, (layer + 1) * size));
}
