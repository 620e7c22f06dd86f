import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { KvpackError } from '../../common/errors.js';

/**
 * Reads training documents from corpus files. JSONL (`.jsonl`, `.ndjson`): per line a JSON string,
 * an object with a string field `text` (or `content`, `paragraph`), or an object whose
 * `contexts[].paragraph_text` are documents (the HotpotQA layout). Any other file is plain text
 * whose documents are separated by blank lines.
 */
export function readCorpusDocuments(files: readonly string[]): string[] {
  if (files.length === 0) {
    throw new KvpackError('INVALID_ARGUMENT', 'No corpus files were given; pass at least one text or JSONL file.');
  }
  const documents: string[] = [];
  for (const file of files) {
    if (!existsSync(file)) {
      throw new KvpackError('INVALID_ARGUMENT', `Corpus file not found: ${path.resolve(file)}.`);
    }
    const content = readFileSync(file, 'utf8');
    const extension = path.extname(file).toLowerCase();
    const found = extension === '.jsonl' || extension === '.ndjson' ? jsonlDocuments(content, file) : textDocuments(content);
    documents.push(...found);
  }
  if (documents.length === 0) {
    throw new KvpackError('INVALID_ARGUMENT', `The corpus files ${files.join(', ')} contain no text.`);
  }
  return documents;
}

function textDocuments(content: string): string[] {
  return content
    .split(/\r?\n\s*\r?\n/)
    .map((part) => part.trim())
    .filter((part) => part.length > 0);
}

function jsonlDocuments(content: string, file: string): string[] {
  const documents: string[] = [];
  content.split(/\r?\n/).forEach((line, index) => {
    if (line.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (error) {
      throw new KvpackError('INVALID_ARGUMENT', `${file}:${index + 1} is not valid JSON: ${(error as Error).message}.`);
    }
    const texts = typeof value === 'string' ? [value] : lineTexts(value);
    if (texts.length === 0) {
      throw new KvpackError(
        'INVALID_ARGUMENT',
        `${file}:${index + 1} has no document text: expected a JSON string, an object with a string field text, content ` +
          'or paragraph, or an object with contexts[].paragraph_text (HotpotQA).',
      );
    }
    for (const text of texts) {
      if (text.trim() !== '') documents.push(text.trim());
    }
  });
  return documents;
}

/** Returns the documents of one JSONL object: its text field, or each paragraph of its contexts. */
function lineTexts(value: unknown): string[] {
  if (typeof value !== 'object' || value === null) return [];
  const record = value as Record<string, unknown>;
  for (const key of ['text', 'content', 'paragraph']) {
    if (typeof record[key] === 'string') return [record[key] as string];
  }
  if (Array.isArray(record.contexts)) {
    return record.contexts
      .map((context) => (context as Record<string, unknown> | null)?.paragraph_text)
      .filter((text): text is string => typeof text === 'string');
  }
  return [];
}
