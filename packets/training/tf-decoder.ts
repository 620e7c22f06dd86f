import * as tf from '@tensorflow/tfjs-core';
import { setThreadsCount } from '@tensorflow/tfjs-backend-wasm';
import { availableParallelism } from 'node:os';
import { ropeInverseFrequencies, layerWeightName, type DecoderArchitecture } from '../../inference/architecture.js';
import { openModelFolder } from '../../inference/model-folder.js';
import { registerTrainingGradients } from './tf-gradients.js';
import { assertTrainableArchitecture, readDecoderWeights } from './tf-weights.js';

/**
 * A TensorFlow.js forward pass of the decoder that `inference/onnx/decoder-graph.ts` builds, so
 * that adapter vectors get exact gradients (onnxruntime-node computes none). It mirrors the
 * graph op for op: RMSNorm `x * rsqrt(mean(x^2) + eps) * w`, rotary embedding in the
 * `rotate_half` convention with float32 angles `position * inv_freq`, grouped-query attention with
 * an additive mask over cache entries, SwiGLU, and the output head. The weights are frozen
 * constants; only tensors that the caller derives from `tf.Variable`s receive gradients.
 *
 * Batches are rows of independent sequences. Each row has its own positions and its own
 * validity mask over cache entries, so rows of different lengths are padded at the end and the
 * padding is never attended to by valid entries.
 */

/** The additive score for masked cache entries, as in the ONNX graph (the most negative float32). */
const MASKED_SCORE = -3.4028234663852886e38;

/** Keys and values of one layer: `[rows, kv_heads, length, head_dim]`, keys after RoPE. */
export interface LayerKv {
  keys: tf.Tensor4D;
  values: tf.Tensor4D;
}

/** A batched cache: one LayerKv per layer plus which entries of each row are real. */
export interface BatchKv {
  layers: LayerKv[];
  /** `[rows, length]`: 1 for an entry that may be attended to, 0 for padding. */
  valid: Uint8Array;
  rows: number;
  length: number;
}

export interface SegmentInput {
  /** `[rows, seq, hidden]` input embeddings. */
  embeddings: tf.Tensor3D;
  /** `[rows, seq]` RoPE position of every new entry. */
  positions: Int32Array;
  /** `[rows, seq]` 1 for real entries, 0 for padding; default all real. */
  valid?: Uint8Array;
  /** Earlier entries that every new entry may attend to (where valid). */
  past?: BatchKv;
  /** Return logits for this many last positions of each row; default 0 (none). */
  logitsLast?: number;
}

export interface SegmentOutput {
  /** The new entries only, `[rows, kv_heads, seq, head_dim]` per layer. */
  kv: BatchKv;
  /** `[rows, logitsLast, vocab]` when requested. */
  logits?: tf.Tensor3D;
}

interface LayerWeights {
  inputNorm: tf.Tensor1D;
  /** Linear weights transposed to `[in_features, out_features]`. */
  q: tf.Tensor2D;
  k: tf.Tensor2D;
  v: tf.Tensor2D;
  qBias?: tf.Tensor1D;
  kBias?: tf.Tensor1D;
  vBias?: tf.Tensor1D;
  o: tf.Tensor2D;
  postNorm: tf.Tensor1D;
  gate: tf.Tensor2D;
  up: tf.Tensor2D;
  down: tf.Tensor2D;
}

let backendReady: Promise<void> | undefined;

/**
 * Selects the tfjs WebAssembly backend once per process and registers the training gradients.
 * NOTE: tfjs-backend-wasm 4.22 runs single-threaded under Node (its threaded build needs browser
 * workers), so the requested thread count only takes effect where threads are supported.
 */
export function initTrainingBackend(): Promise<void> {
  backendReady ??= (async () => {
    setThreadsCount(Math.max(1, Math.min(2, availableParallelism())));
    registerTrainingGradients();
    if (!(await tf.setBackend('wasm'))) {
      throw new Error('The TensorFlow.js WebAssembly backend failed to initialize.');
    }
    await tf.ready();
  })();
  return backendReady;
}

export class TfDecoder {
  readonly arch: DecoderArchitecture;
  /** `[vocab, hidden]` token embeddings, read on the JavaScript side (frozen inputs need no lookup op). */
  readonly embeddingTable: Float32Array;
  private readonly layers: LayerWeights[];
  private readonly finalNorm: tf.Tensor1D;
  /** `[hidden, vocab]`: the output head, transposed. */
  private readonly head: tf.Tensor2D;
  private readonly invFreq: Float32Array;

