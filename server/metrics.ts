import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { QueryResult } from '../query/types.js';
import type { JobStatus } from './jobs.js';

/** Readings that the metrics take at scrape time. */
export interface MetricSources {
  generationsInFlight(): number;
  generationCapacity(): number;
  /** Packet cache lookups of the query path since start. */
  packetCache(): { hits: number; misses: number };
  /** Bytes of the store folder on disk: catalog, index and packets. */
  storeBytes(): number;
  storeChunks(): number;
  jobCounts(): Record<JobStatus, number>;
}

const ttftBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** The server's Prometheus metrics, in a registry of its own (prom-client), so several servers in one process never mix counts. */
export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'route' | 'method' | 'status'>;
  readonly #timeToFirstToken: Histogram<'strategy'>;
  readonly #queryDuration: Histogram<'strategy'>;
  readonly #prefillTokens: Counter<'kind'>;

  constructor(sources: MetricSources) {
    const registers = [this.registry];
    this.requests = new Counter({
      name: 'kvpack_http_requests_total',
      help: 'HTTP requests by route, method and status code.',
      labelNames: ['route', 'method', 'status'],
      registers,
    });
    this.#timeToFirstToken = new Histogram({
      name: 'kvpack_time_to_first_token_seconds',
      help: 'Time from the start of a query to its first generated token, by strategy.',
      labelNames: ['strategy'],
      buckets: ttftBuckets,
      registers,
    });
    this.#queryDuration = new Histogram({
      name: 'kvpack_query_duration_seconds',
      help: 'Time from the start of a query to its last generated token, by strategy.',
      labelNames: ['strategy'],
      buckets: ttftBuckets,
      registers,
    });
    this.#prefillTokens = new Counter({
      name: 'kvpack_prefill_tokens_total',
      help: 'Context tokens of finished queries by where their cache entries came from: spliced from packets, reused from the prefix cache, or computed.',
      labelNames: ['kind'],
      registers,
    });
    this.registerGauges(sources);
    collectDefaultMetrics({ register: this.registry, prefix: 'kvpack_' });
  }

  /** Records the timings and token accounting of one finished query. */
  recordQuery(result: QueryResult): void {
    const labels = { strategy: result.strategy };
    if (result.tokens.generatedTokens > 0) {
      this.#timeToFirstToken.observe(labels, result.timings.timeToFirstTokenMs / 1000);
    }
    this.#queryDuration.observe(labels, result.timings.totalMs / 1000);
    this.#prefillTokens.inc({ kind: 'spliced' }, result.tokens.splicedTokens);
    this.#prefillTokens.inc({ kind: 'reused' }, result.tokens.reusedTokens);
    this.#prefillTokens.inc({ kind: 'computed' }, result.tokens.computedTokens);
  }

  /** Renders the metrics in the Prometheus text exposition format. */
  async render(): Promise<{ contentType: string; text: string }> {
    return { contentType: this.registry.contentType, text: await this.registry.metrics() };
  }

  private registerGauges(sources: MetricSources): void {
    const registers = [this.registry];
    new Gauge({
      name: 'kvpack_generations_in_flight',
      help: 'Queries running now.',
      registers,
      collect() {
        this.set(sources.generationsInFlight());
      },
    });
    new Gauge({
      name: 'kvpack_generation_slots',
      help: 'Queries that may be answered at the same time (maxConcurrentGenerations).',
      registers,
      collect() {
        this.set(sources.generationCapacity());
      },
    });
    new Gauge({
      name: 'kvpack_packet_cache_hit_ratio',
      help: 'Share of packet reads served from the in-memory packet cache since start; 0 before the first read.',
      registers,
      collect() {
        const { hits, misses } = sources.packetCache();
        this.set(hits + misses === 0 ? 0 : hits / (hits + misses));
      },
    });
    new Gauge({
      name: 'kvpack_packet_cache_lookups',
      help: 'Packet reads since start, by whether the packet cache held the packet.',
      labelNames: ['result'],
      registers,
      collect() {
        const { hits, misses } = sources.packetCache();
        this.set({ result: 'hit' }, hits);
        this.set({ result: 'miss' }, misses);
      },
    });
    new Gauge({
      name: 'kvpack_store_bytes',
      help: 'Bytes of the store folder on disk: catalog, index and packets.',
      registers,
      collect() {
        this.set(sources.storeBytes());
      },
    });
    new Gauge({
      name: 'kvpack_store_chunks',
      help: 'Chunks in the store catalog.',
      registers,
      collect() {
        this.set(sources.storeChunks());
      },
    });
    new Gauge({
      name: 'kvpack_ingestion_jobs',
      help: 'Ingestion jobs the server knows of, by status.',
      labelNames: ['status'],
      registers,
      collect() {
        for (const [status, count] of Object.entries(sources.jobCounts())) this.set({ status }, count);
      },
    });
  }
}
