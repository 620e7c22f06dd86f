import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import type { Catalog } from './catalog.js';
import { chunkText, type ChunkingOptions, type TokenEncoder } from './chunker.js';
import { loadSourceFile, type IngestWarning, type JsonlFields, type LoadedDocument } from './loaders.js';
import type { ModelIdentity } from './manifest.js';
import type { SourceFile } from './sources.js';

/** A chunk of a document to ingest, identified by its content. */
export interface PlannedChunk {
  /** See `chunkId`. */
  id: string;
  text: string;
  /** Span in the document text, UTF-16 code units `[start, end)`. */
  start: number;
  end: number;
  /** `[tokens]` token ids, without BOS. */
  tokens: Int32Array;
}

/** A new or changed document with its chunks. */
export interface PlannedDocument {
  document: LoadedDocument;
  chunks: PlannedChunk[];
  /** True when the catalog contains an older version of the document. */
  replaces: boolean;
}

/** The work of one ingestion: documents to commit and documents to delete. */
export interface IngestPlan {
  /** New and changed documents, in file order. */
  documents: PlannedDocument[];
  /** Documents whose content is already stored. */
  unchanged: number;
  /** Stored documents to delete: records gone from a re-read file, files that became empty, and with `prune` files gone from disk. */
  removals: string[];
  warnings: IngestWarning[];
}

export interface PlanOptions {
  catalog: Catalog;
  tokenizer: TokenEncoder;
  model: ModelIdentity;
  chunking: ChunkingOptions;
  jsonl: JsonlFields;
  prune: boolean;
}

/**
 * Computes the id of a chunk: sha256 (hex) of its text and the model and tokenizer fingerprints, so
 * the same text cut by the same tokenizer for the same model is stored once, whatever file it is in.
 */
export function chunkId(text: string, model: ModelIdentity): string {
  return createHash('sha256').update(text).update('\0').update(model.modelFingerprint).update('\0').update(model.tokenizerFingerprint).digest('hex');
}

/**
 * Reads, normalizes and chunks the files, and compares them with the catalog. Yields to the event
 * loop between documents so that timers (the lock refresh, progress) keep running.
 */
export async function planIngest(files: readonly SourceFile[], options: PlanOptions): Promise<IngestPlan> {
  const plan: IngestPlan = { documents: [], unchanged: 0, removals: [], warnings: [] };
  for (const file of files) {
    await planSourceFile(file, options, plan);
  }
  if (options.prune) {
    plan.removals.push(...documentsOfVanishedFiles(options.catalog));
  }
  plan.removals = [...new Set(plan.removals)];
  return plan;
}

async function planSourceFile(file: SourceFile, options: PlanOptions, plan: IngestPlan): Promise<void> {
  const { catalog } = options;
  const loaded = loadSourceFile(file, options.jsonl);
  plan.warnings.push(...loaded.warnings);
  if (loaded.warnings.some((warning) => warning.kind === 'read-failed')) {
    return;
  }
  const produced = new Set<string>();
  for (const document of loaded.documents) {
    produced.add(document.id);
    const planned = await planDocument(document, options);
    if (planned) plan.documents.push(planned);
    else plan.unchanged += 1;
  }
  // A re-read file replaces everything it produced before: records it no longer has go.
  for (const id of catalog.documentIdsBySource(file.path)) {
    if (!produced.has(id)) plan.removals.push(id);
  }
}

/**
 * Chunks a loaded document unless the catalog already holds the same content; returns undefined
 * for an unchanged document. Yields to the event loop first, so a long batch keeps timers running.
 */
export async function planDocument(document: LoadedDocument, options: Omit<PlanOptions, 'jsonl' | 'prune'>): Promise<PlannedDocument | undefined> {
  const stored = options.catalog.getDocument(document.id);
  if (stored && stored.contentHash === document.contentHash) {
    return undefined;
  }
  await yieldToEventLoop();
  const chunks = chunkText(document.text, options.tokenizer, options.chunking).map((chunk) => ({
    id: chunkId(chunk.text, options.model),
    text: chunk.text,
    start: chunk.start,
    end: chunk.end,
    tokens: chunk.tokens,
  }));
  return { document, chunks, replaces: stored !== undefined };
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function documentsOfVanishedFiles(catalog: Catalog): string[] {
  const gone: string[] = [];
  for (const sourcePath of catalog.sourcePaths()) {
    if (!existsSync(sourcePath)) gone.push(...catalog.documentIdsBySource(sourcePath));
  }
  return gone;
}
