/** Relative weight of each feature family in a hashed vector. */
export interface FeatureWeights {
  /** Lower-cased words. */
  words: number;
  /** Pairs of adjacent words. */
  wordBigrams: number;
  /** Character n-grams of each word padded with `<` and `>` (sub-word features). */
  charNgrams: number;
}

export interface FeatureOptions {
  weights: FeatureWeights;
  /** Smallest and largest character n-gram length. */
  minCharNgram: number;
  maxCharNgram: number;
}

/** One distinct feature of a text: its 32-bit hash, how often it occurs and its family weight. */
export interface Feature {
  hash: number;
  count: number;
  weight: number;
}

const WORD_PATTERN = /[\p{L}\p{N}]+/gu;
const FAMILY_WORD = 0x57;
const FAMILY_BIGRAM = 0x42;
const FAMILY_CHAR = 0x43;

/**
 * Extracts the hashed features of a text: words, word bigrams and character n-grams, after NFKC
 * normalization and lower-casing. Features of different families never share a hash input because
 * each hash starts from a family byte; distinct features may still collide in 32 bits.
 */
export function extractFeatures(text: string, options: FeatureOptions): Feature[] {
  const features = new Map<number, Feature>();
  const add = (hash: number, weight: number) => {
    const existing = features.get(hash);
    if (existing) existing.count += 1;
    else features.set(hash, { hash, count: 1, weight });
  };
  const words = text.normalize('NFKC').toLowerCase().match(WORD_PATTERN) ?? [];
  const { weights, minCharNgram, maxCharNgram } = options;
  for (let i = 0; i < words.length; i++) {
    const word = words[i];
    if (weights.words > 0) add(hashString(FAMILY_WORD, word, 0, word.length), weights.words);
    if (weights.wordBigrams > 0 && i > 0) add(hashPair(words[i - 1], word), weights.wordBigrams);
    if (weights.charNgrams > 0) {
      const padded = `<${word}>`;
      for (let n = minCharNgram; n <= maxCharNgram; n++) {
        for (let start = 0; start + n <= padded.length; start++) {
          add(hashString(FAMILY_CHAR, padded, start, start + n), weights.charNgrams);
        }
      }
    }
  }
  return [...features.values()];
}

/** Returns the hash `extractFeatures` gives the word feature of a lower-cased, NFKC-normalized word. */
export function wordFeatureHash(word: string): number {
  return hashString(FAMILY_WORD, word, 0, word.length);
}

/** FNV-1a over a family byte and the UTF-16 code units of `text[start, end)`, then a murmur3 finalizer. */
export function hashString(family: number, text: string, start: number, end: number): number {
  let hash = Math.imul(0x811c9dc5 ^ family, 0x01000193);
  for (let i = start; i < end; i++) {
    hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  }
  return finalizeHash(hash);
}

function hashPair(first: string, second: string): number {
  let hash = Math.imul(0x811c9dc5 ^ FAMILY_BIGRAM, 0x01000193);
  for (let i = 0; i < first.length; i++) hash = Math.imul(hash ^ first.charCodeAt(i), 0x01000193);
  hash = Math.imul(hash ^ 0x20, 0x01000193);
  for (let i = 0; i < second.length; i++) hash = Math.imul(hash ^ second.charCodeAt(i), 0x01000193);
  return finalizeHash(hash);
}

function finalizeHash(value: number): number {
  let h = value;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
