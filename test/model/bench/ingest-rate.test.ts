import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { measureIngestRate } from '../../../bench/suite/ingest-rate.js';
import type { ReportSection, ReportTable } from '../../../bench/suite/report-types.js';
import { InferenceEngine } from '../../../inference/engine.js';
import { testModelDir } from '../../helpers/models.js';
import { rejection } from '../../helpers/errors.js';

const PARAGRAPHS = 40;

/** Parses a report cell such as "13,751" or "5.54" (the tables use thousands separators). */
function numberIn(cell: string): number {
  const value = Number(cell.replaceAll(',', '').replace(/%$/, ''));
  expect(Number.isFinite(value), `cell "${cell}" is not a number`).toBe(true);
  return value;
}

/** Returns the second cell of the row whose first cell is `label`. */
function valueOf(table: ReportTable, label: string): string {
  const row = table.rows.find((cells) => cells[0] === label);
  expect(row, `no row "${label}"`).toBeDefined();
  return row![1];
}

describe('ingest throughput benchmark on stories260K', () => {
  const modelDir = () => testModelDir('stories260K');
  let engine: InferenceEngine;
  let scratchDir: string;
  let section: ReportSection;
  const logLines: string[] = [];

  beforeAll(async () => {
    engine = await InferenceEngine.load(modelDir());
    scratchDir = mkdtempSync(path.join(tmpdir(), 'kvpack-ingest-rate-test-'));
    section = await measureIngestRate(engine, modelDir(), { quick: true, scratchDir, log: (line) => logLines.push(line), paragraphs: PARAGRAPHS });
  });
  afterAll(async () => {
    await engine?.release();
    rmSync(scratchDir, { recursive: true, force: true });
  });

  const figures = () => section.tables[0];
  const figure = (label: string) => numberIn(valueOf(figures(), label));

  it('reports a figure table and a stage table', () => {
    expect(section.title).toBe('Ingest throughput against raw prefill');
    expect(section.tables).toHaveLength(2);
    expect(figures().columns).toEqual(['figure', 'value']);
    expect(section.tables[1].columns).toEqual(['ingest stage', 'ms', 'share of wall time']);
    expect(section.intro.join(' ')).toContain(`The first ${PARAGRAPHS} HotpotQA dev paragraphs`);
  });

  it('ingests one document per paragraph', () => {
    expect(figure('documents (paragraphs)')).toBe(PARAGRAPHS);
  });

  it('stores every chunk it reports', () => {
    const created = figure('chunks created (ingest report)');
    expect(created).toBeGreaterThan(0);
    expect(created).toBe(figure('chunks in the store (catalog)'));
  });

  it('writes a full and a summary packet per variant', () => {
    const chunks = figure('chunks in the store (catalog)');
    // "naive and adapter A and adapter A-first (conditioned-kv)" names three variants.
    const variants = valueOf(figures(), 'packet variants per chunk and summary').split(' and adapter ').length;
    expect(variants).toBe(3);
    const packets = figure('packet files');
    // Every chunk has a full packet per variant. A chunk whose summary is empty has no summary packet.
    expect(packets).toBeGreaterThanOrEqual(variants * chunks);
    expect(packets).toBeLessThanOrEqual(2 * variants * chunks);
    expect(figure('packet bytes on disk')).toBeGreaterThan(0);
  });

  it('counts every prefilled token', () => {
    const chunkTokens = figure('chunk tokens');
    const summaryTokens = figure('summary tokens');
    expect(chunkTokens).toBeGreaterThanOrEqual(figure('chunks in the store (catalog)'));
    expect(summaryTokens).toBeGreaterThan(0);
    expect(summaryTokens).toBeLessThan(chunkTokens);
    expect(figure('tokens prefilled for packets (chunks, summaries, adapter entries)')).toBeGreaterThanOrEqual(chunkTokens + summaryTokens);
  });

  it('derives the rates from the same figures', () => {
    const seconds = figure('ingest wall time, s');
    const ingestRate = figure('chunk tokens per second, ingestion');
    const rawRate = figure('raw prefill tokens per second (same chunks, one per call, no logits)');
    expect(seconds).toBeGreaterThan(0);
    expect(rawRate).toBeGreaterThan(0);
    // The wall time is printed to 10 ms, so the recomputed rate may differ by that share.
    expect(Math.abs(ingestRate - figure('chunk tokens') / seconds)).toBeLessThanOrEqual(ingestRate * (0.01 / seconds) + 1);
    expect(figure('ingestion ÷ raw prefill')).toBeCloseTo(ingestRate / rawRate, 2);
  });

  it('accounts for the wall time in its stages', () => {
    const stages = new Map(section.tables[1].rows.map((row) => [row[0], numberIn(row[1])]));
    const total = stages.get('total (wall)')!;
    const parts = [
      'open store and plan (load, normalize, tokenize, chunk)',
      'chunk processing: packet prefills, summaries, packet writes',
      'embedding (hashed embedder)',
      'catalog transactions and index updates (rest of the commit phase)',
      'save index, remove orphan packets, close store',
    ].map((stage) => stages.get(stage));
    for (const part of parts) {
      expect(part).toBeDefined();
      expect(part!).toBeGreaterThanOrEqual(0);
    }
    // Each row is rounded to a whole millisecond.
    expect(Math.abs(parts.reduce((sum, part) => sum! + part!, 0)! - total)).toBeLessThanOrEqual(parts.length);
    expect(stages.get('of which a packet write in flight (encode, sha256, atomic write)')).toBeLessThanOrEqual(
      stages.get('chunk processing: packet prefills, summaries, packet writes')!,
    );
    // Seconds are printed to 10 ms and milliseconds to 1 ms.
    expect(Math.abs(figure('ingest wall time, s') * 1000 - total)).toBeLessThanOrEqual(6);
  });

  it('logs its steps and removes the store', () => {
    expect(logLines[0]).toBe(`ingest rate: ingesting ${PARAGRAPHS} HotpotQA paragraphs`);
    expect(logLines[1]).toBe(`ingest rate: raw prefill of ${figure('chunks in the store (catalog)')} chunks`);
    expect(readdirSync(scratchDir)).toEqual([]);
  });

  it('rejects a model folder other than the engine', async () => {
    const other = testModelDir('llama-tiny');
    const error = await rejection(measureIngestRate(engine, other, { quick: true, scratchDir, log: () => {}, paragraphs: 2 }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe(
      `Invalid model folder ${other} for the ingest benchmark: the engine was loaded from ${engine.folder.dir}. Pass the folder the engine was loaded from.`,
    );
  });

  it('rejects a paragraph count of zero', async () => {
    const error = await rejection(measureIngestRate(engine, modelDir(), { quick: true, scratchDir, log: () => {}, paragraphs: 0 }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe('Invalid paragraph count 0: use a whole number, 1 or more.');
  });
});
