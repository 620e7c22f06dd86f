import { existsSync } from 'node:fs';
import type { Logger } from 'pino';
import { KvpackError } from '../common/errors.js';
import type { PacketStore } from '../packets/store.js';
import type { Embedder } from '../retrieval/embedder.js';
import { HashedEmbedder } from '../retrieval/hashed-embedder.js';
import type { ChunkProcessor, SummaryOptions } from './chunk-processor.js';
import { countNewChunks, DEFAULT_SUMMARY_RATIO, DocumentCommitter, wordWeightOf } from './commit.js';
import { defaultChunking, validateChunking, type ChunkingOptions, type TokenEncoder } from './chunker.js';
import { defaultJsonlFields, type IngestWarning, type JsonlFields } from './loaders.js';
import type { StoreLockOptions } from './lock.js';
import { manifestPath, summaryMethodOf, type ModelIdentity } from './manifest.js';
import { DEFAULT_SUMMARY_METHOD, type SummaryMethod } from './summarize.js';
import { planIngest, type IngestPlan } from './plan.js';
import { silentProgress, type ProgressReporter } from './progress.js';
import { discoverSources } from './sources.js';
import { ChunkStore } from './store.js';

export interface IngestOptions {
  storeDir: string;
  /** Files and folders to ingest (folders recursively). */
  paths: readonly string[];
  /** Fingerprints and tokenizer of the model the chunks are cut for. */
  model: ModelIdentity & { tokenizer: TokenEncoder };
  /** Builds the per-chunk processor once the store is open, with the store's summary settings. */
  createProcessor: (packets: PacketStore, summary: SummaryOptions) => ChunkProcessor;
  /** The embedder; a new store records it, an existing one must match it. Default: the store's own, else hashed. The caller closes it. */
  embedder?: Embedder;
  /** Chunk lengths; an existing store must have been built with the same. Default: the store's, else 48/64/0. */
  chunking?: ChunkingOptions;
  /** Summary length share; default: the store's, else 0.5. */
  summaryRatio?: number;
  /** How summaries pick sentences; default: the store's, else `lead`. */
  summaryMethod?: SummaryMethod;
  jsonl?: JsonlFields;
  /** Delete documents whose source file no longer exists. Default false. */
  prune?: boolean;
  logger?: Logger;
  progress?: ProgressReporter;
  lock?: StoreLockOptions;
  /** Save the index at least this often while ingesting, in milliseconds. Default 5000. */
  checkpointIntervalMs?: number;
  /**
   * Chunks of one document processed at once, so that packet prefills and packet file writes
   * (each flushed to disk) overlap. Default 4.
   */
  concurrency?: number;
}

export interface IngestReport {
  documents: { added: number; updated: number; unchanged: number; removed: number };
  chunks: { created: number; reused: number; removed: number };
  /** Tokens of the chunks created. */
  tokens: number;
  skippedFiles: string[];
  warnings: IngestWarning[];
  elapsedMs: number;
}

/**
 * Ingests files into a store in steps: discover the files, plan (load, normalize, chunk, compare),
 * then process and embed the new chunks of each new or changed document and commit it in one
 * transaction. Last, delete removed documents, save the index and collect orphan packets. The
 * store lock is held throughout.
 * Killing the process at any point loses at most the document in flight, because the next run
 * reconciles the index and packets with the catalog and finishes the job.
 */
export async function runIngest(options: IngestOptions): Promise<IngestReport> {
  const startedAt = Date.now();
  const progress = options.progress ?? silentProgress;
  const logger = options.logger;
  const sources = discoverSources(options.paths);
  const store = await openIngestStore(options);
  try {
    const collected = await store.collectGarbagePackets();
    if (collected > 0) logger?.info({ packets: collected }, 'removed packets of chunks that were never committed');
    const plan = await planIngest(sources.files, {
      catalog: store.catalog,
      tokenizer: options.model.tokenizer,
      model: options.model,
      chunking: store.manifest.chunking,
      jsonl: options.jsonl ?? defaultJsonlFields,
      prune: options.prune ?? false,
    });
    const report = emptyReport(sources.skipped, plan);
    for (const warning of report.warnings) logger?.warn({ kind: warning.kind, source: warning.source, byteOffsets: warning.byteOffsets }, warning.message);
    const processor = options.createProcessor(store.packets, {
      ratio: store.manifest.summaryRatio,
      method: summaryMethodOf(store.manifest),
      wordWeight: wordWeightOf(store.embedder),
    });
    countNewChunks(store, plan.documents);
    progress.start(totalsOf(store, plan));
    await commitDocuments(store, plan, processor, report, progress, options.checkpointIntervalMs ?? 5000, options.concurrency ?? 4);
    removeDocuments(store, plan.removals, report);
    progress.stop();

    store.saveDerivedState();
    await store.collectGarbagePackets();
    report.elapsedMs = Date.now() - startedAt;
    logger?.info({ documents: report.documents, chunks: report.chunks, tokens: report.tokens, elapsedMs: report.elapsedMs }, 'ingest complete');
    return report;
  } finally {
    await store.close();
  }
}

