import { existsSync } from 'node:fs';
import { hotpotqaFile, readHotpotQuestions } from '../../cli/demo-corpus.js';
import { KvpackError } from '../../common/errors.js';
import { findSharedDir } from '../../common/paths.js';

export interface HotpotParagraph {
  /** Title of the Wikipedia article the paragraph comes from. */
  title: string;
  text: string;
}

/**
 * Reads the first `count` paragraphs of the HotpotQA dev file in the shared assets folder, question
 * by question in file order. The same paragraph may occur under several questions. Throws
 * SOURCE_NOT_FOUND when the file is missing and INVALID_ARGUMENT when it has fewer paragraphs.
 */
export function readHotpotParagraphs(count: number): HotpotParagraph[] {
  if (!Number.isSafeInteger(count) || count < 1) {
    throw new KvpackError('INVALID_ARGUMENT', `Invalid paragraph count ${count}: use a whole number, 1 or more.`);
  }
  const shared = findSharedDir();
  const file = shared && hotpotqaFile(shared);
  if (!file || !existsSync(file)) {
    throw new KvpackError(
      'SOURCE_NOT_FOUND',
      `The HotpotQA dev file was not found${file ? ` at ${file}` : ''}: set KVPACK_SHARED_DIR to the shared assets folder that contains data/hotpotqa/dev_subsampled.jsonl.`,
    );
  }
  // Every question has at least one paragraph, so `count` questions contain `count` paragraphs or more.
  const questions = readHotpotQuestions(file, count);
  const paragraphs = questions.flatMap((question) => question.contexts.map((context) => ({ title: context.title, text: context.paragraph_text })));
  if (paragraphs.length < count) {
    throw new KvpackError('INVALID_ARGUMENT', `Invalid paragraph count ${count}: ${file} has only ${paragraphs.length} paragraphs.`);
  }
  return paragraphs.slice(0, count);
}
