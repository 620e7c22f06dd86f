import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { convert, type HtmlToTextOptions } from 'html-to-text';
import { decodeAndNormalize, isBlank, normalizeString, type InvalidUtf8 } from './normalize.js';
import type { SourceFile } from './sources.js';

/** One document read from a source file: a whole file, or one record of a JSON Lines file. */
export interface LoadedDocument {
  /** The absolute file path, or `path#line` (`path#line:index` for nested records) for JSON Lines. */
  id: string;
  /** Absolute path of the file the document came from. */
  sourcePath: string;
  /** Document title; empty when the source has none. */
  title: string;
  /** Normalized text (see `decodeAndNormalize`). */
  text: string;
  /** sha256 (hex) of the title and text, so a change to either replaces the document. */
  contentHash: string;
}

/** Something ingestion skipped or repaired, reported to the user without stopping the batch. */
export interface IngestWarning {
  kind: 'unsupported-file' | 'invalid-utf8' | 'empty-document' | 'invalid-json' | 'missing-field' | 'read-failed';
  /** File path, or document id for a JSON Lines record. */
  source: string;
  message: string;
  /** Byte offsets of invalid UTF-8 sequences, for `invalid-utf8`. */
  byteOffsets?: number[];
}

export interface JsonlFields {
  /** Dotted path of the text in each record. Default `text`. */
  textField: string;
  /** Dotted path of the title in each record; a record without it gets an empty title. Default `title`. */
  titleField: string;
  /**
   * Dotted path of an array of records inside each line, for datasets that nest several documents
   * in one line; each element becomes one document. Unset: each line is one record.
   */
  recordsField?: string;
}

export const defaultJsonlFields: JsonlFields = Object.freeze({ textField: 'text', titleField: 'title' });

export interface LoadResult {
  documents: LoadedDocument[];
  warnings: IngestWarning[];
}

/** At most this many byte offsets are listed in one invalid UTF-8 warning. */
const MAX_LISTED_OFFSETS = 10;

/**
 * Reads one source file into documents. Problems that affect part of a file (invalid UTF-8,
 * an empty file, a malformed JSON line) become warnings. A file that cannot be read at all yields
 * no documents and a `read-failed` warning.
 */
export function loadSourceFile(file: SourceFile, jsonl: JsonlFields = defaultJsonlFields): LoadResult {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file.path);
  } catch (error) {
    return { documents: [], warnings: [{ kind: 'read-failed', source: file.path, message: `Failed to read ${file.path}: ${(error as Error).message}. Check that the file is readable.` }] };
  }
  const decoded = decodeAndNormalize(bytes);
  const warnings: IngestWarning[] = [];
  if (decoded.invalidUtf8.length > 0) {
    warnings.push(invalidUtf8Warning(file.path, decoded.invalidUtf8));
  }
  const documents = file.kind === 'jsonl' ? readJsonlRecords(file.path, decoded.text, jsonl, warnings) : [readWholeFile(file, decoded.text)];
  const nonEmpty: LoadedDocument[] = [];
  for (const document of documents) {
    if (isBlank(document.text)) {
      warnings.push({
        kind: 'empty-document',
        source: document.id,
        message: `${document.id} is empty or contains only white space; it yields no chunk.`,
      });
    } else {
      nonEmpty.push(document);
    }
  }
  return { documents: nonEmpty, warnings };
}

function readWholeFile(file: SourceFile, text: string): LoadedDocument {
  switch (file.kind) {
    case 'html':
      return makeDocument(file.path, file.path, htmlTitle(text), htmlToText(text));
    case 'markdown':
      return makeDocument(file.path, file.path, markdownTitle(text), text);
    default:
      return makeDocument(file.path, file.path, '', text);
  }
}

function makeDocument(id: string, sourcePath: string, title: string, text: string): LoadedDocument {
  const contentHash = createHash('sha256').update(title).update('\0').update(text).digest('hex');
  return { id, sourcePath, title, text, contentHash };
}

function invalidUtf8Warning(source: string, invalid: InvalidUtf8[]): IngestWarning {
  const offsets = invalid.map((entry) => entry.byteOffset);
  const listed = offsets.slice(0, MAX_LISTED_OFFSETS).join(', ');
  const more = offsets.length > MAX_LISTED_OFFSETS ? ` and ${offsets.length - MAX_LISTED_OFFSETS} more` : '';
  return {
    kind: 'invalid-utf8',
    source,
    message: `${source} has ${offsets.length} invalid UTF-8 sequence(s), replaced by U+FFFD, at byte offset(s) ${listed}${more}.`,
    byteOffsets: offsets,
  };
}

