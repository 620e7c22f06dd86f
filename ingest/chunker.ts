import { KvpackError } from '../common/errors.js';

/** Chunk sizes in tokens of the model's tokenizer. */
export interface ChunkingOptions {
  /** Length a chunk is filled up to, in tokens. */
  targetTokens: number;
  /** Hard limit of a chunk, in tokens; a short chunk may grow past the target up to this. */
  maxTokens: number;
  /** Tokens repeated from the end of one chunk at the start of the next, rounded down to whole sentences. 0 disables. */
  overlapTokens: number;
}

export const defaultChunking: ChunkingOptions = Object.freeze({ targetTokens: 48, maxTokens: 64, overlapTokens: 0 });

/** The part of a tokenizer the chunker needs; `inference/tokenizer.ts` `Tokenizer` has it. */
export interface TokenEncoder {
  encode(text: string): Int32Array;
}

export interface TextChunk {
  /** `text.slice(start, end)` of the document. */
  text: string;
  /** Span in UTF-16 code units of the normalized document text, `[start, end)`. */
  start: number;
  end: number;
  /** Token ids of `text` encoded alone, without BOS: `[tokens]`. */
  tokens: Int32Array;
}

/** A piece of text that is never split further unless it alone exceeds the maximum. */
interface Unit {
  start: number;
  end: number;
  /** True when the unit begins a paragraph, where a chunk should preferably begin. */
  paragraphStart: boolean;
  tokenCount: number;
}

const sentenceSegmenter = new Intl.Segmenter('en', { granularity: 'sentence' });
const graphemeSegmenter = new Intl.Segmenter('en', { granularity: 'grapheme' });

/**
 * Cuts a document into chunks of about `targetTokens` tokens and at most `maxTokens`. Chunks end at
 * sentence boundaries and preferably at paragraph boundaries. A sentence longer than the maximum is
 * cut between words, and a word longer than that between grapheme clusters (Intl.Segmenter), so no
 * code point or grapheme cluster is split.
 *
 * NOTE: a single grapheme cluster longer than `maxTokens` tokens stays whole in a chunk that
 * exceeds the maximum.
 */
export function chunkText(text: string, tokenizer: TokenEncoder, options: ChunkingOptions = defaultChunking): TextChunk[] {
  validateChunking(options);
  const units = segmentUnits(text, tokenizer, options.maxTokens);
  return packUnits(text, units, tokenizer, options);
}

/** Raises INVALID_ARGUMENT unless 1 <= target <= max and 0 <= overlap < target. */
export function validateChunking(options: ChunkingOptions): void {
  const { targetTokens, maxTokens, overlapTokens } = options;
  const isCount = (value: number, min: number) => Number.isInteger(value) && value >= min;
  if (!isCount(targetTokens, 1) || !isCount(maxTokens, 1) || targetTokens > maxTokens) {
    throw new KvpackError(
      'INVALID_ARGUMENT',
      `Invalid chunk lengths: target ${targetTokens} and maximum ${maxTokens} tokens; expected integers with 1 <= target <= maximum.`,
    );
  }
  if (!isCount(overlapTokens, 0) || overlapTokens >= targetTokens) {
    throw new KvpackError('INVALID_ARGUMENT', `Invalid chunk overlap ${overlapTokens}: expected an integer from 0 to ${targetTokens - 1} (below the target length).`);
  }
}

/** Splits the text into sentences, and sentences longer than `maxTokens` into words or graphemes. */
function segmentUnits(text: string, tokenizer: TokenEncoder, maxTokens: number): Unit[] {
  const units: Unit[] = [];
  for (const paragraph of paragraphSpans(text)) {
    let first = true;
    for (const sentence of sentenceSegmenter.segment(text.slice(paragraph.start, paragraph.end))) {
      const span = trimSpan(text, paragraph.start + sentence.index, paragraph.start + sentence.index + sentence.segment.length);
      if (!span) continue;
      const tokenCount = tokenizer.encode(text.slice(span.start, span.end)).length;
      const unit = { ...span, paragraphStart: first, tokenCount };
      first = false;
      if (tokenCount <= maxTokens) {
        units.push(unit);
      } else {
        units.push(...splitLongUnit(text, unit, tokenizer, maxTokens));
      }
    }
  }
  return units;
}

/** Sentence spans of a text, within paragraphs, trimmed of white space (UTF-16 offsets `[start, end)`). */
export function splitSentences(text: string): { start: number; end: number }[] {
  const spans: { start: number; end: number }[] = [];
  for (const paragraph of paragraphSpans(text)) {
    for (const sentence of sentenceSegmenter.segment(text.slice(paragraph.start, paragraph.end))) {
      const span = trimSpan(text, paragraph.start + sentence.index, paragraph.start + sentence.index + sentence.segment.length);
      if (span) spans.push(span);
    }
  }
  return spans;
}

/** Paragraphs: runs of text separated by blank lines. */
function paragraphSpans(text: string): { start: number; end: number }[] {
  const spans: { start: number; end: number }[] = [];
  const separator = /\n[ \t]*\n\s*/g;
  let start = 0;
  for (const match of text.matchAll(separator)) {
    spans.push({ start, end: match.index });
    start = match.index + match[0].length;
  }
  spans.push({ start, end: text.length });
  return spans.filter((span) => span.end > span.start);
}

