import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { encodePacket } from '../../../packets/codec.js';
import type { ExpectedFingerprints, PacketKey } from '../../../packets/packet.js';
import { FsPacketStore } from '../../../packets/store.js';
import {
  ADAPTER_FINGERPRINT,
  MODEL_FINGERPRINT,
  naivePacket,
  referencePacket,
  TOKENIZER_FINGERPRINT,
} from './fixtures.js';
import { rejection } from '../../helpers/errors.js';

const naiveExpected: ExpectedFingerprints = {
  modelFingerprint: MODEL_FINGERPRINT,
  tokenizerFingerprint: TOKENIZER_FINGERPRINT,
  adapterFingerprint: '',
};
const adapterExpected: ExpectedFingerprints = { ...naiveExpected, adapterFingerprint: ADAPTER_FINGERPRINT };

const key = (chunkId: string, kind: 'full' | 'summary' = 'full', adapterId = 'none'): PacketKey => ({ chunkId, adapterId, kind });

/** Returns the pid of a process that has already exited. */
function exitedPid(): number {
  const child = spawnSync(process.execPath, ['-e', '']);
  expect(child.pid).toBeGreaterThan(0);
  return child.pid as number;
}

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'kvpack-packet-store-'));
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('FsPacketStore', () => {
  it('puts and gets a packet', async () => {
    const store = await FsPacketStore.open(dir, { dtype: 'float32' });
    const packet = naivePacket('ab12cd', 24);
    await store.put(packet);

    const file = path.join(dir, 'none', 'ab', 'ab12cd.full.kvp');
    expect(existsSync(file)).toBe(true);
    expect(statSync(file).size).toBe(encodePacket(packet.header, packet.kv, 'float32').byteLength);
    const read = await store.get(key('ab12cd'), naiveExpected);
    expect(read.header.dtype).toBe('float32');
    expect(Array.from(read.kv.values[4])).toEqual(Array.from(packet.kv.values[4]));
    expect(Array.from(read.header.tokenIds)).toEqual(Array.from(packet.header.tokenIds));
  });

  it('stores the default dtype unless put names one', async () => {
    const store = await FsPacketStore.open(dir);
    await store.put(naivePacket('aa01', 8));
    await store.put(naivePacket('aa02', 8), 'int8');
    expect((await store.get(key('aa01'), naiveExpected)).header.dtype).toBe('float16');
    expect((await store.get(key('aa02'), naiveExpected)).header.dtype).toBe('int8');
  });

  it('has, delete and list', async () => {
    const store = await FsPacketStore.open(dir);
    expect(await store.list()).toEqual([]);
    await store.put(naivePacket('ff00', 4));
    await store.put({ ...naivePacket('ff00', 4), header: { ...naivePacket('ff00', 4).header, kind: 'summary' } });
    await store.put(referencePacket('0a1b', 6));

    expect(await store.has(key('ff00'))).toBe(true);
    expect(await store.has(key('ff00', 'summary'))).toBe(true);
    expect(await store.has(key('0a1b'))).toBe(false);
    expect(await store.has(key('0a1b', 'full', 'stories-v1'))).toBe(true);
    expect(await store.list()).toEqual([key('ff00'), key('ff00', 'summary'), key('0a1b', 'full', 'stories-v1')]);
    expect(store.stats().packets).toBe(3);

    expect(await store.delete(key('ff00'))).toBe(true);
    expect(await store.delete(key('ff00'))).toBe(false);
    expect(await store.has(key('ff00'))).toBe(false);
    expect(await store.list()).toEqual([key('ff00', 'summary'), key('0a1b', 'full', 'stories-v1')]);
    const missing = await rejection(store.get(key('ff00'), naiveExpected));
    expect(missing.code).toBe('PACKET_NOT_FOUND');
    expect(missing.message).toBe(
      `No full packet is stored for chunk ff00 and adapter none (looked for ${path.join(dir, 'none', 'ff', 'ff00.full.kvp')}). Compute and store it first.`,
    );
  });

  it('counts existing packets on open', async () => {
    const first = await FsPacketStore.open(dir);
    await first.put(naivePacket('aa01', 8));
    await first.put(naivePacket('bb02', 8));
    const bytes = first.stats().bytesOnDisk;
    expect(bytes).toBe(statSync(path.join(dir, 'none', 'aa', 'aa01.full.kvp')).size * 2);

    const second = await FsPacketStore.open(dir);
    expect(second.stats()).toMatchObject({ packets: 2, bytesOnDisk: bytes, tempFiles: 0 });
  });

  it('put of identical bytes leaves the file alone', async () => {
    const store = await FsPacketStore.open(dir);
    const packet = naivePacket('abcd', 8);
    await store.put(packet);
    const file = path.join(dir, 'none', 'ab', 'abcd.full.kvp');
    const before = statSync(file);
    await new Promise((resolve) => setTimeout(resolve, 20));
    await store.put(packet);
    expect(statSync(file).ino).toBe(before.ino);
    expect(statSync(file).mtimeMs).toBe(before.mtimeMs);
  });

  it('put of a new packet replaces the old one', async () => {
    const store = await FsPacketStore.open(dir, { dtype: 'float32' });
    await store.put(naivePacket('abcd', 8, 1));
    expect((await store.get(key('abcd'), naiveExpected)).kv.keys[0][0]).toBe(naivePacket('abcd', 8, 1).kv.keys[0][0]);

    const fresh = naivePacket('abcd', 8, 99);
    await store.put(fresh);
    expect((await store.get(key('abcd'), naiveExpected)).kv.keys[0][0]).toBe(fresh.kv.keys[0][0]);
    expect(readdirSync(path.join(dir, 'none', 'ab'))).toEqual(['abcd.full.kvp']);
    expect(store.stats().packets).toBe(1);
  });
});

