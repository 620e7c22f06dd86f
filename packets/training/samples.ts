import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { KvpackError } from '../../common/errors.js';
import { writeFileAtomic } from '../../common/fs-atomic.js';
import { cacheDir } from '../../common/paths.js';
import { SeededRandom } from '../../common/random.js';
import type { InferenceEngine } from '../../inference/engine.js';
import { generate } from '../../inference/generate.js';
import { logSoftmax } from '../../inference/log-probs.js';
import { argmax } from '../../inference/sampling.js';
import type { Tokenizer } from '../../inference/tokenizer.js';
import { readCorpusDocuments } from './corpus.js';
import type { FidelitySample } from './samples-types.js';

/**
 * The data of the fidelity protocol. Documents are either stories the model samples itself
 * (temperature 1, one seed per story, up to 320 tokens, stopping at BOS or EOS) or the documents of
 * a corpus. Each document is cut into consecutive sentence-aligned chunks of 36–60 tokens. A
 * sample takes its chunks from different documents and ends with a short prompt naming a
 * character of its first or second chunk. The teacher prefills `[BOS, chunks…, prompt]` in full
 * and answers greedily, keeping its distributions.
 */

export type DataSplit = 'train' | 'validation' | 'test';

/** Source of the documents. */
export type DocumentSource = { kind: 'self-sampled' } | { kind: 'corpus'; files: string[] };

export interface DatasetSettings {
  split: DataSplit;
  source: DocumentSource;
  /** Number of samples. */
  samples: number;
  /** Chunks per sample; a list mixes chunk counts, cycling through it. */
  chunkCounts: number[];
  /** Seed of the documents and of the sample composition; splits never share documents. */
  seed: number;
  /** Teacher answer length in tokens. Default 16. */
  answerTokens?: number;
  /** Chunk size range in tokens. Default 36–60. */
  minChunkTokens?: number;
  maxChunkTokens?: number;
  /** Maximum length of a self-sampled story in tokens, BOS included. Default 320. */
  storyTokens?: number;
}

export interface Dataset {
  settings: Required<DatasetSettings>;
  samples: FidelitySample[];
  /** One line on where the data came from, recorded in adapter files. */
  description: string;
}

const FORMAT_VERSION = 1;
const splitIndex: Record<DataSplit, number> = { train: 1, validation: 2, test: 3 };

/** Continuation prompts; NAME is a character of the first or second chunk. About 11 tokens each. */
const promptTemplates = [' The next morning, NAME saw a', ' Later that day, NAME found a', ' Then NAME went to the', ' After that, NAME said,'];

/** Capitalized words that start sentences or dialogue but are not characters. */
const notNames = new Set(['I', 'The', 'A', 'An', 'Once', 'One', 'They', 'She', 'He', 'It', 'We', 'You', 'My', 'His', 'Her', 'Their', 'Then', 'But', 'And', 'So', 'When', 'Yes', 'No', 'Oh', 'Thank', 'Let', 'What', 'Why', 'How', 'Can', 'This', 'That', 'There', 'Look', 'Wow', 'Please', 'Hello', 'Hi', 'Come', 'Do', 'Don', 'Are', 'Is', 'Will', 'If', 'As', 'After', 'From', 'Every', 'In', 'On', 'At', 'Suddenly', 'Later', 'Finally', 'Together', 'Sorry', 'OK', 'Okay']);

function resolveSettings(settings: DatasetSettings): Required<DatasetSettings> {
  const resolved = { answerTokens: 16, minChunkTokens: 36, maxChunkTokens: 60, storyTokens: 320, ...settings };
  if (resolved.samples < 1 || !Number.isInteger(resolved.samples)) {
    throw new KvpackError('INVALID_ARGUMENT', `The number of samples must be an integer >= 1, got ${resolved.samples}.`);
  }
  if (resolved.chunkCounts.length === 0 || resolved.chunkCounts.some((n) => !Number.isInteger(n) || n < 1)) {
    throw new KvpackError('INVALID_ARGUMENT', `Chunk counts must be integers >= 1, got [${resolved.chunkCounts.join(', ')}].`);
  }
  if (!(resolved.minChunkTokens >= 1 && resolved.maxChunkTokens >= resolved.minChunkTokens)) {
    throw new KvpackError(
      'INVALID_ARGUMENT',
      `The chunk size range ${resolved.minChunkTokens}–${resolved.maxChunkTokens} tokens is invalid; the minimum must be >= 1 and at most the maximum.`,
    );
  }
  return resolved;
}

/**
 * Returns the dataset for these settings, from the cache folder when an earlier run built it for
 * the same model and settings, otherwise built now (which runs the model) and cached.
 */
