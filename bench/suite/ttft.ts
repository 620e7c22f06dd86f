import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { packageRoot } from '../../common/paths.js';
import { concatInt32 } from '../../common/typed-arrays.js';
import { parameterCount } from '../../inference/architecture.js';
import { InferenceEngine } from '../../inference/engine.js';
import type { KvCache } from '../../inference/kv-cache.js';
import { expectedModelOf, makeAdapterVectors, resolveAdapter } from '../../packets/adapter.js';
import { adapterForSlot, packetAdapters, type AdapterVectors } from '../../packets/adapter-vectors.js';
import { buildPacket, expectedFingerprints } from '../../packets/build.js';
import { NO_ADAPTER } from '../../packets/packet.js';
import { PrefixCache } from '../../packets/prefix-cache.js';
import { FsPacketStore } from '../../packets/store.js';
import { prefillContext, type ContextChunk, type Strategy } from '../../packets/strategies.js';
import { DEFAULT_INSTRUCTION, questionPrompt } from '../../query/pipeline.js';
import { prefillFlops, type ContextShape, type FlopsCase } from './flops.js';
import { loadTransformersPeer, type TransformersPeer } from './peer.js';
import type { SuitePartOptions } from './report-types.js';
import { summarizeTimings, type TimingSummary } from './stats.js';

/** A context size on the curve: `chunks` retrieved chunks of `chunkTokens` tokens each. */
export interface ContextPoint {
  chunks: number;
  chunkTokens: number;
}

/** The measurement plan for one model: its context sizes, repetitions and peer limit. */
export interface TtftModelPlan {
  /** Short model name for tables, e.g. `llama-100m`. */
  name: string;
  modelDir: string;
  points: ContextPoint[];
  /** Measured runs per case and point, after one warm-up round at the smallest point. */
  repetitions: number;
  /** Contexts up to this many tokens also run through transformers.js; 0 skips the peer. */
  peerMaxContext: number;
}

export const ttftCases = ['full', 'prefix', 'naive', 'epic', 'packet', 'question only', 'transformers.js'] as const;
export type TtftCase = (typeof ttftCases)[number];

export interface PointResult {
  point: ContextPoint;
  shape: ContextShape;
  contextTokens: number;
  /** Time from the question to the first token's logits, per case. */
  timings: Partial<Record<TtftCase, TimingSummary>>;
  /** Tokens run through the model per strategy. */
  computedTokens: Partial<Record<Strategy, number>>;
  flops: Record<FlopsCase, number>;
  /** Breakdown of `packet`'s time: reading packets from the store, splicing, prefilling the question. */
  packetParts: { loadMs: TimingSummary; spliceMs: TimingSummary; questionMs: TimingSummary };
}

export interface TtftModelResult {
  name: string;
  parameters: number;
  maxPositions: number;
  adapterNote: string;
  epicTokens: number;
  /** Largest context the transformers.js peer ran on; 0 when it did not run. */
  peerMaxContext: number;
  packetBuild: { packets: number; tokens: number; ms: number };
  points: PointResult[];
}

const questions = [
  'What did the passages say about the cache?',
  'Which part of the text names a place?',
  'Who is mentioned first in the passages?',
  'How are the passages related to each other?',
  'When does the last passage take place?',
];
const warmUpQuestion = 'What is this about?';

/**
 * Measures time to first token against context length. At each point every strategy answers new
 * questions over the same chunks. Their packets are in a real packet store on disk whose memory
 * cache is off, so every query reads, checks and decodes them. The lower bound (the question
 * prefilled over a cache already assembled in memory) and transformers.js run beside them.
 */
