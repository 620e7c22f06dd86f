import { ropeInverseFrequencies, weightSpecs, type DecoderArchitecture } from '../architecture.js';
import { GraphBuilder } from './graph-builder.js';
import { OnnxDataType, type OnnxModel } from './proto.js';

/** The opset the builder targets; onnxruntime-node 1.30 runs it on every execution provider. */
export const DECODER_OPSET = 17;

/** The most negative float32, used as the additive mask for positions a query may not attend to. */
const MASKED_SCORE = -3.4028234663852886e38;

/** Weights by Hugging Face name, linear weights in `[out_features, in_features]` layout. */
export type WeightMap = ReadonlyMap<string, Float32Array>;

export interface DecoderGraphOptions {
  /**
   * `input_ids`: the graph looks up token embeddings itself, as Optimum and Transformers.js
   * exports do. `inputs_embeds`: the graph takes embedding vectors `[batch, seq, hidden]`.
   */
  embeddingInput: 'input_ids' | 'inputs_embeds';
  /**
   * `logits` (default): the language-model head, with the `num_logits_to_keep` input.
   * `last_hidden_state`: the final-norm hidden states `[batch, seq, hidden]` of every position and
   * no head, as a Transformers.js base model (`LlamaModel`) export has them for feature extraction.
   */
  output?: 'logits' | 'last_hidden_state';
}

/** Tensor names of the Optimum / Transformers.js decoder export convention. */
export const pastKeyName = (layer: number) => `past_key_values.${layer}.key`;
export const pastValueName = (layer: number) => `past_key_values.${layer}.value`;
export const presentKeyName = (layer: number) => `present.${layer}.key`;
export const presentValueName = (layer: number) => `present.${layer}.value`;

/**
 * Builds the ONNX graph of a Llama-family decoder (Llama, Qwen2 with Q/K/V bias) with an explicit
 * KV cache. Inputs: `input_ids` or `inputs_embeds`, `attention_mask [batch, past + seq]`,
 * `position_ids [batch, seq]`, `past_key_values.{i}.key|value [batch, kv_heads, past, head_dim]`
 * and `num_logits_to_keep` (0 keeps every position). Outputs: `logits [batch, kept, vocab]` and
 * `present.{i}.key|value [batch, kv_heads, past + seq, head_dim]`; keys are stored after RoPE.
 */
export function buildDecoderGraph(arch: DecoderArchitecture, weights: WeightMap, options: DecoderGraphOptions): OnnxModel {
  const g = new GraphBuilder();
  const shapes = new Map(weightSpecs(arch).map((spec) => [spec.name, spec.shape]));
  const weight = (name: string) => addWeight(g, weights, shapes, name);

  // 1. Inputs, with the axis names Optimum uses.
  const batch = 'batch_size';
  const seq = 'sequence_length';
  const inputIds = options.embeddingInput === 'input_ids' ? g.input('input_ids', OnnxDataType.INT64, [batch, seq]) : undefined;
  const inputsEmbeds =
    options.embeddingInput === 'inputs_embeds'
      ? g.input('inputs_embeds', OnnxDataType.FLOAT, [batch, seq, arch.hiddenSize])
      : undefined;
  const attentionMask = g.input('attention_mask', OnnxDataType.INT64, [batch, 'total_sequence_length']);
  const positionIds = g.input('position_ids', OnnxDataType.INT64, [batch, seq]);
  for (let layer = 0; layer < arch.numLayers; layer++) {
    for (const name of [pastKeyName(layer), pastValueName(layer)]) {
      g.input(name, OnnxDataType.FLOAT, [batch, arch.numKvHeads, 'past_sequence_length', arch.headDim]);
    }
  }
  const hiddenOutput = options.output === 'last_hidden_state';
  const logitsToKeep = hiddenOutput ? undefined : g.input('num_logits_to_keep', OnnxDataType.INT64, []);

  // 2. Token embeddings, rotary tables and the attention mask shared by every layer.
  let hidden = inputsEmbeds ?? g.op('Gather', [weight('model.embed_tokens.weight'), inputIds as string], { axis: 0 });
  const seqSource = inputIds ?? positionIds;
  const rope = buildRotaryTables(g, arch, positionIds);
  const mask = buildAttentionMask(g, attentionMask, seqSource);

  // 3. Decoder layers.
  for (let layer = 0; layer < arch.numLayers; layer++) {
    hidden = buildDecoderLayer(g, arch, weight, layer, hidden, rope, mask);
  }

  // 4. Final norm, then either the hidden states themselves or the kept positions through the output head.
  const normed = rmsNorm(g, hidden, weight('model.norm.weight'), arch.rmsNormEps);
  if (logitsToKeep === undefined) {
    g.op('Identity', [normed], {}, 'last_hidden_state');
    g.output('last_hidden_state', OnnxDataType.FLOAT, [batch, seq, arch.hiddenSize]);
  } else {
    const kept = sliceLastPositions(g, normed, logitsToKeep);
    const head = arch.tieWordEmbeddings ? weight('model.embed_tokens.weight') : weight('lm_head.weight');
    g.op('MatMul', [kept, g.op('Transpose', [head], { perm: [1, 0] })], {}, 'logits');
    g.output('logits', OnnxDataType.FLOAT, [batch, 'logits_length', arch.vocabSize]);
  }
  for (let layer = 0; layer < arch.numLayers; layer++) {
    for (const name of [presentKeyName(layer), presentValueName(layer)]) {
      g.output(name, OnnxDataType.FLOAT, [batch, arch.numKvHeads, 'total_sequence_length', arch.headDim]);
    }
  }
  return g.model('kvpack_decoder', DECODER_OPSET, { model_type: arch.modelType, embedding_input: options.embeddingInput });
}

