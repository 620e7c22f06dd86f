import { existsSync } from 'node:fs';
import { InferenceEngine } from '../../inference/engine.js';
import { PacketChunkProcessor, SummaryOnlyChunkProcessor } from '../../ingest/chunk-processor.js';
import { defaultChunking, type ChunkingOptions } from '../../ingest/chunker.js';
import { manifestPath, readManifest } from '../../ingest/manifest.js';
import { runIngest, type IngestReport } from '../../ingest/pipeline.js';
import { createProgressReporter, createStderrLogger, type LogFormat } from '../../ingest/progress.js';
import { supportedExtensions } from '../../ingest/sources.js';
import { DEFAULT_SUMMARY_METHOD, summaryMethods, type SummaryMethod } from '../../ingest/summarize.js';
import { expectedModelOf, resolveAdapter } from '../../packets/adapter.js';
import { parseEmbedderSpec, type Embedder } from '../../retrieval/embedder.js';
import { HashedEmbedder } from '../../retrieval/hashed-embedder.js';
import { TransformersEmbedder } from '../../retrieval/transformers-embedder.js';
import { InvalidArgumentError, type Command } from 'commander';
import { modelOptionHelp, resolveModelOption } from '../model-option.js';
import { integerOption, numberOption } from '../options.js';

interface IngestCommandOptions {
  store: string;
  model?: string;
  adapter?: string;
  embedder?: string;
  jsonlTextField: string;
  jsonlTitleField: string;
  jsonlRecords?: string;
  chunkTokens?: number;
  maxChunkTokens?: number;
  overlap?: number;
  summaryRatio?: number;
  summaryMethod?: SummaryMethod;
  prune: boolean;
  packets: boolean;
  threads: number;
  concurrency: number;
  progressInterval: number;
  logFormat: LogFormat;
}

export function registerIngestCommand(program: Command): void {
  program
    .command('ingest')
    .description(
      `Ingest files and folders (recursively) into a store: ${supportedExtensions.join(' ')} files become chunks ` +
        'with embeddings, KV packets and summary packets. Unchanged documents are skipped; a rerun finishes an interrupted one.',
    )
    .argument('<paths...>', 'files and folders to ingest')
    .requiredOption('--store <dir>', 'store folder (created when it does not exist)')
    .option('--model <dir>', modelOptionHelp('model folder whose tokenizer cuts the chunks and which builds the packets'))
    .option('--adapter <file>', "adapter file to build adapter packets with besides the naive ones, or none (default: the model's shipped adapter when one beat naive concatenation)")
    .option('--embedder <spec>', 'hashed, or transformers:DIR for a sentence-embedding model folder (default: the store\'s, else hashed)')
    .option('--jsonl-text-field <path>', 'dotted path of the text in each JSON Lines record', 'text')
    .option('--jsonl-title-field <path>', 'dotted path of the title in each JSON Lines record', 'title')
    .option('--jsonl-records <path>', 'dotted path of an array of records inside each JSON line (each element is one document)')
    .option('--chunk-tokens <n>', `target chunk length in tokens (default: the store's, else ${defaultChunking.targetTokens})`, integerOption(1))
    .option('--max-chunk-tokens <n>', `maximum chunk length in tokens (default: the store's, else ${defaultChunking.maxTokens})`, integerOption(1))
    .option('--overlap <n>', `tokens repeated between consecutive chunks, in whole sentences (default: the store's, else ${defaultChunking.overlapTokens})`, integerOption(0))
    .option('--summary-ratio <r>', "summary length as a share of the chunk's tokens (default: the store's, else 0.5)", numberOption(0.01, 1))
    .option(
      '--summary-method <name>',
      `how summaries pick sentences: ${summaryMethods.join(', ')} (default: the store's, else ${DEFAULT_SUMMARY_METHOD})`,
      parseSummaryMethod,
    )
    .option('--prune', 'delete documents whose source file no longer exists', false)
    .option('--no-packets', 'store summaries but build no KV packets (the model still provides the tokenizer)')
    .option('--threads <n>', 'onnxruntime threads per operator; 0 lets onnxruntime choose', integerOption(0), 0)
    .option('--concurrency <n>', 'chunks of a document processed at once (packet prefills and writes overlap)', integerOption(1), 4)
    .option('--progress-interval <ms>', 'milliseconds between progress log lines when stderr is not a terminal', integerOption(100), 2000)
    .option('--log-format <format>', 'log lines on stderr: plain text, or json (pino) for log collectors', parseLogFormat, 'plain')
    .action(async (paths: string[], options: IngestCommandOptions) => {
      const report = await ingestCommand(paths, options);
      process.stdout.write(formatReport(report));
    });
}

