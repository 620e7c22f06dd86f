import { KvpackError } from '../common/errors.js';

/**
 * The architecture of a Llama-family decoder in one place: the ONNX graph builder, the model
 * loader, RoPE re-rotation and the differentiable training forward pass all read it.
 */

/** How rotary frequencies are rescaled for long contexts (Hugging Face `rope_scaling`). */
export type RopeScaling =
  | { kind: 'none' }
  | { kind: 'linear'; factor: number }
  | {
      kind: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    };

/** Model types whose decoder layers kvpack knows. Only `llama` and `qwen2` are built by kvpack. */
export const supportedModelTypes = ['llama', 'mistral', 'qwen2', 'qwen3'] as const;
export type ModelType = (typeof supportedModelTypes)[number];

export interface DecoderArchitecture {
  modelType: ModelType;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  /** Q, K and V projections carry a bias (Qwen2). */
  attentionBias: boolean;
  /** The output head reuses the token embedding table. */
  tieWordEmbeddings: boolean;
  bosTokenId: number | undefined;
  eosTokenIds: number[];
}

/** Shape of one weight in Hugging Face layout: linear weights are `[out_features, in_features]`. */
export interface WeightSpec {
  name: string;
  shape: number[];
  /** How a random-weight model initializes it: normalization weights are 1, the rest random. */
  init: 'ones' | 'normal';
}

export function layerWeightName(layer: number, suffix: string): string {
  return `model.layers.${layer}.${suffix}`;
}

/** Lists every weight of the architecture with its Hugging Face name and shape, in file order. */
export function weightSpecs(arch: DecoderArchitecture): WeightSpec[] {
  const { hiddenSize: h, intermediateSize: ffn, numHeads, numKvHeads, headDim } = arch;
  const specs: WeightSpec[] = [{ name: 'model.embed_tokens.weight', shape: [arch.vocabSize, h], init: 'normal' }];
  for (let layer = 0; layer < arch.numLayers; layer++) {
    const w = (suffix: string, shape: number[], init: WeightSpec['init'] = 'normal') =>
      specs.push({ name: layerWeightName(layer, suffix), shape, init });
    w('input_layernorm.weight', [h], 'ones');
    w('self_attn.q_proj.weight', [numHeads * headDim, h]);
    w('self_attn.k_proj.weight', [numKvHeads * headDim, h]);
    w('self_attn.v_proj.weight', [numKvHeads * headDim, h]);
    if (arch.attentionBias) {
      w('self_attn.q_proj.bias', [numHeads * headDim], 'normal');
      w('self_attn.k_proj.bias', [numKvHeads * headDim], 'normal');
      w('self_attn.v_proj.bias', [numKvHeads * headDim], 'normal');
    }
    w('self_attn.o_proj.weight', [h, numHeads * headDim]);
    w('post_attention_layernorm.weight', [h], 'ones');
    w('mlp.gate_proj.weight', [ffn, h]);
    w('mlp.up_proj.weight', [ffn, h]);
    w('mlp.down_proj.weight', [h, ffn]);
  }
  specs.push({ name: 'model.norm.weight', shape: [h], init: 'ones' });
  if (!arch.tieWordEmbeddings) {
    specs.push({ name: 'lm_head.weight', shape: [arch.vocabSize, h], init: 'normal' });
  }
  return specs;
}

export function parameterCount(arch: DecoderArchitecture): number {
  return weightSpecs(arch).reduce((sum, spec) => sum + spec.shape.reduce((a, b) => a * b, 1), 0);
}

/**
 * Computes the rotary inverse frequencies `[head_dim / 2]` after `rope_scaling`, in float64.
 * Position p of pair i rotates by the angle `p * inv_freq[i]`; the graph pairs element i with
 * element i + head_dim/2 (`rotate_half`).
 */
export function ropeInverseFrequencies(arch: DecoderArchitecture): Float64Array {
  const half = arch.headDim / 2;
  const invFreq = new Float64Array(half);
  for (let i = 0; i < half; i++) {
    invFreq[i] = 1 / Math.pow(arch.ropeTheta, (2 * i) / arch.headDim);
  }
  const scaling = arch.ropeScaling;
  if (scaling.kind === 'linear') {
    for (let i = 0; i < half; i++) invFreq[i] /= scaling.factor;
  } else if (scaling.kind === 'llama3') {
    applyLlama3Scaling(invFreq, scaling);
  }
  return invFreq;
}

