import type { DecoderArchitecture } from '../../inference/architecture.js';

/** New entries computed at consecutive positions `start … start + count - 1`, each attending to every entry before it and itself. */
export interface ComputedRun {
  start: number;
  count: number;
}

/** The token layout of one query's context: preamble, chunks in order, question. */
export interface ContextShape {
  preambleTokens: number;
  chunkTokens: readonly number[];
  questionTokens: number;
}

/** Strategies plus the lower bound, whose prefill work `prefillFlops` counts. */
export type FlopsCase = 'full' | 'prefix' | 'naive' | 'epic' | 'packet' | 'question only';

/**
 * Multiply-adds × 2 per new entry in the projections and MLP of all layers:
 * Q and O are `hidden × heads·head_dim`, K and V `hidden × kv_heads·head_dim`, the MLP 3 × `hidden × intermediate`.
 */
export function linearFlopsPerToken(arch: DecoderArchitecture): number {
  const queryWidth = arch.numHeads * arch.headDim;
  const kvWidth = arch.numKvHeads * arch.headDim;
  const perLayer = 2 * arch.hiddenSize * queryWidth + 2 * arch.hiddenSize * kvWidth + 3 * arch.hiddenSize * arch.intermediateSize;
  return 2 * perLayer * arch.numLayers;
}

/** FLOPs of `QKᵀ` and `softmax·V` for one new entry per attended entry, over all layers and query heads. */
export function attentionFlopsPerPair(arch: DecoderArchitecture): number {
  return 4 * arch.numHeads * arch.headDim * arch.numLayers;
}

/** FLOPs of computing the runs, plus the output head for the one row of logits the first token needs. */
export function runsFlops(arch: DecoderArchitecture, runs: readonly ComputedRun[]): number {
  const linear = linearFlopsPerToken(arch);
  const pair = attentionFlopsPerPair(arch);
  let total = 2 * arch.hiddenSize * arch.vocabSize;
  for (const { start, count } of runs) {
    // Entry start + i attends to start + i + 1 entries.
    const attended = count * (start + 1) + (count * (count - 1)) / 2;
    total += count * linear + attended * pair;
  }
  return total;
}

/**
 * Lists the entries each case computes at query time. `prefix` and the packet strategies reuse the
 * preamble, `epic` recomputes the first `epicTokens` of every chunk, and the lower bound computes
 * only the question. Packet prefill at ingestion is paid once per chunk and is not counted.
 */
export function computedRuns(shape: ContextShape, flopsCase: FlopsCase, epicTokens: number): ComputedRun[] {
  const total = shape.preambleTokens + shape.chunkTokens.reduce((sum, length) => sum + length, 0) + shape.questionTokens;
  const question = { start: total - shape.questionTokens, count: shape.questionTokens };
  switch (flopsCase) {
    case 'full':
      return [{ start: 0, count: total }];
    case 'prefix':
      return [{ start: shape.preambleTokens, count: total - shape.preambleTokens }];
    case 'naive':
    case 'packet':
    case 'question only':
      return [question];
    case 'epic': {
      const runs: ComputedRun[] = [];
      let offset = shape.preambleTokens;
      for (const length of shape.chunkTokens) {
        runs.push({ start: offset, count: Math.min(epicTokens, length) });
        offset += length;
      }
      return [...runs, question];
    }
  }
}

/** Prefill FLOPs of one query's context under each case. */
export function prefillFlops(arch: DecoderArchitecture, shape: ContextShape, flopsCase: FlopsCase, epicTokens: number): number {
  return runsFlops(arch, computedRuns(shape, flopsCase, epicTokens));
}
