import type { DecoderArchitecture } from '../inference/architecture.js';
import { KvCache } from '../inference/kv-cache.js';
import { rerotateKeys } from './rerotate.js';

/** One cached segment to splice: its entries and the position its first key is rotated for. */
export interface SpliceSegment {
  kv: KvCache;
  basePosition: number;
}

export interface SplicedCache {
  cache: KvCache;
  /** Global position of each segment's first entry. */
  offsets: number[];
}

/**
 * Appends segments after a prefix cache at contiguous positions: segment i starts right after
 * the previous one and its keys are re-rotated from its base position to that offset. No token is
 * recomputed.
 */
export function spliceSegments(arch: DecoderArchitecture, prefix: KvCache, segments: readonly SpliceSegment[]): SplicedCache {
  const offsets: number[] = [];
  const rotated: KvCache[] = [prefix];
  let position = prefix.length;
  for (const segment of segments) {
    offsets.push(position);
    rotated.push(rerotateKeys(segment.kv, arch, position - segment.basePosition));
    position += segment.kv.length;
  }
  return { cache: KvCache.concat(prefix.layout, rotated), offsets };
}