  private constructor(arch: DecoderArchitecture, weights: Map<string, Float32Array>) {
    this.arch = arch;
    this.embeddingTable = weights.get('model.embed_tokens.weight') as Float32Array;
    const h = arch.hiddenSize;
    const get = (name: string) => weights.get(name) as Float32Array;
    const vector = (name: string) => tf.keep(tf.tensor1d(get(name)));
    const linear = (name: string, out: number, inFeatures: number) =>
      tf.tidy(() => tf.keep(tf.transpose(tf.tensor2d(get(name), [out, inFeatures])) as tf.Tensor2D));
    const { numHeads, numKvHeads, headDim, intermediateSize: ffn } = arch;
    this.layers = Array.from({ length: arch.numLayers }, (_, layer) => {
      const name = (suffix: string) => layerWeightName(layer, suffix);
      return {
        inputNorm: vector(name('input_layernorm.weight')),
        q: linear(name('self_attn.q_proj.weight'), numHeads * headDim, h),
        k: linear(name('self_attn.k_proj.weight'), numKvHeads * headDim, h),
        v: linear(name('self_attn.v_proj.weight'), numKvHeads * headDim, h),
        qBias: arch.attentionBias ? vector(name('self_attn.q_proj.bias')) : undefined,
        kBias: arch.attentionBias ? vector(name('self_attn.k_proj.bias')) : undefined,
        vBias: arch.attentionBias ? vector(name('self_attn.v_proj.bias')) : undefined,
        o: linear(name('self_attn.o_proj.weight'), h, numHeads * headDim),
        postNorm: vector(name('post_attention_layernorm.weight')),
        gate: linear(name('mlp.gate_proj.weight'), ffn, h),
        up: linear(name('mlp.up_proj.weight'), ffn, h),
        down: linear(name('mlp.down_proj.weight'), h, ffn),
      };
    });
    this.finalNorm = vector('model.norm.weight');
    const headName = arch.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
    this.head = linear(headName, arch.vocabSize, h);
    this.invFreq = Float32Array.from(ropeInverseFrequencies(arch));
  }

  /** Loads the weights of a model folder; call `dispose()` to free them. */
  static async load(modelDir: string): Promise<TfDecoder> {
    await initTrainingBackend();
    const folder = openModelFolder(modelDir);
    assertTrainableArchitecture(folder.arch, folder.dir);
    return new TfDecoder(folder.arch, readDecoderWeights(folder));
  }

  dispose(): void {
    const tensors: tf.Tensor[] = [this.finalNorm, this.head];
    for (const layer of this.layers) {
      tensors.push(...(Object.values(layer).filter((t) => t !== undefined) as tf.Tensor[]));
    }
    tf.dispose(tensors);
  }

  /** Copies the embedding rows of `tokens` into `out` at `offset` (in floats). */
  writeEmbeddings(tokens: ArrayLike<number>, out: Float32Array, offset: number): void {
    const h = this.arch.hiddenSize;
    for (let i = 0; i < tokens.length; i++) {
      const id = tokens[i];
      out.set(this.embeddingTable.subarray(id * h, (id + 1) * h), offset + i * h);
    }
  }

  /** Runs the decoder over one segment of new entries per row, after an optional cache. */
  forward(input: SegmentInput): SegmentOutput {
    const [rows, seq] = input.embeddings.shape;
    const valid = input.valid ?? new Uint8Array(rows * seq).fill(1);
    const rope = this.rotaryTables(input.positions, rows, seq);
    const mask = buildAttentionMask(rows, seq, valid, input.past);
    let hidden: tf.Tensor3D = input.embeddings;
    const layers: LayerKv[] = [];
    for (let layer = 0; layer < this.arch.numLayers; layer++) {
      const result = this.decoderLayer(layer, hidden, rope, mask, input.past?.layers[layer]);
      hidden = result.hidden;
      layers.push(result.kv);
    }
    const kv: BatchKv = { layers, valid, rows, length: seq };
    const keep = input.logitsLast ?? 0;
    if (keep === 0) {
      return { kv };
    }
    const kept = tf.slice(hidden, [0, seq - keep, 0], [rows, keep, this.arch.hiddenSize]);
    const normed = rmsNorm(kept, this.finalNorm, this.arch.rmsNormEps);
    const logits = tf.reshape(
      tf.matMul(tf.reshape(normed, [rows * keep, this.arch.hiddenSize]), this.head),
      [rows, keep, this.arch.vocabSize],
    ) as tf.Tensor3D;
    return { kv, logits };
  }