describe('FsPacketStore cache', () => {
  it('serves repeated reads from memory', async () => {
    const store = await FsPacketStore.open(dir);
    await store.put(naivePacket('abcd', 8));
    const first = await store.get(key('abcd'), naiveExpected);
    const second = await store.get(key('abcd'), naiveExpected);
    expect(second).toBe(first);
    expect(store.stats()).toMatchObject({ cacheHits: 1, cacheMisses: 1, cacheEntries: 1 });
    expect(store.stats().cacheBytes).toBe(first.kv.byteLength + first.header.tokenIds.byteLength);
  });

  it('evicts the least recently used packets by bytes', async () => {
    const entryBytes = naivePacket('aa00', 10).kv.byteLength + 40;
    const store = await FsPacketStore.open(dir, { cacheBytes: 2 * entryBytes + 10 });
    for (const chunkId of ['aa01', 'aa02', 'aa03']) await store.put(naivePacket(chunkId, 10));

    await store.get(key('aa01'), naiveExpected);
    await store.get(key('aa02'), naiveExpected);
    await store.get(key('aa01'), naiveExpected);
    expect(store.stats()).toMatchObject({ cacheEntries: 2, cacheBytes: 2 * entryBytes, cacheHits: 1, cacheMisses: 2 });

    // aa03 pushes out aa02, the least recently used.
    await store.get(key('aa03'), naiveExpected);
    await store.get(key('aa01'), naiveExpected);
    await store.get(key('aa02'), naiveExpected);
    expect(store.stats()).toMatchObject({ cacheEntries: 2, cacheHits: 2, cacheMisses: 4, cacheCapacityBytes: 2 * entryBytes + 10 });
  });

  it('does not cache a packet larger than the capacity', async () => {
    const store = await FsPacketStore.open(dir, { cacheBytes: 1000 });
    await store.put(naivePacket('abcd', 8));
    await store.get(key('abcd'), naiveExpected);
    await store.get(key('abcd'), naiveExpected);
    expect(store.stats()).toMatchObject({ cacheEntries: 0, cacheBytes: 0, cacheHits: 0, cacheMisses: 2 });
  });

  it('rejects an invalid cache size', async () => {
    const error = await rejection(FsPacketStore.open(dir, { cacheBytes: -1 }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe('Invalid packet cache size -1: use a whole number of bytes, 0 or more.');
  });
});

describe('FsPacketStore fingerprint checks', () => {
  const cases: [keyof ExpectedFingerprints, string, RegExp][] = [
    ['modelFingerprint', 'model', /run "kvpack ingest" again\) to replace it\.$/],
    ['tokenizerFingerprint', 'tokenizer', /run "kvpack ingest" again\) to replace it\.$/],
    ['adapterFingerprint', 'version of adapter "stories-v1"', /after changing adapter "stories-v1"\) to replace it\.$/],
  ];

  it.each(cases)('rejects another %s', async (field, what, fix) => {
    const store = await FsPacketStore.open(dir);
    await store.put(referencePacket('abcd', 8));
    const running = { ...adapterExpected, [field]: 'de'.repeat(32) };
    const file = path.join(dir, 'stories-v1', 'ab', 'abcd.full.kvp');
    const stored = adapterExpected[field].slice(0, 12);

    for (const attempt of ['file', 'cache']) {
      if (attempt === 'cache') await store.get(key('abcd', 'full', 'stories-v1'), adapterExpected);
      const error = await rejection(store.get(key('abcd', 'full', 'stories-v1'), running));
      expect(error.code).toBe('PACKET_MISMATCH');
      expect(error.message.startsWith(
        `Packet file ${file} was built for another ${what}: its ${field} is ${stored} but the running one is dededededede. It is never spliced; `,
      )).toBe(true);
      expect(error.message).toMatch(fix);
      expect(error.status).toBe(409);
    }
    expect(store.stats().mismatchReads).toBe(2);
  });
});