type ShapeMap = ReadonlyMap<string, number[]>;

/** Adds a weight as an initializer once, checking its size against the architecture. */
function addWeight(g: GraphBuilder, weights: WeightMap, shapes: ShapeMap, name: string): string {
  if (g.initializers.some((t) => t.name === name)) {
    return name;
  }
  const data = weights.get(name);
  const shape = shapes.get(name);
  if (!data || !shape) {
    throw new Error(`weight ${name} is missing from the weight map or the architecture`);
  }
  const size = shape.reduce((a, b) => a * b, 1);
  if (data.length !== size) {
    throw new Error(`weight ${name} has ${data.length} values, expected ${size} for shape [${shape.join(', ')}]`);
  }
  return g.initializer(name, data, shape);
}

interface RotaryTables {
  /** `[batch, seq, 1, head_dim]`, broadcast over heads. */
  cos: string;
  sin: string;
}

function buildRotaryTables(g: GraphBuilder, arch: DecoderArchitecture, positionIds: string): RotaryTables {
  const invFreq = g.float32(Array.from(ropeInverseFrequencies(arch)), [arch.headDim / 2]);
  const positions = g.op('Unsqueeze', [g.op('Cast', [positionIds], { to: OnnxDataType.FLOAT }), g.int64([-1])]);
  const freqs = g.op('Mul', [positions, invFreq]);
  const angles = g.op('Concat', [freqs, freqs], { axis: -1 });
  const headAxis = g.int64([2]);
  return {
    cos: g.op('Unsqueeze', [g.op('Cos', [angles]), headAxis]),
    sin: g.op('Unsqueeze', [g.op('Sin', [angles]), headAxis]),
  };
}

/**
 * Builds the additive mask `[batch, 1, 1, seq, past + seq]`: query i (cache index past + i) sees
 * cache entries 0..past+i whose attention_mask is 1.
 */
function buildAttentionMask(g: GraphBuilder, attentionMask: string, seqSource: string): string {
  const pastLength = g.op('Shape', [pastKeyName(0)], { start: 2, end: 3 });
  const seqLength = g.op('Shape', [seqSource], { start: 1, end: 2 });
  const totalLength = g.op('Add', [pastLength, seqLength]);
  const scalar = (name: string) => g.op('Squeeze', [name, g.int64([0])]);
  const zero = g.int64([0], []);
  const one = g.int64([1], []);
  const rows = g.op('Range', [scalar(pastLength), scalar(totalLength), one]);
  const cols = g.op('Range', [zero, scalar(totalLength), one]);
  const causal = g.op('LessOrEqual', [g.op('Unsqueeze', [cols, g.int64([0])]), g.op('Unsqueeze', [rows, g.int64([1])])]);
  const padding = g.op('Unsqueeze', [g.op('Cast', [attentionMask], { to: OnnxDataType.BOOL }), g.int64([1])]);
  const allowed = g.op('Unsqueeze', [g.op('And', [padding, causal]), g.int64([1, 2])]);
  return g.op('Where', [allowed, g.float32([0], []), g.float32([MASKED_SCORE], [])]);
}

