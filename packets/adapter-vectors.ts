import type { KvCache } from '../inference/kv-cache.js';

/**
 * The three adapter designs. `reference`: learned header and trailer vectors wrap the chunk and
 * their cache entries stay in the packet, so the question attends to them. `conditioned`: a learned
 * header is prefilled before the chunk to condition its keys and values and is then dropped, so
 * the packet holds only the chunk's entries (the same size as a packet without adapter).
 * `conditioned-kv`: like `conditioned`, but the header is learned directly as per-layer keys and
 * values (prefix tuning), so the chunk attends to it without the header being computed.
 */
export type AdapterVariant = 'reference' | 'conditioned' | 'conditioned-kv';

/** The learned parameters of an adapter: input-embedding vectors, or a header cache for conditioned-kv. */
export interface AdapterVectors {
  /** Stable id, used in packet keys and file names: lowercase letters, digits, '-' and '_'. */
  id: string;
  /** sha256 over the variant and the learned bytes, plus the cache shape for conditioned-kv; packets record it. */
  fingerprint: string;
  variant: AdapterVariant;
  /** `[headerLength, hidden]`, row-major; empty for the conditioned-kv variant. */
  header: Float32Array;
  /** Header vectors, or the entries per layer of `headerKv` for conditioned-kv. */
  headerLength: number;
  /** `[trailerLength, hidden]`; empty for the conditioned and conditioned-kv variants. */
  trailer: Float32Array;
  trailerLength: number;
  /**
   * The learned header cache of the conditioned-kv variant, absent for the others: per layer
   * `[1, kv_heads, headerLength, head_dim]` keys and values, keys rotated for positions
   * 0..headerLength-1. The last layer's entries cannot change a packet, because a layer's keys and
   * values depend only on that layer's input, but they are kept so the header is a complete cache.
   */
  headerKv?: KvCache;
  /**
   * Conditioned-kv only: the adapter whose packets serve a chunk placed directly after the
   * preamble, where the context before the chunk is the same for every query. Its id is this
   * adapter's id plus `-first`, so its packets are stored beside the others.
   */
  firstSlot?: AdapterVectors;
}

/** Returns the adapter whose packet the chunk at context position `slot` (0 = first) splices. */
export function adapterForSlot(adapter: AdapterVectors | undefined, slot: number): AdapterVectors | undefined {
  return slot === 0 && adapter?.firstSlot ? adapter.firstSlot : adapter;
}

/** Returns every adapter that a chunk needs a packet of: the adapter and its first-slot adapter. */
export function packetAdapters(adapter: AdapterVectors): AdapterVectors[] {
  return adapter.firstSlot ? [adapter, adapter.firstSlot] : [adapter];
}
