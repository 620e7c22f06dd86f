import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SeededRandom } from '../../../common/random.js';
import { InferenceEngine } from '../../../inference/engine.js';
import { KvCache } from '../../../inference/kv-cache.js';
import { makeAdapterVectors, makeKvAdapterVectors } from '../../../packets/adapter.js';
import type { AdapterVariant } from '../../../packets/adapter-vectors.js';
import { studentAnswer } from '../../../packets/training/fidelity.js';
import { splitIntoChunks, withTeacherAnswer } from '../../../packets/training/samples.js';
import type { FidelitySample } from '../../../packets/training/samples-types.js';
import { TfDecoder } from '../../../packets/training/tf-decoder.js';
import { distillationLoss, studentLogits, type StudentAdapter } from '../../../packets/training/tf-student.js';
import { AdamW, meanKl, trainAdapter, trainingStep } from '../../../packets/training/train.js';
import { testModelDir, type TestModel } from '../../helpers/models.js';
import { maxAbsDiff } from '../../helpers/diff.js';

function randomVectors(random: SeededRandom, count: number, hidden: number, scale: number): Float32Array {
  return Float32Array.from({ length: count * hidden }, () => random.nextNormal() * scale);
}

describe.each<TestModel>(['stories260K', 'llama-tiny', 'qwen2-small'])('tfjs decoder on %s', (name) => {
  let engine: InferenceEngine;
  let decoder: TfDecoder;
  beforeAll(async () => {
    engine = await InferenceEngine.load(testModelDir(name));
    decoder = await TfDecoder.load(testModelDir(name));
  });
  afterAll(async () => {
    decoder.dispose();
    await engine.release();
  });

  it('full prefill logits match the ONNX graph', async ({ annotate }) => {
    const random = new SeededRandom(5);
    const tokens = Int32Array.from({ length: 40 }, () => Math.floor(random.nextFloat() * engine.arch.vocabSize));
    const onnx = await engine.forward({ tokens, logits: 'all' });
    const hidden = engine.arch.hiddenSize;
    const embeddings = new Float32Array(tokens.length * hidden);
    decoder.writeEmbeddings(tokens, embeddings, 0);
    const logits = tf.tidy(
      () =>
        decoder.forward({
          embeddings: tf.tensor3d(embeddings, [1, tokens.length, hidden]),
          positions: Int32Array.from(tokens.keys()),
          logitsLast: tokens.length,
        }).logits as tf.Tensor3D,
    );
    const diff = maxAbsDiff(logits.dataSync(), onnx.logits);
    logits.dispose();
    await annotate(`max abs logit difference ${diff.toExponential(2)} over ${tokens.length} positions`);
    expect(diff).toBeLessThan(1e-4);
  });
});

