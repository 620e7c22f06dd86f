import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { KvpackError } from '../common/errors.js';
import { FsPacketStore } from '../packets/store.js';
import { assertSameEmbedder, type Embedder } from '../retrieval/embedder.js';
import { HashedEmbedder } from '../retrieval/hashed-embedder.js';
import { HnswIndex, IndexUnusableError } from '../retrieval/hnsw-index.js';
import { TermStatistics } from '../retrieval/term-statistics.js';
import { TransformersEmbedder } from '../retrieval/transformers-embedder.js';
import { Catalog, type CatalogChange, type ChunkRecord, type ChunkSource, type DocumentRecord } from './catalog.js';
import type { ChunkingOptions } from './chunker.js';
import { acquireStoreLock, type StoreLock, type StoreLockOptions } from './lock.js';
import type { SummaryMethod } from './summarize.js';
import { assertSameModel, MANIFEST_FORMAT, manifestPath, readManifest, writeManifest, type ModelIdentity, type StoreManifest } from './manifest.js';

export const CATALOG_FILE = 'catalog.sqlite';
export const INDEX_DIR = 'index';
export const PACKETS_DIR = 'packets';

export interface CreateStoreSettings {
  chunking: ChunkingOptions;
  summaryRatio: number;
  summaryMethod: SummaryMethod;
}

export interface OpenStoreOptions {
  /** `read` takes no lock and never writes; `write` takes the store lock until `close`. */
  mode: 'read' | 'write';
  /** Creates the store when `dir` has none (write mode only); requires `model` and `embedder`. */
  create?: CreateStoreSettings;
  /** Checked against the manifest when given. */
  model?: ModelIdentity;
  /** Checked against the manifest when given (the caller keeps ownership); otherwise built from the manifest and closed by `close`. */
  embedder?: Embedder;
  lock?: StoreLockOptions;
  /** The task named in the message a second writer gets. Default "kvpack". */
  purpose?: string;
  logger?: Logger;
}

/** One search result. */
export interface SearchHit {
  chunkId: string;
  /** Cosine similarity of the query and chunk vectors, in [-1, 1]; higher is more relevant. */
  score: number;
  title: string;
  text: string;
  /** Span of the chunk in its first document (`documentIds[0]`), UTF-16 code units `[start, end)`. */
  span: { start: number; end: number };
  /** Every document that contains the chunk. */
  documentIds: string[];
  /** Every occurrence of the chunk. */
  sources: ChunkSource[];
}

/** A stored chunk with the documents it occurs in. */
export interface ChunkView extends ChunkRecord {
  sources: ChunkSource[];
}

const STATISTICS_KEY = 'term_statistics';
const STATISTICS_GENERATION_KEY = 'term_statistics_generation';

/** Returns the text a chunk is embedded as: its document title, when there is one, on the line before the text. */
export function embeddingText(title: string, text: string): string {
  return title ? `${title}\n${text}` : text;
}

/**
 * A kvpack store folder: `store.json` (manifest), `catalog.sqlite` (documents and chunks),
 * `index/` (HNSW vectors) and `packets/` (KV packets). The catalog is the source of truth; the
 * index is repaired from the stored embeddings whenever it lags behind or is damaged.
 */
export class ChunkStore {
  readonly dir: string;
  readonly manifest: StoreManifest;
  readonly catalog: Catalog;
  readonly embedder: Embedder;
  readonly packets: FsPacketStore;
  readonly mode: 'read' | 'write';
  #index: HnswIndex;
  readonly #lock: StoreLock | undefined;
  readonly #ownsEmbedder: boolean;
  #statisticsDirty = false;
  /** Set when the lock was lost while held; every later write raises it. */
  #lockLost: Error | undefined;

