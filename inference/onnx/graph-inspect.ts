import { KvpackError } from '../../common/errors.js';
import { OnnxDataType, toNumber, type OnnxGraph, type OnnxModel, type OnnxValueInfo } from './proto.js';

/** onnxruntime contrib operators that fuse attention with their own cache conventions. */
const fusedAttentionOps = new Set([
  'GroupQueryAttention',
  'MultiHeadAttention',
  'Attention',
  'PackedAttention',
  'PackedMultiHeadAttention',
  'DecoderMaskedMultiHeadAttention',
  'DecoderMaskedSelfAttention',
  'SparseAttention',
  'PagedAttention',
]);

/** What the loader needs to know about a decoder graph's interface. */
export interface DecoderGraphInterface {
  inputNames: string[];
  outputNames: string[];
  hasInputIds: boolean;
  hasInputsEmbeds: boolean;
  hasPositionIds: boolean;
  hasLogitsToKeep: boolean;
  /** `use_cache_branch` input of merged decoder exports (`decoder_model_merged.onnx`). */
  hasUseCacheBranch: boolean;
  numLayers: number;
  /** Static `[kv_heads, head_dim]` of the cache inputs when the graph declares them. */
  kvHeads: number | undefined;
  headDim: number | undefined;
}

/**
 * Reads a decoder graph's inputs and outputs and rejects graphs kvpack cannot drive: fused
 * attention operators, float16 caches, and missing cache or logits tensors.
 */
export function inspectDecoderGraph(model: OnnxModel, source: string): DecoderGraphInterface {
  const graph = model.graph;
  rejectFusedAttention(graph, source);
  const initializerNames = new Set(graph.initializer.map((t) => t.name));
  const inputs = graph.input.filter((input) => !initializerNames.has(input.name));
  const inputNames = inputs.map((input) => input.name);
  const outputNames = graph.output.map((output) => output.name);

  const pastKeys = inputs.filter((input) => /^past_key_values\.\d+\.key$/.test(input.name));
  if (pastKeys.length === 0 || !outputNames.includes('logits')) {
    throw new KvpackError(
      'UNSUPPORTED_ONNX_GRAPH',
      `${source} is not a decoder with a KV cache: it needs past_key_values.N.key|value inputs and logits and ` +
        `present.N.key|value outputs (an Optimum "text-generation-with-past" export). Inputs: ${inputNames.join(', ')}.`,
      { inputs: inputNames, outputs: outputNames },
    );
  }
  for (let layer = 0; layer < pastKeys.length; layer++) {
    for (const name of [`past_key_values.${layer}.value`, `present.${layer}.key`, `present.${layer}.value`]) {
      if (!inputNames.includes(name) && !outputNames.includes(name)) {
        throw new KvpackError('UNSUPPORTED_ONNX_GRAPH', `${source} lacks ${name}; every layer needs its past and present key and value.`);
      }
    }
  }
  const cacheType = pastKeys[0].type?.tensorType?.elemType;
  if (cacheType !== OnnxDataType.FLOAT) {
    throw new KvpackError(
      'UNSUPPORTED_ONNX_GRAPH',
      `${source} keeps its KV cache as ONNX data type ${cacheType}; kvpack runs float32 caches. Use the float32 ` +
        'export (onnx/model.onnx in Transformers.js folders); weight-quantized variants with a float32 cache also work.',
      { cacheType },
    );
  }
  const [, kvHeads, , headDim] = staticDims(pastKeys[0]);
  return {
    inputNames,
    outputNames,
    hasInputIds: inputNames.includes('input_ids'),
    hasInputsEmbeds: inputNames.includes('inputs_embeds'),
    hasPositionIds: inputNames.includes('position_ids'),
    hasLogitsToKeep: inputNames.includes('num_logits_to_keep'),
    hasUseCacheBranch: inputNames.includes('use_cache_branch'),
    numLayers: pastKeys.length,
    kvHeads,
    headDim,
  };
}

function rejectFusedAttention(graph: OnnxGraph, source: string): void {
  const fused = graph.node.find((node) => node.domain === 'com.microsoft' && fusedAttentionOps.has(node.opType));
  if (!fused) {
    return;
  }
  throw new KvpackError(
    'UNSUPPORTED_ONNX_GRAPH',
    `${source} uses the fused operator com.microsoft.${fused.opType} (node ${fused.name ?? '?'}). Such graphs ` +
      'derive rotary positions from the attention mask (seqlens_k = total length - 1, total_sequence_length) ' +
      'and may share one max-length buffer between past and present, so kvpack cannot feed them explicit ' +
      'position_ids or spliced caches. Use an export built from standard ONNX operators, such as ' +
      '`optimum-cli export onnx --task text-generation-with-past` without `--optimize`, or the float32 ' +
      'onnx/model.onnx of a Transformers.js folder.',
    { opType: fused.opType },
  );
}

function staticDims(info: OnnxValueInfo): Array<number | undefined> {
  const dims = info.type?.tensorType?.shape?.dim ?? [];
  // Decoded messages carry own properties only for fields present in the file.
  return dims.map((dim) => (Object.hasOwn(dim, 'dimValue') ? toNumber(dim.dimValue) : undefined));
}
