/**
 * How well extractive summaries keep the answer: over the supporting paragraphs of the HotpotQA dev
 * subsample that contain a gold answer string, the share whose summary at ratio 0.5 still contains
 * it. Compares sentence selection by stories260K surprisal (the packet prefill's logits), by the
 * model-free TF-IDF score, the first sentences, and both scores with the first sentence taken first.
 * Measured per chunk (the unit kvpack summarizes, 48/64-token chunks) and per whole paragraph
 * (cut to the model's 512 positions).
 *
 * Run: node --import tsx bench/summary-retention.ts [--questions N] [--ratio R]
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { findSharedDir } from '../common/paths.js';
import { InferenceEngine } from '../inference/engine.js';
import { tokenStartOffsets } from '../ingest/chunk-processor.js';
import { chunkText, defaultChunking, splitSentences } from '../ingest/chunker.js';
import { leadSentences, summarizeSentences, summaryTokenBudget, surprisalFromLogits, type SentenceSpan } from '../ingest/summarize.js';
import { HashedEmbedder } from '../retrieval/hashed-embedder.js';
import { wordFeatureHash } from '../retrieval/text-features.js';
import { benchModelDir, machineSummary } from './setup.js';

interface Passage {
  text: string;
  answers: string[];
}

const METHODS = ['surprisal', 'tfidf', 'lead', 'leadSurprisal', 'leadTfidf'] as const;
type Method = (typeof METHODS)[number];

function parseArgs(): { questions: number; ratio: number } {
  const args = process.argv.slice(2);
  const value = (name: string, fallback: number) => {
    const at = args.indexOf(name);
    return at >= 0 ? Number(args[at + 1]) : fallback;
  };
  return { questions: value('--questions', 500), ratio: value('--ratio', 0.5) };
}

/** Supporting paragraphs that contain one of their question's answer strings. */
function readPassages(file: string, limit: number): Passage[] {
  const passages: Passage[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).slice(0, limit)) {
    const record = JSON.parse(line) as {
      answers_objects: { spans: string[] }[];
      contexts: { paragraph_text: string; is_supporting: boolean }[];
    };
    const answers = record.answers_objects.flatMap((answer) => answer.spans).filter((span) => span.length > 0);
    for (const context of record.contexts) {
      if (context.is_supporting && answers.some((answer) => context.paragraph_text.includes(answer))) {
        passages.push({ text: context.paragraph_text, answers });
      }
    }
  }
  return passages;
}

async function main(): Promise<void> {
  const options = parseArgs();
  const shared = findSharedDir();
  if (!shared) throw new Error('The benchmark needs the shared assets folder: set KVPACK_SHARED_DIR or place it at ../shared.');
  console.log(`Machine: ${machineSummary()}`);
  const engine = await InferenceEngine.load(await benchModelDir('stories260K'));
  const passages = readPassages(path.join(shared, 'data', 'hotpotqa', 'dev_subsampled.jsonl'), options.questions);

  // Corpus IDF over the passages, as the store's term statistics would hold it.
  const idfSource = new HashedEmbedder();
  for (const passage of passages) idfSource.statistics.addDocument(idfSource.features(passage.text));
  const wordWeight = (word: string) => idfSource.statistics.idf(wordFeatureHash(word.normalize('NFKC')));

  const maxPositions = engine.arch.maxPositionEmbeddings;
  const units = { chunk: new Map<Method, number>(), paragraph: new Map<Method, number>() };
  const counts = { chunk: 0, paragraph: 0 };
  const started = performance.now();
  try {
    for (const passage of passages) {
      for (const chunk of chunkText(passage.text, engine.tokenizer, defaultChunking)) {
        if (!passage.answers.some((answer) => chunk.text.includes(answer))) continue;
        counts.chunk += 1;
        await scoreUnit(engine, chunk.text, chunk.tokens, passage.answers, options.ratio, wordWeight, units.chunk);
      }
      const tokens = engine.tokenizer.encode(passage.text);
      const text = tokens.length <= maxPositions ? passage.text : engine.tokenizer.decode(tokens.subarray(0, maxPositions));
      if (!passage.answers.some((answer) => text.includes(answer))) continue;
      counts.paragraph += 1;
      await scoreUnit(engine, text, tokens.subarray(0, maxPositions), passage.answers, options.ratio, wordWeight, units.paragraph);
    }
  } finally {
    await engine.release();
  }

  const seconds = (performance.now() - started) / 1000;
  console.log(`\n${passages.length} supporting paragraphs containing the answer; summary ratio ${options.ratio}; ${seconds.toFixed(1)} s.\n`);
  console.log('| unit | units with the answer | surprisal | TF-IDF | first sentences | first + surprisal | first + TF-IDF |');
  console.log('|---|---|---|---|---|---|---|');
  for (const unit of ['chunk', 'paragraph'] as const) {
    const share = (method: Method) => ((units[unit].get(method) ?? 0) / Math.max(1, counts[unit])).toFixed(3);
    console.log(`| ${unit} | ${counts[unit]} | ${METHODS.map(share).join(' | ')} |`);
  }
}

/** Summarizes one unit with every method and counts the summaries that still contain an answer. */
async function scoreUnit(
  engine: InferenceEngine,
  text: string,
  tokens: Int32Array,
  answers: string[],
  ratio: number,
  wordWeight: (word: string) => number,
  retained: Map<Method, number>,
): Promise<void> {
  const sentences: SentenceSpan[] = splitSentences(text).map((span) => ({
    ...span,
    tokenCount: engine.tokenizer.encode(text.slice(span.start, span.end)).length,
  }));
  const tokenBudget = summaryTokenBudget(tokens.length, ratio);
  const { logits } = await engine.forward({ tokens, logits: 'all' });
  const surprisal = { tokenStarts: tokenStartOffsets(engine.tokenizer, tokens, text), surprisal: surprisalFromLogits(logits, tokens, engine.arch.vocabSize) };
  const summaries: Record<Method, string> = {
    surprisal: summarizeSentences({ text, sentences, tokenBudget, surprisal }).text,
    tfidf: summarizeSentences({ text, sentences, tokenBudget, wordWeight }).text,
    lead: leadSentences(text, sentences, tokenBudget).text,
    leadSurprisal: summarizeSentences({ text, sentences, tokenBudget, surprisal, keepFirstSentence: true }).text,
    leadTfidf: summarizeSentences({ text, sentences, tokenBudget, wordWeight, keepFirstSentence: true }).text,
  };
  for (const method of METHODS) {
    if (answers.some((answer) => summaries[method].includes(answer))) retained.set(method, (retained.get(method) ?? 0) + 1);
  }
}

await main();