export async function measureTtft(plan: TtftModelPlan, options: SuitePartOptions & { epicTokens: number }): Promise<TtftModelResult> {
  const engine = await InferenceEngine.load(plan.modelDir);
  let peer: TransformersPeer | undefined;
  try {
    const { adapter, note } = await packetAdapter(engine);
    const preamble = engine.tokenizer.encode(DEFAULT_INSTRUCTION, { addBos: true });
    const chunkSets = chunkTokenSets(engine, plan.points);
    const store = await FsPacketStore.open(path.join(options.scratchDir, `packets-${plan.name}`), { cacheBytes: 0 });
    options.log(`${plan.name}: building packets for ${[...chunkSets.values()].reduce((sum, set) => sum + set.length, 0)} chunks`);
    const packetBuild = await buildPackets(engine, store, chunkSets, adapter);
    peer = plan.peerMaxContext > 0 ? await loadTransformersPeer(plan.modelDir) : undefined;
    const preambleCache = (await engine.forward({ tokens: preamble, logits: 'none' })).present;
    const context: RunContext = { engine, store, adapter, preamble, preambleCache, peer, epicTokens: options.epicTokens };

    const smallest = plan.points.reduce((a, b) => (a.chunks * a.chunkTokens <= b.chunks * b.chunkTokens ? a : b));
    await runRound(context, querySetup(context, chunkSets, smallest, warmUpQuestion), plan.peerMaxContext);
    const points: PointResult[] = [];
    for (const point of plan.points) {
      options.log(`${plan.name}: ${point.chunks} chunks × ${point.chunkTokens} tokens, ${plan.repetitions} repetitions`);
      points.push(await measurePoint(context, chunkSets, point, plan));
    }
    return {
      name: plan.name,
      parameters: parameterCount(engine.arch),
      maxPositions: engine.arch.maxPositionEmbeddings,
      adapterNote: note,
      epicTokens: options.epicTokens,
      peerMaxContext: plan.peerMaxContext,
      packetBuild,
      points,
    };
  } finally {
    await peer?.release();
    await engine.release();
  }
}

interface RunContext {
  engine: InferenceEngine;
  store: FsPacketStore;
  adapter: AdapterVectors;
  preamble: Int32Array;
  /** The preamble's cache, which every query but `full` finds in its prefix cache. */
  preambleCache: KvCache;
  peer: TransformersPeer | undefined;
  epicTokens: number;
}

/** One query: its chunks (ids and tokens) and question. */
interface QuerySetup {
  chunkIds: string[];
  chunkTokens: Int32Array[];
  question: Int32Array;
  contextTokens: number;
}

interface RoundResult {
  ms: Partial<Record<TtftCase, number>>;
  computedTokens: Partial<Record<Strategy, number>>;
  packetParts: { loadMs: number; spliceMs: number; questionMs: number };
}

async function measurePoint(context: RunContext, chunkSets: Map<number, ChunkSet>, point: ContextPoint, plan: TtftModelPlan): Promise<PointResult> {
  const rounds: RoundResult[] = [];
  const setups: QuerySetup[] = [];
  for (let repetition = 0; repetition < plan.repetitions; repetition++) {
    setups.push(querySetup(context, chunkSets, point, questions[repetition % questions.length]));
    rounds.push(await runRound(context, setups[repetition], plan.peerMaxContext, repetition));
  }
  // Questions differ in length by a few tokens; shapes and token counts are the first query's.
  const first = setups[0];
  const shape: ContextShape = {
    preambleTokens: context.preamble.length,
    chunkTokens: first.chunkTokens.map((tokens) => tokens.length),
    questionTokens: first.question.length,
  };
  const timings: Partial<Record<TtftCase, TimingSummary>> = {};
  for (const name of ttftCases) {
    const values = rounds.flatMap((round) => (round.ms[name] === undefined ? [] : [round.ms[name]]));
    if (values.length > 0) timings[name] = summarizeTimings(values);
  }
  const flopsCases: FlopsCase[] = ['full', 'prefix', 'naive', 'epic', 'packet', 'question only'];
  return {
    point,
    shape,
    contextTokens: first.contextTokens,
    timings,
    computedTokens: rounds[0].computedTokens,
    flops: Object.fromEntries(flopsCases.map((which) => [which, prefillFlops(context.engine.arch, shape, which, context.epicTokens)])) as Record<FlopsCase, number>,
    packetParts: {
      loadMs: summarizeTimings(rounds.map((round) => round.packetParts.loadMs)),
      spliceMs: summarizeTimings(rounds.map((round) => round.packetParts.spliceMs)),
      questionMs: summarizeTimings(rounds.map((round) => round.packetParts.questionMs)),
    },
  };
}

/**
 * Runs every case once on one query, in an order that rotates with `turn` so no case always runs
 * first. Each case gets a prefix cache that holds only the preamble, as for a query whose chunks
 * no earlier query had in that order.
 */
