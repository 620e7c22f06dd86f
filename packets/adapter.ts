import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { KvpackError } from '../common/errors.js';
import { writeFileAtomic } from '../common/fs-atomic.js';
import { packageRoot } from '../common/paths.js';
import type { InferenceEngine } from '../inference/engine.js';
import type { KvCache, KvLayout } from '../inference/kv-cache.js';
import { FIRST_SLOT_PREFIX, headerKvTensors, readFirstSlotHeaderKv, readHeaderKv } from './adapter-header-kv.js';
import type { AdapterVariant, AdapterVectors } from './adapter-vectors.js';
import { decodeSafetensors, encodeSafetensors, type Float32Tensor } from './safetensors.js';

/**
 * Adapter files: the learned parameters of an adapter as a safetensors file (header and trailer
 * vectors, or the header cache of a conditioned-kv adapter), with what they were trained for and
 * how well they did in `__metadata__`. `docs/adapters.md` documents the layout.
 */

export const ADAPTER_FORMAT = 'kvpack-adapter';
export const ADAPTER_FORMAT_VERSION = 1;
const variants: readonly AdapterVariant[] = ['reference', 'conditioned', 'conditioned-kv'];

/** Fidelity numbers recorded in an adapter file, as `FidelityReport` computes them. */
export interface RecordedFidelity {
  strategy: string;
  samples: number;
  meanKl: number;
  top1Agreement: number;
  exactMatch: number;
  meanMatchingPrefix: number;
}

/** Held-out fidelity of the adapter and of naive concatenation on the same samples. */
export interface HeldOutFidelity {
  /** Description of the held-out samples. */
  data: string;
  /** One entry per chunk count. */
  byChunkCount: Array<{ chunks: number; adapter: RecordedFidelity; naive: RecordedFidelity }>;
  /** Mean KL over every held-out sample, in nats. */
  adapterMeanKl: number;
  naiveMeanKl: number;
}

/** The fidelity gate's decision for this adapter. */
export interface GateRecord {
  /** `default`: the adapter beat naive concatenation on held-out data and may be the model's default. */
  verdict: 'default' | 'rejected';
  reason: string;
}

export interface TrainingRecord {
  steps: number;
  bestStep: number;
  batchSize: number;
  learningRate: number;
  schedule: string;
  init: string;
  seed: number;
  weightDecay: number;
  durationMs: number;
}

export interface LossCurveSummary {
  initialValidationKl: number;
  bestValidationKl: number;
  /** `[step, mean training KL since the previous point, validation KL]`, at most 50 points. */
  points: Array<[number, number, number]>;
}

export interface AdapterMetadata {
  formatVersion: number;
  id: string;
  variant: AdapterVariant;
  modelFingerprint: string;
  hiddenSize: number;
  /** One line on the data the vectors were trained on, or where they were imported from. */
  trainingData: string;
  training?: TrainingRecord;
  lossCurve?: LossCurveSummary;
  fidelity?: HeldOutFidelity;
  gate?: GateRecord;
  createdAt: string;
}

export interface AdapterFile {
  vectors: AdapterVectors;
  metadata: AdapterMetadata;
}

/** sha256 over the variant and the vector bytes, as packets record it. */
export function adapterFingerprint(variant: AdapterVariant, header: Float32Array, trailer: Float32Array): string {
  const hash = createHash('sha256');
  hash.update(`${variant}\0`);
  hash.update(bytesOf(header));
  hash.update('\0');
  hash.update(bytesOf(trailer));
  return hash.digest('hex');
}

/**
 * sha256 over the variant `conditioned-kv`, the header cache's shape `layers,kv_heads,P,head_dim`
 * and each layer's key bytes then value bytes, as packets record it.
 */
export function kvAdapterFingerprint(headerKv: KvCache): string {
  const { numLayers, numKvHeads, headDim } = headerKv.layout;
  const hash = createHash('sha256');
  hash.update(`conditioned-kv\0${numLayers},${numKvHeads},${headerKv.length},${headDim}\0`);
  for (let layer = 0; layer < numLayers; layer++) {
    hash.update(bytesOf(headerKv.keys[layer]));
    hash.update(bytesOf(headerKv.values[layer]));
  }
  return hash.digest('hex');
}

function bytesOf(array: Float32Array): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}

/** Turns a file name into an adapter id: lowercase letters, digits, '-' and '_'. */
export function adapterIdFromFile(file: string): string {
  const stem = path.basename(file).replace(/\.safetensors$/i, '');
  const id = stem.toLowerCase().replace(/[^a-z0-9_-]+/g, '-').replace(/^-+|-+$/g, '');
  return id.length > 0 ? id : 'adapter';
}