describe('tfjs student on stories260K', () => {
  let engine: InferenceEngine;
  let decoder: TfDecoder;
  let samples: FidelitySample[];
  beforeAll(async () => {
    engine = await InferenceEngine.load(testModelDir('stories260K'));
    decoder = await TfDecoder.load(testModelDir('stories260K'));
    samples = await handMadeSamples(engine);
  });
  afterAll(async () => {
    decoder.dispose();
    await engine.release();
  });

  it.for<AdapterVariant | 'naive'>(['naive', 'reference', 'conditioned'])('%s splice matches the ONNX runtime', async (variant, { annotate }) => {
    const hidden = engine.arch.hiddenSize;
    const random = new SeededRandom(11);
    const header = randomVectors(random, 4, hidden, 0.5);
    const trailer = variant === 'reference' ? randomVectors(random, 3, hidden, 0.5) : new Float32Array(0);
    const adapter = variant === 'naive' ? undefined : makeAdapterVectors('test', variant, header, trailer, hidden);
    const studentAdapter: StudentAdapter | undefined = adapter && {
      variant: adapter.variant,
      header: tf.tensor2d(header, [4, hidden]),
      trailer: trailer.length > 0 ? tf.tensor2d(trailer, [3, hidden]) : undefined,
    };
    const logits = tf.tidy(() => studentLogits(decoder, samples, studentAdapter));
    const batched = logits.dataSync();
    logits.dispose();
    if (studentAdapter) tf.dispose([studentAdapter.header, ...(studentAdapter.trailer ? [studentAdapter.trailer] : [])]);

    const rowSize = samples[0].teacherTokens.length * engine.arch.vocabSize;
    let diff = 0;
    for (let b = 0; b < samples.length; b++) {
      const runtime = await studentAnswer(engine, samples[b], adapter ? { kind: 'adapter', adapter } : { kind: 'naive' });
      diff = Math.max(diff, maxAbsDiff(batched.subarray(b * rowSize, (b + 1) * rowSize), runtime.logits));
    }
    await annotate(`${variant}: max abs logit difference ${diff.toExponential(2)} over ${samples.length} samples of 2 and 3 chunks`);
    expect(diff).toBeLessThan(1e-4);
  });

  it.for(['one header', 'first-slot header'])('conditioned-kv splice with %s matches ONNX', async (kind, { annotate }) => {
    const { numLayers, numKvHeads, headDim } = engine.layout;
    const random = new SeededRandom(12);
    const entries = 3;
    const layerOf = () => Float32Array.from({ length: numKvHeads * entries * headDim }, () => random.nextNormal() * 0.5);
    const randomCache = () => new KvCache(engine.layout, entries, Array.from({ length: numLayers }, layerOf), Array.from({ length: numLayers }, layerOf));
    const headerKv = randomCache();
    const firstSlot = kind === 'first-slot header' ? randomCache() : undefined;
    const adapter = makeKvAdapterVectors('test-kv', headerKv, firstSlot);
    const shape: [number, number, number, number] = [1, numKvHeads, entries, headDim];
    const toTensors = (cache: KvCache) =>
      cache.keys.map((keys, layer) => ({ keys: tf.tensor4d(keys, shape), values: tf.tensor4d(cache.values[layer], shape) }));
    const studentAdapter: StudentAdapter = {
      variant: 'conditioned-kv',
      headerKv: toTensors(headerKv),
      firstSlotHeaderKv: firstSlot ? toTensors(firstSlot) : undefined,
    };
    const logits = tf.tidy(() => studentLogits(decoder, samples, studentAdapter));
    const batched = logits.dataSync();
    logits.dispose();
    tf.dispose([...(studentAdapter.headerKv ?? []), ...(studentAdapter.firstSlotHeaderKv ?? [])].flatMap((layer) => [layer.keys, layer.values]));

    const rowSize = samples[0].teacherTokens.length * engine.arch.vocabSize;
    let diff = 0;
    for (let b = 0; b < samples.length; b++) {
      const runtime = await studentAnswer(engine, samples[b], { kind: 'adapter', adapter });
      diff = Math.max(diff, maxAbsDiff(batched.subarray(b * rowSize, (b + 1) * rowSize), runtime.logits));
    }
    await annotate(`conditioned-kv, ${kind}: max abs logit difference ${diff.toExponential(2)} over ${samples.length} samples of 2 and 3 chunks`);
    expect(diff).toBeLessThan(1e-4);
  });

  it('gradient matches finite differences', async ({ annotate }) => {
    // Reference variant, so the gradient flows through the chunk pass, the trailer pass and the question.
    const hidden = engine.arch.hiddenSize;
    const random = new SeededRandom(3);
    const start = randomVectors(random, 4, hidden, 0.5);
    const direction = randomVectors(random, 4, hidden, 1);
    const lossOf = (values: Float32Array) =>
      distillationLoss(
        studentLogits(decoder, samples, {
          variant: 'reference',
          header: tf.tensor2d(values.subarray(0, 2 * hidden), [2, hidden]),
          trailer: tf.tensor2d(values.subarray(2 * hidden), [2, hidden]),
        }),
        samples,
      );
    const header = tf.variable(tf.tensor2d(start.subarray(0, 2 * hidden), [2, hidden]));
    const trailer = tf.variable(tf.tensor2d(start.subarray(2 * hidden), [2, hidden]));
    const adapter: StudentAdapter = { variant: 'reference', header, trailer };
    const { grads } = tf.variableGrads(() => distillationLoss(studentLogits(decoder, samples, adapter), samples), [header, trailer]);
    const gradient = Float32Array.from([...grads[header.name].dataSync(), ...grads[trailer.name].dataSync()]);
    tf.dispose([header, trailer, ...Object.values(grads)]);
    let analytic = 0;
    for (let i = 0; i < gradient.length; i++) analytic += gradient[i] * direction[i];

    const epsilon = 0.01;
    const shifted = (sign: number) => start.map((x, i) => x + sign * epsilon * direction[i]);
    const numeric = tf.tidy(() => (lossOf(shifted(1)).dataSync()[0] - lossOf(shifted(-1)).dataSync()[0]) / (2 * epsilon));
    await annotate(`directional derivative: exact gradient ${analytic.toExponential(4)}, central difference ${numeric.toExponential(4)}`);
    expect(Math.abs(numeric)).toBeGreaterThan(1e-3);
    expect(Math.abs(analytic - numeric)).toBeLessThan(0.05 * Math.abs(numeric));
  });

  it('one training step lowers the batch loss', async ({ annotate }) => {
    const hidden = engine.arch.hiddenSize;
    const random = new SeededRandom(8);
    for (const variant of ['conditioned', 'reference'] as const) {
      const header = tf.variable(tf.tensor2d(randomVectors(random, 4, hidden, 0.3), [4, hidden]));
      const trailer = variant === 'reference' ? tf.variable(tf.tensor2d(randomVectors(random, 4, hidden, 0.3), [4, hidden])) : undefined;
      const variables = trailer ? [header, trailer] : [header];
      const adapter: StudentAdapter = { variant, header, trailer };
      const optimizer = new AdamW(variables.map((v) => v.size), 0.01, 0);
      const before = trainingStep(decoder, samples, adapter, variables, optimizer, 0.01);
      const after = tf.tidy(() => distillationLoss(studentLogits(decoder, samples, adapter), samples).dataSync()[0]);
      tf.dispose(variables);
      await annotate(`${variant}: batch KL ${before.toFixed(5)} before the step, ${after.toFixed(5)} after`);
      expect(after).toBeLessThan(before);
    }
  });

  it('trains a conditioned-kv header from conditioned vectors', async ({ annotate }) => {
    const hidden = engine.arch.hiddenSize;
    const initHeader = randomVectors(new SeededRandom(9), 4, hidden, 0.3);
    const options = { variant: 'conditioned-kv', headerLength: 4, trailerLength: 0, batchSize: 4, learningRate: 0.01, seed: 1, evaluateEvery: 1, initHeader } as const;
    const untrained = trainAdapter(decoder, samples, samples, { ...options, steps: 1, learningRate: 1e-12 });
    const trained = trainAdapter(decoder, samples, samples, { ...options, steps: 3 });
    // The start is the cache of the given vectors, so its KL equals the conditioned student's.
    const conditioned = { variant: 'conditioned', header: tf.tensor2d(initHeader, [4, hidden]) } as const;
    const conditionedKl = meanKl(decoder, samples, conditioned, 4);
    conditioned.header.dispose();
    await annotate(`validation KL: conditioned vectors ${conditionedKl.toFixed(5)}, their cache ${untrained.initialValidationKl.toFixed(5)}, after 3 steps ${trained.bestValidationKl.toFixed(5)}`);
    expect(Math.abs(untrained.initialValidationKl - conditionedKl)).toBeLessThan(1e-6);
    expect(trained.bestValidationKl).toBeLessThan(trained.initialValidationKl);
    const { numLayers, numKvHeads, headDim } = engine.layout;
    expect(trained.headerKv?.keys).toHaveLength(numLayers);
    expect(trained.headerKv?.keys[0]).toHaveLength(numKvHeads * 4 * headDim);
    // The last layer cannot influence a packet, so it keeps its starting entries.
    expect(Array.from(trained.headerKv?.keys[numLayers - 1] ?? [])).toEqual(Array.from(untrained.headerKv?.keys[numLayers - 1] ?? []));
    expect(trained.header).toHaveLength(0);
  });
});

