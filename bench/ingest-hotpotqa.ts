/**
 * Ingests every HotpotQA paragraph with stories260K into a fresh store and reports chunks, tokens,
 * time, packet-building rate against the model's raw prefill rate on the same chunks, and store
 * size. Run: npx tsx bench/ingest-hotpotqa.ts [--limit N]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { findSharedDir } from '../common/paths.js';
import { InferenceEngine } from '../inference/engine.js';
import { ChunkStore } from '../ingest/store.js';
import { sequence } from '../packets/prefill.js';
import { benchModelDir, machineSummary } from './setup.js';

function folderBytes(dir: string): number {
  let total = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += statSync(path.join(entry.parentPath, entry.name)).size;
  }
  return total;
}

async function rawPrefillRate(engine: InferenceEngine, chunks: Int32Array[]): Promise<{ all: number; last: number }> {
  const rate = async (logits: 'all' | 'last') => {
    let tokens = 0;
    const began = performance.now();
    for (const chunk of chunks) {
      await engine.forward({ tokens: chunk, positions: sequence(chunk.length), logits });
      tokens += chunk.length;
    }
    return tokens / ((performance.now() - began) / 1000);
  };
  await rate('last');
  return { all: await rate('all'), last: await rate('last') };
}

async function main(): Promise<void> {
  const limitIndex = process.argv.indexOf('--limit');
  const limit = limitIndex > 0 ? Number(process.argv[limitIndex + 1]) : undefined;
  const shared = findSharedDir();
  if (!shared) throw new Error('needs the shared assets folder (KVPACK_SHARED_DIR or ../shared)');
  const model = await benchModelDir('stories260K');
  const storeDir = path.join(mkdtempSync(path.join(os.tmpdir(), 'kvpack-bench-ingest-')), 'store');
  let source = path.join(shared, 'data', 'hotpotqa', 'dev_subsampled.jsonl');
  if (limit) {
    source = path.join(path.dirname(storeDir), 'subset.jsonl');
    execFileSync('sh', ['-c', `head -n ${limit} '${path.join(shared, 'data', 'hotpotqa', 'dev_subsampled.jsonl')}' > '${source}'`]);
  }
  console.log(`Machine: ${machineSummary()}`);

  const began = performance.now();
  execFileSync(
    process.execPath,
    ['--import', 'tsx', 'cli/main.ts', 'ingest', '--store', storeDir, '--model', model, '--jsonl-records', 'contexts', '--jsonl-text-field', 'paragraph_text', source],
    { stdio: ['ignore', 'inherit', 'ignore'] },
  );
  const seconds = (performance.now() - began) / 1000;

  const engine = await InferenceEngine.load(model);
  const store = await ChunkStore.open(storeDir, {
    mode: 'read',
    model: { modelFingerprint: engine.modelFingerprint, tokenizerFingerprint: engine.tokenizerFingerprint },
  });
  const records = [...store.catalog.labels()].map((label) => store.catalog.getChunkByLabel(label)).filter((record) => record !== undefined);
  const chunks = records.map((record) => record.tokens);
  const documents = store.listDocuments().length;
  const tokenCount = chunks.reduce((sum, tokens) => sum + tokens.length, 0);
  const summaryCount = records.reduce((sum, record) => sum + record.summaryTokens.length, 0);
  await store.close();
  const sample = chunks.slice(0, 2000);
  const raw = await rawPrefillRate(engine, sample);
  await engine.release();

  const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
  console.log('\n| figure | value |');
  console.log('|---|---:|');
  console.log(`| documents (paragraphs) | ${documents} |`);
  console.log(`| chunks | ${chunks.length} |`);
  console.log(`| chunk tokens | ${tokenCount} |`);
  console.log(`| summary tokens | ${summaryCount} |`);
  console.log(`| wall time (kvpack ingest, process start to exit) | ${seconds.toFixed(1)} s |`);
  console.log(`| chunk tokens per second, whole ingestion | ${(tokenCount / seconds).toFixed(0)} |`);
  console.log(`| packet tokens (full + summary) per second, whole ingestion | ${((tokenCount + summaryCount) / seconds).toFixed(0)} |`);
  console.log(`| raw prefill tokens/s on ${sample.length} chunks, logits for every position | ${raw.all.toFixed(0)} |`);
  console.log(`| raw prefill tokens/s on ${sample.length} chunks, last position only | ${raw.last.toFixed(0)} |`);
  console.log(`| store size | ${mib(folderBytes(storeDir))} MiB |`);
  for (const part of ['packets', 'index', 'catalog.sqlite']) {
    const file = path.join(storeDir, part);
    const size = statSync(file).isDirectory() ? folderBytes(file) : statSync(file).size;
    console.log(`| of which ${part} | ${mib(size)} MiB |`);
  }
  rmSync(path.dirname(storeDir), { recursive: true, force: true });
}

await main();