/** Builds a reference or conditioned adapter from its vectors. */
export function makeAdapterVectors(id: string, variant: AdapterVariant, header: Float32Array, trailer: Float32Array, hiddenSize: number): AdapterVectors {
  if (variant === 'conditioned-kv') {
    throw new KvpackError(
      'INVALID_ARGUMENT',
      `Adapter ${id}: a conditioned-kv adapter has a header cache instead of vectors; build it with makeKvAdapterVectors.`,
    );
  }
  return {
    id,
    fingerprint: adapterFingerprint(variant, header, trailer),
    variant,
    header,
    headerLength: header.length / hiddenSize,
    trailer,
    trailerLength: trailer.length / hiddenSize,
  };
}

/**
 * Builds a conditioned-kv adapter from its header cache: per layer `[1, kv_heads, P, head_dim]`
 * keys (rotated for positions 0..P-1) and values, with P >= 1.
 */
export function makeKvAdapterVectors(id: string, headerKv: KvCache, firstSlotHeaderKv?: KvCache): AdapterVectors {
  if (headerKv.length < 1) {
    throw new KvpackError('INVALID_ARGUMENT', `Adapter ${id}: a conditioned-kv header cache needs at least one entry per layer, got ${headerKv.length}.`);
  }
  return {
    ...(firstSlotHeaderKv ? { firstSlot: makeKvAdapterVectors(`${id}-first`, firstSlotHeaderKv) } : {}),
    id,
    fingerprint: kvAdapterFingerprint(headerKv),
    variant: 'conditioned-kv',
    header: new Float32Array(0),
    headerLength: headerKv.length,
    trailer: new Float32Array(0),
    trailerLength: 0,
    headerKv,
  };
}

/**
 * Writes an adapter file atomically: tensors `header` and `trailer` `[count, hidden]`, or for
 * conditioned-kv `header_keys` and `header_values` `[layers, kv_heads, P, head_dim]`.
 */
export function writeAdapterFile(file: string, vectors: AdapterVectors, metadata: AdapterMetadata): void {
  const hidden = metadata.hiddenSize;
  if (metadata.variant !== vectors.variant) {
    throw new KvpackError(
      'INVALID_ARGUMENT',
      `Cannot write ${file}: the metadata names variant ${metadata.variant} but adapter ${vectors.id} is ${vectors.variant}; record the adapter's own variant.`,
    );
  }
  const tensors = vectors.variant === 'conditioned-kv' ? headerKvTensors(requireHeaderKv(vectors)) : vectorTensors(vectors, hidden);
  if (vectors.firstSlot) {
    for (const [name, tensor] of headerKvTensors(requireHeaderKv(vectors.firstSlot), FIRST_SLOT_PREFIX)) tensors.set(name, tensor);
  }
  const strings: Record<string, string> = {
    format: ADAPTER_FORMAT,
    format_version: String(metadata.formatVersion),
    id: metadata.id,
    variant: metadata.variant,
    model_fingerprint: metadata.modelFingerprint,
    hidden_size: String(hidden),
    training_data: metadata.trainingData,
    created_at: metadata.createdAt,
  };
  if (metadata.training) strings.training = JSON.stringify(metadata.training);
  if (metadata.lossCurve) strings.loss_curve = JSON.stringify(metadata.lossCurve);
  if (metadata.fidelity) strings.fidelity = JSON.stringify(metadata.fidelity);
  if (metadata.gate) strings.gate = JSON.stringify(metadata.gate);
  writeFileAtomic(file, encodeSafetensors(tensors, strings));
}

function vectorTensors(vectors: AdapterVectors, hidden: number): Map<string, Float32Tensor> {
  return new Map<string, Float32Tensor>([
    ['header', { shape: [vectors.headerLength, hidden], data: vectors.header }],
    ['trailer', { shape: [vectors.trailerLength, hidden], data: vectors.trailer }],
  ]);
}

function requireHeaderKv(vectors: AdapterVectors): KvCache {
  if (!vectors.headerKv) {
    throw new KvpackError(
      'INVALID_ARGUMENT',
      `Adapter ${vectors.id} is conditioned-kv but has no header cache; build it with makeKvAdapterVectors or load it with loadAdapter.`,
    );
  }
  return vectors.headerKv;
}

/** The model an adapter must fit. */
export interface ExpectedModel {
  modelFingerprint: string;
  hiddenSize: number;
  /** KV layout of the model; when given, a conditioned-kv header cache of another layout raises ADAPTER_MISMATCH. */
  kvLayout?: KvLayout;
}

