import { KvpackError } from '../common/errors.js';
import type { Feature } from './text-features.js';

/**
 * Document frequencies of hashed features over a corpus of chunks, for inverse document frequency
 * (IDF) weights. Features are counted in `2^bucketBits` buckets by the high bits of their hash, so
 * rare features that share a bucket share a count.
 */
export class TermStatistics {
  readonly bucketBits: number;
  /** Chunks counted. */
  documentCount: number;
  /** `[2^bucketBits]` chunks containing a feature of each bucket. */
  readonly documentFrequencies: Uint32Array;

  constructor(bucketBits: number, documentCount = 0, documentFrequencies?: Uint32Array) {
    if (!Number.isInteger(bucketBits) || bucketBits < 8 || bucketBits > 28) {
      throw new KvpackError('INVALID_ARGUMENT', `Invalid bucket bits ${bucketBits}: expected an integer from 8 to 28.`);
    }
    this.bucketBits = bucketBits;
    this.documentCount = documentCount;
    this.documentFrequencies = documentFrequencies ?? new Uint32Array(1 << bucketBits);
    if (this.documentFrequencies.length !== 1 << bucketBits) {
      throw new KvpackError('STORE_INVALID', `Invalid term statistics: ${this.documentFrequencies.length} buckets, expected ${1 << bucketBits}. Rebuild them from the catalog.`);
    }
  }

  bucketOf(hash: number): number {
    return hash >>> (32 - this.bucketBits);
  }

  /** Counts one chunk given its distinct features. */
  addDocument(features: readonly Feature[]): void {
    this.updateBuckets(features, 1);
    this.documentCount += 1;
  }

  /** Removes one counted chunk given its distinct features. */
  removeDocument(features: readonly Feature[]): void {
    this.updateBuckets(features, -1);
    this.documentCount = Math.max(0, this.documentCount - 1);
  }

  /** Smoothed IDF `ln((N + 1) / (df + 1)) + 1`, so a feature in every chunk still weighs 1. */
  idf(hash: number): number {
    const df = this.documentFrequencies[this.bucketOf(hash)];
    return Math.log((this.documentCount + 1) / (df + 1)) + 1;
  }

  private updateBuckets(features: readonly Feature[], delta: 1 | -1): void {
    const seen = new Set<number>();
    for (const feature of features) {
      const bucket = this.bucketOf(feature.hash);
      if (seen.has(bucket)) continue;
      seen.add(bucket);
      const next = this.documentFrequencies[bucket] + delta;
      this.documentFrequencies[bucket] = next < 0 ? 0 : next;
    }
  }
}
