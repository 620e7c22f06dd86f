import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../../common/paths.js';
import { SeededRandom } from '../../../common/random.js';
import { InferenceEngine } from '../../../inference/engine.js';
import { chooseDefaultVariant, loadAdapter, makeAdapterVectors } from '../../../packets/adapter.js';
import { evaluateFidelity } from '../../../packets/training/fidelity.js';
import { evaluateHeldOut, type HeldOutSet } from '../../../packets/training/held-out.js';
import { characterNames, loadOrBuildDataset, splitIntoChunks, type Dataset } from '../../../packets/training/samples.js';
import { testModelDir } from '../../helpers/models.js';

/** The adapter the repository ships for stories260K. */
const shippedAdapter = path.join(packageRoot, 'adapters', 'stories260K-conditioned.safetensors');

describe('fidelity data and gate on stories260K', () => {
  let engine: InferenceEngine;
  let dataset: Dataset;
  beforeAll(async () => {
    engine = await InferenceEngine.load(testModelDir('stories260K'));
    dataset = await loadOrBuildDataset(engine, { split: 'test', source: { kind: 'self-sampled' }, samples: 6, chunkCounts: [2, 3], seed: 42 });
  });
  afterAll(async () => engine.release());

  it('samples follow the protocol', () => {
    expect(dataset.samples).toHaveLength(6);
    dataset.samples.forEach((sample, i) => {
      expect(sample.chunks).toHaveLength(i % 2 === 0 ? 2 : 3);
      for (const chunk of sample.chunks) {
        expect(chunk.length).toBeGreaterThanOrEqual(36);
        expect(chunk.length).toBeLessThanOrEqual(60);
        expect(engine.tokenizer.decode(chunk)).toMatch(/[.!?]["'”’)]*$/);
      }
      const named = sample.chunks.slice(0, 2).flatMap((chunk) => characterNames(engine.tokenizer.decode(chunk)));
      const prompt = engine.tokenizer.decode(sample.prompt);
      expect(named.some((name) => prompt.includes(name))).toBe(true);
      expect(sample.teacherTokens).toHaveLength(16);
      expect(sample.teacherLogProbs).toHaveLength(16 * engine.arch.vocabSize);
    });
  });

  it('datasets repeat exactly from the cache', async () => {
    const again = await loadOrBuildDataset(engine, { split: 'test', source: { kind: 'self-sampled' }, samples: 6, chunkCounts: [2, 3], seed: 42 });
    expect(again.samples.map((s) => [...s.teacherTokens])).toEqual(dataset.samples.map((s) => [...s.teacherTokens]));
    expect(Array.from(again.samples[3].teacherLogProbs.subarray(0, 8))).toEqual(Array.from(dataset.samples[3].teacherLogProbs.subarray(0, 8)));
  });

  it('sentence chunks stay within the size range', () => {
    const text =
      'Lily had a red ball. She liked to throw it high. Tom saw her and ran over to play. They threw the ball back and forth. ' +
      'The sun was warm and the grass was soft. After a while they sat down to rest. Lily said she was happy.';
    const chunks = splitIntoChunks(engine.tokenizer.encode(text), engine.tokenizer, 20, 40);
    expect(chunks.length).toBeGreaterThan(1);
    for (const chunk of chunks) {
      expect(chunk.length).toBeGreaterThanOrEqual(20);
      expect(chunk.length).toBeLessThanOrEqual(40);
    }
  });

  it('full prefill reproduces the teacher', async () => {
    const report = await evaluateFidelity(engine, dataset.samples, { kind: 'full' });
    expect(report.meanKl).toBeLessThan(1e-6);
    expect(report.top1Agreement).toBe(1);
    expect(report.exactMatch).toBe(1);
  });

  it('gate default is never worse than naive', async ({ annotate }) => {
    const hidden = engine.arch.hiddenSize;
    const random = new SeededRandom(1);
    const noise = Float32Array.from({ length: 4 * hidden }, () => random.nextNormal());
    const candidates = [makeAdapterVectors('noise', 'conditioned', noise, new Float32Array(0), hidden)];
    if (existsSync(shippedAdapter)) {
      candidates.push(loadAdapter(shippedAdapter, { modelFingerprint: engine.modelFingerprint, hiddenSize: hidden }).vectors);
    }
    const sets: HeldOutSet[] = [{ chunks: 2, dataset }];
    const measured = [];
    for (const adapter of candidates) {
      const { fidelity, gate } = await evaluateHeldOut(engine, adapter, sets);
      expect(gate.verdict === 'default').toBe(fidelity.adapterMeanKl < fidelity.naiveMeanKl);
      measured.push({ name: adapter.id, variant: adapter.variant, meanKl: fidelity.adapterMeanKl, naive: fidelity.naiveMeanKl });
    }
    const naiveKl = measured[0].naive;
    const decision = chooseDefaultVariant([{ name: 'naive', variant: 'naive', meanKl: naiveKl }, ...measured]);
    await annotate(`naive ${naiveKl.toFixed(4)}; ${measured.map((m) => `${m.name} ${m.meanKl.toFixed(4)}`).join(', ')}; gate picks ${decision.choice.name}`);
    expect(decision.choice.meanKl).toBeLessThanOrEqual(naiveKl);
    // Random vectors are far worse than naive concatenation, so the gate must not pick them.
    expect(decision.choice.name).not.toBe('noise');
  });
});
