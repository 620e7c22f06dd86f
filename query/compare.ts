import { performance } from 'node:perf_hooks';
import { generate } from '../inference/generate.js';
import { klDivergence, logSoftmax } from '../inference/log-probs.js';
import type { Strategy } from '../packets/strategies.js';
import type { QueryPipeline } from './pipeline.js';

export interface CompareOptions {
  strategies: readonly Strategy[];
  topK: number;
  /** Greedy tokens generated per strategy and compared with `full`'s. */
  maxTokens: number;
  epicTokens: number;
}

/** Per-question measurements of one strategy. */
interface StrategySample {
  prefillMs: number;
  timeToFirstTokenMs: number;
  contextTokens: number;
  computedTokens: number;
  splicedTokens: number;
  reusedTokens: number;
  avoided: number;
  /** KL(full ‖ strategy) of the first answer token's distribution, in nats. */
  firstTokenKl: number;
  top1Agrees: boolean;
  answerMatches: boolean;
}

export interface StrategyComparison {
  strategy: Strategy;
  questions: number;
  medianPrefillMs: number;
  medianTimeToFirstTokenMs: number;
  meanContextTokens: number;
  meanComputedTokens: number;
  meanSplicedTokens: number;
  /** Tokens taken from the prefix cache (the preamble, or a whole prompt for `prefix`). */
  meanReusedTokens: number;
  /** Mean share of the context's prefill that did not run. */
  meanPrefillAvoided: number;
  meanFirstTokenKl: number;
  /** Share of questions whose first answer token equals `full`'s. */
  top1Agreement: number;
  /** Share of questions whose greedy answer equals `full`'s token for token. */
  answerMatch: number;
}

/**
 * Runs every strategy on the same retrieved chunks for each question and compares speed, work and
 * answers with `full`, the quality reference. Strategies run in a rotating order per question so
 * warm-up and background load do not favor one of them.
 */
export async function compareStrategies(pipeline: QueryPipeline, questions: readonly string[], options: CompareOptions): Promise<StrategyComparison[]> {
  const order: Strategy[] = ['full', ...options.strategies.filter((strategy) => strategy !== 'full')];
  const samples = new Map<Strategy, StrategySample[]>(order.map((strategy) => [strategy, []]));
  for (const [index, question] of questions.entries()) {
    const settings = pipeline.resolveRequest({ question, topK: options.topK, maxTokens: options.maxTokens, strategy: 'full' });
    const retrieval = await pipeline.retrieve(settings);
    const runs = new Map<Strategy, { logits: Float32Array; tokens: number[]; sample: Omit<StrategySample, 'firstTokenKl' | 'top1Agrees' | 'answerMatches'> }>();
    for (const strategy of rotate(order, index)) {
      const began = performance.now();
      const context = await pipeline.buildContext(retrieval, strategy, options.epicTokens);
      const prefillMs = performance.now() - began;
      const generated = await generate(pipeline.options.engine, context.prefill.start, { maxTokens: options.maxTokens });
      const { accounting } = context.prefill;
      runs.set(strategy, {
        logits: context.prefill.start.logits,
        tokens: generated.tokens,
        sample: {
          prefillMs,
          timeToFirstTokenMs: retrieval.retrievalMs + prefillMs + (generated.firstTokenMs ?? 0),
          contextTokens: accounting.contextTokens,
          computedTokens: accounting.computedTokens,
          splicedTokens: accounting.splicedTokens,
          reusedTokens: accounting.reusedTokens,
          avoided: accounting.prefillComputeAvoided,
        },
      });
    }
    const reference = runs.get('full')!;
    for (const [strategy, run] of runs) {
      samples.get(strategy)!.push({
        ...run.sample,
        firstTokenKl: klDivergence(logSoftmax(reference.logits), logSoftmax(run.logits)),
        top1Agrees: run.tokens[0] === reference.tokens[0],
        answerMatches: run.tokens.length === reference.tokens.length && run.tokens.every((token, i) => token === reference.tokens[i]),
      });
    }
  }
  return order.filter((strategy) => options.strategies.includes(strategy)).map((strategy) => summarize(strategy, samples.get(strategy)!));
}

function summarize(strategy: Strategy, samples: StrategySample[]): StrategyComparison {
  const mean = (pick: (sample: StrategySample) => number) => samples.reduce((sum, sample) => sum + pick(sample), 0) / samples.length;
  return {
    strategy,
    questions: samples.length,
    medianPrefillMs: median(samples.map((sample) => sample.prefillMs)),
    medianTimeToFirstTokenMs: median(samples.map((sample) => sample.timeToFirstTokenMs)),
    meanContextTokens: mean((sample) => sample.contextTokens),
    meanComputedTokens: mean((sample) => sample.computedTokens),
    meanSplicedTokens: mean((sample) => sample.splicedTokens),
    meanReusedTokens: mean((sample) => sample.reusedTokens),
    meanPrefillAvoided: mean((sample) => sample.avoided),
    meanFirstTokenKl: mean((sample) => sample.firstTokenKl),
    top1Agreement: mean((sample) => (sample.top1Agrees ? 1 : 0)),
    answerMatch: mean((sample) => (sample.answerMatches ? 1 : 0)),
  };
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function rotate<T>(items: readonly T[], by: number): T[] {
  const shift = by % items.length;
  return [...items.slice(shift), ...items.slice(0, shift)];
}
