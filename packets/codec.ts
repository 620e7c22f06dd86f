import { createHash } from 'node:crypto';
import { Packr } from 'msgpackr';
import { KvpackError } from '../common/errors.js';
import { KvCache, type KvLayout } from '../inference/kv-cache.js';
import { decodeFloat16, dequantizeInt8, encodeFloat16, int8Scale, quantizeInt8 } from './dtype.js';
import { findHeaderProblem, fromWireHeader, toWireHeader } from './header.js';
import { PACKET_DTYPES, PACKET_FORMAT_VERSION, type Packet, type PacketDescription, type PacketDtype, type PacketHeader } from './packet.js';

// A packet file (docs/packet-format.md has the full layout):
//   prelude  44 bytes: magic "KVPK", u32 LE format version, u32 LE header length, sha256 of the header
//   header   MessagePack map (standard types only)
//   padding  zero bytes up to the next multiple of 8
//   payload  int8 scales (int8 only), then per layer: keys, values, each [kv_heads, tokens, head_dim]
// NOTE: typed-array views write and read the host's byte order, so the codec is little-endian only
// (as are x64 and arm64, where Node 20 ships prebuilt onnxruntime binaries).

const MAGIC = Uint8Array.from([0x4b, 0x56, 0x50, 0x4b]);
/** Bytes before the header; the same in every format version, so any reader can check the header hash. */
export const PRELUDE_BYTES = 44;
const PAYLOAD_ALIGNMENT = 8;

// Standard MessagePack maps, no msgpackr record extension, so any MessagePack reader can parse the header.
const packr = new Packr({ useRecords: false });

const ELEMENT_BYTES: Record<PacketDtype, number> = { float32: 4, float16: 2, int8: 1 };

export function elementBytes(dtype: PacketDtype): number {
  return ELEMENT_BYTES[dtype];
}

/** Bytes of stored keys and values per cache entry: 2 × layers × kv_heads × head_dim × element bytes. */
export function kvBytesPerToken(layout: KvLayout, dtype: PacketDtype): number {
  return 2 * layout.numLayers * layout.numKvHeads * layout.headDim * elementBytes(dtype);
}

/** Bytes of the int8 scale block: one float32 per layer × {key, value} × KV head; 0 for other dtypes. */
export function scaleBlockBytes(layout: KvLayout, dtype: PacketDtype): number {
  return dtype === 'int8' ? 2 * layout.numLayers * layout.numKvHeads * 4 : 0;
}

export function payloadByteLength(layout: KvLayout, tokenCount: number, dtype: PacketDtype): number {
  return scaleBlockBytes(layout, dtype) + tokenCount * kvBytesPerToken(layout, dtype);
}

/** Offset of the payload in a file whose header has `headerLength` bytes. */
export function payloadOffset(headerLength: number): number {
  return Math.ceil((PRELUDE_BYTES + headerLength) / PAYLOAD_ALIGNMENT) * PAYLOAD_ALIGNMENT;
}

/**
 * Encodes a packet file. The shapes and token count come from `kv`, and `description` supplies the
 * rest of the header. Throws INVALID_ARGUMENT when the description does not fit the cache, or when
 * int8 is requested for a cache that contains a NaN or an infinity.
 */
export function encodePacket(description: PacketDescription, kv: KvCache, dtype: PacketDtype): Uint8Array {
  if (!PACKET_DTYPES.includes(dtype)) {
    throw new KvpackError('INVALID_ARGUMENT', `Unknown packet dtype ${JSON.stringify(dtype)}; use one of ${PACKET_DTYPES.join(', ')}.`);
  }
  const payload = encodePayload(kv, dtype, description.chunkId);
  const header = describeStoredPacket(description, kv, dtype, sha256(payload));
  const headerBytes = packr.pack(toWireHeader(header));

  const offset = payloadOffset(headerBytes.byteLength);
  const file = new Uint8Array(offset + payload.byteLength);
  const prelude = new DataView(file.buffer);
  file.set(MAGIC, 0);
  prelude.setUint32(4, PACKET_FORMAT_VERSION, true);
  prelude.setUint32(8, headerBytes.byteLength, true);
  file.set(createHash('sha256').update(headerBytes).digest(), 12);
  file.set(headerBytes, PRELUDE_BYTES);
  file.set(payload, offset);
  return file;
}

function describeStoredPacket(description: PacketDescription, kv: KvCache, dtype: PacketDtype, checksum: string): PacketHeader {
  const header: PacketHeader = {
    formatVersion: PACKET_FORMAT_VERSION,
    modelFingerprint: description.modelFingerprint,
    tokenizerFingerprint: description.tokenizerFingerprint,
    adapterId: description.adapterId,
    adapterFingerprint: description.adapterFingerprint,
    variant: description.variant,
    chunkId: description.chunkId,
    kind: description.kind,
    tokenIds: description.tokenIds,
    numLayers: kv.layout.numLayers,
    numKvHeads: kv.layout.numKvHeads,
    headDim: kv.layout.headDim,
    tokenCount: kv.length,
    prefixLength: description.prefixLength,
    suffixLength: description.suffixLength,
    basePosition: description.basePosition,
    dtype,
    checksum,
    createdAt: description.createdAt,
  };
  const problem = findHeaderProblem(header);
  if (problem) {
    throw new KvpackError('INVALID_ARGUMENT', `Cannot encode the packet of chunk ${JSON.stringify(description.chunkId)}: ${problem}.`);
  }
  return header;
}

