import * as tf from '@tensorflow/tfjs-core';
import type { AdapterVariant } from '../adapter-vectors.js';
import type { FidelitySample } from './samples-types.js';
import { concatBatchKv, rotateKeysByRow, type BatchKv, type LayerKv, type TfDecoder } from './tf-decoder.js';

/**
 * The student of adapter distillation in TensorFlow.js: the same cache that `packets/prefill.ts`
 * and `packets/splice.ts` build at query time, computed for a batch of samples so that gradients
 * reach the adapter vectors.
 *
 * Per sample: the preamble at positions 0.., then every chunk's packet prefilled alone from
 * position 0 and re-rotated to the next free position, then the prompt and the teacher's answer
 * teacher-forced after them. Packets of all samples run as one batch of rows; rows are padded at
 * the end and padding is masked out.
 */

/** An adapter as tensors; any of them may be `tf.Variable`s under training. */
export interface StudentAdapter {
  variant: AdapterVariant;
  /** `[headerLength, hidden]`; absent for conditioned-kv. */
  header?: tf.Tensor2D;
  /** `[trailerLength, hidden]`; ignored by the conditioned variant. */
  trailer?: tf.Tensor2D;
  /**
   * Conditioned-kv: per layer, `[1, kv_heads, headerLength, head_dim]` keys and values that the
   * chunk attends to, in place of a header prefilled from vectors.
   */
  headerKv?: LayerKv[];
  /** Conditioned-kv: the header cache of the chunk in the first slot, when it has its own. */
  firstSlotHeaderKv?: LayerKv[];
}

/** Logits `[samples, answerLength, vocab]` the student assigns at the teacher's answer positions. */
export function studentLogits(decoder: TfDecoder, batch: readonly FidelitySample[], adapter?: StudentAdapter): tf.Tensor3D {
  checkBatch(batch);
  const layout = packetLayout(batch, adapter);
  const packets = arrangeBySample(prefillPackets(decoder, batch, adapter, layout), layout);
  const preamble = prefillPreamble(decoder, batch);
  const context = preamble ? concatBatchKv([preamble, packets]) : packets;
  return teacherForcedAnswer(decoder, batch, context, layout);
}

/**
 * Mean KL(teacher ‖ student) per answer position over the batch, in nats. The teacher's entropy
 * term is a constant, so only `-sum(p_teacher * log q_student)` carries gradients.
 */
export function distillationLoss(logits: tf.Tensor3D, batch: readonly FidelitySample[]): tf.Scalar {
  const [samples, answerLength, vocab] = logits.shape;
  const teacherLogProbs = new Float32Array(samples * answerLength * vocab);
  const teacherProbs = new Float32Array(teacherLogProbs.length);
  let negativeEntropy = 0;
  batch.forEach((sample, b) => {
    teacherLogProbs.set(sample.teacherLogProbs, b * answerLength * vocab);
  });
  for (let i = 0; i < teacherLogProbs.length; i++) {
    const p = Math.exp(teacherLogProbs[i]);
    teacherProbs[i] = p;
    negativeEntropy += p * teacherLogProbs[i];
  }
  const crossEntropy = tf.neg(tf.sum(tf.mul(tf.tensor3d(teacherProbs, logits.shape), tf.logSoftmax(logits))));
  return tf.div(tf.add(crossEntropy, tf.scalar(negativeEntropy)), tf.scalar(samples * answerLength)) as tf.Scalar;
}

interface PacketLayout {
  samples: number;
  /** Chunk slots per sample (the largest chunk count in the batch). */
  slots: number;
  /** Longest chunk in the batch. */
  maxChunk: number;
  headerLength: number;
  trailerLength: number;
  /** `[samples * slots]` chunk length, 0 for an empty slot. */
  chunkLengths: Int32Array;
  /** `[samples * slots]` global position of each packet's first entry. */
  offsets: Int32Array;
  /** `[samples]` the first position after the last packet. */
  contextEnd: Int32Array;
}

