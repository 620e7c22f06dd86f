import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InferenceEngine } from '../../../inference/engine.js';
import { KvCache } from '../../../inference/kv-cache.js';
import { prefillChunk, sequence } from '../../../packets/prefill.js';
import { rerotateKeys } from '../../../packets/rerotate.js';
import { spliceSegments } from '../../../packets/splice.js';
import { testModelDir, type TestModel } from '../../helpers/models.js';
import { maxAbsDiff, cacheDiff } from '../../helpers/diff.js';

const chunkText = 'Tom had a red ball. He threw it to his dog, and the dog ran after it in the sun.';

describe.each<[TestModel, number[]]>([
  ['stories260K', [1, 37, 300]],
  ['llama-tiny', [5, 120]],
  ['qwen2-small', [3, 700]],
])('re-rotation on %s', (name, offsets) => {
  let engine: InferenceEngine;
  let chunk: Int32Array;
  beforeAll(async () => {
    engine = await InferenceEngine.load(testModelDir(name));
    chunk = engine.tokenizer.encode(chunkText);
  });
  afterAll(async () => engine.release());

  it('a packet re-rotated to offset p equals a prefill at p', async ({ annotate }) => {
    const atZero = await prefillChunk(engine, chunk);
    for (const offset of offsets) {
      const fresh = await engine.forward({ tokens: chunk, positions: sequence(chunk.length, offset) });
      const diff = cacheDiff(rerotateKeys(atZero.kv, engine.arch, offset), fresh.present);
      await annotate(`offset ${offset}: max abs difference keys ${diff.keys.toExponential(2)}, values ${diff.values.toExponential(2)}`);
      expect(diff.keys).toBeLessThan(1e-4);
      expect(diff.values).toBeLessThan(1e-4);

      // The check can fail: rotating one position too far is visibly wrong.
      const wrong = cacheDiff(rerotateKeys(atZero.kv, engine.arch, offset + 1), fresh.present);
      expect(wrong.keys).toBeGreaterThan(1e-3);
    }
  });

  it('splicing after a preamble equals the chunk prefilled alone at its offset', async ({ annotate }) => {
    const preambleTokens = engine.tokenizer.encode('Read this.', { addBos: true });
    const question = engine.tokenizer.encode(' Where did the dog run?');
    const preamble = await engine.forward({ tokens: preambleTokens });
    const packet = await prefillChunk(engine, chunk);

    const spliced = spliceSegments(engine.arch, preamble.present, [{ kv: packet.kv, basePosition: 0 }]);
    expect(spliced.offsets).toEqual([preambleTokens.length]);
    const viaSplice = await engine.forward({ tokens: question, past: spliced.cache });

    // Reference without re-rotation: the chunk prefilled alone at its global positions.
    const isolated = await engine.forward({ tokens: chunk, positions: sequence(chunk.length, preambleTokens.length) });
    const reference = KvCache.concat(engine.layout, [preamble.present, isolated.present]);
    const viaPrefill = await engine.forward({ tokens: question, past: reference });
    const diff = maxAbsDiff(viaSplice.logits, viaPrefill.logits);

    // How far the splice is from a full prefill, where the chunk also attends to the preamble.
    const full = await engine.forward({ tokens: Int32Array.from([...preambleTokens, ...chunk, ...question]) });
    const fullGap = maxAbsDiff(viaSplice.logits, full.logits);
    await annotate(`spliced vs isolated prefill ${diff.toExponential(2)}; spliced vs full prefill ${fullGap.toExponential(2)}`);
    expect(diff).toBeLessThan(1e-4);
    expect(viaSplice.present.length).toBe(preambleTokens.length + chunk.length + question.length);
  });

  it('a packet as the whole context equals a full prefill', async ({ annotate }) => {
    // With the chunk first, nothing precedes it, so splice and full prefill coincide exactly.
    const question = engine.tokenizer.encode(' The end.');
    const packet = await prefillChunk(engine, chunk);
    const spliced = spliceSegments(engine.arch, KvCache.empty(engine.layout), [{ kv: packet.kv, basePosition: 0 }]);
    const viaSplice = await engine.forward({ tokens: question, past: spliced.cache });
    const full = await engine.forward({ tokens: Int32Array.from([...chunk, ...question]) });
    const diff = maxAbsDiff(viaSplice.logits, full.logits);
    await annotate(`max abs logit difference ${diff.toExponential(2)}`);
    expect(diff).toBeLessThan(1e-4);
  });
});
