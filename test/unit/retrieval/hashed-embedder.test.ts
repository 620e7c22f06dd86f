import { describe, expect, it } from 'vitest';
import { isKvpackError } from '../../../common/errors.js';
import { assertSameEmbedder, parseEmbedderSpec } from '../../../retrieval/embedder.js';
import { HashedEmbedder } from '../../../retrieval/hashed-embedder.js';

const dot = (a: Float32Array, b: Float32Array) => a.reduce((sum, value, i) => sum + value * b[i], 0);

describe('HashedEmbedder', () => {
  it('returns unit vectors of the dimension', async () => {
    const embedder = new HashedEmbedder({ dimension: 256 });
    const [vector] = await embedder.embedDocuments(['The quick brown fox.']);
    expect(vector).toHaveLength(256);
    expect(dot(vector, vector)).toBeCloseTo(1, 5);
  });

  it('is deterministic', () => {
    const a = new HashedEmbedder().embed('Same text here.');
    const b = new HashedEmbedder().embed('Same text here.');
    expect(Array.from(a)).toEqual(Array.from(b));
  });

  it('ranks shared words above unrelated text', () => {
    const embedder = new HashedEmbedder();
    const query = embedder.embed('Shirley Temple diplomat');
    const related = embedder.embed('Shirley Temple Black was an American actress and diplomat.');
    const unrelated = embedder.embed('The river flows through the valley in spring.');
    expect(dot(query, related)).toBeGreaterThan(0.3);
    expect(dot(query, related)).toBeGreaterThan(dot(query, unrelated) + 0.2);
  });

  it('matches inflected words through sub-word n-grams', () => {
    const embedder = new HashedEmbedder();
    const query = embedder.embed('painting');
    expect(dot(query, embedder.embed('painter paints'))).toBeGreaterThan(dot(query, embedder.embed('sculptor carves')) + 0.1);
  });

  it('weights rare features higher with IDF', () => {
    const embedder = new HashedEmbedder();
    const corpus = ['the cat', 'the dog', 'the bird', 'the fish', 'a zebra'];
    for (const text of corpus) embedder.statistics.addDocument(embedder.features(text));
    expect(embedder.statistics.documentCount).toBe(5);
    const query = embedder.embed('the zebra');
    expect(dot(query, embedder.embed('a zebra'))).toBeGreaterThan(dot(query, embedder.embed('the cat')));
    for (const text of corpus) embedder.statistics.removeDocument(embedder.features(text));
    expect(embedder.statistics.documentCount).toBe(0);
    expect(embedder.statistics.documentFrequencies.every((value) => value === 0)).toBe(true);
  });

  it('changes its fingerprint with its settings', () => {
    expect(new HashedEmbedder().info.fingerprint).toBe(new HashedEmbedder().info.fingerprint);
    expect(new HashedEmbedder({ dimension: 512 }).info.fingerprint).not.toBe(new HashedEmbedder().info.fingerprint);
    expect(new HashedEmbedder({ useIdf: false }).info.fingerprint).not.toBe(new HashedEmbedder().info.fingerprint);
  });

  it('throws for a dimension that is not a power of two', () => {
    expect(() => new HashedEmbedder({ dimension: 1000 })).toThrow('Invalid hashed embedder dimension 1000: expected a power of two from 16 to 65536.');
  });
});

describe('embedder identity', () => {
  it('rejects a store opened with another embedder', () => {
    const stored = new HashedEmbedder().info;
    const given = new HashedEmbedder({ dimension: 512 }).info;
    try {
      assertSameEmbedder(stored, given, '/stores/a');
      expect.unreachable();
    } catch (error) {
      expect(isKvpackError(error, 'STORE_MISMATCH')).toBe(true);
      expect((error as Error).message).toMatch(
        /^The store \/stores\/a was built with the hashed \(1024 dimensions, fingerprint [0-9a-f]{12}\) embedder, not the hashed \(512 dimensions, fingerprint [0-9a-f]{12}\) embedder given; open it with the embedder it was built with, or ingest into a new store\.$/,
      );
    }
  });

  it('parses embedder specs', () => {
    expect(parseEmbedderSpec('hashed')).toEqual({ kind: 'hashed' });
    expect(parseEmbedderSpec('transformers:/models/e5')).toEqual({ kind: 'transformers', modelDir: '/models/e5' });
    expect(() => parseEmbedderSpec('bm25')).toThrow(
      'Invalid embedder "bm25": expected "hashed" or "transformers:DIR" with DIR a sentence-embedding model folder.',
    );
  });
});
