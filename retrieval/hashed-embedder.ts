import { createHash } from 'node:crypto';
import { KvpackError } from '../common/errors.js';
import { normalizeL2, type Embedder, type EmbedderInfo } from './embedder.js';
import { TermStatistics } from './term-statistics.js';
import { extractFeatures, type Feature, type FeatureOptions } from './text-features.js';

export interface HashedEmbedderConfig extends FeatureOptions {
  /** Vector length; a power of two. Default 1024. */
  dimension: number;
  /** Bits of the document-frequency table (2^bits buckets). Default 20. */
  bucketBits: number;
  /** Weight features by inverse document frequency. Default true. */
  useIdf: boolean;
}

export const defaultHashedConfig: HashedEmbedderConfig = Object.freeze({
  dimension: 1024,
  bucketBits: 20,
  useIdf: true,
  minCharNgram: 3,
  maxCharNgram: 5,
  weights: Object.freeze({ words: 1, wordBigrams: 0.5, charNgrams: 0.25 }),
});

/**
 * The default embedder, which needs no model file: words, word bigrams and character 3-5-grams are
 * hashed with a sign into a dense vector (the hashing trick), weighted by sublinear term frequency
 * `1 + ln(tf)` times IDF, and L2-normalized.
 *
 * IDF comes from `statistics`, the document frequencies of the chunks in the store. The store
 * counts each batch before embedding it, so a batch is weighted by the corpus as of its end.
 * Vectors of earlier batches keep the IDF of their own time.
 */
export class HashedEmbedder implements Embedder {
  readonly info: EmbedderInfo;
  readonly config: HashedEmbedderConfig;
  readonly statistics: TermStatistics;

  constructor(config: Partial<HashedEmbedderConfig> = {}, statistics?: TermStatistics) {
    this.config = { ...defaultHashedConfig, ...config, weights: { ...defaultHashedConfig.weights, ...config.weights } };
    validateConfig(this.config);
    this.statistics = statistics ?? new TermStatistics(this.config.bucketBits);
    if (this.statistics.bucketBits !== this.config.bucketBits) {
      throw new KvpackError('INVALID_ARGUMENT', `Invalid term statistics: ${this.statistics.bucketBits} bucket bits, but the embedder uses ${this.config.bucketBits}; build them with the embedder's bucketBits.`);
    }
    this.info = hashedEmbedderInfo(this.config);
  }

  /** Extracts the distinct hashed features of a text, for counting it in `statistics`. */
  features(text: string): Feature[] {
    return extractFeatures(text, this.config);
  }

  async embedDocuments(texts: readonly string[]): Promise<Float32Array[]> {
    return texts.map((text) => this.embed(text));
  }

  async embedQuery(text: string): Promise<Float32Array> {
    return this.embed(text);
  }

  /** Embeds one text synchronously. */
  embed(text: string): Float32Array {
    const { dimension, useIdf } = this.config;
    const vector = new Float32Array(dimension);
    const mask = dimension - 1;
    for (const feature of this.features(text)) {
      const idf = useIdf ? this.statistics.idf(feature.hash) : 1;
      const value = feature.weight * (1 + Math.log(feature.count)) * idf;
      const sign = feature.hash & 0x80000000 ? -1 : 1;
      vector[feature.hash & mask] += sign * value;
    }
    return normalizeL2(vector);
  }

  async close(): Promise<void> {}
}

export function hashedEmbedderInfo(config: HashedEmbedderConfig): EmbedderInfo {
  const recorded = {
    bucketBits: config.bucketBits,
    useIdf: config.useIdf,
    minCharNgram: config.minCharNgram,
    maxCharNgram: config.maxCharNgram,
    weights: { words: config.weights.words, wordBigrams: config.weights.wordBigrams, charNgrams: config.weights.charNgrams },
  };
  const fingerprint = createHash('sha256')
    .update(JSON.stringify({ kind: 'hashed', version: 1, dimension: config.dimension, config: recorded }))
    .digest('hex');
  return { kind: 'hashed', dimension: config.dimension, config: recorded, fingerprint };
}

function validateConfig(config: HashedEmbedderConfig): void {
  const { dimension, minCharNgram, maxCharNgram } = config;
  if (!Number.isInteger(dimension) || dimension < 16 || dimension > 1 << 16 || (dimension & (dimension - 1)) !== 0) {
    throw new KvpackError('INVALID_ARGUMENT', `Invalid hashed embedder dimension ${dimension}: expected a power of two from 16 to 65536.`);
  }
  if (!Number.isInteger(minCharNgram) || !Number.isInteger(maxCharNgram) || minCharNgram < 1 || maxCharNgram < minCharNgram) {
    throw new KvpackError('INVALID_ARGUMENT', `Invalid character n-gram range ${minCharNgram}..${maxCharNgram}: expected integers with 1 <= min <= max.`);
  }
}
