import { performance } from 'node:perf_hooks';
import { KvpackError } from '../common/errors.js';
import { concatInt32 } from '../common/typed-arrays.js';
import type { InferenceEngine } from '../inference/engine.js';
import type { DecodeStart } from '../inference/generate.js';
import { KvCache } from '../inference/kv-cache.js';
import { adapterForSlot, type AdapterVectors } from './adapter-vectors.js';
import type { PrefixCache } from './prefix-cache.js';
import { prefillChunk, prefillComputedEntries, sequence } from './prefill.js';
import { spliceSegments } from './splice.js';

/**
 * How a query's context cache is built:
 * - `full`: prefill every token (the quality reference);
 * - `prefix`: reuse the longest cached exact token prefix, prefill the rest;
 * - `naive`: splice packets built without adapter;
 * - `epic`: splice naive packets, then recompute the first k tokens of each chunk with the full
 *   preceding context (EPIC's fix for the per-chunk attention sink);
 * - `packet`: splice packets built with the model's adapter (naive packets when it has none).
 */
export const strategies = ['full', 'prefix', 'naive', 'epic', 'packet'] as const;
export type Strategy = (typeof strategies)[number];

/** A chunk's packet ready to splice: its entries, rotated for `basePosition`, and its adapter entries. */
export interface SpliceablePacket {
  kv: KvCache;
  basePosition: number;
  /** Adapter entries before the chunk's tokens (reference variant header). */
  prefixLength: number;
  /** Adapter entries after the chunk's tokens (reference variant trailer). */
  suffixLength: number;
  /** Id of the adapter the packet was built with, `none` for a naive packet. */
  adapterId: string;
}

export interface ContextChunk {
  tokens: Int32Array;
  /** The stored packet for the chosen strategy; built on the fly (and counted as computed) when absent. */
  packet?: SpliceablePacket;
}

/** The query's context in order: preamble (BOS and instruction), retrieved chunks, question. */
export interface ContextPlan {
  preamble: Int32Array;
  chunks: ContextChunk[];
  question: Int32Array;
}

export interface ContextOptions {
  strategy: Strategy;
  /** Tokens recomputed at the start of each chunk by `epic`. Default 4. */
  epicTokens?: number;
  /** The adapter that `packet` splices with; without one `packet` splices naive packets. */
  adapter?: AdapterVectors;
  /** Reused for the preamble by every strategy but `full`, and for whole prompts by `prefix`. */
  prefixCache?: PrefixCache;
}

/** Where the prefill work of one context went, in tokens. */
export interface TokenAccounting {
  /** Tokens a full prefill computes: preamble + chunk tokens + question. */
  contextTokens: number;
  /** Chunk tokens whose cache entries came from stored packets. */
  splicedTokens: number;
  /** Adapter entries spliced alongside them (reference variant header and trailer). */
  adapterEntries: number;
  /** Tokens whose entries came from the prefix cache. */
  reusedTokens: number;
  /** Tokens run through the model while building this context, packets built on the fly included. */
  computedTokens: number;
  /** Chunk tokens recomputed with context by `epic`. */
  recomputedTokens: number;
  /** Spliced plus reused tokens: prefill that did not run. */
  prefillTokensAvoided: number;
  /** prefillTokensAvoided / contextTokens. */
  prefillComputeAvoided: number;
}

export interface ContextTimings {
  preambleMs: number;
  packetBuildMs: number;
  spliceMs: number;
  recomputeMs: number;
  questionMs: number;
}

export interface ContextPrefill {
  start: DecodeStart;
  accounting: TokenAccounting;
  timings: ContextTimings;
  /** Global position of each chunk's first cache entry (adapter entries included). */
  chunkOffsets: number[];
  /** Adapter actually spliced: an adapter id, or `none`. */
  adapterId: string;
}

interface Tally {
  computed: number;
  reused: number;
  spliced: number;
  adapterEntries: number;
  recomputed: number;
}