/** Returns the expected model of a loaded engine, KV layout included. */
export function expectedModelOf(engine: Pick<InferenceEngine, 'modelFingerprint' | 'arch' | 'layout'>): ExpectedModel {
  return { modelFingerprint: engine.modelFingerprint, hiddenSize: engine.arch.hiddenSize, kvLayout: engine.layout };
}

/**
 * Reads an adapter file written by kvpack and checks that it was trained for this model.
 * Raises ADAPTER_NOT_FOUND, ADAPTER_INVALID for a malformed file, or ADAPTER_MISMATCH naming both
 * fingerprints when the adapter belongs to another model (or both shapes, when its vectors or
 * header cache do not fit the model's hidden size or `expected.kvLayout`).
 */
export function loadAdapter(file: string, expected: ExpectedModel): AdapterFile {
  const content = readSafetensorsFile(file);
  const meta = content.metadata;
  const invalid = (detail: string) =>
    new KvpackError('ADAPTER_INVALID', `${file} is not a kvpack adapter file: ${detail}. Train one with \`kvpack adapter train\` or import bare vectors with \`kvpack adapter import\`.`, { file });
  if (meta.format !== ADAPTER_FORMAT) {
    throw invalid(`its metadata format is ${JSON.stringify(meta.format)}, expected "${ADAPTER_FORMAT}"`);
  }
  const version = Number(meta.format_version);
  if (!Number.isInteger(version) || version < 1 || version > ADAPTER_FORMAT_VERSION) {
    throw invalid(`format_version ${JSON.stringify(meta.format_version)} is not one this kvpack reads (1 to ${ADAPTER_FORMAT_VERSION})`);
  }
  const variant = meta.variant as AdapterVariant;
  if (!variants.includes(variant)) {
    throw invalid(`variant ${JSON.stringify(meta.variant)} is not ${variants.slice(0, -1).join(', ')} or ${variants[variants.length - 1]}`);
  }
  if (!meta.id || !/^[a-z0-9_-]+$/.test(meta.id)) {
    throw invalid(`id ${JSON.stringify(meta.id)} must be lowercase letters, digits, '-' and '_'`);
  }
  if (meta.model_fingerprint !== expected.modelFingerprint) {
    throw new KvpackError(
      'ADAPTER_MISMATCH',
      `${file} was trained for model ${meta.model_fingerprint ?? '(none recorded)'} but the loaded model is ${expected.modelFingerprint}. ` +
        'Train an adapter for this model with `kvpack adapter train`, or import its vectors with `kvpack adapter import`.',
      { file, adapterModel: meta.model_fingerprint, model: expected.modelFingerprint },
    );
  }
  const vectors =
    variant === 'conditioned-kv'
      ? makeKvAdapterVectors(meta.id, readHeaderKv(content.tensors, file, expected.kvLayout), readFirstSlotHeaderKv(content.tensors, file, expected.kvLayout))
      : vectorAdapter(meta.id, variant, readVectors(content.tensors, expected.hiddenSize, file, variant), expected.hiddenSize);
  const metadata: AdapterMetadata = {
    formatVersion: version,
    id: meta.id,
    variant,
    modelFingerprint: meta.model_fingerprint,
    hiddenSize: expected.hiddenSize,
    trainingData: meta.training_data ?? '',
    training: parseJsonField<TrainingRecord>(meta, 'training', invalid),
    lossCurve: parseJsonField<LossCurveSummary>(meta, 'loss_curve', invalid),
    fidelity: parseJsonField<HeldOutFidelity>(meta, 'fidelity', invalid),
    gate: parseJsonField<GateRecord>(meta, 'gate', invalid),
    createdAt: meta.created_at ?? '',
  };
  return { vectors, metadata };
}

function vectorAdapter(id: string, variant: AdapterVariant, vectors: { header: Float32Array; trailer: Float32Array }, hiddenSize: number): AdapterVectors {
  return makeAdapterVectors(id, variant, vectors.header, vectors.trailer, hiddenSize);
}

/**
 * Reads the bare vectors of an adapter trained elsewhere: a safetensors file with an F32 tensor
 * `header` `[h, hidden]` and, for the reference variant, `trailer` `[t, hidden]`. Metadata is ignored.
 * A conditioned-kv adapter has no vectors: read it with `readBareKvAdapter`.
 */
export function readBareVectors(file: string, variant: AdapterVariant, hiddenSize: number): { header: Float32Array; trailer: Float32Array } {
  if (variant === 'conditioned-kv') {
    throw new KvpackError('INVALID_ARGUMENT', `${file}: a conditioned-kv adapter has a header cache instead of vectors; read it with readBareKvAdapter.`, { file });
  }
  return readVectors(readSafetensorsFile(file).tensors, hiddenSize, file, variant);
}

