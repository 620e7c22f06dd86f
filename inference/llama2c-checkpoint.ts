import { readFileSync, statSync } from 'node:fs';
import { KvpackError } from '../common/errors.js';
import { layerWeightName, validateArchitecture, type DecoderArchitecture } from './architecture.js';

/** The seven int32 header fields of a llama2.c legacy checkpoint. */
export interface Llama2cHeader {
  dim: number;
  hiddenDim: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** Absolute value of the stored vocab size; a negative stored value means an untied output head. */
  vocabSize: number;
  sharedClassifier: boolean;
  seqLen: number;
}

export interface Llama2cCheckpoint {
  header: Llama2cHeader;
  arch: DecoderArchitecture;
  /** Weights by Hugging Face name, Q and K rows permuted to the `rotate_half` convention. */
  weights: Map<string, Float32Array>;
}

const HEADER_BYTES = 7 * 4;

/**
 * Reads a llama2.c legacy checkpoint (seven int32 header values, then float32 weights in a fixed
 * order) and converts it to Hugging Face weight names and layouts.
 */
export function readLlama2cCheckpoint(file: string): Llama2cCheckpoint {
  const bytes = readCheckpointBytes(file);
  const header = parseHeader(bytes, file);
  const arch = architectureOf(header, file);
  const floats = new Float32Array(bytes.buffer, bytes.byteOffset + HEADER_BYTES, (bytes.byteLength - HEADER_BYTES) / 4);
  return { header, arch, weights: convertWeights(header, arch, floats, file) };
}

function readCheckpointBytes(file: string): Uint8Array {
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    throw new KvpackError('CHECKPOINT_INVALID', `Checkpoint file not found: ${file}. Pass the path of a llama2.c .bin checkpoint.`, { file });
  }
  if (size < HEADER_BYTES || size % 4 !== 0) {
    throw new KvpackError(
      'CHECKPOINT_INVALID',
      `${file} is not a llama2.c checkpoint: its size (${size} bytes) is not a 28-byte header followed by float32 values.`,
      { file },
    );
  }
  // Copy into a fresh, 4-byte aligned buffer so Float32Array views need no offset checks.
  const bytes = new Uint8Array(size);
  bytes.set(readFileSync(file));
  return bytes;
}

function parseHeader(bytes: Uint8Array, file: string): Llama2cHeader {
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  const field = (index: number) => view.getInt32(index * 4, true);
  const storedVocab = field(5);
  const header: Llama2cHeader = {
    dim: field(0),
    hiddenDim: field(1),
    numLayers: field(2),
    numHeads: field(3),
    numKvHeads: field(4),
    vocabSize: Math.abs(storedVocab),
    sharedClassifier: storedVocab > 0,
    seqLen: field(6),
  };
  for (const [key, value] of Object.entries(header)) {
    if (typeof value === 'number' && !(value > 0 && value < 1 << 24)) {
      throw new KvpackError(
        'CHECKPOINT_INVALID',
        `${file}: header field ${key} is ${value}; a llama2.c legacy checkpoint starts with seven positive int32 values.`,
        { file, key, value },
      );
    }
  }
  return header;
}

function architectureOf(header: Llama2cHeader, file: string): DecoderArchitecture {
  const arch: DecoderArchitecture = {
    modelType: 'llama',
    hiddenSize: header.dim,
    intermediateSize: header.hiddenDim,
    numLayers: header.numLayers,
    numHeads: header.numHeads,
    numKvHeads: header.numKvHeads,
    headDim: header.dim / header.numHeads,
    vocabSize: header.vocabSize,
    maxPositionEmbeddings: header.seqLen,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: { kind: 'none' },
    attentionBias: false,
    tieWordEmbeddings: header.sharedClassifier,
    bosTokenId: 1,
    eosTokenIds: [2],
  };
  validateArchitecture(arch, file);
  return arch;
}

