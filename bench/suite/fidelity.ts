import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { InferenceEngine } from '../../inference/engine.js';
import type { AdapterVectors } from '../../packets/adapter-vectors.js';
import { PrefixCache } from '../../packets/prefix-cache.js';
import {
  compareWithTeacher,
  evaluateFidelity,
  strategyLabel,
  studentAnswer,
  summarize,
  type EvaluatedStrategy,
  type FidelityReport,
  type SampleFidelity,
} from '../../packets/training/fidelity.js';
import { loadHeldOutSets, type HeldOutSet } from '../../packets/training/held-out.js';
import type { FidelitySample } from '../../packets/training/samples-types.js';
import type { ReportSection, ReportTable, SuitePartOptions } from './report-types.js';

/** Chunks per held-out sample, one sample set each, as in the adapter's held-out evaluation. */
const chunkCounts = [2, 3, 4];
/** Tokens EPIC recomputes at the start of each chunk. */
const epicTokens = 4;

export type FidelityOptions = SuitePartOptions & {
  /** The adapter the `packet` strategy splices with; without one `packet` splices naive packets. */
  adapter?: AdapterVectors;
  /** Origin of the adapter and the reason it was chosen, as `resolveAdapter` returns it. */
  adapterDescription: string;
};

/** One strategy of the report: its row label and how its fidelity is measured. */
interface MeasuredStrategy {
  name: string;
  measure(engine: InferenceEngine, samples: readonly FidelitySample[]): Promise<FidelityReport>;
}

interface FidelityRow {
  chunks: number;
  report: FidelityReport;
}

/**
 * Measures how close each context strategy comes to a full prefill on held-out samples the model
 * sampled itself (`quick`: 10 per chunk count, otherwise 100). Samples come from the kvpack cache
 * folder when an earlier run built them for the same model, so nothing is written to `scratchDir`.
 */
export async function measureFidelity(engine: InferenceEngine, options: FidelityOptions): Promise<ReportSection> {
  const samplesPerSet = options.quick ? 10 : 100;

  // 1. Held-out samples and their reference answers.
  const began = performance.now();
  const sets = await loadHeldOutSets(engine, { source: { kind: 'self-sampled' }, chunkCounts, samples: samplesPerSet }, throttledProgress(options.log));
  options.log(`fidelity: ${sets.length} held-out sets of ${samplesPerSet} samples ready in ${seconds(began)} s`);

  // 2. Every strategy on every set.
  const strategies = measuredStrategies(options.adapter);
  const rows: FidelityRow[] = [];
  for (const set of sets) {
    for (const strategy of strategies) {
      const started = performance.now();
      const report = { ...(await strategy.measure(engine, set.dataset.samples)), strategy: strategy.name };
      rows.push({ chunks: set.chunks, report });
      options.log(`fidelity: ${set.chunks} chunks, ${strategy.name}: mean KL ${formatKl(report.meanKl)} in ${seconds(started)} s`);
    }
  }

  // 3. The report section.
  return fidelitySection(engine, sets, rows, strategies, options);
}

/** full, prefix, naive, epic and packet, in the order of the report. */
function measuredStrategies(adapter: AdapterVectors | undefined): MeasuredStrategy[] {
  const evaluated = (name: string, strategy: EvaluatedStrategy): MeasuredStrategy => ({
    name,
    measure: (engine, samples) => evaluateFidelity(engine, samples, strategy),
  });
  const packet: EvaluatedStrategy = adapter ? { kind: 'adapter', adapter } : { kind: 'naive' };
  return [
    evaluated('full', { kind: 'full' }),
    { name: 'prefix', measure: measurePrefixFidelity },
    evaluated('naive', { kind: 'naive' }),
    evaluated(`epic-${epicTokens}`, { kind: 'epic', recompute: epicTokens }),
    evaluated(adapter ? `packet: ${strategyLabel(packet)}` : 'packet: no adapter', packet),
  ];
}

/**
 * Measures `prefix` on a cache hit for the whole context: each sample's prefix cache contains the
 * entries of its preamble and chunks, prefilled in one earlier call, so only the prompt is computed
 * on top of them.
 */
async function measurePrefixFidelity(engine: InferenceEngine, samples: readonly FidelitySample[]): Promise<FidelityReport> {
  const results: SampleFidelity[] = [];
  for (const sample of samples) {
    const context = Int32Array.from([...sample.preamble, ...sample.chunks.flatMap((chunk) => [...chunk])]);
    const warm = await engine.forward({ tokens: context, logits: 'none' });
    const prefixCache = new PrefixCache(warm.present.byteLength);
    prefixCache.store(context, warm.present);

    const answer = await studentAnswer(engine, sample, { kind: 'prefix', prefixCache });
    const reused = prefixCache.stats().reusedTokens;
    if (reused !== context.length) {
      throw new Error(`The prefix cache served ${reused} of the ${context.length} context tokens it was warmed with; the prefix row would not measure a cache hit.`);
    }
    results.push({ ...compareWithTeacher(sample, answer.logits, answer.greedy, engine.arch.vocabSize), recomputedTokens: answer.recomputedTokens });
  }
  return summarize('prefix', samples, results);
}