  /**
   * Cosines and sines `[rows, seq, 1, head_dim]` for the given positions, computed as the ONNX
   * graph does: float32 `position * inv_freq`, then cos and sin, the frequencies repeated over
   * both halves.
   */
  private rotaryTables(positions: Int32Array, rows: number, seq: number): { cos: tf.Tensor4D; sin: tf.Tensor4D } {
    const headDim = this.arch.headDim;
    const half = headDim / 2;
    const cos = new Float32Array(rows * seq * headDim);
    const sin = new Float32Array(rows * seq * headDim);
    for (let i = 0; i < rows * seq; i++) {
      for (let j = 0; j < half; j++) {
        const angle = Math.fround(positions[i] * this.invFreq[j]);
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        cos[i * headDim + j] = c;
        cos[i * headDim + half + j] = c;
        sin[i * headDim + j] = s;
        sin[i * headDim + half + j] = s;
      }
    }
    return {
      cos: tf.tensor4d(cos, [rows, seq, 1, headDim]),
      sin: tf.tensor4d(sin, [rows, seq, 1, headDim]),
    };
  }

  private decoderLayer(
    index: number,
    hidden: tf.Tensor3D,
    rope: { cos: tf.Tensor4D; sin: tf.Tensor4D },
    mask: tf.Tensor,
    past: LayerKv | undefined,
  ): { hidden: tf.Tensor3D; kv: LayerKv } {
    const w = this.layers[index];
    const { hiddenSize: h, numHeads, numKvHeads, headDim, rmsNormEps } = this.arch;
    const [rows, seq] = hidden.shape;
    const groups = numHeads / numKvHeads;

    // Projections to [rows, seq, heads, head_dim], with RoPE on queries and keys.
    const x = tf.reshape(rmsNorm(hidden, w.inputNorm, rmsNormEps), [rows * seq, h]) as tf.Tensor2D;
    const project = (weight: tf.Tensor2D, bias: tf.Tensor1D | undefined, heads: number) => {
      const out = tf.matMul(x, weight);
      return tf.reshape(bias ? tf.add(out, bias) : out, [rows, seq, heads, headDim]) as tf.Tensor4D;
    };
    const q = applyRope(project(w.q, w.qBias, numHeads), rope);
    const k = applyRope(project(w.k, w.kBias, numKvHeads), rope);
    const v = project(w.v, w.vBias, numKvHeads);

    // New cache entries [rows, kv_heads, seq, head_dim], appended to the past ones.
    const newKeys = tf.transpose(k, [0, 2, 1, 3]) as tf.Tensor4D;
    const newValues = tf.transpose(v, [0, 2, 1, 3]) as tf.Tensor4D;
    const allKeys = past ? tf.concat([past.keys, newKeys], 2) : newKeys;
    const allValues = past ? tf.concat([past.values, newValues], 2) : newValues;
    const total = allKeys.shape[2];

    // Grouped-query attention: query head kv * groups + j reads kv head `kv`, so queries become
    // [rows * kv_heads, groups * seq, head_dim] against [rows * kv_heads, total, head_dim] keys.
    const queries = tf.reshape(
      tf.transpose(tf.reshape(q, [rows, seq, numKvHeads, groups, headDim]), [0, 2, 3, 1, 4]),
      [rows * numKvHeads, groups * seq, headDim],
    );
    const scaled = tf.mul(queries, tf.scalar(1 / Math.sqrt(headDim)));
    const keysT = tf.transpose(tf.reshape(allKeys, [rows * numKvHeads, total, headDim]), [0, 2, 1]);
    const scores = tf.reshape(tf.matMul(scaled, keysT), [rows, numKvHeads, groups, seq, total]);
    const probs = tf.softmax(tf.add(scores, mask));
    const context = tf.matMul(
      tf.reshape(probs, [rows * numKvHeads, groups * seq, total]),
      tf.reshape(allValues, [rows * numKvHeads, total, headDim]),
    );
    const merged = tf.reshape(
      tf.transpose(tf.reshape(context, [rows, numKvHeads, groups, seq, headDim]), [0, 3, 1, 2, 4]),
      [rows * seq, numHeads * headDim],
    );
    const afterAttention = tf.add(hidden, tf.reshape(tf.matMul(merged, w.o), [rows, seq, h])) as tf.Tensor3D;

    // SwiGLU MLP.
    const y = tf.reshape(rmsNorm(afterAttention, w.postNorm, rmsNormEps), [rows * seq, h]);
    const gate = tf.matMul(y, w.gate);
    const activated = tf.mul(gate, tf.sigmoid(gate));
    const down = tf.matMul(tf.mul(activated, tf.matMul(y, w.up)), w.down);
    return {
      hidden: tf.add(afterAttention, tf.reshape(down, [rows, seq, h])) as tf.Tensor3D,
      kv: { keys: newKeys, values: newValues },
    };
  }
}

