import { KvpackError } from '../common/errors.js';

/** The description of an embedder that a store records and compares. */
export interface EmbedderInfo {
  /** `hashed` (no model file) or `transformers` (a local sentence-embedding model folder). */
  kind: 'hashed' | 'transformers';
  /** Length of every vector. */
  dimension: number;
  /** Settings that change the vectors; stores compare them through `fingerprint`. */
  config: Record<string, unknown>;
  /** sha256 (hex) over the kind, dimension, config and model files; equal fingerprints give equal vectors. */
  fingerprint: string;
}

/**
 * Turns text into L2-normalized vectors `[dimension]` for cosine search. Documents and queries
 * may be embedded differently (asymmetric models), so they have separate methods.
 */
export interface Embedder {
  readonly info: EmbedderInfo;
  embedDocuments(texts: readonly string[]): Promise<Float32Array[]>;
  embedQuery(text: string): Promise<Float32Array>;
  /** Frees native resources (ONNX sessions); the embedder cannot run afterwards. */
  close(): Promise<void>;
}

/** An `--embedder` value: `hashed`, or `transformers:DIR` for a model folder. */
export type EmbedderSpec = { kind: 'hashed' } | { kind: 'transformers'; modelDir: string };

export function parseEmbedderSpec(value: string): EmbedderSpec {
  if (value === 'hashed') {
    return { kind: 'hashed' };
  }
  if (value.startsWith('transformers:') && value.length > 'transformers:'.length) {
    return { kind: 'transformers', modelDir: value.slice('transformers:'.length) };
  }
  throw new KvpackError(
    'INVALID_ARGUMENT',
    `Invalid embedder ${JSON.stringify(value)}: expected "hashed" or "transformers:DIR" with DIR a sentence-embedding model folder.`,
  );
}

/** Scales a vector in place to unit length; a zero vector stays zero. */
export function normalizeL2(vector: Float32Array): Float32Array {
  let sum = 0;
  for (let i = 0; i < vector.length; i++) sum += vector[i] * vector[i];
  if (sum > 0) {
    const scale = 1 / Math.sqrt(sum);
    for (let i = 0; i < vector.length; i++) vector[i] *= scale;
  }
  return vector;
}

/** Raises STORE_MISMATCH when a store built with `stored` is opened with `given`. */
export function assertSameEmbedder(stored: EmbedderInfo, given: EmbedderInfo, storeDir: string): void {
  if (stored.fingerprint === given.fingerprint) {
    return;
  }
  throw new KvpackError(
    'STORE_MISMATCH',
    `The store ${storeDir} was built with the ${describeEmbedder(stored)} embedder, not the ${describeEmbedder(given)} embedder given; ` +
      'open it with the embedder it was built with, or ingest into a new store.',
    { stored, given },
  );
}

export function describeEmbedder(info: EmbedderInfo): string {
  const model = typeof info.config.model === 'string' ? ` ${info.config.model}` : '';
  return `${info.kind}${model} (${info.dimension} dimensions, fingerprint ${info.fingerprint.slice(0, 12)})`;
}