function packetLayout(batch: readonly FidelitySample[], adapter: StudentAdapter | undefined): PacketLayout {
  const samples = batch.length;
  const slots = Math.max(...batch.map((sample) => sample.chunks.length));
  const maxChunk = Math.max(...batch.flatMap((sample) => sample.chunks.map((chunk) => chunk.length)));
  const headerLength = adapter?.headerKv ? adapter.headerKv[0].keys.shape[2] : (adapter?.header?.shape[0] ?? 0);
  const trailerLength = adapter?.variant === 'reference' && adapter.trailer ? adapter.trailer.shape[0] : 0;
  // The reference packet keeps its header and trailer entries; the conditioned one drops the header.
  const kept = adapter?.variant === 'reference' ? headerLength + trailerLength : 0;
  const chunkLengths = new Int32Array(samples * slots);
  const offsets = new Int32Array(samples * slots);
  const contextEnd = new Int32Array(samples);
  batch.forEach((sample, b) => {
    let position = sample.preamble.length;
    for (let c = 0; c < slots; c++) {
      const length = sample.chunks[c]?.length ?? 0;
      chunkLengths[b * slots + c] = length;
      offsets[b * slots + c] = position;
      position += length > 0 ? length + kept : 0;
    }
    contextEnd[b] = position;
  });
  return { samples, slots, maxChunk, headerLength, trailerLength, chunkLengths, offsets, contextEnd };
}

/**
 * Prefills every packet alone from position 0 and re-rotates it to its offset. Returns rows
 * `[samples * slots]` of `[kv_heads, packetLength, head_dim]` entries.
 */
function prefillPackets(decoder: TfDecoder, batch: readonly FidelitySample[], adapter: StudentAdapter | undefined, layout: PacketLayout): BatchKv {
  const { samples, slots, maxChunk, headerLength, trailerLength, chunkLengths, offsets } = layout;
  const rows = samples * slots;
  const hidden = decoder.arch.hiddenSize;

  // 1. [header][chunk][padding] from position 0 (no header without an adapter).
  const chunkEmbeddings = new Float32Array(rows * maxChunk * hidden);
  batch.forEach((sample, b) =>
    sample.chunks.forEach((chunk, c) => decoder.writeEmbeddings(chunk, chunkEmbeddings, (b * slots + c) * maxChunk * hidden)),
  );
  let embeddings: tf.Tensor3D = tf.tensor3d(chunkEmbeddings, [rows, maxChunk, hidden]);
  if (adapter?.headerKv) {
    return prefillAfterHeaderKv(decoder, embeddings, adapter.headerKv, layout, adapter.firstSlotHeaderKv);
  }
  if (adapter?.header && headerLength > 0) {
    embeddings = tf.concat([broadcastRows(adapter.header, rows), embeddings], 1);
  }
  const width = headerLength + maxChunk;
  const valid = new Uint8Array(rows * width);
  for (let r = 0; r < rows; r++) {
    const length = chunkLengths[r];
    if (length > 0) valid.fill(1, r * width, r * width + headerLength + length);
  }
  const positions = new Int32Array(rows * width);
  for (let r = 0; r < rows; r++) for (let i = 0; i < width; i++) positions[r * width + i] = i;
  let packet = decoder.forward({ embeddings, positions, valid }).kv;

  // 2. Variant-specific entries and the position shift of the kept entries.
  const deltas = new Int32Array(rows);
  if (adapter?.variant === 'reference' && trailerLength > 0) {
    packet = concatBatchKv([packet, prefillTrailers(decoder, adapter, packet, layout)]);
  }
  if (adapter?.variant === 'conditioned' && headerLength > 0) {
    packet = dropLeadingEntries(packet, headerLength);
    for (let r = 0; r < rows; r++) deltas[r] = offsets[r] - headerLength;
  } else {
    for (let r = 0; r < rows; r++) deltas[r] = offsets[r];
  }

  // 3. Re-rotation to the global offsets; values carry no position.
  return {
    ...packet,
    layers: packet.layers.map((layer) => ({ keys: rotateKeysByRow(layer.keys, deltas, decoder.arch), values: layer.values })),
  };
}