function applyLlama3Scaling(invFreq: Float64Array, scaling: Extract<RopeScaling, { kind: 'llama3' }>): void {
  const lowFreqWavelen = scaling.originalMaxPositionEmbeddings / scaling.lowFreqFactor;
  const highFreqWavelen = scaling.originalMaxPositionEmbeddings / scaling.highFreqFactor;
  for (let i = 0; i < invFreq.length; i++) {
    const wavelen = (2 * Math.PI) / invFreq[i];
    if (wavelen > lowFreqWavelen) {
      invFreq[i] /= scaling.factor;
    } else if (wavelen >= highFreqWavelen) {
      // Medium frequencies blend the scaled and unscaled values.
      const smooth =
        (scaling.originalMaxPositionEmbeddings / wavelen - scaling.lowFreqFactor) /
        (scaling.highFreqFactor - scaling.lowFreqFactor);
      invFreq[i] = (1 - smooth) * (invFreq[i] / scaling.factor) + smooth * invFreq[i];
    }
  }
}

type JsonObject = Record<string, unknown>;

/**
 * Parses a Hugging Face `config.json` into the architecture, rejecting what kvpack cannot run
 * exactly (other model types, rope kinds that rescale attention, partial rotary embeddings).
 */
export function parseHfConfig(config: JsonObject, source: string): DecoderArchitecture {
  const modelType = config.model_type;
  if (typeof modelType !== 'string' || !(supportedModelTypes as readonly string[]).includes(modelType)) {
    throw new KvpackError(
      'UNSUPPORTED_ARCHITECTURE',
      `${source}: model_type ${JSON.stringify(modelType)} is not supported; kvpack runs ` +
        `${supportedModelTypes.join(', ')} decoders (Llama-family with rotary position embeddings).`,
      { modelType },
    );
  }
  const num = (key: string, fallback?: number): number => readNumber(config, key, source, fallback);
  const hiddenSize = num('hidden_size');
  const numHeads = num('num_attention_heads');
  const partialRotary = config.partial_rotary_factor;
  if (partialRotary !== undefined && partialRotary !== 1) {
    throw new KvpackError(
      'UNSUPPORTED_ARCHITECTURE',
      `${source}: partial_rotary_factor ${String(partialRotary)} is not supported; kvpack re-rotates ` +
        'the whole head dimension.',
    );
  }
  const arch: DecoderArchitecture = {
    modelType: modelType as ModelType,
    hiddenSize,
    intermediateSize: num('intermediate_size'),
    numLayers: num('num_hidden_layers'),
    numHeads,
    numKvHeads: num('num_key_value_heads', numHeads),
    headDim: num('head_dim', hiddenSize / numHeads),
    vocabSize: num('vocab_size'),
    maxPositionEmbeddings: num('max_position_embeddings'),
    rmsNormEps: num('rms_norm_eps', 1e-6),
    ropeTheta: readRopeTheta(config, source),
    ropeScaling: parseRopeScaling(config.rope_scaling ?? config.rope_parameters, source),
    attentionBias: config.attention_bias === true || modelType === 'qwen2',
    tieWordEmbeddings: config.tie_word_embeddings === true,
    bosTokenId: typeof config.bos_token_id === 'number' ? config.bos_token_id : undefined,
    eosTokenIds: readTokenIds(config.eos_token_id),
  };
  validateArchitecture(arch, source);
  return arch;
}

function readRopeTheta(config: JsonObject, source: string): number {
  const parameters = config.rope_parameters as JsonObject | undefined;
  const fromParameters = parameters && typeof parameters === 'object' ? parameters.rope_theta : undefined;
  const theta = config.rope_theta ?? fromParameters ?? 10000;
  if (typeof theta !== 'number' || !(theta > 0)) {
    throw new KvpackError('MODEL_CONFIG_INVALID', `${source}: rope_theta must be a positive number, got ${JSON.stringify(theta)}.`);
  }
  return theta;
}

function readNumber(config: JsonObject, key: string, source: string, fallback?: number): number {
  const value = config[key] ?? fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new KvpackError(
      'MODEL_CONFIG_INVALID',
      `${source}: ${key} must be a positive number, got ${JSON.stringify(config[key])}.`,
      { key },
    );
  }
  return value;
}

function readTokenIds(value: unknown): number[] {
  if (typeof value === 'number') return [value];
  if (Array.isArray(value)) return value.filter((id): id is number => typeof id === 'number');
  return [];
}

