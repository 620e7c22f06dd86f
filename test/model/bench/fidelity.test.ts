import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { measureFidelity } from '../../../bench/suite/fidelity.js';
import type { ReportSection } from '../../../bench/suite/report-types.js';
import { InferenceEngine } from '../../../inference/engine.js';
import { expectedModelOf, resolveAdapter } from '../../../packets/adapter.js';
import { testModelDir } from '../../helpers/models.js';

const strategies = ['full', 'prefix', 'naive', 'epic-4', 'packet: conditioned-kv (8 per layer, first-slot header)'];
const chunkCounts = ['2', '3', '4'];

describe('measureFidelity on stories260K, quick', () => {
  let engine: InferenceEngine;
  let scratchDir: string;
  let section: ReportSection;
  let adapterReason: string;
  const logged: string[] = [];

  beforeAll(async () => {
    engine = await InferenceEngine.load(testModelDir('stories260K'));
    scratchDir = mkdtempSync(path.join(tmpdir(), 'kvpack-fidelity-suite-'));
    const resolved = resolveAdapter(undefined, expectedModelOf(engine));
    expect(resolved.vectors?.variant).toBe('conditioned-kv');
    adapterReason = resolved.reason;
    section = await measureFidelity(engine, {
      quick: true,
      scratchDir,
      log: (line) => logged.push(line),
      adapter: resolved.vectors,
      adapterDescription: resolved.reason,
    });
  }, 600_000);

  afterAll(async () => {
    rmSync(scratchDir, { recursive: true, force: true });
    await engine?.release();
  });

  /** Returns the per-chunk-count table's row of one strategy as a record keyed by column. */
  function row(chunks: string, strategy: string): Record<string, string> {
    const table = section.tables[1];
    const found = table.rows.find((cells) => cells[0] === chunks && cells[1] === strategy);
    expect(found, `row ${chunks} chunks, ${strategy}`).toBeDefined();
    return Object.fromEntries(table.columns.map((column, i) => [column, (found as string[])[i]]));
  }

  it('has a row per strategy and chunk count', () => {
    expect(section.tables).toHaveLength(2);
    expect(section.tables[0].rows.map((cells) => cells[0])).toEqual(strategies);
    expect(section.tables[1].rows.map((cells) => `${cells[0]} ${cells[1]}`)).toEqual(chunkCounts.flatMap((chunks) => strategies.map((name) => `${chunks} ${name}`)));
    for (const chunks of chunkCounts) {
      expect(row(chunks, 'full').samples).toBe('10');
    }
  });

  it('full prefill matches its own reference', () => {
    for (const chunks of chunkCounts) {
      const full = row(chunks, 'full');
      expect(Number(full['mean KL (nats)'])).toBeLessThanOrEqual(1e-6);
      expect(full['top-1 agreement']).toBe('100.0%');
      expect(full['greedy-16 match']).toBe('100.0%');
    }
  });

  it('prefix reuse matches full prefill', () => {
    for (const chunks of chunkCounts) {
      const prefix = row(chunks, 'prefix');
      expect(Number(prefix['mean KL (nats)'])).toBeLessThanOrEqual(1e-6);
      expect(prefix['top-1 agreement']).toBe('100.0%');
    }
  });

  it('naive concatenation diverges from full', () => {
    for (const chunks of chunkCounts) {
      expect(Number(row(chunks, 'naive')['mean KL (nats)'])).toBeGreaterThan(0);
    }
  });

  it('epic recomputes four tokens per chunk', () => {
    for (const chunks of chunkCounts) {
      expect(row(chunks, 'epic-4')['tokens recomputed']).toBe((4 * Number(chunks)).toFixed(1));
      expect(row(chunks, 'naive')['tokens recomputed']).toBe('0.0');
    }
  });

  it('names the adapter and leaves scratch empty', () => {
    expect(section.intro.join(' ')).toContain(adapterReason);
    expect(logged.some((line) => line.includes('3 held-out sets of 10 samples'))).toBe(true);
    expect(readdirSync(scratchDir)).toEqual([]);
  });
});
