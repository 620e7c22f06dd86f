import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { InferenceEngine } from '../inference/engine.js';
import { PacketChunkProcessor } from '../ingest/chunk-processor.js';
import { countNewChunks, DocumentCommitter, wordWeightOf, type CommitOutcome } from '../ingest/commit.js';
import type { LoadedDocument } from '../ingest/loaders.js';
import { summaryMethodOf } from '../ingest/manifest.js';
import { planDocument, type PlannedDocument } from '../ingest/plan.js';
import type { ChunkStore } from '../ingest/store.js';
import type { AdapterVectors } from '../packets/adapter-vectors.js';
import { WriteLock } from './write-lock.js';

/** Counts of one ingestion, updated as each document is committed. */
export interface IngestionCounts {
  /** Documents handed to the ingestion. */
  total: number;
  /** Documents handled so far, whatever their outcome. */
  processed: number;
  added: number;
  updated: number;
  unchanged: number;
  /** Stored documents of the same uploaded files that the new upload no longer contains. */
  removed: number;
  chunksCreated: number;
  chunksReused: number;
  /** Tokens of the chunks created. */
  tokens: number;
}

export interface IngestDocumentsOptions {
  /** Checked between documents: a document in flight is finished and committed, then ingestion stops. */
  signal?: AbortSignal;
  /** Source paths that the documents replace entirely: stored documents of these sources that are not in `documents` are deleted. */
  replaceSources?: readonly string[];
  /** Called after every committed document. */
  onProgress?: (counts: Readonly<IngestionCounts>) => void;
}

/**
 * Ingests documents that are already in memory (JSON bodies, uploaded files) into the server's
 * open store. Each document is processed (packets, summary, embeddings) and committed with its
 * index entries under the store's write lock, so a query finds it whole or not at all, and a
 * deletion never runs between a document's packet writes and its commit.
 *
 * Chunks are processed one at a time (`kvpack ingest` runs several at once), which leaves CPU for
 * the queries the server answers meanwhile.
 */
export class DocumentIngester {
  constructor(
    private readonly store: ChunkStore,
    private readonly engine: InferenceEngine,
    private readonly writeLock: WriteLock,
    private readonly options: { adapter?: AdapterVectors; logger?: Logger; checkpointIntervalMs?: number } = {},
  ) {}

  async ingest(documents: readonly LoadedDocument[], options: IngestDocumentsOptions = {}): Promise<IngestionCounts> {
    const counts: IngestionCounts = { total: documents.length, processed: 0, added: 0, updated: 0, unchanged: 0, removed: 0, chunksCreated: 0, chunksReused: 0, tokens: 0 };
    const planned = await this.planDocuments(documents, counts);
    const processor = new PacketChunkProcessor(
      this.engine,
      this.store.packets,
      { ratio: this.store.manifest.summaryRatio, method: summaryMethodOf(this.store.manifest), wordWeight: wordWeightOf(this.store.embedder) },
      this.options.adapter ? [this.options.adapter] : [],
    );
    const committer = new DocumentCommitter(this.store, processor, 1);
    countNewChunks(this.store, planned);

    let lastCheckpoint = Date.now();
    try {
      for (const item of planned) {
        if (options.signal?.aborted) break;
        const outcome = await this.writeLock.run(() => committer.commit(item));
        this.count(outcome, counts);
        this.options.logger?.debug({ documentId: item.document.id, chunks: item.chunks.length, created: outcome.chunksCreated }, 'document committed');
        options.onProgress?.(counts);
        if (Date.now() - lastCheckpoint >= (this.options.checkpointIntervalMs ?? 5000)) {
          await this.writeLock.run(() => this.store.saveDerivedState());
          lastCheckpoint = Date.now();
        }
      }
      if (!options.signal?.aborted && options.replaceSources) {
        await this.writeLock.run(() => this.removeStale(options.replaceSources ?? [], documents, counts));
      }
    } finally {
      // Statistics counted for chunks that were never committed (a stop or a failure) are recounted away.
      await this.writeLock.run(() => {
        if (counts.processed < counts.total) this.store.recountStatistics();
        this.store.saveDerivedState();
      });
    }
    return counts;
  }

  /** Chunks the new and changed documents; unchanged ones only count as processed. */
  private async planDocuments(documents: readonly LoadedDocument[], counts: IngestionCounts): Promise<PlannedDocument[]> {
    const options = {
      catalog: this.store.catalog,
      tokenizer: this.engine.tokenizer,
      model: { modelFingerprint: this.engine.modelFingerprint, tokenizerFingerprint: this.engine.tokenizerFingerprint },
      chunking: this.store.manifest.chunking,
    };
    const planned: PlannedDocument[] = [];
    for (const document of documents) {
      const item = await planDocument(document, options);
      if (item) {
        planned.push(item);
      } else {
        counts.unchanged += 1;
        counts.processed += 1;
      }
    }
    return planned;
  }

  private count(outcome: CommitOutcome, counts: IngestionCounts): void {
    if (outcome.replaces) counts.updated += 1;
    else counts.added += 1;
    counts.chunksCreated += outcome.chunksCreated;
    counts.chunksReused += outcome.chunksReused;
    counts.tokens += outcome.tokens;
    counts.processed += 1;
  }

  private async removeStale(sources: readonly string[], documents: readonly LoadedDocument[], counts: IngestionCounts): Promise<void> {
    const currentIds = new Set(documents.map((document) => document.id));
    const stale = sources.flatMap((source) => this.store.catalog.documentIdsBySource(source)).filter((id) => !currentIds.has(id));
    if (stale.length === 0) return;
    this.store.applyChange(this.store.catalog.deleteDocuments(stale));
    counts.removed += stale.length;
    this.store.saveDerivedState();
    await this.store.collectGarbagePackets();
  }
}

/** Builds a document from text given through the API, with the content hash the file loaders compute. */
export function documentFromText(id: string, sourcePath: string, title: string, text: string): LoadedDocument {
  const contentHash = createHash('sha256').update(title).update('\0').update(text).digest('hex');
  return { id, sourcePath, title, text, contentHash };
}