/** Builds the cache of preamble, chunks and question with the chosen strategy. */
export async function prefillContext(engine: InferenceEngine, plan: ContextPlan, options: ContextOptions): Promise<ContextPrefill> {
  validatePlan(engine, plan, options);
  const tally: Tally = { computed: 0, reused: 0, spliced: 0, adapterEntries: 0, recomputed: 0 };
  const timings: ContextTimings = { preambleMs: 0, packetBuildMs: 0, spliceMs: 0, recomputeMs: 0, questionMs: 0 };
  const contextTokens = plan.preamble.length + plan.chunks.reduce((sum, chunk) => sum + chunk.tokens.length, 0) + plan.question.length;

  let prefill: { start: DecodeStart; chunkOffsets: number[]; adapterId: string };
  if (options.strategy === 'full' || options.strategy === 'prefix') {
    prefill = await prefillWithoutPackets(engine, plan, options, tally, timings);
  } else {
    prefill = await prefillWithPackets(engine, plan, options, tally, timings);
  }

  const avoided = tally.spliced + tally.reused;
  const accounting: TokenAccounting = {
    contextTokens,
    splicedTokens: tally.spliced,
    adapterEntries: tally.adapterEntries,
    reusedTokens: tally.reused,
    computedTokens: tally.computed,
    recomputedTokens: tally.recomputed,
    prefillTokensAvoided: avoided,
    prefillComputeAvoided: contextTokens === 0 ? 0 : avoided / contextTokens,
  };
  return { ...prefill, accounting, timings };
}

/** `full` and `prefix`: one prefill of every token not found in the prefix cache. */
async function prefillWithoutPackets(
  engine: InferenceEngine,
  plan: ContextPlan,
  options: ContextOptions,
  tally: Tally,
  timings: ContextTimings,
): Promise<{ start: DecodeStart; chunkOffsets: number[]; adapterId: string }> {
  const tokens = concatInt32([plan.preamble, ...plan.chunks.map((chunk) => chunk.tokens), plan.question]);
  const began = performance.now();
  // At least the last token is computed, because decoding needs its logits.
  const match = options.strategy === 'prefix' ? options.prefixCache?.lookup(tokens, tokens.length - 1) : undefined;
  const past = match?.cache ?? KvCache.empty(engine.layout);
  const rest = tokens.subarray(past.length);
  const result = await engine.forward({ tokens: rest, past });
  tally.reused += past.length;
  tally.computed += rest.length;
  if (options.strategy === 'prefix') {
    options.prefixCache?.store(tokens, result.present);
  }
  timings.questionMs = performance.now() - began;
  const chunkOffsets: number[] = [];
  let position = plan.preamble.length;
  for (const chunk of plan.chunks) {
    chunkOffsets.push(position);
    position += chunk.tokens.length;
  }
  return { start: { cache: result.present, logits: result.logits }, chunkOffsets, adapterId: 'none' };
}

/** `naive`, `epic` and `packet`: preamble, spliced packets, optional EPIC recompute, question. */
async function prefillWithPackets(
  engine: InferenceEngine,
  plan: ContextPlan,
  options: ContextOptions,
  tally: Tally,
  timings: ContextTimings,
): Promise<{ start: DecodeStart; chunkOffsets: number[]; adapterId: string }> {
  const adapter = options.strategy === 'packet' ? options.adapter : undefined;
  const adapterId = adapter?.id ?? 'none';

  // 1. Preamble: computed fresh at position 0, or reused as an exact prefix.
  let began = performance.now();
  const preamble = await preambleCache(engine, plan.preamble, options.prefixCache, tally);
  timings.preambleMs = performance.now() - began;

  // 2. Packets: stored ones as they are, missing ones built now.
  began = performance.now();
  const packets: SpliceablePacket[] = [];
  const stored: boolean[] = [];
  for (const [slot, chunk] of plan.chunks.entries()) {
    const { packet, fromStore } = await packetFor(engine, chunk, adapterForSlot(adapter, slot), tally);
    packets.push(packet);
    stored.push(fromStore);
  }
  timings.packetBuildMs = performance.now() - began;

  // 3. Splice at contiguous positions after the preamble, keys re-rotated.
  began = performance.now();
  const spliced = spliceSegments(engine.arch, preamble, packets);
  timings.spliceMs = performance.now() - began;
  let cache = spliced.cache;

  // 4. EPIC: recompute the first k tokens of each chunk with everything before them.
  if (options.strategy === 'epic') {
    began = performance.now();
    cache = await recomputeChunkStarts(engine, cache, plan.chunks, spliced.offsets, stored, options.epicTokens ?? 4, tally);
    timings.recomputeMs = performance.now() - began;
  }

  // 5. The question, at the positions after the context.
  began = performance.now();
  const result = await engine.forward({ tokens: plan.question, past: cache });
  tally.computed += plan.question.length;
  timings.questionMs = performance.now() - began;
  return { start: { cache: result.present, logits: result.logits }, chunkOffsets: spliced.offsets, adapterId };
}

