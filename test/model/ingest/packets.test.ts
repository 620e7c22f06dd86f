import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { InferenceEngine } from '../../../inference/engine.js';
import { PacketChunkProcessor } from '../../../ingest/chunk-processor.js';
import { chunkText } from '../../../ingest/chunker.js';
import { runIngest } from '../../../ingest/pipeline.js';
import { ChunkStore } from '../../../ingest/store.js';
import { expectedFingerprints } from '../../../packets/build.js';
import { testModelDir } from '../../helpers/models.js';

let engine: InferenceEngine;
beforeAll(async () => {
  engine = await InferenceEngine.load(testModelDir('stories260K'));
});
afterAll(async () => engine.release());

let root: string;
beforeEach(() => {
  root = mkdtempSync(path.join(tmpdir(), 'kvpack-ingest-packets-'));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const stories = [
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She ran to get it, but a dog took it first. Lily was sad. Then the dog brought the ball back, and they played together all day.',
  'Tom had a small boat. He took it to the pond every morning. The boat was blue and had a white sail. One day the wind was strong, and the boat went far away. Tom cried. His mom helped him find it by the big tree.',
];

describe('ingestion with packets', () => {
  it('stores a full and a summary packet for every chunk', async () => {
    const docs = path.join(root, 'docs');
    mkdirSync(docs);
    stories.forEach((story, i) => writeFileSync(path.join(docs, `story${i}.txt`), story));
    const storeDir = path.join(root, 'store');
    const model = { modelFingerprint: engine.modelFingerprint, tokenizerFingerprint: engine.tokenizerFingerprint };
    const report = await runIngest({
      storeDir,
      paths: [docs],
      model: { ...model, tokenizer: engine.tokenizer },
      createProcessor: (packets, summary) => new PacketChunkProcessor(engine, packets, summary),
      chunking: { targetTokens: 48, maxTokens: 64, overlapTokens: 0 },
    });
    expect(report.documents.added).toBe(2);
    expect(report.chunks.created).toBeGreaterThan(2);

    const store = await ChunkStore.open(storeDir, { mode: 'read', model });
    try {
      const expected = expectedFingerprints(engine);
      const ids = store.listDocuments().flatMap((doc) => store.catalog.documentChunkIds(doc.id));
      expect(ids).toHaveLength(report.chunks.created);
      for (const id of ids) {
        const chunk = store.getChunk(id);
        expect(chunk.tokens.length).toBeLessThanOrEqual(64);
        const full = await store.packets.get({ chunkId: id, adapterId: 'none', kind: 'full' }, expected);
        expect(Array.from(full.header.tokenIds)).toEqual(Array.from(chunk.tokens));
        expect(full.kv.length).toBe(chunk.tokens.length);
        const summary = await store.packets.get({ chunkId: id, adapterId: 'none', kind: 'summary' }, expected);
        expect(Array.from(summary.header.tokenIds)).toEqual(Array.from(chunk.summaryTokens));
        expect(engine.tokenizer.decode(chunk.summaryTokens)).toBe(chunk.summaryText);
        // The budget counts sentences encoded alone; encoding them joined may differ by a token.
        expect(chunk.summaryTokens.length).toBeLessThanOrEqual(Math.floor(chunk.tokens.length * 0.5) + 1);
        for (const sentence of chunk.summaryText.split(/(?<=[.!?]) /)) expect(chunk.text).toContain(sentence);
      }
    } finally {
      await store.close();
    }
  });

  it('keeps an emoji at a chunk boundary whole with the model tokenizer', () => {
    const family = '\u{1F468}\u200D\u{1F469}\u200D\u{1F467}';
    const text = `${'ab'.repeat(20)}${family}${'cd'.repeat(20)}`;
    const chunks = chunkText(text, engine.tokenizer, { targetTokens: 20, maxTokens: 24, overlapTokens: 0 });
    expect(chunks.length).toBeGreaterThan(1);
    expect(chunks.map((chunk) => chunk.text).join('')).toBe(text);
    const holding = chunks.filter((chunk) => chunk.text.includes('\u{1F468}') || chunk.text.includes('\u{1F467}'));
    expect(holding).toHaveLength(1);
    expect(holding[0].text).toContain(family);
    for (const chunk of chunks) {
      expect(chunk.tokens.length).toBeLessThanOrEqual(24);
      expect(engine.tokenizer.decode(chunk.tokens)).toBe(chunk.text);
    }
  });
});
