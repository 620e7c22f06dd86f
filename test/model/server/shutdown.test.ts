import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../../common/paths.js';
import { LOCK_NAME } from '../../../ingest/lock.js';
import { readManifest } from '../../../ingest/manifest.js';
import { ChunkStore, INDEX_DIR } from '../../../ingest/store.js';
import type { QueryResult } from '../../../query/types.js';
import { HnswIndex } from '../../../retrieval/hnsw-index.js';
import type { JobView } from '../../../server/jobs.js';
import { testModelDir } from '../../helpers/models.js';
import { documentsBody, hotpotCorpus, postJson, readEvents, startTestServer, waitForJob } from './helpers.js';

let dir: string;
let store: string;
let question: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'kvpack-shutdown-'));
  store = path.join(dir, 'store');
  const corpus = hotpotCorpus(1);
  question = corpus.questions[0].question_text;
  const running = await startTestServer(store);
  try {
    const job = running.server.context.jobs.submit({ kind: 'documents', documents: corpus.documents });
    expect((await waitForJob(running.url, job.id)).status).toBe('succeeded');
  } finally {
    await running.close();
  }
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Starts a streamed query, waits for its first token, closes the server and returns the stream's final event. */
async function closeDuringStream(shutdownGraceMs: number): Promise<{ done: QueryResult; tokensAfterClose: number }> {
  const running = await startTestServer(store, { shutdownGraceMs });
  const response = await postJson(`${running.url}/v1/query`, { question, maxTokens: 200, stream: true });
  expect(response.status).toBe(200);
  const events = readEvents(response);
  expect((await events.next()).value?.event).toBe('token');
  const closed = running.close();
  let tokensAfterClose = 0;
  let done: QueryResult | undefined;
  for await (const event of events) {
    if (event.event === 'token') tokensAfterClose += 1;
    if (event.event === 'done') done = event.data as QueryResult;
  }
  await closed;
  expect(done, 'the stream ends with a done event').toBeDefined();
  return { done: done!, tokensAfterClose };
}

describe('graceful shutdown', () => {
  it('lets an in-flight query finish within the grace period', async () => {
    const { done } = await closeDuringStream(60_000);
    expect(['eos', 'stop', 'length']).toContain(done.finishReason);
  });

  it('cancels an in-flight query once the grace period ends', async () => {
    const { done } = await closeDuringStream(0);
    expect(done.finishReason).toBe('cancelled');
    expect(done.tokens.generatedTokens).toBeLessThan(200);
  });

  it('releases the store lock on close', async () => {
    expect(existsSync(path.join(store, LOCK_NAME))).toBe(false);
    const reopened = await ChunkStore.open(store, { mode: 'write' });
    await reopened.close();
  });

  it('stops a served ingestion on SIGTERM and leaves a consistent store', async () => {
    const served = path.join(dir, 'served');
    const child = spawn(process.execPath, ['--import', 'tsx', 'cli/main.ts', 'serve', '--store', served, '--model', testModelDir('stories260K'), '--port', '0', '--log-level', 'info'], {
      cwd: packageRoot,
      env: { ...process.env, KVPACK_CONFIG: undefined },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const url = await waitFor(() => /kvpack serving (http:\/\/\S+) /.exec(stdout)?.[1], 60_000, () => stderr);
      const corpus = hotpotCorpus(10, 1);
      const response = await postJson(`${url}/v1/documents`, documentsBody(corpus.documents));
      expect(response.status).toBe(202);
      const { job } = (await response.json()) as { job: JobView };
      await waitFor(
        async () => {
          const current = ((await (await fetch(`${url}/v1/jobs/${job.id}`)).json()) as { job: JobView }).job;
          return current.counts.processed >= 5 ? current : undefined;
        },
        120_000,
        () => stderr,
      );
      child.kill('SIGTERM');
      expect(await withTimeout(exited, 60_000)).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }

    const lines = stderr.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as Record<string, unknown>);
    const finished = lines.find((line) => line.msg === 'ingestion job finished');
    expect(finished?.status, 'the job stops after the document in flight').toBe('cancelled');
    expect(lines.some((line) => line.msg === 'stopped')).toBe(true);
    expect(readdirSync(served).sort(), 'no lock, temporary file or write-ahead log is left').toEqual(['catalog.sqlite', 'index', 'packets', 'store.json']);

    // The index saved at shutdown contains exactly the committed chunks (read before ChunkStore.open repairs it).
    const manifest = readManifest(served);
    const index = HnswIndex.load(path.join(served, INDEX_DIR), { dimension: manifest.embedder.dimension });
    const reopened = await ChunkStore.open(served, { mode: 'read' });
    try {
      const documents = reopened.listDocuments();
      expect(documents.length).toBeGreaterThanOrEqual(5);
      expect(documents.length).toBeLessThan(100);
      expect(new Set(index.liveLabels())).toEqual(reopened.catalog.labels());
      for (const document of documents) {
        const chunkIds = reopened.catalog.documentChunkIds(document.id);
        expect(chunkIds).toHaveLength(document.chunkCount);
        for (const chunkId of chunkIds) {
          expect(await reopened.packets.has({ chunkId, adapterId: 'none', kind: 'full' }), chunkId).toBe(true);
        }
      }
      expect(reopened.packets.stats().tempFiles).toBe(0);
    } finally {
      await reopened.close();
    }
  });
});

async function waitFor<T>(probe: () => T | undefined | Promise<T | undefined>, timeoutMs: number, context: () => string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms; process output:\n${context()}`);
}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  return Promise.race([promise, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs))]);
}
