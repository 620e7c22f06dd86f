import { expect } from 'vitest';
import type { KvCache } from '../../inference/kv-cache.js';

/** Returns the largest absolute element difference of two arrays of the same length. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

/** Returns the largest absolute difference over every layer's keys, and over every layer's values. */
export function cacheDiff(a: KvCache, b: KvCache): { keys: number; values: number } {
  expect(a.length).toBe(b.length);
  let keys = 0;
  let values = 0;
  for (let layer = 0; layer < a.layout.numLayers; layer++) {
    keys = Math.max(keys, maxAbsDiff(a.keys[layer], b.keys[layer]));
    values = Math.max(values, maxAbsDiff(a.values[layer], b.values[layer]));
  }
  return { keys, values };
}
