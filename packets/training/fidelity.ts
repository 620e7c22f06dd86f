import type { InferenceEngine } from '../../inference/engine.js';
import type { KvCache } from '../../inference/kv-cache.js';
import { klDivergence, logSoftmax } from '../../inference/log-probs.js';
import { argmax } from '../../inference/sampling.js';
import type { AdapterVectors } from '../adapter-vectors.js';
import type { PrefixCache } from '../prefix-cache.js';
import { prefillContext, type ContextOptions } from '../strategies.js';
import type { FidelitySample } from './samples-types.js';

/**
 * Held-out fidelity of a context strategy, measured through the ONNX runtime exactly as the
 * product serves it: the student context comes from `prefillContext`, then the teacher's answer is
 * teacher-forced after the prompt and compared with the teacher's distributions.
 */

/** A strategy under evaluation. `prefix` reuses the longest exact token prefix found in `prefixCache`. */
export type EvaluatedStrategy =
  | { kind: 'full' }
  | { kind: 'prefix'; prefixCache: PrefixCache }
  | { kind: 'naive' }
  | { kind: 'epic'; recompute: number }
  | { kind: 'adapter'; adapter: AdapterVectors };

export function strategyLabel(strategy: EvaluatedStrategy): string {
  switch (strategy.kind) {
    case 'epic':
      return `epic-${strategy.recompute}`;
    case 'adapter':
      return strategy.adapter.headerKv
        ? `${strategy.adapter.variant} (${strategy.adapter.headerLength} per layer${strategy.adapter.firstSlot ? ', first-slot header' : ''})`
        : `${strategy.adapter.variant} (${strategy.adapter.headerLength}+${strategy.adapter.trailerLength})`;
    default:
      return strategy.kind;
  }
}

export interface SampleFidelity {
  /** Mean KL(teacher ‖ student) over the answer positions, in nats. */
  kl: number;
  /** Answer positions where the student's most likely token is the teacher's token. */
  top1Matches: number;
  /** Leading tokens of the student's own greedy answer that equal the teacher's. */
  greedyPrefix: number;
  /** The student's greedy answer equals the teacher's in full. */
  exact: boolean;
  /** Chunk tokens recomputed with context (EPIC). */
  recomputedTokens: number;
}

export interface FidelityReport {
  strategy: string;
  samples: number;
  /** Mean over samples of the per-sample mean KL, in nats. */
  meanKl: number;
  /** Share of answer positions whose top-1 token matches the teacher's, 0..1. */
  top1Agreement: number;
  /** Share of samples whose greedy answer equals the teacher's exactly, 0..1. */
  exactMatch: number;
  /** Mean length of the matching greedy prefix, in tokens. */
  meanMatchingPrefix: number;
  /** Mean chunk tokens recomputed per sample. */
  meanRecomputedTokens: number;
}

function contextOptions(strategy: EvaluatedStrategy): ContextOptions {
  switch (strategy.kind) {
    case 'full':
      return { strategy: 'full' };
    case 'prefix':
      return { strategy: 'prefix', prefixCache: strategy.prefixCache };
    case 'naive':
      return { strategy: 'naive' };
    case 'epic':
      return { strategy: 'epic', epicTokens: strategy.recompute };
    case 'adapter':
      return { strategy: 'packet', adapter: strategy.adapter };
  }
}

/**
 * Builds the student context of one sample and returns its logits `[answerLength, vocab]` at the
 * teacher's answer positions, plus the greedy answer the student produces on its own.
 */