/**
 * Reads a bare conditioned-kv adapter trained elsewhere: a safetensors file with F32 tensors
 * `header_keys` and `header_values` `[layers, kv_heads, P, head_dim]`, keys rotated for positions
 * 0..P-1, and optionally the first-slot header `first_header_keys` and `first_header_values`.
 * Metadata is ignored. With `kvLayout`, a cache of another layout raises ADAPTER_MISMATCH.
 */
export function readBareKvAdapter(id: string, file: string, kvLayout?: KvLayout): AdapterVectors {
  const { tensors } = readSafetensorsFile(file);
  return makeKvAdapterVectors(id, readHeaderKv(tensors, file, kvLayout), readFirstSlotHeaderKv(tensors, file, kvLayout));
}

function readSafetensorsFile(file: string): ReturnType<typeof decodeSafetensors> {
  if (!existsSync(file)) {
    throw new KvpackError('ADAPTER_NOT_FOUND', `Adapter file not found: ${path.resolve(file)}.`, { file });
  }
  return decodeSafetensors(readFileSync(file), file);
}

function readVectors(
  tensors: Map<string, Float32Tensor>,
  hiddenSize: number,
  file: string,
  variant: AdapterVariant,
): { header: Float32Array; trailer: Float32Array } {
  const header = tensors.get('header');
  if (!header) {
    throw new KvpackError('ADAPTER_INVALID', `${file} has no tensor named header; an adapter needs header [h, hidden] F32 vectors.`, { file });
  }
  const trailer = tensors.get('trailer') ?? { shape: [0, hiddenSize], data: new Float32Array(0) };
  for (const [name, tensor] of [['header', header], ['trailer', trailer]] as const) {
    if (tensor.shape.length !== 2) {
      throw new KvpackError('ADAPTER_INVALID', `${file}: tensor ${name} has shape [${tensor.shape.join(', ')}]; expected [count, hidden].`, { file });
    }
    if (tensor.shape[1] !== hiddenSize) {
      throw new KvpackError(
        'ADAPTER_MISMATCH',
        `${file}: tensor ${name} has vectors ${tensor.shape[1]} wide but the model's hidden size is ${hiddenSize}; the adapter belongs to another model.`,
        { file, width: tensor.shape[1], hiddenSize },
      );
    }
  }
  if (header.shape[0] === 0) {
    throw new KvpackError('ADAPTER_INVALID', `${file}: tensor header is empty; an adapter needs at least one header vector.`, { file });
  }
  if (variant === 'conditioned' && trailer.shape[0] > 0) {
    throw new KvpackError(
      'ADAPTER_INVALID',
      `${file}: a conditioned adapter has no trailer, but tensor trailer holds ${trailer.shape[0]} vectors; use the reference variant for header and trailer.`,
      { file },
    );
  }
  return { header: header.data, trailer: trailer.data };
}

function parseJsonField<T>(meta: Record<string, string>, key: string, invalid: (detail: string) => KvpackError): T | undefined {
  const text = meta[key];
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as T;
  } catch (error) {
    throw invalid(`metadata ${key} is not JSON (${(error as Error).message})`);
  }
}

/** A zero-recompute way to build packets and its held-out KL, as the fidelity gate compares them. */
export interface GateCandidate {
  /** `naive`, or an adapter's id. */
  name: string;
  variant: 'naive' | AdapterVariant;
  /** Mean held-out KL to full prefill, in nats. */
  meanKl: number;
}

export interface GateDecision {
  choice: GateCandidate;
  /** One sentence for stats and logs on why this candidate is the default. */
  reason: string;
}

/**
 * Applies the fidelity gate: among naive concatenation and the adapter variants (none of which
 * recomputes a chunk token), picks the one with the lowest held-out KL. An adapter wins only by
 * beating naive concatenation outright, so a tie keeps naive as the default.
 */
