import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isKvpackError } from '../../../common/errors.js';
import {
  ADAPTER_FORMAT_VERSION,
  adapterFingerprint,
  adapterIdFromFile,
  chooseDefaultVariant,
  findDefaultAdapter,
  loadAdapter,
  makeAdapterVectors,
  readBareVectors,
  resolveAdapter,
  shippedAdapterFolder,
  writeAdapterFile,
  type AdapterMetadata,
} from '../../../packets/adapter.js';
import { decodeSafetensors, encodeSafetensors } from '../../../packets/safetensors.js';
import { characterNames } from '../../../packets/training/samples.js';
import { readCorpusDocuments } from '../../../packets/training/corpus.js';

const hidden = 4;
const modelFingerprint = 'a'.repeat(64);

function metadata(overrides: Partial<AdapterMetadata> = {}): AdapterMetadata {
  return {
    formatVersion: ADAPTER_FORMAT_VERSION,
    id: 'tiny-conditioned',
    variant: 'conditioned',
    modelFingerprint,
    hiddenSize: hidden,
    trainingData: '8 train samples of 3 chunks',
    gate: { verdict: 'default', reason: 'beats naive' },
    createdAt: '2026-01-01T00:00:00.000Z',
    ...overrides,
  };
}

function expectError(run: () => unknown, code: string, ...fragments: string[]): void {
  try {
    run();
  } catch (error) {
    expect(isKvpackError(error)).toBe(true);
    expect((error as { code: string }).code).toBe(code);
    for (const fragment of fragments) expect((error as Error).message).toContain(fragment);
    return;
  }
  throw new Error(`expected ${code}`);
}

describe('safetensors', () => {
  it('round-trips tensors and metadata', () => {
    const tensors = new Map([
      ['header', { shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }],
      ['trailer', { shape: [0, 3], data: new Float32Array(0) }],
    ]);
    const bytes = encodeSafetensors(tensors, { note: 'hello' });
    const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect((8 + headerLength) % 8).toBe(0);
    const decoded = decodeSafetensors(bytes, 'memory');
    expect(decoded.metadata).toEqual({ note: 'hello' });
    expect(decoded.tensors.get('header')?.shape).toEqual([2, 3]);
    expect([...(decoded.tensors.get('header')?.data ?? [])]).toEqual([1, 2, 3, 4, 5, 6]);
    expect(decoded.tensors.get('trailer')?.data.length).toBe(0);
  });

  it('rejects a truncated file', () => {
    const bytes = encodeSafetensors(new Map([['header', { shape: [1, 2], data: Float32Array.of(1, 2) }]]), {});
    expectError(() => decodeSafetensors(bytes.subarray(0, bytes.length - 4), 'cut.safetensors'), 'ADAPTER_INVALID', 'cut.safetensors', 'header');
    expectError(() => decodeSafetensors(bytes.subarray(0, 5), 'tiny.safetensors'), 'ADAPTER_INVALID', 'fewer than the 8-byte header length');
  });

  it('rejects a non-F32 tensor', () => {
    const json = Buffer.from(JSON.stringify({ header: { dtype: 'F16', shape: [1, 2], data_offsets: [0, 4] } }));
    const bytes = new Uint8Array(8 + json.length + 4);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(json.length), true);
    bytes.set(json, 8);
    expectError(() => decodeSafetensors(bytes, 'half.safetensors'), 'ADAPTER_INVALID', 'dtype "F16"');
  });
});