export async function studentAnswer(
  engine: InferenceEngine,
  sample: FidelitySample,
  strategy: EvaluatedStrategy,
): Promise<{ logits: Float32Array; greedy: Int32Array; recomputedTokens: number }> {
  const answerLength = sample.teacherTokens.length;
  const vocab = engine.arch.vocabSize;
  const context = await prefillContext(
    engine,
    { preamble: sample.preamble, chunks: sample.chunks.map((tokens) => ({ tokens })), question: sample.prompt },
    contextOptions(strategy),
  );
  const logits = new Float32Array(answerLength * vocab);
  logits.set(context.start.logits, 0);
  if (answerLength > 1) {
    const forced = await engine.forward({
      tokens: sample.teacherTokens.subarray(0, answerLength - 1),
      past: context.start.cache,
      logits: 'all',
    });
    logits.set(forced.logits, vocab);
  }
  const greedy = await greedyAnswer(engine, context.start.cache, context.start.logits, answerLength);
  return { logits, greedy, recomputedTokens: context.accounting.recomputedTokens };
}

async function greedyAnswer(engine: InferenceEngine, cache: KvCache, first: Float32Array, length: number): Promise<Int32Array> {
  const tokens = new Int32Array(length);
  let logits = first;
  let past = cache;
  for (let i = 0; i < length; i++) {
    tokens[i] = argmax(logits);
    if (i + 1 < length) {
      const step = await engine.forward({ tokens: [tokens[i]], past });
      past = step.present;
      logits = step.logits;
    }
  }
  return tokens;
}

/** Compares the student's answer with the teacher's. */
export function compareWithTeacher(sample: FidelitySample, logits: Float32Array, greedy: Int32Array, vocab: number): Omit<SampleFidelity, 'recomputedTokens'> {
  const answerLength = sample.teacherTokens.length;
  let kl = 0;
  let top1Matches = 0;
  for (let i = 0; i < answerLength; i++) {
    const row = logits.subarray(i * vocab, (i + 1) * vocab);
    const teacher = sample.teacherLogProbs.subarray(i * vocab, (i + 1) * vocab);
    kl += klDivergence(teacher, logSoftmax(row));
    if (argmax(row) === sample.teacherTokens[i]) top1Matches++;
  }
  let greedyPrefix = 0;
  while (greedyPrefix < answerLength && greedy[greedyPrefix] === sample.teacherTokens[greedyPrefix]) greedyPrefix++;
  return { kl: kl / answerLength, top1Matches, greedyPrefix, exact: greedyPrefix === answerLength };
}

export interface EvaluateOptions {
  /** Called after each sample with the number done. */
  onProgress?: (done: number) => void;
}

/** Evaluates one strategy over samples and returns the aggregate metrics. */
export async function evaluateFidelity(
  engine: InferenceEngine,
  samples: readonly FidelitySample[],
  strategy: EvaluatedStrategy,
  options: EvaluateOptions = {},
): Promise<FidelityReport> {
  const results: SampleFidelity[] = [];
  for (const sample of samples) {
    const answer = await studentAnswer(engine, sample, strategy);
    results.push({ ...compareWithTeacher(sample, answer.logits, answer.greedy, engine.arch.vocabSize), recomputedTokens: answer.recomputedTokens });
    options.onProgress?.(results.length);
  }
  return summarize(strategyLabel(strategy), samples, results);
}

export function summarize(label: string, samples: readonly FidelitySample[], results: readonly SampleFidelity[]): FidelityReport {
  const count = results.length;
  const positions = samples.reduce((sum, sample) => sum + sample.teacherTokens.length, 0);
  const mean = (pick: (r: SampleFidelity) => number) => (count === 0 ? 0 : results.reduce((sum, r) => sum + pick(r), 0) / count);
  return {
    strategy: label,
    samples: count,
    meanKl: mean((r) => r.kl),
    top1Agreement: positions === 0 ? 0 : results.reduce((sum, r) => sum + r.top1Matches, 0) / positions,
    exactMatch: mean((r) => (r.exact ? 1 : 0)),
    meanMatchingPrefix: mean((r) => r.greedyPrefix),
    meanRecomputedTokens: mean((r) => r.recomputedTokens),
  };
}

/** Returns the share of naive concatenation's KL gap to full prefill that a strategy closes: 1 - KL_x / KL_naive. */
export function gapRecovered(report: FidelityReport, naive: FidelityReport): number {
  return naive.meanKl === 0 ? 0 : 1 - report.meanKl / naive.meanKl;
}
