import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SeededRandom } from '../../../common/random.js';
import { normalizeL2 } from '../../../retrieval/embedder.js';
import { HnswIndex, INDEX_FILE, INDEX_META_FILE, IndexUnusableError } from '../../../retrieval/hnsw-index.js';

const DIM = 8;
let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'kvpack-hnsw-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function randomVectors(count: number, seed: number): Float32Array[] {
  const random = new SeededRandom(seed);
  return Array.from({ length: count }, () => normalizeL2(Float32Array.from({ length: DIM }, () => random.nextFloat() * 2 - 1)));
}

describe('HnswIndex', () => {
  it('finds an added vector first with similarity 1', () => {
    const index = HnswIndex.create({ dimension: DIM });
    const vectors = randomVectors(20, 1);
    vectors.forEach((vector, label) => index.add(label, vector));
    const hits = index.search(vectors[7], 3);
    expect(hits).toHaveLength(3);
    expect(hits[0].label).toBe(7);
    expect(hits[0].similarity).toBeCloseTo(1, 5);
    expect(hits[1].similarity).toBeLessThanOrEqual(hits[0].similarity);
  });

  it('grows past its initial capacity', () => {
    const index = HnswIndex.create({ dimension: DIM, initialCapacity: 4 });
    const vectors = randomVectors(50, 2);
    vectors.forEach((vector, label) => index.add(label, vector));
    expect(index.size).toBe(50);
    expect(index.capacity).toBeGreaterThanOrEqual(50);
    expect(index.search(vectors[49], 1)[0].label).toBe(49);
  });

  it('returns min(k, live) results', () => {
    const index = HnswIndex.create({ dimension: DIM });
    expect(index.search(randomVectors(1, 3)[0], 5)).toEqual([]);
    const vectors = randomVectors(3, 4);
    vectors.forEach((vector, label) => index.add(label, vector));
    expect(index.search(vectors[0], 10)).toHaveLength(3);
    index.delete(1);
    const hits = index.search(vectors[0], 10);
    expect(hits.map((hit) => hit.label).sort()).toEqual([0, 2]);
  });

  it('deletes and re-adds a label', () => {
    const index = HnswIndex.create({ dimension: DIM });
    const vectors = randomVectors(10, 5);
    vectors.forEach((vector, label) => index.add(label, vector));
    expect(index.delete(3)).toBe(true);
    expect(index.delete(3)).toBe(false);
    expect(index.has(3)).toBe(false);
    expect(index.search(vectors[3], 10).map((hit) => hit.label)).not.toContain(3);
    index.add(3, vectors[3]);
    expect(index.has(3)).toBe(true);
    expect(index.size).toBe(10);
    expect(index.search(vectors[3], 1)[0].label).toBe(3);
  });

  it('saves and loads with deletions', () => {
    const index = HnswIndex.create({ dimension: DIM });
    const vectors = randomVectors(30, 6);
    vectors.forEach((vector, label) => index.add(label, vector));
    index.delete(4);
    index.save(dir);
    const loaded = HnswIndex.load(dir, { dimension: DIM });
    expect(loaded.size).toBe(29);
    expect(loaded.deletedCount).toBe(1);
    expect(loaded.search(vectors[10], 1)[0].label).toBe(10);
    expect(loaded.search(vectors[4], 30).map((hit) => hit.label)).not.toContain(4);
    loaded.add(4, vectors[4]);
    expect(loaded.search(vectors[4], 1)[0].label).toBe(4);
  });

  it('compacts deleted vectors away', () => {
    const index = HnswIndex.create({ dimension: DIM });
    const vectors = randomVectors(40, 7);
    vectors.forEach((vector, label) => index.add(label, vector));
    for (let label = 0; label < 30; label++) index.delete(label);
    index.compact();
    expect(index.deletedCount).toBe(0);
    expect(index.size).toBe(10);
    expect(index.search(vectors[35], 1)[0].label).toBe(35);
    expect(index.search(vectors[35], 40)).toHaveLength(10);
  });

  it('rejects a damaged index file', () => {
    const index = HnswIndex.create({ dimension: DIM });
    randomVectors(10, 8).forEach((vector, label) => index.add(label, vector));
    index.save(dir);
    const file = path.join(dir, INDEX_FILE);
    const bytes = readFileSync(file);
    bytes[bytes.length - 5] ^= 0xff;
    writeFileSync(file, bytes);
    expect(() => HnswIndex.load(dir, { dimension: DIM })).toThrow(IndexUnusableError);
    expect(() => HnswIndex.load(dir, { dimension: DIM })).toThrow(/does not match the checksum in hnsw\.json \(damaged or partly written\)$/);
  });

  it('rejects a truncated or extended file and a missing sidecar', () => {
    const index = HnswIndex.create({ dimension: DIM });
    randomVectors(5, 9).forEach((vector, label) => index.add(label, vector));
    index.save(dir);
    appendFileSync(path.join(dir, INDEX_FILE), 'x');
    expect(() => HnswIndex.load(dir, { dimension: DIM })).toThrow(IndexUnusableError);
    rmSync(path.join(dir, INDEX_META_FILE));
    expect(() => HnswIndex.load(dir, { dimension: DIM })).toThrow(`${path.join(dir, INDEX_META_FILE)} is missing`);
  });

  it('rejects an index of another dimension', () => {
    const index = HnswIndex.create({ dimension: DIM });
    randomVectors(5, 10).forEach((vector, label) => index.add(label, vector));
    index.save(dir);
    expect(() => HnswIndex.load(dir, { dimension: 16 })).toThrow(
      'index built for cosine space with 8 dimensions, expected cosine with 16',
    );
  });

  it('throws for a vector of the wrong length', () => {
    const index = HnswIndex.create({ dimension: DIM });
    expect(() => index.add(0, new Float32Array(3))).toThrow('Invalid the vector of label 0: 3 dimensions, the index has 8.');
  });
});
