import { performance } from 'node:perf_hooks';
import { isKvpackError, KvpackError } from '../common/errors.js';
import type { InferenceEngine } from '../inference/engine.js';
import { generate } from '../inference/generate.js';
import { adapterForSlot, type AdapterVectors } from '../packets/adapter-vectors.js';
import { buildPacket, expectedFingerprints } from '../packets/build.js';
import { NO_ADAPTER, type PacketKind } from '../packets/packet.js';
import { prefillComputedEntries } from '../packets/prefill.js';
import type { PrefixCache } from '../packets/prefix-cache.js';
import type { PacketStore } from '../packets/store.js';
import {
  prefillContext,
  strategies,
  type ContextChunk,
  type ContextPrefill,
  type SpliceablePacket,
  type Strategy,
  type TokenAccounting,
} from '../packets/strategies.js';
import type {
  ChunkRetriever,
  Citation,
  QueryCallbacks,
  QueryRequest,
  QueryResult,
  RebuiltPacket,
  RetrievedChunk,
} from './types.js';

/** The logging calls the pipeline makes; a pino logger fits. */
export interface QueryLogger {
  warn(details: Record<string, unknown>, message: string): void;
}

export interface QueryPipelineOptions {
  engine: InferenceEngine;
  retriever: ChunkRetriever;
  packets: PacketStore;
  /** Adapter for the `packet` strategy, chosen by the fidelity gate; without one it splices naive packets. */
  adapter?: AdapterVectors;
  /** Why `packet` splices this adapter or none, for stats. */
  adapterReason?: string;
  /** Reuses the preamble across queries, and whole prompts for `prefix`. */
  prefixCache?: PrefixCache;
  logger?: QueryLogger;
  /** Chunks whose relevance score is below this go in as their summary packet. Default 0.25. */
  summaryThreshold?: number;
  /** Default tokens `epic` recomputes per chunk. Default 4. */
  epicTokens?: number;
  /** Instruction text after BOS. */
  instruction?: string;
  /** Largest topK a request may ask for. Default 16. */
  maxTopK?: number;
}

export const DEFAULT_INSTRUCTION = 'Use the passages below to answer the question.\n';

/** Formats the text after the passages: the question, then the cue the answer follows. */
export function questionPrompt(question: string): string {
  return `\nQuestion: ${question}\nAnswer:`;
}

/**
 * Relevance below which a chunk goes in as its summary packet. With the default hashed embedder,
 * over the first 30 HotpotQA dev questions and their 300 paragraphs, 9 of 10 retrieved supporting
 * chunks scored above 0.26 and the median of the other retrieved chunks was 0.28, so 0.25
 * summarizes mostly chunks that do not support the answer. An estimate from one small sample.
 */
export const DEFAULT_SUMMARY_THRESHOLD = 0.25;

export interface ResolvedRequest {
  question: string;
  topK: number;
  strategy: Strategy;
  maxTokens: number;
  temperature: number;
  seed: number;
  epicTokens: number;
}

export interface SelectedChunk {
  chunk: RetrievedChunk;
  kind: PacketKind;
  tokens: Int32Array;
}

/** The encoded question and the retrieved chunks that fit the context window. */
export interface Retrieval {
  question: Int32Array;
  retrievalMs: number;
  selected: SelectedChunk[];
  /** Retrieved chunks left out for lack of room. */
  dropped: RetrievedChunk[];
}

export interface BuiltContext {
  prefill: ContextPrefill;
  packetLoadMs: number;
  rebuilt: RebuiltPacket[];
}

/**
 * Answers a question over a store: retrieve chunks, choose full or summary packets, load them,
 * splice them after the preamble, prefill the question and decode. Transport-free: the HTTP server
 * and `kvpack ask` both call it.
 */
export class QueryPipeline {
  readonly options: Readonly<Required<Omit<QueryPipelineOptions, 'adapter' | 'adapterReason' | 'prefixCache' | 'logger'>>> &
    Pick<QueryPipelineOptions, 'adapter' | 'adapterReason' | 'prefixCache' | 'logger'>;
  private readonly preamble: Int32Array;

  constructor(options: QueryPipelineOptions) {
    this.options = {
      summaryThreshold: DEFAULT_SUMMARY_THRESHOLD,
      epicTokens: 4,
      instruction: DEFAULT_INSTRUCTION,
      maxTopK: 16,
      ...options,
    };
    this.preamble = options.engine.tokenizer.encode(this.options.instruction, { addBos: true });
  }