async function ingestCommand(paths: string[], options: IngestCommandOptions): Promise<IngestReport> {
  const logger = createStderrLogger(options.logFormat);
  const modelDir = await resolveModelOption(options.model, (line) => logger.info(line));
  const engine = await InferenceEngine.load(modelDir, { threads: options.threads });
  let embedder: Embedder | undefined;
  try {
    const resolved = resolveAdapter(options.adapter, expectedModelOf(engine));
    logger.info({ adapter: resolved.vectors?.id ?? 'none' }, resolved.reason);
    const adapter = resolved.vectors;
    embedder = await loadEmbedder(options.embedder);
    return await runIngest({
      storeDir: options.store,
      paths,
      model: { modelFingerprint: engine.modelFingerprint, tokenizerFingerprint: engine.tokenizerFingerprint, tokenizer: engine.tokenizer },
      createProcessor: (packets, summary) =>
        options.packets
          ? new PacketChunkProcessor(engine, packets, summary, adapter ? [adapter] : [])
          : new SummaryOnlyChunkProcessor(engine.tokenizer, summary),
      embedder,
      chunking: chunkingOf(options),
      summaryRatio: options.summaryRatio,
      summaryMethod: options.summaryMethod,
      jsonl: { textField: options.jsonlTextField, titleField: options.jsonlTitleField, recordsField: options.jsonlRecords },
      prune: options.prune,
      concurrency: options.concurrency,
      logger,
      progress: createProgressReporter(logger, { intervalMs: options.progressInterval }),
    });
  } finally {
    await embedder?.close();
    await engine.release();
  }
}

/** Loads the embedder of `--embedder`, or returns undefined to use the store's (hashed for a new store). */
async function loadEmbedder(spec: string | undefined): Promise<Embedder | undefined> {
  if (spec === undefined) return undefined;
  const parsed = parseEmbedderSpec(spec);
  return parsed.kind === 'hashed' ? new HashedEmbedder() : TransformersEmbedder.load(parsed.modelDir);
}

/** Chunk lengths from the options, with the ones not given taken from the store (or the defaults). */
function chunkingOf(options: IngestCommandOptions): ChunkingOptions | undefined {
  if (options.chunkTokens === undefined && options.maxChunkTokens === undefined && options.overlap === undefined) {
    return undefined;
  }
  const base = existsSync(manifestPath(options.store)) ? readManifest(options.store).chunking : defaultChunking;
  const targetTokens = options.chunkTokens ?? base.targetTokens;
  return {
    targetTokens,
    maxTokens: options.maxChunkTokens ?? Math.max(base.maxTokens, targetTokens),
    overlapTokens: options.overlap ?? base.overlapTokens,
  };
}

function formatReport(report: IngestReport): string {
  const { documents, chunks } = report;
  const seconds = (report.elapsedMs / 1000).toFixed(1);
  return (
    `Documents: ${documents.added} added, ${documents.updated} updated, ${documents.unchanged} unchanged, ${documents.removed} removed. ` +
    `Chunks: ${chunks.created} created, ${chunks.reused} reused, ${chunks.removed} removed; ${report.tokens} tokens in ${seconds} s` +
    `${report.warnings.length > 0 ? `; ${report.warnings.length} warning(s) on stderr` : ''}.\n`
  );
}

function parseSummaryMethod(value: string): SummaryMethod {
  if (!(summaryMethods as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(`expected one of ${summaryMethods.join(', ')}, got ${JSON.stringify(value)}.`);
  }
  return value as SummaryMethod;
}

function parseLogFormat(value: string): LogFormat {
  if (value !== 'plain' && value !== 'json') {
    throw new InvalidArgumentError(`expected plain or json, got ${JSON.stringify(value)}.`);
  }
  return value;
}
