import { writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { KvpackError } from '../../common/errors.js';
import type { InferenceEngine } from '../../inference/engine.js';
import { PacketChunkProcessor } from '../../ingest/chunk-processor.js';
import { runIngest, type IngestReport } from '../../ingest/pipeline.js';
import type { ProgressReporter } from '../../ingest/progress.js';
import { ChunkStore } from '../../ingest/store.js';
import { expectedModelOf, resolveAdapter } from '../../packets/adapter.js';
import { packetAdapters, type AdapterVectors } from '../../packets/adapter-vectors.js';
import { prefillComputedEntries, sequence } from '../../packets/prefill.js';
import { readHotpotParagraphs, type HotpotParagraph } from './hotpotqa-paragraphs.js';
import { BusyTimer, TimedChunkProcessor, TimedHashedEmbedder, TimedPacketStore } from './ingest-timers.js';
import type { ReportSection, SuitePartOptions } from './report-types.js';

export interface IngestRateOptions extends SuitePartOptions {
  /** HotpotQA paragraphs to ingest, taken question by question from the start of the dev file. */
  paragraphs: number;
}

/** Wall-clock milliseconds of the ingest stages, measured through the hooks `runIngest` accepts. */
interface IngestStages {
  /** From the call until the progress reporter starts: open the store, load, normalize, tokenize and chunk. */
  planMs: number;
  /** Time with at least one chunk in the processor: packet prefills, summaries and packet writes. */
  processingMs: number;
  /** Time with at least one packet write in flight (encode, sha256, atomic write), a part of `processingMs`. */
  packetWriteMs: number;
  embeddingMs: number;
  /** The rest of the commit phase: catalog transactions and index updates. */
  commitRestMs: number;
  /** After the progress reporter stops: save the index, remove orphan packets, close the store. */
  finishMs: number;
  wallMs: number;
}

/** Counts and token ids read back from the store after ingestion. */
interface StoreContents {
  documents: number;
  chunkCount: number;
  /** Token ids `[tokens]` of every chunk, in ingestion order. */
  chunkTokens: Int32Array[];
  summaryTokenCounts: number[];
  packetFiles: number;
  packetBytes: number;
}

/**
 * Measures ingestion throughput against the model's raw prefill rate in one run. Ingests the first
 * `paragraphs` HotpotQA paragraphs through `runIngest` into a fresh store under `scratchDir` with
 * the defaults of `kvpack ingest` (including the shipped adapter when one fits the model), then
 * prefills the same chunk token sequences with `engine.forward`. Removes the store afterwards.
 */
export async function measureIngestRate(engine: InferenceEngine, modelDir: string, options: IngestRateOptions): Promise<ReportSection> {
  checkModelDir(engine, modelDir);
  const paragraphs = readHotpotParagraphs(options.paragraphs);
  const workDir = await mkdtemp(path.join(options.scratchDir, 'ingest-rate-'));
  try {
    const source = writeParagraphsFile(paragraphs, path.join(workDir, 'paragraphs.jsonl'));
    const storeDir = path.join(workDir, 'store');
    const adapter = resolveAdapter(undefined, expectedModelOf(engine));

    options.log(`ingest rate: ingesting ${paragraphs.length} HotpotQA paragraphs`);
    const ingest = await timeIngest(engine, source, storeDir, adapter.vectors);
    const contents = await readStoreContents(engine, storeDir);

    options.log(`ingest rate: raw prefill of ${contents.chunkTokens.length} chunks`);
    const rawPrefill = await timeRawPrefill(engine, contents.chunkTokens);
    return ingestRateSection({ modelDir, paragraphs: paragraphs.length, adapter: adapter.vectors, adapterReason: adapter.reason, ...ingest, contents, rawPrefill });
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

function checkModelDir(engine: InferenceEngine, modelDir: string): void {
  if (path.resolve(modelDir) !== path.resolve(engine.folder.dir)) {
    throw new KvpackError(
      'INVALID_ARGUMENT',
      `Invalid model folder ${modelDir} for the ingest benchmark: the engine was loaded from ${engine.folder.dir}. Pass the folder the engine was loaded from.`,
    );
  }
}

/** Writes one JSON Lines record per paragraph, so each paragraph becomes its own document. */
function writeParagraphsFile(paragraphs: readonly HotpotParagraph[], file: string): string {
  writeFileSync(file, paragraphs.map((paragraph) => JSON.stringify({ title: paragraph.title, text: paragraph.text })).join('\n') + '\n');
  return file;
}

async function timeIngest(
  engine: InferenceEngine,
  source: string,
  storeDir: string,
  adapter: AdapterVectors | undefined,
): Promise<{ report: IngestReport; stages: IngestStages }> {
  const processing = new BusyTimer();
  const packetWrites = new BusyTimer();
  const embedder = new TimedHashedEmbedder();
  const marks = { commitStart: Number.NaN, commitEnd: Number.NaN };
  const progress: ProgressReporter = {
    start() {
      marks.commitStart = performance.now();
    },
    advance() {},
    stop() {
      marks.commitEnd = performance.now();
    },
  };

  const started = performance.now();
  let report: IngestReport;
  try {
    report = await runIngest({
      storeDir,
      paths: [source],
      model: { modelFingerprint: engine.modelFingerprint, tokenizerFingerprint: engine.tokenizerFingerprint, tokenizer: engine.tokenizer },
      createProcessor: (packets, summary) =>
        new TimedChunkProcessor(new PacketChunkProcessor(engine, new TimedPacketStore(packets, packetWrites), summary, adapter ? [adapter] : []), processing),
      embedder,
      progress,
    });
  } finally {
    await embedder.close();
  }
  const finished = performance.now();

  const commitMs = marks.commitEnd - marks.commitStart;
  const stages: IngestStages = {
    planMs: marks.commitStart - started,
    processingMs: processing.busyMs,
    packetWriteMs: packetWrites.busyMs,
    embeddingMs: embedder.busyMs,
    commitRestMs: commitMs - processing.busyMs - embedder.busyMs,
    finishMs: finished - marks.commitEnd,
    wallMs: finished - started,
  };
  return { report, stages };
}

async function readStoreContents(engine: InferenceEngine, storeDir: string): Promise<StoreContents> {
  const store = await ChunkStore.open(storeDir, {
    mode: 'read',
    model: { modelFingerprint: engine.modelFingerprint, tokenizerFingerprint: engine.tokenizerFingerprint },
  });
  try {
    const labels = [...store.catalog.labels()].sort((a, b) => a - b);
    const records = labels.map((label) => store.catalog.getChunkByLabel(label)).filter((record) => record !== undefined);
    const { packets, bytesOnDisk } = store.packets.stats();
    return {
      documents: store.listDocuments().length,
      chunkCount: store.catalog.chunkCount(),
      chunkTokens: records.map((record) => record.tokens),
      summaryTokenCounts: records.map((record) => record.summaryTokens.length),
      packetFiles: packets,
      packetBytes: bytesOnDisk,
    };
  } finally {
    await store.close();
  }
}

/** Prefills each chunk alone from position 0 without logits, as a naive packet is built, and returns the tokens and elapsed milliseconds. */
async function timeRawPrefill(engine: InferenceEngine, chunks: readonly Int32Array[]): Promise<{ tokens: number; ms: number }> {
  if (chunks.length === 0) {
    throw new Error('Ingestion stored no chunks, so there is nothing to prefill. Check the ingest warnings.');
  }
  // One untimed warm-up call. The ingestion before it has run the same session too.
  await engine.forward({ tokens: chunks[0], positions: sequence(chunks[0].length), logits: 'none' });
  let tokens = 0;
  const started = performance.now();
  for (const chunk of chunks) {
    await engine.forward({ tokens: chunk, positions: sequence(chunk.length), logits: 'none' });
    tokens += chunk.length;
  }
  return { tokens, ms: performance.now() - started };
}

interface IngestRateResult {
  modelDir: string;
  paragraphs: number;
  adapter: AdapterVectors | undefined;
  /** The reason the adapter was or was not chosen, as `kvpack ingest` logs it. */
  adapterReason: string;
  report: IngestReport;
  stages: IngestStages;
  contents: StoreContents;
  rawPrefill: { tokens: number; ms: number };
}

/**
 * Tokens the packet prefills computed: each chunk and each non-empty summary once for its naive
 * packet and once more per adapter, plus the header and trailer vectors that adapter prefills
 * (a conditioned-kv header cache is attended to, not computed).
 */
function packetPrefillTokens(contents: StoreContents, adapter: AdapterVectors | undefined): number {
  let total = 0;
  contents.chunkTokens.forEach((tokens, index) => {
    const summary = contents.summaryTokenCounts[index];
    const sequences = [tokens.length, ...(summary > 0 ? [summary] : [])];
    for (const length of sequences) {
      total += length;
      for (const built of adapter ? packetAdapters(adapter) : []) total += prefillComputedEntries(length, built);
    }
  });
  return total;
}

function ingestRateSection(result: IngestRateResult): ReportSection {
  const { report, stages, contents, rawPrefill, adapter } = result;
  const chunkTokens = contents.chunkTokens.reduce((sum, tokens) => sum + tokens.length, 0);
  const summaryTokens = contents.summaryTokenCounts.reduce((sum, count) => sum + count, 0);
  const prefillTokens = packetPrefillTokens(contents, adapter);
  const seconds = stages.wallMs / 1000;
  const ingestRate = chunkTokens / seconds;
  const rawRate = rawPrefill.tokens / (rawPrefill.ms / 1000);
  const variants = adapter
    ? `naive and ${packetAdapters(adapter).map((built) => `adapter ${built.id}`).join(' and ')} (${adapter.variant})`
    : 'naive only (no shipped adapter fits this model)';

  const figures: [string, string][] = [
    ['documents (paragraphs)', integer(report.documents.added)],
    ['chunks created (ingest report)', integer(report.chunks.created)],
    ['chunks in the store (catalog)', integer(contents.chunkCount)],
    ['chunks reused (paragraph repeated under another question)', integer(report.chunks.reused)],
    ['chunk tokens', integer(chunkTokens)],
    ['summary tokens', integer(summaryTokens)],
    ['packet variants per chunk and summary', variants],
    ['packet files', integer(contents.packetFiles)],
    ['packet bytes on disk', integer(contents.packetBytes)],
    ['tokens prefilled for packets (chunks, summaries, adapter entries)', integer(prefillTokens)],
    ['ingest wall time, s', seconds.toFixed(2)],
    ['chunk tokens per second, ingestion', ingestRate.toFixed(0)],
    ['raw prefill tokens per second (same chunks, one per call, no logits)', rawRate.toFixed(0)],
    ['ingestion ÷ raw prefill', (ingestRate / rawRate).toFixed(3)],
    ['packet-prefill tokens per second, ingestion', (prefillTokens / seconds).toFixed(0)],
  ];
  const stageRows: [string, number][] = [
    ['open store and plan (load, normalize, tokenize, chunk)', stages.planMs],
    ['chunk processing: packet prefills, summaries, packet writes', stages.processingMs],
    ['of which a packet write in flight (encode, sha256, atomic write)', stages.packetWriteMs],
    ['embedding (hashed embedder)', stages.embeddingMs],
    ['catalog transactions and index updates (rest of the commit phase)', stages.commitRestMs],
    ['save index, remove orphan packets, close store', stages.finishMs],
    ['total (wall)', stages.wallMs],
    ['estimate: the packet prefills at the raw prefill rate', (prefillTokens / rawRate) * 1000],
  ];

  return {
    title: 'Ingest throughput against raw prefill',
    intro: [
      `The first ${result.paragraphs} HotpotQA dev paragraphs, one document each, ingested through the ingest API (\`runIngest\`, as \`kvpack ingest\` runs it) ` +
        `into a fresh store with the default settings, model ${path.basename(result.modelDir)}. ` +
        'The raw prefill rate comes from the same engine in the same run: every stored chunk prefilled alone from position 0, one chunk per call, without logits.',
      `Adapter: ${result.adapterReason}`,
    ],
    tables: [
      { columns: ['figure', 'value'], rows: figures },
      { columns: ['ingest stage', 'ms', 'share of wall time'], rows: stageRows.map(([stage, ms]) => [stage, ms.toFixed(0), percent(ms / stages.wallMs)]) },
    ],
    notes: [
      'Ingestion prefills more than the chunks: every chunk and its summary get a naive packet, and each adapter adds a packet of both, ' +
        'so "ingestion ÷ raw prefill" is below 1 even when the packet prefills run at the raw rate. The packet-prefill row counts every token those prefills computed.',
      'The ingest code exposes no stage timings itself. These come from the hooks `runIngest` accepts: the progress reporter marks the start and end of the ' +
        'commit phase, and the chunk processor, the packet store handed to it and the embedder are wrapped with timers. Chunks of one document are processed ' +
        'up to 4 at a time, so the processing and packet-write rows are the time with at least one such call in flight, not sums of call times: ' +
        'a write in flight overlaps the prefills of other chunks.',
      'The last row is an estimate, not a measurement: the tokens the packet prefills computed, divided by the raw prefill rate. ' +
        'Chunk processing time beyond it goes to summaries, encoding to the storage dtype, checksums, flushed file writes, and any difference ' +
        'in speed between adapter prefills (embeddings input) and plain token prefills.',
    ],
  };
}

function integer(value: number): string {
  return value.toLocaleString('en-US');
}

function percent(share: number): string {
  return `${(share * 100).toFixed(1)}%`;
}
