import Database from 'better-sqlite3';
import { KvpackError } from '../common/errors.js';

/** A document as the catalog stores it. */
export interface DocumentRecord {
  /** Absolute source path, or `path#line` (`path#line:index`) for a JSON Lines record. */
  id: string;
  sourcePath: string;
  title: string;
  /** sha256 (hex) of the title and normalized text. */
  contentHash: string;
  charCount: number;
  chunkCount: number;
  /** ISO 8601 time of the commit. */
  ingestedAt: string;
}

/** An occurrence of a chunk in a document, with its UTF-16 code unit span `[start, end)` in the normalized text. */
export interface ChunkSource {
  documentId: string;
  /** Position of the chunk in the document, from 0. */
  ordinal: number;
  start: number;
  end: number;
}

/** A chunk as the catalog stores it. */
export interface ChunkRecord {
  /** sha256 (hex) of the chunk text with the model and tokenizer fingerprints. */
  id: string;
  /** Index label of the chunk's vector. A label is never reused for another chunk. */
  label: number;
  text: string;
  /** Token ids `[tokens]` of `text`, without BOS. */
  tokens: Int32Array;
  /** Title of the document that first produced the chunk. */
  title: string;
  summaryText: string;
  /** Token ids `[summary tokens]` of `summaryText`. */
  summaryTokens: Int32Array;
  /** Unit vector `[dimension]`. */
  embedding: Float32Array;
}

/** A chunk to insert when its id is not in the catalog yet. */
export type NewChunk = Omit<ChunkRecord, 'label'>;

/** A chunk removed from the catalog because no document links to it any more. */
export interface RemovedChunk {
  id: string;
  label: number;
  text: string;
  title: string;
}

/** The chunks a write transaction added and removed, for updating the index, term statistics and packets after it. */
export interface CatalogChange {
  added: { id: string; label: number; embedding: Float32Array; text: string; title: string }[];
  removed: RemovedChunk[];
}

export interface CommitDocument {
  document: Omit<DocumentRecord, 'chunkCount' | 'ingestedAt'>;
  /** The document's chunks in order, with their spans. */
  chunks: { chunk: NewChunk; start: number; end: number }[];
}

const SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
  id TEXT PRIMARY KEY,
  source_path TEXT NOT NULL,
  title TEXT NOT NULL,
  content_hash TEXT NOT NULL,
  char_count INTEGER NOT NULL,
  chunk_count INTEGER NOT NULL,
  ingested_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_by_source ON documents (source_path);
