import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../../common/paths.js';
import { SeededRandom } from '../../../common/random.js';
import { InferenceEngine } from '../../../inference/engine.js';
import { KvCache } from '../../../inference/kv-cache.js';
import { ADAPTER_FORMAT_VERSION, expectedModelOf, loadAdapter, makeAdapterVectors, makeKvAdapterVectors, writeAdapterFile } from '../../../packets/adapter.js';
import type { AdapterVectors } from '../../../packets/adapter-vectors.js';
import { buildPacket, expectedFingerprints } from '../../../packets/build.js';
import { decodePacket } from '../../../packets/codec.js';
import { prefillChunk, sequence } from '../../../packets/prefill.js';
import { decodeSafetensors, encodeSafetensors } from '../../../packets/safetensors.js';
import { FsPacketStore } from '../../../packets/store.js';
import { PacketChunkProcessor } from '../../../ingest/chunk-processor.js';
import { prefillContext, type ContextPlan } from '../../../packets/strategies.js';
import type { QueryResult } from '../../../query/types.js';
import { expectKvpackError } from '../../helpers/errors.js';
import { testModelDir, type TestModel } from '../../helpers/models.js';
import { postJson, startTestServer, waitForJob } from '../server/helpers.js';
import { maxAbsDiff, cacheDiff } from '../../helpers/diff.js';

const HEADER_LENGTH = 4;
const CHUNK_TEXTS = [
  'Lily had a big red ball. She liked to throw it high.',
  'Tom saw a small dog in the park. The dog was sad.',
  'Mom baked a cake for the party. Everyone ate it.',
];

// A conditioned packet and the conditioned-kv packet of its header's cache were bit-identical
// (max abs diff 0 in keys, values and logits) on all three test models with onnxruntime-node
// 1.30 on the CPU of the development machine. The bound leaves room for float32 sums taken in
// another order elsewhere; the naive packets, which lack the header, differ by 0.25 or more.
const EQUIVALENCE_TOLERANCE = 1e-5;

/**
 * Random conditioned header vectors, and the conditioned-kv adapter whose header cache is those
 * vectors prefilled at positions 0..P-1: the two must build the same packets.
 */
async function equivalentAdapters(engine: InferenceEngine, seed: number): Promise<{ conditioned: AdapterVectors; kv: AdapterVectors }> {
  const random = new SeededRandom(seed);
  const hidden = engine.arch.hiddenSize;
  const header = Float32Array.from({ length: HEADER_LENGTH * hidden }, () => random.nextNormal() * 0.5);
  const conditioned = makeAdapterVectors('test-conditioned', 'conditioned', header, new Float32Array(0), hidden);
  const { present } = await engine.forward({ embeddings: header, positions: sequence(HEADER_LENGTH), logits: 'none' });
  return { conditioned, kv: makeKvAdapterVectors('test-kv', present) };
}

