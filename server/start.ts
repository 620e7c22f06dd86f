import { existsSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { pino, type Logger } from 'pino';
import { resolveDefaultModel } from '../inference/default-model.js';
import { InferenceEngine } from '../inference/engine.js';
import { defaultChunking } from '../ingest/chunker.js';
import { DEFAULT_SUMMARY_RATIO } from '../ingest/commit.js';
import { DEFAULT_SUMMARY_METHOD } from '../ingest/summarize.js';
import { manifestPath } from '../ingest/manifest.js';
import { ChunkStore } from '../ingest/store.js';
import { expectedModelOf, resolveAdapter, type ResolvedAdapter } from '../packets/adapter.js';
import { PrefixCache } from '../packets/prefix-cache.js';
import { QueryPipeline } from '../query/pipeline.js';
import { parseEmbedderSpec, type Embedder } from '../retrieval/embedder.js';
import { HashedEmbedder } from '../retrieval/hashed-embedder.js';
import { TransformersEmbedder } from '../retrieval/transformers-embedder.js';
import { buildServer, type KvpackServer } from './app.js';
import { redactConfig, type ServerConfig } from './config.js';
import { DocumentIngester } from './ingestion.js';
import { IngestionJobs } from './jobs.js';
import { StoreRetriever } from '../query/store-retriever.js';
import { WriteLock } from './write-lock.js';

export interface RunningServer {
  /** Base URL, such as `http://127.0.0.1:8080`. */
  url: string;
  port: number;
  server: KvpackServer;
  logger: Logger;
  /** Shuts down (see `KvpackServer.shutdown`), then saves the index and closes the store and the engine. Idempotent. */
  close(): Promise<void>;
}

export interface StartOptions {
  /** Default: pino JSON lines on stderr at `config.logLevel`. */
  logger?: Logger;
  /** Progress lines for the user while the default model is prepared. */
  log?: (message: string) => void;
}

/**
 * Starts kvpack's HTTP server: resolve and load the model, open (or create) the store in write
 * mode, build the query pipeline and the ingestion queue, listen. The store lock is held until
 * `close`, so `kvpack ingest` cannot write the same store while the server runs.
 */
export async function startServer(config: ServerConfig, options: StartOptions = {}): Promise<RunningServer> {
  const logger = options.logger ?? pino({ level: config.logLevel, base: { pid: process.pid } }, pino.destination({ fd: 2 }));
  logger.info({ config: redactConfig(config) }, 'starting');
  const modelDir = config.model ?? (await resolveDefaultModel({ log: options.log }));
  const engine = await InferenceEngine.load(modelDir, { threads: config.threads });
  let opened: ServerStore | undefined;
  try {
    const resolved = resolveAdapter(config.adapter, expectedModelOf(engine));
    logger.info({ adapter: resolved.vectors?.id ?? 'none' }, resolved.reason);
    const adapter = resolved.vectors;
    opened = await openServerStore(config, engine, logger);
    const running = await listen(config, engine, opened, resolved, logger);
    logger.info({ url: running.url, model: modelDir, store: opened.store.dir, adapter: adapter?.id ?? 'none' }, 'listening');
    return running;
  } catch (error) {
    if (opened) await closeStore(opened);
    await engine.release();
    throw error;
  }
}

/** A store open in write mode, and the embedder the server created for a new store (the store does not close an embedder it was given). */
interface ServerStore {
  store: ChunkStore;
  createdEmbedder: Embedder | undefined;
}

async function openServerStore(config: ServerConfig, engine: InferenceEngine, logger: Logger): Promise<ServerStore> {
  const createdEmbedder = existsSync(manifestPath(config.store)) ? undefined : await createEmbedder(config.embedder);
  let store: ChunkStore | undefined;
  try {
    store = await ChunkStore.open(config.store, {
      mode: 'write',
      create: { chunking: defaultChunking, summaryRatio: DEFAULT_SUMMARY_RATIO, summaryMethod: DEFAULT_SUMMARY_METHOD },
      model: { modelFingerprint: engine.modelFingerprint, tokenizerFingerprint: engine.tokenizerFingerprint },
      embedder: createdEmbedder,
      purpose: 'kvpack serve',
      logger,
    });
    const removed = await store.collectGarbagePackets();
    if (removed > 0) logger.info({ packets: removed }, 'removed packets of chunks that were never committed');
  } catch (error) {
    await closeStore({ store, createdEmbedder });
    throw error;
  }
  if (createdEmbedder) logger.info({ store: store.dir, embedder: store.manifest.embedder.kind }, 'created an empty store');
  return { store, createdEmbedder };
}

async function closeStore(opened: { store: ChunkStore | undefined; createdEmbedder: Embedder | undefined }): Promise<void> {
  try {
    await opened.store?.close();
  } finally {
    await opened.createdEmbedder?.close();
  }
}

async function createEmbedder(spec: string): Promise<Embedder> {
  const parsed = parseEmbedderSpec(spec);
  return parsed.kind === 'hashed' ? new HashedEmbedder() : TransformersEmbedder.load(parsed.modelDir);
}

async function listen(config: ServerConfig, engine: InferenceEngine, opened: ServerStore, resolved: ResolvedAdapter, logger: Logger): Promise<RunningServer> {
  const { store } = opened;
  const adapter = resolved.vectors;
  const writeLock = new WriteLock();
  const ingester = new DocumentIngester(store, engine, writeLock, { adapter, logger });
  const jobs = new IngestionJobs(ingester, { maxQueued: config.maxQueuedJobs, retained: config.retainedJobs, retryAfterSeconds: config.retryAfterSeconds, logger });
  const pipeline = new QueryPipeline({
    engine,
    retriever: new StoreRetriever(store),
    packets: store.packets,
    adapter,
    adapterReason: resolved.reason,
    prefixCache: config.prefixCacheBytes > 0 ? new PrefixCache(config.prefixCacheBytes) : undefined,
    logger,
    summaryThreshold: config.summaryThreshold,
    epicTokens: config.epicTokens,
    maxTopK: config.maxTopK,
  });
  const server = await buildServer({ engine, store, pipeline, jobs, writeLock }, config, logger);
  try {
    await server.app.listen({ host: config.host, port: config.port });
  } catch (error) {
    await server.app.close();
    throw error;
  }
  const address = server.app.server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= closeAll(server, config, writeLock, opened, engine, logger);
    return closing;
  };
  return { url: `http://${host}:${address.port}`, port: address.port, server, logger, close };
}

/** Shutdown order: HTTP and jobs, pending store writes, index save, store lock, engine. */
async function closeAll(server: KvpackServer, config: ServerConfig, writeLock: WriteLock, opened: ServerStore, engine: InferenceEngine, logger: Logger): Promise<void> {
  try {
    await server.shutdown(config.shutdownGraceMs);
    await writeLock.idle();
    opened.store.saveDerivedState();
  } finally {
    try {
      await closeStore(opened);
    } finally {
      await engine.release();
      logger.info('stopped');
    }
  }
}
