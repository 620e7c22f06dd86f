import type { InferenceEngine } from '../inference/engine.js';
import type { Tokenizer } from '../inference/tokenizer.js';
import { packetAdapters, type AdapterVectors } from '../packets/adapter-vectors.js';
import { buildPacket } from '../packets/build.js';
import type { PacketKind } from '../packets/packet.js';
import type { PacketStore } from '../packets/store.js';
import { splitSentences } from './chunker.js';
import {
  leadSentences,
  summarizeSentences,
  summaryTokenBudget,
  surprisalFromLogits,
  type SentenceSpan,
  type SummaryMethod,
  type TokenSurprisal,
} from './summarize.js';

/** A new chunk that needs its derived artifacts. */
export interface ChunkJob {
  chunkId: string;
  text: string;
  title: string;
  /** `[tokens]` token ids of `text`, without BOS. */
  tokens: Int32Array;
}

/** The results of processing a chunk. Its packets are already in the packet store. */
export interface ChunkArtifacts {
  summaryText: string;
  /** `[summary tokens]` token ids of `summaryText`, without BOS. */
  summaryTokens: Int32Array;
  /** Kinds of the packets stored for the chunk. */
  packetKinds: PacketKind[];
}

/** The per-chunk work of ingestion besides embedding: the summary and the packets. */
export interface ChunkProcessor {
  process(job: ChunkJob): Promise<ChunkArtifacts>;
}

export interface SummaryOptions {
  /** Summary length as a share of the chunk's tokens, in (0, 1]. */
  ratio: number;
  /** How sentences are picked. Default `lead`. */
  method?: SummaryMethod;
  /** Word weight for the model-free sentence score, such as the store's IDF. */
  wordWeight?: (word: string) => number;
}

/**
 * Builds the naive full packet of each chunk and the naive packet of its extractive summary. With
 * the `surprisal` summary method, the sentences are scored by the model's surprisal from the full
 * packet's own prefill. With adapters, the chunk and its summary also get a packet per adapter
 * (two for a conditioned-kv adapter with a first-slot header): `naive` and `epic` splice the naive
 * ones, `packet` the adapter's. Packets are stored before the
 * caller commits the chunk, so a committed chunk always has its packets.
 */
export class PacketChunkProcessor implements ChunkProcessor {
  constructor(
    private readonly engine: InferenceEngine,
    private readonly packets: PacketStore,
    private readonly summary: SummaryOptions,
    adapters: readonly AdapterVectors[] = [],
  ) {
    this.adapters = adapters.flatMap(packetAdapters);
  }

  /** The adapters to build packets with, first-slot adapters included. */
  private readonly adapters: readonly AdapterVectors[];

  async process(job: ChunkJob): Promise<ChunkArtifacts> {
    const { engine } = this;
    const wantsSurprisal = this.summary.method === 'surprisal';
    const full = await buildPacket(engine, job.tokens, { chunkId: job.chunkId, kind: 'full', logits: wantsSurprisal });
    await this.packets.put(full.packet);
    await this.putAdapterPackets(job.chunkId, 'full', job.tokens);

    const surprisal: TokenSurprisal | undefined = wantsSurprisal
      ? {
          tokenStarts: tokenStartOffsets(engine.tokenizer, job.tokens, job.text),
          surprisal: surprisalFromLogits(full.logits, job.tokens, engine.arch.vocabSize),
        }
      : undefined;
    const { text, tokens } = summarizeChunk(engine.tokenizer, job, this.summary, surprisal);
    if (tokens.length === 0) {
      return { summaryText: text, summaryTokens: tokens, packetKinds: ['full'] };
    }
    const summaryPacket = await buildPacket(engine, tokens, { chunkId: job.chunkId, kind: 'summary' });
    await this.packets.put(summaryPacket.packet);
    await this.putAdapterPackets(job.chunkId, 'summary', tokens);
    return { summaryText: text, summaryTokens: tokens, packetKinds: ['full', 'summary'] };
  }

  private async putAdapterPackets(chunkId: string, kind: PacketKind, tokens: Int32Array): Promise<void> {
    for (const adapter of this.adapters) {
      await this.packets.put((await buildPacket(this.engine, tokens, { chunkId, kind, adapter })).packet);
    }
  }
}

/** Summarizes with the model-free score and stores no packets (for stores without a model at hand). */
export class SummaryOnlyChunkProcessor implements ChunkProcessor {
  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly summary: SummaryOptions,
  ) {}

  async process(job: ChunkJob): Promise<ChunkArtifacts> {
    const { text, tokens } = summarizeChunk(this.tokenizer, job, this.summary, undefined);
    return { summaryText: text, summaryTokens: tokens, packetKinds: [] };
  }
}

/** Splits a chunk into sentences, selects them within `ratio × tokens` and encodes the summary. */
export function summarizeChunk(
  tokenizer: Tokenizer,
  job: ChunkJob,
  options: SummaryOptions,
  surprisal: TokenSurprisal | undefined,
): { text: string; tokens: Int32Array } {
  const sentences: SentenceSpan[] = splitSentences(job.text).map((span) => ({
    ...span,
    tokenCount: tokenizer.encode(job.text.slice(span.start, span.end)).length,
  }));
  const tokenBudget = summaryTokenBudget(job.tokens.length, options.ratio);
  const method = options.method ?? 'lead';
  const summary =
    method === 'lead'
      ? leadSentences(job.text, sentences, tokenBudget)
      : summarizeSentences({ text: job.text, sentences, tokenBudget, surprisal: method === 'surprisal' ? surprisal : undefined, wordWeight: options.wordWeight });
  return { text: summary.text, tokens: summary.text ? tokenizer.encode(summary.text) : new Int32Array(0) };
}

/**
 * Finds where each token's text starts in `text` by streaming the tokens through the decoder.
 * When the decoded text differs from `text` (unknown characters, normalization), offsets are
 * spread evenly over the text instead.
 */
export function tokenStartOffsets(tokenizer: Tokenizer, tokens: Int32Array, text: string): Int32Array {
  const starts = new Int32Array(tokens.length);
  const decoder = tokenizer.createStreamDecoder();
  let decoded = '';
  for (let j = 0; j < tokens.length; j++) {
    starts[j] = decoded.length;
    decoded += decoder.push(tokens[j]);
  }
  decoded += decoder.flush();
  if (decoded !== text) {
    for (let j = 0; j < tokens.length; j++) starts[j] = Math.floor((j * text.length) / tokens.length);
  }
  return starts;
}
