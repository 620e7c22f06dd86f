import * as ort from 'onnxruntime-node';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InferenceEngine } from '../../../inference/engine.js';
import { generateFromPrompt } from '../../../inference/generate.js';
import { buildDecoderGraph, pastKeyName, pastValueName } from '../../../inference/onnx/decoder-graph.js';
import { decodeModel, encodeModel, OnnxDataType } from '../../../inference/onnx/proto.js';
import { parseHfConfig } from '../../../inference/architecture.js';
import { testModelDir, type TestModel } from '../../helpers/models.js';
import { maxAbsDiff } from '../../helpers/diff.js';

const REFERENCE_START =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball.';

function row(logits: Float32Array, index: number, vocab: number): Float32Array {
  return logits.subarray(index * vocab, (index + 1) * vocab);
}

describe('stories260K engine', () => {
  let engine: InferenceEngine;
  beforeAll(async () => {
    engine = await InferenceEngine.load(testModelDir('stories260K'));
  });
  afterAll(async () => engine.release());

  it('greedy from BOS reproduces the reference story', async () => {
    const result = await generateFromPrompt(engine, '', { maxTokens: 48 });
    expect(result.text.slice(0, REFERENCE_START.length)).toBe(REFERENCE_START);
    expect(result.finishReason).toBe('length');
    expect(result.tokens).toHaveLength(48);
  });

  it('streamed deltas concatenate to the text', async () => {
    const deltas: string[] = [];
    const result = await generateFromPrompt(engine, 'The cat', { maxTokens: 30, onToken: (event) => deltas.push(event.text) });
    expect(deltas).toHaveLength(30);
    expect(deltas.join('')).toBe(result.text);
  });

  it('stops before a stop string', async () => {
    const result = await generateFromPrompt(engine, '', { maxTokens: 60, stopStrings: ['little girl'] });
    expect(result.finishReason).toBe('stop');
    expect(result.text).toBe('Once upon a time, there was a ');
  });

  it('seeded sampling repeats and differs across seeds', async () => {
    const options = { maxTokens: 30, temperature: 1, topK: 40, topP: 0.95 };
    const first = await generateFromPrompt(engine, '', { ...options, seed: 5 });
    const again = await generateFromPrompt(engine, '', { ...options, seed: 5 });
    const other = await generateFromPrompt(engine, '', { ...options, seed: 6 });
    expect(again.tokens).toEqual(first.tokens);
    expect(other.tokens).not.toEqual(first.tokens);
  });

  it('cancellation stops generation', async () => {
    const controller = new AbortController();
    const result = await generateFromPrompt(engine, '', {
      maxTokens: 100,
      signal: controller.signal,
      onToken: (event) => {
        if (event.index === 4) controller.abort();
      },
    });
    expect(result.finishReason).toBe('cancelled');
    expect(result.tokens).toHaveLength(5);
  });

  it('transformers.js generates the same text', async () => {
    const transformers = await import('@huggingface/transformers');
    transformers.env.allowRemoteModels = false;
    transformers.env.localModelPath = path.dirname(testModelDir('stories260K'));
    const model = await transformers.AutoModelForCausalLM.from_pretrained('stories260K', { dtype: 'fp32' });
    const one = () => new transformers.Tensor('int64', BigInt64Array.from([1n]), [1, 1]);
    const output = (await model.generate({ input_ids: one(), attention_mask: one(), max_new_tokens: 48, do_sample: false })) as {
      tolist(): bigint[][];
    };
    const theirs = output.tolist()[0].slice(1).map(Number);
    const ours = await generateFromPrompt(engine, '', { maxTokens: 48 });
    expect(ours.tokens).toEqual(theirs);
    await model.dispose();
  });
});

