import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isKvpackError } from '../../../common/errors.js';
import { SummaryOnlyChunkProcessor } from '../../../ingest/chunk-processor.js';
import { acquireStoreLock, LOCK_NAME, LOCK_OWNER_NAME } from '../../../ingest/lock.js';
import { runIngest, type IngestOptions } from '../../../ingest/pipeline.js';
import { ChunkStore } from '../../../ingest/store.js';
import { buildByteTokenizerFiles, writeTokenizerFiles } from '../../../inference/tokenizer-json.js';
import { Tokenizer } from '../../../inference/tokenizer.js';
import { HashedEmbedder } from '../../../retrieval/hashed-embedder.js';
import { INDEX_FILE, INDEX_META_FILE } from '../../../retrieval/hnsw-index.js';

// A real byte-level tokenizer (one token per UTF-8 byte) replaces a model's tokenizer. The model
// fingerprints are fixed strings because no packets are built here.
let tokenizer: Tokenizer;
let tokenizerDir: string;
const model = { modelFingerprint: 'a'.repeat(64), tokenizerFingerprint: 'b'.repeat(64) };

beforeAll(async () => {
  tokenizerDir = mkdtempSync(path.join(tmpdir(), 'kvpack-pipeline-tok-'));
  await writeTokenizerFiles(tokenizerDir, buildByteTokenizerFiles(512, { modelMaxLength: 512 }));
  tokenizer = await Tokenizer.fromFolder(tokenizerDir);
});
afterAll(() => rmSync(tokenizerDir, { recursive: true, force: true }));

