import { performance } from 'node:perf_hooks';
import { KvpackError } from '../common/errors.js';
import { SeededRandom } from '../common/random.js';
import type { InferenceEngine } from './engine.js';
import type { KvCache } from './kv-cache.js';
import { sampleToken, validateSamplingOptions, type SamplingOptions } from './sampling.js';
import { StopStringFilter } from './stop-strings.js';

export interface TokenEvent {
  tokenId: number;
  /** Text this token completes; empty while a multi-byte character or a possible stop string is pending. */
  text: string;
  /** 0 for the first generated token. */
  index: number;
}

export interface GenerateOptions extends SamplingOptions {
  /** Upper bound on generated tokens. */
  maxTokens: number;
  /** Generation stops before the first occurrence of any of these strings. */
  stopStrings?: readonly string[];
  /** Token ids that end generation; default the model's EOS ids. The stop token is not part of the text. */
  stopTokenIds?: readonly number[];
  onToken?: (event: TokenEvent) => void;
  /** Aborting stops generation before the next forward pass; the result says `cancelled`. */
  signal?: AbortSignal;
}

export type FinishReason = 'eos' | 'stop' | 'length' | 'cancelled';

export interface GenerateResult {
  tokens: number[];
  text: string;
  finishReason: FinishReason;
  /** Cache after the last token fed to the model. */
  cache: KvCache;
  /** Milliseconds from the call to the first generated token, or undefined when none was generated. */
  firstTokenMs: number | undefined;
  totalMs: number;
}

/** Where decoding starts: the cache of everything before and the logits `[vocab]` for the next token. */
export interface DecodeStart {
  cache: KvCache;
  logits: Float32Array;
}

/**
 * Decodes from a prefilled cache: sample a token, feed it, repeat, until EOS, a stop string, the
 * token budget, the model's maximum positions or cancellation.
 */
export async function generate(engine: InferenceEngine, start: DecodeStart, options: GenerateOptions): Promise<GenerateResult> {
  validateGenerateOptions(options);
  const began = performance.now();
  const random = new SeededRandom(options.seed ?? 0);
  const stopIds = new Set(options.stopTokenIds ?? engine.arch.eosTokenIds);
  const detokenizer = engine.tokenizer.createStreamDecoder();
  const stops = new StopStringFilter(options.stopStrings ?? []);
  const tokens: number[] = [];
  let text = '';
  let cache = start.cache;
  let logits = start.logits;
  let firstTokenMs: number | undefined;
  let finishReason: FinishReason = 'length';

  const emit = (tokenId: number, delta: string) => {
    text += delta;
    options.onToken?.({ tokenId, text: delta, index: tokens.length - 1 });
  };

  while (tokens.length < options.maxTokens) {
    if (options.signal?.aborted) {
      finishReason = 'cancelled';
      break;
    }
    const token = sampleToken(logits, options, random);
    firstTokenMs ??= performance.now() - began;
    if (stopIds.has(token)) {
      finishReason = 'eos';
      break;
    }
    tokens.push(token);
    emit(token, stops.push(detokenizer.push(token)));
    if (stops.matched) {
      finishReason = 'stop';
      break;
    }
    if (tokens.length >= options.maxTokens || cache.length + 1 >= engine.arch.maxPositionEmbeddings) {
      finishReason = 'length';
      break;
    }
    const step = await engine.forward({ tokens: [token], past: cache });
    cache = step.present;
    logits = step.logits;
  }
  if (finishReason !== 'stop') {
    const rest = stops.push(detokenizer.flush()) + stops.flush();
    if (rest) text += rest;
  }
  return { tokens, text, finishReason, cache, firstTokenMs, totalMs: performance.now() - began };
}

/** Prefills `[BOS] + prompt` from position 0 and decodes; an empty prompt decodes from BOS alone. */
export async function generateFromPrompt(engine: InferenceEngine, prompt: string, options: GenerateOptions): Promise<GenerateResult> {
  const tokens = Array.from(engine.tokenizer.encode(prompt, { addBos: true }));
  if (tokens.length === 0) {
    throw new KvpackError('TOKENIZER_INVALID', `The tokenizer of ${engine.folder.dir} defines no BOS token, so an empty prompt has nothing to start from.`);
  }
  const prefill = await engine.forward({ tokens });
  return generate(engine, { cache: prefill.present, logits: prefill.logits }, options);
}

function validateGenerateOptions(options: GenerateOptions): void {
  if (!(Number.isInteger(options.maxTokens) && options.maxTokens >= 0)) {
    throw new KvpackError('INVALID_ARGUMENT', `maxTokens must be an integer >= 0, got ${options.maxTokens}.`);
  }
  if (options.stopStrings?.some((stop) => stop.length === 0)) {
    throw new KvpackError('INVALID_ARGUMENT', 'Stop strings must not be empty.');
  }
  validateSamplingOptions(options);
}