function buildDecoderLayer(
  g: GraphBuilder,
  arch: DecoderArchitecture,
  weight: (name: string) => string,
  layer: number,
  hidden: string,
  rope: RotaryTables,
  mask: string,
): string {
  const layerWeight = (suffix: string) => weight(`model.layers.${layer}.${suffix}`);
  const { numHeads, numKvHeads, headDim } = arch;
  const groups = numHeads / numKvHeads;

  // Projections to [batch, seq, heads, head_dim].
  const x = rmsNorm(g, hidden, layerWeight('input_layernorm.weight'), arch.rmsNormEps);
  const project = (name: string, heads: number) => {
    let out = linear(g, x, layerWeight(`self_attn.${name}.weight`));
    if (arch.attentionBias) {
      out = g.op('Add', [out, layerWeight(`self_attn.${name}.bias`)]);
    }
    return g.op('Reshape', [out, g.int64([0, 0, heads, headDim])]);
  };
  const q = applyRope(g, project('q_proj', numHeads), rope, headDim);
  const k = applyRope(g, project('k_proj', numKvHeads), rope, headDim);
  const v = project('v_proj', numKvHeads);

  // The cache: past entries followed by this call's keys and values, [batch, kv_heads, total, head_dim].
  const toCacheLayout = (t: string) => g.op('Transpose', [t], { perm: [0, 2, 1, 3] });
  const presentKey = g.op('Concat', [pastKeyName(layer), toCacheLayout(k)], { axis: 2 }, presentKeyName(layer));
  const presentValue = g.op('Concat', [pastValueName(layer), toCacheLayout(v)], { axis: 2 }, presentValueName(layer));

  // Grouped-query attention: query head h = kv * groups + j reads kv head `kv`, so queries are
  // viewed as [batch, kv_heads, groups, seq, head_dim] and keys broadcast over the groups axis.
  const queries = g.op('Transpose', [g.op('Reshape', [q, g.int64([0, 0, numKvHeads, groups, headDim])])], {
    perm: [0, 2, 3, 1, 4],
  });
  const scaled = g.op('Mul', [queries, g.float32([1 / Math.sqrt(headDim)], [])]);
  const groupAxis = g.int64([2]);
  const keysT = g.op('Transpose', [g.op('Unsqueeze', [presentKey, groupAxis])], { perm: [0, 1, 2, 4, 3] });
  const scores = g.op('Add', [g.op('MatMul', [scaled, keysT]), mask]);
  const probs = g.op('Softmax', [scores], { axis: -1 });
  const context = g.op('MatMul', [probs, g.op('Unsqueeze', [presentValue, groupAxis])]);
  const merged = g.op('Reshape', [
    g.op('Transpose', [context], { perm: [0, 3, 1, 2, 4] }),
    g.int64([0, 0, numHeads * headDim]),
  ]);
  const afterAttention = g.op('Add', [hidden, linear(g, merged, layerWeight('self_attn.o_proj.weight'))]);

  // SwiGLU MLP.
  const y = rmsNorm(g, afterAttention, layerWeight('post_attention_layernorm.weight'), arch.rmsNormEps);
  const gate = linear(g, y, layerWeight('mlp.gate_proj.weight'));
  const activated = g.op('Mul', [gate, g.op('Sigmoid', [gate])]);
  const up = linear(g, y, layerWeight('mlp.up_proj.weight'));
  const down = linear(g, g.op('Mul', [activated, up]), layerWeight('mlp.down_proj.weight'));
  return g.op('Add', [afterAttention, down]);
}

/** `x @ weight^T` for a weight in `[out, in]` layout; onnxruntime folds the transpose at load. */
function linear(g: GraphBuilder, x: string, weight: string): string {
  return g.op('MatMul', [x, g.op('Transpose', [weight], { perm: [1, 0] })]);
}

/** RMSNorm as Hugging Face computes it: `x * rsqrt(mean(x^2) + eps) * weight`. */
function rmsNorm(g: GraphBuilder, x: string, weight: string, eps: number): string {
  const meanSquare = g.op('ReduceMean', [g.op('Mul', [x, x])], { axes: [-1], keepdims: 1 });
  const inverseRms = g.op('Reciprocal', [g.op('Sqrt', [g.op('Add', [meanSquare, g.float32([eps], [])])])]);
  return g.op('Mul', [g.op('Mul', [x, inverseRms]), weight]);
}

/** Rotary embedding in the `rotate_half` convention on `[batch, seq, heads, head_dim]`. */
function applyRope(g: GraphBuilder, x: string, rope: RotaryTables, headDim: number): string {
  const half = headDim / 2;
  const [first, second] = g.opMulti('Split', [x, g.int64([half, half])], 2, { axis: -1 });
  const rotated = g.op('Concat', [g.op('Neg', [second]), first], { axis: -1 });
  return g.op('Add', [g.op('Mul', [x, rope.cos]), g.op('Mul', [rotated, rope.sin])]);
}

/** Keeps the last `count` positions of `[batch, seq, hidden]`, or all of them when count is 0. */
function sliceLastPositions(g: GraphBuilder, hidden: string, count: string): string {
  const zero = g.int64([0], []);
  const start = g.op('Where', [g.op('Equal', [count, zero]), zero, g.op('Neg', [count])]);
  const starts = g.op('Reshape', [start, g.int64([1])]);
  return g.op('Slice', [hidden, starts, g.int64([Number.MAX_SAFE_INTEGER]), g.int64([1])]);
}

