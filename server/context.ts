import type { InferenceEngine } from '../inference/engine.js';
import type { ChunkStore } from '../ingest/store.js';
import type { QueryPipeline } from '../query/pipeline.js';
import type { ServerConfig } from './config.js';
import type { InFlightGenerations } from './generations.js';
import type { IngestionJobs } from './jobs.js';
import type { GenerationSlots } from './limits.js';
import type { ServerMetrics } from './metrics.js';
import type { WriteLock } from './write-lock.js';

/** Dependencies the server runs on. `startServer` builds them; tests may build their own from real parts. */
export interface ServerDeps {
  engine: InferenceEngine;
  /** The store, open in write mode for the server's lifetime. */
  store: ChunkStore;
  pipeline: QueryPipeline;
  jobs: IngestionJobs;
  /** Serializes document commits and deletions; the jobs' ingester must share it. */
  writeLock: WriteLock;
}

/** Everything a route needs: the dependencies plus the server's own limits, metrics and state. */
export interface ServerContext extends ServerDeps {
  config: ServerConfig;
  slots: GenerationSlots;
  generations: InFlightGenerations;
  metrics: ServerMetrics;
  /** True once shutdown began: new requests get SHUTTING_DOWN. */
  readonly closing: boolean;
}
