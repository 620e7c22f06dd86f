import type { FinishReason } from '../inference/generate.js';
import type { PacketKind } from '../packets/packet.js';
import type { Strategy, TokenAccounting } from '../packets/strategies.js';

/** A chunk found for a question, with what the query needs to splice it. */
export interface RetrievedChunk {
  chunkId: string;
  documentId: string;
  title: string;
  text: string;
  /** Character span `[start, end)` of the chunk in its document's normalized text. */
  span: { start: number; end: number };
  /** Cosine similarity of question and chunk embeddings, in [-1, 1]. */
  score: number;
  /** The chunk's token ids, as its packet stores them. */
  tokens: Int32Array;
  /** Token ids of its extractive summary, when ingestion made one. */
  summaryTokens: Int32Array | undefined;
}

/** What the query pipeline needs from a store: ranked chunks for a question. */
export interface ChunkRetriever {
  search(question: string, k: number): Promise<RetrievedChunk[]>;
}

export interface QueryRequest {
  question: string;
  /** Chunks to retrieve. Default 3. */
  topK?: number;
  /** Default `packet`. */
  strategy?: Strategy;
  /** Tokens to generate at most. Default 64. */
  maxTokens?: number;
  /** Sampling temperature; 0 is greedy. Default 0. */
  temperature?: number;
  /** Sampling seed. Default 0. */
  seed?: number;
  /** Tokens `epic` recomputes at the start of each chunk. Default from the pipeline options. */
  epicTokens?: number;
}

export interface Citation {
  documentId: string;
  title: string;
  chunkId: string;
  span: { start: number; end: number };
  score: number;
  /** Whether the full chunk or its summary went into the context. */
  packet: PacketKind;
}

/** Milliseconds spent in each stage of one query. */
export interface QueryTimings {
  retrievalMs: number;
  packetLoadMs: number;
  spliceMs: number;
  prefillMs: number;
  timeToFirstTokenMs: number;
  totalMs: number;
}

export interface QueryTokens extends TokenAccounting {
  questionTokens: number;
  generatedTokens: number;
}

/** A packet that could not be used as stored and was rebuilt for this query. */
export interface RebuiltPacket {
  chunkId: string;
  kind: PacketKind;
  adapterId: string;
  /** The error code that made the stored packet unusable: PACKET_NOT_FOUND, PACKET_CORRUPT or PACKET_MISMATCH. */
  reason: string;
  /** Chunk tokens in the packet. */
  chunkTokens: number;
  /** Tokens run through the model to rebuild it, adapter entries included. */
  computedTokens: number;
}

export interface QueryResult {
  answer: string;
  finishReason: FinishReason;
  strategy: Strategy;
  /** Adapter whose packets were spliced, or `none`. */
  adapterId: string;
  citations: Citation[];
  /** Retrieved chunks left out because the context window had no room for them. */
  droppedChunks: string[];
  timings: QueryTimings;
  tokens: QueryTokens;
  packetsRebuilt: RebuiltPacket[];
}

export interface QueryCallbacks {
  /** Called with each piece of answer text as it is generated. */
  onToken?: (text: string) => void;
  /** Aborting stops generation; the result's finishReason is `cancelled`. */
  signal?: AbortSignal;
}
