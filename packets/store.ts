import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { isKvpackError, KvpackError } from '../common/errors.js';
import { fsyncFolder, isTempFileInFlight, writeFileAtomically } from './atomic-write.js';
import { decodePacket, encodePacket, short } from './codec.js';
import { ByteLruCache } from './lru-cache.js';
import { PACKET_DTYPES, packetKeyOf, type ExpectedFingerprints, type Packet, type PacketDtype, type PacketKey } from './packet.js';
import { packetFilePath, packetKeyString, sizeOf, validatePacketKey, walkStore, type StoreListing } from './store-layout.js';

export interface PacketStoreStats {
  /** Packet files on disk, as of the last `open`, `list` or write through this store. */
  packets: number;
  bytesOnDisk: number;
  /** Leftover temporary files of interrupted writes, as of the last `open`, `list` or `cleanupTemp`. */
  tempFiles: number;
  cacheEntries: number;
  cacheBytes: number;
  cacheCapacityBytes: number;
  cacheHits: number;
  cacheMisses: number;
  /** Reads that failed with PACKET_CORRUPT. */
  corruptReads: number;
  /** Reads that failed with PACKET_MISMATCH. */
  mismatchReads: number;
}

/**
 * Immutable KV packets by chunk, adapter and kind. A read verifies the packet's checksum and that
 * its fingerprints match the running model, tokenizer and adapter. On PACKET_CORRUPT or
 * PACKET_MISMATCH the caller recomputes the packet and `put`s it, which replaces the stored one.
 */
export interface PacketStore {
  /** Stores a packet under its header's key, replacing a different stored packet. */
  put(packet: Packet, dtype?: PacketDtype): Promise<void>;
  /** Reads a verified packet; throws PACKET_NOT_FOUND, PACKET_CORRUPT or PACKET_MISMATCH. */
  get(key: PacketKey, expected: ExpectedFingerprints): Promise<Packet>;
  has(key: PacketKey): Promise<boolean>;
  /** Removes a packet; returns false when none was stored. */
  delete(key: PacketKey): Promise<boolean>;
  list(): Promise<PacketKey[]>;
  stats(): PacketStoreStats;
}

export interface FsPacketStoreOptions {
  /** Maximum bytes of decoded float32 packets kept in memory. Default 256 MiB; 0 disables the cache. */
  cacheBytes?: number;
  /** Storage dtype of `put` when the call names none. Default `float16`. */
  dtype?: PacketDtype;
}

const DEFAULT_CACHE_BYTES = 256 * 1024 * 1024;

/**
 * A packet store in a folder: one file per packet at `<dir>/<adapterId>/<chunkId[0..2]>/<chunkId>.<kind>.kvp`
 * (format in docs/packet-format.md), written atomically, with a byte-bounded LRU cache of decoded
 * packets. Several processes may share the folder; the counts in `stats` cover only what this
 * instance saw since its last `list`.
 */
export class FsPacketStore implements PacketStore {
  readonly dir: string;
  readonly defaultDtype: PacketDtype;
  private readonly cache: ByteLruCache<Packet>;
  private readonly fileBytes = new Map<string, number>();
  private totalFileBytes = 0;
  private tempFileCount = 0;
  private corruptReads = 0;
  private mismatchReads = 0;

  private constructor(dir: string, options: Required<FsPacketStoreOptions>) {
    this.dir = dir;
    this.defaultDtype = options.dtype;
    this.cache = new ByteLruCache(options.cacheBytes);
  }

  /** Opens a store folder, creating it if needed, and counts the packets already in it. */
  static async open(dir: string, options: FsPacketStoreOptions = {}): Promise<FsPacketStore> {
    const store = new FsPacketStore(path.resolve(dir), validateOptions(options));
    await mkdir(store.dir, { recursive: true });
    await store.list();
    return store;
  }

