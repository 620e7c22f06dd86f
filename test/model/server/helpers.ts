import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { expect } from 'vitest';
import { hotpotDocuments, hotpotqaFile, readHotpotQuestions, type HotpotQuestion } from '../../../cli/demo-corpus.js';
import type { LoadedDocument } from '../../../ingest/loaders.js';
import { loadServerConfig, type ServerConfigKey } from '../../../server/config.js';
import type { JobView } from '../../../server/jobs.js';
import { startServer, type RunningServer } from '../../../server/start.js';
import { testModelDir } from '../../helpers/models.js';
import { requireSharedDir } from '../../helpers/shared.js';

/** Log lines a server wrote, parsed. */
export interface CapturedLog {
  logger: Logger;
  lines: Record<string, unknown>[];
}

/** Creates a pino logger that keeps its JSON lines in memory, so tests can assert on them. */
export function captureLogger(level = 'info'): CapturedLog {
  const lines: Record<string, unknown>[] = [];
  let pending = '';
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      pending += chunk.toString('utf8');
      const parts = pending.split('\n');
      pending = parts.pop() ?? '';
      for (const part of parts) if (part.trim()) lines.push(JSON.parse(part) as Record<string, unknown>);
      callback();
    },
  });
  return { logger: pino({ level }, stream), lines };
}

/** Starts a real server on a free loopback port with the stories260K test model. */
export async function startTestServer(store: string, options: Partial<Record<ServerConfigKey, unknown>> = {}, logger?: Logger): Promise<RunningServer> {
  const config = loadServerConfig({ flags: { store, model: testModelDir('stories260K'), port: 0, logLevel: 'silent', ...options } });
  return startServer(config, { logger: logger ?? pino({ level: 'silent' }) });
}

/** Reads `count` HotpotQA questions after the first `skip` and turns their paragraphs into documents. */
export function hotpotCorpus(count: number, skip = 0): { questions: HotpotQuestion[]; documents: LoadedDocument[] } {
  const questions = readHotpotQuestions(hotpotqaFile(requireSharedDir()), skip + count).slice(skip);
  return { questions, documents: hotpotDocuments(questions) };
}

/** Builds the JSON body of `POST /v1/documents` for these documents. */
export function documentsBody(documents: readonly LoadedDocument[]): { documents: { id: string; title: string; text: string }[] } {
  return { documents: documents.map((document) => ({ id: document.id, title: document.title, text: document.text })) };
}

export function postJson(url: string, body: unknown, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body), signal });
}

/** Polls a job until it leaves queued and running, for at most `timeoutMs`. */
export async function waitForJob(baseUrl: string, jobId: string, timeoutMs = 240_000): Promise<JobView> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const response = await fetch(`${baseUrl}/v1/jobs/${jobId}`);
    expect(response.status).toBe(200);
    const { job } = (await response.json()) as { job: JobView };
    if (job.status !== 'queued' && job.status !== 'running') return job;
    if (Date.now() > deadline) throw new Error(`job ${jobId} still ${job.status} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Posts documents as one job and waits for it to finish. */
export async function ingestThroughApi(baseUrl: string, documents: readonly LoadedDocument[], headers: Record<string, string> = {}): Promise<JobView> {
  const response = await postJson(`${baseUrl}/v1/documents`, documentsBody(documents), headers);
  expect(response.status).toBe(202);
  const { job } = (await response.json()) as { job: JobView };
  return waitForJob(baseUrl, job.id);
}

export interface SseEvent {
  event: string;
  data: unknown;
}

/** Reads server-sent events from a response body as they arrive. */
export async function* readEvents(response: Response): AsyncGenerator<SseEvent> {
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end = buffer.indexOf('\n\n');
      while (end >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1] ?? 'message';
        const data = /^data: (.*)$/m.exec(block)?.[1];
        yield { event, data: data === undefined ? undefined : JSON.parse(data) };
        end = buffer.indexOf('\n\n');
      }
    }
  } finally {
    reader.releaseLock();
  }
}

/** Reads one gauge or counter sample from Prometheus text, or undefined when absent. */
export function metricValue(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

/** Polls `/metrics` until `series` has `expected`, for at most `timeoutMs`; returns the last value. */
export async function waitForMetric(baseUrl: string, series: string, expected: number, timeoutMs = 10_000): Promise<number | undefined> {
  const deadline = Date.now() + timeoutMs;
  let value: number | undefined;
  while (Date.now() < deadline) {
    value = metricValue(await (await fetch(`${baseUrl}/metrics`)).text(), series);
    if (value === expected) return value;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return value;
}