/** RMSNorm over the last axis: `x * rsqrt(mean(x^2) + eps) * weight`. */
function rmsNorm<T extends tf.Tensor>(x: T, weight: tf.Tensor1D, eps: number): T {
  const meanSquare = tf.mean(tf.mul(x, x), -1, true);
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(meanSquare, tf.scalar(eps)))), weight) as T;
}

/** `x * cos + rotate_half(x) * sin` on `[rows, seq, heads, head_dim]`; rotate_half(x) = [-x2, x1]. */
function applyRope(x: tf.Tensor4D, rope: { cos: tf.Tensor4D; sin: tf.Tensor4D }): tf.Tensor4D {
  return tf.add(tf.mul(x, rope.cos), tf.mul(rotateHalf(x), rope.sin)) as tf.Tensor4D;
}

function rotateHalf<T extends tf.Tensor>(x: T): T {
  const half = x.shape[x.rank - 1] / 2;
  const [first, second] = tf.split(x, [half, half], -1);
  return tf.concat([tf.neg(second), first], -1) as T;
}

/**
 * Builds the additive mask `[rows, 1, 1, seq, past + seq]`. New entry i of a row may attend to a
 * past entry when that entry is valid, and to new entry j <= i when j is valid or j = i (padding
 * attends to itself so that no softmax row is empty; valid entries never see padding).
 */
function buildAttentionMask(rows: number, seq: number, valid: Uint8Array, past: BatchKv | undefined): tf.Tensor {
  const pastLength = past?.length ?? 0;
  const total = pastLength + seq;
  const mask = new Float32Array(rows * seq * total);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < seq; i++) {
      const base = (r * seq + i) * total;
      for (let j = 0; j < pastLength; j++) {
        if (!(past as BatchKv).valid[r * pastLength + j]) mask[base + j] = MASKED_SCORE;
      }
      for (let j = 0; j < seq; j++) {
        const allowed = j === i || (j < i && valid[r * seq + j] === 1);
        if (!allowed) mask[base + pastLength + j] = MASKED_SCORE;
      }
    }
  }
  return tf.tensor(mask, [rows, 1, 1, seq, total]);
}

/**
 * Rotates keys `[rows, kv_heads, length, head_dim]` by `deltas[row]` further positions, as
 * `packets/rerotate.ts` does for a stored packet: angles in float64, applied in float32.
 */
export function rotateKeysByRow(keys: tf.Tensor4D, deltas: ArrayLike<number>, arch: DecoderArchitecture): tf.Tensor4D {
  const rows = keys.shape[0];
  const headDim = arch.headDim;
  const half = headDim / 2;
  const invFreq = ropeInverseFrequencies(arch);
  const cos = new Float32Array(rows * headDim);
  const sin = new Float32Array(rows * headDim);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < half; j++) {
      const angle = deltas[r] * invFreq[j];
      cos[r * headDim + j] = cos[r * headDim + half + j] = Math.cos(angle);
      sin[r * headDim + j] = sin[r * headDim + half + j] = Math.sin(angle);
    }
  }
  const cosT = tf.tensor4d(cos, [rows, 1, 1, headDim]);
  const sinT = tf.tensor4d(sin, [rows, 1, 1, headDim]);
  return tf.add(tf.mul(keys, cosT), tf.mul(rotateHalf(keys), sinT)) as tf.Tensor4D;
}

/** Joins batched caches along the sequence axis, with their validity masks. */
export function concatBatchKv(parts: readonly BatchKv[]): BatchKv {
  const rows = parts[0].rows;
  const length = parts.reduce((sum, part) => sum + part.length, 0);
  const valid = new Uint8Array(rows * length);
  for (let r = 0; r < rows; r++) {
    let offset = 0;
    for (const part of parts) {
      valid.set(part.valid.subarray(r * part.length, (r + 1) * part.length), r * length + offset);
      offset += part.length;
    }
  }
  const layers = parts[0].layers.map((_, layer) => ({
    keys: tf.concat(parts.map((part) => part.layers[layer].keys), 2) as tf.Tensor4D,
    values: tf.concat(parts.map((part) => part.layers[layer].values), 2) as tf.Tensor4D,
  }));
  return { layers, valid, rows, length };
}