  private constructor(parts: {
    dir: string;
    manifest: StoreManifest;
    catalog: Catalog;
    embedder: Embedder;
    index: HnswIndex;
    packets: FsPacketStore;
    mode: 'read' | 'write';
    lock: StoreLock | undefined;
    ownsEmbedder: boolean;
  }) {
    this.dir = parts.dir;
    this.manifest = parts.manifest;
    this.catalog = parts.catalog;
    this.embedder = parts.embedder;
    this.#index = parts.index;
    this.packets = parts.packets;
    this.mode = parts.mode;
    this.#lock = parts.lock;
    this.#ownsEmbedder = parts.ownsEmbedder;
  }

  get index(): HnswIndex {
    return this.#index;
  }

  /** The hashed embedder's term statistics, or undefined for other embedders. */
  get termStatistics(): TermStatistics | undefined {
    return this.embedder instanceof HashedEmbedder ? this.embedder.statistics : undefined;
  }

  /** Embeds `query` and returns the min(k, chunks) most similar chunks, most similar first. */
  async search(query: string, k: number): Promise<SearchHit[]> {
    const vector = await this.embedder.embedQuery(query);
    const hits: SearchHit[] = [];
    for (const hit of this.#index.search(vector, k)) {
      // NOTE: a reader's index is the one saved when it opened; chunks deleted since are skipped.
      const chunk = this.catalog.getChunkByLabel(hit.label);
      if (!chunk) continue;
      const sources = this.catalog.chunkSources(chunk.id);
      hits.push({
        chunkId: chunk.id,
        score: hit.similarity,
        title: chunk.title,
        text: chunk.text,
        span: sources.length > 0 ? { start: sources[0].start, end: sources[0].end } : { start: 0, end: chunk.text.length },
        documentIds: [...new Set(sources.map((source) => source.documentId))],
        sources,
      });
    }
    return hits;
  }

  /** Raises CHUNK_NOT_FOUND for an unknown id. */
  getChunk(id: string): ChunkView {
    const chunk = this.catalog.getChunk(id);
    if (!chunk) {
      throw new KvpackError('CHUNK_NOT_FOUND', `No chunk ${JSON.stringify(id)} in this store.`, { chunkId: id });
    }
    return { ...chunk, sources: this.catalog.chunkSources(id) };
  }

  listDocuments(): DocumentRecord[] {
    return this.catalog.listDocuments();
  }

  /** Deletes a document, the chunks only it contained, their vectors and packets. Raises DOCUMENT_NOT_FOUND. */
  async deleteDocument(id: string): Promise<void> {
    this.requireWrite('delete a document');
    if (!this.catalog.getDocument(id)) {
      throw new KvpackError('DOCUMENT_NOT_FOUND', `No document ${JSON.stringify(id)} in this store; list the stored documents to find its id.`, { documentId: id });
    }
    const change = this.catalog.deleteDocuments([id]);
    this.applyChange(change);
    this.saveDerivedState();
    await this.collectGarbagePackets();
  }

  /**
   * Brings the index and the term statistics in line with a committed catalog change. New chunks
   * must already be counted in the statistics (see `countNewChunks`). Packets of removed chunks
   * stay on disk until `collectGarbagePackets`.
   */
  applyChange(change: CatalogChange): void {
    for (const chunk of change.added) this.#index.add(chunk.label, chunk.embedding);
    for (const chunk of change.removed) {
      this.#index.delete(chunk.label);
      const statistics = this.termStatistics;
      if (statistics && this.embedder instanceof HashedEmbedder) {
        statistics.removeDocument(this.embedder.features(embeddingText(chunk.title, chunk.text)));
        this.#statisticsDirty = true;
      }
    }
  }

  /** Counts chunks that are about to be committed in the term statistics, so they weigh in their own IDF. */
  countNewChunks(texts: readonly string[]): void {
    if (!(this.embedder instanceof HashedEmbedder) || texts.length === 0) return;
    for (const text of texts) this.embedder.statistics.addDocument(this.embedder.features(text));
    this.#statisticsDirty = true;
  }

