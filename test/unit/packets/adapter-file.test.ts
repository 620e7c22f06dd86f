import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isKvpackError } from '../../../common/errors.js';
import { KvCache, type KvLayout } from '../../../inference/kv-cache.js';
import {
  ADAPTER_FORMAT_VERSION,
  adapterFingerprint,
  adapterIdFromFile,
  chooseDefaultVariant,
  findDefaultAdapter,
  kvAdapterFingerprint,
  loadAdapter,
  makeAdapterVectors,
  makeKvAdapterVectors,
  readBareKvAdapter,
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

const headerLayout: KvLayout = { numLayers: 2, numKvHeads: 2, headDim: 4 };

/** Builds a conditioned-kv header cache of `length` entries per layer with distinct, reproducible values. */
function headerCache(length: number): KvCache {
  const size = headerLayout.numKvHeads * length * headerLayout.headDim;
  const layer = (index: number, offset: number) => Float32Array.from({ length: size }, (_, i) => offset + index + i / 64);
  const layers = Array.from({ length: headerLayout.numLayers }, (_, index) => index);
  return new KvCache(
    headerLayout,
    length,
    layers.map((index) => layer(index, 0)),
    layers.map((index) => layer(index, -0.5)),
  );
}

/** sha256 over `conditioned-kv\0`, `2,2,3,4\0`, then per layer the keys and the values of headerCache(3) as float32 little-endian. */
const CONDITIONED_KV_FINGERPRINT = 'a81315bcd4bee4b3ba7ce6e7d061b6e64f68c3bccefef8b804da2f5d5fecd171';

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

describe('adapter fingerprints', () => {
  // Computed before the conditioned-kv variant existed; stored packets and the shipped adapter record these values.
  it('keep the values of existing variants', () => {
    const header = Float32Array.from({ length: 8 }, (_, i) => i / 8);
    expect(adapterFingerprint('conditioned', header, new Float32Array(0))).toBe('3a1a978dbe88df7b02e285176d218497c1905892d337d1fd15c639f5b8093cf1');
    expect(adapterFingerprint('reference', header, Float32Array.of(0.5, -0.5, 1.5, -1.5))).toBe(
      'e9f81dbd9c7e1d1aa0a4adb309819d714b5759020fde099354c7b1ca032e3832',
    );
    expect(makeAdapterVectors('x', 'conditioned', header, new Float32Array(0), hidden).fingerprint).toBe(
      '3a1a978dbe88df7b02e285176d218497c1905892d337d1fd15c639f5b8093cf1',
    );
  });

  it('conditioned-kv depends on shape and every value', () => {
    const base = kvAdapterFingerprint(headerCache(3));
    expect(base).toBe(CONDITIONED_KV_FINGERPRINT);
    expect(makeKvAdapterVectors('kv', headerCache(3)).fingerprint).toBe(base);
    // The same floats as 2 KV heads of head size 4 or 1 KV head of head size 8.
    const reshaped = headerCache(3);
    const flat = new KvCache({ numLayers: 2, numKvHeads: 1, headDim: 8 }, 3, [...reshaped.keys], [...reshaped.values]);
    expect(kvAdapterFingerprint(flat)).not.toBe(base);
    for (const [layer, kind] of [[0, 'keys'], [1, 'keys'], [0, 'values'], [1, 'values']] as const) {
      const changed = headerCache(3);
      (changed[kind][layer] as Float32Array)[5] += 1e-6;
      expect(kvAdapterFingerprint(changed), `${kind} of layer ${layer}`).not.toBe(base);
    }
  });
});

describe('conditioned-kv adapter files', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'kvpack-adapter-kv-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const kvMetadata = (overrides: Partial<AdapterMetadata> = {}) => metadata({ id: 'tiny-kv', variant: 'conditioned-kv', ...overrides });
  const expected = { modelFingerprint, hiddenSize: hidden, kvLayout: headerLayout };

  /** Writes a file with conditioned-kv metadata and the given tensors. */
  function writeKvFile(name: string, tensors: Map<string, { shape: number[]; data: Float32Array }>): string {
    const file = path.join(dir, name);
    const strings = {
      format: 'kvpack-adapter',
      format_version: '1',
      id: 'tiny-kv',
      variant: 'conditioned-kv',
      model_fingerprint: modelFingerprint,
      hidden_size: String(hidden),
      training_data: '',
      created_at: '',
    };
    writeFileSync(file, encodeSafetensors(tensors, strings));
    return file;
  }

  const tensor = (shape: number[]) => ({ shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.25) });

  it('round-trips the header cache and metadata', () => {
    const file = path.join(dir, 'tiny-kv.safetensors');
    const vectors = makeKvAdapterVectors('tiny-kv', headerCache(3));
    writeAdapterFile(file, vectors, kvMetadata());
    const loaded = loadAdapter(file, expected);
    expect(loaded.vectors.variant).toBe('conditioned-kv');
    expect(loaded.vectors.fingerprint).toBe(vectors.fingerprint);
    expect(loaded.vectors.headerLength).toBe(3);
    expect(loaded.vectors.trailerLength).toBe(0);
    expect(loaded.vectors.header).toHaveLength(0);
    expect(loaded.vectors.trailer).toHaveLength(0);
    const cache = loaded.vectors.headerKv as KvCache;
    expect(cache.layout).toEqual(headerLayout);
    expect(cache.length).toBe(3);
    for (let layer = 0; layer < headerLayout.numLayers; layer++) {
      expect(cache.keys[layer], `keys of layer ${layer}`).toEqual(vectors.headerKv?.keys[layer]);
      expect(cache.values[layer], `values of layer ${layer}`).toEqual(vectors.headerKv?.values[layer]);
    }
    expect(loaded.metadata.variant).toBe('conditioned-kv');
    expect(loaded.metadata.hiddenSize).toBe(hidden);
    expect(loaded.metadata.gate).toEqual({ verdict: 'default', reason: 'beats naive' });
  });

  it('stores two 4-D tensors and the documented metadata', () => {
    const file = path.join(dir, 'tiny-kv.safetensors');
    writeAdapterFile(file, makeKvAdapterVectors('tiny-kv', headerCache(3)), kvMetadata());
    const stored = decodeSafetensors(readFileSync(file), file);
    expect([...stored.tensors.keys()].sort()).toEqual(['header_keys', 'header_values']);
    expect(stored.tensors.get('header_keys')?.shape).toEqual([2, 2, 3, 4]);
    expect(stored.tensors.get('header_values')?.shape).toEqual([2, 2, 3, 4]);
    // Layer 1 follows layer 0 along the first axis.
    expect(stored.tensors.get('header_values')?.data.subarray(24, 48)).toEqual(headerCache(3).values[1]);
    expect(stored.metadata.hidden_size).toBe(String(hidden));
    expect(Object.keys(stored.metadata).sort()).toEqual(
      ['created_at', 'format', 'format_version', 'gate', 'hidden_size', 'id', 'model_fingerprint', 'training_data', 'variant'].sort(),
    );
  });

  it('loads without a layout to check', () => {
    const file = path.join(dir, 'tiny-kv.safetensors');
    writeAdapterFile(file, makeKvAdapterVectors('tiny-kv', headerCache(2)), kvMetadata());
    expect(loadAdapter(file, { modelFingerprint, hiddenSize: hidden }).vectors.headerKv?.layout).toEqual(headerLayout);
  });

  it('rejects a header cache of another layout', () => {
    const file = path.join(dir, 'tiny-kv.safetensors');
    writeAdapterFile(file, makeKvAdapterVectors('tiny-kv', headerCache(3)), kvMetadata());
    const model = { ...expected, kvLayout: { numLayers: 5, numKvHeads: 4, headDim: 8 } };
    expectError(() => loadAdapter(file, model), 'ADAPTER_MISMATCH', 'shape [2, 2, 3, 4]', 'needs [5, 4, 3, 8]', 'belongs to another model');
  });

  it('is skipped by the default lookup for another layout', () => {
    writeAdapterFile(path.join(dir, 'tiny-kv.safetensors'), makeKvAdapterVectors('tiny-kv', headerCache(3)), kvMetadata({ fidelity: { data: 'test', byChunkCount: [], adapterMeanKl: 0.004, naiveMeanKl: 0.01 } }));
    expect(findDefaultAdapter(dir, expected).adapter?.vectors.variant).toBe('conditioned-kv');
    const found = findDefaultAdapter(dir, { ...expected, kvLayout: { numLayers: 3, numKvHeads: 2, headDim: 4 } });
    expect(found.adapter).toBeUndefined();
    expect(found.reason).toContain('built without adapter');
  });

  it.for([
    { name: 'no header_values', tensors: { header_keys: [2, 2, 3, 4] }, message: 'has no tensor named header_values; a conditioned-kv adapter needs F32 tensors header_keys and header_values of shape [layers, kv_heads, P, head_dim]' },
    { name: 'no header_keys', tensors: { header_values: [2, 2, 3, 4] }, message: 'has no tensor named header_keys' },
    { name: '3-D keys', tensors: { header_keys: [2, 6, 4], header_values: [2, 2, 3, 4] }, message: 'tensor header_keys has shape [2, 6, 4]; expected 4 axes [layers, kv_heads, P, head_dim]' },
    { name: '5-D values', tensors: { header_keys: [2, 2, 3, 4], header_values: [1, 2, 2, 3, 4] }, message: 'tensor header_values has shape [1, 2, 2, 3, 4]; expected 4 axes' },
    { name: 'different shapes', tensors: { header_keys: [2, 2, 3, 4], header_values: [2, 2, 2, 4] }, message: 'tensor header_keys has shape [2, 2, 3, 4] but header_values has [2, 2, 2, 4]; the keys and values of a header cache must have the same shape' },
    { name: 'P = 0', tensors: { header_keys: [2, 2, 0, 4], header_values: [2, 2, 0, 4] }, message: 'has shape [2, 2, 0, 4] with P = 0; a conditioned-kv adapter needs at least one header entry per layer' },
    { name: 'no layers', tensors: { header_keys: [0, 2, 3, 4], header_values: [0, 2, 3, 4] }, message: 'has shape [0, 2, 3, 4] with an empty axis; layers, kv_heads and head_dim must each be at least 1' },
    { name: 'embedding vectors too', tensors: { header: [1, hidden], header_keys: [2, 2, 3, 4], header_values: [2, 2, 3, 4] }, message: 'a conditioned-kv adapter has no input-embedding vectors, but the file holds tensor header; keep only header_keys and header_values' },
    {
      name: 'half a first-slot header',
      tensors: { header_keys: [2, 2, 3, 4], header_values: [2, 2, 3, 4], first_header_keys: [2, 2, 3, 4] },
      message: 'has no tensor named first_header_values; a first-slot header needs both first_header_keys and first_header_values of shape [layers, kv_heads, P, head_dim], or neither',
    },
  ])('rejects $name', ({ tensors, message }) => {
    const file = writeKvFile('bad.safetensors', new Map(Object.entries(tensors).map(([name, shape]) => [name, tensor(shape)])));
    expectError(() => loadAdapter(file, expected), 'ADAPTER_INVALID', file, message);
  });

  it('names every variant for an unknown one', () => {
    const file = path.join(dir, 'odd.safetensors');
    writeFileSync(file, encodeSafetensors(new Map([['header', tensor([1, hidden])]]), { format: 'kvpack-adapter', format_version: '1', id: 'odd', variant: 'prefix' }));
    expectError(() => loadAdapter(file, expected), 'ADAPTER_INVALID', 'variant "prefix" is not reference, conditioned or conditioned-kv');
  });

  it('rejects inconsistent adapters', () => {
    expectError(() => makeKvAdapterVectors('empty', headerCache(0)), 'INVALID_ARGUMENT', 'Adapter empty: a conditioned-kv header cache needs at least one entry per layer, got 0');
    expectError(
      () => makeAdapterVectors('kv', 'conditioned-kv', new Float32Array(hidden), new Float32Array(0), hidden),
      'INVALID_ARGUMENT',
      'a conditioned-kv adapter has a header cache instead of vectors; build it with makeKvAdapterVectors',
    );
    const file = path.join(dir, 'x.safetensors');
    const conditioned = makeAdapterVectors('x', 'conditioned', new Float32Array(hidden), new Float32Array(0), hidden);
    expectError(() => writeAdapterFile(file, conditioned, kvMetadata()), 'INVALID_ARGUMENT', 'the metadata names variant conditioned-kv but adapter x is conditioned');
    const noCache = { ...makeKvAdapterVectors('x', headerCache(2)), headerKv: undefined };
    expectError(() => writeAdapterFile(file, noCache, kvMetadata()), 'INVALID_ARGUMENT', 'Adapter x is conditioned-kv but has no header cache');
  });

  it('imports a bare header cache', () => {
    const bare = path.join(dir, 'bare.safetensors');
    const cache = headerCache(3);
    const stacked = (arrays: readonly Float32Array[]) => ({ shape: [2, 2, 3, 4], data: Float32Array.from(arrays.flatMap((array) => [...array])) });
    writeFileSync(bare, encodeSafetensors(new Map([['header_keys', stacked(cache.keys)], ['header_values', stacked(cache.values)]]), { note: 'ignored' }));
    const imported = readBareKvAdapter('bare', bare, headerLayout);
    expect(imported.headerLength).toBe(3);
    expect(imported.fingerprint).toBe(CONDITIONED_KV_FINGERPRINT);
    expect(imported.firstSlot).toBeUndefined();
    expectError(() => readBareKvAdapter('bare', bare, { numLayers: 2, numKvHeads: 4, headDim: 4 }), 'ADAPTER_MISMATCH', 'shape [2, 2, 3, 4]', 'needs [2, 4, 3, 4]');
    expectError(() => readBareVectors(bare, 'conditioned-kv', hidden), 'INVALID_ARGUMENT', 'read it with readBareKvAdapter');
    expectError(() => readBareKvAdapter('bare', path.join(dir, 'none.safetensors')), 'ADAPTER_NOT_FOUND', 'none.safetensors');
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
    expect(resolved.vectors?.id).toBe('stories260k-conditioned-kv');
    expect(resolved.reason).toMatch(/^Adapter stories260k-conditioned-kv \(conditioned-kv\) is the default/);
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
