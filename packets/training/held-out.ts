import type { InferenceEngine } from '../../inference/engine.js';
import { chooseDefaultVariant, type GateRecord, type HeldOutFidelity, type RecordedFidelity } from '../adapter.js';
import type { AdapterVectors } from '../adapter-vectors.js';
import { evaluateFidelity, type FidelityReport } from './fidelity.js';
import { loadOrBuildDataset, type Dataset, type DocumentSource } from './samples.js';

/** Held-out samples for one chunk count. */
export interface HeldOutSet {
  chunks: number;
  dataset: Dataset;
}

/** Builds (or loads from the cache) the test split for each chunk count. */
export async function loadHeldOutSets(
  engine: InferenceEngine,
  options: { source: DocumentSource; chunkCounts: number[]; samples: number; seed?: number },
  onProgress?: (stage: string, done: number, total: number) => void,
): Promise<HeldOutSet[]> {
  const sets: HeldOutSet[] = [];
  for (const chunks of options.chunkCounts) {
    const dataset = await loadOrBuildDataset(
      engine,
      { split: 'test', source: options.source, samples: options.samples, chunkCounts: [chunks], seed: options.seed ?? 0 },
      onProgress,
    );
    sets.push({ chunks, dataset });
  }
  return sets;
}

/**
 * Measures the adapter and naive concatenation on the held-out sets through the ONNX runtime and
 * applies the fidelity gate.
 */
export async function evaluateHeldOut(
  engine: InferenceEngine,
  adapter: AdapterVectors,
  sets: readonly HeldOutSet[],
  onProgress?: (done: number, total: number) => void,
): Promise<{ fidelity: HeldOutFidelity; gate: GateRecord }> {
  const total = 2 * sets.reduce((sum, set) => sum + set.dataset.samples.length, 0);
  let done = 0;
  const tick = () => onProgress?.(++done, total);
  const byChunkCount: HeldOutFidelity['byChunkCount'] = [];
  let adapterKl = 0;
  let naiveKl = 0;
  let count = 0;
  for (const set of sets) {
    const samples = set.dataset.samples;
    const withAdapter = await evaluateFidelity(engine, samples, { kind: 'adapter', adapter }, { onProgress: tick });
    const naive = await evaluateFidelity(engine, samples, { kind: 'naive' }, { onProgress: tick });
    byChunkCount.push({ chunks: set.chunks, adapter: record(withAdapter), naive: record(naive) });
    adapterKl += withAdapter.meanKl * samples.length;
    naiveKl += naive.meanKl * samples.length;
    count += samples.length;
  }
  const fidelity: HeldOutFidelity = {
    data: sets.map((set) => set.dataset.description).join('; '),
    byChunkCount,
    adapterMeanKl: adapterKl / count,
    naiveMeanKl: naiveKl / count,
  };
  const decision = chooseDefaultVariant([
    { name: 'naive', variant: 'naive', meanKl: fidelity.naiveMeanKl },
    { name: adapter.id, variant: adapter.variant, meanKl: fidelity.adapterMeanKl },
  ]);
  const gate: GateRecord = { verdict: decision.choice.variant === 'naive' ? 'rejected' : 'default', reason: decision.reason };
  return { fidelity, gate };
}

function record(report: FidelityReport): RecordedFidelity {
  return {
    strategy: report.strategy,
    samples: report.samples,
    meanKl: report.meanKl,
    top1Agreement: report.top1Agreement,
    exactMatch: report.exactMatch,
    meanMatchingPrefix: report.meanMatchingPrefix,
  };
}