let root: string;
let docs: string;
let storeDir: string;
beforeEach(() => {
  root = mkdtempSync(path.join(tmpdir(), 'kvpack-pipeline-'));
  docs = path.join(root, 'docs');
  storeDir = path.join(root, 'store');
  mkdirSync(docs);
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

function write(name: string, content: string | Buffer): string {
  const file = path.join(docs, name);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, content);
  return file;
}

function ingest(overrides: Partial<IngestOptions> = {}) {
  return runIngest({
    storeDir,
    paths: [docs],
    model: { ...model, tokenizer },
    createProcessor: (_packets, summary) => new SummaryOnlyChunkProcessor(tokenizer, summary),
    chunking: { targetTokens: 48, maxTokens: 64, overlapTokens: 0 },
    ...overrides,
  });
}

async function withStore<T>(work: (store: ChunkStore) => Promise<T> | T, embedder = new HashedEmbedder()): Promise<T> {
  const store = await ChunkStore.open(storeDir, { mode: 'read', embedder, model });
  try {
    return await work(store);
  } finally {
    await store.close();
  }
}

const storyA = 'The lighthouse keeper lit the lamp every night. Ships passed safely along the rocky coast.';
const storyB = 'A baker in the village made bread at dawn. The smell of fresh loaves filled the street.';

describe('runIngest', () => {
  it('skips empty, blank and unsupported files and goes on', async () => {
    write('empty.txt', '');
    write('blank.md', '  \n\t\n');
    write('photo.png', 'x');
    write('story.txt', storyA);
    const report = await ingest();
    expect(report.documents.added).toBe(1);
    expect(report.warnings.map((warning) => [warning.kind, path.basename(warning.source)])).toEqual([
      ['unsupported-file', 'photo.png'],
      ['empty-document', 'blank.md'],
      ['empty-document', 'empty.txt'],
    ]);
    await withStore((store) => expect(store.listDocuments().map((doc) => path.basename(doc.id))).toEqual(['story.txt']));
  });

  it('normalizes BOM, CRLF and invalid UTF-8', async () => {
    write('bom.txt', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('Line one.\r\nLine two.\r\n')]));
    const bad = write('bad.txt', Buffer.concat([Buffer.from('Good start '), Buffer.from([0xc3, 0x28]), Buffer.from(' end.')]));
    const report = await ingest();
    expect(report.warnings).toHaveLength(1);
    expect(report.warnings[0].message).toBe(`${bad} has 1 invalid UTF-8 sequence(s), replaced by U+FFFD, at byte offset(s) 11.`);
    await withStore(async (store) => {
      const texts = (await store.search('line', 10)).map((hit) => hit.text).sort();
      expect(texts).toEqual(['Good start \uFFFD( end.', 'Line one.\nLine two.']);
    });
  });

  it('changes nothing when the same folder is ingested twice', async () => {
    write('a.txt', storyA);
    write('sub/b.md', `# Bakery\n\n${storyB}`);
    const first = await ingest();
    expect(first.documents.added).toBe(2);
    const indexBytes = readFileSync(path.join(storeDir, 'index', INDEX_FILE));
    const generation = await withStore((store) => store.catalog.generation());
    const second = await ingest();
    expect(second.documents).toEqual({ added: 0, updated: 0, unchanged: 2, removed: 0 });
    expect(second.chunks).toEqual({ created: 0, reused: 0, removed: 0 });
    expect(readFileSync(path.join(storeDir, 'index', INDEX_FILE)).equals(indexBytes)).toBe(true);
    await withStore((store) => expect(store.catalog.generation()).toBe(generation));
  });

  it('stores identical files once', async () => {
    const one = write('one.txt', storyA);
    const two = write('copy/two.txt', storyA);
    const report = await ingest();
    expect(report.documents.added).toBe(2);
    expect(report.chunks.reused).toBe(report.chunks.created);
    await withStore(async (store) => {
      expect(store.catalog.chunkCount()).toBe(report.chunks.created);
      expect(store.index.size).toBe(report.chunks.created);
      const [hit] = await store.search('lighthouse keeper', 1);
      expect(hit.documentIds.sort()).toEqual([two, one].sort());
    });
  });

  it('replaces the chunks of a changed file', async () => {
    const file = write('a.txt', storyA);
    await ingest();
    const before = await withStore((store) => store.catalog.documentChunkIds(file));
    write('a.txt', storyB);
    const report = await ingest();
    expect(report.documents.updated).toBe(1);
    expect(report.chunks.removed).toBe(before.length);
    await withStore(async (store) => {
      for (const id of before) expect(store.catalog.hasChunk(id)).toBe(false);
      expect(store.index.size).toBe(store.catalog.chunkCount());
      const [hit] = await store.search('baker bread', 1);
      expect(hit.text).toContain('baker');
      expect(hit.documentIds).toEqual([file]);
    });
  });

  it('prunes documents of deleted files only with prune', async () => {
    write('keep.txt', storyA);
    const gone = write('gone.txt', storyB);
    await ingest();
    rmSync(gone);
    const without = await ingest();
    expect(without.documents.removed).toBe(0);
    await withStore((store) => expect(store.catalog.getDocument(gone)).toBeDefined());
    const pruned = await ingest({ prune: true });
    expect(pruned.documents.removed).toBe(1);
    expect(pruned.chunks.removed).toBeGreaterThan(0);
    await withStore(async (store) => {
      expect(store.catalog.getDocument(gone)).toBeUndefined();
      expect(store.index.size).toBe(store.catalog.chunkCount());
      for (const hit of await store.search('baker', 10)) expect(hit.documentIds).not.toContain(gone);
    });
  });

  it('drops records removed from a JSON Lines file', async () => {
    const file = write('data.jsonl', [JSON.stringify({ title: 'A', text: storyA }), JSON.stringify({ title: 'B', text: storyB })].join('\n'));
    await ingest();
    write('data.jsonl', JSON.stringify({ title: 'A', text: storyA }));
    const report = await ingest();
    expect(report.documents).toEqual({ added: 0, updated: 0, unchanged: 1, removed: 1 });
    await withStore((store) => expect(store.listDocuments().map((doc) => doc.id)).toEqual([`${file}#1`]));
  });

  it('returns every chunk when k exceeds the corpus', async () => {
    write('a.txt', storyA);
    write('b.txt', storyB);
    await ingest();
    await withStore(async (store) => {
      const count = store.catalog.chunkCount();
      const hits = await store.search('bread', 1000);
      expect(hits).toHaveLength(count);
      expect(new Set(hits.map((hit) => hit.chunkId)).size).toBe(count);
      for (let i = 1; i < hits.length; i++) expect(hits[i].score).toBeLessThanOrEqual(hits[i - 1].score + 1e-6);
    });
  });

  it('records titles and spans', async () => {
    const file = write('doc.md', `# Harbor Notes\n\n${storyA}`);
    await ingest();
    await withStore(async (store) => {
      const [hit] = await store.search('lighthouse', 1);
      expect(hit.title).toBe('Harbor Notes');
      const text = readFileSync(file, 'utf8');
      expect(text.slice(hit.span.start, hit.span.end)).toBe(hit.text);
      const chunk = store.getChunk(hit.chunkId);
      expect(chunk.summaryText.length).toBeGreaterThan(0);
      expect(chunk.summaryTokens.length).toBeLessThanOrEqual(Math.floor(chunk.tokens.length / 2) + 2);
    });
  });

  it('rejects a store opened with another embedder', async () => {
    write('a.txt', storyA);
    await ingest();
    await expect(ChunkStore.open(storeDir, { mode: 'read', embedder: new HashedEmbedder({ dimension: 256 }) })).rejects.toThrow(
      /^The store .* was built with the hashed \(1024 dimensions, fingerprint [0-9a-f]{12}\) embedder, not the hashed \(256 dimensions/,
    );
    await expect(ingest({ embedder: new HashedEmbedder({ useIdf: false }) })).rejects.toSatisfy((error) => isKvpackError(error, 'STORE_MISMATCH'));
  });

  it('rejects another model or chunking', async () => {
    write('a.txt', storyA);
    await ingest();
    await expect(ingest({ model: { modelFingerprint: 'c'.repeat(64), tokenizerFingerprint: 'b'.repeat(64), tokenizer } })).rejects.toThrow(
      `The store ${storeDir} was built with model aaaaaaaaaaaa and tokenizer bbbbbbbbbbbb, not model cccccccccccc and tokenizer bbbbbbbbbbbb; ` +
        'pass the model folder the store was built with, or ingest into a new store.',
    );
    await expect(ingest({ chunking: { targetTokens: 32, maxTokens: 64, overlapTokens: 0 } })).rejects.toThrow(
      `The store ${storeDir} cuts chunks of 48/64 tokens with overlap 0 and summarizes with lead at ratio 0.5; omit the chunk and summary options to keep them, or ingest into a new store.`,
    );
    await expect(ingest({ summaryMethod: 'surprisal' })).rejects.toThrow('summarizes with lead at ratio 0.5');
  });

  it('rebuilds a damaged index at open', async () => {
    write('a.txt', storyA);
    write('b.txt', storyB);
    await ingest();
    const indexFile = path.join(storeDir, 'index', INDEX_FILE);
    const bytes = readFileSync(indexFile);
    bytes.fill(0x7f, 0, Math.min(64, bytes.length));
    writeFileSync(indexFile, bytes);
    await withStore(async (store) => {
      expect(store.index.size).toBe(store.catalog.chunkCount());
      const [hit] = await store.search('lighthouse keeper', 1);
      expect(hit.text).toContain('lighthouse');
    });
    // A write open repairs the files on disk too.
    const report = await ingest();
    expect(report.documents.unchanged).toBe(2);
    await withStore((store) => expect(store.index.size).toBe(store.catalog.chunkCount()));
  });

  it('adds chunks the saved index lacks', async () => {
    write('a.txt', storyA);
    await ingest();
    const metaFile = path.join(storeDir, 'index', INDEX_META_FILE);
    const staleMeta = readFileSync(metaFile);
    const staleIndex = readFileSync(path.join(storeDir, 'index', INDEX_FILE));
    write('b.txt', storyB);
    await ingest();
    // Put back the index saved before the second commit, as a crash before the save would leave it.
    writeFileSync(path.join(storeDir, 'index', INDEX_FILE), staleIndex);
    writeFileSync(metaFile, staleMeta);
    await withStore(async (store) => {
      expect(store.index.size).toBe(store.catalog.chunkCount());
      const [hit] = await store.search('baker bread', 1);
      expect(hit.text).toContain('baker');
    });
  });

  it('deletes a document', async () => {
    const a = write('a.txt', storyA);
    write('b.txt', storyB);
    await ingest();
    const store = await ChunkStore.open(storeDir, { mode: 'write', model });
    try {
      await store.deleteDocument(a);
      expect(store.catalog.getDocument(a)).toBeUndefined();
      expect(store.index.size).toBe(store.catalog.chunkCount());
      await expect(store.deleteDocument(a)).rejects.toThrow(`No document ${JSON.stringify(a)} in this store; list the stored documents to find its id.`);
    } finally {
      await store.close();
    }
  });

  it('reads while a writer holds the store', async () => {
    write('a.txt', storyA);
    await ingest();
    const writer = await ChunkStore.open(storeDir, { mode: 'write', model });
    try {
      await withStore(async (reader) => {
        const [hit] = await reader.search('lighthouse', 1);
        expect(hit.text).toContain('lighthouse');
      });
    } finally {
      await writer.close();
    }
  });

  it('throws for a missing store in read mode', async () => {
    await expect(ChunkStore.open(storeDir, { mode: 'read' })).rejects.toThrow(
      `No store at ${storeDir}: store.json is missing. Create one with \`kvpack ingest --store ${storeDir} PATH…\`.`,
    );
  });
});