export async function loadOrBuildDataset(
  engine: InferenceEngine,
  settings: DatasetSettings,
  onProgress?: (stage: string, done: number, total: number) => void,
): Promise<Dataset> {
  const resolved = resolveSettings(settings);
  const file = datasetCacheFile(engine, resolved);
  const cached = readCachedDataset(file, resolved, engine.arch.vocabSize);
  if (cached) {
    return cached;
  }
  const dataset = await buildDataset(engine, resolved, onProgress);
  writeCachedDataset(file, dataset);
  return dataset;
}

/** Builds a dataset without the cache. */
export async function buildDataset(
  engine: InferenceEngine,
  settings: Required<DatasetSettings>,
  onProgress?: (stage: string, done: number, total: number) => void,
): Promise<Dataset> {
  const documents = await collectDocuments(engine, settings, onProgress);
  const pool = documents
    .map((tokens) => splitIntoChunks(tokens, engine.tokenizer, settings.minChunkTokens, settings.maxChunkTokens))
    .filter((chunks) => chunks.length > 0);
  const largest = Math.max(...settings.chunkCounts);
  if (pool.length < largest) {
    throw new KvpackError(
      'INVALID_ARGUMENT',
      `Only ${pool.length} documents yield chunks of ${settings.minChunkTokens}–${settings.maxChunkTokens} tokens, but samples need ` +
        `${largest} chunks from different documents; give a larger corpus.`,
    );
  }
  const skeletons = composeSamples(engine, pool, settings);
  const samples: FidelitySample[] = [];
  for (const skeleton of skeletons) {
    samples.push(await withTeacherAnswer(engine, skeleton, settings.answerTokens));
    onProgress?.('teacher', samples.length, skeletons.length);
  }
  return { settings, samples, description: describeDataset(settings) };
}

export function describeDataset(settings: Required<DatasetSettings>): string {
  const source =
    settings.source.kind === 'self-sampled'
      ? `stories sampled from the model (temperature 1, up to ${settings.storyTokens} tokens)`
      : `corpus ${settings.source.files.map((file) => path.basename(file)).join(', ')}`;
  return (
    `${settings.samples} ${settings.split} samples of ${settings.chunkCounts.join('/')} chunks (${settings.minChunkTokens}–` +
    `${settings.maxChunkTokens} tokens, sentence-aligned) from ${source}, seed ${settings.seed}; teacher: full prefill and ` +
    `${settings.answerTokens} greedy tokens after a prompt naming a character`
  );
}

async function collectDocuments(
  engine: InferenceEngine,
  settings: Required<DatasetSettings>,
  onProgress?: (stage: string, done: number, total: number) => void,
): Promise<Int32Array[]> {
  if (settings.source.kind === 'corpus') {
    const documents = readCorpusDocuments(settings.source.files);
    return corpusSplit(documents, settings.split, settings.seed).map((text) => engine.tokenizer.encode(text));
  }
  // About five chunks per story; enough stories that samples rarely reuse a chunk.
  const largest = Math.max(...settings.chunkCounts);
  const meanChunks = settings.chunkCounts.reduce((a, b) => a + b, 0) / settings.chunkCounts.length;
  const count = Math.max(largest + 2, Math.ceil((settings.samples * meanChunks) / 3));
  const stories: Int32Array[] = [];
  for (let i = 0; i < count; i++) {
    stories.push(await sampleStory(engine, storySeed(settings.split, settings.seed, i), settings.storyTokens));
    onProgress?.('stories', i + 1, count);
  }
  return stories;
}

/** Story seeds of different splits and dataset seeds never coincide. */
export function storySeed(split: DataSplit, seed: number, index: number): number {
  return (splitIndex[split] * 1_000_003 + seed * 10_007 + index) >>> 0;
}

/** Samples one story from BOS at temperature 1; returns its tokens without BOS. */
export async function sampleStory(engine: InferenceEngine, seed: number, maxTokens: number): Promise<Int32Array> {
  const bos = engine.tokenizer.bosTokenId;
  if (bos === undefined) {
    throw new KvpackError('TOKENIZER_INVALID', `The tokenizer of ${engine.folder.dir} has no BOS token to sample stories from; give a corpus instead.`);
  }
  const start = await engine.forward({ tokens: [bos] });
  const stops = [bos, ...engine.arch.eosTokenIds];
  const result = await generate(
    engine,
    { cache: start.present, logits: start.logits },
    { maxTokens: maxTokens - 1, temperature: 1, seed, stopTokenIds: stops },
  );
  return Int32Array.from(result.tokens);
}