async function preambleCache(engine: InferenceEngine, preamble: Int32Array, prefixCache: PrefixCache | undefined, tally: Tally): Promise<KvCache> {
  if (preamble.length === 0) {
    return KvCache.empty(engine.layout);
  }
  const match = prefixCache?.lookup(preamble);
  if (match && match.length === preamble.length) {
    tally.reused += preamble.length;
    return match.cache;
  }
  const result = await engine.forward({ tokens: preamble, logits: 'none' });
  tally.computed += preamble.length;
  prefixCache?.store(preamble, result.present);
  return result.present;
}

async function packetFor(
  engine: InferenceEngine,
  chunk: ContextChunk,
  adapter: AdapterVectors | undefined,
  tally: Tally,
): Promise<{ packet: SpliceablePacket; fromStore: boolean }> {
  const wanted = adapter?.id ?? 'none';
  if (chunk.packet && chunk.packet.adapterId === wanted) {
    tally.spliced += chunk.tokens.length;
    tally.adapterEntries += chunk.packet.prefixLength + chunk.packet.suffixLength;
    return { packet: chunk.packet, fromStore: true };
  }
  const built = await prefillChunk(engine, chunk.tokens, adapter);
  tally.computed += prefillComputedEntries(chunk.tokens.length, adapter);
  tally.adapterEntries += built.prefixLength + built.suffixLength;
  const packet = { kv: built.kv, basePosition: 0, prefixLength: built.prefixLength, suffixLength: built.suffixLength, adapterId: wanted };
  return { packet, fromStore: false };
}

async function recomputeChunkStarts(
  engine: InferenceEngine,
  spliced: KvCache,
  chunks: ContextChunk[],
  offsets: number[],
  fromStore: boolean[],
  k: number,
  tally: Tally,
): Promise<KvCache> {
  let cache = spliced;
  for (let i = 0; i < chunks.length; i++) {
    const count = Math.min(k, chunks[i].tokens.length);
    if (count === 0) continue;
    const start = offsets[i];
    const before = cache.slice(0, start);
    const recomputed = await engine.forward({
      tokens: chunks[i].tokens.subarray(0, count),
      positions: sequence(count, start),
      past: before,
      logits: 'none',
    });
    cache = KvCache.concat(engine.layout, [recomputed.present, cache.slice(start + count)]);
    tally.recomputed += count;
    tally.computed += count;
    if (fromStore[i]) tally.spliced -= count;
  }
  return cache;
}

function validatePlan(engine: InferenceEngine, plan: ContextPlan, options: ContextOptions): void {
  if (!strategies.includes(options.strategy)) {
    throw new KvpackError('INVALID_ARGUMENT', `Unknown strategy ${JSON.stringify(options.strategy)}; use one of ${strategies.join(', ')}.`);
  }
  if (plan.question.length === 0) {
    throw new KvpackError('INVALID_ARGUMENT', 'The question encodes to no tokens; a context needs at least one question token.');
  }
  const epicTokens = options.epicTokens ?? 4;
  if (!Number.isInteger(epicTokens) || epicTokens < 0) {
    throw new KvpackError('INVALID_ARGUMENT', `epicTokens must be an integer >= 0, got ${epicTokens}.`);
  }
  const adapterEntries = options.strategy === 'packet' && options.adapter?.variant === 'reference' ? options.adapter.headerLength + options.adapter.trailerLength : 0;
  const length = plan.preamble.length + plan.question.length + plan.chunks.reduce((sum, chunk) => sum + chunk.tokens.length + adapterEntries, 0);
  if (length > engine.arch.maxPositionEmbeddings) {
    throw new KvpackError(
      'SEQUENCE_TOO_LONG',
      `The context needs ${length} positions (preamble ${plan.preamble.length}, ${plan.chunks.length} chunks, question ${plan.question.length}) ` +
        `but the model has ${engine.arch.maxPositionEmbeddings}; retrieve fewer chunks or shorten the question.`,
      { length, maxPositions: engine.arch.maxPositionEmbeddings },
    );
  }
}