describe('adapter files', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'kvpack-adapter-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('round-trips vectors and metadata', () => {
    const file = path.join(dir, 'tiny-conditioned.safetensors');
    const vectors = makeAdapterVectors('tiny-conditioned', 'conditioned', Float32Array.from({ length: 8 }, (_, i) => i / 8), new Float32Array(0), hidden);
    writeAdapterFile(file, vectors, metadata());
    const loaded = loadAdapter(file, { modelFingerprint, hiddenSize: hidden });
    expect(loaded.vectors.headerLength).toBe(2);
    expect(loaded.vectors.trailerLength).toBe(0);
    expect([...loaded.vectors.header]).toEqual([...vectors.header]);
    expect(loaded.vectors.fingerprint).toBe(vectors.fingerprint);
    expect(loaded.metadata.gate).toEqual({ verdict: 'default', reason: 'beats naive' });
    expect(loaded.metadata.trainingData).toBe('8 train samples of 3 chunks');
  });

  it('fingerprint depends on variant and vectors', () => {
    const header = Float32Array.of(1, 2, 3, 4);
    const base = adapterFingerprint('conditioned', header, new Float32Array(0));
    expect(adapterFingerprint('reference', header, new Float32Array(0))).not.toBe(base);
    expect(adapterFingerprint('conditioned', Float32Array.of(1, 2, 3, 5), new Float32Array(0))).not.toBe(base);
  });

  it('rejects another model with both fingerprints named', () => {
    const file = path.join(dir, 'a.safetensors');
    writeAdapterFile(file, makeAdapterVectors('a', 'conditioned', new Float32Array(4), new Float32Array(0), hidden), metadata({ id: 'a' }));
    const other = 'b'.repeat(64);
    expectError(() => loadAdapter(file, { modelFingerprint: other, hiddenSize: hidden }), 'ADAPTER_MISMATCH', modelFingerprint, other);
  });

  it('rejects vectors of another width', () => {
    const file = path.join(dir, 'a.safetensors');
    writeAdapterFile(file, makeAdapterVectors('a', 'conditioned', new Float32Array(4), new Float32Array(0), hidden), metadata({ id: 'a' }));
    expectError(() => loadAdapter(file, { modelFingerprint, hiddenSize: 8 }), 'ADAPTER_MISMATCH', '4 wide', 'hidden size is 8');
  });

  it('rejects a missing or foreign file', () => {
    expectError(() => loadAdapter(path.join(dir, 'none.safetensors'), { modelFingerprint, hiddenSize: hidden }), 'ADAPTER_NOT_FOUND', 'none.safetensors');
    const bare = path.join(dir, 'bare.safetensors');
    writeFileSync(bare, encodeSafetensors(new Map([['header', { shape: [1, hidden], data: new Float32Array(hidden) }]]), {}));
    expectError(() => loadAdapter(bare, { modelFingerprint, hiddenSize: hidden }), 'ADAPTER_INVALID', 'metadata format');
    const garbage = path.join(dir, 'garbage.safetensors');
    writeFileSync(garbage, 'not a safetensors file at all');
    expectError(() => loadAdapter(garbage, { modelFingerprint, hiddenSize: hidden }), 'ADAPTER_INVALID', 'garbage.safetensors');
  });

  it('reads bare vectors and rejects a trailer for conditioned', () => {
    const bare = path.join(dir, 'bare.safetensors');
    const tensors = new Map([
      ['header', { shape: [2, hidden], data: new Float32Array(2 * hidden).fill(1) }],
      ['trailer', { shape: [1, hidden], data: new Float32Array(hidden).fill(2) }],
    ]);
    writeFileSync(bare, encodeSafetensors(tensors, {}));
    const vectors = readBareVectors(bare, 'reference', hidden);
    expect(vectors.header.length).toBe(2 * hidden);
    expect([...vectors.trailer]).toEqual([2, 2, 2, 2]);
    expectError(() => readBareVectors(bare, 'conditioned', hidden), 'ADAPTER_INVALID', 'has no trailer');
  });

  it('keeps the documented metadata keys', () => {
    const file = path.join(dir, 'a.safetensors');
    writeAdapterFile(file, makeAdapterVectors('a', 'conditioned', new Float32Array(4), new Float32Array(0), hidden), metadata({ id: 'a' }));
    const { metadata: stored } = decodeSafetensors(readFileSync(file), file);
    expect(Object.keys(stored).sort()).toEqual(
      ['created_at', 'format', 'format_version', 'gate', 'hidden_size', 'id', 'model_fingerprint', 'training_data', 'variant'].sort(),
    );
  });

  it('derives ids from file names', () => {
    expect(adapterIdFromFile('/x/Stories260K-Conditioned.safetensors')).toBe('stories260k-conditioned');
    expect(adapterIdFromFile('my adapter!.safetensors')).toBe('my-adapter');
  });
});

describe('default adapter lookup', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'kvpack-adapters-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const fidelity = (adapterMeanKl: number) => ({ data: 'test', byChunkCount: [], adapterMeanKl, naiveMeanKl: 0.01 });
  const write = (name: string, overrides: Partial<AdapterMetadata>) =>
    writeAdapterFile(
      path.join(dir, `${name}.safetensors`),
      makeAdapterVectors(name, 'conditioned', new Float32Array(hidden), new Float32Array(0), hidden),
      metadata({ id: name, ...overrides }),
    );

  it('picks the passing adapter with the lowest KL', () => {
    write('good', { fidelity: fidelity(0.008) });
    write('better', { fidelity: fidelity(0.006) });
    write('failed', { fidelity: fidelity(0.004), gate: { verdict: 'rejected', reason: 'worse' } });
    write('other-model', { fidelity: fidelity(0.001), modelFingerprint: 'c'.repeat(64) });
    const found = findDefaultAdapter(dir, { modelFingerprint, hiddenSize: hidden });
    expect(found.adapter?.metadata.id).toBe('better');
    expect(found.reason).toContain('0.0060');
  });

  it('falls back to naive with a reason', () => {
    write('failed', { fidelity: fidelity(0.02), gate: { verdict: 'rejected', reason: 'worse' } });
    const found = findDefaultAdapter(dir, { modelFingerprint, hiddenSize: hidden });
    expect(found.adapter).toBeUndefined();
    expect(found.reason).toContain('built without adapter');
    expect(found.reason).toContain('failed.safetensors (did not beat naive concatenation)');
    expect(findDefaultAdapter(path.join(dir, 'none'), { modelFingerprint, hiddenSize: hidden }).reason).toContain('No adapter folder');
  });
});

