import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { measurePacketIo } from '../../../bench/suite/packet-io.js';
import type { ReportSection, ReportTable } from '../../../bench/suite/report-types.js';
import { InferenceEngine } from '../../../inference/engine.js';
import { testModelDir } from '../../helpers/models.js';
import { rejection } from '../../helpers/errors.js';

const CHUNK_TOKENS = 64;
const ELEMENT_BYTES = { float32: 4, float16: 2, int8: 1 } as const;
const DTYPES = ['float32', 'float16', 'int8'] as const;

/** Parses a report cell such as "1,280" or "646.1" (the tables use thousands separators). */
function numberIn(cell: string): number {
  const value = Number(cell.replaceAll(',', ''));
  expect(Number.isFinite(value), `cell "${cell}" is not a number`).toBe(true);
  return value;
}

/** Returns the row of `dtype` as a map from column name to cell. */
function rowOf(table: ReportTable, dtype: string): Record<string, string> {
  const row = table.rows.find((cells) => cells[0] === dtype);
  expect(row, `no row for ${dtype}`).toBeDefined();
  return Object.fromEntries(table.columns.map((column, index) => [column, row![index]]));
}

describe('packet load benchmark on stories260K', () => {
  let engine: InferenceEngine;
  let scratchDir: string;
  let section: ReportSection;
  const logLines: string[] = [];

  beforeAll(async () => {
    engine = await InferenceEngine.load(testModelDir('stories260K'));
    scratchDir = mkdtempSync(path.join(tmpdir(), 'kvpack-packet-io-test-'));
    section = await measurePacketIo(engine, { quick: true, scratchDir, log: (line) => logLines.push(line), chunkTokens: CHUNK_TOKENS });
  });
  afterAll(async () => {
    await engine?.release();
    rmSync(scratchDir, { recursive: true, force: true });
  });

  it('reports a size table and a load table per dtype', () => {
    expect(section.title).toBe('Packet size and load throughput');
    expect(section.tables).toHaveLength(2);
    for (const table of section.tables) {
      expect(table.rows.map((row) => row[0])).toEqual([...DTYPES]);
      for (const row of table.rows) expect(row).toHaveLength(table.columns.length);
    }
    expect(section.intro.join(' ')).toContain(`${CHUNK_TOKENS} tokens of HotpotQA text`);
    expect(section.notes?.join(' ')).toContain('warm page cache');
  });

  it('computes KV bytes per token from the shapes', () => {
    const { numLayers, numKvHeads, headDim } = engine.layout;
    for (const dtype of DTYPES) {
      const row = rowOf(section.tables[0], dtype);
      expect(numberIn(row['KV bytes/token (shapes)'])).toBe(2 * numLayers * numKvHeads * headDim * ELEMENT_BYTES[dtype]);
    }
  });

  it('measures file bytes per token at or above the KV bytes', () => {
    for (const dtype of DTYPES) {
      const row = rowOf(section.tables[0], dtype);
      const implied = numberIn(row['KV bytes/token (shapes)']);
      const fileBytes = numberIn(row['file bytes']);
      expect(numberIn(row['file bytes/token'])).toBeCloseTo(fileBytes / CHUNK_TOKENS, 1);
      expect(fileBytes / CHUNK_TOKENS).toBeGreaterThanOrEqual(implied);
    }
  });

  it('splits the overhead into token ids and a small fixed part', () => {
    const { numLayers, numKvHeads } = engine.layout;
    for (const dtype of DTYPES) {
      const row = rowOf(section.tables[0], dtype);
      const overhead = numberIn(row['overhead bytes']);
      const tokenIds = numberIn(row['of which token ids']);
      const fixed = numberIn(row['of which fixed']);
      expect(overhead).toBe(numberIn(row['file bytes']) - CHUNK_TOKENS * numberIn(row['KV bytes/token (shapes)']));
      expect(tokenIds).toBe(4 * CHUNK_TOKENS);
      expect(overhead).toBe(tokenIds + fixed);
      // The 44-byte prelude at least. The header's other fields take a few hundred bytes.
      expect(fixed).toBeGreaterThanOrEqual(44);
      expect(fixed).toBeLessThan(1024 + (dtype === 'int8' ? 8 * numLayers * numKvHeads : 0));
    }
    const fixedOf = (dtype: string) => numberIn(rowOf(section.tables[0], dtype)['of which fixed']);
    expect(fixedOf('float16')).toBe(fixedOf('float32'));
    // int8 adds one float32 scale per layer, key or value, and KV head, and the padding may shift by up to 8 bytes.
    const scaleBytes = 8 * numLayers * numKvHeads;
    expect(Math.abs(fixedOf('int8') - fixedOf('float32') - scaleBytes)).toBeLessThanOrEqual(8);
  });

  it('reports positive load and raw read rates', () => {
    for (const dtype of DTYPES) {
      const row = rowOf(section.tables[1], dtype);
      for (const column of ['load MB/s (file bytes)', 'load MB/s (float32 KV)', 'raw read MB/s', 'load ÷ raw read']) {
        expect(numberIn(row[column]), `${dtype} ${column}`).toBeGreaterThan(0);
      }
      expect(row['store get ms, median (p25–p75)']).toMatch(/^[\d.]+ \([\d.]+–[\d.]+\)$/);
      expect(row['fs.readFile ms, median (p25–p75)']).toMatch(/^[\d.]+ \([\d.]+–[\d.]+\)$/);
    }
  });

  it('counts decoded bytes above file bytes only for compact dtypes', () => {
    // Both rates divide by the same median time, so their order follows the byte counts alone.
    const rates = (dtype: string) => {
      const row = rowOf(section.tables[1], dtype);
      return { file: numberIn(row['load MB/s (file bytes)']), decoded: numberIn(row['load MB/s (float32 KV)']) };
    };
    expect(rates('float32').decoded).toBeLessThanOrEqual(rates('float32').file);
    expect(rates('float16').decoded).toBeGreaterThan(rates('float16').file);
    expect(rates('int8').decoded).toBeGreaterThan(rates('int8').file);
  });

  it('logs each dtype and removes its files', () => {
    expect(logLines).toEqual(DTYPES.map((dtype) => `packet io: ${dtype} packet of ${CHUNK_TOKENS} tokens`));
    expect(readdirSync(scratchDir)).toEqual([]);
  });

  it('rejects a chunk longer than the model positions', async () => {
    const error = await rejection(measurePacketIo(engine, { quick: true, scratchDir, log: () => {}, chunkTokens: 513 }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe(
      "Invalid chunk length 513 for the packet load benchmark: use a whole number of tokens from 1 to 512, the model's maximum positions.",
    );
  });

  it('rejects an empty chunk', async () => {
    const error = await rejection(measurePacketIo(engine, { quick: true, scratchDir, log: () => {}, chunkTokens: 0 }));
    expect(error.message).toContain('Invalid chunk length 0 for the packet load benchmark');
  });
});
