import { KvpackError } from '../common/errors.js';
import { concatFloat32 } from '../common/typed-arrays.js';
import type { InferenceEngine } from '../inference/engine.js';
import type { KvCache, KvLayout } from '../inference/kv-cache.js';
import type { AdapterVectors } from './adapter-vectors.js';
import { rerotateKeys } from './rerotate.js';

/** The cache of one chunk prefilled alone from position 0, with or without an adapter. */
export interface ChunkPrefill {
  /** Keys rotated as if the first entry sat at position 0. */
  kv: KvCache;
  /** Adapter entries before the chunk's tokens in `kv` (reference variant: the header). */
  prefixLength: number;
  /** Adapter entries after the chunk's tokens in `kv` (reference variant: the trailer). */
  suffixLength: number;
  /** `[tokens, vocab]`: row j holds the logits after chunk token j, for surprisal scores; empty unless requested. */
  logits: Float32Array;
}

export interface PrefillOptions {
  /** Return the logits of every chunk token (costs the output head at every position). Default false. */
  logits?: boolean;
}

/**
 * Prefills a chunk alone, as a packet stores it:
 * - no adapter (naive): the chunk's tokens at positions 0..n-1;
 * - reference: `[header][chunk][trailer]` from position 0, every entry kept;
 * - conditioned: `[header][chunk]` from position 0, then the header entries are dropped and the
 *   chunk's keys rotated back by the header length, so they sit at positions 0..n-1;
 * - conditioned-kv: the chunk at positions P..P+n-1 after the adapter's learned P-entry header
 *   cache, then the header entries are dropped and the chunk's keys rotated back by P.
 */
export async function prefillChunk(
  engine: InferenceEngine,
  tokens: Int32Array,
  adapter?: AdapterVectors,
  options: PrefillOptions = {},
): Promise<ChunkPrefill> {
  if (tokens.length === 0) {
    throw new KvpackError('INVALID_ARGUMENT', 'A packet needs at least one token; the chunk encodes to none.');
  }
  const selection = options.logits ? 'all' : 'none';
  if (!adapter) {
    const result = await engine.forward({ tokens, positions: sequence(tokens.length), logits: selection });
    return { kv: result.present, prefixLength: 0, suffixLength: 0, logits: result.logits };
  }
  if (adapter.variant === 'conditioned-kv') {
    return prefillAfterHeaderKv(engine, tokens, adapter, selection);
  }
  checkAdapterWidth(engine, adapter);
  const tokenEmbeddings = await engine.embedTokens(tokens);
  const trailer = adapter.variant === 'reference' ? adapter.trailer : new Float32Array(0);
  const embeddings = concatFloat32([adapter.header, tokenEmbeddings, trailer]);
  const total = embeddings.length / engine.arch.hiddenSize;
  const result = await engine.forward({ embeddings, positions: sequence(total), logits: selection });
  const vocab = engine.arch.vocabSize;
  const header = adapter.headerLength;
  const logits = options.logits ? result.logits.slice(header * vocab, (header + tokens.length) * vocab) : result.logits;
  if (adapter.variant === 'reference') {
    return { kv: result.present, prefixLength: header, suffixLength: adapter.trailerLength, logits };
  }
  const chunkOnly = result.present.slice(header, header + tokens.length);
  return { kv: rerotateKeys(chunkOnly, engine.arch, -header), prefixLength: 0, suffixLength: 0, logits };
}

/** Prefills the chunk after the adapter's learned header cache, then drops the header entries (the conditioned-kv path). */
async function prefillAfterHeaderKv(
  engine: InferenceEngine,
  tokens: Int32Array,
  adapter: AdapterVectors,
  selection: 'all' | 'none',
): Promise<ChunkPrefill> {
  const headerKv = requireFittingHeaderKv(engine, adapter);
  const header = headerKv.length;
  const result = await engine.forward({ tokens, positions: sequence(tokens.length, header), past: headerKv, logits: selection });
  const chunkOnly = result.present.slice(header, header + tokens.length);
  return { kv: rerotateKeys(chunkOnly, engine.arch, -header), prefixLength: 0, suffixLength: 0, logits: result.logits };
}

function requireFittingHeaderKv(engine: InferenceEngine, adapter: AdapterVectors): KvCache {
  const headerKv = adapter.headerKv;
  if (!headerKv) {
    throw new KvpackError(
      'INVALID_ARGUMENT',
      `Adapter ${adapter.id} is conditioned-kv but has no header cache; build it with makeKvAdapterVectors or load it with loadAdapter.`,
    );
  }
  if (headerKv.length !== adapter.headerLength) {
    throw new KvpackError(
      'INVALID_ARGUMENT',
      `Adapter ${adapter.id} records headerLength ${adapter.headerLength} but its header cache contains ${headerKv.length} entries per layer; build it with makeKvAdapterVectors.`,
    );
  }
  const model = engine.layout;
  if (!sameLayout(headerKv.layout, model)) {
    const shape = (layout: KvLayout) => `[${layout.numLayers}, ${layout.numKvHeads}, ${headerKv.length}, ${layout.headDim}]`;
    throw new KvpackError(
      'ADAPTER_MISMATCH',
      `Adapter ${adapter.id} does not fit this model: its header cache has shape ${shape(headerKv.layout)} as [layers, kv_heads, P, head_dim], ` +
        `but the model's KV layout needs ${shape(model)}. Train or import a conditioned-kv adapter for this model.`,
      { adapterLayout: headerKv.layout, modelLayout: model },
    );
  }
  return headerKv;
}

function sameLayout(a: KvLayout, b: KvLayout): boolean {
  return a.numLayers === b.numLayers && a.numKvHeads === b.numKvHeads && a.headDim === b.headDim;
}

/**
 * Counts the entries a packet prefill runs through the model for `tokenCount` chunk tokens: the
 * tokens plus the header and trailer vectors of a reference or conditioned adapter. A conditioned-kv
 * header is a learned cache that the chunk attends to without computing it, so it adds none.
 */
export function prefillComputedEntries(tokenCount: number, adapter?: AdapterVectors): number {
  if (!adapter || adapter.variant === 'conditioned-kv') return tokenCount;
  const trailer = adapter.variant === 'reference' ? adapter.trailerLength : 0;
  return adapter.headerLength + tokenCount + trailer;
}

function checkAdapterWidth(engine: InferenceEngine, adapter: AdapterVectors): void {
  const hidden = engine.arch.hiddenSize;
  if (adapter.header.length !== adapter.headerLength * hidden || adapter.trailer.length !== adapter.trailerLength * hidden) {
    throw new KvpackError(
      'INVALID_ARGUMENT',
      `Adapter ${adapter.id} does not fit this model: its vectors are not ${hidden} wide (header ${adapter.header.length} floats ` +
        `for ${adapter.headerLength} vectors). Train or import an adapter for this model.`,
    );
  }
}

export function sequence(length: number, start = 0): number[] {
  return Array.from({ length }, (_, i) => start + i);
}
