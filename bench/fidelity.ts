/**
 * Measures adapter fidelity on stories260K held-out samples of 2, 3 and 4 chunks over several
 * training seeds. Per strategy: mean KL to full prefill, top-1 agreement, exact match of the first
 * 16 greedy tokens, and the share of naive concatenation's gap that it closes; per adapter also
 * the training time. Baselines (naive, EPIC-k) are deterministic and measured once. Prints
 * markdown tables.
 *
 * Run: npx tsx bench/fidelity.ts [--seeds 1,2,3] [--variants conditioned,conditioned-kv,reference] [--steps 340]
 *      [--header 8] [--trailer 8] [--train-samples 400] [--train-chunks 2,3,4] [--test-samples 100]
 *      [--validation-samples 144] [--epic 4,8,16] [--lr 0.02] [--save-best FILE] [--save-dir DIR]
 *      [--init-dir DIR] [--single-header]
 * --save-best writes the run with the lowest held-out KL; --save-dir writes every run as
 * <variant>-seed<N>.safetensors. A conditioned-kv run starts from the same seed's conditioned
 * header when that variant runs too, and its steps and time include that stage; --init-dir DIR
 * takes that header from DIR/conditioned-seed<N>.safetensors instead. Conditioned-kv trains a
 * second header for the first slot unless --single-header is given.
 * One training run took 4.5 to 6 minutes on a 2-core AMD EPYC, plus data generation on first use.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fidelityTable } from '../cli/commands/adapter.js';
import { InferenceEngine } from '../inference/engine.js';
import { expectedModelOf, loadAdapter, writeAdapterFile, type AdapterFile } from '../packets/adapter.js';
import type { AdapterVariant } from '../packets/adapter-vectors.js';
import { evaluateFidelity, gapRecovered, type FidelityReport } from '../packets/training/fidelity.js';
import { loadHeldOutSets, type HeldOutSet } from '../packets/training/held-out.js';
import { trainAndEvaluateAdapter } from '../packets/training/pipeline.js';
import { loadOrBuildDataset } from '../packets/training/samples.js';
import { TfDecoder } from '../packets/training/tf-decoder.js';
import { benchModelDir, machineSummary } from './setup.js';

const list = (value: string) => value.split(',').map((part) => part.trim()).filter((part) => part.length > 0);

interface AdapterRun {
  variant: AdapterVariant;
  seed: number;
  file: AdapterFile;
  reports: Map<number, FidelityReport>;
  steps: number;
  seconds: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seeds: { type: 'string', default: '1,2,3' },
      variants: { type: 'string', default: 'conditioned,conditioned-kv,reference' },
      steps: { type: 'string', default: '340' },
      header: { type: 'string', default: '8' },
      trailer: { type: 'string', default: '8' },
      lr: { type: 'string', default: '0.02' },
      'train-samples': { type: 'string', default: '400' },
      'train-chunks': { type: 'string', default: '2,3,4' },
      'validation-samples': { type: 'string', default: '144' },
      'test-samples': { type: 'string', default: '100' },
      chunks: { type: 'string', default: '2,3,4' },
      epic: { type: 'string', default: '4,8,16' },
      'save-best': { type: 'string' },
      'save-dir': { type: 'string' },
      'init-dir': { type: 'string' },
      'single-header': { type: 'boolean', default: false },
    },
  });
  const seeds = list(values.seeds).map(Number);
  const variants = list(values.variants) as AdapterVariant[];
  const chunkCounts = list(values.chunks).map(Number);
  console.log(`Machine: ${machineSummary()}`);

  const modelDir = await benchModelDir('stories260K');
  const engine = await InferenceEngine.load(modelDir);
  const decoder = await TfDecoder.load(modelDir);
  try {
    // 1. Held-out data and the deterministic baselines.
    const source = { kind: 'self-sampled' } as const;
    const heldOut = await loadHeldOutSets(engine, { source, chunkCounts, samples: Number(values['test-samples']) });
    const baselines = await measureBaselines(engine, heldOut, list(values.epic).map(Number));

    // 2. Adapters, one training run per variant and seed.
    const validation = await loadOrBuildDataset(engine, { split: 'validation', source, samples: Number(values['validation-samples']), chunkCounts: [2, 3, 4], seed: 0 });
    const runs: AdapterRun[] = [];
    for (const variant of variants) {
      for (const seed of seeds) {
        const train = await loadOrBuildDataset(engine, {
          split: 'train',
          source,
          samples: Number(values['train-samples']),
          chunkCounts: list(values['train-chunks']).map(Number),
          seed,
        });
        // A conditioned-kv header starts from this seed's conditioned header when one was trained.
        const stage = variant === 'conditioned-kv' ? runs.find((run) => run.variant === 'conditioned' && run.seed === seed) : undefined;
        const trained = await trainAndEvaluateAdapter(engine, decoder, { train, validation, heldOut }, {
          id: `stories260k-${variant}`,
          variant,
          initHeader: stage?.file.vectors.header ?? savedConditionedHeader(values['init-dir'], variant, seed, engine),
          firstSlotHeader: variant === 'conditioned-kv' && !values['single-header'],
          headerLength: Number(values.header),
          trailerLength: variant === 'reference' ? Number(values.trailer) : 0,
          steps: Number(values.steps),
          batchSize: 8,
          learningRate: Number(values.lr),
          seed,
        });
        const reports = new Map<number, FidelityReport>();
        for (const set of heldOut) {
          reports.set(set.chunks, await evaluateFidelity(engine, set.dataset.samples, { kind: 'adapter', adapter: trained.vectors }));
        }
        runs.push({
          variant,
          seed,
          file: trained,
          reports,
          steps: trained.result.steps + (stage?.steps ?? 0),
          seconds: trained.result.durationMs / 1000 + (stage?.seconds ?? 0),
        });
        console.error(`${variant} seed ${seed}: ${trained.result.steps} steps, ${(trained.result.durationMs / 1000).toFixed(0)} s, held-out KL ${trained.metadata.fidelity?.adapterMeanKl.toFixed(4)}`);
      }
    }

    // 3. Tables.
    console.log('\n## Baselines (deterministic)\n');
    console.log(fidelityTable(chunkCounts.flatMap((chunks) => baselines.get(chunks) ?? [])));
    console.log(`\n## Adapters over seeds ${seeds.join(', ')} (mean ± standard deviation)\n`);
    console.log(adapterTable(runs, baselines, chunkCounts));
    console.log('\n## Per seed\n');
    console.log(fidelityTable(runs.flatMap((run) => chunkCounts.map((chunks) => ({
      chunks,
      report: { ...(run.reports.get(chunks) as FidelityReport), strategy: `${run.variant} seed ${run.seed}` },
      naive: (baselines.get(chunks) as Array<{ naive: FidelityReport }>)[0].naive,
    })))));

    if (values['save-dir']) {
      for (const run of runs) {
        writeAdapterFile(path.join(values['save-dir'], `${run.variant}-seed${run.seed}.safetensors`), run.file.vectors, run.file.metadata);
      }
    }
    if (values['save-best']) {
      saveBest(runs, values['save-best']);
    }
  } finally {
    decoder.dispose();
    await engine.release();
  }
}

async function measureBaselines(engine: InferenceEngine, heldOut: HeldOutSet[], epic: number[]) {
  const baselines = new Map<number, Array<{ chunks: number; report: FidelityReport; naive: FidelityReport }>>();
  for (const set of heldOut) {
    const naive = await evaluateFidelity(engine, set.dataset.samples, { kind: 'naive' });
    const rows = [{ chunks: set.chunks, report: naive, naive }];
    for (const k of epic) {
      rows.push({ chunks: set.chunks, report: await evaluateFidelity(engine, set.dataset.samples, { kind: 'epic', recompute: k }), naive });
    }
    baselines.set(set.chunks, rows);
  }
  return baselines;
}

/** Reads the header of `<dir>/conditioned-seed<N>.safetensors`, written by an earlier `--save-dir` run, as a conditioned-kv start. */
function savedConditionedHeader(dir: string | undefined, variant: AdapterVariant, seed: number, engine: InferenceEngine): Float32Array | undefined {
  if (dir === undefined || variant !== 'conditioned-kv') return undefined;
  return loadAdapter(path.join(dir, `conditioned-seed${seed}.safetensors`), expectedModelOf(engine)).vectors.header;
}