describe('conditioned-kv packets', () => {
  it.for<TestModel>(['stories260K', 'llama-tiny', 'qwen2-small'])('%s: equal the conditioned packets of the header', async (model, { annotate }) => {
    const engine = await InferenceEngine.load(testModelDir(model));
    try {
      const { conditioned, kv } = await equivalentAdapters(engine, 5);
      expect(kv.headerKv?.length).toBe(HEADER_LENGTH);
      const worst = { keys: 0, values: 0, logits: 0, naiveKeys: Number.POSITIVE_INFINITY };
      for (const text of CHUNK_TEXTS) {
        const tokens = engine.tokenizer.encode(text);
        const reference = await prefillChunk(engine, tokens, conditioned, { logits: true });
        const candidate = await prefillChunk(engine, tokens, kv, { logits: true });
        const naive = await prefillChunk(engine, tokens);
        expect(candidate.kv.length).toBe(tokens.length);
        expect(candidate.prefixLength).toBe(0);
        expect(candidate.suffixLength).toBe(0);
        expect(candidate.logits.length).toBe(tokens.length * engine.arch.vocabSize);
        const diff = cacheDiff(reference.kv, candidate.kv);
        worst.keys = Math.max(worst.keys, diff.keys);
        worst.values = Math.max(worst.values, diff.values);
        worst.logits = Math.max(worst.logits, maxAbsDiff(reference.logits, candidate.logits));
        worst.naiveKeys = Math.min(worst.naiveKeys, cacheDiff(naive.kv, candidate.kv).keys);
      }
      await annotate(
        `${model}, P = ${HEADER_LENGTH}: max abs diff keys ${worst.keys.toExponential(2)}, values ${worst.values.toExponential(2)}, ` +
          `logits ${worst.logits.toExponential(2)}; naive packets differ by at least ${worst.naiveKeys.toExponential(2)}`,
      );
      expect(worst.keys).toBeLessThan(EQUIVALENCE_TOLERANCE);
      expect(worst.values).toBeLessThan(EQUIVALENCE_TOLERANCE);
      expect(worst.logits).toBeLessThan(EQUIVALENCE_TOLERANCE);
      // The header does change the packet, so the comparison above can fail.
      expect(worst.naiveKeys).toBeGreaterThan(1e-2);
    } finally {
      await engine.release();
    }
  });
});

