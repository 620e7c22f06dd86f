/**
 * Compares adapters with EPIC-k sample by sample on the stories260K held-out sets. For each chunk
 * count it prints the mean per-sample KL difference (adapter minus EPIC-k, so negative means the
 * adapter is closer to full prefill), a 95% paired bootstrap interval, and how many samples the
 * adapter wins.
 *
 * Run: npx tsx bench/paired-kl.ts --adapters A.safetensors[,B.safetensors…] [--epic 4] [--chunks 2,3,4]
 *      [--samples 100] [--resamples 10000]
 */
import { parseArgs } from 'node:util';
import { SeededRandom } from '../common/random.js';
import { InferenceEngine } from '../inference/engine.js';
import { expectedModelOf, loadAdapter } from '../packets/adapter.js';
import { compareWithTeacher, studentAnswer, type EvaluatedStrategy } from '../packets/training/fidelity.js';
import { loadHeldOutSets } from '../packets/training/held-out.js';
import type { FidelitySample } from '../packets/training/samples-types.js';
import { benchModelDir, machineSummary } from './setup.js';

const list = (value: string) => value.split(',').map((part) => part.trim()).filter((part) => part.length > 0);

async function sampleKls(engine: InferenceEngine, samples: readonly FidelitySample[], strategy: EvaluatedStrategy): Promise<number[]> {
  const kls: number[] = [];
  for (const sample of samples) {
    const answer = await studentAnswer(engine, sample, strategy);
    kls.push(compareWithTeacher(sample, answer.logits, answer.greedy, engine.arch.vocabSize).kl);
  }
  return kls;
}

/** Mean of `differences` and its 95% percentile bootstrap interval. */
function bootstrapMean(differences: readonly number[], resamples: number, random: SeededRandom): { mean: number; low: number; high: number } {
  const n = differences.length;
  const mean = differences.reduce((a, b) => a + b, 0) / n;
  const means = new Float64Array(resamples);
  for (let r = 0; r < resamples; r++) {
    let sum = 0;
    for (let i = 0; i < n; i++) sum += differences[Math.floor(random.nextFloat() * n)];
    means[r] = sum / n;
  }
  means.sort();
  return { mean, low: means[Math.floor(0.025 * resamples)], high: means[Math.ceil(0.975 * resamples) - 1] };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      adapters: { type: 'string' },
      epic: { type: 'string', default: '4' },
      chunks: { type: 'string', default: '2,3,4' },
      samples: { type: 'string', default: '100' },
      resamples: { type: 'string', default: '10000' },
    },
  });
  if (!values.adapters) {
    throw new Error('Name the adapter files to compare: --adapters A.safetensors[,B.safetensors…].');
  }
  console.log(`Machine: ${machineSummary()}\n`);
  const engine = await InferenceEngine.load(await benchModelDir('stories260K'));
  try {
    const adapters = list(values.adapters).map((file) => ({ file, loaded: loadAdapter(file, expectedModelOf(engine)) }));
    const epic = Number(values.epic);
    const heldOut = await loadHeldOutSets(engine, { source: { kind: 'self-sampled' }, chunkCounts: list(values.chunks).map(Number), samples: Number(values.samples) });
    const random = new SeededRandom(1);
    console.log(`| chunks | adapter | mean KL | epic-${epic} mean KL | difference (95% bootstrap interval) | samples the adapter wins |`);
    console.log('|---|---|---|---|---|---|');
    for (const set of heldOut) {
      const baseline = await sampleKls(engine, set.dataset.samples, { kind: 'epic', recompute: epic });
      for (const { file, loaded } of adapters) {
        const mine = await sampleKls(engine, set.dataset.samples, { kind: 'adapter', adapter: loaded.vectors });
        const differences = mine.map((kl, i) => kl - baseline[i]);
        const { mean, low, high } = bootstrapMean(differences, Number(values.resamples), random);
        const wins = differences.filter((d) => d < 0).length;
        const average = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
        console.log(
          `| ${set.chunks} | ${loaded.metadata.id} (${file}) | ${average(mine).toFixed(4)} | ${average(baseline).toFixed(4)} | ` +
            `${mean.toFixed(4)} (${low.toFixed(4)} to ${high.toFixed(4)}) | ${wins} of ${differences.length} |`,
        );
      }
    }
  } finally {
    await engine.release();
  }
}

await main();