/** Writes the int8 scales (if any) and then each layer's keys and values in `dtype`. */
function encodePayload(kv: KvCache, dtype: PacketDtype, chunkId: string): Uint8Array {
  const { layout, length } = kv;
  const payload = new Uint8Array(payloadByteLength(layout, length, dtype));
  const blockFloats = layout.numKvHeads * length * layout.headDim;
  const base = scaleBlockBytes(layout, dtype);
  const scales = new Float32Array(payload.buffer, 0, base / 4);
  for (let layer = 0; layer < layout.numLayers; layer++) {
    for (const [kind, source] of [kv.keys[layer], kv.values[layer]].entries()) {
      const block = 2 * layer + kind;
      const byteOffset = base + block * blockFloats * elementBytes(dtype);
      if (dtype === 'float32') {
        new Float32Array(payload.buffer, byteOffset, blockFloats).set(source);
      } else if (dtype === 'float16') {
        encodeFloat16(source, new Uint16Array(payload.buffer, byteOffset, blockFloats));
      } else {
        encodeInt8Heads(source, layout, length, scales.subarray(block * layout.numKvHeads), new Int8Array(payload.buffer, byteOffset, blockFloats), chunkId);
      }
    }
  }
  return payload;
}

/** Quantizes one `[kv_heads, tokens, head_dim]` block with one scale per KV head. */
function encodeInt8Heads(source: Float32Array, layout: KvLayout, length: number, scales: Float32Array, target: Int8Array, chunkId: string): void {
  const headFloats = length * layout.headDim;
  for (let head = 0; head < layout.numKvHeads; head++) {
    const values = source.subarray(head * headFloats, (head + 1) * headFloats);
    const scale = int8Scale(values);
    if (Number.isNaN(scale)) {
      throw new KvpackError(
        'INVALID_ARGUMENT',
        `Cannot store the packet of chunk ${JSON.stringify(chunkId)} as int8: its KV cache contains a NaN or an infinity. Store it as float16 or float32, or check the model's output.`,
      );
    }
    scales[head] = scale;
    quantizeInt8(values, scale, target.subarray(head * headFloats, (head + 1) * headFloats));
  }
}

/**
 * Decodes and verifies a packet file; `source` names the file in error messages. Throws
 * PACKET_CORRUPT for a wrong magic number, a truncated or overlong file, a header or payload that
 * fails its sha256, or an invalid header field. Throws PACKET_VERSION_UNSUPPORTED for a file of a
 * newer format version. The fingerprints are not compared here: that is the caller's check.
 */
export function decodePacket(bytes: Uint8Array, source: string): Packet {
  const prelude = readPrelude(bytes, source);
  const header = readHeader(bytes, prelude, source);
  const payload = readPayload(bytes, header, prelude.headerLength, source);
  return { header, kv: decodePayload(payload, header) };
}

interface Prelude {
  version: number;
  headerLength: number;
}

/** Checks magic, header length and header hash, then the format version. */
function readPrelude(bytes: Uint8Array, source: string): Prelude {
  if (bytes.byteLength < PRELUDE_BYTES) {
    throw corrupt(source, `the file is truncated: it has ${bytes.byteLength} bytes, fewer than the ${PRELUDE_BYTES}-byte prelude`);
  }
  if (!MAGIC.every((byte, i) => bytes[i] === byte)) {
    const found = Buffer.from(bytes.subarray(0, 4)).toString('hex');
    throw corrupt(source, `it does not start with the magic number "KVPK" (4b56504b), found ${found}`);
  }
  const prelude = new DataView(bytes.buffer, bytes.byteOffset, PRELUDE_BYTES);
  const version = prelude.getUint32(4, true);
  const headerLength = prelude.getUint32(8, true);
  if (PRELUDE_BYTES + headerLength > bytes.byteLength) {
    throw corrupt(source, `the file is truncated: it has ${bytes.byteLength} bytes, but its ${headerLength}-byte header ends at byte ${PRELUDE_BYTES + headerLength}`);
  }
  const recorded = Buffer.from(bytes.subarray(12, PRELUDE_BYTES)).toString('hex');
  const actual = sha256(bytes.subarray(PRELUDE_BYTES, PRELUDE_BYTES + headerLength));
  if (recorded !== actual) {
    throw corrupt(source, `header checksum mismatch: the prelude records sha256 ${short(recorded)}, the header bytes hash to ${short(actual)}`, { expected: recorded, actual });
  }
  checkVersion(version, source);
  return { version, headerLength };
}

