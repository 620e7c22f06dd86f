import type { KvCache } from '../inference/kv-cache.js';

/** The version of the packet file layout that this code writes and the newest it reads. */
export const PACKET_FORMAT_VERSION = 1;

/**
 * Element type of the stored KV bytes. `float16` is IEEE 754 binary16; `int8` is symmetric
 * quantization with one float32 scale per (layer, key or value, KV head).
 */
export type PacketDtype = 'float32' | 'float16' | 'int8';
export const PACKET_DTYPES: readonly PacketDtype[] = ['float32', 'float16', 'int8'];

/** Content of a packet: `full` is the KV of the whole chunk and `summary` the KV of its extractive summary. */
export type PacketKind = 'full' | 'summary';
export const PACKET_KINDS: readonly PacketKind[] = ['full', 'summary'];

/**
 * Prefill method of a packet. `naive`: the chunk tokens alone. `reference`: learned header
 * vectors, the chunk tokens and learned trailer vectors, all kept in the cache. `conditioned`: a
 * learned header prefilled before the chunk and then dropped, so the cache holds only chunk entries.
 * `conditioned-kv`: the chunk prefilled after a learned header cache that is then dropped, laid
 * out like `conditioned`.
 */
export type PacketVariant = 'naive' | 'reference' | 'conditioned' | 'conditioned-kv';
export const PACKET_VARIANTS: readonly PacketVariant[] = ['naive', 'reference', 'conditioned', 'conditioned-kv'];

/** The adapter id of naive packets, which use no adapter. */
export const NO_ADAPTER = 'none';

/** Metadata of a stored packet: everything needed to check that it fits the running model and to splice it. */
export interface PacketHeader {
  formatVersion: number;
  /** sha256 hex over the model's config.json (which contains the RoPE settings) and ONNX weights. */
  modelFingerprint: string;
  /** sha256 hex over tokenizer.json and tokenizer_config.json. */
  tokenizerFingerprint: string;
  /** `none` for naive packets. */
  adapterId: string;
  /** sha256 hex of the adapter's learned vectors or header cache; empty for naive packets. */
  adapterFingerprint: string;
  variant: PacketVariant;
  chunkId: string;
  kind: PacketKind;
  /** Chunk or summary token ids `[tokens]`, without adapter entries. */
  tokenIds: Int32Array;
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  /** Cache entries: `prefixLength + tokenIds.length + suffixLength`. */
  tokenCount: number;
  /** Adapter entries before the tokens (the 8 header vectors of the reference variant). */
  prefixLength: number;
  /** Adapter entries after the tokens (the 8 trailer vectors of the reference variant). */
  suffixLength: number;
  /** Position the first cache entry's keys are rotated for; 0 for packets prefilled alone. */
  basePosition: number;
  /** Element type of the stored KV bytes; `float32` for a packet not read from a file. */
  dtype: PacketDtype;
  /** sha256 hex of the payload (int8 scales and KV bytes) as stored; empty for a packet not read from a file. */
  checksum: string;
  /** ISO 8601 time the packet was computed. */
  createdAt: string;
}

/** The header fields a caller supplies; the encoder derives the shapes from the cache and adds the rest. */
export type PacketDescription = Omit<
  PacketHeader,
  'formatVersion' | 'numLayers' | 'numKvHeads' | 'headDim' | 'tokenCount' | 'dtype' | 'checksum'
>;

/**
 * A packet in memory. The KV cache is always float32, whatever dtype the file stores. The store's
 * cache hands the same object to every reader, so callers must not write into its arrays.
 */
export interface Packet {
  header: PacketHeader;
  kv: KvCache;
}

/** Identity of a packet in a store: one file per chunk, adapter and kind. */
export interface PacketKey {
  chunkId: string;
  adapterId: string;
  kind: PacketKind;
}

/** Fingerprints of the running model, tokenizer and adapter that a packet must match to be spliced. */
export interface ExpectedFingerprints {
  modelFingerprint: string;
  tokenizerFingerprint: string;
  /** Empty for naive packets. */
  adapterFingerprint: string;
}

/**
 * Builds an in-memory packet from a freshly computed cache: shapes come from `kv`, the dtype is
 * `float32` and the checksum stays empty until the packet is stored.
 */
export function createPacket(description: PacketDescription, kv: KvCache): Packet {
  const header: PacketHeader = {
    ...description,
    formatVersion: PACKET_FORMAT_VERSION,
    numLayers: kv.layout.numLayers,
    numKvHeads: kv.layout.numKvHeads,
    headDim: kv.layout.headDim,
    tokenCount: kv.length,
    dtype: 'float32',
    checksum: '',
  };
  return { header, kv };
}

export function packetKeyOf(header: Pick<PacketHeader, 'chunkId' | 'adapterId' | 'kind'>): PacketKey {
  return { chunkId: header.chunkId, adapterId: header.adapterId, kind: header.kind };
}