export function chooseDefaultVariant(candidates: readonly GateCandidate[]): GateDecision {
  const naive = candidates.find((candidate) => candidate.variant === 'naive');
  if (!naive) {
    throw new KvpackError('INVALID_ARGUMENT', 'The fidelity gate needs the held-out KL of naive concatenation to compare adapters with.');
  }
  let best = naive;
  for (const candidate of candidates) {
    if (candidate.variant !== 'naive' && candidate.meanKl < best.meanKl) best = candidate;
  }
  const adapters = candidates.filter((candidate) => candidate.variant !== 'naive');
  if (best === naive) {
    const tried = adapters.map((a) => `${a.name} ${a.meanKl.toFixed(4)}`).join(', ') || 'none';
    return {
      choice: naive,
      reason: `No adapter beats naive concatenation on held-out data (naive KL ${naive.meanKl.toFixed(4)}; adapters: ${tried}), so packets are built without adapter.`,
    };
  }
  const recovered = naive.meanKl === 0 ? 0 : 1 - best.meanKl / naive.meanKl;
  return {
    choice: best,
    reason:
      `Adapter ${best.name} (${best.variant}) has the lowest held-out KL, ${best.meanKl.toFixed(4)} against naive concatenation's ` +
      `${naive.meanKl.toFixed(4)} (${(recovered * 100).toFixed(0)}% of the gap to full prefill closed), so it is the default.`,
  };
}

/** The default adapter of a model and why, for stats and logs. */
export interface DefaultAdapter {
  /** The adapter that packets are built with, or undefined for naive packets. */
  adapter?: AdapterFile;
  reason: string;
}

/**
 * Picks the model's default adapter among the `.safetensors` files of `folder` (such as the
 * repository's `adapters/`): files for other models are skipped, and of the adapters whose
 * recorded gate verdict is `default` the one with the lowest held-out KL wins. Without one, packets
 * are built without adapter (the best zero-recompute variant left), and the reason states it.
 */
export function findDefaultAdapter(folder: string, expected: ExpectedModel): DefaultAdapter {
  if (!existsSync(folder)) {
    return { reason: `No adapter folder at ${folder}, so packets are built without adapter (naive concatenation).` };
  }
  const candidates: AdapterFile[] = [];
  const rejected: string[] = [];
  for (const name of readdirSync(folder).filter((entry) => entry.endsWith('.safetensors')).sort()) {
    let file: AdapterFile;
    try {
      file = loadAdapter(path.join(folder, name), expected);
    } catch (error) {
      if (error instanceof KvpackError && error.code === 'ADAPTER_MISMATCH') continue;
      throw error;
    }
    if (file.metadata.gate?.verdict === 'default' && file.metadata.fidelity) {
      candidates.push(file);
    } else {
      rejected.push(`${name} (${file.metadata.gate ? 'did not beat naive concatenation' : 'no held-out evaluation recorded'})`);
    }
  }
  if (candidates.length === 0) {
    const detail = rejected.length > 0 ? ` Rejected: ${rejected.join(', ')}.` : '';
    return { reason: `No adapter in ${folder} beat naive concatenation for this model, so packets are built without adapter.${detail}` };
  }
  const best = candidates.reduce((a, b) => ((a.metadata.fidelity as HeldOutFidelity).adapterMeanKl <= (b.metadata.fidelity as HeldOutFidelity).adapterMeanKl ? a : b));
  const fidelity = best.metadata.fidelity as HeldOutFidelity;
  return {
    adapter: best,
    reason:
      `Adapter ${best.metadata.id} (${best.metadata.variant}) is the default: held-out KL ${fidelity.adapterMeanKl.toFixed(4)} against ` +
      `naive concatenation's ${fidelity.naiveMeanKl.toFixed(4)}.`,
  };
}

/** The adapter folder shipped with kvpack. */
export function shippedAdapterFolder(): string {
  return path.join(packageRoot, 'adapters');
}

/** The adapter the `packet` strategy splices with, and why, for logs and stats. */
export interface ResolvedAdapter {
  vectors?: AdapterVectors;
  reason: string;
}

/**
 * Resolves an `--adapter` choice: `none` disables adapters, a path loads that file (whatever its
 * gate verdict, which the reason then reports), and no choice takes the model's default among the
 * shipped adapters (`findDefaultAdapter`).
 */
export function resolveAdapter(choice: string | undefined, expected: ExpectedModel, folder: string = shippedAdapterFolder()): ResolvedAdapter {
  if (choice === 'none') {
    return { reason: 'Adapters are disabled (--adapter none), so packet splices naive packets.' };
  }
  if (choice !== undefined) {
    const file = loadAdapter(choice, expected);
    const verdict = file.metadata.gate?.verdict;
    const gate = verdict === 'default' ? 'it beat naive concatenation on held-out data' : 'its held-out gate verdict is not default';
    return { vectors: file.vectors, reason: `Adapter ${file.metadata.id} (${file.metadata.variant}) from ${choice}; ${gate}.` };
  }
  const found = findDefaultAdapter(folder, expected);
  return { vectors: found.adapter?.vectors, reason: found.reason };
}