  async answer(request: QueryRequest, callbacks: QueryCallbacks = {}): Promise<QueryResult> {
    const began = performance.now();
    const settings = this.resolveRequest(request);

    // 1. Retrieve and fit the chunks into the context window.
    const retrieval = await this.retrieve(settings);

    // 2. Load the packets the strategy splices and build the context cache.
    const context = await this.buildContext(retrieval, settings.strategy, settings.epicTokens);
    const prefillEnd = performance.now();

    // 3. Decode.
    const generated = await generate(this.options.engine, context.prefill.start, {
      maxTokens: settings.maxTokens,
      temperature: settings.temperature,
      seed: settings.seed,
      onToken: callbacks.onToken ? (event) => event.text && callbacks.onToken?.(event.text) : undefined,
      signal: callbacks.signal,
    });
    const { timings, accounting } = context.prefill;
    return {
      answer: generated.text,
      finishReason: generated.finishReason,
      strategy: settings.strategy,
      adapterId: context.prefill.adapterId,
      citations: retrieval.selected.map(({ chunk, kind }) => citationOf(chunk, kind)),
      droppedChunks: retrieval.dropped.map((chunk) => chunk.chunkId),
      timings: {
        retrievalMs: retrieval.retrievalMs,
        packetLoadMs: context.packetLoadMs,
        spliceMs: timings.spliceMs,
        prefillMs: timings.preambleMs + timings.packetBuildMs + timings.recomputeMs + timings.questionMs,
        timeToFirstTokenMs: prefillEnd - began + (generated.firstTokenMs ?? 0),
        totalMs: performance.now() - began,
      },
      tokens: { ...accounting, questionTokens: retrieval.question.length, generatedTokens: generated.tokens.length },
      packetsRebuilt: context.rebuilt,
    };
  }

  /** Validates a request, encodes its question and retrieves the chunks that fit the window. */
  async retrieve(settings: ResolvedRequest): Promise<Retrieval> {
    const began = performance.now();
    const question = this.encodeQuestion(settings);
    const retrieved = await this.options.retriever.search(settings.question, settings.topK);
    const retrievalMs = performance.now() - began;
    return { question, retrievalMs, ...this.selectChunks(retrieved, question.length, settings.maxTokens) };
  }

  /** Loads the packets a strategy needs (rebuilding unusable ones) and prefills the context. */
  async buildContext(retrieval: Retrieval, strategy: Strategy, epicTokens: number): Promise<BuiltContext> {
    const loadStart = performance.now();
    const rebuilt: RebuiltPacket[] = [];
    const chunks = await this.loadPackets(retrieval.selected, strategy, rebuilt);
    const packetLoadMs = performance.now() - loadStart;
    const prefill = await prefillContext(
      this.options.engine,
      { preamble: this.preamble, chunks, question: retrieval.question },
      { strategy, epicTokens, adapter: this.options.adapter, prefixCache: this.options.prefixCache },
    );
    chargeRebuiltPackets(prefill.accounting, rebuilt);
    return { prefill, packetLoadMs, rebuilt };
  }

  /** Checks a request and fills in defaults. */
  resolveRequest(request: QueryRequest): ResolvedRequest {
    const question = typeof request.question === 'string' ? request.question.trim() : '';
    if (!question) {
      throw new KvpackError('INVALID_ARGUMENT', 'question must contain a non-space character.', { fields: ['question'] });
    }
    const strategy = request.strategy ?? 'packet';
    if (!strategies.includes(strategy)) {
      throw new KvpackError('INVALID_ARGUMENT', `strategy must be one of ${strategies.join(', ')}, got ${JSON.stringify(strategy)}.`);
    }
    const topK = request.topK ?? 3;
    if (!Number.isInteger(topK) || topK < 1 || topK > this.options.maxTopK) {
      throw new KvpackError('INVALID_ARGUMENT', `topK must be an integer from 1 to ${this.options.maxTopK}, got ${topK}.`);
    }
    const maxTokens = request.maxTokens ?? 64;
    if (!Number.isInteger(maxTokens) || maxTokens < 1) {
      throw new KvpackError('INVALID_ARGUMENT', `maxTokens must be an integer >= 1, got ${maxTokens}.`);
    }
    return {
      question,
      topK,
      strategy,
      maxTokens,
      temperature: request.temperature ?? 0,
      seed: request.seed ?? 0,
      epicTokens: request.epicTokens ?? this.options.epicTokens,
    };
  }