async function runRound(context: RunContext, setup: QuerySetup, peerMaxContext: number, turn = 0): Promise<RoundResult> {
  const result: RoundResult = { ms: {}, computedTokens: {}, packetParts: { loadMs: 0, spliceMs: 0, questionMs: 0 } };
  const assembled = await assembledCache(context, setup, preambleOnlyCache(context));
  const cases = ttftCases.filter((name) => name !== 'transformers.js' || (context.peer && setup.contextTokens <= peerMaxContext));
  for (let i = 0; i < cases.length; i++) {
    const name = cases[(i + turn) % cases.length];
    if (name === 'question only') {
      result.ms[name] = await timeQuestionOnly(context, setup, assembled);
    } else if (name === 'transformers.js') {
      const tokens = concatInt32([context.preamble, ...setup.chunkTokens, setup.question]);
      result.ms[name] = (await context.peer!.firstToken(tokens)).ms;
    } else {
      const run = await timeStrategy(context, setup, name, preambleOnlyCache(context));
      result.ms[name] = run.ms;
      result.computedTokens[name] = run.computedTokens;
      if (name === 'packet') result.packetParts = run.parts;
    }
  }
  return result;
}

/** Times one strategy from the question to the first token: packets read from the store, context prefilled, first token picked. */
async function timeStrategy(
  context: RunContext,
  setup: QuerySetup,
  strategy: Strategy,
  prefixCache: PrefixCache,
): Promise<{ ms: number; computedTokens: number; parts: RoundResult['packetParts'] }> {
  const adapter = strategy === 'packet' ? context.adapter : undefined;
  const began = performance.now();
  const chunks = strategy === 'full' || strategy === 'prefix' ? setup.chunkTokens.map((tokens) => ({ tokens })) : await loadChunks(context, setup, adapter);
  const loaded = performance.now();
  const prefill = await prefillContext(
    context.engine,
    { preamble: context.preamble, chunks, question: setup.question },
    { strategy, epicTokens: context.epicTokens, adapter, prefixCache },
  );
  argmax(prefill.start.logits);
  const ms = performance.now() - began;
  return {
    ms,
    computedTokens: prefill.accounting.computedTokens,
    parts: { loadMs: loaded - began, spliceMs: prefill.timings.spliceMs, questionMs: prefill.timings.questionMs },
  };
}

async function loadChunks(context: RunContext, setup: QuerySetup, adapter: AdapterVectors | undefined): Promise<ContextChunk[]> {
  return Promise.all(
    setup.chunkIds.map(async (chunkId, index) => {
      const slotAdapter = adapterForSlot(adapter, index);
      const packet = await context.store.get({ chunkId, adapterId: slotAdapter?.id ?? NO_ADAPTER, kind: 'full' }, expectedFingerprints(context.engine, slotAdapter));
      const { header } = packet;
      return {
        tokens: setup.chunkTokens[index],
        packet: { kv: packet.kv, basePosition: header.basePosition, prefixLength: header.prefixLength, suffixLength: header.suffixLength, adapterId: header.adapterId },
      };
    }),
  );
}

/** Times the lower bound: the question prefilled over preamble and chunk entries already in memory. */
async function timeQuestionOnly(context: RunContext, setup: QuerySetup, assembled: KvCache): Promise<number> {
  const began = performance.now();
  const result = await context.engine.forward({ tokens: setup.question, past: assembled, logits: 'last' });
  argmax(result.logits);
  return performance.now() - began;
}

/** Preamble and spliced packet entries, without the question: what `question only` starts from. */
async function assembledCache(context: RunContext, setup: QuerySetup, prefixCache: PrefixCache): Promise<KvCache> {
  const chunks = await loadChunks(context, setup, context.adapter);
  const prefill = await prefillContext(
    context.engine,
    { preamble: context.preamble, chunks, question: setup.question },
    { strategy: 'packet', adapter: context.adapter, prefixCache },
  );
  return prefill.start.cache.slice(0, prefill.start.cache.length - setup.question.length);
}

function preambleOnlyCache(context: RunContext): PrefixCache {
  const cache = new PrefixCache(1 << 30);
  cache.store(context.preamble, context.preambleCache);
  return cache;
}

type ChunkSet = { id: string; tokens: Int32Array }[];

