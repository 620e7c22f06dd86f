import type { Embedder } from '../retrieval/embedder.js';
import { HashedEmbedder } from '../retrieval/hashed-embedder.js';
import { wordFeatureHash } from '../retrieval/text-features.js';
import type { NewChunk } from './catalog.js';
import type { ChunkArtifacts, ChunkProcessor } from './chunk-processor.js';
import type { PlannedDocument } from './plan.js';
import { embeddingText, type ChunkStore } from './store.js';

/** Summary length as a share of a chunk's tokens for a new store. */
export const DEFAULT_SUMMARY_RATIO = 0.5;

/** What committing one document changed. */
export interface CommitOutcome {
  replaces: boolean;
  chunksCreated: number;
  chunksReused: number;
  chunksRemoved: number;
  /** Tokens of the chunks created. */
  tokens: number;
}

/**
 * Commits planned documents one at a time: builds the packets, summaries and embeddings of the
 * chunks the catalog lacks, then writes the document, its chunk links and its index entries in
 * one catalog transaction. Packets are stored before that transaction, so a document is visible
 * only with all of its parts, and a process killed in between leaves only orphan packets that the
 * next ingestion removes.
 */
export class DocumentCommitter {
  constructor(
    private readonly store: ChunkStore,
    private readonly processor: ChunkProcessor,
    /** Chunks of one document processed at once, so packet prefills and file writes overlap. */
    private readonly concurrency: number,
  ) {}

  async commit(planned: PlannedDocument): Promise<CommitOutcome> {
    const { store } = this;
    const { newChunks, reused } = await this.prepareChunks(planned);
    store.assertLockHeld();
    // The catalog transaction and the index update run in one synchronous step: no reader sees one without the other.
    const change = store.catalog.commitDocument(
      {
        document: {
          id: planned.document.id,
          sourcePath: planned.document.sourcePath,
          title: planned.document.title,
          contentHash: planned.document.contentHash,
          charCount: planned.document.text.length,
        },
        chunks: planned.chunks.map((chunk) => ({ chunk: newChunks.get(chunk.id) ?? linkedChunk(chunk.id), start: chunk.start, end: chunk.end })),
      },
      new Date().toISOString(),
    );
    store.applyChange(change);
    return {
      replaces: planned.replaces,
      chunksCreated: change.added.length,
      chunksReused: reused,
      chunksRemoved: change.removed.length,
      tokens: [...newChunks.values()].reduce((sum, chunk) => sum + chunk.tokens.length, 0),
    };
  }

  /** Builds packets, summaries and embeddings of the document's chunks that the catalog lacks. */
  private async prepareChunks(planned: PlannedDocument): Promise<{ newChunks: Map<string, NewChunk>; reused: number }> {
    const { store } = this;
    const { title } = planned.document;
    const pending = new Map<string, { text: string; tokens: Int32Array; artifacts?: ChunkArtifacts }>();
    let reused = 0;
    for (const chunk of planned.chunks) {
      if (pending.has(chunk.id)) continue;
      if (store.catalog.hasChunk(chunk.id)) {
        reused += 1;
        continue;
      }
      pending.set(chunk.id, { text: chunk.text, tokens: chunk.tokens });
    }
    const entries = [...pending.entries()];
    await runWithConcurrency(entries, this.concurrency, async ([id, entry]) => {
      entry.artifacts = await this.processor.process({ chunkId: id, text: entry.text, title, tokens: entry.tokens });
    });
    const embeddings = await store.embedder.embedDocuments(entries.map(([, entry]) => embeddingText(title, entry.text)));
    const newChunks = new Map<string, NewChunk>();
    entries.forEach(([id, entry], i) => {
      const artifacts = entry.artifacts as ChunkArtifacts;
      newChunks.set(id, {
        id,
        text: entry.text,
        tokens: entry.tokens,
        title,
        summaryText: artifacts.summaryText,
        summaryTokens: artifacts.summaryTokens,
        embedding: embeddings[i],
      });
    });
    return { newChunks, reused };
  }
}

/** Returns the corpus IDF of a word, when the store's embedder keeps term statistics. */
export function wordWeightOf(embedder: Embedder): ((word: string) => number) | undefined {
  if (!(embedder instanceof HashedEmbedder) || !embedder.config.useIdf) return undefined;
  const { statistics } = embedder;
  return (word) => statistics.idf(wordFeatureHash(word.normalize('NFKC')));
}

/** Counts the new chunks of planned documents in the IDF statistics before any is embedded. */
export function countNewChunks(store: ChunkStore, documents: readonly PlannedDocument[]): void {
  const seen = new Set<string>();
  const texts: string[] = [];
  for (const { document, chunks } of documents) {
    for (const chunk of chunks) {
      if (seen.has(chunk.id) || store.catalog.hasChunk(chunk.id)) continue;
      seen.add(chunk.id);
      texts.push(embeddingText(document.title, chunk.text));
    }
  }
  store.countNewChunks(texts);
}

/** Runs `work` on every item with at most `limit` calls in flight. */
async function runWithConcurrency<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next];
      next += 1;
      await work(item);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
}

/** Returns a stand-in for a chunk already in the catalog: `commitDocument` links it by id and reads no other field. */
function linkedChunk(id: string): NewChunk {
  return { id, text: '', tokens: new Int32Array(0), title: '', summaryText: '', summaryTokens: new Int32Array(0), embedding: new Float32Array(0) };
}
