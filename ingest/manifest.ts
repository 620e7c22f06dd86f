import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { KvpackError } from '../common/errors.js';
import { writeJsonAtomic } from '../common/fs-atomic.js';
import type { EmbedderInfo } from '../retrieval/embedder.js';
import type { ChunkingOptions } from './chunker.js';
import { DEFAULT_SUMMARY_METHOD, type SummaryMethod } from './summarize.js';

export const MANIFEST_FILE = 'store.json';
export const MANIFEST_FORMAT = 1;

/** Fingerprints of the model whose tokenizer cut the chunks and whose packets the store contains. */
export interface ModelIdentity {
  modelFingerprint: string;
  tokenizerFingerprint: string;
}

/** The manifest `<store>/store.json`: the settings a store was built with, written once at creation. */
export interface StoreManifest {
  format: number;
  model: ModelIdentity;
  embedder: EmbedderInfo;
  chunking: ChunkingOptions;
  /** Summary length as a share of the chunk's tokens. */
  summaryRatio: number;
  /** How summaries pick sentences; absent in stores created before it was recorded, which used `lead`. */
  summaryMethod?: SummaryMethod;
  /** ISO 8601 creation time. */
  createdAt: string;
}

export function manifestPath(storeDir: string): string {
  return path.join(storeDir, MANIFEST_FILE);
}

export function readManifest(storeDir: string): StoreManifest {
  const file = manifestPath(storeDir);
  if (!existsSync(file)) {
    throw new KvpackError(
      'STORE_NOT_FOUND',
      `No store at ${storeDir}: ${MANIFEST_FILE} is missing. Create one with \`kvpack ingest --store ${storeDir} PATH…\`.`,
      { storeDir },
    );
  }
  let manifest: StoreManifest;
  try {
    manifest = JSON.parse(readFileSync(file, 'utf8')) as StoreManifest;
  } catch (error) {
    throw new KvpackError('STORE_INVALID', `${file} is not valid JSON: ${(error as Error).message}.`, { file });
  }
  if (manifest.format !== MANIFEST_FORMAT || !manifest.model || !manifest.embedder || !manifest.chunking) {
    throw new KvpackError(
      'STORE_INVALID',
      `${file} is not a kvpack store manifest of format ${MANIFEST_FORMAT} (found format ${String(manifest.format)}).`,
      { file },
    );
  }
  return manifest;
}

/** The summary method a store records, with the default for stores that predate the field. */
export function summaryMethodOf(manifest: StoreManifest): SummaryMethod {
  return manifest.summaryMethod ?? DEFAULT_SUMMARY_METHOD;
}

export function writeManifest(storeDir: string, manifest: StoreManifest): void {
  writeJsonAtomic(manifestPath(storeDir), manifest);
}

/** Raises STORE_MISMATCH when the store's chunks were cut or packets built by another model or tokenizer. */
export function assertSameModel(manifest: StoreManifest, model: ModelIdentity, storeDir: string): void {
  const { modelFingerprint, tokenizerFingerprint } = manifest.model;
  if (modelFingerprint === model.modelFingerprint && tokenizerFingerprint === model.tokenizerFingerprint) {
    return;
  }
  throw new KvpackError(
    'STORE_MISMATCH',
    `The store ${storeDir} was built with model ${modelFingerprint.slice(0, 12)} and tokenizer ${tokenizerFingerprint.slice(0, 12)}, ` +
      `not model ${model.modelFingerprint.slice(0, 12)} and tokenizer ${model.tokenizerFingerprint.slice(0, 12)}; ` +
      'pass the model folder the store was built with, or ingest into a new store.',
    { stored: manifest.model, given: model },
  );
}