function fidelitySection(engine: InferenceEngine, sets: HeldOutSet[], rows: FidelityRow[], strategies: MeasuredStrategy[], options: FidelityOptions): ReportSection {
  const settings = sets[0].dataset.settings;
  const model = path.basename(engine.folder.dir);
  const pooled: FidelityRow[] = strategies.map((strategy) => ({
    chunks: 0,
    report: poolReports(strategy.name, rows.filter((row) => row.report.strategy === strategy.name).map((row) => row.report)),
  }));
  return {
    title: `Fidelity per strategy (${model})`,
    intro: [
      `How close each context strategy comes to a full prefill on ${model}: held-out samples of ${chunkCounts.join(', ')} chunks ` +
        `(${settings.samples} each, ${options.quick ? 'quick run' : 'full run'}) cut from stories the model sampled itself ` +
        `(test split, seed ${settings.seed}, chunks of ${settings.minChunkTokens}–${settings.maxChunkTokens} tokens from different stories).`,
      `A sample is BOS, its chunks and a prompt naming a character. The reference is one full prefill of the sample followed by ` +
        `${settings.answerTokens} greedy answer tokens. Each strategy builds the same context as queries build it, then the ` +
        `reference answer is teacher-forced and compared with the reference position by position.`,
      `Strategies: full (the reference path itself); prefix (the sample's BOS and chunks come from a prefix cache that holds ` +
        `exactly them, so only the prompt is computed); naive (chunk packets prefilled alone from position 0, keys re-rotated, no ` +
        `adapter); epic-${epicTokens} (naive, then the first ${epicTokens} tokens of each chunk recomputed with everything before ` +
        `them); packet (${options.adapterDescription}).`,
    ],
    tables: [fidelityTable(pooled, settings.answerTokens, false), fidelityTable(rows, settings.answerTokens, true)],
    notes: [
      `Mean KL is KL(full ‖ strategy) in nats, averaged over the ${settings.answerTokens} answer positions, then over samples. ` +
        `Top-1 agreement is the share of answer positions where the strategy's most likely token is the reference token. ` +
        `Greedy match is the share of samples whose own ${settings.answerTokens} greedy tokens equal the reference answer. ` +
        `Tokens recomputed counts chunk tokens per sample computed again with context (EPIC only).`,
      `The full row checks the harness. It runs the same tokens through the same model as the reference, but the reference ` +
        `decodes its answer one token at a time and stores its log-probabilities in float32, while the evaluation teacher-forces ` +
        `the answer in one call. A KL above 0 there is floating-point noise and shows its size for the other rows. Prefix is exact ` +
        `in exact arithmetic too, because it reuses the entries of an identical token prefix.`,
      ...(options.quick ? [`Quick run: with ${settings.samples} samples per chunk count one sample moves greedy match by ${(100 / settings.samples).toFixed(0)} points.`] : []),
    ],
  };
}

/** Pools one strategy's reports over the chunk counts, weighting each by its samples. */
function poolReports(strategy: string, reports: FidelityReport[]): FidelityReport {
  const samples = reports.reduce((sum, report) => sum + report.samples, 0);
  const weighted = (pick: (report: FidelityReport) => number) => reports.reduce((sum, report) => sum + pick(report) * report.samples, 0) / samples;
  // Every sample has the same answer length, so weighting top-1 agreement by samples weights it by answer positions.
  return {
    strategy,
    samples,
    meanKl: weighted((report) => report.meanKl),
    top1Agreement: weighted((report) => report.top1Agreement),
    exactMatch: weighted((report) => report.exactMatch),
    meanMatchingPrefix: weighted((report) => report.meanMatchingPrefix),
    meanRecomputedTokens: weighted((report) => report.meanRecomputedTokens),
  };
}

function fidelityTable(rows: FidelityRow[], answerTokens: number, byChunkCount: boolean): ReportTable {
  const columns = ['strategy', 'samples', 'mean KL (nats)', 'top-1 agreement', `greedy-${answerTokens} match`, 'tokens recomputed'];
  return {
    columns: byChunkCount ? ['chunks', ...columns] : columns,
    align: byChunkCount ? ['right', 'left', 'right', 'right', 'right', 'right', 'right'] : undefined,
    rows: rows.map(({ chunks, report }) => {
      const cells = [
        report.strategy,
        String(report.samples),
        formatKl(report.meanKl),
        percent(report.top1Agreement),
        percent(report.exactMatch),
        report.meanRecomputedTokens.toFixed(1),
      ];
      return byChunkCount ? [String(chunks), ...cells] : cells;
    }),
  };
}

/** Four decimals, or scientific notation for the floating-point noise of the exact strategies. */
function formatKl(kl: number): string {
  if (kl === 0) return '0';
  return kl < 1e-4 ? kl.toExponential(1) : kl.toFixed(4);
}

function percent(share: number): string {
  return `${(share * 100).toFixed(1)}%`;
}

function seconds(since: number): string {
  return ((performance.now() - since) / 1000).toFixed(1);
}

/** Logs data generation at every fifth of each stage, not at every story. */
function throttledProgress(log: (line: string) => void): (stage: string, done: number, total: number) => void {
  return (stage, done, total) => {
    const step = Math.max(1, Math.ceil(total / 5));
    if (done % step === 0 || done === total) log(`fidelity: ${stage} ${done}/${total}`);
  };
}