describe('store lock', () => {
  it('refuses a second writer', async () => {
    write('a.txt', storyA);
    await ingest();
    const lock = await acquireStoreLock(storeDir, 'test holder');
    try {
      await expect(ingest()).rejects.toThrow(
        new RegExp(
          `^The store ${storeDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is locked by test holder \\(process ${process.pid} on .+, since .+\\)\\. ` +
            'Wait for it to finish; a lock left by a process that died is taken over once it is stale\\.$',
        ),
      );
    } finally {
      await lock.release();
    }
    await expect(ingest()).resolves.toMatchObject({ documents: { unchanged: 1 } });
  });

  it('takes over the lock of a dead process', async () => {
    write('a.txt', storyA);
    await ingest();
    // A lock folder and owner file as a killed ingestion leaves them, with a pid that cannot exist.
    mkdirSync(path.join(storeDir, LOCK_NAME));
    const owner = { pid: 2 ** 22 + 12345, hostname: (await import('node:os')).hostname(), acquiredAt: new Date().toISOString(), purpose: 'kvpack ingest' };
    writeFileSync(path.join(storeDir, LOCK_OWNER_NAME), JSON.stringify(owner));
    const report = await ingest();
    expect(report.documents.unchanged).toBe(1);
    expect(existsSync(path.join(storeDir, LOCK_NAME))).toBe(false);
    expect(existsSync(path.join(storeDir, LOCK_OWNER_NAME))).toBe(false);
  });

  it('takes over a stale lock without an owner', async () => {
    write('a.txt', storyA);
    await ingest();
    const lockDir = path.join(storeDir, LOCK_NAME);
    mkdirSync(lockDir);
    const old = new Date(Date.now() - 10 * 60_000);
    const { utimesSync } = await import('node:fs');
    utimesSync(lockDir, old, old);
    await expect(ingest({ lock: { staleMs: 60_000 } })).resolves.toMatchObject({ documents: { unchanged: 1 } });
  });
});
