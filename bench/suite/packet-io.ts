import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Bench, type Task } from 'tinybench';
import { KvpackError } from '../../common/errors.js';
import type { InferenceEngine } from '../../inference/engine.js';
import { buildPacket, expectedFingerprints } from '../../packets/build.js';
import { kvBytesPerToken, PRELUDE_BYTES, scaleBlockBytes } from '../../packets/codec.js';
import { PACKET_DTYPES, packetKeyOf, type Packet, type PacketDtype } from '../../packets/packet.js';
import { FsPacketStore } from '../../packets/store.js';
import { packetFilePath } from '../../packets/store-layout.js';
import { readHotpotParagraphs } from './hotpotqa-paragraphs.js';
import type { ReportSection, SuitePartOptions } from './report-types.js';
import { formatMs } from './stats.js';

export interface PacketIoOptions extends SuitePartOptions {
  /** Tokens of the measured chunk; at most the model's maximum positions. */
  chunkTokens: number;
}

/** Median and spread of one tinybench task, in milliseconds. */
export interface LatencySummary {
  median: number;
  p25: number;
  p75: number;
  min: number;
  max: number;
  samples: number;
}

/** Sizes and load timings of one packet file. */
export interface DtypeMeasurement {
  dtype: PacketDtype;
  /** 2 × layers × KV heads × head_dim × bytes per element. */
  kvBytesPerToken: number;
  fileBytes: number;
  /** Bytes of float32 keys and values that a load produces. */
  float32Bytes: number;
  /** `FsPacketStore.get` with the decoded-packet cache disabled: read, both sha256 checks, decode to float32. */
  storeGet: LatencySummary;
  /** `fs.readFile` of the same file. */
  rawRead: LatencySummary;
}

/** Header token ids are stored as int32, 4 bytes per token, beside the KV bytes. */
const TOKEN_ID_BYTES = 4;

/** tinybench settings per task: the time budget in ms and the minimum timed and warm-up iterations. */
const BENCH_SETTINGS = {
  quick: { time: 200, iterations: 16, warmupIterations: 4 },
  full: { time: 1000, iterations: 64, warmupIterations: 16 },
} as const;

/** Chunk id of the measured packet: a valid store id that no ingested chunk has (ingest assigns hex digests). */
const CHUNK_ID = 'bench-packet-io';

/**
 * Measures packet size per storage dtype and how fast the store loads a packet against reading the
 * same file from disk. Builds one real packet of `chunkTokens` tokens of HotpotQA text, stores it in
 * a file store under `scratchDir` with the decoded-packet cache disabled, and times both reads with
 * tinybench. Removes its files afterwards.
 */
