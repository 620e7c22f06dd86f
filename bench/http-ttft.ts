/**
 * Time to first token over HTTP. The harness starts `kvpack serve` as a child process on loopback
 * and ingests a small HotpotQA corpus through the API. For each strategy it then sends streamed
 * queries from 1 and 4 concurrent clients and measures the time to the first `token` event on the
 * client, next to the server's own `timeToFirstTokenMs`. Each row is bounded by a request count
 * and a time limit.
 *
 * Run: npx tsx bench/http-ttft.ts [--models stories260K,llama-100m] [--requests 24] [--seconds 60]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { hotpotDocuments, hotpotqaFile, readHotpotQuestions, type HotpotQuestion } from '../cli/demo-corpus.js';
import { findSharedDir, packageRoot } from '../common/paths.js';
import { strategies, type Strategy } from '../packets/strategies.js';
import type { QueryResult } from '../query/types.js';
import type { JobView } from '../server/jobs.js';
import { benchModelDir, machineSummary } from './setup.js';

type BenchModel = 'stories260K' | 'llama-100m';

interface Options {
  models: BenchModel[];
  /** Measured requests per strategy and concurrency. */
  requests: number;
  /** Time limit per strategy and concurrency, in seconds. */
  seconds: number;
}

/** Questions whose paragraphs are ingested, per model: the 100M shape builds its packets about 400 times slower. */
const corpusQuestions: Record<BenchModel, number> = { 'stories260K': 20, 'llama-100m': 2 };
/** Questions asked, from the start of the file: no question is asked twice in a run, so `prefix` reuses only the shared preamble. */
const QUERY_POOL = 500;
const concurrencies = [1, 4];
const WARMUP_REQUESTS = 2;
const MAX_TOKENS = 8;
const TOP_K = 3;

interface Sample {
  clientTtftMs: number;
  serverTtftMs: number;
}

interface Cell {
  model: BenchModel;
  strategy: Strategy;
  concurrency: number;
  samples: Sample[];
  rejected: number;
  elapsedMs: number;
}

function parseOptions(argv: string[]): Options {
  const options: Options = { models: ['stories260K', 'llama-100m'], requests: 24, seconds: 60 };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (flag === '--models') options.models = value.split(',') as BenchModel[];
    else if (flag === '--requests') options.requests = Number(value);
    else if (flag === '--seconds') options.seconds = Number(value);
    else throw new Error(`Unknown option ${flag}; use --models, --requests or --seconds.`);
  }
  return options;
}

/** Starts `kvpack serve` on a free loopback port and returns its URL once it listens. */
async function startServeProcess(store: string, model: string): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'cli/main.ts', 'serve', '--store', store, '--model', model, '--host', '127.0.0.1', '--port', '0', '--log-level', 'warn'], {
    cwd: packageRoot,
    env: { ...process.env, KVPACK_MAX_CONCURRENT_GENERATIONS: '4', KVPACK_CONFIG: undefined },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const match = /kvpack serving (http:\/\/\S+) /.exec(output);
      if (match) resolve(match[1]);
    });
    child.on('exit', (code) => reject(new Error(`kvpack serve exited with code ${code} before listening`)));
  });
  return { child, url };
}

async function stopServeProcess(child: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => child.on('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

async function ingest(url: string, questions: HotpotQuestion[]): Promise<JobView> {
  const documents = hotpotDocuments(questions).map((document) => ({ id: document.id, title: document.title, text: document.text }));
  const response = await fetch(`${url}/v1/documents`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ documents }) });
  let { job } = (await response.json()) as { job: JobView };
  while (job.status === 'queued' || job.status === 'running') {
    await new Promise((resolve) => setTimeout(resolve, 500));
    job = ((await (await fetch(`${url}/v1/jobs/${job.id}`)).json()) as { job: JobView }).job;
  }
  if (job.status !== 'succeeded') throw new Error(`ingestion ${job.status}: ${job.error?.message}`);
  return job;
}