function meanSpread(values: number[], digits: number, scale = 1): string {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const deviation = Math.sqrt(values.reduce((sum, x) => sum + (x - mean) ** 2, 0) / Math.max(1, values.length - 1));
  return `${(mean * scale).toFixed(digits)} ± ${(deviation * scale).toFixed(digits)}`;
}

function adapterTable(runs: AdapterRun[], baselines: Map<number, Array<{ naive: FidelityReport }>>, chunkCounts: number[]): string {
  const lines = [
    '| chunks | variant | seeds | mean KL | top-1 agreement % | exact greedy-16 % | gap recovered % | training s | steps |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  const variants = [...new Set(runs.map((run) => run.variant))];
  for (const chunks of chunkCounts) {
    const naive = (baselines.get(chunks) as Array<{ naive: FidelityReport }>)[0].naive;
    for (const variant of variants) {
      const mine = runs.filter((run) => run.variant === variant);
      const reports = mine.map((run) => run.reports.get(chunks) as FidelityReport);
      lines.push(
        `| ${chunks} | ${variant} | ${mine.length} | ${meanSpread(reports.map((r) => r.meanKl), 4)} | ` +
          `${meanSpread(reports.map((r) => r.top1Agreement), 1, 100)} | ${meanSpread(reports.map((r) => r.exactMatch), 0, 100)} | ` +
          `${meanSpread(reports.map((r) => gapRecovered(r, naive)), 0, 100)} | ${meanSpread(mine.map((run) => run.seconds), 0)} | ` +
          `${meanSpread(mine.map((run) => run.steps), 0)} |`,
      );
    }
  }
  return lines.join('\n');
}

/** Writes the run with the lowest held-out KL that passed the gate, of whichever variant. */
function saveBest(runs: AdapterRun[], file: string): void {
  const passed = runs.filter((run) => run.file.metadata.gate?.verdict === 'default');
  if (passed.length === 0) {
    console.error('No adapter beat naive concatenation on held-out data; nothing saved.');
    return;
  }
  const best = passed.reduce((a, b) => ((a.file.metadata.fidelity?.adapterMeanKl ?? Infinity) <= (b.file.metadata.fidelity?.adapterMeanKl ?? Infinity) ? a : b));
  const id = path.basename(file).replace(/\.safetensors$/i, '').toLowerCase().replace(/[^a-z0-9_-]+/g, '-');
  const vectors = { ...best.file.vectors, id };
  writeAdapterFile(file, vectors, { ...best.file.metadata, id });
  console.error(`Saved ${best.variant} seed ${best.seed} to ${file}.`);
}

await main();
