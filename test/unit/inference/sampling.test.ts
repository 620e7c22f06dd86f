import { describe, expect, it } from 'vitest';
import { KvpackError } from '../../../common/errors.js';
import { SeededRandom } from '../../../common/random.js';
import { argmax, sampleToken, validateSamplingOptions } from '../../../inference/sampling.js';
import { StopStringFilter } from '../../../inference/stop-strings.js';

const logits = Float32Array.from([0.1, 2.5, -1, 2.4, 0]);

function histogram(options: Parameters<typeof sampleToken>[1], draws: number, seed = 1): number[] {
  const random = new SeededRandom(seed);
  const counts = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < draws; i++) counts[sampleToken(logits, options, random)]++;
  return counts;
}

describe('sampling', () => {
  it('greedy picks the largest logit', () => {
    expect(sampleToken(logits, { temperature: 0 }, new SeededRandom(0))).toBe(1);
    expect(argmax(Float32Array.from([3, 3, 1]))).toBe(0);
  });

  it('top-k keeps only the k best tokens', () => {
    const counts = histogram({ temperature: 1, topK: 2 }, 2000);
    expect(counts[0] + counts[2] + counts[4]).toBe(0);
    expect(counts[1]).toBeGreaterThan(800);
    expect(counts[3]).toBeGreaterThan(800);
  });

  it('top-p keeps the smallest nucleus', () => {
    // Probabilities at temperature 1: 0.46, 0.41, 0.06, 0.05, 0.02 for ids 1, 3, 0, 4, 2.
    const counts = histogram({ temperature: 1, topP: 0.8 }, 2000);
    expect(counts[0] + counts[2] + counts[4]).toBe(0);
    expect(counts[1] + counts[3]).toBe(2000);
  });

  it('temperature sampling follows the softmax', () => {
    const counts = histogram({ temperature: 1 }, 20000);
    const weights = Array.from(logits, (value) => Math.exp(value));
    const total = weights.reduce((a, b) => a + b, 0);
    weights.forEach((weight, id) => expect(Math.abs(counts[id] / 20000 - weight / total)).toBeLessThan(0.015));
  });

  it('the same seed repeats', () => {
    expect(histogram({ temperature: 1 }, 50, 9)).toEqual(histogram({ temperature: 1 }, 50, 9));
  });

  it('rejects invalid options', () => {
    expect(() => validateSamplingOptions({ temperature: -1 })).toThrow(/temperature must be a number >= 0, got -1/);
    expect(() => validateSamplingOptions({ topK: 1.5 })).toThrow(/topK must be an integer >= 0/);
    expect(() => validateSamplingOptions({ topP: 0 })).toThrow(KvpackError);
  });
});

describe('stop strings', () => {
  it('cuts at the first stop string across pushes', () => {
    const filter = new StopStringFilter(['END', '\n\n']);
    const emitted = ['Hello', ' wor', 'ld E', 'N', 'Dmore'].map((piece) => filter.push(piece));
    expect(emitted.join('')).toBe('Hello world ');
    expect(filter.matched).toBe(true);
    expect(filter.push('after')).toBe('');
  });

  it('holds back only a real stop-string prefix', () => {
    const filter = new StopStringFilter(['END']);
    expect(filter.push('abcE')).toBe('abc');
    expect(filter.push('x')).toBe('Ex');
    expect(filter.flush()).toBe('');
  });

  it('flushes held text at the end', () => {
    const filter = new StopStringFilter(['END']);
    expect(filter.push('the EN')).toBe('the ');
    expect(filter.flush()).toBe('EN');
    expect(filter.matched).toBe(false);
  });
});