/** For each chunk length on the curve, as many distinct chunks of real text as the largest point needs. */
function chunkTokenSets(engine: InferenceEngine, points: readonly ContextPoint[]): Map<number, ChunkSet> {
  const text = engine.tokenizer.encode(sampleText());
  const sets = new Map<number, ChunkSet>();
  for (const length of new Set(points.map((point) => point.chunkTokens))) {
    const count = Math.max(...points.filter((point) => point.chunkTokens === length).map((point) => point.chunks));
    if (text.length < 2 * length) {
      throw new Error(`The sample text encodes to ${text.length} tokens, too few for ${length}-token chunks.`);
    }
    const stride = Math.max(1, Math.floor((text.length - length) / count));
    const set: ChunkSet = [];
    for (let i = 0; i < count; i++) {
      set.push({ id: `bench-${length}-${i}`, tokens: text.slice(i * stride, i * stride + length) });
    }
    sets.set(length, set);
  }
  return sets;
}

function querySetup(context: RunContext, chunkSets: Map<number, ChunkSet>, point: ContextPoint, question: string): QuerySetup {
  const chunks = chunkSets.get(point.chunkTokens)!.slice(0, point.chunks);
  const questionTokens = context.engine.tokenizer.encode(questionPrompt(question));
  const contextTokens = context.preamble.length + point.chunks * point.chunkTokens + questionTokens.length;
  if (contextTokens >= context.engine.arch.maxPositionEmbeddings) {
    throw new Error(
      `${point.chunks} chunks of ${point.chunkTokens} tokens make a ${contextTokens}-token context, beyond the model's ` +
        `${context.engine.arch.maxPositionEmbeddings} positions; drop that point for this model.`,
    );
  }
  return { chunkIds: chunks.map((chunk) => chunk.id), chunkTokens: chunks.map((chunk) => chunk.tokens), question: questionTokens, contextTokens };
}

/** Naive and adapter packets of every chunk, put into the store (prefill time is ingestion work, timed apart). */
async function buildPackets(engine: InferenceEngine, store: FsPacketStore, chunkSets: Map<number, ChunkSet>, adapter: AdapterVectors) {
  const began = performance.now();
  let packets = 0;
  let tokens = 0;
  for (const set of chunkSets.values()) {
    for (const chunk of set) {
      for (const withAdapter of [undefined, ...packetAdapters(adapter)]) {
        const { packet } = await buildPacket(engine, chunk.tokens, { chunkId: chunk.id, kind: 'full', adapter: withAdapter });
        await store.put(packet);
        packets += 1;
        tokens += chunk.tokens.length;
      }
    }
  }
  return { packets, tokens, ms: performance.now() - began };
}

/**
 * Picks the adapter `packet` splices: the model's shipped adapter when it has one, otherwise 8
 * conditioned header vectors set to the BOS embedding (an untrained adapter of the shipped shape,
 * which costs the same at query time as a trained one).
 */
async function packetAdapter(engine: InferenceEngine): Promise<{ adapter: AdapterVectors; note: string }> {
  const resolved = resolveAdapter(undefined, expectedModelOf(engine));
  if (resolved.vectors) {
    const { id, variant, headerLength } = resolved.vectors;
    const header = variant === 'conditioned-kv' ? `${headerLength} header cache entries per layer` : `${headerLength} header vectors`;
    return { adapter: resolved.vectors, note: `the shipped adapter ${id} (${variant}, ${header})` };
  }
  const hidden = engine.arch.hiddenSize;
  const bos = await engine.embedTokens([engine.arch.bosTokenId ?? 0]);
  const header = new Float32Array(8 * hidden);
  for (let i = 0; i < 8; i++) header.set(bos, i * hidden);
  return {
    adapter: makeAdapterVectors('bench-untrained', 'conditioned', header, new Float32Array(0), hidden),
    note: `an untrained conditioned adapter of 8 header vectors set to the BOS embedding; random weights have no trained adapter, and query time does not depend on the vectors`,
  };
}

/** Reads the project's README and docs: real English text, present wherever kvpack is installed. */
function sampleText(): string {
  const docs = path.join(packageRoot, 'docs');
  const files = [path.join(packageRoot, 'README.md'), ...readdirSync(docs).filter((name) => name.endsWith('.md')).sort().map((name) => path.join(docs, name))];
  return files.map((file) => readFileSync(file, 'utf8')).join('\n\n');
}


function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}
