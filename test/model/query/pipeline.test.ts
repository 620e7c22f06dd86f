import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KvpackError } from '../../../common/errors.js';
import { InferenceEngine } from '../../../inference/engine.js';
import { PacketChunkProcessor } from '../../../ingest/chunk-processor.js';
import { runIngest } from '../../../ingest/pipeline.js';
import { ChunkStore } from '../../../ingest/store.js';
import { packetFilePath } from '../../../packets/store-layout.js';
import { QueryPipeline } from '../../../query/pipeline.js';
import { StoreRetriever } from '../../../query/store-retriever.js';
import { testModelDir } from '../../helpers/models.js';
import { requireSharedDir } from '../../helpers/shared.js';

let scratch: string;
let engine: InferenceEngine;
let storeDir: string;
let questions: string[];

beforeAll(async () => {
  scratch = mkdtempSync(path.join(tmpdir(), 'kvpack-pipeline-'));
  engine = await InferenceEngine.load(testModelDir('stories260K'));
  const lines = readFileSync(path.join(requireSharedDir(), 'data', 'hotpotqa', 'dev_subsampled.jsonl'), 'utf8').split('\n').slice(0, 3);
  questions = lines.map((line) => (JSON.parse(line) as { question_text: string }).question_text);
  writeFileSync(path.join(scratch, 'corpus.jsonl'), `${lines.join('\n')}\n`);
  storeDir = path.join(scratch, 'store');
  await runIngest({
    storeDir,
    paths: [path.join(scratch, 'corpus.jsonl')],
    model: { modelFingerprint: engine.modelFingerprint, tokenizerFingerprint: engine.tokenizerFingerprint, tokenizer: engine.tokenizer },
    createProcessor: (packets, summary) => new PacketChunkProcessor(engine, packets, summary),
    jsonl: { textField: 'paragraph_text', titleField: 'title', recordsField: 'contexts' },
  });
});

afterAll(async () => {
  await engine.release();
  rmSync(scratch, { recursive: true, force: true });
});

async function withPipeline<T>(summaryThreshold: number, run: (pipeline: QueryPipeline, store: ChunkStore) => Promise<T>): Promise<T> {
  const model = { modelFingerprint: engine.modelFingerprint, tokenizerFingerprint: engine.tokenizerFingerprint };
  const store = await ChunkStore.open(storeDir, { mode: 'read', model });
  try {
    return await run(new QueryPipeline({ engine, retriever: new StoreRetriever(store), packets: store.packets, summaryThreshold }), store);
  } finally {
    await store.close();
  }
}

describe('query pipeline', () => {
  it('splices summary packets below the threshold', async () => {
    await withPipeline(1.01, async (pipeline, store) => {
      const result = await pipeline.answer({ question: questions[0], topK: 3, maxTokens: 4, strategy: 'naive' });
      expect(result.citations.map((citation) => citation.packet)).toEqual(['summary', 'summary', 'summary']);
      const summaryTokens = result.citations.reduce((sum, citation) => sum + store.catalog.getChunk(citation.chunkId)!.summaryTokens.length, 0);
      expect(result.tokens.splicedTokens).toBe(summaryTokens);
      expect(result.packetsRebuilt).toEqual([]);
    });
  });

  it('splices full packets above the threshold', async () => {
    await withPipeline(-1.01, async (pipeline, store) => {
      const result = await pipeline.answer({ question: questions[0], topK: 3, maxTokens: 4, strategy: 'naive' });
      expect(result.citations.map((citation) => citation.packet)).toEqual(['full', 'full', 'full']);
      const chunkTokens = result.citations.reduce((sum, citation) => sum + store.catalog.getChunk(citation.chunkId)!.tokens.length, 0);
      expect(result.tokens.splicedTokens).toBe(chunkTokens);
    });
  });

  it('rebuilds a corrupt packet and counts it as computed', async () => {
    const first = await withPipeline(-1.01, (pipeline) => pipeline.answer({ question: questions[1], topK: 2, maxTokens: 4, strategy: 'naive' }));
    const victim = first.citations[0].chunkId;
    const file = packetFilePath(path.join(storeDir, 'packets'), { chunkId: victim, adapterId: 'none', kind: 'full' });
    const bytes = readFileSync(file);
    bytes[bytes.length - 5] ^= 0xff;
    writeFileSync(file, bytes);

    const second = await withPipeline(-1.01, (pipeline) => pipeline.answer({ question: questions[1], topK: 2, maxTokens: 4, strategy: 'naive' }));
    expect(second.packetsRebuilt).toHaveLength(1);
    expect(second.packetsRebuilt[0]).toMatchObject({ chunkId: victim, kind: 'full', reason: 'PACKET_CORRUPT' });
    expect(second.tokens.splicedTokens).toBe(first.tokens.splicedTokens - second.packetsRebuilt[0].chunkTokens);
    expect(second.tokens.computedTokens).toBe(first.tokens.computedTokens + second.packetsRebuilt[0].computedTokens);
    expect(second.answer).toBe(first.answer);

    // The rebuilt packet was stored: the next query splices it again.
    const third = await withPipeline(-1.01, (pipeline) => pipeline.answer({ question: questions[1], topK: 2, maxTokens: 4, strategy: 'naive' }));
    expect(third.packetsRebuilt).toEqual([]);
  });

  it('rejects a question longer than the window', async () => {
    await withPipeline(0.25, async (pipeline) => {
      const error = await pipeline.answer({ question: 'why '.repeat(400), maxTokens: 8 }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(KvpackError);
      expect((error as KvpackError).code).toBe('SEQUENCE_TOO_LONG');
      expect((error as KvpackError).message).toMatch(/The question takes \d+ tokens but the model's 512-position window leaves room for \d+/);
    });
  });

  it('drops chunks that do not fit the window', async () => {
    await withPipeline(-1.01, async (pipeline) => {
      const result = await pipeline.answer({ question: questions[2], topK: 16, maxTokens: 200, strategy: 'naive' });
      expect(result.droppedChunks.length).toBeGreaterThan(0);
      expect(result.tokens.contextTokens + 200).toBeLessThanOrEqual(engine.arch.maxPositionEmbeddings);
    });
  });
});