const htmlOptions: HtmlToTextOptions = {
  wordwrap: false,
  selectors: [
    { selector: 'a', options: { ignoreHref: true } },
    { selector: 'img', format: 'skip' },
    ...['h1', 'h2', 'h3', 'h4', 'h5', 'h6'].map((selector) => ({ selector, options: { uppercase: false } })),
    { selector: 'table', format: 'dataTable' },
  ],
};

/**
 * Converts HTML to text with html-to-text: headings as their own paragraphs, one blank line between
 * blocks (html-to-text puts two before some headings), links as their text, images and scripts dropped.
 */
export function htmlToText(html: string): string {
  return normalizeString(convert(html, htmlOptions)).text.replace(/\n{3,}/g, '\n\n').trim();
}

/** Returns the `<title>` of an HTML page, else its first `<h1>`, else empty. */
export function htmlTitle(html: string): string {
  for (const selector of ['title', 'h1']) {
    const text = convert(html, { ...htmlOptions, baseElements: { selectors: [selector], returnDomByDefault: false } });
    const firstLine = text.trim().split('\n')[0]?.trim() ?? '';
    if (firstLine) return firstLine;
  }
  return '';
}

/** Returns the text of the first ATX (`# Title`) or setext (`Title` over `===`) heading, else empty. */
export function markdownTitle(markdown: string): string {
  const lines = markdown.split('\n');
  let inFence = false;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (/^\s{0,3}(```|~~~)/.test(line)) inFence = !inFence;
    if (inFence) continue;
    const atx = /^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (atx && atx[1]) return atx[1];
    const next = lines[i + 1];
    if (line.trim() && next !== undefined && /^\s{0,3}(=+|-+)\s*$/.test(next) && !/^\s{0,3}[-*_]/.test(line)) {
      return line.trim();
    }
  }
  return '';
}

function readJsonlRecords(file: string, text: string, fields: JsonlFields, warnings: IngestWarning[]): LoadedDocument[] {
  const documents: LoadedDocument[] = [];
  const lines = text.split('\n');
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index];
    if (isBlank(line)) continue;
    const lineNumber = index + 1;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (error) {
      warnings.push({ kind: 'invalid-json', source: `${file}#${lineNumber}`, message: `${file} line ${lineNumber} is not valid JSON (${(error as Error).message}); skipped.` });
      continue;
    }
    for (const { id, record } of lineRecords(file, lineNumber, value, fields, warnings)) {
      const document = recordToDocument(file, id, record, fields, warnings);
      if (document) documents.push(document);
    }
  }
  return documents;
}

function lineRecords(file: string, lineNumber: number, value: unknown, fields: JsonlFields, warnings: IngestWarning[]): { id: string; record: unknown }[] {
  const lineId = `${file}#${lineNumber}`;
  if (fields.recordsField === undefined) {
    return [{ id: lineId, record: value }];
  }
  const records = readField(value, fields.recordsField);
  if (!Array.isArray(records)) {
    warnings.push({ kind: 'missing-field', source: lineId, message: `${lineId} has no array at "${fields.recordsField}"; skipped.` });
    return [];
  }
  return records.map((record, index) => ({ id: `${lineId}:${index}`, record }));
}

function recordToDocument(file: string, id: string, record: unknown, fields: JsonlFields, warnings: IngestWarning[]): LoadedDocument | undefined {
  const text = readField(record, fields.textField);
  if (typeof text !== 'string') {
    warnings.push({
      kind: 'missing-field',
      source: id,
      message: `${id} has no string at "${fields.textField}"; skipped. Set the text field with --jsonl-text-field.`,
    });
    return undefined;
  }
  const title = readField(record, fields.titleField);
  return makeDocument(id, file, typeof title === 'string' ? normalizeString(title).text.trim() : '', normalizeString(text).text);
}

/** Reads a dotted path (`a.b.c`) from a JSON value; undefined when any step is missing. */
export function readField(value: unknown, dottedPath: string): unknown {
  let current = value;
  for (const key of dottedPath.split('.')) {
    if (typeof current !== 'object' || current === null || !Object.hasOwn(current, key)) return undefined;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}