  async put(packet: Packet, dtype: PacketDtype = this.defaultDtype): Promise<void> {
    const key = packetKeyOf(packet.header);
    validatePacketKey(key);
    const bytes = encodePacket(packet.header, packet.kv, dtype);
    const file = packetFilePath(this.dir, key);
    this.cache.delete(packetKeyString(key));
    if (await hasContent(file, bytes)) {
      return;
    }
    await writeFileAtomically(file, bytes);
    // A get that ran during the write may have cached the replaced packet.
    this.cache.delete(packetKeyString(key));
    this.recordFile(file, bytes.byteLength);
  }

  async get(key: PacketKey, expected: ExpectedFingerprints): Promise<Packet> {
    validatePacketKey(key);
    const file = packetFilePath(this.dir, key);
    const cached = this.cache.get(packetKeyString(key));
    if (cached) {
      this.checkFingerprints(cached, expected, file);
      return cached;
    }
    const packet = this.decodeCounted(await readPacketFile(file, key), file);
    this.checkStoredKey(packet, key, file);
    this.checkFingerprints(packet, expected, file);
    this.cache.set(packetKeyString(key), packet, packet.kv.byteLength + packet.header.tokenIds.byteLength);
    return packet;
  }

  async has(key: PacketKey): Promise<boolean> {
    validatePacketKey(key);
    return (await sizeOf(packetFilePath(this.dir, key))) !== undefined;
  }

