import { createHash } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import hnswlib from 'hnswlib-node';
import { KvpackError } from '../common/errors.js';
import { fsyncDirectory, writeJsonAtomic } from '../common/fs-atomic.js';

const { HierarchicalNSW } = hnswlib;
type NativeIndex = InstanceType<typeof HierarchicalNSW>;

export interface HnswIndexOptions {
  /** Vector length. */
  dimension: number;
  /** Graph degree (hnswlib `M`). Default 16. */
  m?: number;
  /** Candidate list size while building (hnswlib `efConstruction`). Default 100. */
  efConstruction?: number;
  /** Minimum candidate list size while searching (hnswlib `ef`); raised to k when k is larger. Default 64. */
  efSearch?: number;
  /** Slots allocated at creation; the index doubles when full. Default 1024. */
  initialCapacity?: number;
  /** Seed of the level generator. Default 100. */
  seed?: number;
}

/** One search hit: the label and the cosine similarity `1 - cosine distance`, in [-1, 1]. */
export interface IndexHit {
  label: number;
  similarity: number;
}

/** The file names of a persisted index inside its folder. */
export const INDEX_FILE = 'hnsw.bin';
export const INDEX_META_FILE = 'hnsw.json';
const META_FORMAT = 1;

/** The sidecar written after the index file; it lets `load` detect a damaged or mismatched index. */
interface IndexMeta {
  format: number;
  space: 'cosine';
  dimension: number;
  m: number;
  efConstruction: number;
  /** sha256 (hex) and size of hnsw.bin. */
  sha256: string;
  bytes: number;
  /** Labels of live (not deleted) vectors. */
  liveLabels: number[];
}

/** Raised by `HnswIndex.load` when the files are missing, damaged or built for another dimension. */
export class IndexUnusableError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'IndexUnusableError';
  }
}

/**
 * An approximate nearest-neighbour index (hnswlib-node, cosine space) over labelled vectors, with
 * growth, deletion and re-adding of a deleted label. Deleted vectors stay in the graph, marked,
 * until `compact` rebuilds it.
 */
export class HnswIndex {
  readonly dimension: number;
  readonly m: number;
  readonly efConstruction: number;
  readonly efSearch: number;
  #native: NativeIndex;
  readonly #live = new Set<number>();
  /** Labels in the graph but marked deleted; `add` revives them in place. */
  readonly #deleted = new Set<number>();

  private constructor(native: NativeIndex, options: Required<HnswIndexOptions>) {
    this.#native = native;
    this.dimension = options.dimension;
    this.m = options.m;
    this.efConstruction = options.efConstruction;
    this.efSearch = options.efSearch;
  }

  static create(options: HnswIndexOptions): HnswIndex {
    const resolved = resolveOptions(options);
    const native = new HierarchicalNSW('cosine', resolved.dimension);
    native.initIndex({
      maxElements: resolved.initialCapacity,
      m: resolved.m,
      efConstruction: resolved.efConstruction,
      randomSeed: resolved.seed,
    });
    return new HnswIndex(native, resolved);
  }

