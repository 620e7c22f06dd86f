import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InferenceEngine } from '../../../inference/engine.js';
import { SummaryOnlyChunkProcessor } from '../../../ingest/chunk-processor.js';
import { runIngest } from '../../../ingest/pipeline.js';
import { ChunkStore } from '../../../ingest/store.js';
import { HashedEmbedder } from '../../../retrieval/hashed-embedder.js';
import { TransformersEmbedder } from '../../../retrieval/transformers-embedder.js';
import { testModelDir } from '../../helpers/models.js';
import { writeStoriesEmbeddingModel } from './embedding-model.js';

let root: string;
let embeddingDir: string;
let embedder: TransformersEmbedder;
let engine: InferenceEngine;

beforeAll(async () => {
  root = mkdtempSync(path.join(tmpdir(), 'kvpack-transformers-embedder-'));
  embeddingDir = path.join(root, 'embedding-model');
  await writeStoriesEmbeddingModel(embeddingDir);
  embedder = await TransformersEmbedder.load(embeddingDir);
  engine = await InferenceEngine.load(testModelDir('stories260K'));
});
afterAll(async () => {
  await embedder.close();
  await engine.release();
  rmSync(root, { recursive: true, force: true });
});

const dot = (a: Float32Array, b: Float32Array) => a.reduce((sum, value, i) => sum + value * b[i], 0);

describe('TransformersEmbedder', () => {
  it('returns unit vectors of the hidden size', async () => {
    expect(embedder.info.kind).toBe('transformers');
    expect(embedder.info.dimension).toBe(64);
    const vectors = await embedder.embedDocuments(['The cat sat on the mat.', 'A dog ran in the park.', 'The cat sat on the mat.']);
    expect(vectors).toHaveLength(3);
    for (const vector of vectors) expect(dot(vector, vector)).toBeCloseTo(1, 4);
    expect(Array.from(vectors[2])).toEqual(Array.from(vectors[0]));
    expect(dot(vectors[0], vectors[1])).toBeLessThan(0.999);
  });

  it('embeds batches like single texts', async () => {
    const texts = Array.from({ length: 20 }, (_, i) => `Story number ${i} is about a ${i % 2 ? 'cat' : 'dog'}.`);
    const batched = await embedder.embedDocuments(texts);
    const single = await embedder.embedQuery(texts[17]);
    for (let i = 0; i < single.length; i++) expect(batched[17][i]).toBeCloseTo(single[i], 4);
  });

  it('throws for a folder without a model', async () => {
    const empty = path.join(root, 'empty');
    mkdirSync(empty);
    await expect(TransformersEmbedder.load(empty)).rejects.toThrow(
      `Embedding model folder ${empty} is missing config.json, tokenizer.json, onnx/model.onnx; pass a Transformers.js sentence-embedding folder.`,
    );
  });

  it('builds and reopens a store', async () => {
    const docs = path.join(root, 'docs');
    mkdirSync(docs);
    writeFileSync(path.join(docs, 'a.txt'), 'Lily played with a red ball in the park. The sun was warm.');
    writeFileSync(path.join(docs, 'b.txt'), 'Tom sailed his blue boat on the pond. The wind was strong.');
    const storeDir = path.join(root, 'store');
    const model = { modelFingerprint: engine.modelFingerprint, tokenizerFingerprint: engine.tokenizerFingerprint };
    await runIngest({
      storeDir,
      paths: [docs],
      model: { ...model, tokenizer: engine.tokenizer },
      embedder,
      createProcessor: () => new SummaryOnlyChunkProcessor(engine.tokenizer, { ratio: 0.5 }),
    });
    const store = await ChunkStore.open(storeDir, { mode: 'read', model });
    try {
      expect(store.manifest.embedder.kind).toBe('transformers');
      expect(store.index.size).toBe(store.catalog.chunkCount());
      const [hit] = await store.search('Tom sailed his blue boat on the pond. The wind was strong.', 1);
      expect(hit.text).toBe('Tom sailed his blue boat on the pond. The wind was strong.');
      expect(hit.score).toBeCloseTo(1, 4);
    } finally {
      await store.close();
    }
    await expect(ChunkStore.open(storeDir, { mode: 'read', embedder: new HashedEmbedder() })).rejects.toThrow(
      new RegExp(`was built with the transformers ${embeddingDir} \\(64 dimensions, fingerprint [0-9a-f]{12}\\) embedder, not the hashed \\(1024 dimensions`),
    );
  });
});