/** Splits corpus documents into disjoint train, validation and test shares (80/10/10) by a seeded shuffle. */
function corpusSplit(documents: string[], split: DataSplit, seed: number): string[] {
  const order = documents.map((_, i) => i);
  shuffle(order, new SeededRandom(seed ^ 0x5eed));
  const trainEnd = Math.floor(order.length * 0.8);
  const validationEnd = Math.floor(order.length * 0.9);
  const range = split === 'train' ? [0, trainEnd] : split === 'validation' ? [trainEnd, validationEnd] : [validationEnd, order.length];
  return order.slice(range[0], range[1]).map((i) => documents[i]);
}

/**
 * Cuts a document into consecutive chunks of whole sentences with `min`–`max` tokens, about
 * their midpoint on average. A sentence ends after `.`, `!` or `?` (closing quotes included) when
 * whitespace or the end of the text follows. A sentence that cannot join a chunk within the range
 * is skipped, and so is an unfinished sentence at the end.
 */
export function splitIntoChunks(tokens: Int32Array, tokenizer: Tokenizer, min: number, max: number): Int32Array[] {
  const target = Math.round((min + max) / 2);
  const ends = sentenceEnds(tokens, tokenizer);
  const chunks: Int32Array[] = [];
  let chunkStart = 0;
  for (let i = 0; i < ends.length; i++) {
    if (ends[i] - chunkStart > max) {
      // The chunk so far is too short to keep: restart at this sentence, or after it when it
      // alone overflows.
      const sentenceStart = i > 0 ? ends[i - 1] : 0;
      chunkStart = ends[i] - sentenceStart > max ? ends[i] : sentenceStart;
    }
    const length = ends[i] - chunkStart;
    if (length === 0) continue;
    const nextLength = i + 1 < ends.length ? ends[i + 1] - chunkStart : Infinity;
    if (length >= min && (length >= target || nextLength > max)) {
      chunks.push(tokens.slice(chunkStart, ends[i]));
      chunkStart = ends[i];
    }
  }
  return chunks;
}