function convertWeights(
  header: Llama2cHeader,
  arch: DecoderArchitecture,
  floats: Float32Array,
  file: string,
): Map<string, Float32Array> {
  const { dim, hiddenDim, numLayers, seqLen } = header;
  const kvDim = arch.numKvHeads * arch.headDim;
  let offset = 0;
  const take = (count: number): Float32Array => {
    if (offset + count > floats.length) {
      throw new KvpackError(
        'CHECKPOINT_INVALID',
        `${file} is truncated: the header describes more weights than the file holds (needed ${offset + count} floats, found ${floats.length}).`,
        { file },
      );
    }
    const slice = floats.slice(offset, offset + count);
    offset += count;
    return slice;
  };
  // llama2.c stores each weight kind for all layers together: [layers, out, in].
  const perLayer = (count: number) => {
    const all = take(numLayers * count);
    return Array.from({ length: numLayers }, (_, layer) => all.subarray(layer * count, (layer + 1) * count));
  };

  const weights = new Map<string, Float32Array>();
  weights.set('model.embed_tokens.weight', take(arch.vocabSize * dim));
  const attentionNorm = perLayer(dim);
  const wq = perLayer(dim * dim);
  const wk = perLayer(kvDim * dim);
  const wv = perLayer(kvDim * dim);
  const wo = perLayer(dim * dim);
  const ffnNorm = perLayer(dim);
  const w1 = perLayer(hiddenDim * dim);
  const w2 = perLayer(dim * hiddenDim);
  const w3 = perLayer(hiddenDim * dim);
  weights.set('model.norm.weight', take(dim));
  // Two RoPE tables of seq_len * head_dim / 2 floats each that llama2.c no longer reads.
  take(seqLen * arch.headDim);
  if (!header.sharedClassifier) {
    weights.set('lm_head.weight', take(arch.vocabSize * dim));
  }
  if (offset !== floats.length) {
    throw new KvpackError(
      'CHECKPOINT_INVALID',
      `${file} has ${floats.length - offset} float32 values after the last weight; the header does not match the file.`,
      { file },
    );
  }

  for (let layer = 0; layer < numLayers; layer++) {
    const set = (suffix: string, data: Float32Array) => weights.set(layerWeightName(layer, suffix), data);
    set('input_layernorm.weight', attentionNorm[layer]);
    set('self_attn.q_proj.weight', interleavedToHalves(wq[layer], arch.numHeads, arch.headDim, dim));
    set('self_attn.k_proj.weight', interleavedToHalves(wk[layer], arch.numKvHeads, arch.headDim, dim));
    set('self_attn.v_proj.weight', new Float32Array(wv[layer]));
    set('self_attn.o_proj.weight', new Float32Array(wo[layer]));
    set('post_attention_layernorm.weight', ffnNorm[layer]);
    set('mlp.gate_proj.weight', new Float32Array(w1[layer]));
    set('mlp.down_proj.weight', new Float32Array(w2[layer]));
    set('mlp.up_proj.weight', new Float32Array(w3[layer]));
  }
  return weights;
}

/**
 * Permutes the output rows of a Q or K projection `[heads * head_dim, in]` from llama2.c's RoPE,
 * which rotates interleaved pairs (2i, 2i+1), to `rotate_half`, which rotates (i, i + head_dim/2).
 * Within each head, new row i takes old row 2i and new row i + head_dim/2 takes old row 2i + 1.
 */
export function interleavedToHalves(weight: Float32Array, heads: number, headDim: number, inFeatures: number): Float32Array {
  const out = new Float32Array(weight.length);
  const half = headDim / 2;
  for (let head = 0; head < heads; head++) {
    const base = head * headDim;
    for (let i = 0; i < half; i++) {
      const even = weight.subarray((base + 2 * i) * inFeatures, (base + 2 * i + 1) * inFeatures);
      const odd = weight.subarray((base + 2 * i + 1) * inFeatures, (base + 2 * i + 2) * inFeatures);
      out.set(even, (base + i) * inFeatures);
      out.set(odd, (base + half + i) * inFeatures);
    }
  }
  return out;
}
