import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KvpackError } from '../../../common/errors.js';
import { SeededRandom } from '../../../common/random.js';
import { InferenceEngine } from '../../../inference/engine.js';
import type { AdapterVariant, AdapterVectors } from '../../../packets/adapter-vectors.js';
import { prefillChunk } from '../../../packets/prefill.js';
import { PrefixCache } from '../../../packets/prefix-cache.js';
import { prefillContext, type ContextPlan } from '../../../packets/strategies.js';
import { testModelDir } from '../../helpers/models.js';
import { maxAbsDiff } from '../../helpers/diff.js';

function randomAdapter(variant: AdapterVariant, hidden: number, header: number, trailer: number): AdapterVectors {
  const random = new SeededRandom(3);
  const vectors = (count: number) => Float32Array.from({ length: count * hidden }, () => random.nextNormal() * 0.5);
  const headerVectors = vectors(header);
  const trailerVectors = vectors(trailer);
  const fingerprint = createHash('sha256').update(Buffer.from(headerVectors.buffer)).digest('hex');
  return { id: `test-${variant}`, fingerprint, variant, header: headerVectors, headerLength: header, trailer: trailerVectors, trailerLength: trailer };
}

describe('context strategies on stories260K', () => {
  let engine: InferenceEngine;
  let plan: ContextPlan;
  let fullTokens: Int32Array;

  beforeAll(async () => {
    engine = await InferenceEngine.load(testModelDir('stories260K'));
    const encode = (text: string) => engine.tokenizer.encode(text);
    plan = {
      preamble: engine.tokenizer.encode('Read the stories.', { addBos: true }),
      chunks: [
        { tokens: encode('Lily had a big red ball. She liked to throw it high.') },
        { tokens: encode('Tom saw a small dog in the park. The dog was sad.') },
        { tokens: encode('Mom baked a cake for the party. Everyone ate it.') },
      ],
      question: encode(' The next day, Lily saw a'),
    };
    fullTokens = Int32Array.from([...plan.preamble, ...plan.chunks.flatMap((chunk) => [...chunk.tokens]), ...plan.question]);
  });
  afterAll(async () => engine.release());

  it('full equals one prefill of every token', async () => {
    const result = await prefillContext(engine, plan, { strategy: 'full' });
    const direct = await engine.forward({ tokens: fullTokens });
    expect(maxAbsDiff(result.start.logits, direct.logits)).toBe(0);
    expect(result.accounting.computedTokens).toBe(fullTokens.length);
    expect(result.accounting.contextTokens).toBe(fullTokens.length);
    expect(result.accounting.prefillTokensAvoided).toBe(0);
    expect(result.start.cache.length).toBe(fullTokens.length);
  });

  it('prefix reuses an exact prefix and matches full', async ({ annotate }) => {
    const cache = new PrefixCache(64 << 20);
    const first = await prefillContext(engine, plan, { strategy: 'prefix', prefixCache: cache });
    expect(first.accounting.reusedTokens).toBe(0);
    const changed = { ...plan, question: engine.tokenizer.encode(' The next day, Tom saw a') };
    const second = await prefillContext(engine, changed, { strategy: 'prefix', prefixCache: cache });
    const full = await prefillContext(engine, changed, { strategy: 'full' });
    const diff = maxAbsDiff(second.start.logits, full.start.logits);
    await annotate(`reused ${second.accounting.reusedTokens} tokens, max abs logit difference ${diff.toExponential(2)}`);
    expect(second.accounting.reusedTokens).toBeGreaterThan(fullTokens.length - plan.question.length);
    expect(second.accounting.computedTokens).toBe(full.accounting.contextTokens - second.accounting.reusedTokens);
    expect(diff).toBeLessThan(1e-4);
    expect(cache.stats().hits).toBe(1);
  });

  it('naive splices stored packets and computes only preamble and question', async () => {
    const stored: ContextPlan = {
      ...plan,
      chunks: await Promise.all(
        plan.chunks.map(async (chunk) => {
          const built = await prefillChunk(engine, chunk.tokens);
          return { tokens: chunk.tokens, packet: { kv: built.kv, basePosition: 0, prefixLength: 0, suffixLength: 0, adapterId: 'none' } };
        }),
      ),
    };
    const fromStore = await prefillContext(engine, stored, { strategy: 'naive' });
    const onTheFly = await prefillContext(engine, plan, { strategy: 'naive' });
    const chunkTokens = plan.chunks.reduce((sum, chunk) => sum + chunk.tokens.length, 0);
    expect(fromStore.accounting.splicedTokens).toBe(chunkTokens);
    expect(fromStore.accounting.computedTokens).toBe(plan.preamble.length + plan.question.length);
    expect(fromStore.accounting.prefillTokensAvoided).toBe(chunkTokens);
    expect(onTheFly.accounting.splicedTokens).toBe(0);
    expect(onTheFly.accounting.computedTokens).toBe(fullTokens.length);
    expect(maxAbsDiff(fromStore.start.logits, onTheFly.start.logits)).toBeLessThan(1e-5);
    expect(fromStore.chunkOffsets).toEqual([
      plan.preamble.length,
      plan.preamble.length + plan.chunks[0].tokens.length,
      plan.preamble.length + plan.chunks[0].tokens.length + plan.chunks[1].tokens.length,
    ]);
  });

  it('epic recomputing whole chunks equals full', async ({ annotate }) => {
    const longest = Math.max(...plan.chunks.map((chunk) => chunk.tokens.length));
    const epic = await prefillContext(engine, plan, { strategy: 'epic', epicTokens: longest });
    const full = await prefillContext(engine, plan, { strategy: 'full' });
    const naive = await prefillContext(engine, plan, { strategy: 'naive' });
    const diff = maxAbsDiff(epic.start.logits, full.start.logits);
    const naiveGap = maxAbsDiff(naive.start.logits, full.start.logits);
    await annotate(`epic-all vs full ${diff.toExponential(2)}; naive vs full ${naiveGap.toExponential(2)}`);
    expect(diff).toBeLessThan(1e-4);
    expect(naiveGap).toBeGreaterThan(1e-2);
  });

  it('epic with k tokens recomputes k per chunk', async () => {
    const epic = await prefillContext(engine, plan, { strategy: 'epic', epicTokens: 4 });
    const epicZero = await prefillContext(engine, plan, { strategy: 'epic', epicTokens: 0 });
    const naive = await prefillContext(engine, plan, { strategy: 'naive' });
    expect(epic.accounting.recomputedTokens).toBe(12);
    expect(maxAbsDiff(epicZero.start.logits, naive.start.logits)).toBe(0);
    expect(maxAbsDiff(epic.start.logits, naive.start.logits)).toBeGreaterThan(0);
  });

  it('packet without adapter splices naive packets', async () => {
    const packet = await prefillContext(engine, plan, { strategy: 'packet' });
    const naive = await prefillContext(engine, plan, { strategy: 'naive' });
    expect(packet.adapterId).toBe('none');
    expect(maxAbsDiff(packet.start.logits, naive.start.logits)).toBe(0);
  });

  it('reference adapter entries stay in the cache', async () => {
    const adapter = randomAdapter('reference', engine.arch.hiddenSize, 2, 3);
    const result = await prefillContext(engine, plan, { strategy: 'packet', adapter });
    expect(result.adapterId).toBe('test-reference');
    expect(result.accounting.adapterEntries).toBe(3 * 5);
    expect(result.start.cache.length).toBe(fullTokens.length + 15);
    expect(result.chunkOffsets[1] - result.chunkOffsets[0]).toBe(plan.chunks[0].tokens.length + 5);
  });

  it('conditioned adapter keeps the naive cache size', async () => {
    const adapter = randomAdapter('conditioned', engine.arch.hiddenSize, 4, 0);
    const result = await prefillContext(engine, plan, { strategy: 'packet', adapter });
    const naive = await prefillContext(engine, plan, { strategy: 'naive' });
    expect(result.start.cache.length).toBe(fullTokens.length);
    expect(result.accounting.adapterEntries).toBe(0);
    expect(maxAbsDiff(result.start.logits, naive.start.logits)).toBeGreaterThan(0);
  });

  it('rejects a context beyond the maximum positions', async () => {
    const long = { ...plan, chunks: Array.from({ length: 30 }, () => plan.chunks[0]) };
    const error = await prefillContext(engine, long, { strategy: 'naive' }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(KvpackError);
    expect((error as KvpackError).code).toBe('SEQUENCE_TOO_LONG');
    expect((error as KvpackError).message).toMatch(/The context needs \d+ positions .* but the model has 512/);
  });
});