describe.each<TestModel>(['llama-tiny', 'qwen2-small'])('cache equivalence on %s', (name) => {
  let engine: InferenceEngine;
  const tokens = [1, 72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 33, 10, 84, 104, 101, 32, 101, 110, 100];
  beforeAll(async () => {
    engine = await InferenceEngine.load(testModelDir(name));
  });
  afterAll(async () => engine.release());

  it('token-by-token decoding equals full recompute', async ({ annotate }) => {
    const vocab = engine.arch.vocabSize;
    const full = await engine.forward({ tokens, logits: 'all' });
    let past = undefined;
    let worst = 0;
    for (let i = 0; i < tokens.length; i++) {
      const step = await engine.forward({ tokens: [tokens[i]], past });
      worst = Math.max(worst, maxAbsDiff(step.logits, row(full.logits, i, vocab)));
      past = step.present;
    }
    await annotate(`max abs logit difference ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(1e-4);
    expect(maxAbsDiff(past!.keys[0], full.present.keys[0])).toBeLessThan(1e-5);

    // The comparison can fail: a cache missing its first entry gives clearly different logits.
    const truncated = full.present.slice(1, tokens.length - 1);
    const shifted = await engine.forward({ tokens: [tokens.at(-1)!], past: truncated, positions: [tokens.length - 1] });
    expect(maxAbsDiff(shifted.logits, row(full.logits, tokens.length - 1, vocab))).toBeGreaterThan(100 * 1e-4);
  });

  it('prefill of A then B equals prefill of A+B', async ({ annotate }) => {
    const vocab = engine.arch.vocabSize;
    const split = 9;
    const whole = await engine.forward({ tokens, logits: 'all' });
    const first = await engine.forward({ tokens: tokens.slice(0, split) });
    const second = await engine.forward({ tokens: tokens.slice(split), past: first.present, logits: 'all' });
    let worst = 0;
    for (let i = split; i < tokens.length; i++) {
      worst = Math.max(worst, maxAbsDiff(row(second.logits, i - split, vocab), row(whole.logits, i, vocab)));
    }
    await annotate(`max abs logit difference ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(1e-4);
    expect(second.present.length).toBe(tokens.length);
  });

  it('stepped prefill equals one call', async ({ annotate }) => {
    const stepped = await InferenceEngine.load(testModelDir(name), { prefillStep: 5 });
    try {
      const positions = tokens.map((_, i) => i + 3);
      const embeddings = await engine.embedTokens(tokens);
      for (const input of [{ tokens }, { embeddings }]) {
        const once = await engine.forward({ ...input, positions, logits: 'all' });
        const inSteps = await stepped.forward({ ...input, positions, logits: 'all' });
        const last = await stepped.forward({ ...input, positions, logits: 'last' });
        const logitDiff = maxAbsDiff(inSteps.logits, once.logits);
        const keyDiff = maxAbsDiff(inSteps.present.keys[1], once.present.keys[1]);
        await annotate(`logits ${logitDiff.toExponential(2)}, keys ${keyDiff.toExponential(2)}`);
        expect(logitDiff).toBeLessThan(1e-4);
        expect(keyDiff).toBeLessThan(1e-5);
        expect(maxAbsDiff(inSteps.present.values[0], once.present.values[0])).toBeLessThan(1e-5);
        expect(inSteps.present.length).toBe(tokens.length);
        expect(maxAbsDiff(last.logits, row(once.logits, tokens.length - 1, engine.arch.vocabSize))).toBeLessThan(1e-4);
      }
    } finally {
      await stepped.release();
    }
  });

  it('rejects a prefill step that is not a positive integer', async () => {
    await expect(InferenceEngine.load(testModelDir(name), { prefillStep: 0 })).rejects.toThrow('prefillStep must be a positive integer; got 0.');
  });

  it('inputs_embeds equals input_ids', async ({ annotate }) => {
    const vocab = engine.arch.vocabSize;
    const byTokens = await engine.forward({ tokens, logits: 'all' });
    const embeddings = await engine.embedTokens(tokens);
    const byEmbeddings = await engine.forward({ embeddings, logits: 'all' });
    const embedDiff = maxAbsDiff(byEmbeddings.logits, byTokens.logits);

    // The folder is export-style (input_ids only), so the engine split it; compare with the
    // export run as-is and with a graph the builder writes with a native inputs_embeds input.
    const folder = testModelDir(name);
    const exportLogits = await runExportDirectly(folder, tokens);
    const nativeLogits = await runNativeEmbedsGraph(folder, embeddings, tokens.length);
    const exportDiff = maxAbsDiff(byTokens.logits, exportLogits);
    const nativeDiff = maxAbsDiff(byEmbeddings.logits, nativeLogits);
    await annotate(`embeddings vs ids ${embedDiff.toExponential(2)}, export ${exportDiff.toExponential(2)}, native ${nativeDiff.toExponential(2)}`);
    expect(engine.derivedGraph).toBe(true);
    expect(embedDiff).toBeLessThan(1e-5);
    expect(exportDiff).toBeLessThan(1e-5);
    expect(nativeDiff).toBeLessThan(1e-5);
    expect(byTokens.logits).toHaveLength(tokens.length * vocab);
  });
});

/** Runs onnx/model.onnx exactly as exported, with input_ids, and returns all logits. */
async function runExportDirectly(folder: string, tokens: number[]): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(path.join(folder, 'onnx', 'model.onnx'));
  const arch = parseHfConfig(JSON.parse(readFileSync(path.join(folder, 'config.json'), 'utf8')), folder);
  expect(session.inputNames).toContain('input_ids');
  expect(session.inputNames).not.toContain('inputs_embeds');
  const feeds = baseFeeds(arch.numLayers, arch.numKvHeads, arch.headDim, tokens.length);
  feeds.input_ids = new ort.Tensor('int64', BigInt64Array.from(tokens.map(BigInt)), [1, tokens.length]);
  const result = await session.run(feeds);
  await session.release();
  return result.logits.data as Float32Array;
}

