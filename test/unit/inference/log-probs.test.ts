import { describe, expect, it } from 'vitest';
import { klDivergence, logSoftmax } from '../../../inference/log-probs.js';

describe('logSoftmax', () => {
  it('normalizes to probabilities', () => {
    const logProbs = logSoftmax(Float32Array.from([0.1, 2.5, -1, 2.4, 0]));
    const total = Array.from(logProbs, Math.exp).reduce((a, b) => a + b, 0);
    expect(total).toBeCloseTo(1, 12);
    expect(logProbs[1] - logProbs[2]).toBeCloseTo(3.5, 6);
  });

  it('stays finite for large logits', () => {
    const logProbs = logSoftmax(Float32Array.from([1000, 1000]));
    expect(logProbs[0]).toBeCloseTo(-Math.LN2, 12);
    expect(logProbs[1]).toBeCloseTo(-Math.LN2, 12);
  });

  it('ignores a constant shift', () => {
    const plain = logSoftmax(Float32Array.from([1, 2, 3]));
    const shifted = logSoftmax(Float32Array.from([101, 102, 103]));
    for (let i = 0; i < plain.length; i++) {
      expect(shifted[i]).toBeCloseTo(plain[i], 5);
    }
  });
});

describe('klDivergence', () => {
  it('is zero for identical distributions', () => {
    const logProbs = logSoftmax(Float32Array.from([0.3, -2, 1.7]));
    expect(klDivergence(logProbs, logProbs)).toBe(0);
  });

  it('matches a worked two-token case', () => {
    const p = [Math.log(0.5), Math.log(0.5)];
    const q = [Math.log(0.9), Math.log(0.1)];
    const expected = 0.5 * Math.log(0.5 / 0.9) + 0.5 * Math.log(0.5 / 0.1);
    expect(klDivergence(p, q)).toBeCloseTo(expected, 12);
    expect(klDivergence(q, p)).not.toBeCloseTo(expected, 3);
  });

  it('skips tokens with zero probability', () => {
    const p = [0, -Infinity];
    const q = [Math.log(0.75), Math.log(0.25)];
    expect(klDivergence(p, q)).toBeCloseTo(-Math.log(0.75), 12);
  });
});