  async delete(key: PacketKey): Promise<boolean> {
    validatePacketKey(key);
    const file = packetFilePath(this.dir, key);
    this.cache.delete(packetKeyString(key));
    this.recordFile(file, undefined);
    try {
      await rm(file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw error;
    }
    await fsyncFolder(path.dirname(file));
    return true;
  }

  /** Lists the stored packets by walking the folder, and refreshes the file counts of `stats`. */
  async list(): Promise<PacketKey[]> {
    const listing = await walkStore(this.dir);
    this.fileBytes.clear();
    this.totalFileBytes = 0;
    for (const packet of listing.packets) this.recordFile(packet.file, packet.bytes);
    this.tempFileCount = listing.tempFiles.length;
    return listing.packets.map((packet) => packet.key);
  }

  /**
   * Removes temporary files left by interrupted writes and returns how many were removed. A file
   * whose writer process is still running is kept, unless that process is this one and the file is
   * not being written (a pid reused after a crash).
   */
  async cleanupTemp(): Promise<number> {
    const listing: StoreListing = await walkStore(this.dir);
    let removed = 0;
    for (const temp of listing.tempFiles) {
      if (isLeftover(temp.file, temp.writerPid)) {
        await rm(temp.file, { force: true });
        removed += 1;
      }
    }
    this.tempFileCount = listing.tempFiles.length - removed;
    return removed;
  }

  /** Drops every decoded packet from memory; the next `get` of each reads and verifies its file. */
  clearCache(): void {
    this.cache.clear();
  }

  stats(): PacketStoreStats {
    return {
      packets: this.fileBytes.size,
      bytesOnDisk: this.totalFileBytes,
      tempFiles: this.tempFileCount,
      cacheEntries: this.cache.size,
      cacheBytes: this.cache.bytes,
      cacheCapacityBytes: this.cache.capacityBytes,
      cacheHits: this.cache.hits,
      cacheMisses: this.cache.misses,
      corruptReads: this.corruptReads,
      mismatchReads: this.mismatchReads,
    };
  }

  /** Updates the file counts of `stats` for a written (`bytes` set) or removed file. */
  private recordFile(file: string, bytes: number | undefined): void {
    this.totalFileBytes -= this.fileBytes.get(file) ?? 0;
    this.fileBytes.delete(file);
    if (bytes !== undefined) {
      this.fileBytes.set(file, bytes);
      this.totalFileBytes += bytes;
    }
  }

  private decodeCounted(bytes: Uint8Array, file: string): Packet {
    try {
      return decodePacket(bytes, file);
    } catch (error) {
      if (isKvpackError(error, 'PACKET_CORRUPT')) this.corruptReads += 1;
      throw error;
    }
  }

  /** Throws PACKET_CORRUPT when the header names another key than the file's place (a file copied or renamed by hand). */
  private checkStoredKey(packet: Packet, key: PacketKey, file: string): void {
    const stored = packetKeyOf(packet.header);
    if (packetKeyString(stored) !== packetKeyString(key)) {
      this.corruptReads += 1;
      throw new KvpackError(
        'PACKET_CORRUPT',
        `Packet file ${file} is corrupt: it is stored as ${packetKeyString(key)} but its header describes ${packetKeyString(stored)}. ` +
          'It is never spliced; recompute the packet (run "kvpack ingest" on its document again) to replace it.',
        { file, key, stored },
      );
    }
  }

  private checkFingerprints(packet: Packet, expected: ExpectedFingerprints, file: string): void {
    const mismatch = findFingerprintMismatch(packet, expected);
    if (!mismatch) {
      return;
    }
    this.mismatchReads += 1;
    throw new KvpackError(
      'PACKET_MISMATCH',
      `Packet file ${file} was built for another ${mismatch.what}: its ${mismatch.field} is ${short(mismatch.stored)} but the ` +
        `running one is ${short(mismatch.running)}. It is never spliced; ${mismatch.fix}`,
      { file, field: mismatch.field, stored: mismatch.stored, running: mismatch.running },
    );
  }
}

interface FingerprintMismatch {
  field: keyof ExpectedFingerprints;
  what: string;
  stored: string;
  running: string;
  fix: string;
}

function findFingerprintMismatch(packet: Packet, expected: ExpectedFingerprints): FingerprintMismatch | undefined {
  const { header } = packet;
  const rebuild = 'recompute it with the running model (run "kvpack ingest" again) to replace it.';
  const checks: FingerprintMismatch[] = [
    { field: 'modelFingerprint', what: 'model', stored: header.modelFingerprint, running: expected.modelFingerprint, fix: rebuild },
    { field: 'tokenizerFingerprint', what: 'tokenizer', stored: header.tokenizerFingerprint, running: expected.tokenizerFingerprint, fix: rebuild },
    {
      field: 'adapterFingerprint',
      what: `version of adapter "${header.adapterId}"`,
      stored: header.adapterFingerprint,
      running: expected.adapterFingerprint,
      fix: `recompute it with the running adapter (run "kvpack ingest" again after changing adapter "${header.adapterId}") to replace it.`,
    },
  ];
  return checks.find((check) => check.stored !== check.running);
}

function validateOptions(options: FsPacketStoreOptions): Required<FsPacketStoreOptions> {
  const cacheBytes = options.cacheBytes ?? DEFAULT_CACHE_BYTES;
  const dtype = options.dtype ?? 'float16';
  if (!Number.isSafeInteger(cacheBytes) || cacheBytes < 0) {
    throw new KvpackError('INVALID_ARGUMENT', `Invalid packet cache size ${cacheBytes}: use a whole number of bytes, 0 or more.`);
  }
  if (!PACKET_DTYPES.includes(dtype)) {
    throw new KvpackError('INVALID_ARGUMENT', `Invalid packet dtype ${JSON.stringify(dtype)}: use one of ${PACKET_DTYPES.join(', ')}.`);
  }
  return Object.freeze({ cacheBytes, dtype });
}

async function readPacketFile(file: string, key: PacketKey): Promise<Uint8Array> {
  try {
    return await readFile(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new KvpackError(
        'PACKET_NOT_FOUND',
        `No ${key.kind} packet is stored for chunk ${key.chunkId} and adapter ${key.adapterId} (looked for ${file}). Compute and store it first.`,
        { file, key },
      );
    }
    throw error;
  }
}

/** Checks whether `file` exists with exactly these bytes (a repeated `put` of the same packet). */
async function hasContent(file: string, bytes: Uint8Array): Promise<boolean> {
  if ((await sizeOf(file)) !== bytes.byteLength) {
    return false;
  }
  try {
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).equals(await readFile(file));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}

function isLeftover(file: string, writerPid: number): boolean {
  if (writerPid === process.pid) {
    return !isTempFileInFlight(file);
  }
  if (writerPid <= 0) {
    // kill(0) would probe this process group instead of one process.
    return true;
  }
  try {
    process.kill(writerPid, 0);
    return false;
  } catch (error) {
    // EPERM: the process exists but belongs to another user.
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
}