describe('conditioned-kv adapter on stories260K', () => {
  let engine: InferenceEngine;
  let conditioned: AdapterVectors;
  let kv: AdapterVectors;
  let plan: ContextPlan;
  let contextTokens: number;
  let dir: string;

  beforeAll(async () => {
    engine = await InferenceEngine.load(testModelDir('stories260K'));
    ({ conditioned, kv } = await equivalentAdapters(engine, 5));
    plan = {
      preamble: engine.tokenizer.encode('Read the stories.', { addBos: true }),
      chunks: CHUNK_TEXTS.map((text) => ({ tokens: engine.tokenizer.encode(text) })),
      question: engine.tokenizer.encode(' The next day, Lily saw a'),
    };
    contextTokens = plan.preamble.length + plan.chunks.reduce((sum, chunk) => sum + chunk.tokens.length, 0) + plan.question.length;
    dir = mkdtempSync(path.join(tmpdir(), 'kvpack-conditioned-kv-'));
  });

  afterAll(async () => {
    await engine.release();
    rmSync(dir, { recursive: true, force: true });
  });

  it('packet strategy computes no header entries', async ({ annotate }) => {
    const withKv = await prefillContext(engine, plan, { strategy: 'packet', adapter: kv });
    const withConditioned = await prefillContext(engine, plan, { strategy: 'packet', adapter: conditioned });
    const diff = maxAbsDiff(withKv.start.logits, withConditioned.start.logits);
    await annotate(`question logits: conditioned-kv vs conditioned max abs diff ${diff.toExponential(2)}`);

    expect(withKv.adapterId).toBe('test-kv');
    expect(withKv.start.cache.length).toBe(contextTokens);
    expect(withKv.accounting.computedTokens).toBe(contextTokens);
    expect(withKv.accounting.adapterEntries).toBe(0);
    expect(withKv.accounting.splicedTokens).toBe(0);
    expect(withConditioned.accounting.computedTokens).toBe(contextTokens + plan.chunks.length * HEADER_LENGTH);
    expect(diff).toBeLessThan(EQUIVALENCE_TOLERANCE);
  });

  it('packet strategy splices stored packets', async () => {
    const stored: ContextPlan = {
      ...plan,
      chunks: await Promise.all(
        plan.chunks.map(async (chunk, index) => {
          const { packet } = await buildPacket(engine, chunk.tokens, { chunkId: `chunk-${index}`, kind: 'full', adapter: kv });
          const { header } = packet;
          return { tokens: chunk.tokens, packet: { kv: packet.kv, basePosition: header.basePosition, prefixLength: 0, suffixLength: 0, adapterId: header.adapterId } };
        }),
      ),
    };
    const result = await prefillContext(engine, stored, { strategy: 'packet', adapter: kv });
    const chunkTokens = plan.chunks.reduce((sum, chunk) => sum + chunk.tokens.length, 0);
    expect(result.accounting.splicedTokens).toBe(chunkTokens);
    expect(result.accounting.computedTokens).toBe(plan.preamble.length + plan.question.length);
    expect(result.accounting.prefillTokensAvoided).toBe(chunkTokens);
    expect(result.accounting.adapterEntries).toBe(0);
  });

  it('prefill rejects a header of another layout', async () => {
    const layout = { ...engine.layout, numLayers: engine.layout.numLayers + 1 };
    const size = layout.numKvHeads * 2 * layout.headDim;
    const layers = () => Array.from({ length: layout.numLayers }, () => new Float32Array(size));
    const foreign = makeKvAdapterVectors('foreign', new KvCache(layout, 2, layers(), layers()));
    const { numLayers, numKvHeads, headDim } = engine.layout;
    await expectKvpackError(
      prefillChunk(engine, plan.chunks[0].tokens, foreign),
      'ADAPTER_MISMATCH',
      new RegExp(
        `^Adapter foreign does not fit this model: its header cache has shape \\[${numLayers + 1}, ${numKvHeads}, 2, ${headDim}\\] ` +
          `as \\[layers, kv_heads, P, head_dim\\], but the model's KV layout needs \\[${numLayers}, ${numKvHeads}, 2, ${headDim}\\]`,
      ),
    );
  });

  it('prefill rejects an inconsistent adapter', async () => {
    await expectKvpackError(
      prefillChunk(engine, plan.chunks[0].tokens, { ...kv, headerKv: undefined }),
      'INVALID_ARGUMENT',
      /^Adapter test-kv is conditioned-kv but has no header cache; build it with makeKvAdapterVectors or load it with loadAdapter\.$/,
    );
    await expectKvpackError(
      prefillChunk(engine, plan.chunks[0].tokens, { ...kv, headerLength: HEADER_LENGTH + 1 }),
      'INVALID_ARGUMENT',
      /^Adapter test-kv records headerLength 5 but its header cache contains 4 entries per layer; build it with makeKvAdapterVectors\.$/,
    );
  });

  it('store round trip and adapter change', async () => {
    const store = await FsPacketStore.open(path.join(dir, 'packets'), { cacheBytes: 0, dtype: 'float32' });
    const tokens = plan.chunks[1].tokens;
    const { packet } = await buildPacket(engine, tokens, { chunkId: 'tom-dog', kind: 'full', adapter: kv });
    await store.put(packet);
    const key = { chunkId: 'tom-dog', adapterId: 'test-kv', kind: 'full' as const };
    const loaded = await store.get(key, expectedFingerprints(engine, kv));
    expect(loaded.header.variant).toBe('conditioned-kv');
    expect(loaded.header.adapterFingerprint).toBe(kv.fingerprint);
    expect(loaded.header.prefixLength).toBe(0);
    expect(loaded.header.suffixLength).toBe(0);
    expect(loaded.header.tokenCount).toBe(tokens.length);
    expect(loaded.header.tokenIds).toEqual(tokens);
    const diff = cacheDiff(loaded.kv, packet.kv);
    expect(diff.keys).toBe(0);
    expect(diff.values).toBe(0);

    // One changed value in the header cache makes another adapter version, whose packets must be rebuilt.
    const headerKv = kv.headerKv as KvCache;
    const keys = headerKv.keys.map((layer) => Float32Array.from(layer));
    keys[0][0] += 1e-3;
    const changed = makeKvAdapterVectors('test-kv', new KvCache(headerKv.layout, headerKv.length, keys, [...headerKv.values]));
    expect(changed.fingerprint).not.toBe(kv.fingerprint);
    await expectKvpackError(
      store.get(key, expectedFingerprints(engine, changed)),
      'PACKET_MISMATCH',
      new RegExp(`was built for another version of adapter "test-kv": its adapterFingerprint is ${kv.fingerprint.slice(0, 12)}`),
    );
  });
});

