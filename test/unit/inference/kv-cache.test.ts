import { describe, expect, it } from 'vitest';
import { KvCache, type KvLayout } from '../../../inference/kv-cache.js';

const layout: KvLayout = { numLayers: 2, numKvHeads: 2, headDim: 3 };

/** A cache whose every value encodes (layer, kind, head, index, dim) so copies can be checked. */
function labelled(length: number, base: number): KvCache {
  const make = (layer: number, kind: number) =>
    Float32Array.from({ length: layout.numKvHeads * length * layout.headDim }, (_, i) => {
      const head = Math.floor(i / (length * layout.headDim));
      const index = Math.floor(i / layout.headDim) % length;
      return layer * 10000 + kind * 1000 + head * 100 + (base + index) * 10 + (i % layout.headDim);
    });
  return new KvCache(layout, length, [make(0, 0), make(1, 0)], [make(0, 1), make(1, 1)]);
}

describe('KvCache', () => {
  it('concat joins along the sequence axis', () => {
    const joined = KvCache.concat(layout, [labelled(2, 0), labelled(3, 2)]);
    expect(joined.length).toBe(5);
    expect(Array.from(joined.keys[1])).toEqual(Array.from(labelled(5, 0).keys[1]));
    expect(Array.from(joined.values[0])).toEqual(Array.from(labelled(5, 0).values[0]));
  });

  it('slice returns the entries in range', () => {
    const part = labelled(6, 0).slice(2, 5);
    expect(part.length).toBe(3);
    expect(Array.from(part.keys[0])).toEqual(Array.from(labelled(3, 2).keys[0]));
  });

  it('slice rejects an invalid range', () => {
    expect(() => labelled(3, 0).slice(2, 5)).toThrow(/Cannot slice \[2, 5\) from a KV cache of length 3/);
  });

  it('rejects arrays of the wrong size', () => {
    const wrong = () => new KvCache(layout, 2, [new Float32Array(12), new Float32Array(11)], [new Float32Array(12), new Float32Array(12)]);
    expect(wrong).toThrow(/layer 1 holds 11 key and 12 value floats, expected 12 for \[1, 2, 2, 3\]/);
  });

  it('rejects a cache of another layout', () => {
    const other = KvCache.empty({ numLayers: 3, numKvHeads: 2, headDim: 3 });
    expect(() => KvCache.concat(layout, [other])).toThrow(/has 3 layers of \[1, 2, seq, 3\] but the model expects 2 layers/);
  });

  it('byteLength counts keys and values', () => {
    expect(labelled(4, 0).byteLength).toBe(2 * 2 * 2 * 4 * 3 * 4);
  });
});
