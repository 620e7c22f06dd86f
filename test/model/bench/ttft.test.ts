import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { measureTtft, ttftCases, type TtftModelResult } from '../../../bench/suite/ttft.js';
import { plotPanels, ttftSections } from '../../../bench/suite/ttft-report.js';
import { renderReport } from '../../../bench/suite/markdown.js';
import { testModelDir } from '../../helpers/models.js';

describe('time to first token harness on stories260K', () => {
  let scratchDir: string;
  let result: TtftModelResult;
  beforeAll(async () => {
    scratchDir = mkdtempSync(path.join(tmpdir(), 'kvpack-ttft-test-'));
    result = await measureTtft(
      { name: 'stories260K', modelDir: testModelDir('stories260K'), points: [{ chunks: 2, chunkTokens: 32 }, { chunks: 3, chunkTokens: 48 }], repetitions: 2, peerMaxContext: 150 },
      { quick: true, scratchDir, log: () => {}, epicTokens: 4 },
    );
  });
  afterAll(() => rmSync(scratchDir, { recursive: true, force: true }));

  it('times every case per point', () => {
    // The transformers.js peer runs only up to its context limit.
    const [small, large] = result.points;
    expect(small.contextTokens).toBeLessThanOrEqual(150);
    expect(large.contextTokens).toBeGreaterThan(150);
    for (const name of ttftCases) {
      expect(small.timings[name]?.samples).toBe(2);
      expect(small.timings[name]!.median).toBeGreaterThan(0);
    }
    expect(large.timings['transformers.js']).toBeUndefined();
    expect(large.timings.packet?.samples).toBe(2);
  });

  it('counts the tokens each strategy computes', () => {
    const [point] = result.points;
    const { preambleTokens, questionTokens } = point.shape;
    expect(point.shape.chunkTokens).toEqual([32, 32]);
    expect(point.contextTokens).toBe(preambleTokens + 64 + questionTokens);
    expect(point.computedTokens.full).toBe(point.contextTokens);
    expect(point.computedTokens.prefix).toBe(point.contextTokens - preambleTokens);
    expect(point.computedTokens.naive).toBe(questionTokens);
    expect(point.computedTokens.packet).toBe(questionTokens);
    expect(point.computedTokens.epic).toBe(questionTokens + 2 * 4);
    expect(point.flops.packet).toBeLessThan(point.flops.epic);
    expect(point.flops.epic).toBeLessThan(point.flops.full);
  });

  it('reports the packets it built and the adapter it spliced', () => {
    // 2 × 32-token and 3 × 48-token chunks, each as a naive, an adapter and a first-slot packet.
    expect(result.packetBuild.packets).toBe(15);
    expect(result.packetBuild.tokens).toBe(3 * (2 * 32 + 3 * 48));
    expect(result.adapterNote).toMatch(/shipped adapter stories260k-conditioned-kv /);
  });

  it('renders tables with one row per point and plot series per case', () => {
    const markdown = renderReport({ title: 't', machine: 'm', command: 'c', date: 'd', preface: [] }, ttftSections([result], '2 repetitions'));
    expect(markdown).toContain('| stories260K: context tokens | chunks × tokens | full | prefix | naive | epic | packet | question only (lower bound) | transformers.js (peer) | full ÷ packet |');
    expect(markdown).toContain(`| ${result.points[1].contextTokens} | 3 × 48 |`);
    const [panel] = plotPanels([result]);
    expect(panel.series.map((series) => series.name)).toContain('transformers.js (peer)');
    expect(panel.series.find((series) => series.name === 'transformers.js (peer)')!.points).toHaveLength(1);
    expect(panel.series.find((series) => series.name === 'packet')!.points).toHaveLength(2);
  });
});