export async function measurePacketIo(engine: InferenceEngine, options: PacketIoOptions): Promise<ReportSection> {
  validateChunkTokens(engine, options.chunkTokens);
  const tokens = hotpotTextTokens(engine, options.chunkTokens);
  const { packet } = await buildPacket(engine, tokens, { chunkId: CHUNK_ID, kind: 'full' });
  const workDir = await mkdtemp(path.join(options.scratchDir, 'packet-io-'));
  try {
    const measurements: DtypeMeasurement[] = [];
    for (const dtype of PACKET_DTYPES) {
      options.log(`packet io: ${dtype} packet of ${tokens.length} tokens`);
      measurements.push(await measureDtype(engine, packet, dtype, path.join(workDir, dtype), options.quick));
    }
    return packetIoSection(engine, packet, measurements, options.quick);
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

function validateChunkTokens(engine: InferenceEngine, chunkTokens: number): void {
  const maxPositions = engine.arch.maxPositionEmbeddings;
  if (!Number.isSafeInteger(chunkTokens) || chunkTokens < 1 || chunkTokens > maxPositions) {
    throw new KvpackError(
      'INVALID_ARGUMENT',
      `Invalid chunk length ${chunkTokens} for the packet load benchmark: use a whole number of tokens from 1 to ${maxPositions}, the model's maximum positions.`,
    );
  }
}

/** Encodes HotpotQA paragraphs, one after another, until there are `count` tokens, and returns the first `count`. */
function hotpotTextTokens(engine: InferenceEngine, count: number): Int32Array {
  const parts: Int32Array[] = [];
  let total = 0;
  // Each paragraph yields at least one token, so `count` paragraphs always suffice.
  for (const paragraph of readHotpotParagraphs(count)) {
    const encoded = engine.tokenizer.encode(`${paragraph.title}\n${paragraph.text}\n\n`);
    parts.push(encoded);
    total += encoded.length;
    if (total >= count) break;
  }
  const tokens = new Int32Array(total);
  let offset = 0;
  for (const part of parts) {
    tokens.set(part, offset);
    offset += part.length;
  }
  return tokens.subarray(0, count);
}

async function measureDtype(engine: InferenceEngine, packet: Packet, dtype: PacketDtype, storeDir: string, quick: boolean): Promise<DtypeMeasurement> {
  // A cache of 0 bytes keeps no decoded packet, so every get reads, verifies and decodes the file.
  const store = await FsPacketStore.open(storeDir, { cacheBytes: 0, dtype });
  await store.put(packet, dtype);
  const key = packetKeyOf(packet.header);
  const file = packetFilePath(store.dir, key);
  const expected = expectedFingerprints(engine);

  const bench = new Bench({ ...BENCH_SETTINGS[quick ? 'quick' : 'full'], retainSamples: true, throws: true });
  bench.add('store get', async () => {
    await store.get(key, expected);
  });
  bench.add('fs.readFile', async () => {
    await readFile(file);
  });
  await bench.run();

  const { cacheHits } = store.stats();
  if (cacheHits > 0) {
    throw new Error(`The packet store served ${cacheHits} gets from its cache, so the load timings did not read the file. Open it with cacheBytes 0.`);
  }
  return {
    dtype,
    kvBytesPerToken: kvBytesPerToken(engine.layout, dtype),
    fileBytes: (await stat(file)).size,
    float32Bytes: packet.kv.byteLength,
    storeGet: summarizeTask(bench, 'store get'),
    rawRead: summarizeTask(bench, 'fs.readFile'),
  };
}

function summarizeTask(bench: Bench, name: string): LatencySummary {
  const task: Task | undefined = bench.getTask(name);
  const result = task?.result;
  if (!result || (result.state !== 'completed' && result.state !== 'aborted-with-statistics')) {
    throw new Error(`Benchmark task "${name}" did not complete (state ${result?.state ?? 'missing'}).`);
  }
  const { latency } = result;
  const sorted = latency.samples ?? [];
  return { median: latency.p50, p25: quantileOfSorted(sorted, 0.25), p75: latency.p75, min: latency.min, max: latency.max, samples: latency.samplesCount };
}

/** Linear interpolation between the closest ranks, the method tinybench uses for p50 and p75. */
function quantileOfSorted(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const position = (sorted.length - 1) * q;
  const lower = Math.floor(position);
  const upper = Math.min(lower + 1, sorted.length - 1);
  return sorted[lower] + (position - lower) * (sorted[upper] - sorted[lower]);
}

function packetIoSection(engine: InferenceEngine, packet: Packet, measurements: readonly DtypeMeasurement[], quick: boolean): ReportSection {
  const { numLayers, numKvHeads, headDim } = engine.layout;
  const tokens = packet.header.tokenCount;
  const tokenIdBytes = TOKEN_ID_BYTES * packet.header.tokenIds.length;
  const sizes = measurements.map(({ dtype, kvBytesPerToken, fileBytes }) => {
    const overhead = fileBytes - tokens * kvBytesPerToken;
    return [dtype, integer(kvBytesPerToken), integer(fileBytes), decimal(fileBytes / tokens), integer(overhead), integer(tokenIdBytes), integer(overhead - tokenIdBytes)];
  });
  const loads = measurements.map(({ dtype, fileBytes, float32Bytes, storeGet, rawRead }) => [
    dtype,
    formatSpread(storeGet),
    megabytesPerSecond(fileBytes, storeGet.median),
    megabytesPerSecond(float32Bytes, storeGet.median),
    formatSpread(rawRead),
    megabytesPerSecond(fileBytes, rawRead.median),
    (rawRead.median / storeGet.median).toFixed(2),
  ]);
  const samples = measurements.flatMap(({ storeGet, rawRead }) => [storeGet.samples, rawRead.samples]);
  const settings = BENCH_SETTINGS[quick ? 'quick' : 'full'];

  return {
    title: 'Packet size and load throughput',
    intro: [
      `One naive packet of ${tokens} tokens of HotpotQA text, prefilled by the model (${numLayers} layers, ${numKvHeads} KV heads, ` +
        `head_dim ${headDim}) and stored once per dtype in a file packet store with its decoded-packet cache disabled, so every load reads the file.`,
      `Each load is timed with tinybench (${quick ? 'quick mode: ' : ''}${settings.time} ms and at least ${settings.iterations} iterations per task ` +
        `after ${settings.warmupIterations} warm-up iterations, ` +
        `${Math.min(...samples)}–${Math.max(...samples)} samples): a store get (read, sha256 of header and payload, fingerprint check, decode to float32) ` +
        'against `fs.readFile` of the same file.',
    ],
    tables: [
      {
        columns: ['dtype', 'KV bytes/token (shapes)', 'file bytes', 'file bytes/token', 'overhead bytes', 'of which token ids', 'of which fixed'],
        rows: sizes,
      },
      {
        columns: ['dtype', 'store get ms, median (p25–p75)', 'load MB/s (file bytes)', 'load MB/s (float32 KV)', 'fs.readFile ms, median (p25–p75)', 'raw read MB/s', 'load ÷ raw read'],
        rows: loads,
      },
    ],
    notes: [
      `KV bytes per token = 2 × layers × KV heads × head_dim × bytes per element. The overhead is the file size beyond those bytes. ` +
        `It contains the header's token ids (${TOKEN_ID_BYTES} bytes per token) and a fixed part: the ${PRELUDE_BYTES}-byte prelude, the other header fields, ` +
        `padding to a multiple of 8 bytes and, for int8, ${scaleBlockBytes(engine.layout, 'int8')} bytes of scales (one float32 per layer, key or value, and KV head).`,
      'MB/s are decimal megabytes per second at the median time. "Load MB/s (float32 KV)" counts the decoded keys and values the load produces, ' +
        'the same for every dtype. "Load ÷ raw read" is the raw read time over the store get time: the share of a load spent reading the file.',
      'Both reads hit a warm page cache: the file was just written and is read again on every iteration, so the raw read measures memory ' +
        'copies and system calls, not the disk. A cold read from disk would be slower for both and favor the smaller dtypes.',
    ],
  };
}

/** `median (p25–p75)` in milliseconds. */
function formatSpread(latency: LatencySummary): string {
  return `${formatMs(latency.median)} (${formatMs(latency.p25)}–${formatMs(latency.p75)})`;
}

function decimal(value: number): string {
  return value.toLocaleString('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 });
}

function integer(value: number): string {
  return value.toLocaleString('en-US');
}

function megabytesPerSecond(bytes: number, ms: number): string {
  const rate = bytes / 1e6 / (ms / 1000);
  return rate >= 100 ? rate.toFixed(0) : rate.toFixed(1);
}
