import { describe, expect, it } from 'vitest';
import { architecturePresets } from '../../../inference/presets.js';
import { attentionFlopsPerPair, computedRuns, linearFlopsPerToken, prefillFlops, runsFlops } from '../../../bench/suite/flops.js';

const arch = architecturePresets['llama-100m'];
const head = 2 * arch.hiddenSize * arch.vocabSize;

describe('prefill FLOPs', () => {
  it('counts the projections and MLP of the 100M shape', () => {
    // Per layer: q and o 768×768, k and v 768×256, MLP 3 × 768×2048; 12 layers; 2 FLOPs per multiply-add.
    expect(linearFlopsPerToken(arch)).toBe(2 * 12 * (2 * 768 * 768 + 2 * 768 * 256 + 3 * 768 * 2048));
    expect(attentionFlopsPerPair(arch)).toBe(4 * 12 * 64 * 12);
  });

  it('sums attention over every attended entry, as a loop over entries does', () => {
    const runs = [
      { start: 0, count: 5 },
      { start: 9, count: 3 },
    ];
    let pairs = 0;
    for (const { start, count } of runs) for (let i = 0; i < count; i++) pairs += start + i + 1;
    expect(pairs).toBe(15 + 33);
    expect(runsFlops(arch, runs)).toBe(head + 8 * linearFlopsPerToken(arch) + pairs * attentionFlopsPerPair(arch));
  });

  it('places the runs of each strategy in the context', () => {
    const shape = { preambleTokens: 10, chunkTokens: [100, 50], questionTokens: 7 };
    expect(computedRuns(shape, 'full', 4)).toEqual([{ start: 0, count: 167 }]);
    expect(computedRuns(shape, 'prefix', 4)).toEqual([{ start: 10, count: 157 }]);
    expect(computedRuns(shape, 'packet', 4)).toEqual([{ start: 160, count: 7 }]);
    expect(computedRuns(shape, 'epic', 4)).toEqual([
      { start: 10, count: 4 },
      { start: 110, count: 4 },
      { start: 160, count: 7 },
    ]);
    expect(computedRuns({ ...shape, chunkTokens: [2] }, 'epic', 4)[0]).toEqual({ start: 10, count: 2 });
  });

  it('orders strategies by prefill work', () => {
    // full > prefix > epic > packet = question only.
    const shape = { preambleTokens: 12, chunkTokens: Array(16).fill(512), questionTokens: 20 };
    const flops = (flopsCase: Parameters<typeof prefillFlops>[2]) => prefillFlops(arch, shape, flopsCase, 4);
    expect(flops('full')).toBeGreaterThan(flops('prefix'));
    expect(flops('prefix')).toBeGreaterThan(flops('epic'));
    expect(flops('epic')).toBeGreaterThan(flops('packet'));
    expect(flops('packet')).toBe(flops('question only'));
    expect(flops('naive')).toBe(flops('packet'));
    // At 8K context the question's 20 entries are well under 1% of a full prefill.
    expect(flops('packet') / flops('full')).toBeLessThan(0.01);
  });
});
