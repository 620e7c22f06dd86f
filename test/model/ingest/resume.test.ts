import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../../common/paths.js';
import { InferenceEngine } from '../../../inference/engine.js';
import { Catalog } from '../../../ingest/catalog.js';
import { acquireStoreLock } from '../../../ingest/lock.js';
import { expectedModelOf, resolveAdapter } from '../../../packets/adapter.js';
import { expectedFingerprints } from '../../../packets/build.js';
import { FsPacketStore } from '../../../packets/store.js';
import { HnswIndex } from '../../../retrieval/hnsw-index.js';
import { testModelDir } from '../../helpers/models.js';
import { requireSharedDir } from '../../helpers/shared.js';

/** The adapter that `kvpack ingest` builds packets with by default for stories260K. */
const SHIPPED_ADAPTER = 'stories260k-conditioned-kv';

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `kvpack ingest` as a child process. `killWhen` gets each stderr log line and returns true to send SIGKILL. */
function runCli(args: string[], killWhen?: (line: Record<string, unknown>) => boolean): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'cli/main.ts', ...args], { cwd: packageRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let pending = '';
    child.stdout.on('data', (data: Buffer) => (stdout += data.toString()));
    child.stderr.on('data', (data: Buffer) => {
      const text = data.toString();
      stderr += text;
      pending += text;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        if (!killWhen || !line.startsWith('{')) continue;
        if (killWhen(JSON.parse(line) as Record<string, unknown>)) child.kill('SIGKILL');
      }
    });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

let root: string;
let corpus: string;
let smallCorpus: string;
let engine: InferenceEngine;
const modelDir = () => testModelDir('stories260K');

beforeAll(async () => {
  root = mkdtempSync(path.join(tmpdir(), 'kvpack-resume-'));
  // Six HotpotQA questions: about 60 paragraphs, several hundred chunks, some seconds of packet building.
  const lines = readFileSync(path.join(requireSharedDir(), 'data', 'hotpotqa', 'dev_subsampled.jsonl'), 'utf8').split('\n');
  corpus = path.join(root, 'paragraphs.jsonl');
  writeFileSync(corpus, `${lines.slice(0, 6).join('\n')}\n`);
  smallCorpus = path.join(root, 'small.jsonl');
  writeFileSync(smallCorpus, `${lines[0]}\n`);
  engine = await InferenceEngine.load(modelDir());
});
afterAll(async () => {
  await engine.release();
  rmSync(root, { recursive: true, force: true });
});

const ingestArgs = (storeDir: string, file = corpus) => [
  'ingest',
  '--log-format',
  'json',
  '--store',
  storeDir,
  '--model',
  modelDir(),
  '--jsonl-records',
  'contexts',
  '--jsonl-text-field',
  'paragraph_text',
  '--progress-interval',
  '100',
  file,
];

/** Checks that every committed document has all its chunks and their packets. Returns the document ids. */
async function checkCommittedDocuments(storeDir: string): Promise<string[]> {
  const catalog = Catalog.open(path.join(storeDir, 'catalog.sqlite'), { create: false, readonly: true });
  const packets = await FsPacketStore.open(path.join(storeDir, 'packets'));
  try {
    const documents = catalog.listDocuments();
    for (const document of documents) {
      const chunkIds = catalog.documentChunkIds(document.id);
      expect(chunkIds, document.id).toHaveLength(document.chunkCount);
      for (const id of chunkIds) {
        expect(catalog.hasChunk(id), `chunk ${id} of ${document.id}`).toBe(true);
        expect(await packets.has({ chunkId: id, adapterId: 'none', kind: 'full' }), `full packet of ${id}`).toBe(true);
        expect(await packets.has({ chunkId: id, adapterId: 'none', kind: 'summary' }), `summary packet of ${id}`).toBe(true);
        expect(await packets.has({ chunkId: id, adapterId: SHIPPED_ADAPTER, kind: 'full' }), `adapter packet of ${id}`).toBe(true);
        expect(await packets.has({ chunkId: id, adapterId: SHIPPED_ADAPTER, kind: 'summary' }), `adapter summary packet of ${id}`).toBe(true);
        expect(await packets.has({ chunkId: id, adapterId: `${SHIPPED_ADAPTER}-first`, kind: 'full' }), `first-slot packet of ${id}`).toBe(true);
      }
    }
    return documents.map((document) => document.id);
  } finally {
    catalog.close();
  }
}