function checkVersion(version: number, source: string): void {
  if (version === 0) {
    throw corrupt(source, 'its format version is 0, which no kvpack writes');
  }
  if (version > PACKET_FORMAT_VERSION) {
    throw new KvpackError(
      'PACKET_VERSION_UNSUPPORTED',
      `Packet file ${source} has format version ${version}, but this kvpack reads versions up to ${PACKET_FORMAT_VERSION}. ` +
        'Upgrade kvpack to read it, or delete the packet store and run "kvpack ingest" again.',
      { file: source, version, supported: PACKET_FORMAT_VERSION },
    );
  }
}

function readHeader(bytes: Uint8Array, { version, headerLength }: Prelude, source: string): PacketHeader {
  let decoded: unknown;
  try {
    decoded = packr.unpack(bytes.subarray(PRELUDE_BYTES, PRELUDE_BYTES + headerLength));
  } catch (error) {
    throw corrupt(source, `its header is not valid MessagePack (${(error as Error).message})`);
  }
  const header = fromWireHeader(decoded);
  const problem = typeof header === 'string' ? header : findHeaderProblem(header);
  if (typeof header === 'string' || problem) {
    throw corrupt(source, `invalid header: ${problem}`);
  }
  if (header.formatVersion !== version) {
    throw corrupt(source, `the header records format version ${header.formatVersion} but the prelude records ${version}`);
  }
  return header;
}

/** Checks padding, file length and payload checksum; returns the payload bytes, 4-byte aligned. */
function readPayload(bytes: Uint8Array, header: PacketHeader, headerLength: number, source: string): Uint8Array {
  const headerEnd = PRELUDE_BYTES + headerLength;
  const offset = payloadOffset(headerLength);
  const expectedLength = offset + payloadByteLength(header, header.tokenCount, header.dtype);
  if (bytes.byteLength < expectedLength) {
    throw corrupt(source, `the file is truncated: it has ${bytes.byteLength} bytes, but its header describes ${expectedLength}`, {
      expected: expectedLength,
      actual: bytes.byteLength,
    });
  }
  if (bytes.byteLength > expectedLength) {
    throw corrupt(source, `it has ${bytes.byteLength - expectedLength} bytes after the ${expectedLength} its header describes`);
  }
  if (bytes.subarray(headerEnd, offset).some((byte) => byte !== 0)) {
    throw corrupt(source, `the padding between header and payload (bytes ${headerEnd} to ${offset}) is not zero`);
  }
  const payload = bytes.subarray(offset);
  const actual = sha256(payload);
  if (actual !== header.checksum) {
    throw corrupt(source, `payload checksum mismatch: the header records sha256 ${short(header.checksum)}, the KV bytes hash to ${short(actual)}`, {
      expected: header.checksum,
      actual,
    });
  }
  // A view into a Buffer from the shared pool may start at any byte; copying realigns it.
  return payload.byteOffset % 4 === 0 ? payload : payload.slice();
}

function decodePayload(payload: Uint8Array, header: PacketHeader): KvCache {
  const layout: KvLayout = { numLayers: header.numLayers, numKvHeads: header.numKvHeads, headDim: header.headDim };
  const length = header.tokenCount;
  const blockFloats = layout.numKvHeads * length * layout.headDim;
  const base = scaleBlockBytes(layout, header.dtype);
  const scales = new Float32Array(payload.buffer, payload.byteOffset, base / 4);
  const blocks: Float32Array[] = [];
  for (let block = 0; block < 2 * layout.numLayers; block++) {
    const byteOffset = payload.byteOffset + base + block * blockFloats * elementBytes(header.dtype);
    const target = new Float32Array(blockFloats);
    if (header.dtype === 'float32') {
      target.set(new Float32Array(payload.buffer, byteOffset, blockFloats));
    } else if (header.dtype === 'float16') {
      decodeFloat16(new Uint16Array(payload.buffer, byteOffset, blockFloats), target);
    } else {
      decodeInt8Heads(new Int8Array(payload.buffer, byteOffset, blockFloats), layout, length, scales.subarray(block * layout.numKvHeads), target);
    }
    blocks.push(target);
  }
  const keys = blocks.filter((_, block) => block % 2 === 0);
  const values = blocks.filter((_, block) => block % 2 === 1);
  return new KvCache(layout, length, keys, values);
}

function decodeInt8Heads(source: Int8Array, layout: KvLayout, length: number, scales: Float32Array, target: Float32Array): void {
  const headFloats = length * layout.headDim;
  for (let head = 0; head < layout.numKvHeads; head++) {
    const range = [head * headFloats, (head + 1) * headFloats] as const;
    dequantizeInt8(source.subarray(...range), scales[head], target.subarray(...range));
  }
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Shortens a digest to its first 12 hex digits, enough to tell two apart in a message. */
export function short(digest: string): string {
  return digest.length > 12 ? digest.slice(0, 12) : digest === '' ? '(empty)' : digest;
}

function corrupt(source: string, problem: string, details: Record<string, unknown> = {}): KvpackError {
  return new KvpackError(
    'PACKET_CORRUPT',
    `Packet file ${source} is corrupt: ${problem}. It is never spliced; recompute the packet ` +
      '(run "kvpack ingest" on its document again) to replace it.',
    { file: source, ...details },
  );
}