/** Lists the packet files under a folder of the store, sorted. */
function listPacketFiles(folder: string): string[] {
  return readdirSync(folder, { recursive: true, encoding: 'utf8' })
    .filter((name) => name.endsWith('.kvp'))
    .map((name) => path.join(folder, name))
    .sort();
}

async function askLily(url: string): Promise<QueryResult> {
  const response = await postJson(`${url}/v1/query`, { question: 'What did Lily throw?', topK: 3, maxTokens: 4, strategy: 'packet' });
  expect(response.status).toBe(200);
  return (await response.json()) as QueryResult;
}

describe('conditioned-kv first-slot header on stories260K', () => {
  let engine: InferenceEngine;
  let plan: ContextPlan;
  let withFirstSlot: AdapterVectors;

  beforeAll(async () => {
    engine = await InferenceEngine.load(testModelDir('stories260K'));
    const preamble = engine.tokenizer.encode('Read the stories.', { addBos: true });
    plan = {
      preamble,
      chunks: CHUNK_TEXTS.map((text) => ({ tokens: engine.tokenizer.encode(text) })),
      question: engine.tokenizer.encode(' The next day, Lily saw a'),
    };
    // The preamble's own cache as the first-slot header: the first chunk's packet is then the
    // chunk prefilled right after the preamble, which is what a full prefill computes.
    const preambleCache = (await engine.forward({ tokens: preamble })).present;
    const { kv } = await equivalentAdapters(engine, 13);
    withFirstSlot = makeKvAdapterVectors('test-kv', kv.headerKv as KvCache, preambleCache);
  });

  afterAll(async () => {
    await engine.release();
  });

  it('first slot gets its own adapter id', () => {
    expect(withFirstSlot.firstSlot?.id).toBe('test-kv-first');
    expect(withFirstSlot.firstSlot?.variant).toBe('conditioned-kv');
    expect(withFirstSlot.firstSlot?.fingerprint).not.toBe(withFirstSlot.fingerprint);
  });

  it('preamble header makes one chunk exact', async ({ annotate }) => {
    const oneChunk: ContextPlan = { ...plan, chunks: plan.chunks.slice(0, 1) };
    const full = await prefillContext(engine, oneChunk, { strategy: 'full' });
    const packet = await prefillContext(engine, oneChunk, { strategy: 'packet', adapter: withFirstSlot });
    const single = await prefillContext(engine, oneChunk, { strategy: 'packet', adapter: makeKvAdapterVectors('test-kv', withFirstSlot.headerKv as KvCache) });
    const exact = maxAbsDiff(packet.start.logits, full.start.logits);
    const approximate = maxAbsDiff(single.start.logits, full.start.logits);
    await annotate(`question logits against full prefill: first-slot header ${exact.toExponential(2)}, one header ${approximate.toExponential(2)}`);
    expect(exact).toBeLessThan(1e-4);
    expect(approximate).toBeGreaterThan(1e-2);
    expect(packet.accounting.computedTokens).toBe(full.accounting.computedTokens);
  });

  it('later chunks use the main header', async ({ annotate }) => {
    // Stored packets: the first chunk's built with the first-slot header, the others with the main one.
    const stored: ContextPlan = {
      ...plan,
      chunks: await Promise.all(
        plan.chunks.map(async (chunk, index) => {
          const adapter = index === 0 ? withFirstSlot.firstSlot : withFirstSlot;
          const { packet } = await buildPacket(engine, chunk.tokens, { chunkId: `chunk-${index}`, kind: 'full', adapter });
          const { header } = packet;
          return { tokens: chunk.tokens, packet: { kv: packet.kv, basePosition: header.basePosition, prefixLength: 0, suffixLength: 0, adapterId: header.adapterId } };
        }),
      ),
    };
    const fromStore = await prefillContext(engine, stored, { strategy: 'packet', adapter: withFirstSlot });
    const built = await prefillContext(engine, plan, { strategy: 'packet', adapter: withFirstSlot });
    const diff = maxAbsDiff(fromStore.start.logits, built.start.logits);
    await annotate(`stored against freshly built packets: max abs logit difference ${diff.toExponential(2)}`);
    const chunkTokens = plan.chunks.reduce((sum, chunk) => sum + chunk.tokens.length, 0);
    expect(fromStore.accounting.splicedTokens).toBe(chunkTokens);
    expect(fromStore.accounting.computedTokens).toBe(plan.preamble.length + plan.question.length);
    expect(diff).toBeLessThan(EQUIVALENCE_TOLERANCE);
  });

  it('ingestion stores both packets', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'kvpack-first-slot-ingest-'));
    try {
      const store = await FsPacketStore.open(path.join(dir, 'packets'), { cacheBytes: 0, dtype: 'float32' });
      const processor = new PacketChunkProcessor(engine, store, { ratio: 0.5 }, [withFirstSlot]);
      await processor.process({ chunkId: 'chunk-0', text: CHUNK_TEXTS[0], title: 'Story 0', tokens: plan.chunks[0].tokens });
      for (const adapter of [withFirstSlot, withFirstSlot.firstSlot as AdapterVectors]) {
        for (const kind of ['full', 'summary'] as const) {
          const packet = await store.get({ chunkId: 'chunk-0', adapterId: adapter.id, kind }, expectedFingerprints(engine, adapter));
          expect(packet.header.adapterFingerprint).toBe(adapter.fingerprint);
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('adapter file keeps the first-slot header', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'kvpack-first-slot-'));
    try {
      const file = path.join(dir, 'test-kv.safetensors');
      writeAdapterFile(file, withFirstSlot, {
        formatVersion: ADAPTER_FORMAT_VERSION,
        id: 'test-kv',
        variant: 'conditioned-kv',
        modelFingerprint: engine.modelFingerprint,
        hiddenSize: engine.arch.hiddenSize,
        trainingData: 'random main header, preamble cache as first-slot header',
        createdAt: new Date().toISOString(),
      });
      const tensors = decodeSafetensors(readFileSync(file), file).tensors;
      const { numLayers, numKvHeads, headDim } = engine.layout;
      expect(tensors.get('first_header_keys')?.shape).toEqual([numLayers, numKvHeads, plan.preamble.length, headDim]);
      const loaded = loadAdapter(file, expectedModelOf(engine)).vectors;
      expect(loaded.fingerprint).toBe(withFirstSlot.fingerprint);
      expect(loaded.firstSlot?.fingerprint).toBe(withFirstSlot.firstSlot?.fingerprint);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('conditioned-kv adapter through the server', () => {
  let dir: string;
  let adapterFile: string;
  let kv: AdapterVectors;
  let chunkTokensByTitle: Map<string, number>;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'kvpack-conditioned-kv-server-'));
    const engine = await InferenceEngine.load(testModelDir('stories260K'));
    try {
      ({ kv } = await equivalentAdapters(engine, 9));
      adapterFile = path.join(dir, 'test-kv.safetensors');
      writeAdapterFile(adapterFile, kv, {
        formatVersion: ADAPTER_FORMAT_VERSION,
        id: 'test-kv',
        variant: 'conditioned-kv',
        modelFingerprint: engine.modelFingerprint,
        hiddenSize: engine.arch.hiddenSize,
        trainingData: 'the cache of random header vectors',
        createdAt: new Date().toISOString(),
      });
      chunkTokensByTitle = new Map(CHUNK_TEXTS.map((text, index) => [`Story ${index}`, engine.tokenizer.encode(text).length]));
    } finally {
      await engine.release();
    }
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('builds, rebuilds and splices its packets', async () => {
    const storeDir = path.join(dir, 'store');
    const running = await startTestServer(storeDir, { adapter: adapterFile, summaryThreshold: -1 });
    try {
      const health = (await (await fetch(`${running.url}/healthz`)).json()) as { packetStrategy: { adapter: string; variant: string; reason: string } };
      expect(health.packetStrategy.adapter).toBe('test-kv');
      expect(health.packetStrategy.variant).toBe('conditioned-kv');
      expect(health.packetStrategy.reason).toMatch(/^Adapter test-kv \(conditioned-kv\) from .*test-kv\.safetensors; its held-out gate verdict is not default\.$/);

      const documents = CHUNK_TEXTS.map((text, index) => ({ id: `story-${index}`, title: `Story ${index}`, text }));
      const posted = (await (await postJson(`${running.url}/v1/documents`, { documents })).json()) as { job: { id: string } };
      const job = await waitForJob(running.url, posted.job.id);
      expect(job.status).toBe('succeeded');

      // Ingestion stored a conditioned-kv packet for the chunk of each one-chunk document.
      const adapterDir = path.join(storeDir, 'packets', 'test-kv');
      const files = listPacketFiles(adapterDir).filter((file) => file.endsWith('.full.kvp'));
      expect(files).toHaveLength(CHUNK_TEXTS.length);
      for (const file of files) {
        const stored = decodePacket(readFileSync(file), file);
        expect(stored.header.variant).toBe('conditioned-kv');
        expect(stored.header.adapterFingerprint).toBe(kv.fingerprint);
        expect(stored.header.prefixLength + stored.header.suffixLength).toBe(0);
      }
      const victim = path.basename(files[0]).replace('.full.kvp', '');
      rmSync(files[0]);

      // A packet rebuilt at query time costs its chunk tokens only: the header cache is not computed.
      const first = await askLily(running.url);
      const chunkTokens = first.citations.reduce((sum, citation) => sum + (chunkTokensByTitle.get(citation.title) ?? Number.NaN), 0);
      expect(first.adapterId).toBe('test-kv');
      expect(first.citations.map((citation) => citation.packet)).toEqual(['full', 'full', 'full']);
      expect(first.packetsRebuilt).toHaveLength(1);
      const rebuilt = first.packetsRebuilt[0];
      expect(rebuilt).toMatchObject({ chunkId: victim, adapterId: 'test-kv', kind: 'full', reason: 'PACKET_NOT_FOUND' });
      expect(rebuilt.computedTokens).toBe(rebuilt.chunkTokens);
      expect(first.tokens.splicedTokens).toBe(chunkTokens - rebuilt.chunkTokens);
      expect(first.tokens.adapterEntries).toBe(0);
      expect(first.tokens.computedTokens).toBe(first.tokens.contextTokens - first.tokens.splicedTokens - first.tokens.reusedTokens);

      // The rebuilt packet was stored, so the next query splices every chunk.
      const second = await askLily(running.url);
      expect(second.packetsRebuilt).toEqual([]);
      expect(second.tokens.splicedTokens).toBe(chunkTokens);
      expect(second.tokens.adapterEntries).toBe(0);
      expect(second.tokens.computedTokens).toBe(second.tokens.contextTokens - chunkTokens - second.tokens.reusedTokens);
      expect(second.tokens.computedTokens).toBeGreaterThanOrEqual(second.tokens.questionTokens);
    } finally {
      await running.close();
    }
  });
});

const run = promisify(execFile);

async function kvpack(args: string[]): Promise<{ stdout: string; stderr: string }> {
  return run(process.execPath, ['--import', 'tsx', path.join(packageRoot, 'cli', 'main.ts'), ...args], { cwd: packageRoot, maxBuffer: 16 * 1024 * 1024 });
}

/** Writes a cache as a bare safetensors file of `header_keys` and `header_values` `[layers, kv_heads, P, head_dim]`. */
function writeBareHeaderKv(file: string, cache: KvCache): void {
  const shape = [cache.layout.numLayers, cache.layout.numKvHeads, cache.length, cache.layout.headDim];
  const stack = (layers: readonly Float32Array[]) => ({ shape, data: Float32Array.from(layers.flatMap((layer) => [...layer])) });
  writeFileSync(file, encodeSafetensors(new Map([['header_keys', stack(cache.keys)], ['header_values', stack(cache.values)]]), {}));
}

describe('kvpack adapter import --variant conditioned-kv', () => {
  let dir: string;
  let engine: InferenceEngine;
  let kv: AdapterVectors;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'kvpack-conditioned-kv-import-'));
    engine = await InferenceEngine.load(testModelDir('stories260K'));
    ({ kv } = await equivalentAdapters(engine, 5));
  });
  afterAll(async () => {
    await engine.release();
    rmSync(dir, { recursive: true, force: true });
  });

  it('imports a bare header cache', async () => {
    const bare = path.join(dir, 'bare.safetensors');
    writeBareHeaderKv(bare, kv.headerKv as KvCache);
    const out = path.join(dir, 'imported-kv.safetensors');
    const model = testModelDir('stories260K');
    const result = await kvpack(['adapter', 'import', '--model', model, '--from', bare, '--variant', 'conditioned-kv', '--test-samples', '3', '--chunks', '2', '--out', out]);
    expect(result.stdout).toContain(`Wrote ${out}: imported conditioned-kv adapter imported-kv.`);
    expect(result.stdout).toMatch(/Gate \((default|rejected)\): /);

    const loaded = loadAdapter(out, expectedModelOf(engine));
    expect(loaded.vectors.variant).toBe('conditioned-kv');
    expect(loaded.vectors.fingerprint).toBe(kv.fingerprint);
    expect(loaded.metadata.trainingData).toBe('imported vectors (from bare.safetensors)');
    expect(loaded.metadata.fidelity?.byChunkCount.map((entry) => entry.chunks)).toEqual([2]);
    expect(loaded.metadata.fidelity?.byChunkCount[0].adapter.strategy).toBe(`conditioned-kv (${HEADER_LENGTH} per layer)`);
    const stored = decodeSafetensors(readFileSync(out), out);
    const { numLayers, numKvHeads, headDim } = engine.layout;
    expect(stored.tensors.get('header_keys')?.shape).toEqual([numLayers, numKvHeads, HEADER_LENGTH, headDim]);
  });

  it('rejects a header cache of another layout', async () => {
    const { numLayers, numKvHeads, headDim } = engine.layout;
    const layout = { numLayers, numKvHeads, headDim: headDim * 2 };
    const layers = () => Array.from({ length: numLayers }, () => new Float32Array(numKvHeads * 2 * headDim * 2));
    const bare = path.join(dir, 'wide.safetensors');
    writeBareHeaderKv(bare, new KvCache(layout, 2, layers(), layers()));
    const args = ['adapter', 'import', '--model', testModelDir('stories260K'), '--from', bare, '--variant', 'conditioned-kv', '--out', path.join(dir, 'wide-out.safetensors')];
    const failure = await kvpack(args).then(
      () => undefined,
      (error: { stderr: string; code: number }) => error,
    );
    expect(failure?.code).toBe(1);
    expect(failure?.stderr).toContain('[ADAPTER_MISMATCH]');
    expect(failure?.stderr).toContain(`the header cache has shape [${numLayers}, ${numKvHeads}, 2, ${headDim * 2}]`);
    expect(failure?.stderr).toContain(`the model's KV layout needs [${numLayers}, ${numKvHeads}, 2, ${headDim}]`);
  });

  it('rejects an unknown variant', async () => {
    const failure = await kvpack(['adapter', 'import', '--from', 'x.safetensors', '--variant', 'prefix', '--out', 'y.safetensors']).then(
      () => undefined,
      (error: { stderr: string; code: number }) => error,
    );
    expect(failure?.code).not.toBe(0);
    expect(failure?.stderr).toContain('expected reference, conditioned, conditioned-kv, got "prefix"');
  });
});
