import { KvpackError } from '../common/errors.js';

/**
 * A minimal reader and writer of the safetensors format for float32 tensors: an 8-byte
 * little-endian u64 header length N, N bytes of JSON header, then the raw tensor bytes. The
 * header maps each tensor name to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to
 * the start of the data) and may hold `__metadata__`, a map of string to string.
 */

export interface Float32Tensor {
  shape: number[];
  data: Float32Array;
}

export interface SafetensorsContent {
  tensors: Map<string, Float32Tensor>;
  metadata: Record<string, string>;
}

const METADATA_KEY = '__metadata__';
/** Headers larger than this are rejected before parsing (the format's reference reader uses 100 MB). */
const MAX_HEADER_BYTES = 100_000_000;

/** Serializes float32 tensors and string metadata; the data starts 8-byte aligned. */
export function encodeSafetensors(tensors: ReadonlyMap<string, Float32Tensor>, metadata: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = { [METADATA_KEY]: metadata };
  let offset = 0;
  for (const [name, tensor] of tensors) {
    const size = tensor.shape.reduce((a, b) => a * b, 1);
    if (size !== tensor.data.length) {
      throw new Error(`tensor ${name} has ${tensor.data.length} values but shape [${tensor.shape.join(', ')}]`);
    }
    header[name] = { dtype: 'F32', shape: tensor.shape, data_offsets: [offset, offset + size * 4] };
    offset += size * 4;
  }
  let json = JSON.stringify(header);
  // Pad with spaces so that the data begins at a multiple of 8 bytes.
  const jsonBytes = Buffer.byteLength(json, 'utf8');
  json += ' '.repeat((8 - ((8 + jsonBytes) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let position = 8 + headerBytes.length;
  for (const tensor of tensors.values()) {
    out.set(new Uint8Array(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength), position);
    position += tensor.data.byteLength;
  }
  return out;
}

/** Parses a safetensors file; every tensor must be F32. `source` names the file in errors. */
export function decodeSafetensors(bytes: Uint8Array, source: string): SafetensorsContent {
  const invalid = (detail: string) => new KvpackError('ADAPTER_INVALID', `${source} is not a valid safetensors file: ${detail}.`, { file: source });
  if (bytes.byteLength < 8) {
    throw invalid(`it has ${bytes.byteLength} bytes, fewer than the 8-byte header length`);
  }
  const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  if (headerLength > MAX_HEADER_BYTES || 8 + headerLength > bytes.byteLength) {
    throw invalid(`its header length ${headerLength} does not fit the ${bytes.byteLength}-byte file`);
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(Buffer.from(bytes.subarray(8, 8 + headerLength)).toString('utf8')) as Record<string, unknown>;
  } catch (error) {
    throw invalid(`its header is not JSON (${(error as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw invalid('its header is not a JSON object');
  }
  const data = bytes.subarray(8 + headerLength);
  const tensors = new Map<string, Float32Tensor>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === METADATA_KEY) {
      metadata = readMetadata(entry, invalid);
      continue;
    }
    tensors.set(name, readTensor(name, entry, data, invalid));
  }
  return { tensors, metadata };
}

function readMetadata(entry: unknown, invalid: (detail: string) => KvpackError): Record<string, string> {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
    throw invalid('__metadata__ is not an object');
  }
  for (const [key, value] of Object.entries(entry)) {
    if (typeof value !== 'string') throw invalid(`metadata value ${key} is not a string`);
  }
  return entry as Record<string, string>;
}

function readTensor(name: string, entry: unknown, data: Uint8Array, invalid: (detail: string) => KvpackError): Float32Tensor {
  const info = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (typeof entry !== 'object' || entry === null) {
    throw invalid(`tensor ${name} has no description`);
  }
  if (info.dtype !== 'F32') {
    throw invalid(`tensor ${name} has dtype ${JSON.stringify(info.dtype)}; adapter vectors must be F32`);
  }
  const shape = info.shape;
  if (!Array.isArray(shape) || !shape.every((dim) => Number.isInteger(dim) && dim >= 0)) {
    throw invalid(`tensor ${name} has an invalid shape ${JSON.stringify(shape)}`);
  }
  const offsets = info.data_offsets;
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isInteger(o) && o >= 0)) {
    throw invalid(`tensor ${name} has invalid data_offsets ${JSON.stringify(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  const size = (shape as number[]).reduce((a, b) => a * b, 1);
  if (end < begin || end > data.byteLength || end - begin !== size * 4) {
    throw invalid(`tensor ${name} spans bytes [${begin}, ${end}) but needs ${size * 4} bytes within the ${data.byteLength} data bytes`);
  }
  const values = new Float32Array(size);
  new Uint8Array(values.buffer).set(data.subarray(begin, end));
  return { shape: shape as number[], data: values };
}