  /**
   * Reads an index saved by `save` in `dir`. Raises IndexUnusableError when a file is missing,
   * the checksum differs (a torn or damaged write), the dimension differs from `options.dimension`,
   * or hnswlib rejects the file.
   */
  static load(dir: string, options: HnswIndexOptions): HnswIndex {
    const meta = readMeta(dir);
    const file = path.join(dir, INDEX_FILE);
    if (meta.space !== 'cosine' || meta.dimension !== options.dimension) {
      throw new IndexUnusableError(`index built for ${meta.space} space with ${meta.dimension} dimensions, expected cosine with ${options.dimension}`);
    }
    if (!existsSync(file)) {
      throw new IndexUnusableError(`${file} is missing`);
    }
    const bytes = readFileSync(file);
    if (bytes.byteLength !== meta.bytes || sha256(bytes) !== meta.sha256) {
      throw new IndexUnusableError(`${file} does not match the checksum in ${INDEX_META_FILE} (damaged or partly written)`);
    }
    const native = new HierarchicalNSW('cosine', options.dimension);
    try {
      native.readIndexSync(file);
    } catch (error) {
      throw new IndexUnusableError(`hnswlib failed to read ${file}: ${(error as Error).message}`);
    }
    const index = new HnswIndex(native, resolveOptions({ ...options, m: meta.m, efConstruction: meta.efConstruction }));
    const present = new Set(native.getIdsList());
    for (const label of meta.liveLabels) {
      if (!present.has(label)) throw new IndexUnusableError(`${INDEX_META_FILE} lists label ${label}, which ${file} lacks`);
      index.#live.add(label);
    }
    for (const label of present) {
      if (!index.#live.has(label)) index.#deleted.add(label);
    }
    return index;
  }

  /** Live vectors. */
  get size(): number {
    return this.#live.size;
  }

  /** Slots allocated; deleted vectors take slots until `compact`. */
  get capacity(): number {
    return this.#native.getMaxElements();
  }

  get deletedCount(): number {
    return this.#deleted.size;
  }

  has(label: number): boolean {
    return this.#live.has(label);
  }

  liveLabels(): number[] {
    return [...this.#live];
  }

  /** Adds a vector `[dimension]` under `label`, replacing a live one and reviving a deleted one. */
  add(label: number, vector: Float32Array): void {
    if (!Number.isSafeInteger(label) || label < 0) {
      throw new KvpackError('INVALID_ARGUMENT', `Invalid index label ${label}: expected a non-negative integer.`);
    }
    this.checkVector(vector, `the vector of label ${label}`);
    const known = this.#live.has(label) || this.#deleted.has(label);
    if (!known && this.#native.getCurrentCount() >= this.#native.getMaxElements()) {
      this.#native.resizeIndex(Math.max(16, this.#native.getMaxElements() * 2));
    }
    this.#native.addPoint(Array.from(vector), label);
    this.#deleted.delete(label);
    this.#live.add(label);
  }

  /** Marks a label deleted; returns false when it was not live. */
  delete(label: number): boolean {
    if (!this.#live.has(label)) return false;
    this.#native.markDelete(label);
    this.#live.delete(label);
    this.#deleted.add(label);
    return true;
  }

  /** Returns the min(k, size) live vectors nearest to `query` `[dimension]`, most similar first. */
  search(query: Float32Array, k: number): IndexHit[] {
    if (!Number.isInteger(k) || k < 1) {
      throw new KvpackError('INVALID_ARGUMENT', `Invalid k ${k}: expected a positive integer.`);
    }
    this.checkVector(query, 'the query vector');
    const count = Math.min(k, this.#live.size);
    if (count === 0) return [];
    this.#native.setEf(Math.max(this.efSearch, count));
    const result = this.#native.searchKnn(Array.from(query), count);
    return result.neighbors.map((label, i) => ({ label, similarity: 1 - result.distances[i] }));
  }

  /** Rebuilds the graph from the live vectors, dropping deleted ones and their slots. */
  compact(): void {
    const labels = this.liveLabels();
    const native = new HierarchicalNSW('cosine', this.dimension);
    native.initIndex({ maxElements: Math.max(16, labels.length * 2), m: this.m, efConstruction: this.efConstruction, randomSeed: 100 });
    for (const label of labels) native.addPoint(this.#native.getPoint(label), label);
    this.#native = native;
    this.#deleted.clear();
  }

  /**
   * Writes hnsw.bin (to a temporary name, flushed, then renamed) and then hnsw.json with its
   * checksum. A crash between the two renames leaves a checksum mismatch that `load` reports.
   */
  save(dir: string): void {
    mkdirSync(dir, { recursive: true });
    removeLeftoverTemporaryFiles(dir);
    const file = path.join(dir, INDEX_FILE);
    const temp = `${file}.tmp-${process.pid}`;
    try {
      this.#native.writeIndexSync(temp);
      flushFile(temp);
      const bytes = readFileSync(temp);
      renameSync(temp, file);
      fsyncDirectory(dir);
      const meta: IndexMeta = {
        format: META_FORMAT,
        space: 'cosine',
        dimension: this.dimension,
        m: this.m,
        efConstruction: this.efConstruction,
        sha256: sha256(bytes),
        bytes: bytes.byteLength,
        liveLabels: this.liveLabels().sort((a, b) => a - b),
      };
      writeJsonAtomic(path.join(dir, INDEX_META_FILE), meta);
    } finally {
      rmSync(temp, { force: true });
    }
  }

  private checkVector(vector: Float32Array, what: string): void {
    if (vector.length !== this.dimension) {
      throw new KvpackError('INVALID_ARGUMENT', `Invalid ${what}: ${vector.length} dimensions, the index has ${this.dimension}.`);
    }
  }
}

function resolveOptions(options: HnswIndexOptions): Required<HnswIndexOptions> {
  const resolved = { m: 16, efConstruction: 100, efSearch: 64, initialCapacity: 1024, seed: 100, ...options };
  if (!Number.isInteger(resolved.dimension) || resolved.dimension < 1) {
    throw new KvpackError('INVALID_ARGUMENT', `Invalid index dimension ${resolved.dimension}: expected a positive integer.`);
  }
  return resolved;
}

function readMeta(dir: string): IndexMeta {
  const file = path.join(dir, INDEX_META_FILE);
  if (!existsSync(file)) {
    throw new IndexUnusableError(`${file} is missing`);
  }
  let meta: IndexMeta;
  try {
    meta = JSON.parse(readFileSync(file, 'utf8')) as IndexMeta;
  } catch (error) {
    throw new IndexUnusableError(`${file} is not valid JSON: ${(error as Error).message}`);
  }
  if (meta.format !== META_FORMAT || !Array.isArray(meta.liveLabels) || typeof meta.sha256 !== 'string') {
    throw new IndexUnusableError(`${file} is not an index description of format ${META_FORMAT}`);
  }
  return meta;
}

/** Deletes temporary files of saves that a killed process left; only the store's lock holder saves. */
function removeLeftoverTemporaryFiles(dir: string): void {
  for (const name of readdirSync(dir)) {
    if (name.startsWith(`${INDEX_FILE}.tmp-`) || name.startsWith(`${INDEX_META_FILE}.tmp-`)) {
      rmSync(path.join(dir, name), { force: true });
    }
  }
}

function flushFile(file: string): void {
  const fd = openSync(file, 'r+');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