/** Reads the finished store as a reader would, without repairs, and returns its document and chunk ids. */
async function checkFinishedStore(storeDir: string): Promise<{ documents: string[]; chunks: string[] }> {
  const catalog = Catalog.open(path.join(storeDir, 'catalog.sqlite'), { create: false, readonly: true });
  const packets = await FsPacketStore.open(path.join(storeDir, 'packets'));
  try {
    const chunks = [...catalog.iterateChunks()];
    const texts = new Set(chunks.map((chunk) => chunk.text));
    expect(texts.size, 'one row per distinct chunk text').toBe(chunks.length);
    const index = HnswIndex.load(path.join(storeDir, 'index'), { dimension: 1024 });
    expect(index.size).toBe(chunks.length);
    expect(index.liveLabels().sort((a, b) => a - b)).toEqual(chunks.map((chunk) => chunk.label).sort((a, b) => a - b));
    const adapter = resolveAdapter(undefined, expectedModelOf(engine)).vectors;
    expect(adapter?.id).toBe(SHIPPED_ADAPTER);
    expect(adapter?.firstSlot?.id).toBe(`${SHIPPED_ADAPTER}-first`);
    const adapters = [undefined, adapter, adapter?.firstSlot];
    for (const chunk of chunks) {
      for (const built of adapters) {
        for (const kind of ['full', 'summary'] as const) {
          const key = { chunkId: chunk.id, adapterId: built?.id ?? 'none', kind };
          await expect(packets.get(key, expectedFingerprints(engine, built)), `${kind} packet of ${chunk.id} for ${key.adapterId}`).resolves.toBeDefined();
        }
      }
    }
    // Naive, adapter and first-slot packets of every chunk and its summary, and nothing else.
    const keys = await packets.list();
    expect(keys).toHaveLength(6 * chunks.length);
    expect(packets.stats().tempFiles).toBe(0);
    expect(readdirSync(path.join(storeDir, 'index')).sort()).toEqual(['hnsw.bin', 'hnsw.json']);
    return { documents: catalog.listDocuments().map((document) => document.id), chunks: chunks.map((chunk) => chunk.id).sort() };
  } finally {
    catalog.close();
  }
}

describe('kvpack ingest resumability', () => {
  it('finishes after SIGKILL at several moments', { timeout: 300_000 }, async () => {
    const referenceDir = path.join(root, 'reference');
    const clean = await runCli(ingestArgs(referenceDir));
    expect(clean.code, clean.stderr).toBe(0);
    const reference = await checkFinishedStore(referenceDir);
    expect(reference.documents.length).toBeGreaterThan(40);

    const storeDir = path.join(root, 'killed');
    const killPoints: [string, (line: Record<string, unknown>) => boolean][] = [
      ['at the start', (line) => line.msg === 'ingest started'],
      ['after 10 documents', (line) => line.msg === 'ingest progress' && (line.done as { documents: number }).documents >= 10],
      ['after 25 documents', (line) => line.msg === 'ingest progress' && (line.done as { documents: number }).documents >= 25],
    ];
    let committed = 0;
    for (const [moment, killWhen] of killPoints) {
      const killed = await runCli(ingestArgs(storeDir), killWhen);
      expect(killed.signal, `killed ${moment}: ${killed.stderr.slice(-500)}`).toBe('SIGKILL');
      const documents = await checkCommittedDocuments(storeDir);
      expect(documents.length).toBeGreaterThanOrEqual(committed);
      expect(documents.length).toBeLessThan(reference.documents.length);
      committed = documents.length;
    }
    const rerun = await runCli(ingestArgs(storeDir));
    expect(rerun.code, rerun.stderr).toBe(0);
    expect(rerun.stdout).toMatch(new RegExp(`^Documents: ${reference.documents.length - committed} added, 0 updated, ${committed} unchanged, 0 removed\\.`));
    const finished = await checkFinishedStore(storeDir);
    expect(finished.documents).toEqual(reference.documents);
    expect(finished.chunks).toEqual(reference.chunks);

    const again = await runCli(ingestArgs(storeDir));
    expect(again.stdout).toMatch(new RegExp(`^Documents: 0 added, 0 updated, ${reference.documents.length} unchanged, 0 removed\\.`));
  });

  it('refuses to run while another ingestion holds the lock', async () => {
    const storeDir = path.join(root, 'locked');
    const first = await runCli(ingestArgs(storeDir, smallCorpus));
    expect(first.code, first.stderr).toBe(0);
    const lock = await acquireStoreLock(storeDir, 'kvpack ingest');
    try {
      const second = await runCli(ingestArgs(storeDir, smallCorpus));
      expect(second.code).toBe(1);
      expect(second.stderr).toContain(`kvpack: The store ${storeDir} is locked by kvpack ingest (process ${process.pid} on `);
      expect(second.stderr).toContain('Wait for it to finish; a lock left by a process that died is taken over once it is stale. [STORE_LOCKED]');
    } finally {
      await lock.release();
    }
  });
});