  /** Recounts the term statistics from the catalog, dropping counts of chunks that were never committed. */
  recountStatistics(): void {
    if (this.embedder instanceof HashedEmbedder) {
      rebuildStatistics(this.catalog, this.embedder);
      this.#statisticsDirty = true;
    }
  }

  /**
   * Saves the index (compacting it first when deleted vectors outnumber live ones) and the term
   * statistics snapshot, tagged with the catalog generation it matches.
   */
  saveDerivedState(): void {
    this.requireWrite('save the index');
    this.assertLockHeld();
    if (this.#index.deletedCount > 1024 && this.#index.deletedCount > this.#index.size) {
      this.#index.compact();
    }
    this.#index.save(path.join(this.dir, INDEX_DIR));
    const statistics = this.termStatistics;
    if (statistics && this.#statisticsDirty) {
      this.catalog.setMeta(STATISTICS_KEY, serializeStatistics(statistics));
      this.catalog.setMeta(STATISTICS_GENERATION_KEY, String(this.catalog.generation()));
      this.#statisticsDirty = false;
    }
  }

  /**
   * Deletes packets whose chunk is not in the catalog (left by a run killed between writing packets
   * and committing, or by removed chunks) and temporary files of interrupted packet writes.
   */
  async collectGarbagePackets(): Promise<number> {
    this.requireWrite('collect packets');
    await this.packets.cleanupTemp();
    let removed = 0;
    for (const key of await this.packets.list()) {
      if (!this.catalog.hasChunk(key.chunkId) && (await this.packets.delete(key))) removed += 1;
    }
    return removed;
  }

  /**
   * Raises STORE_LOCKED when the write lock was lost while held (its folder removed, or not
   * refreshed before it went stale), so that two writers never commit at once.
   */
  assertLockHeld(): void {
    if (this.#lockLost) {
      throw new KvpackError(
        'STORE_LOCKED',
        `Lost the lock of the store ${this.dir} (${this.#lockLost.message}); stopped before writing more. Run the command again.`,
      );
    }
  }