CREATE TABLE IF NOT EXISTS chunks (
  id TEXT PRIMARY KEY,
  label INTEGER NOT NULL UNIQUE,
  text TEXT NOT NULL,
  tokens BLOB NOT NULL,
  title TEXT NOT NULL,
  summary_text TEXT NOT NULL,
  summary_tokens BLOB NOT NULL,
  embedding BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS document_chunks (
  document_id TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
  ordinal INTEGER NOT NULL,
  chunk_id TEXT NOT NULL REFERENCES chunks (id),
  char_start INTEGER NOT NULL,
  char_end INTEGER NOT NULL,
  PRIMARY KEY (document_id, ordinal)
);
CREATE INDEX IF NOT EXISTS document_chunks_by_chunk ON document_chunks (chunk_id);
`;

interface ChunkRow {
  id: string;
  label: number;
  text: string;
  tokens: Buffer;
  title: string;
  summary_text: string;
  summary_tokens: Buffer;
  embedding: Buffer;
}

interface DocumentRow {
  id: string;
  source_path: string;
  title: string;
  content_hash: string;
  char_count: number;
  chunk_count: number;
  ingested_at: string;
}

/**
 * The store's SQLite catalog (better-sqlite3, WAL journal): documents, chunks and the links
 * between them. A document and its links are written in one transaction, so a reader gets a
 * document with all of its chunks or not at all. WAL lets readers (the query server) read while
 * one ingestion writes. With `synchronous = NORMAL` every committed transaction survives a killed
 * process, but an operating-system crash may lose the last ones.
 */
export class Catalog {
  readonly file: string;
  readonly readonly: boolean;
  readonly #db: Database.Database;
  readonly #statements = new Map<string, Database.Statement>();

  private constructor(file: string, db: Database.Database, readonly: boolean) {
    this.file = file;
    this.#db = db;
    this.readonly = readonly;
  }

  /** Opens (and with `create`, creates) the catalog file. */
  static open(file: string, options: { create: boolean; readonly?: boolean }): Catalog {
    const readonly = options.readonly ?? false;
    let db: Database.Database;
    try {
      db = new Database(file, { readonly, fileMustExist: !options.create });
    } catch (error) {
      throw new KvpackError('STORE_INVALID', `Failed to open the catalog ${file}: ${(error as Error).message}.`, { file });
    }
    try {
      db.pragma('busy_timeout = 10000');
      if (!readonly) {
        db.pragma('journal_mode = WAL');
        db.pragma('synchronous = NORMAL');
        db.exec(SCHEMA);
      }
      db.pragma('foreign_keys = ON');
      const catalog = new Catalog(file, db, readonly);
      catalog.checkSchemaVersion(options.create && !readonly);
      return catalog;
    } catch (error) {
      db.close();
      if (error instanceof KvpackError) throw error;
      throw new KvpackError('STORE_INVALID', `The catalog ${file} is not a kvpack catalog: ${(error as Error).message}.`, { file });
    }
  }

  close(): void {
    this.#db.close();
  }

  private checkSchemaVersion(initialize: boolean): void {
    const stored = this.getMeta('schema_version');
    if (stored === undefined && initialize) {
      this.setMeta('schema_version', String(SCHEMA_VERSION));
      return;
    }
    if (stored === undefined || Number(stored.toString()) !== SCHEMA_VERSION) {
      throw new KvpackError(
        'STORE_INVALID',
        `The catalog ${this.file} has schema version ${stored?.toString() ?? 'none'}; this kvpack reads version ${SCHEMA_VERSION}.`,
      );
    }
  }

  getMeta(key: string): Buffer | undefined {
    const row = this.statement('SELECT value FROM meta WHERE key = ?').get(key) as { value: Buffer | string } | undefined;
    if (row === undefined) return undefined;
    return typeof row.value === 'string' ? Buffer.from(row.value) : row.value;
  }

  setMeta(key: string, value: Buffer | string): void {
    const bytes = typeof value === 'string' ? Buffer.from(value) : value;
    this.statement('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value').run(key, bytes);
  }

  /** Returns the counter that every write transaction increments, so derived state can tell if it is current. */
  generation(): number {
    return Number(this.getMeta('generation')?.toString() ?? '0');
  }

  getDocument(id: string): DocumentRecord | undefined {
    const row = this.statement('SELECT * FROM documents WHERE id = ?').get(id) as DocumentRow | undefined;
    return row && toDocument(row);
  }

  listDocuments(): DocumentRecord[] {
    return (this.statement('SELECT * FROM documents ORDER BY id').all() as DocumentRow[]).map(toDocument);
  }

  documentIdsBySource(sourcePath: string): string[] {
    return (this.statement('SELECT id FROM documents WHERE source_path = ?').all(sourcePath) as { id: string }[]).map((row) => row.id);
  }

  /** Distinct source paths of all documents. */
  sourcePaths(): string[] {
    return (this.statement('SELECT DISTINCT source_path FROM documents ORDER BY source_path').all() as { source_path: string }[]).map(
      (row) => row.source_path,
    );
  }

  hasChunk(id: string): boolean {
    return this.statement('SELECT 1 FROM chunks WHERE id = ?').get(id) !== undefined;
  }

  getChunk(id: string): ChunkRecord | undefined {
    const row = this.statement('SELECT * FROM chunks WHERE id = ?').get(id) as ChunkRow | undefined;
    return row && toChunk(row);
  }

  getChunkByLabel(label: number): ChunkRecord | undefined {
    const row = this.statement('SELECT * FROM chunks WHERE label = ?').get(label) as ChunkRow | undefined;
    return row && toChunk(row);
  }

  /** Documents a chunk occurs in, with its span in each. */
  chunkSources(chunkId: string): ChunkSource[] {
    const rows = this.#db
      .prepare('SELECT document_id, ordinal, char_start, char_end FROM document_chunks WHERE chunk_id = ? ORDER BY document_id, ordinal')
      .all(chunkId) as { document_id: string; ordinal: number; char_start: number; char_end: number }[];
    return rows.map((row) => ({ documentId: row.document_id, ordinal: row.ordinal, start: row.char_start, end: row.char_end }));
  }

  /** Chunk ids of a document in order. */
  documentChunkIds(documentId: string): string[] {
    const rows = this.statement('SELECT chunk_id FROM document_chunks WHERE document_id = ? ORDER BY ordinal').all(documentId) as {
      chunk_id: string;
    }[];
    return rows.map((row) => row.chunk_id);
  }

  chunkCount(): number {
    return (this.statement('SELECT COUNT(*) AS count FROM chunks').get() as { count: number }).count;
  }

  /** Every chunk's label, id, text, title and embedding, for rebuilding the index and statistics. */
  *iterateChunks(): IterableIterator<{ id: string; label: number; text: string; title: string; embedding: Float32Array }> {
    const statement = this.statement('SELECT id, label, text, title, embedding FROM chunks ORDER BY label');
    for (const row of statement.iterate() as IterableIterator<Pick<ChunkRow, 'id' | 'label' | 'text' | 'title' | 'embedding'>>) {
      yield { id: row.id, label: row.label, text: row.text, title: row.title, embedding: toFloat32(row.embedding) };
    }
  }

  labels(): Set<number> {
    return new Set((this.statement('SELECT label FROM chunks').pluck().all() as number[]));
  }

  embeddingOfLabel(label: number): Float32Array | undefined {
    const bytes = this.statement('SELECT embedding FROM chunks WHERE label = ?').pluck().get(label) as Buffer | undefined;
    return bytes && toFloat32(bytes);
  }

  /**
   * Replaces a document in one transaction. Its old links are deleted and chunks not yet in the
   * catalog are inserted with fresh labels. Then the document row and its new links are written,
   * and chunks that no document links to any more are deleted.
   */
  commitDocument(input: CommitDocument, ingestedAt: string): CatalogChange {
    return this.transaction(() => {
      const previous = this.documentChunkIds(input.document.id);
      this.statement('DELETE FROM documents WHERE id = ?').run(input.document.id);
      const added: CatalogChange['added'] = [];
      for (const { chunk } of input.chunks) {
        if (this.hasChunk(chunk.id)) continue;
        const label = this.nextLabel();
        this.#db
          .prepare(
            'INSERT INTO chunks (id, label, text, tokens, title, summary_text, summary_tokens, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
          )
          .run(chunk.id, label, chunk.text, bytesOf(chunk.tokens), chunk.title, chunk.summaryText, bytesOf(chunk.summaryTokens), bytesOf(chunk.embedding));
        added.push({ id: chunk.id, label, embedding: chunk.embedding, text: chunk.text, title: chunk.title });
      }
      const { document } = input;
      this.#db
        .prepare('INSERT INTO documents (id, source_path, title, content_hash, char_count, chunk_count, ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?)')
        .run(document.id, document.sourcePath, document.title, document.contentHash, document.charCount, input.chunks.length, ingestedAt);
      const link = this.statement('INSERT INTO document_chunks (document_id, ordinal, chunk_id, char_start, char_end) VALUES (?, ?, ?, ?, ?)');
      input.chunks.forEach(({ chunk, start, end }, ordinal) => link.run(document.id, ordinal, chunk.id, start, end));
      return { added, removed: this.deleteOrphans(previous) };
    });
  }

  /** Deletes documents and the chunks only they linked to, in one transaction. Unknown ids are ignored. */
  deleteDocuments(ids: readonly string[]): CatalogChange {
    return this.transaction(() => {
      const candidates: string[] = [];
      for (const id of ids) {
        candidates.push(...this.documentChunkIds(id));
        this.statement('DELETE FROM documents WHERE id = ?').run(id);
      }
      return { added: [], removed: this.deleteOrphans(candidates) };
    });
  }

  private deleteOrphans(candidateIds: readonly string[]): RemovedChunk[] {
    const removed: RemovedChunk[] = [];
    const linked = this.statement('SELECT 1 FROM document_chunks WHERE chunk_id = ? LIMIT 1');
    for (const id of new Set(candidateIds)) {
      if (linked.get(id) !== undefined) continue;
      const row = this.statement('SELECT id, label, text, title FROM chunks WHERE id = ?').get(id) as RemovedChunk | undefined;
      if (!row) continue;
      this.statement('DELETE FROM chunks WHERE id = ?').run(id);
      removed.push(row);
    }
    return removed;
  }

  private nextLabel(): number {
    const next = Number(this.getMeta('next_label')?.toString() ?? '0');
    this.setMeta('next_label', String(next + 1));
    return next;
  }

  /** Returns the prepared statement of `sql`, compiled once per catalog. */
  private statement(sql: string): Database.Statement {
    let prepared = this.#statements.get(sql);
    if (!prepared) {
      prepared = this.#db.prepare(sql);
      this.#statements.set(sql, prepared);
    }
    return prepared;
  }

  private transaction<T>(work: () => T): T {
    if (this.readonly) {
      throw new KvpackError('INVALID_ARGUMENT', `The catalog ${this.file} is open read-only; open the store for writing to change it.`);
    }
    return this.#db.transaction(() => {
      const result = work();
      this.setMeta('generation', String(this.generation() + 1));
      return result;
    }).immediate();
  }
}

function toDocument(row: DocumentRow): DocumentRecord {
  return {
    id: row.id,
    sourcePath: row.source_path,
    title: row.title,
    contentHash: row.content_hash,
    charCount: row.char_count,
    chunkCount: row.chunk_count,
    ingestedAt: row.ingested_at,
  };
}

function toChunk(row: ChunkRow): ChunkRecord {
  return {
    id: row.id,
    label: row.label,
    text: row.text,
    tokens: toInt32(row.tokens),
    title: row.title,
    summaryText: row.summary_text,
    summaryTokens: toInt32(row.summary_tokens),
    embedding: toFloat32(row.embedding),
  };
}

function bytesOf(array: Int32Array | Float32Array): Buffer {
  return Buffer.from(array.buffer, array.byteOffset, array.byteLength);
}

/** Copies a blob into an aligned typed array (SQLite buffers need not be 4-byte aligned). */
function toInt32(bytes: Buffer): Int32Array {
  const out = new Int32Array(bytes.byteLength / 4);
  new Uint8Array(out.buffer).set(bytes);
  return out;
}

function toFloat32(bytes: Buffer): Float32Array {
  const out = new Float32Array(bytes.byteLength / 4);
  new Uint8Array(out.buffer).set(bytes);
  return out;
}