/** Sends one streamed query; returns undefined when the server rejected it with 429. */
async function timedQuery(url: string, question: string, strategy: Strategy): Promise<Sample | undefined> {
  const began = performance.now();
  const response = await fetch(`${url}/v1/query`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ question, strategy, topK: TOP_K, maxTokens: MAX_TOKENS, stream: true }),
  });
  if (response.status === 429) {
    await response.body?.cancel();
    return undefined;
  }
  if (response.status !== 200) throw new Error(`query failed with ${response.status}: ${await response.text()}`);
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let text = '';
  let clientTtftMs: number | undefined;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
    if (clientTtftMs === undefined && text.includes('event: token')) clientTtftMs = performance.now() - began;
  }
  const done = /event: done\ndata: (.*)\n/.exec(text);
  if (!done) throw new Error(`stream ended without a done event: ${text.slice(-300)}`);
  const result = JSON.parse(done[1]) as QueryResult;
  return { clientTtftMs: clientTtftMs ?? performance.now() - began, serverTtftMs: result.timings.timeToFirstTokenMs };
}

/** Hands out each question once; throws when the pool runs out. */
class QuestionPool {
  #next = 0;

  constructor(private readonly questions: readonly string[]) {}

  take(): string {
    if (this.#next >= this.questions.length) throw new Error(`All ${this.questions.length} questions were asked; lower --requests.`);
    return this.questions[this.#next++];
  }
}

/** Runs `requests` queries with `concurrency` clients, each sending its next query when the last one finished. */
async function runCell(url: string, model: BenchModel, pool: QuestionPool, strategy: Strategy, concurrency: number, options: Options): Promise<Cell> {
  for (let i = 0; i < WARMUP_REQUESTS; i++) await timedQuery(url, pool.take(), strategy);
  const cell: Cell = { model, strategy, concurrency, samples: [], rejected: 0, elapsedMs: 0 };
  const began = performance.now();
  const deadline = began + options.seconds * 1000;
  let next = 0;
  const client = async () => {
    while (next < options.requests && performance.now() < deadline) {
      const question = pool.take();
      next += 1;
      const sample = await timedQuery(url, question, strategy);
      if (sample) cell.samples.push(sample);
      else cell.rejected += 1;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, client));
  cell.elapsedMs = performance.now() - began;
  return cell;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function formatRow(cell: Cell): string {
  const client = cell.samples.map((sample) => sample.clientTtftMs);
  const server = cell.samples.map((sample) => sample.serverTtftMs);
  const rate = cell.samples.length / (cell.elapsedMs / 1000);
  return `| ${cell.model} | ${cell.strategy} | ${cell.concurrency} | ${cell.samples.length} | ${percentile(client, 50).toFixed(1)} | ${percentile(client, 95).toFixed(1)} | ${percentile(server, 50).toFixed(1)} | ${percentile(server, 95).toFixed(1)} | ${rate.toFixed(1)} | ${cell.rejected} |`;
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const shared = findSharedDir();
  if (!shared) throw new Error('The benchmark corpus needs the shared assets folder: set KVPACK_SHARED_DIR or place it at ../shared.');
  console.log(`Machine: ${machineSummary()}`);
  console.log(
    `Streamed queries, topK ${TOP_K}, maxTokens ${MAX_TOKENS}, greedy, each question asked once; ${options.requests} measured requests per row ` +
      `(at most ${options.seconds} s) after ${WARMUP_REQUESTS} warm-up requests; server maxConcurrentGenerations 4.\n`,
  );
  const rows: string[] = [];
  for (const model of options.models) {
    const dir = mkdtempSync(path.join(tmpdir(), 'kvpack-bench-http-'));
    const { child, url } = await startServeProcess(path.join(dir, 'store'), await benchModelDir(model));
    try {
      const questions = readHotpotQuestions(hotpotqaFile(shared), QUERY_POOL);
      const job = await ingest(url, questions.slice(0, corpusQuestions[model]));
      console.log(`${model}: ingested ${job.counts.added} paragraphs (${job.counts.chunksCreated} chunks) in ${((Date.parse(job.finishedAt ?? '') - Date.parse(job.startedAt ?? '')) / 1000).toFixed(1)} s`);
      const pool = new QuestionPool(questions.map((question) => question.question_text));
      for (const strategy of strategies) {
        for (const concurrency of concurrencies) {
          const cell = await runCell(url, model, pool, strategy, concurrency, options);
          rows.push(formatRow(cell));
          console.log(rows.at(-1));
        }
      }
    } finally {
      await stopServeProcess(child);
      rmSync(dir, { recursive: true, force: true });
    }
  }
  console.log('\n| model | strategy | clients | requests | client TTFT p50 ms | client TTFT p95 ms | server TTFT p50 ms | server TTFT p95 ms | requests/s | 429s |');
  console.log('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const row of rows) console.log(row);
}

await main();