/** Rebuilds the folder's weights into a graph with a native inputs_embeds input and runs it. */
async function runNativeEmbedsGraph(folder: string, embeddings: Float32Array, seqLength: number): Promise<Float32Array> {
  const arch = parseHfConfig(JSON.parse(readFileSync(path.join(folder, 'config.json'), 'utf8')), folder);
  const exported = decodeModel(readFileSync(path.join(folder, 'onnx', 'model.onnx')));
  const weights = new Map<string, Float32Array>();
  for (const tensor of exported.graph.initializer) {
    if (tensor.dataType === OnnxDataType.FLOAT && tensor.rawData && !tensor.name.startsWith('const_')) {
      const bytes = new Uint8Array(tensor.rawData);
      weights.set(tensor.name, new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4));
    }
  }
  const model = buildDecoderGraph(arch, weights, { embeddingInput: 'inputs_embeds' });
  const session = await ort.InferenceSession.create(encodeModel(model));
  expect(session.inputNames).toContain('inputs_embeds');
  const feeds = baseFeeds(arch.numLayers, arch.numKvHeads, arch.headDim, seqLength);
  feeds.inputs_embeds = new ort.Tensor('float32', embeddings, [1, seqLength, arch.hiddenSize]);
  const result = await session.run(feeds);
  await session.release();
  return result.logits.data as Float32Array;
}

function baseFeeds(layers: number, kvHeads: number, headDim: number, seqLength: number): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {
    attention_mask: new ort.Tensor('int64', new BigInt64Array(seqLength).fill(1n), [1, seqLength]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: seqLength }, (_, i) => BigInt(i)), [1, seqLength]),
    num_logits_to_keep: new ort.Tensor('int64', BigInt64Array.from([0n]), []),
  };
  for (let layer = 0; layer < layers; layer++) {
    feeds[pastKeyName(layer)] = new ort.Tensor('float32', new Float32Array(0), [1, kvHeads, 0, headDim]);
    feeds[pastValueName(layer)] = new ort.Tensor('float32', new Float32Array(0), [1, kvHeads, 0, headDim]);
  }
  return feeds;
}
