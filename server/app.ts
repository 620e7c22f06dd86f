import { randomUUID } from 'node:crypto';
import { statSync } from 'node:fs';
import path from 'node:path';
import multipart from '@fastify/multipart';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { KvpackError } from '../common/errors.js';
import { CATALOG_FILE, INDEX_DIR } from '../ingest/store.js';
import { INDEX_FILE, INDEX_META_FILE } from '../retrieval/hnsw-index.js';
import type { ServerConfig } from './config.js';
import type { ServerContext, ServerDeps } from './context.js';
import { InFlightGenerations } from './generations.js';
import { errorBody, toCatalogError } from './http-errors.js';
import { GenerationSlots } from './limits.js';
import { ServerMetrics } from './metrics.js';
import { MAX_UPLOAD_FILES, registerDocumentRoutes } from './routes/documents.js';
import { registerHealthRoutes } from './routes/health.js';
import { registerQueryRoutes } from './routes/query.js';

export interface KvpackServer {
  app: FastifyInstance;
  context: ServerContext;
  /**
   * Stops the HTTP side: new requests get SHUTTING_DOWN, in-flight queries may finish within
   * `graceMs` and are cancelled after it, the ingestion queue stops after the document in flight.
   * The store and engine stay open; their owner closes them afterwards.
   */
  shutdown(graceMs: number): Promise<void>;
}

/** Builds the fastify instance with every route, the error mapping, metrics and limits. It does not listen. */
export async function buildServer(deps: ServerDeps, config: ServerConfig, logger: Logger): Promise<KvpackServer> {
  const state = { closing: false };
  const slots = new GenerationSlots(config.maxConcurrentGenerations, config.retryAfterSeconds);
  const generations = new InFlightGenerations();
  const metrics = new ServerMetrics({
    generationsInFlight: () => slots.inUse,
    generationCapacity: () => slots.capacity,
    packetCache: () => {
      const stats = deps.store.packets.stats();
      return { hits: stats.cacheHits, misses: stats.cacheMisses };
    },
    storeBytes: () => storeBytes(deps.store.dir, deps.store.packets.stats().bytesOnDisk),
    storeChunks: () => deps.store.catalog.chunkCount(),
    jobCounts: () => deps.jobs.counts(),
  });
  const context: ServerContext = {
    ...deps,
    config,
    slots,
    generations,
    metrics,
    get closing() {
      return state.closing;
    },
  };

  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    genReqId: () => randomUUID(),
    logController: new LogController({ requestIdLogLabel: 'requestId' }),
    bodyLimit: config.maxBodyBytes,
    // The onRequest hook below sends SHUTTING_DOWN in the catalog's error format instead.
    return503OnClosing: false,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: true } },
  });
  // Routes take JSON (and uploads take multipart); other bodies get UNSUPPORTED_MEDIA_TYPE.
  app.removeContentTypeParser('text/plain');
  await app.register(multipart, {
    // Fields are allowed through the parser so that the route can name an unexpected one in its error.
    limits: { fileSize: config.maxUploadBytes, files: MAX_UPLOAD_FILES, fields: 8, parts: MAX_UPLOAD_FILES + 8 },
  });

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
    if (state.closing) {
      reply.header('connection', 'close');
    }
    if (state.closing && request.url !== '/metrics') {
      throw new KvpackError('SHUTTING_DOWN', 'The server is shutting down and accepts no new requests; retry against the restarted server.');
    }
  });
  app.addHook('onResponse', async (request, reply) => {
    metrics.requests.inc({ route: request.routeOptions.url ?? 'unmatched', method: request.method, status: String(reply.statusCode) });
  });
  app.setErrorHandler(async (error, request, reply) => {
    const { error: catalogError, internal } = toCatalogError(error, config, request.headers['content-type']);
    if (internal) {
      request.log.error({ err: error }, 'request failed with an unexpected error');
    } else {
      request.log.info({ code: catalogError.code, status: catalogError.status }, catalogError.message);
    }
    if (catalogError.code === 'TOO_MANY_REQUESTS') {
      reply.header('retry-after', String(catalogError.details.retryAfterSeconds ?? config.retryAfterSeconds));
    }
    return reply.code(catalogError.status).send(errorBody(catalogError));
  });
  app.setNotFoundHandler(async (request) => {
    throw new KvpackError('ROUTE_NOT_FOUND', `No route ${request.method} ${request.url.split('?')[0]}; see docs/api.md for the routes.`);
  });

  registerQueryRoutes(app, context);
  registerDocumentRoutes(app, context);
  registerHealthRoutes(app, context);

  const shutdown = async (graceMs: number) => {
    if (state.closing) return;
    state.closing = true;
    logger.info({ inFlight: generations.size, graceMs }, 'shutting down');
    const grace = setTimeout(() => {
      const cancelled = generations.abortAll('shutdown grace period ended');
      if (cancelled > 0) logger.warn({ cancelled }, 'cancelled queries still running after the grace period');
    }, graceMs);
    // server.close() closes the connections idle at the call; keep-alive connections whose
    // request finishes later would hold it open until their keep-alive timeout.
    const idleSweep = setInterval(() => app.server.closeIdleConnections(), 100);
    try {
      await Promise.all([app.close(), deps.jobs.stop()]);
    } finally {
      clearTimeout(grace);
      clearInterval(idleSweep);
    }
  };
  return { app, context, shutdown };
}

/** Catalog (with its WAL files), index and packet bytes of a store folder. */
function storeBytes(storeDir: string, packetBytes: number): number {
  const files = [CATALOG_FILE, `${CATALOG_FILE}-wal`, `${CATALOG_FILE}-shm`, path.join(INDEX_DIR, INDEX_FILE), path.join(INDEX_DIR, INDEX_META_FILE)];
  let total = packetBytes;
  for (const file of files) {
    try {
      total += statSync(path.join(storeDir, file)).size;
    } catch {
      // A file that does not exist yet adds nothing.
    }
  }
  return total;
}