/** Parses `rope_scaling`; kinds whose rotary embedding rescales attention are rejected. */
export function parseRopeScaling(value: unknown, source: string): RopeScaling {
  if (value === null || value === undefined) {
    return { kind: 'none' };
  }
  if (typeof value !== 'object') {
    throw new KvpackError('MODEL_CONFIG_INVALID', `${source}: rope_scaling must be an object or null, got ${JSON.stringify(value)}.`);
  }
  const scaling = value as JsonObject;
  const kind = scaling.rope_type ?? scaling.type ?? 'default';
  const factor = scaling.factor;
  switch (kind) {
    case 'default':
      return { kind: 'none' };
    case 'linear':
      return { kind: 'linear', factor: requirePositive(factor, 'factor', source) };
    case 'llama3':
      return {
        kind: 'llama3',
        factor: requirePositive(factor, 'factor', source),
        lowFreqFactor: requirePositive(scaling.low_freq_factor, 'low_freq_factor', source),
        highFreqFactor: requirePositive(scaling.high_freq_factor, 'high_freq_factor', source),
        originalMaxPositionEmbeddings: requirePositive(
          scaling.original_max_position_embeddings,
          'original_max_position_embeddings',
          source,
        ),
      };
    default:
      throw new KvpackError(
        'UNSUPPORTED_ROPE_SCALING',
        `${source}: rope_scaling kind ${JSON.stringify(kind)} is not supported. kvpack supports none, ` +
          'linear and llama3, whose rotations it can re-apply exactly; yarn and longrope scale attention ' +
          '(attention_scaling != 1) and dynamic changes frequencies with the sequence length.',
        { ropeScaling: kind },
      );
  }
}

function requirePositive(value: unknown, key: string, source: string): number {
  if (typeof value !== 'number' || !(value > 0)) {
    throw new KvpackError('MODEL_CONFIG_INVALID', `${source}: rope_scaling.${key} must be a positive number, got ${JSON.stringify(value)}.`);
  }
  return value;
}

/** Checks the internal consistency of an architecture (from a config file or a builder caller). */
export function validateArchitecture(arch: DecoderArchitecture, source: string): void {
  const integers: Array<keyof DecoderArchitecture> = [
    'hiddenSize', 'intermediateSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'vocabSize', 'maxPositionEmbeddings',
  ];
  for (const key of integers) {
    const value = arch[key];
    if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
      throw new KvpackError('MODEL_CONFIG_INVALID', `${source}: ${key} must be a positive integer, got ${JSON.stringify(value)}.`);
    }
  }
  if (arch.numHeads % arch.numKvHeads !== 0) {
    throw new KvpackError(
      'MODEL_CONFIG_INVALID',
      `${source}: num_attention_heads (${arch.numHeads}) must be a multiple of num_key_value_heads (${arch.numKvHeads}).`,
    );
  }
  if (arch.headDim % 2 !== 0) {
    throw new KvpackError('MODEL_CONFIG_INVALID', `${source}: head_dim must be even for rotary embeddings, got ${arch.headDim}.`);
  }
}

/** Writes the architecture as a Hugging Face `config.json` object. */
export function toHfConfig(arch: DecoderArchitecture): JsonObject {
  const architectures = { llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', qwen2: 'Qwen2ForCausalLM', qwen3: 'Qwen3ForCausalLM' };
  return {
    architectures: [architectures[arch.modelType]],
    model_type: arch.modelType,
    hidden_size: arch.hiddenSize,
    intermediate_size: arch.intermediateSize,
    num_hidden_layers: arch.numLayers,
    num_attention_heads: arch.numHeads,
    num_key_value_heads: arch.numKvHeads,
    head_dim: arch.headDim,
    vocab_size: arch.vocabSize,
    max_position_embeddings: arch.maxPositionEmbeddings,
    rms_norm_eps: arch.rmsNormEps,
    rope_theta: arch.ropeTheta,
    rope_scaling: ropeScalingToHf(arch.ropeScaling),
    attention_bias: arch.attentionBias,
    tie_word_embeddings: arch.tieWordEmbeddings,
    hidden_act: 'silu',
    bos_token_id: arch.bosTokenId ?? null,
    eos_token_id: arch.eosTokenIds.length === 1 ? arch.eosTokenIds[0] : arch.eosTokenIds,
    torch_dtype: 'float32',
    use_cache: true,
  };
}

function ropeScalingToHf(scaling: RopeScaling): JsonObject | null {
  switch (scaling.kind) {
    case 'none':
      return null;
    case 'linear':
      return { rope_type: 'linear', factor: scaling.factor };
    case 'llama3':
      return {
        rope_type: 'llama3',
        factor: scaling.factor,
        low_freq_factor: scaling.lowFreqFactor,
        high_freq_factor: scaling.highFreqFactor,
        original_max_position_embeddings: scaling.originalMaxPositionEmbeddings,
      };
  }
}