/** Four samples of two and three chunks from fixed stories, with the teacher's answers. */
async function handMadeSamples(engine: InferenceEngine): Promise<FidelitySample[]> {
  const stories = [
    'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big red ball under a tree. She ran to the ball and picked it up. It was soft and round.',
    'Tom had a small dog named Max. Max liked to run and jump in the garden. One morning, Tom and Max went to the lake. They saw a duck swimming in the water. Max barked and the duck flew away.',
    'Sue wanted to bake a cake for her mom. She took out the flour, the eggs and the sugar. Her brother Ben came to help her. They mixed everything in a big bowl. Soon the kitchen smelled sweet and warm.',
    'Ben found a shiny key in the sand. He wondered what it could open. He showed the key to his friend Mia. Mia smiled and said it looked like a treasure key. They went to look for a box together.',
  ];
  const chunks = stories.map((text) => splitIntoChunks(engine.tokenizer.encode(text), engine.tokenizer, 20, 60)[0]);
  for (const chunk of chunks) expect(chunk.length).toBeGreaterThanOrEqual(20);
  const bos = Int32Array.of(engine.tokenizer.bosTokenId as number);
  const plans = [
    { chunks: [chunks[0], chunks[1]], prompt: ' The next morning, Lily saw a' },
    { chunks: [chunks[1], chunks[2], chunks[3]], prompt: ' Then Tom went to the' },
    { chunks: [chunks[2], chunks[0]], prompt: ' After that, Sue said,' },
    { chunks: [chunks[3], chunks[2], chunks[1]], prompt: ' Later that day, Ben found a' },
  ];
  const samples: FidelitySample[] = [];
  for (const plan of plans) {
    samples.push(await withTeacherAnswer(engine, { preamble: bos, chunks: plan.chunks, prompt: engine.tokenizer.encode(plan.prompt) }, 16));
  }
  return samples;
}