async function openIngestStore(options: IngestOptions): Promise<ChunkStore> {
  const chunking = options.chunking ?? defaultChunking;
  validateChunking(chunking);
  const summaryRatio = options.summaryRatio ?? DEFAULT_SUMMARY_RATIO;
  if (!(summaryRatio > 0 && summaryRatio <= 1)) {
    throw new KvpackError('INVALID_ARGUMENT', `Invalid summary ratio ${summaryRatio}: expected a number in (0, 1].`);
  }
  const store = await ChunkStore.open(options.storeDir, {
    mode: 'write',
    create: { chunking, summaryRatio, summaryMethod: options.summaryMethod ?? DEFAULT_SUMMARY_METHOD },
    model: options.model,
    embedder: options.embedder ?? (existsSync(manifestPath(options.storeDir)) ? undefined : new HashedEmbedder()),
    lock: options.lock,
    purpose: 'kvpack ingest',
    logger: options.logger,
  });
  try {
    assertSameSettings(store, options);
  } catch (error) {
    await store.close();
    throw error;
  }
  return store;
}

/** Raises STORE_MISMATCH when the options request other chunk lengths or summary ratio than the store has. */
function assertSameSettings(store: ChunkStore, options: Pick<IngestOptions, 'chunking' | 'summaryRatio' | 'summaryMethod'>): void {
  const stored = store.manifest.chunking;
  const { chunking, summaryRatio, summaryMethod } = options;
  const differs =
    chunking !== undefined &&
    (chunking.targetTokens !== stored.targetTokens || chunking.maxTokens !== stored.maxTokens || chunking.overlapTokens !== stored.overlapTokens);
  const storedMethod = summaryMethodOf(store.manifest);
  if (differs || (summaryRatio !== undefined && summaryRatio !== store.manifest.summaryRatio) || (summaryMethod !== undefined && summaryMethod !== storedMethod)) {
    throw new KvpackError(
      'STORE_MISMATCH',
      `The store ${store.dir} cuts chunks of ${stored.targetTokens}/${stored.maxTokens} tokens with overlap ${stored.overlapTokens} ` +
        `and summarizes with ${storedMethod} at ratio ${store.manifest.summaryRatio}; omit the chunk and summary options to keep them, or ingest into a new store.`,
    );
  }
}

function totalsOf(store: ChunkStore, plan: IngestPlan) {
  const seen = new Set<string>();
  let chunks = 0;
  let tokens = 0;
  for (const { chunks: list } of plan.documents) {
    for (const chunk of list) {
      if (seen.has(chunk.id) || store.catalog.hasChunk(chunk.id)) continue;
      seen.add(chunk.id);
      chunks += 1;
      tokens += chunk.tokens.length;
    }
  }
  return { documents: plan.documents.length, chunks, tokens };
}

async function commitDocuments(
  store: ChunkStore,
  plan: IngestPlan,
  processor: ChunkProcessor,
  report: IngestReport,
  progress: ProgressReporter,
  checkpointIntervalMs: number,
  concurrency: number,
): Promise<void> {
  const committer = new DocumentCommitter(store, processor, concurrency);
  let lastCheckpoint = Date.now();
  for (const planned of plan.documents) {
    const outcome = await committer.commit(planned);
    if (outcome.replaces) report.documents.updated += 1;
    else report.documents.added += 1;
    report.chunks.created += outcome.chunksCreated;
    report.chunks.reused += outcome.chunksReused;
    report.chunks.removed += outcome.chunksRemoved;
    report.tokens += outcome.tokens;
    progress.advance({ documents: 1, chunks: outcome.chunksCreated, tokens: outcome.tokens });
    if (Date.now() - lastCheckpoint >= checkpointIntervalMs) {
      store.saveDerivedState();
      lastCheckpoint = Date.now();
    }
  }
}

function removeDocuments(store: ChunkStore, ids: readonly string[], report: IngestReport): void {
  if (ids.length === 0) return;
  const change = store.catalog.deleteDocuments(ids);
  store.applyChange(change);
  report.documents.removed += ids.length;
  report.chunks.removed += change.removed.length;
}

function emptyReport(skippedFiles: string[], plan: IngestPlan): IngestReport {
  return {
    documents: { added: 0, updated: 0, unchanged: plan.unchanged, removed: 0 },
    chunks: { created: 0, reused: 0, removed: 0 },
    tokens: 0,
    skippedFiles,
    warnings: [...skippedFiles.map((file) => skippedWarning(file)), ...plan.warnings],
    elapsedMs: 0,
  };
}

function skippedWarning(file: string): IngestWarning {
  return { kind: 'unsupported-file', source: file, message: `Skipped ${file}: not a text, Markdown, HTML or JSON Lines file.` };
}
