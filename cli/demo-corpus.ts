import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../common/paths.js';
import type { LoadedDocument } from '../ingest/loaders.js';
import { markdownTitle } from '../ingest/loaders.js';
import { normalizeString } from '../ingest/normalize.js';
import { documentFromText } from '../server/ingestion.js';

/** A sample corpus for `kvpack demo` and a question it can answer. */
export interface DemoCorpus {
  /** Short name, part of the demo store's folder name. */
  name: 'hotpotqa' | 'docs';
  description: string;
  documents: LoadedDocument[];
  /** A question whose supporting passages are in the corpus. */
  question: string;
}

/** One HotpotQA question with its titled paragraphs, as the shared JSON Lines file stores them. */
export interface HotpotQuestion {
  question_id: string;
  question_text: string;
  contexts: { id: string; title: string; paragraph_text: string; is_supporting: boolean }[];
}

export function hotpotqaFile(sharedDir: string): string {
  return path.join(sharedDir, 'data', 'hotpotqa', 'dev_subsampled.jsonl');
}

/** Reads the first `count` questions of a HotpotQA JSON Lines file. */
export function readHotpotQuestions(file: string, count: number): HotpotQuestion[] {
  const questions: HotpotQuestion[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (questions.length >= count) break;
    if (line.trim()) questions.push(JSON.parse(line) as HotpotQuestion);
  }
  return questions;
}

/** Returns the document id of a HotpotQA paragraph: its question id and context index, so every paragraph of every question is its own document. */
export function hotpotDocumentId(question: HotpotQuestion, contextIndex: number): string {
  return `hotpotqa:${question.question_id}:${contextIndex}`;
}

/** Turns the paragraphs of the given questions into documents titled with their Wikipedia article. */
export function hotpotDocuments(questions: readonly HotpotQuestion[]): LoadedDocument[] {
  return questions.flatMap((question) =>
    question.contexts.map((context, index) =>
      documentFromText(hotpotDocumentId(question, index), 'hotpotqa', normalizeString(context.title).text.trim(), normalizeString(context.paragraph_text).text),
    ),
  );
}

/**
 * Builds the demo corpus: the paragraphs of the first `questionCount` HotpotQA questions (about ten per
 * question, each question's supporting paragraphs among them) when the shared assets folder has
 * them, otherwise the project's own README and docs.
 */
export function demoCorpus(sharedDir: string | undefined, questionCount: number): DemoCorpus {
  const file = sharedDir && hotpotqaFile(sharedDir);
  if (file && existsSync(file)) {
    const questions = readHotpotQuestions(file, questionCount);
    const documents = hotpotDocuments(questions);
    return {
      name: 'hotpotqa',
      description: `${documents.length} HotpotQA paragraphs (the contexts of its first ${questions.length} dev questions)`,
      documents,
      question: questions[0].question_text,
    };
  }
  const documents = projectDocs();
  return {
    name: 'docs',
    description: `${documents.length} kvpack documentation files`,
    documents,
    question: 'How are KV packets stored and spliced?',
  };
}

function projectDocs(): LoadedDocument[] {
  const files = [path.join(packageRoot, 'README.md')];
  const docsDir = path.join(packageRoot, 'docs');
  if (existsSync(docsDir)) {
    files.push(...readdirSync(docsDir).filter((name) => name.endsWith('.md')).sort().map((name) => path.join(docsDir, name)));
  }
  return files
    .filter((file) => existsSync(file))
    .map((file) => {
      const text = normalizeString(readFileSync(file, 'utf8')).text;
      const name = path.relative(packageRoot, file);
      return documentFromText(`docs:${name}`, `docs:${name}`, markdownTitle(text) || name, text);
    });
}