describe('FsPacketStore corruption', () => {
  it('detects a flipped byte on disk', async () => {
    const store = await FsPacketStore.open(dir);
    await store.put(naivePacket('abcd', 16));
    await store.get(key('abcd'), naiveExpected);
    const file = path.join(dir, 'none', 'ab', 'abcd.full.kvp');
    const bytes = readFileSync(file);
    bytes[bytes.length - 7] ^= 0x10;
    writeFileSync(file, bytes);

    // The cached copy was verified when it was read, so only a fresh read detects the damage.
    store.clearCache();
    const error = await rejection(store.get(key('abcd'), naiveExpected));
    expect(error.code).toBe('PACKET_CORRUPT');
    expect(error.message).toMatch(new RegExp(`^Packet file ${file.replace(/[/.]/g, '\\$&')} is corrupt: payload checksum mismatch`));
    expect(store.stats().corruptReads).toBe(1);

    const reopened = await FsPacketStore.open(dir);
    await expect(reopened.get(key('abcd'), naiveExpected)).rejects.toThrow(/payload checksum mismatch/);
    expect(reopened.stats().corruptReads).toBe(1);
    expect(await reopened.has(key('abcd'))).toBe(true);

    // Recomputing and storing the packet replaces the corrupt file.
    await reopened.put(naivePacket('abcd', 16));
    expect((await reopened.get(key('abcd'), naiveExpected)).kv.length).toBe(16);
  });

  it('detects a truncated file', async () => {
    const store = await FsPacketStore.open(dir);
    await store.put(naivePacket('abcd', 16));
    const file = path.join(dir, 'none', 'ab', 'abcd.full.kvp');
    writeFileSync(file, readFileSync(file).subarray(0, 500));
    const error = await rejection(store.get(key('abcd'), naiveExpected));
    expect(error.code).toBe('PACKET_CORRUPT');
    expect(error.message).toMatch(/is corrupt: the file is truncated: it has 500 bytes, but its \d+-byte header ends at byte \d+/);
    expect(store.stats().corruptReads).toBe(1);
  });

  it('detects a file stored under another key', async () => {
    const store = await FsPacketStore.open(dir);
    await store.put(naivePacket('abcd', 4));
    const moved = path.join(dir, 'none', 'ab', 'abee.full.kvp');
    writeFileSync(moved, readFileSync(path.join(dir, 'none', 'ab', 'abcd.full.kvp')));
    const error = await rejection(store.get(key('abee'), naiveExpected));
    expect(error.code).toBe('PACKET_CORRUPT');
    expect(error.message).toMatch(/is corrupt: it is stored as none\/abee\/full but its header describes none\/abcd\/full/);
  });
});

