/**
 * Retrieval recall on the HotpotQA dev subsample: every paragraph of the 500 questions is ingested
 * into one store (hashed embedder, stories260K tokenizer, no packets), then each question retrieves
 * paragraphs. Paragraphs are ranked by their best chunk; recall@k is the share of supporting
 * paragraphs among the top k. The same run scores a BM25 baseline (minisearch) over the same
 * chunks and, for reference, both methods over whole paragraphs.
 *
 * Run: node --import tsx bench/retrieval-recall.ts [--questions N] [--dimension D] [--no-idf]
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import MiniSearch from 'minisearch';
import { findSharedDir } from '../common/paths.js';
import { Tokenizer } from '../inference/tokenizer.js';
import { fingerprintTokenizer } from '../inference/tokenizer.js';
import { SummaryOnlyChunkProcessor } from '../ingest/chunk-processor.js';
import { runIngest } from '../ingest/pipeline.js';
import { ChunkStore, embeddingText } from '../ingest/store.js';
import { HashedEmbedder } from '../retrieval/hashed-embedder.js';
import { benchModelDir, machineSummary } from './setup.js';

interface Question {
  question: string;
  supporting: Set<string>;
}

const CUTOFFS = [2, 10] as const;
/** Chunks fetched per question to collect 10 distinct paragraphs. */
const CHUNKS_PER_QUERY = 200;

function parseArgs(): { questions: number; dimension: number; useIdf: boolean } {
  const args = process.argv.slice(2);
  const value = (name: string, fallback: number) => {
    const at = args.indexOf(name);
    return at >= 0 ? Number(args[at + 1]) : fallback;
  };
  return { questions: value('--questions', 500), dimension: value('--dimension', 1024), useIdf: !args.includes('--no-idf') };
}

function readQuestions(file: string, limit: number): { questions: Question[]; lines: string[] } {
  const lines = readFileSync(file, 'utf8').split('\n').filter((line) => line.trim()).slice(0, limit);
  const questions = lines.map((line) => {
    const record = JSON.parse(line) as { question_text: string; contexts: { title: string; is_supporting: boolean }[] };
    return { question: record.question_text, supporting: new Set(record.contexts.filter((c) => c.is_supporting).map((c) => c.title)) };
  });
  return { questions, lines };
}

/** Adds the recall of one ranked title list to the totals. */
function scoreRanking(ranked: string[], question: Question, totals: Map<number, number>): void {
  for (const k of CUTOFFS) {
    const top = new Set(ranked.slice(0, k));
    const found = [...question.supporting].filter((title) => top.has(title)).length;
    totals.set(k, (totals.get(k) ?? 0) + found / question.supporting.size);
  }
}

function distinctTitles(titles: Iterable<string>, limit: number): string[] {
  const out: string[] = [];
  for (const title of titles) {
    if (!out.includes(title)) out.push(title);
    if (out.length === limit) break;
  }
  return out;
}