  /** Encodes the question with its cue; rejects one that leaves no room for an answer. */
  private encodeQuestion(settings: ResolvedRequest): Int32Array {
    const tokens = this.options.engine.tokenizer.encode(questionPrompt(settings.question));
    const window = this.options.engine.arch.maxPositionEmbeddings;
    const room = window - this.preamble.length - settings.maxTokens;
    if (tokens.length > room) {
      throw new KvpackError(
        'SEQUENCE_TOO_LONG',
        `The question takes ${tokens.length} tokens but the model's ${window}-position window leaves room for ${Math.max(0, room)} ` +
          `after the instruction and maxTokens ${settings.maxTokens}; shorten the question or lower maxTokens.`,
        { questionTokens: tokens.length, window },
      );
    }
    return tokens;
  }

  /** Keeps chunks in rank order while they fit; low-relevance chunks use their summary. */
  private selectChunks(retrieved: RetrievedChunk[], questionLength: number, maxTokens: number): { selected: SelectedChunk[]; dropped: RetrievedChunk[] } {
    const adapter = this.options.adapter;
    const perChunkExtra = adapter?.variant === 'reference' ? adapter.headerLength + adapter.trailerLength : 0;
    let room = this.options.engine.arch.maxPositionEmbeddings - this.preamble.length - questionLength - maxTokens;
    const selected: SelectedChunk[] = [];
    const dropped: RetrievedChunk[] = [];
    for (const chunk of retrieved) {
      const useSummary = chunk.score < this.options.summaryThreshold && chunk.summaryTokens !== undefined && chunk.summaryTokens.length > 0;
      const tokens = useSummary ? (chunk.summaryTokens as Int32Array) : chunk.tokens;
      const cost = tokens.length + perChunkExtra;
      if (cost > room) {
        dropped.push(chunk);
        continue;
      }
      room -= cost;
      selected.push({ chunk, kind: useSummary ? 'summary' : 'full', tokens });
    }
    return { selected, dropped };
  }

  private async loadPackets(selected: SelectedChunk[], strategy: Strategy, rebuilt: RebuiltPacket[]): Promise<ContextChunk[]> {
    if (strategy === 'full' || strategy === 'prefix') {
      return selected.map(({ tokens }) => ({ tokens }));
    }
    const adapter = strategy === 'packet' ? this.options.adapter : undefined;
    return Promise.all(selected.map(async (item, slot) => ({ tokens: item.tokens, packet: await this.loadPacket(item, adapterForSlot(adapter, slot), rebuilt) })));
  }

  private async loadPacket(item: SelectedChunk, adapter: AdapterVectors | undefined, rebuilt: RebuiltPacket[]): Promise<SpliceablePacket> {
    const { engine, packets } = this.options;
    const key = { chunkId: item.chunk.chunkId, adapterId: adapter?.id ?? NO_ADAPTER, kind: item.kind };
    let packet;
    try {
      packet = await packets.get(key, expectedFingerprints(engine, adapter));
    } catch (error) {
      if (!isKvpackError(error) || !['PACKET_NOT_FOUND', 'PACKET_CORRUPT', 'PACKET_MISMATCH', 'PACKET_VERSION_UNSUPPORTED'].includes(error.code)) {
        throw error;
      }
      this.options.logger?.warn({ ...key, code: error.code, error: error.message }, 'packet unusable, rebuilding');
      packet = (await buildPacket(engine, item.tokens, { chunkId: key.chunkId, kind: key.kind, adapter })).packet;
      rebuilt.push({ ...key, reason: error.code, computedTokens: prefillComputedEntries(item.tokens.length, adapter), chunkTokens: item.tokens.length });
      await packets.put(packet);
    }
    const { header } = packet;
    return { kv: packet.kv, basePosition: header.basePosition, prefixLength: header.prefixLength, suffixLength: header.suffixLength, adapterId: header.adapterId };
  }
}

/** Counts packets rebuilt during the query as computed, not spliced, prefill work. */
function chargeRebuiltPackets(accounting: TokenAccounting, rebuilt: RebuiltPacket[]): void {
  for (const packet of rebuilt) {
    accounting.splicedTokens -= packet.chunkTokens;
    accounting.computedTokens += packet.computedTokens;
  }
  accounting.prefillTokensAvoided = accounting.splicedTokens + accounting.reusedTokens;
  accounting.prefillComputeAvoided = accounting.contextTokens === 0 ? 0 : accounting.prefillTokensAvoided / accounting.contextTokens;
}

function citationOf(chunk: RetrievedChunk, kind: PacketKind): Citation {
  return { documentId: chunk.documentId, title: chunk.title, chunkId: chunk.chunkId, span: chunk.span, score: chunk.score, packet: kind };
}
