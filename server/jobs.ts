import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import type { Logger } from 'pino';
import { isKvpackError, KvpackError, type ErrorCode } from '../common/errors.js';
import { defaultJsonlFields, loadSourceFile, type IngestWarning, type LoadedDocument } from '../ingest/loaders.js';
import type { SourceKind } from '../ingest/sources.js';
import type { DocumentIngester, IngestionCounts } from './ingestion.js';

export const jobStatuses = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type JobStatus = (typeof jobStatuses)[number];

/** A file of a multipart upload, saved in the job's temporary folder. */
export interface UploadedFile {
  /** Path of the saved copy. */
  path: string;
  /** File name as the client sent it; documents get the id `upload:NAME` (`upload:NAME#LINE` for JSON Lines records). */
  name: string;
  kind: SourceKind;
}

/** Input of a job: documents given as JSON, or uploaded files in a temporary folder that the job removes. */
export type JobInput = { kind: 'documents'; documents: LoadedDocument[] } | { kind: 'upload'; tempDir: string; files: UploadedFile[] };

/** The state of a job as `GET /v1/jobs/:id` reports it. */
export interface JobView {
  id: string;
  status: JobStatus;
  /** ISO 8601 times. */
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  counts: IngestionCounts;
  /** Ids of the documents the job ingests, known once its input is read. */
  documentIds: string[];
  warnings: IngestWarning[];
  error?: { code: ErrorCode; message: string };
}

export interface IngestionJobsOptions {
  /** Jobs queued or running at most; more raise TOO_MANY_REQUESTS. */
  maxQueued: number;
  /** Finished jobs kept for status queries; the oldest are forgotten first. */
  retained: number;
  retryAfterSeconds: number;
  logger?: Logger;
}

/** At most this many warnings are kept per job; the count of the rest is logged. */
const MAX_WARNINGS = 100;

interface Job {
  view: JobView;
  /** Dropped when the job finishes, so retained jobs keep only their status. */
  input: JobInput | undefined;
}

/**
 * The ingestion job queue: jobs run one at a time, in submission order, each reporting its status
 * and counts. The queue is bounded; a job beyond `maxQueued` is rejected with 429.
 */
export class IngestionJobs {
  readonly #ingester: DocumentIngester;
  readonly #options: IngestionJobsOptions;
  readonly #jobs = new Map<string, Job>();
  readonly #queue: Job[] = [];
  #running: { job: Job; controller: AbortController; done: Promise<void> } | undefined;
  #stopping = false;

  constructor(ingester: DocumentIngester, options: IngestionJobsOptions) {
    this.#ingester = ingester;
    this.#options = options;
  }