async function main(): Promise<void> {
  const options = parseArgs();
  const shared = findSharedDir();
  if (!shared) throw new Error('The benchmark needs the shared assets folder: set KVPACK_SHARED_DIR or place it at ../shared.');
  console.log(`Machine: ${machineSummary()}`);
  const modelDir = await benchModelDir('stories260K');
  const tokenizer = await Tokenizer.fromFolder(modelDir);
  const { questions, lines } = readQuestions(path.join(shared, 'data', 'hotpotqa', 'dev_subsampled.jsonl'), options.questions);

  const work = mkdtempSync(path.join(os.tmpdir(), 'kvpack-recall-'));
  try {
    const corpus = path.join(work, 'hotpotqa.jsonl');
    writeFileSync(corpus, `${lines.join('\n')}\n`);
    const storeDir = path.join(work, 'store');
    const embedder = new HashedEmbedder({ dimension: options.dimension, useIdf: options.useIdf });
    const model = { modelFingerprint: 'stories260K-bench', tokenizerFingerprint: await fingerprintTokenizer(modelDir) };
    const started = performance.now();
    const report = await runIngest({
      storeDir,
      paths: [corpus],
      model: { ...model, tokenizer },
      embedder,
      createProcessor: (_packets, summary) => new SummaryOnlyChunkProcessor(tokenizer, summary),
      jsonl: { textField: 'paragraph_text', titleField: 'title', recordsField: 'contexts' },
    });
    const ingestSeconds = (performance.now() - started) / 1000;
    console.log(
      `Ingested ${report.documents.added} paragraphs into ${report.chunks.created} chunks (${report.tokens} tokens) in ${ingestSeconds.toFixed(1)} s ` +
        `without packets; hashed embedder ${options.dimension} dimensions, IDF ${options.useIdf ? 'on' : 'off'}.`,
    );

    const store = await ChunkStore.open(storeDir, { mode: 'read', embedder, model });
    try {
      const chunkRows = [...store.catalog.iterateChunks()];
      const chunkSearch = new MiniSearch<{ id: string; title: string; text: string }>({ fields: ['title', 'text'], storeFields: ['title'] });
      chunkSearch.addAll(chunkRows.map((chunk) => ({ id: chunk.id, title: chunk.title, text: chunk.text })));
      const paragraphs = new Map<string, string>();
      for (const line of lines) {
        for (const context of (JSON.parse(line) as { contexts: { title: string; paragraph_text: string }[] }).contexts) {
          paragraphs.set(context.title, context.paragraph_text);
        }
      }
      const paragraphSearch = new MiniSearch<{ id: string; title: string; text: string }>({ fields: ['title', 'text'], storeFields: ['title'] });
      paragraphSearch.addAll([...paragraphs].map(([title, text]) => ({ id: title, title, text })));
      const paragraphEmbedder = new HashedEmbedder({ dimension: options.dimension, useIdf: options.useIdf });
      const paragraphVectors = [...paragraphs].map(([title, text]) => {
        paragraphEmbedder.statistics.addDocument(paragraphEmbedder.features(embeddingText(title, text)));
        return { title, text };
      });
      const vectors = paragraphVectors.map(({ title, text }) => ({ title, vector: paragraphEmbedder.embed(embeddingText(title, text)) }));

      const totals = {
        hashedChunks: new Map<number, number>(),
        bm25Chunks: new Map<number, number>(),
        hashedParagraphs: new Map<number, number>(),
        bm25Paragraphs: new Map<number, number>(),
      };
      const searchStarted = performance.now();
      for (const question of questions) {
        const hits = await store.search(question.question, CHUNKS_PER_QUERY);
        scoreRanking(distinctTitles(hits.map((hit) => hit.title), 10), question, totals.hashedChunks);
        const bm25 = chunkSearch.search(question.question);
        scoreRanking(distinctTitles(bm25.map((hit) => hit.title as string), 10), question, totals.bm25Chunks);
        const paragraphBm25 = paragraphSearch.search(question.question);
        scoreRanking(paragraphBm25.slice(0, 10).map((hit) => hit.id as string), question, totals.bm25Paragraphs);
        const query = paragraphEmbedder.embed(question.question);
        const ranked = vectors
          .map(({ title, vector }) => ({ title, score: vector.reduce((sum, value, i) => sum + value * query[i], 0) }))
          .sort((a, b) => b.score - a.score);
        scoreRanking(ranked.slice(0, 10).map((entry) => entry.title), question, totals.hashedParagraphs);
      }
      const perQueryMs = (performance.now() - searchStarted) / questions.length;

      const n = questions.length;
      const row = (name: string, recall: Map<number, number>) =>
        `| ${name} | ${CUTOFFS.map((k) => ((recall.get(k) ?? 0) / n).toFixed(3)).join(' | ')} |`;
      console.log(`\n${n} questions, ${paragraphs.size} distinct paragraphs, ${chunkRows.length} chunks; ${perQueryMs.toFixed(1)} ms per question for all four methods.\n`);
      console.log(`| method | ${CUTOFFS.map((k) => `recall@${k}`).join(' | ')} |`);
      console.log(`|---|${CUTOFFS.map(() => '---').join('|')}|`);
      console.log(row('hashed TF-IDF, HNSW over chunks (kvpack default)', totals.hashedChunks));
      console.log(row('BM25 (minisearch) over chunks', totals.bm25Chunks));
      console.log(row('hashed TF-IDF, exact, over whole paragraphs', totals.hashedParagraphs));
      console.log(row('BM25 (minisearch) over whole paragraphs', totals.bm25Paragraphs));
    } finally {
      await store.close();
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