/**
 * Builds conditioned-kv packets: the chunk at positions `headerLength..` attends to the learned
 * header entries, which are left out of the result, and its keys are then re-rotated to the
 * offsets. With `firstSlot`, the chunk in each sample's first slot attends to that header instead.
 */
function prefillAfterHeaderKv(decoder: TfDecoder, embeddings: tf.Tensor3D, headerKv: LayerKv[], layout: PacketLayout, firstSlot?: LayerKv[]): BatchKv {
  const { samples, slots, maxChunk, headerLength, chunkLengths, offsets } = layout;
  const rows = samples * slots;
  const valid = new Uint8Array(rows * maxChunk);
  const positions = new Int32Array(rows * maxChunk);
  const deltas = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    valid.fill(1, r * maxChunk, r * maxChunk + chunkLengths[r]);
    for (let i = 0; i < maxChunk; i++) positions[r * maxChunk + i] = headerLength + i;
    deltas[r] = offsets[r] - headerLength;
  }
  // Row r is slot r % slots of its sample, so each row takes its slot's header.
  const perRow = (later: tf.Tensor4D, first: tf.Tensor4D | undefined) =>
    first
      ? (tf.concat(Array.from({ length: rows }, (_, r) => (r % layout.slots === 0 ? first : later)), 0) as tf.Tensor4D)
      : (tf.add(tf.zeros([rows, ...later.shape.slice(1)]), later) as tf.Tensor4D);
  const past: BatchKv = {
    layers: headerKv.map((layer, index) => ({
      keys: perRow(layer.keys, firstSlot?.[index].keys),
      values: perRow(layer.values, firstSlot?.[index].values),
    })),
    valid: new Uint8Array(rows * headerLength).fill(1),
    rows,
    length: headerLength,
  };
  const packet = decoder.forward({ embeddings, positions, valid, past }).kv;
  return {
    ...packet,
    layers: packet.layers.map((layer) => ({ keys: rotateKeysByRow(layer.keys, deltas, decoder.arch), values: layer.values })),
  };
}

/** The trailer after each row's last chunk token, attending to its header and chunk. */
function prefillTrailers(decoder: TfDecoder, adapter: StudentAdapter, packet: BatchKv, layout: PacketLayout): BatchKv {
  const { headerLength, trailerLength, chunkLengths } = layout;
  const rows = packet.rows;
  const positions = new Int32Array(rows * trailerLength);
  const valid = new Uint8Array(rows * trailerLength);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < trailerLength; i++) positions[r * trailerLength + i] = headerLength + chunkLengths[r] + i;
    if (chunkLengths[r] > 0) valid.fill(1, r * trailerLength, (r + 1) * trailerLength);
  }
  const trailer = adapter.trailer as tf.Tensor2D;
  return decoder.forward({ embeddings: broadcastRows(trailer, rows), positions, valid, past: packet }).kv;
}

function dropLeadingEntries(kv: BatchKv, count: number): BatchKv {
  const length = kv.length - count;
  const valid = new Uint8Array(kv.rows * length);
  for (let r = 0; r < kv.rows; r++) valid.set(kv.valid.subarray(r * kv.length + count, (r + 1) * kv.length), r * length);
  const cut = (t: tf.Tensor4D) => tf.slice(t, [0, 0, count, 0], [t.shape[0], t.shape[1], length, t.shape[3]]);
  return {
    layers: kv.layers.map((layer) => ({ keys: cut(layer.keys), values: cut(layer.values) })),
    valid,
    rows: kv.rows,
    length,
  };
}