/** Token indices just after each sentence end, in order. */
export function sentenceEnds(tokens: Int32Array, tokenizer: Tokenizer): number[] {
  const decoder = tokenizer.createStreamDecoder();
  const deltas = Array.from(tokens, (token) => decoder.push(token));
  const ends: number[] = [];
  let text = '';
  for (let i = 0; i < tokens.length; i++) {
    text += deltas[i];
    const next = deltas[i + 1];
    const followedBySpace = next === undefined || /^\s/.test(next);
    if (followedBySpace && /[.!?]["'”’)]*$/.test(text)) ends.push(i + 1);
  }
  return ends;
}

/** Character names in a text: capitalized words that occur at least once inside a sentence. */
export function characterNames(text: string): string[] {
  const names = new Set<string>();
  const pattern = /([A-Z][a-z]+)/g;
  for (const match of text.matchAll(pattern)) {
    const index = match.index ?? 0;
    const word = match[1];
    const before = text.slice(0, index);
    const sentenceStart = /(^|[.!?]["'”’]*\s+|["“'‘]\s*|\n\s*)$/.test(before);
    const wordBoundary = index === 0 || /[^A-Za-z]$/.test(before);
    if (!sentenceStart && wordBoundary && !notNames.has(word)) names.add(word);
  }
  return [...names];
}

interface SampleSkeleton {
  preamble: Int32Array;
  chunks: Int32Array[];
  prompt: Int32Array;
}

/** Picks chunks from different documents and a prompt naming a character of chunk 1 or 2. */
function composeSamples(engine: InferenceEngine, pool: Int32Array[][], settings: Required<DatasetSettings>): SampleSkeleton[] {
  const random = new SeededRandom((settings.seed * 7919 + splitIndex[settings.split] * 104729) >>> 0);
  const tokenizer = engine.tokenizer;
  const preamble = tokenizer.bosTokenId === undefined ? new Int32Array(0) : Int32Array.of(tokenizer.bosTokenId);
  const skeletons: SampleSkeleton[] = [];
  let attempts = 0;
  while (skeletons.length < settings.samples) {
    if (++attempts > settings.samples * 50) {
      throw new KvpackError(
        'INVALID_ARGUMENT',
        `Found character names for only ${skeletons.length} of ${settings.samples} samples; the documents rarely name characters ` +
          '(capitalized words inside sentences). Give a corpus of narrative text.',
      );
    }
    const count = settings.chunkCounts[skeletons.length % settings.chunkCounts.length];
    const documents = pickDistinct(pool.length, count, random);
    const chunks = documents.map((d) => pool[d][Math.floor(random.nextFloat() * pool[d].length)]);
    const candidates = chunks.slice(0, 2).flatMap((chunk) => characterNames(tokenizer.decode(chunk)));
    if (candidates.length === 0) continue;
    const name = candidates[Math.floor(random.nextFloat() * candidates.length)];
    const template = promptTemplates[Math.floor(random.nextFloat() * promptTemplates.length)];
    skeletons.push({ preamble, chunks, prompt: tokenizer.encode(template.replace('NAME', name)) });
  }
  return skeletons;
}

/** Runs the teacher: one full prefill of preamble, chunks and prompt, then greedy tokens with their distributions. */
export async function withTeacherAnswer(engine: InferenceEngine, skeleton: SampleSkeleton, answerTokens: number): Promise<FidelitySample> {
  const vocab = engine.arch.vocabSize;
  const context = Int32Array.from([...skeleton.preamble, ...skeleton.chunks.flatMap((chunk) => [...chunk]), ...skeleton.prompt]);
  let step = await engine.forward({ tokens: context });
  const teacherTokens = new Int32Array(answerTokens);
  const teacherLogProbs = new Float32Array(answerTokens * vocab);
  for (let i = 0; i < answerTokens; i++) {
    teacherLogProbs.set(logSoftmax(step.logits), i * vocab);
    teacherTokens[i] = argmax(step.logits);
    if (i + 1 < answerTokens) step = await engine.forward({ tokens: [teacherTokens[i]], past: step.present });
  }
  return { ...skeleton, teacherTokens, teacherLogProbs };
}

function pickDistinct(size: number, count: number, random: SeededRandom): number[] {
  const picked = new Set<number>();
  while (picked.size < count) picked.add(Math.floor(random.nextFloat() * size));
  return [...picked];
}

export function shuffle<T>(items: T[], random: SeededRandom): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random.nextFloat() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
}

// Cache files: `<key>.json` with the token lists and `<key>.bin` with the teacher log-probabilities.

function datasetCacheFile(engine: InferenceEngine, settings: Required<DatasetSettings>): string {
  const source =
    settings.source.kind === 'corpus'
      ? { kind: 'corpus', files: settings.source.files.map((file) => fileIdentity(file)) }
      : settings.source;
  const key = createHash('sha256')
    .update(JSON.stringify({ version: FORMAT_VERSION, model: engine.modelFingerprint, tokenizer: engine.tokenizerFingerprint, ...settings, source }))
    .digest('hex')
    .slice(0, 32);
  return path.join(cacheDir(), 'fidelity-data', key);
}

function fileIdentity(file: string): string {
  const content = readFileSync(file);
  return `${path.basename(file)}:${createHash('sha256').update(content).digest('hex')}`;
}

interface CachedSample {
  preamble: number[];
  chunks: number[][];
  prompt: number[];
  teacherTokens: number[];
}

function readCachedDataset(base: string, settings: Required<DatasetSettings>, vocab: number): Dataset | undefined {
  if (!existsSync(`${base}.json`) || !existsSync(`${base}.bin`)) {
    return undefined;
  }
  try {
    const meta = JSON.parse(readFileSync(`${base}.json`, 'utf8')) as { version: number; description: string; samples: CachedSample[] };
    const bytes = readFileSync(`${base}.bin`);
    const logProbs = new Float32Array(bytes.byteLength / 4);
    new Uint8Array(logProbs.buffer).set(bytes);
    const rowSize = settings.answerTokens * vocab;
    if (meta.version !== FORMAT_VERSION || logProbs.length !== meta.samples.length * rowSize) {
      return undefined;
    }
    const samples = meta.samples.map((sample, i) => ({
      preamble: Int32Array.from(sample.preamble),
      chunks: sample.chunks.map((chunk) => Int32Array.from(chunk)),
      prompt: Int32Array.from(sample.prompt),
      teacherTokens: Int32Array.from(sample.teacherTokens),
      teacherLogProbs: logProbs.slice(i * rowSize, (i + 1) * rowSize),
    }));
    return { settings, samples, description: meta.description };
  } catch {
    // A damaged cache entry is rebuilt.
    return undefined;
  }
}

function writeCachedDataset(base: string, dataset: Dataset): void {
  mkdirSync(path.dirname(base), { recursive: true });
  const logProbs = new Float32Array(dataset.samples.reduce((sum, sample) => sum + sample.teacherLogProbs.length, 0));
  let offset = 0;
  for (const sample of dataset.samples) {
    logProbs.set(sample.teacherLogProbs, offset);
    offset += sample.teacherLogProbs.length;
  }
  writeFileAtomic(`${base}.bin`, new Uint8Array(logProbs.buffer));
  const samples: CachedSample[] = dataset.samples.map((sample) => ({
    preamble: [...sample.preamble],
    chunks: sample.chunks.map((chunk) => [...chunk]),
    prompt: [...sample.prompt],
    teacherTokens: [...sample.teacherTokens],
  }));
  writeFileAtomic(`${base}.json`, JSON.stringify({ version: FORMAT_VERSION, description: dataset.description, samples }));
}