  /** Releases the lock (write mode), the catalog and an embedder the store built. Saves nothing by itself. */
  async close(): Promise<void> {
    try {
      if (this.#ownsEmbedder) await this.embedder.close();
      this.catalog.close();
    } finally {
      // A lost lock cannot be released; proper-lockfile rejects with "already released".
      if (!this.#lockLost) await this.#lock?.release();
    }
  }

  private requireWrite(action: string): void {
    if (this.mode !== 'write') {
      throw new KvpackError('INVALID_ARGUMENT', `Cannot ${action}: the store ${this.dir} is open for reading; open it in write mode.`);
    }
  }

  /** Opens or creates a store; see `OpenStoreOptions`. */
  static async open(dir: string, options: OpenStoreOptions): Promise<ChunkStore> {
    const storeDir = path.resolve(dir);
    let lockLost: Error | undefined;
    let opened: ChunkStore | undefined;
    const onCompromised = (error: Error) => {
      options.logger?.error({ storeDir, err: error }, 'store lock lost');
      lockLost = error;
      if (opened) opened.#lockLost = error;
    };
    const lock = options.mode === 'write' ? await lockStore(storeDir, { ...options, lock: { ...options.lock, onCompromised } }) : undefined;
    let embedder = options.embedder;
    let catalog: Catalog | undefined;
    try {
      const manifest = loadOrCreateManifest(storeDir, options);
      if (options.model) assertSameModel(manifest, options.model, storeDir);
      embedder ??= await createEmbedderFromManifest(manifest);
      assertSameEmbedder(manifest.embedder, embedder.info, storeDir);

      const readonly = options.mode === 'read';
      catalog = Catalog.open(path.join(storeDir, CATALOG_FILE), { create: !readonly, readonly });
      if (embedder instanceof HashedEmbedder) loadStatistics(catalog, embedder);
      const index = openIndex(storeDir, catalog, manifest.embedder.dimension, readonly, options.logger);
      const packets = await FsPacketStore.open(path.join(storeDir, PACKETS_DIR));
      opened = new ChunkStore({ dir: storeDir, manifest, catalog, embedder, index, packets, mode: options.mode, lock, ownsEmbedder: embedder !== options.embedder });
      opened.#lockLost = lockLost;
      return opened;
    } catch (error) {
      catalog?.close();
      if (embedder && embedder !== options.embedder) await embedder.close();
      await lock?.release();
      throw error;
    }
  }
}

/** Opens a store; shorthand for `ChunkStore.open`. */
export function openStore(dir: string, options: OpenStoreOptions): Promise<ChunkStore> {
  return ChunkStore.open(dir, options);
}

async function lockStore(storeDir: string, options: OpenStoreOptions): Promise<StoreLock> {
  if (!existsSync(storeDir)) {
    if (!options.create) throw noStoreError(storeDir);
    mkdirSync(storeDir, { recursive: true });
  }
  return acquireStoreLock(storeDir, options.purpose ?? 'kvpack', options.lock);
}

function loadOrCreateManifest(storeDir: string, options: OpenStoreOptions): StoreManifest {
  if (existsSync(manifestPath(storeDir))) {
    return readManifest(storeDir);
  }
  if (!options.create || options.mode !== 'write') {
    throw noStoreError(storeDir);
  }
  if (!options.model || !options.embedder) {
    throw new KvpackError('INVALID_ARGUMENT', `Creating the store ${storeDir} needs the model fingerprints and the embedder.`);
  }
  const leftovers = readdirSync(storeDir).filter((name) => !name.startsWith('ingest.lock'));
  if (leftovers.length > 0) {
    throw new KvpackError(
      'STORE_INVALID',
      `${storeDir} has no store.json but contains ${leftovers.slice(0, 5).join(', ')}; pass an empty or new folder as --store.`,
      { storeDir },
    );
  }
  const manifest: StoreManifest = {
    format: MANIFEST_FORMAT,
    model: { modelFingerprint: options.model.modelFingerprint, tokenizerFingerprint: options.model.tokenizerFingerprint },
    embedder: options.embedder.info,
    chunking: { ...options.create.chunking },
    summaryRatio: options.create.summaryRatio,
    summaryMethod: options.create.summaryMethod,
    createdAt: new Date().toISOString(),
  };
  writeManifest(storeDir, manifest);
  return manifest;
}

function noStoreError(storeDir: string): KvpackError {
  return new KvpackError(
    'STORE_NOT_FOUND',
    `No store at ${storeDir}: store.json is missing. Create one with \`kvpack ingest --store ${storeDir} PATH…\`.`,
    { storeDir },
  );
}

/** Builds the embedder a manifest records: the hashed settings, or the transformers model folder. */
export async function createEmbedderFromManifest(manifest: StoreManifest): Promise<Embedder> {
  const { embedder } = manifest;
  if (embedder.kind === 'hashed') {
    const config = embedder.config as { bucketBits: number; useIdf: boolean; minCharNgram: number; maxCharNgram: number; weights: HashedEmbedder['config']['weights'] };
    return new HashedEmbedder({ dimension: embedder.dimension, ...config });
  }
  const config = embedder.config as { model: string; queryPrefix?: string; documentPrefix?: string };
  return TransformersEmbedder.load(config.model, { queryPrefix: config.queryPrefix, documentPrefix: config.documentPrefix });
}

/**
 * Loads the index and reconciles it with the catalog: vectors of committed chunks that the saved
 * index lacks are added from the stored embeddings, and vectors of removed chunks are deleted. An
 * index that is missing, damaged or of another dimension is rebuilt from the catalog.
 */
function openIndex(storeDir: string, catalog: Catalog, dimension: number, readonly: boolean, logger: Logger | undefined): HnswIndex {
  const indexDir = path.join(storeDir, INDEX_DIR);
  const { index, rebuilt } = loadOrCreateIndex(indexDir, catalog, dimension, logger);

  const { added, deleted } = reconcileIndex(index, catalog);
  if (added > 0 || deleted > 0) {
    logger?.info({ storeDir, added, deleted }, 'index reconciled with the catalog');
  }

  if (!readonly && (rebuilt || added > 0 || deleted > 0)) {
    index.save(indexDir);
  }
  return index;
}

/** Loads the saved index, or creates an empty one (`rebuilt` when a saved one was unusable or the catalog has chunks). */
function loadOrCreateIndex(indexDir: string, catalog: Catalog, dimension: number, logger: Logger | undefined): { index: HnswIndex; rebuilt: boolean } {
  try {
    return { index: HnswIndex.load(indexDir, { dimension }), rebuilt: false };
  } catch (error) {
    if (!(error instanceof IndexUnusableError)) throw error;
    const fresh = !existsSync(indexDir);
    if (!fresh) logger?.warn({ indexDir, reason: error.reason }, 'index unusable, rebuilding it from the catalog');
    const index = HnswIndex.create({ dimension, initialCapacity: Math.max(1024, catalog.chunkCount()) });
    return { index, rebuilt: !fresh || catalog.chunkCount() > 0 };
  }
}

/** Adds the catalog's chunks that the index lacks and deletes labels the catalog no longer has. */
function reconcileIndex(index: HnswIndex, catalog: Catalog): { added: number; deleted: number } {
  const labels = catalog.labels();
  let added = 0;
  for (const label of labels) {
    if (index.has(label)) continue;
    const embedding = catalog.embeddingOfLabel(label);
    if (embedding) {
      index.add(label, embedding);
      added += 1;
    }
  }
  let deleted = 0;
  for (const label of index.liveLabels()) {
    if (!labels.has(label)) {
      index.delete(label);
      deleted += 1;
    }
  }
  return { added, deleted };
}

function loadStatistics(catalog: Catalog, embedder: HashedEmbedder): void {
  const generation = catalog.getMeta(STATISTICS_GENERATION_KEY)?.toString();
  const bytes = catalog.getMeta(STATISTICS_KEY);
  if (bytes && generation === String(catalog.generation())) {
    const restored = deserializeStatistics(bytes, embedder.config.bucketBits);
    if (restored) {
      embedder.statistics.documentCount = restored.documentCount;
      embedder.statistics.documentFrequencies.set(restored.documentFrequencies);
      return;
    }
  }
  rebuildStatistics(catalog, embedder);
}

function rebuildStatistics(catalog: Catalog, embedder: HashedEmbedder): void {
  const { statistics } = embedder;
  statistics.documentCount = 0;
  statistics.documentFrequencies.fill(0);
  for (const chunk of catalog.iterateChunks()) {
    statistics.addDocument(embedder.features(embeddingText(chunk.title, chunk.text)));
  }
}

/** `[documentCount: float64][frequencies: uint32 × 2^bits]`, little-endian. */
function serializeStatistics(statistics: TermStatistics): Buffer {
  const bytes = Buffer.alloc(8 + statistics.documentFrequencies.byteLength);
  bytes.writeDoubleLE(statistics.documentCount, 0);
  Buffer.from(statistics.documentFrequencies.buffer, statistics.documentFrequencies.byteOffset, statistics.documentFrequencies.byteLength).copy(bytes, 8);
  return bytes;
}

function deserializeStatistics(bytes: Buffer, bucketBits: number): TermStatistics | undefined {
  if (bytes.byteLength !== 8 + 4 * (1 << bucketBits)) return undefined;
  const frequencies = new Uint32Array(1 << bucketBits);
  new Uint8Array(frequencies.buffer).set(bytes.subarray(8));
  return new TermStatistics(bucketBits, bytes.readDoubleLE(0), frequencies);
}