describe('FsPacketStore temporary files', () => {
  it('ignores crash leftovers in list and removes them', async () => {
    const store = await FsPacketStore.open(dir);
    await store.put(naivePacket('abcd', 4));
    const folder = path.join(dir, 'none', 'ab');
    const leftover = path.join(folder, `abcd.full.kvp.tmp-${exitedPid()}-0badf00d`);
    const ownLeftover = path.join(folder, `abce.full.kvp.tmp-${process.pid}-12345678`);
    const running = path.join(folder, `abcf.full.kvp.tmp-${process.ppid}-87654321`);
    for (const file of [leftover, ownLeftover, running]) writeFileSync(file, 'partial');

    expect(await store.list()).toEqual([key('abcd')]);
    expect(store.stats()).toMatchObject({ packets: 1, tempFiles: 3 });

    expect(await store.cleanupTemp()).toBe(2);
    expect(existsSync(leftover)).toBe(false);
    expect(existsSync(ownLeftover)).toBe(false);
    // The parent of this test process is still running, so its file may still be in flight.
    expect(existsSync(running)).toBe(true);
    expect(store.stats().tempFiles).toBe(1);
  });

  it('ignores files outside the layout', async () => {
    const store = await FsPacketStore.open(dir);
    await store.put(naivePacket('abcd', 4));
    writeFileSync(path.join(dir, 'README'), 'notes');
    writeFileSync(path.join(dir, 'none', 'ab', 'abcd.other.kvp'), 'x');
    writeFileSync(path.join(dir, 'none', 'ab', 'cdef.full.kvp'), 'wrong shard');
    expect(await store.list()).toEqual([key('abcd')]);
  });
});

describe('FsPacketStore keys', () => {
  const invalid: [string, PacketKey, RegExp][] = [
    ['a parent folder chunk id', key('../../etc'), /^Invalid packet chunkId "..\/..\/etc": use 2 to 128 letters, digits, "_" or "-" \(no path separators or dots\)/],
    ['a path in the adapter id', key('abcd', 'full', 'x/../../y'), /^Invalid packet adapterId "x\/..\/..\/y"/],
    ['a dotted adapter id', key('abcd', 'full', '..'), /^Invalid packet adapterId "\.\."/],
    ['a one-character chunk id', key('a'), /^Invalid packet chunkId "a"/],
    ['an unknown kind', { chunkId: 'abcd', adapterId: 'none', kind: 'x' as 'full' }, /^Invalid packet kind "x": use one of full, summary\.$/],
  ];

  it.each(invalid)('rejects %s', async (_name, badKey, message) => {
    const store = await FsPacketStore.open(dir);
    for (const attempt of [store.get(badKey, naiveExpected), store.has(badKey), store.delete(badKey)]) {
      const error = await rejection(attempt);
      expect(error.code).toBe('INVALID_ARGUMENT');
      expect(error.message).toMatch(message);
    }
  });

  it('rejects a packet whose chunk id is a path', async () => {
    const store = await FsPacketStore.open(dir);
    const packet = naivePacket('abcd', 4);
    const error = await rejection(store.put({ ...packet, header: { ...packet.header, chunkId: '../escape' } }));
    expect(error.message).toMatch(/^Invalid packet chunkId "..\/escape"/);
    expect(readdirSync(dir)).toEqual([]);
  });
});
