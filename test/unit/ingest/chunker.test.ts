import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chunkText, validateChunking, type TextChunk } from '../../../ingest/chunker.js';
import { buildByteTokenizerFiles, writeTokenizerFiles } from '../../../inference/tokenizer-json.js';
import { Tokenizer } from '../../../inference/tokenizer.js';

// A byte-level tokenizer: one token per UTF-8 byte, so token counts are byte counts.
let tokenizer: Tokenizer;
let dir: string;
beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'kvpack-chunker-'));
  await writeTokenizerFiles(dir, buildByteTokenizerFiles(512, { modelMaxLength: 512 }));
  tokenizer = await Tokenizer.fromFolder(dir);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const graphemeBoundaries = (text: string) => {
  const boundaries = new Set<number>([text.length]);
  for (const segment of new Intl.Segmenter('en', { granularity: 'grapheme' }).segment(text)) boundaries.add(segment.index);
  return boundaries;
};

function expectWellFormed(text: string, chunks: TextChunk[], maxTokens: number): void {
  const boundaries = graphemeBoundaries(text);
  for (const chunk of chunks) {
    expect(chunk.text).toBe(text.slice(chunk.start, chunk.end));
    expect(chunk.tokens.length).toBeLessThanOrEqual(maxTokens);
    expect(Array.from(chunk.tokens)).toEqual(Array.from(tokenizer.encode(chunk.text)));
    expect(boundaries.has(chunk.start), `start ${chunk.start} on a grapheme boundary`).toBe(true);
    expect(boundaries.has(chunk.end), `end ${chunk.end} on a grapheme boundary`).toBe(true);
  }
}

describe('chunkText', () => {
  it('keeps a short text in one chunk', () => {
    const chunks = chunkText('One sentence. Two sentences.', tokenizer, { targetTokens: 48, maxTokens: 64, overlapTokens: 0 });
    expect(chunks).toHaveLength(1);
    expect(chunks[0]).toMatchObject({ text: 'One sentence. Two sentences.', start: 0, end: 28 });
  });

  it('breaks at sentence boundaries within the target', () => {
    const text = 'Alpha beta gamma. Delta epsilon zeta. Eta theta iota. Kappa lambda mu.';
    const chunks = chunkText(text, tokenizer, { targetTokens: 40, maxTokens: 50, overlapTokens: 0 });
    expect(chunks.map((chunk) => chunk.text)).toEqual(['Alpha beta gamma. Delta epsilon zeta.', 'Eta theta iota. Kappa lambda mu.']);
    expectWellFormed(text, chunks, 50);
  });

  it('prefers paragraph boundaries', () => {
    const text = 'First paragraph here.\n\nSecond one. It goes on.';
    const chunks = chunkText(text, tokenizer, { targetTokens: 40, maxTokens: 60, overlapTokens: 0 });
    expect(chunks.map((chunk) => chunk.text)).toEqual(['First paragraph here.', 'Second one. It goes on.']);
  });

  it('joins short paragraphs', () => {
    const text = 'Hi.\n\nYo.\n\nOk.';
    const chunks = chunkText(text, tokenizer, { targetTokens: 40, maxTokens: 60, overlapTokens: 0 });
    expect(chunks.map((chunk) => chunk.text)).toEqual([text]);
  });

  it('splits a long sentence between words', () => {
    const text = 'word '.repeat(30).trim() + '.';
    const chunks = chunkText(text, tokenizer, { targetTokens: 20, maxTokens: 24, overlapTokens: 0 });
    expect(chunks.length).toBeGreaterThan(1);
    for (const chunk of chunks) expect(chunk.text).toMatch(/^word( word)*\.?$/);
    expectWellFormed(text, chunks, 24);
    expect(chunks.map((chunk) => chunk.text).join(' ')).toBe(text);
  });

  it('keeps an emoji at a boundary whole', () => {
    const family = '\u{1F468}\u200D\u{1F469}\u200D\u{1F467}';
    // 18 UTF-8 bytes for the emoji; the run of letters puts it across the 24-token limit.
    const text = `${'x'.repeat(15)}${family}${'y'.repeat(20)}`;
    const chunks = chunkText(text, tokenizer, { targetTokens: 20, maxTokens: 24, overlapTokens: 0 });
    expectWellFormed(text, chunks, 24);
    expect(chunks.map((chunk) => chunk.text).join('')).toBe(text);
    const holding = chunks.filter((chunk) => chunk.text.includes('\u{1F468}') || chunk.text.includes('\u{1F467}'));
    expect(holding).toHaveLength(1);
    expect(holding[0].text).toContain(family);
    for (const chunk of chunks) expect(chunk.text).not.toContain('\uFFFD');
  });

  it('repeats whole sentences as overlap', () => {
    const text = 'Aa aa aa. Bb bb bb. Cc cc cc. Dd dd dd. Ee ee ee.';
    const chunks = chunkText(text, tokenizer, { targetTokens: 30, maxTokens: 30, overlapTokens: 10 });
    expect(chunks.map((chunk) => chunk.text)).toEqual(['Aa aa aa. Bb bb bb. Cc cc cc.', 'Cc cc cc. Dd dd dd. Ee ee ee.']);
    expectWellFormed(text, chunks, 30);
  });

  it('yields nothing for blank text', () => {
    expect(chunkText(' \n\n \t', tokenizer)).toEqual([]);
  });

  it('covers every non-space character once without overlap', () => {
    const text = 'Lorem ipsum dolor sit amet. '.repeat(20) + '\n\n' + 'Consectetur adipiscing elit! '.repeat(15);
    const chunks = chunkText(text, tokenizer, { targetTokens: 48, maxTokens: 64, overlapTokens: 0 });
    expectWellFormed(text, chunks, 64);
    for (let c = 1; c < chunks.length; c++) expect(chunks[c].start).toBeGreaterThanOrEqual(chunks[c - 1].end);
    const joined = chunks.map((chunk) => chunk.text).join('').replace(/\s/g, '');
    expect(joined).toBe(text.replace(/\s/g, ''));
  });
});

describe('validateChunking', () => {
  it('throws for inconsistent lengths', () => {
    expect(() => validateChunking({ targetTokens: 64, maxTokens: 48, overlapTokens: 0 })).toThrow(
      'Invalid chunk lengths: target 64 and maximum 48 tokens; expected integers with 1 <= target <= maximum.',
    );
    expect(() => validateChunking({ targetTokens: 48, maxTokens: 64, overlapTokens: 48 })).toThrow(
      'Invalid chunk overlap 48: expected an integer from 0 to 47 (below the target length).',
    );
  });
});
