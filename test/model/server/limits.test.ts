import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HotpotQuestion } from '../../../cli/demo-corpus.js';
import type { JobView } from '../../../server/jobs.js';
import type { RunningServer } from '../../../server/start.js';
import {
  captureLogger,
  documentsBody,
  hotpotCorpus,
  postJson,
  readEvents,
  startTestServer,
  waitForJob,
  waitForMetric,
  type CapturedLog,
} from './helpers.js';

const token = 'test-token-0123456789';
const auth = { authorization: `Bearer ${token}` };
const maxBodyBytes = 2048;
const maxQuestionChars = 1200;
const maxUploadBytes = 4096;

let dir: string;
let running: RunningServer;
let log: CapturedLog;
let questions: HotpotQuestion[];

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'kvpack-limits-'));
  log = captureLogger();
  running = await startTestServer(
    path.join(dir, 'store'),
    { apiToken: token, maxBodyBytes, maxUploadBytes, maxQuestionChars, maxConcurrentGenerations: 1, maxQueuedJobs: 1, retryAfterSeconds: 2 },
    log.logger,
  );
  // The corpus is larger than maxBodyBytes, so it goes to the job queue directly; query-api.test.ts covers POST /v1/documents.
  const corpus = hotpotCorpus(3);
  questions = corpus.questions;
  const { jobs } = running.server.context;
  const submitted = jobs.submit({ kind: 'documents', documents: corpus.documents });
  expect((await waitForJob(running.url, submitted.id)).status).toBe('succeeded');
});