describe('fidelity gate', () => {
  it('picks the adapter with the lowest KL when it beats naive', () => {
    const decision = chooseDefaultVariant([
      { name: 'naive', variant: 'naive', meanKl: 0.012 },
      { name: 'ref', variant: 'reference', meanKl: 0.018 },
      { name: 'cond', variant: 'conditioned', meanKl: 0.008 },
    ]);
    expect(decision.choice.name).toBe('cond');
    expect(decision.reason).toContain('0.0080');
    expect(decision.reason).toContain('0.0120');
  });

  it('keeps naive when no adapter beats it', () => {
    const decision = chooseDefaultVariant([
      { name: 'naive', variant: 'naive', meanKl: 0.012 },
      { name: 'ref', variant: 'reference', meanKl: 0.018 },
      { name: 'tie', variant: 'conditioned', meanKl: 0.012 },
    ]);
    expect(decision.choice.variant).toBe('naive');
    expect(decision.reason).toContain('No adapter beats naive concatenation');
  });

  it('requires the naive measurement', () => {
    expectError(() => chooseDefaultVariant([{ name: 'cond', variant: 'conditioned', meanKl: 0.001 }]), 'INVALID_ARGUMENT', 'naive');
  });
});

describe('training data helpers', () => {
  it('finds character names inside sentences', () => {
    const text = 'Once upon a time, there was a girl named Lily. She played with Tom. "Look!" said Max. Then they ran.';
    expect(characterNames(text).sort()).toEqual(['Lily', 'Max', 'Tom']);
  });

  it('reads text and JSONL corpora', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'kvpack-corpus-'));
    try {
      const text = path.join(dir, 'a.txt');
      writeFileSync(text, 'First document.\n\nSecond document.\n');
      const jsonl = path.join(dir, 'b.jsonl');
      writeFileSync(jsonl, '{"text": "Third."}\n"Fourth."\n{"contexts": [{"paragraph_text": "Fifth."}, {"paragraph_text": "Sixth."}]}\n');
      expect(readCorpusDocuments([text, jsonl])).toEqual(['First document.', 'Second document.', 'Third.', 'Fourth.', 'Fifth.', 'Sixth.']);
      const bad = path.join(dir, 'c.jsonl');
      writeFileSync(bad, '{"title": "no text"}\n');
      expectError(() => readCorpusDocuments([bad]), 'INVALID_ARGUMENT', 'c.jsonl:1', 'text, content or paragraph');
      expectError(() => readCorpusDocuments([path.join(dir, 'none.txt')]), 'INVALID_ARGUMENT', 'none.txt');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('resolveAdapter', () => {
  const shipped = path.join(shippedAdapterFolder(), 'stories260K-conditioned.safetensors');
  const shippedModel = () => {
    const { metadata: header } = decodeSafetensors(readFileSync(shipped), shipped);
    return { modelFingerprint: String(header.model_fingerprint), hiddenSize: Number(header.hidden_size) };
  };

  it('takes the shipped default', () => {
    const resolved = resolveAdapter(undefined, shippedModel());
    expect(resolved.vectors?.id).toBe('stories260k-conditioned');
    expect(resolved.reason).toMatch(/^Adapter stories260k-conditioned \(conditioned\) is the default/);
  });

  it('none disables adapters', () => {
    const resolved = resolveAdapter('none', shippedModel());
    expect(resolved.vectors).toBeUndefined();
    expect(resolved.reason).toBe('Adapters are disabled (--adapter none), so packet splices naive packets.');
  });

  it('loads an explicit file', () => {
    const resolved = resolveAdapter(shipped, shippedModel());
    expect(resolved.vectors?.variant).toBe('conditioned');
    expect(resolved.reason).toMatch(/from .*stories260K-conditioned\.safetensors; it beat naive concatenation/);
  });

  it('finds none for another model', () => {
    const resolved = resolveAdapter(undefined, { modelFingerprint: 'b'.repeat(64), hiddenSize: 64 });
    expect(resolved.vectors).toBeUndefined();
    expect(resolved.reason).toMatch(/^No adapter in .* beat naive concatenation for this model/);
  });
});
