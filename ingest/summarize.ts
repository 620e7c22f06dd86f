/**
 * How a summary picks its sentences: `lead` takes the first ones; `surprisal` the ones with the
 * highest mean model surprisal per token; `tfidf` the ones with the highest mean TF-IDF word weight.
 * On HotpotQA supporting paragraphs at ratio 0.5, `lead` kept the gold answer most often
 * (bench/summary-retention.ts), so it is the default.
 */
export const summaryMethods = ['lead', 'surprisal', 'tfidf'] as const;
export type SummaryMethod = (typeof summaryMethods)[number];
export const DEFAULT_SUMMARY_METHOD: SummaryMethod = 'lead';

/** A sentence of a chunk: its UTF-16 span `[start, end)` in the chunk text and its length in tokens. */
export interface SentenceSpan {
  start: number;
  end: number;
  tokenCount: number;
}

/** Per-token surprisal of a chunk and where each token starts in the chunk text. */
export interface TokenSurprisal {
  /** `[tokens]` UTF-16 offset in the chunk text where each token's text starts. */
  tokenStarts: Int32Array;
  /** `[tokens]` `-ln p(token_j | tokens_<j)` in nats; NaN where unknown (the first token). */
  surprisal: Float32Array;
}

export interface SummarizeInput {
  /** The chunk text. */
  text: string;
  /** Its sentences in order (see `splitSentences`). */
  sentences: readonly SentenceSpan[];
  /** Maximum summary length in tokens, counted as the sum of the selected sentences' token counts. */
  tokenBudget: number;
  /** The model's surprisal for each chunk token; when absent the model-free score is used. */
  surprisal?: TokenSurprisal;
  /** Weight of a lower-cased word for the model-free score, such as its corpus IDF. Default: IDF over the chunk's sentences. */
  wordWeight?: (word: string) => number;
  /** Take the first sentence before any other when it fits the budget. Default false. */
  keepFirstSentence?: boolean;
}

export interface Summary {
  /** Indices into `sentences` of the selected sentences, ascending. */
  selected: number[];
  /** The selected sentences in their original order, joined by a space. */
  text: string;
  /** Score of every sentence, for inspection: mean surprisal per token, or TF-IDF weight per token. */
  scores: number[];
  /** True when no whole sentence fit and a window of words of the best one was taken instead. */
  truncated: boolean;
}

const WORD_PATTERN = /[\p{L}\p{N}]+/gu;

/**
 * Selects sentences of a chunk for its extractive summary: sentences are ranked by information per
 * token and taken greedily, best first, while their token counts fit the budget, then put back in
 * their original order. The information score is the mean surprisal of the sentence's tokens when
 * the model's surprisal is given (as LLMLingua scores tokens), else the mean TF-IDF weight of its
 * words. When not even one sentence fits, the summary is a window of consecutive words of the best
 * sentence, the one with the highest total score. Its share of the sentence's words is the budget's
 * share of the sentence's tokens, so its token count is an estimate.
 */
export function summarizeSentences(input: SummarizeInput): Summary {
  const { text, sentences, tokenBudget } = input;
  if (sentences.length === 0 || tokenBudget <= 0) {
    return { selected: [], text: '', scores: [], truncated: false };
  }
  const scores = input.surprisal ? surprisalScores(sentences, input.surprisal) : tfidfScores(text, sentences, input.wordWeight);
  const order = sentences.map((_, i) => i).sort((a, b) => scores[b] - scores[a] || a - b);
  if (input.keepFirstSentence) order.unshift(...order.splice(order.indexOf(0), 1));
  const selected: number[] = [];
  let used = 0;
  for (const i of order) {
    if (used + sentences[i].tokenCount <= tokenBudget) {
      selected.push(i);
      used += sentences[i].tokenCount;
    }
  }
  if (selected.length === 0) {
    const best = sentences[order[0]];
    const wordScore = input.surprisal ? surprisalWordScore(input.surprisal) : tfidfWordScore(input.wordWeight ?? localIdf(sentenceWords(text, sentences)));
    return { selected: [order[0]], text: bestWordWindow(text, best, tokenBudget, wordScore), scores, truncated: true };
  }
  selected.sort((a, b) => a - b);
  return { selected, text: joinSentences(text, sentences, selected), scores, truncated: false };
}

/** Selects the baseline summary: the first sentences while they fit the budget, else the first words of the first sentence. */
export function leadSentences(text: string, sentences: readonly SentenceSpan[], tokenBudget: number): Summary {
  const selected: number[] = [];
  let used = 0;
  for (let i = 0; i < sentences.length && used + sentences[i].tokenCount <= tokenBudget; i++) {
    selected.push(i);
    used += sentences[i].tokenCount;
  }
  const scores = sentences.map((_, i) => -i);
  if (selected.length === 0 && sentences.length > 0 && tokenBudget > 0) {
    const first = sentences[0];
    return { selected: [0], text: bestWordWindow(text, first, tokenBudget, () => 0), scores, truncated: true };
  }
  return { selected, text: joinSentences(text, sentences, selected), scores, truncated: false };
}

/** Token budget of a summary: `ratio × chunk tokens`, rounded down, at least 1. */
export function summaryTokenBudget(chunkTokens: number, ratio: number): number {
  return Math.max(1, Math.floor(chunkTokens * ratio));
}

