import type { KvCache } from '../inference/kv-cache.js';

interface PrefixEntry {
  tokens: Int32Array;
  cache: KvCache;
  lastUsed: number;
}

export interface PrefixCacheStats {
  entries: number;
  bytes: number;
  capacityBytes: number;
  hits: number;
  misses: number;
  /** Tokens served from cached prefixes instead of being prefilled. */
  reusedTokens: number;
}

export interface PrefixMatch {
  /** Number of leading tokens whose cache entries were found. */
  length: number;
  /** The cached entries of those tokens, positions 0..length-1. */
  cache: KvCache;
}

/**
 * Caches the KV of whole token sequences prefilled from position 0 and serves the longest stored
 * exact prefix of a new sequence, as prompt caching in vLLM, SGLang and provider APIs does: only
 * an identical token prefix is reused. Bounded by bytes, least recently used entries go first.
 */
export class PrefixCache {
  private readonly entries: PrefixEntry[] = [];
  private bytes = 0;
  private clock = 0;
  private hits = 0;
  private misses = 0;
  private reusedTokens = 0;

  constructor(readonly capacityBytes: number) {}

  /** Returns the longest cached prefix of `tokens`, at most `maxLength` tokens long. */
  lookup(tokens: ArrayLike<number>, maxLength = tokens.length): PrefixMatch | undefined {
    let best: PrefixEntry | undefined;
    let bestLength = 0;
    for (const entry of this.entries) {
      const length = commonPrefixLength(entry.tokens, tokens, maxLength);
      if (length > bestLength) {
        best = entry;
        bestLength = length;
      }
    }
    if (!best) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.reusedTokens += bestLength;
    best.lastUsed = ++this.clock;
    const cache = bestLength === best.cache.length ? best.cache : best.cache.slice(0, bestLength);
    return { length: bestLength, cache };
  }

  /** Stores the cache of `tokens` (one entry per token, from position 0). */
  store(tokens: ArrayLike<number>, cache: KvCache): void {
    if (cache.length !== tokens.length || cache.byteLength > this.capacityBytes) {
      return;
    }
    const copy = Int32Array.from(tokens);
    const existing = this.entries.findIndex((entry) => commonPrefixLength(entry.tokens, copy, copy.length) === copy.length && entry.tokens.length >= copy.length);
    if (existing >= 0) {
      this.entries[existing].lastUsed = ++this.clock;
      return;
    }
    this.entries.push({ tokens: copy, cache, lastUsed: ++this.clock });
    this.bytes += cache.byteLength;
    this.evict();
  }

  stats(): PrefixCacheStats {
    return {
      entries: this.entries.length,
      bytes: this.bytes,
      capacityBytes: this.capacityBytes,
      hits: this.hits,
      misses: this.misses,
      reusedTokens: this.reusedTokens,
    };
  }

  private evict(): void {
    while (this.bytes > this.capacityBytes && this.entries.length > 0) {
      let oldest = 0;
      for (let i = 1; i < this.entries.length; i++) {
        if (this.entries[i].lastUsed < this.entries[oldest].lastUsed) oldest = i;
      }
      const [removed] = this.entries.splice(oldest, 1);
      this.bytes -= removed.cache.byteLength;
    }
  }
}

function commonPrefixLength(a: ArrayLike<number>, b: ArrayLike<number>, max: number): number {
  const limit = Math.min(a.length, b.length, max);
  let i = 0;
  while (i < limit && a[i] === b[i]) i++;
  return i;
}