/** Regroups packet rows `[samples * slots]` into one cache row per sample, packets side by side. */
function arrangeBySample(packets: BatchKv, layout: PacketLayout): BatchKv {
  const { samples, slots } = layout;
  const length = packets.length;
  const regroup = (t: tf.Tensor4D) => {
    const [, heads, , headDim] = t.shape;
    const split = tf.reshape(t, [samples, slots, heads, length, headDim]);
    return tf.reshape(tf.transpose(split, [0, 2, 1, 3, 4]), [samples, heads, slots * length, headDim]) as tf.Tensor4D;
  };
  // [samples * slots, length] and [samples, slots * length] share one row-major order.
  return {
    layers: packets.layers.map((layer) => ({ keys: regroup(layer.keys), values: regroup(layer.values) })),
    valid: packets.valid,
    rows: samples,
    length: slots * length,
  };
}

function prefillPreamble(decoder: TfDecoder, batch: readonly FidelitySample[]): BatchKv | undefined {
  const length = batch[0].preamble.length;
  if (length === 0) {
    return undefined;
  }
  const hidden = decoder.arch.hiddenSize;
  const embeddings = new Float32Array(batch.length * length * hidden);
  const positions = new Int32Array(batch.length * length);
  batch.forEach((sample, b) => {
    decoder.writeEmbeddings(sample.preamble, embeddings, b * length * hidden);
    for (let i = 0; i < length; i++) positions[b * length + i] = i;
  });
  return decoder.forward({ embeddings: tf.tensor3d(embeddings, [batch.length, length, hidden]), positions }).kv;
}

/**
 * Feeds `prompt + answer[0 .. n-1)` after the context and returns the logits of the last n
 * positions. Rows are padded at the start so that those positions line up across samples.
 */
function teacherForcedAnswer(decoder: TfDecoder, batch: readonly FidelitySample[], context: BatchKv, layout: PacketLayout): tf.Tensor3D {
  const answerLength = batch[0].teacherTokens.length;
  const queries = batch.map((sample) => Int32Array.from([...sample.prompt, ...sample.teacherTokens.subarray(0, answerLength - 1)]));
  const width = Math.max(...queries.map((query) => query.length));
  const hidden = decoder.arch.hiddenSize;
  const embeddings = new Float32Array(batch.length * width * hidden);
  const positions = new Int32Array(batch.length * width);
  const valid = new Uint8Array(batch.length * width);
  queries.forEach((query, b) => {
    const padding = width - query.length;
    decoder.writeEmbeddings(query, embeddings, (b * width + padding) * hidden);
    for (let i = 0; i < query.length; i++) {
      positions[b * width + padding + i] = layout.contextEnd[b] + i;
      valid[b * width + padding + i] = 1;
    }
  });
  const result = decoder.forward({
    embeddings: tf.tensor3d(embeddings, [batch.length, width, hidden]),
    positions,
    valid,
    past: context,
    logitsLast: answerLength,
  });
  return result.logits as tf.Tensor3D;
}

/** `[count, n, hidden]` copies of `[n, hidden]`, through a broadcast add so gradients sum back. */
function broadcastRows(vectors: tf.Tensor2D, count: number): tf.Tensor3D {
  const [n, hidden] = vectors.shape;
  return tf.add(tf.zeros([count, n, hidden]), tf.expandDims(vectors, 0)) as tf.Tensor3D;
}

function checkBatch(batch: readonly FidelitySample[]): void {
  if (batch.length === 0) {
    throw new Error('A student batch needs at least one sample.');
  }
  const preamble = batch[0].preamble.length;
  const answer = batch[0].teacherTokens.length;
  for (const sample of batch) {
    if (sample.preamble.length !== preamble || sample.teacherTokens.length !== answer) {
      throw new Error('Samples of one student batch must share the preamble length and the answer length.');
    }
  }
}