afterAll(async () => {
  await running?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function errorOf(response: Response): Promise<{ code: string; message: string; details?: Record<string, unknown> }> {
  return ((await response.json()) as { error: { code: string; message: string } }).error;
}

describe('bearer token', () => {
  it('rejects a write without a token', async () => {
    const response = await postJson(`${running.url}/v1/documents`, { documents: [{ text: 'x' }] });
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toBe('Bearer');
    const error = await errorOf(response);
    expect(error.code).toBe('UNAUTHORIZED');
    expect(error.message).toContain('Authorization: Bearer <token>');
  });

  it('rejects a write with another token', async () => {
    const response = await fetch(`${running.url}/v1/documents/${encodeURIComponent(questions[0].question_id)}`, {
      method: 'DELETE',
      headers: { authorization: 'Bearer not-the-configured-token' },
    });
    expect(response.status).toBe(401);
    expect((await errorOf(response)).message).toContain('not the configured API token');
  });

  it('rejects a malformed authorization header', async () => {
    const response = await postJson(`${running.url}/v1/documents`, { documents: [{ text: 'x' }] }, { authorization: `Basic ${token}` });
    expect(response.status).toBe(401);
  });

  it('leaves queries open', async () => {
    const response = await postJson(`${running.url}/v1/query`, { question: questions[0].question_text, maxTokens: 1 });
    expect(response.status).toBe(200);
  });
});

describe('request bounds', () => {
  it('rejects a body over maxBodyBytes with 413', async () => {
    const response = await postJson(`${running.url}/v1/query`, { question: 'a'.repeat(maxBodyBytes + 10) });
    expect(response.status).toBe(413);
    const error = await errorOf(response);
    expect(error.code).toBe('PAYLOAD_TOO_LARGE');
    expect(error.message).toContain(`limit of ${maxBodyBytes} bytes (maxBodyBytes)`);
  });

  it('rejects an uploaded file over maxUploadBytes with 413', async () => {
    const form = new FormData();
    form.append('file', new Blob(['The lamp was lit at dusk. '.repeat(200)]), 'long.txt');
    const response = await fetch(`${running.url}/v1/documents`, { method: 'POST', headers: auth, body: form });
    expect(response.status).toBe(413);
    const error = await errorOf(response);
    expect(error.code).toBe('PAYLOAD_TOO_LARGE');
    expect(error.message).toContain(`limit of ${maxUploadBytes} bytes (maxUploadBytes)`);
  });

  it('rejects a question over maxQuestionChars with 413', async () => {
    const response = await postJson(`${running.url}/v1/query`, { question: 'why '.repeat(maxQuestionChars / 4 + 1) });
    expect(response.status).toBe(413);
    const error = await errorOf(response);
    expect(error.code).toBe('QUESTION_TOO_LONG');
    expect(error.message).toBe(`The question has ${maxQuestionChars + 4} characters; the limit is ${maxQuestionChars} (maxQuestionChars). Shorten the question.`);
  });

  it('rejects a question that overflows the context window with 413', async () => {
    // Digits are single tokens for stories260K, so this question needs about 1100 of its 512 positions.
    const response = await postJson(`${running.url}/v1/query`, { question: '0123456789'.repeat(110) });
    expect(response.status).toBe(413);
    const error = await errorOf(response);
    expect(error.code).toBe('SEQUENCE_TOO_LONG');
    expect(error.message).toContain("model's 512-position window");
  });

  it('rejects the same question as a stream with a JSON 413', async () => {
    const response = await postJson(`${running.url}/v1/query`, { question: '0123456789'.repeat(110), stream: true });
    expect(response.status).toBe(413);
    expect(response.headers.get('content-type')).toContain('application/json');
    expect((await errorOf(response)).code).toBe('SEQUENCE_TOO_LONG');
  });

  it.each([
    [{ question: 'Who?', topK: 'three' }, 'Invalid request body: topK must be of type integer.', ['topK']],
    [{ question: 'Who?', colour: 'red' }, 'Invalid request body: colour is not a known field.', ['colour']],
    [{ topK: 2 }, 'Invalid request body: question is required.', ['question']],
    [{ question: 'Who?', strategy: 'fast' }, 'Invalid request body: strategy must be one of "full", "prefix", "naive", "epic", "packet".', ['strategy']],
    [{ question: 'Who?', topK: 99 }, 'Invalid request body: topK must be <= 16.', ['topK']],
    [{ question: '' }, 'Invalid request body: question must have at least 1 character.', ['question']],
    [{ question: '   ' }, 'Invalid request body: question must contain a non-space character.', ['question']],
  ])('rejects a malformed query body %j with 400', async (body, message, fields) => {
    const response = await postJson(`${running.url}/v1/query`, body);
    expect(response.status).toBe(400);
    const error = await errorOf(response);
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe(message);
    expect(error.details?.fields).toEqual(fields);
  });

  it('rejects a document without text with 400', async () => {
    const response = await postJson(`${running.url}/v1/documents`, { documents: [{ title: 'Empty' }] }, auth);
    expect(response.status).toBe(400);
    expect((await errorOf(response)).message).toBe('Invalid request body: documents.0.text is required.');
  });

  it('rejects invalid JSON with 400', async () => {
    const response = await fetch(`${running.url}/v1/query`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"question": ' });
    expect(response.status).toBe(400);
    const error = await errorOf(response);
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toContain('The request body is not valid JSON');
  });

  it('rejects a body that is not JSON with 415', async () => {
    const response = await fetch(`${running.url}/v1/query`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'Who?' });
    expect(response.status).toBe(415);
    expect((await errorOf(response)).code).toBe('UNSUPPORTED_MEDIA_TYPE');
  });
});

describe('generation slots', () => {
  it('rejects when busy, frees on disconnect', async () => {
    const holder = new AbortController();
    const slotHolder = await postJson(`${running.url}/v1/query`, { question: questions[1].question_text, maxTokens: 256, stream: true }, {}, holder.signal);
    expect(slotHolder.status).toBe(200);
    const events = readEvents(slotHolder);
    const first = await events.next();
    expect(first.value?.event).toBe('token');

    const rejected = await postJson(`${running.url}/v1/query`, { question: questions[2].question_text, maxTokens: 1 });
    expect(rejected.status).toBe(429);
    expect(rejected.headers.get('retry-after')).toBe('2');
    const error = await errorOf(rejected);
    expect(error.code).toBe('TOO_MANY_REQUESTS');
    expect(error.message).toBe('All 1 generation slots are busy (maxConcurrentGenerations); retry after 2 s.');

    holder.abort();
    expect(await waitForMetric(running.url, 'kvpack_generations_in_flight', 0)).toBe(0);
    const cancelled = log.lines.find((line) => line.msg === 'query cancelled');
    expect(cancelled?.reason).toBe('client disconnected');
    expect(cancelled?.generatedTokens as number).toBeLessThan(256);
    expect(cancelled?.requestId).toBeTypeOf('string');

    const served = await postJson(`${running.url}/v1/query`, { question: questions[2].question_text, maxTokens: 4 });
    expect(served.status).toBe(200);
  });
});

describe('ingestion queue', () => {
  it('rejects a job with 429 while the queue is full', async () => {
    const corpus = hotpotCorpus(1, 3);
    const batch = (index: number) => documentsBody(corpus.documents.slice(index * 2, index * 2 + 2));
    const first = await postJson(`${running.url}/v1/documents`, batch(0), auth);
    expect(first.status).toBe(202);
    const second = await postJson(`${running.url}/v1/documents`, batch(1), auth);
    expect(second.status).toBe(429);
    expect(second.headers.get('retry-after')).toBe('2');
    const error = await errorOf(second);
    expect(error.code).toBe('TOO_MANY_REQUESTS');
    expect(error.message).toContain('(maxQueuedJobs)');
    const { job } = (await first.json()) as { job: JobView };
    expect((await waitForJob(running.url, job.id)).status).toBe('succeeded');
  });
});
