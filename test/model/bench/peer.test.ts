import { cpSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTransformersPeer, type TransformersPeer } from '../../../bench/suite/peer.js';
import { InferenceEngine } from '../../../inference/engine.js';
import { testModelDir, type TestModel } from '../../helpers/models.js';
import { expectKvpackError } from '../../helpers/errors.js';

const STORY =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her ' +
  'red ball. One day, she saw a big dog under a tree. The dog was sad because it lost its bone. Lily ' +
  'wanted to help the dog, so she looked everywhere. She looked behind the slide and under the bench. ' +
  'Then she found the bone near the pond. She gave the bone to the dog, and the dog was very happy. It ' +
  'wagged its tail and licked her hand. Lily and the dog played with the ball all day. When the sun went ' +
  'down, her mom called her home. Lily said goodbye to the dog and ran to her house. She told her mom ' +
  'about the sad dog and the lost bone. Her mom smiled and gave her a big hug. That night, Lily dreamed ' +
  'about the dog and the park. The next morning, she went back to the park, and the dog was waiting for her.';

/** Returns the index of the largest value, the first one on ties, as greedy decoding in Transformers.js does. */
function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) {
    if (values[i] > values[best]) best = i;
  }
  return best;
}

/** Returns the gap between the two largest logits. A small gap would make argmax sensitive to rounding. */
function topTwoMargin(values: Float32Array): number {
  const sorted = Float32Array.from(values).sort().reverse();
  return sorted[0] - sorted[1];
}

describe.each<TestModel>(['stories260K', 'qwen2-small'])('Transformers.js peer on %s', (name) => {
  let engine: InferenceEngine;
  let peer: TransformersPeer;
  let context: Int32Array;

  beforeAll(async () => {
    engine = await InferenceEngine.load(testModelDir(name));
    peer = await loadTransformersPeer(testModelDir(name));
    // stories260K has 512 positions, so the story is cut to leave room for the generated token.
    const ids = engine.tokenizer.encode(STORY, { addBos: true });
    context = ids.subarray(0, Math.min(ids.length, 400));
  });
  afterAll(async () => {
    await peer.release();
    await engine.release();
  });

  it('encodes a context of a few hundred tokens', () => {
    expect(context[0]).toBe(1);
    expect(context.length).toBeGreaterThanOrEqual(200);
  });

  it.for([0.25, 0.5, 1])('first token equals kvpack greedy at %s of the context', async (fraction, { annotate }) => {
    const tokens = context.subarray(0, Math.round(context.length * fraction));
    const { logits } = await engine.forward({ tokens, logits: 'last' });
    const result = await peer.firstToken(tokens);
    await annotate(`${tokens.length} tokens, ${result.ms.toFixed(1)} ms, top-2 logit margin ${topTwoMargin(logits).toExponential(2)}`);
    expect(result.token).toBe(argmax(logits));
    expect(Number.isFinite(result.ms)).toBe(true);
    expect(result.ms).toBeGreaterThan(0);
  });

  it('first token depends on the context', async () => {
    // Greedy tokens after different contexts differ somewhere, so the equality checks above are not
    // comparing a constant.
    const tokens = new Set<number>();
    for (let length = 2; length <= 40; length++) {
      tokens.add((await peer.firstToken(context.subarray(0, length))).token);
    }
    expect(tokens.size).toBeGreaterThan(1);
  });
});

describe('Transformers.js peer errors', () => {
  let scratch: string;
  let peer: TransformersPeer;

  beforeAll(async () => {
    scratch = mkdtempSync(path.join(tmpdir(), 'kvpack-peer-'));
    peer = await loadTransformersPeer(testModelDir('stories260K'));
  });
  afterAll(async () => {
    await peer.release();
    rmSync(scratch, { recursive: true, force: true });
  });

  it('rejects an empty context', async () => {
    await expectKvpackError(peer.firstToken(new Int32Array(0)), 'INVALID_ARGUMENT', /needs at least one token/);
  });

  it('rejects a token outside the vocabulary', async () => {
    await expectKvpackError(
      peer.firstToken(Int32Array.from([1, 5, 512])),
      'INVALID_ARGUMENT',
      /Token id 512 at index 2 is outside the vocabulary \[0, 512\)/,
    );
  });

  it('rejects a context longer than the positions', async () => {
    const tokens = new Int32Array(513).fill(5);
    await expectKvpackError(peer.firstToken(tokens), 'SEQUENCE_TOO_LONG', /513 tokens but the model has 512 positions/);
  });

  it('rejects a missing model folder', async () => {
    const missing = path.join(scratch, 'no-such-model');
    await expectKvpackError(loadTransformersPeer(missing), 'MODEL_NOT_FOUND', /Model folder not found: .*no-such-model/);
  });

  it('loads a folder with model.onnx at its root', async () => {
    const dir = path.join(scratch, 'root-onnx');
    cpSync(testModelDir('stories260K'), dir, { recursive: true });
    renameSync(path.join(dir, 'onnx', 'model.onnx'), path.join(dir, 'model.onnx'));
    rmSync(path.join(dir, 'onnx'), { recursive: true });
    const rootPeer = await loadTransformersPeer(dir);
    try {
      const tokens = Int32Array.from([1, 40, 41, 42]);
      expect((await rootPeer.firstToken(tokens)).token).toBe((await peer.firstToken(tokens)).token);
    } finally {
      await rootPeer.release();
    }
  });

  it('rejects an ONNX file Transformers.js cannot load', async () => {
    const dir = path.join(scratch, 'broken-onnx');
    cpSync(testModelDir('stories260K'), dir, { recursive: true });
    mkdirSync(path.join(dir, 'onnx'), { recursive: true });
    writeFileSync(path.join(dir, 'onnx', 'model.onnx'), 'not an ONNX protobuf');
    await expectKvpackError(
      loadTransformersPeer(dir),
      'UNSUPPORTED_ONNX_GRAPH',
      /Transformers\.js failed to load .*broken-onnx\/onnx\/model\.onnx as a causal language model: /,
    );
  });

  it('rejects calls after release', async () => {
    const released = await loadTransformersPeer(testModelDir('stories260K'));
    await released.release();
    await expectKvpackError(released.firstToken(Int32Array.from([1, 5])), 'INVALID_ARGUMENT', /was released/);
  });
});