function trimSpan(text: string, start: number, end: number): { start: number; end: number } | undefined {
  let s = start;
  let e = end;
  while (s < e && /\s/u.test(text[s])) s++;
  while (e > s && /\s/u.test(text[e - 1])) e--;
  return e > s ? { start: s, end: e } : undefined;
}

/** Cuts an oversized sentence between words; an oversized word is cut between grapheme clusters. */
function splitLongUnit(text: string, unit: Unit, tokenizer: TokenEncoder, maxTokens: number): Unit[] {
  const pieces: Unit[] = [];
  const sentence = text.slice(unit.start, unit.end);
  for (const word of sentence.matchAll(/\S+/gu)) {
    const start = unit.start + word.index;
    const end = start + word[0].length;
    const tokenCount = tokenizer.encode(word[0]).length;
    if (tokenCount <= maxTokens) {
      pieces.push({ start, end, paragraphStart: false, tokenCount });
    } else {
      pieces.push(...splitLongWord(text, start, end, tokenizer, maxTokens));
    }
  }
  const merged = packPieces(text, pieces, tokenizer, maxTokens);
  if (merged.length > 0) merged[0].paragraphStart = unit.paragraphStart;
  return merged;
}

function splitLongWord(text: string, start: number, end: number, tokenizer: TokenEncoder, maxTokens: number): Unit[] {
  const graphemes: Unit[] = [];
  for (const grapheme of graphemeSegmenter.segment(text.slice(start, end))) {
    const graphemeStart = start + grapheme.index;
    graphemes.push({
      start: graphemeStart,
      end: graphemeStart + grapheme.segment.length,
      paragraphStart: false,
      tokenCount: tokenizer.encode(grapheme.segment).length,
    });
  }
  return packPieces(text, graphemes, tokenizer, maxTokens);
}

/**
 * Joins adjacent pieces into units of at most `maxTokens` tokens (checked by encoding), balanced so
 * that an oversized sentence splits into parts of about equal length instead of full parts and a
 * short remainder.
 */
function packPieces(text: string, pieces: Unit[], tokenizer: TokenEncoder, maxTokens: number): Unit[] {
  const units: Unit[] = [];
  const total = pieces.reduce((sum, piece) => sum + piece.tokenCount, 0);
  const partTokens = Math.min(maxTokens, Math.ceil(total / Math.ceil(total / maxTokens)));
  let i = 0;
  while (i < pieces.length) {
    let j = i + 1;
    let estimate = pieces[i].tokenCount;
    while (j < pieces.length && estimate + pieces[j].tokenCount <= partTokens) {
      estimate += pieces[j].tokenCount;
      j++;
    }
    let count = tokenizer.encode(text.slice(pieces[i].start, pieces[j - 1].end)).length;
    while (count > maxTokens && j - 1 > i) {
      j--;
      count = tokenizer.encode(text.slice(pieces[i].start, pieces[j - 1].end)).length;
    }
    units.push({ start: pieces[i].start, end: pieces[j - 1].end, paragraphStart: pieces[i].paragraphStart, tokenCount: count });
    i = j;
  }
  return units;
}

/**
 * Packs units into chunks: a unit joins the chunk while the chunk stays within the target, or
 * within the maximum while the chunk is under half the target. A paragraph start closes a chunk
 * that already contains half the target.
 */
function packUnits(text: string, units: Unit[], tokenizer: TokenEncoder, options: ChunkingOptions): TextChunk[] {
  const { targetTokens, maxTokens, overlapTokens } = options;
  const chunks: TextChunk[] = [];
  let i = 0;
  while (i < units.length) {
    let j = i + 1;
    let total = units[i].tokenCount;
    while (j < units.length) {
      const next = units[j];
      const fits = total + next.tokenCount <= targetTokens || (total < targetTokens / 2 && total + next.tokenCount <= maxTokens);
      if (!fits || (next.paragraphStart && total >= targetTokens / 2)) break;
      total += next.tokenCount;
      j++;
    }
    let tokens = tokenizer.encode(text.slice(units[i].start, units[j - 1].end));
    while (tokens.length > maxTokens && j - 1 > i) {
      j--;
      tokens = tokenizer.encode(text.slice(units[i].start, units[j - 1].end));
    }
    const start = units[i].start;
    const end = units[j - 1].end;
    chunks.push({ text: text.slice(start, end), start, end, tokens });
    i = j >= units.length ? j : overlapStart(units, i, j, overlapTokens);
  }
  return chunks;
}

/** Returns the first unit of the next chunk: the latest units of this chunk that fit in the overlap, but always past `i`. */
function overlapStart(units: Unit[], i: number, j: number, overlapTokens: number): number {
  let k = j;
  let sum = 0;
  while (k - 1 > i && sum + units[k - 1].tokenCount <= overlapTokens) {
    sum += units[k - 1].tokenCount;
    k--;
  }
  return k;
}
