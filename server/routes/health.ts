import type { FastifyInstance } from 'fastify';
import { KvpackError } from '../../common/errors.js';
import type { ServerContext } from '../context.js';

/** `GET /healthz` and `GET /metrics` (Prometheus text format). */
export function registerHealthRoutes(app: FastifyInstance, context: ServerContext): void {
  app.get('/healthz', async () => {
    if (context.closing) {
      throw new KvpackError('SHUTTING_DOWN', 'The server is shutting down.');
    }
    const { engine, store, pipeline } = context;
    const adapter = pipeline.options.adapter;
    return {
      status: 'ok',
      model: { type: engine.arch.modelType, maxPositions: engine.arch.maxPositionEmbeddings, fingerprint: engine.modelFingerprint },
      store: { chunks: store.catalog.chunkCount() },
      packetStrategy: { adapter: adapter?.id ?? 'none', variant: adapter?.variant ?? 'naive', reason: pipeline.options.adapterReason ?? '' },
      generations: { inUse: context.slots.inUse, capacity: context.slots.capacity },
      jobs: context.jobs.counts(),
    };
  });

  app.get('/metrics', async (_request, reply) => {
    const { contentType, text } = await context.metrics.render();
    return reply.header('content-type', contentType).send(text);
  });
}