  /** Queues a job and returns its initial state. Raises TOO_MANY_REQUESTS when the queue is full, SHUTTING_DOWN once `stop` began. */
  submit(input: JobInput): JobView {
    if (this.#stopping) {
      throw new KvpackError('SHUTTING_DOWN', 'The server is shutting down and accepts no new ingestion jobs; retry against the restarted server.');
    }
    const active = this.#queue.length + (this.#running ? 1 : 0);
    if (active >= this.#options.maxQueued) {
      throw new KvpackError(
        'TOO_MANY_REQUESTS',
        `${active} ingestion jobs are queued or running, the limit (maxQueuedJobs); retry after ${this.#options.retryAfterSeconds} s or once a job finished.`,
        { retryAfterSeconds: this.#options.retryAfterSeconds, queued: active },
      );
    }
    const documents = input.kind === 'documents' ? input.documents : [];
    const view: JobView = {
      id: `job_${randomUUID()}`,
      status: 'queued',
      createdAt: new Date().toISOString(),
      counts: { total: documents.length, processed: 0, added: 0, updated: 0, unchanged: 0, removed: 0, chunksCreated: 0, chunksReused: 0, tokens: 0 },
      documentIds: documents.map((document) => document.id),
      warnings: [],
    };
    const job: Job = { view, input };
    this.#jobs.set(view.id, job);
    this.#queue.push(job);
    this.#options.logger?.info({ jobId: view.id, input: input.kind, documents: documents.length }, 'ingestion job queued');
    this.startNext();
    return snapshot(view);
  }

  /** Raises JOB_NOT_FOUND for an unknown or forgotten id. */
  get(id: string): JobView {
    const job = this.#jobs.get(id);
    if (!job) {
      throw new KvpackError('JOB_NOT_FOUND', `No ingestion job ${id} is known to this server; job ids are kept for the last ${this.#options.retained} finished jobs and lost on restart.`, {
        jobId: id,
      });
    }
    return snapshot(job.view);
  }

  counts(): Record<JobStatus, number> {
    const counts = Object.fromEntries(jobStatuses.map((status) => [status, 0])) as Record<JobStatus, number>;
    for (const job of this.#jobs.values()) counts[job.view.status] += 1;
    return counts;
  }

  /**
   * Stops the queue: queued jobs are cancelled and their uploads removed; the running job finishes
   * the document in flight, commits it and stops. Resolves once nothing runs.
   */
  async stop(): Promise<void> {
    this.#stopping = true;
    for (const job of this.#queue.splice(0)) {
      await this.finish(job, 'cancelled');
    }
    if (this.#running) {
      this.#running.controller.abort();
      await this.#running.done;
    }
  }

  private startNext(): void {
    if (this.#running || this.#stopping) return;
    const job = this.#queue.shift();
    if (!job) return;
    const controller = new AbortController();
    const done = this.run(job, controller.signal).finally(() => {
      this.#running = undefined;
      this.startNext();
    });
    this.#running = { job, controller, done };
  }

  private async run(job: Job, signal: AbortSignal): Promise<void> {
    const { view } = job;
    const logger = this.#options.logger?.child({ jobId: view.id });
    view.status = 'running';
    view.startedAt = new Date().toISOString();
    try {
      const { documents, replaceSources } = readInput(job.input as JobInput, view);
      view.documentIds = documents.map((document) => document.id);
      view.counts.total = documents.length;
      logger?.info({ documents: documents.length, warnings: view.warnings.length }, 'ingestion job started');
      const counts = await this.#ingester.ingest(documents, {
        signal,
        replaceSources,
        onProgress: (progress) => {
          view.counts = { ...progress };
        },
      });
      view.counts = { ...counts };
      await this.finish(job, signal.aborted && counts.processed < counts.total ? 'cancelled' : 'succeeded');
      logger?.info({ status: view.status, counts: view.counts }, 'ingestion job finished');
    } catch (error) {
      view.error = isKvpackError(error)
        ? { code: error.code, message: error.message }
        : { code: 'INTERNAL_ERROR', message: 'Ingestion failed with an unexpected error; the server log has the details under the job id.' };
      logger?.error({ err: error }, 'ingestion job failed');
      await this.finish(job, 'failed');
    }
  }

  private async finish(job: Job, status: JobStatus): Promise<void> {
    job.view.status = status;
    job.view.finishedAt = new Date().toISOString();
    const input = job.input;
    job.input = undefined;
    if (input?.kind === 'upload') {
      await rm(input.tempDir, { recursive: true, force: true });
    }
    this.forgetOldJobs();
  }

  private forgetOldJobs(): void {
    const finished = [...this.#jobs.values()].filter((job) => job.view.finishedAt !== undefined);
    for (const job of finished.slice(0, Math.max(0, finished.length - this.#options.retained))) {
      this.#jobs.delete(job.view.id);
    }
  }
}

/** Reads the job's documents: as given, or loaded from the uploaded files with ids named after the client's file names. */
function readInput(input: JobInput, view: JobView): { documents: LoadedDocument[]; replaceSources?: string[] } {
  if (input.kind === 'documents') {
    return { documents: input.documents };
  }
  const documents: LoadedDocument[] = [];
  const replaceSources: string[] = [];
  for (const file of input.files) {
    const source = `upload:${file.name}`;
    const loaded = loadSourceFile({ path: file.path, kind: file.kind }, defaultJsonlFields);
    const rename = (text: string) => (text.startsWith(file.path) ? source + text.slice(file.path.length) : text);
    for (const warning of loaded.warnings) {
      if (view.warnings.length < MAX_WARNINGS) view.warnings.push({ ...warning, source: rename(warning.source), message: warning.message.split(file.path).join(source) });
    }
    if (loaded.warnings.some((warning) => warning.kind === 'read-failed')) continue;
    replaceSources.push(source);
    documents.push(...loaded.documents.map((document) => ({ ...document, id: rename(document.id), sourcePath: source })));
  }
  return { documents, replaceSources };
}

function snapshot(view: JobView): JobView {
  return structuredClone(view);
}