/**
 * Per-token surprisal `-ln softmax(logits[j - 1])[tokens[j]]` from prefill logits `[tokens, vocab]`,
 * where row j contains the logits after token j. The first token has no prediction and gets NaN.
 */
export function surprisalFromLogits(logits: Float32Array, tokens: ArrayLike<number>, vocabSize: number): Float32Array {
  const out = new Float32Array(tokens.length);
  out[0] = Number.NaN;
  for (let j = 1; j < tokens.length; j++) {
    const row = logits.subarray((j - 1) * vocabSize, j * vocabSize);
    let max = Number.NEGATIVE_INFINITY;
    for (let v = 0; v < vocabSize; v++) if (row[v] > max) max = row[v];
    let sum = 0;
    for (let v = 0; v < vocabSize; v++) sum += Math.exp(row[v] - max);
    out[j] = max + Math.log(sum) - row[tokens[j]];
  }
  return out;
}

function surprisalScores(sentences: readonly SentenceSpan[], surprisal: TokenSurprisal): number[] {
  const sums = new Float64Array(sentences.length);
  const counts = new Float64Array(sentences.length);
  let sentence = 0;
  for (let j = 0; j < surprisal.tokenStarts.length; j++) {
    const start = surprisal.tokenStarts[j];
    while (sentence + 1 < sentences.length && start >= sentences[sentence + 1].start) sentence++;
    const value = surprisal.surprisal[j];
    if (Number.isNaN(value)) continue;
    sums[sentence] += value;
    counts[sentence] += 1;
  }
  const known = Array.from(counts).reduce((a, b) => a + b, 0);
  const overall = known > 0 ? Array.from(sums).reduce((a, b) => a + b, 0) / known : 0;
  return sentences.map((_, i) => (counts[i] > 0 ? sums[i] / counts[i] : overall));
}

function sentenceWords(text: string, sentences: readonly SentenceSpan[]): string[][] {
  return sentences.map((s) => text.slice(s.start, s.end).toLowerCase().match(WORD_PATTERN) ?? []);
}

function tfidfScores(text: string, sentences: readonly SentenceSpan[], wordWeight?: (word: string) => number): number[] {
  const words = sentenceWords(text, sentences);
  const weight = wordWeight ?? localIdf(words);
  return words.map((list, i) => {
    if (list.length === 0) return 0;
    const counts = new Map<string, number>();
    for (const word of list) counts.set(word, (counts.get(word) ?? 0) + 1);
    let sum = 0;
    for (const [word, count] of counts) sum += (1 + Math.log(count)) * weight(word);
    return sum / Math.max(1, sentences[i].tokenCount);
  });
}

/** IDF with the chunk's sentences as the documents: `ln((n + 1) / (df + 1)) + 1`. */
function localIdf(sentenceWords: string[][]): (word: string) => number {
  const df = new Map<string, number>();
  for (const list of sentenceWords) for (const word of new Set(list)) df.set(word, (df.get(word) ?? 0) + 1);
  const n = sentenceWords.length;
  return (word) => Math.log((n + 1) / ((df.get(word) ?? 0) + 1)) + 1;
}

function joinSentences(text: string, sentences: readonly SentenceSpan[], selected: readonly number[]): string {
  return selected.map((i) => text.slice(sentences[i].start, sentences[i].end)).join(' ');
}

/** Scores a word `[start, end)` of the text. */
type WordScore = (word: string, start: number, end: number) => number;

/** Total surprisal of the tokens that start inside the word. */
function surprisalWordScore(surprisal: TokenSurprisal): WordScore {
  return (_word, start, end) => {
    let sum = 0;
    for (let j = 0; j < surprisal.tokenStarts.length; j++) {
      const at = surprisal.tokenStarts[j];
      if (at >= start && at < end && !Number.isNaN(surprisal.surprisal[j])) sum += surprisal.surprisal[j];
    }
    return sum;
  };
}

function tfidfWordScore(weight: (word: string) => number): WordScore {
  return (word) => (word.toLowerCase().match(WORD_PATTERN) ?? []).reduce((sum, part) => sum + weight(part), 0);
}

/** Finds the run of consecutive words of a sentence with the highest total score, sized to the budget. */
function bestWordWindow(text: string, sentence: SentenceSpan, tokenBudget: number, score: WordScore): string {
  const words = [...text.slice(sentence.start, sentence.end).matchAll(/\S+/gu)].map((match) => {
    const start = sentence.start + match.index;
    return { start, end: start + match[0].length, score: score(match[0], start, start + match[0].length) };
  });
  const size = Math.max(1, Math.floor((words.length * tokenBudget) / Math.max(1, sentence.tokenCount)));
  if (size >= words.length) return text.slice(sentence.start, sentence.end);
  let sum = words.slice(0, size).reduce((total, word) => total + word.score, 0);
  let best = { sum, first: 0 };
  for (let first = 1; first + size <= words.length; first++) {
    sum += words[first + size - 1].score - words[first - 1].score;
    if (sum > best.sum) best = { sum, first };
  }
  return text.slice(words[best.first].start, words[best.first + size - 1].end);
}
