import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { KvpackError } from '../common/errors.js';
import { PACKET_KINDS, type PacketKey, type PacketKind } from './packet.js';

// Where the filesystem store keeps each packet: <root>/<adapterId>/<first 2 chars of chunkId>/<chunkId>.<kind>.kvp.
// The two-character shard folder keeps folders small when chunk ids are hashes.

export const PACKET_FILE_EXTENSION = '.kvp';
const SAFE_ID = /^[A-Za-z0-9_-]+$/;
const MAX_ID_LENGTH = 128;
const PACKET_FILE_NAME = /^([A-Za-z0-9_-]+)\.([a-z]+)\.kvp$/;
const TEMP_FILE_NAME = /\.kvp\.tmp-(\d+)-[0-9a-f]+$/;

/**
 * Throws INVALID_ARGUMENT unless every part of the key is safe to use as a file name: ids of
 * letters, digits, "_" and "-" only (so no path separator or "..") and a known kind.
 */
export function validatePacketKey(key: PacketKey): void {
  validateId('chunkId', key.chunkId, 2);
  validateId('adapterId', key.adapterId, 1);
  if (!PACKET_KINDS.includes(key.kind)) {
    throw new KvpackError('INVALID_ARGUMENT', `Invalid packet kind ${JSON.stringify(key.kind)}: use one of ${PACKET_KINDS.join(', ')}.`);
  }
}

function validateId(field: 'chunkId' | 'adapterId', value: unknown, minLength: number): void {
  if (typeof value !== 'string' || value.length < minLength || value.length > MAX_ID_LENGTH || !SAFE_ID.test(value)) {
    throw new KvpackError(
      'INVALID_ARGUMENT',
      `Invalid packet ${field} ${JSON.stringify(value)}: use ${minLength} to ${MAX_ID_LENGTH} letters, digits, "_" or "-" ` +
        '(no path separators or dots), for example the hex digest that ingest assigns.',
      { field, value },
    );
  }
}

export function packetFilePath(root: string, key: PacketKey): string {
  return path.join(root, key.adapterId, key.chunkId.slice(0, 2), `${key.chunkId}.${key.kind}${PACKET_FILE_EXTENSION}`);
}

/** Text form of a key, unique per key because ids contain no "/". */
export function packetKeyString(key: PacketKey): string {
  return `${key.adapterId}/${key.chunkId}/${key.kind}`;
}

export interface StoredFile {
  file: string;
  bytes: number;
}

export interface StoreListing {
  packets: (StoredFile & { key: PacketKey })[];
  /** Leftovers of interrupted writes: `<packet file>.tmp-<pid>-<random hex>`. */
  tempFiles: (StoredFile & { writerPid: number })[];
}

/**
 * Walks the store folder. Files and folders that do not follow the layout (including a packet
 * file in the wrong shard folder) are ignored.
 */
export async function walkStore(root: string): Promise<StoreListing> {
  const listing: StoreListing = { packets: [], tempFiles: [] };
  for (const adapterId of await subfolders(root)) {
    for (const shard of await subfolders(path.join(root, adapterId))) {
      const folder = path.join(root, adapterId, shard);
      for (const name of await readdir(folder)) {
        await addFile(listing, folder, name, { adapterId, shard });
      }
    }
  }
  listing.packets.sort((a, b) => a.file.localeCompare(b.file));
  return listing;
}

async function addFile(listing: StoreListing, folder: string, name: string, where: { adapterId: string; shard: string }): Promise<void> {
  const file = path.join(folder, name);
  const temp = TEMP_FILE_NAME.exec(name);
  if (temp) {
    const bytes = await sizeOf(file);
    if (bytes !== undefined) listing.tempFiles.push({ file, bytes, writerPid: Number(temp[1]) });
    return;
  }
  const match = PACKET_FILE_NAME.exec(name);
  if (!match || !PACKET_KINDS.includes(match[2] as PacketKind) || match[1].slice(0, 2) !== where.shard) {
    return;
  }
  const key: PacketKey = { chunkId: match[1], adapterId: where.adapterId, kind: match[2] as PacketKind };
  const bytes = await sizeOf(file);
  if (bytes !== undefined && isValidKey(key)) listing.packets.push({ file, bytes, key });
}

function isValidKey(key: PacketKey): boolean {
  try {
    validatePacketKey(key);
    return true;
  } catch {
    return false;
  }
}

async function subfolders(folder: string): Promise<string[]> {
  let entries;
  try {
    entries = await readdir(folder, { withFileTypes: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  return entries.filter((entry) => entry.isDirectory() && SAFE_ID.test(entry.name)).map((entry) => entry.name);
}

/** Size of a file in bytes, or undefined when it vanished (another process deleted or renamed it). */
export async function sizeOf(file: string): Promise<number | undefined> {
  try {
    return (await stat(file)).size;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}
