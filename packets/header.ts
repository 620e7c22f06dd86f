import {
  NO_ADAPTER,
  PACKET_DTYPES,
  PACKET_KINDS,
  PACKET_VARIANTS,
  type PacketDtype,
  type PacketHeader,
  type PacketKind,
  type PacketVariant,
} from './packet.js';

/**
 * Finds the first inconsistency in a packet header: a missing or ill-typed field, a token count
 * that is not prefix + tokens + suffix, or adapter fields that do not fit the variant. Returns a
 * sentence naming the field and value, or undefined when the header is consistent. The encoder
 * reports the problem as invalid input and the decoder as a corrupt file.
 */
export function findHeaderProblem(header: PacketHeader): string | undefined {
  return (
    findFieldTypeProblem(header) ?? findTokenCountProblem(header) ?? findAdapterProblem(header)
  );
}

function findFieldTypeProblem(header: PacketHeader): string | undefined {
  for (const field of ['modelFingerprint', 'tokenizerFingerprint', 'adapterId', 'chunkId', 'createdAt'] as const) {
    if (typeof header[field] !== 'string' || header[field] === '') {
      return `${field} must be a non-empty string, got ${describe(header[field])}`;
    }
  }
  for (const field of ['adapterFingerprint', 'checksum'] as const) {
    if (typeof header[field] !== 'string') {
      return `${field} must be a string, got ${describe(header[field])}`;
    }
  }
  for (const field of ['formatVersion', 'numLayers', 'numKvHeads', 'headDim'] as const) {
    if (!isInteger(header[field], 1)) {
      return `${field} must be a positive integer, got ${describe(header[field])}`;
    }
  }
  for (const field of ['tokenCount', 'prefixLength', 'suffixLength', 'basePosition'] as const) {
    if (!isInteger(header[field], 0)) {
      return `${field} must be a non-negative integer, got ${describe(header[field])}`;
    }
  }
  if (!(header.tokenIds instanceof Int32Array)) {
    return `tokenIds must be an Int32Array, got ${describe(header.tokenIds)}`;
  }
  return findEnumProblem(header);
}

function findEnumProblem(header: PacketHeader): string | undefined {
  if (!PACKET_VARIANTS.includes(header.variant)) {
    return `variant must be one of ${PACKET_VARIANTS.join(', ')}, got ${describe(header.variant)}`;
  }
  if (!PACKET_KINDS.includes(header.kind)) {
    return `kind must be one of ${PACKET_KINDS.join(', ')}, got ${describe(header.kind)}`;
  }
  if (!PACKET_DTYPES.includes(header.dtype)) {
    return `dtype must be one of ${PACKET_DTYPES.join(', ')}, got ${describe(header.dtype)}`;
  }
  return undefined;
}

function findTokenCountProblem(header: PacketHeader): string | undefined {
  const expected = header.prefixLength + header.tokenIds.length + header.suffixLength;
  if (header.tokenCount !== expected) {
    return (
      `the packet holds ${header.tokenCount} cache entries but prefixLength ${header.prefixLength} + ` +
      `${header.tokenIds.length} token ids + suffixLength ${header.suffixLength} = ${expected}`
    );
  }
  return undefined;
}

function findAdapterProblem(header: PacketHeader): string | undefined {
  if (header.variant === 'naive') {
    if (header.adapterId !== NO_ADAPTER || header.adapterFingerprint !== '') {
      return `a naive packet needs adapterId "${NO_ADAPTER}" and an empty adapterFingerprint, got "${header.adapterId}" and "${header.adapterFingerprint}"`;
    }
  } else if (header.adapterId === NO_ADAPTER || header.adapterFingerprint === '') {
    return `a ${header.variant} packet needs an adapterId other than "${NO_ADAPTER}" and a non-empty adapterFingerprint, got "${header.adapterId}" and "${header.adapterFingerprint}"`;
  }
  if (header.variant !== 'reference' && (header.prefixLength !== 0 || header.suffixLength !== 0)) {
    return `a ${header.variant} packet holds only token entries, but prefixLength is ${header.prefixLength} and suffixLength is ${header.suffixLength}`;
  }
  return undefined;
}

/** The MessagePack map stored in a packet file: header fields by name, token ids as int32 little-endian bytes. */
export type WireHeader = Omit<PacketHeader, 'tokenIds'> & { tokenIds: Uint8Array };

export function toWireHeader(header: PacketHeader): WireHeader {
  const ids = header.tokenIds;
  return { ...header, tokenIds: new Uint8Array(ids.buffer, ids.byteOffset, ids.byteLength) };
}

/**
 * Converts a decoded MessagePack value back to a header without checking the field values (see
 * `findHeaderProblem`). Returns a sentence naming the problem when the value is not a map or its
 * token ids are not whole int32 values. Keys that this version does not know are dropped.
 */
export function fromWireHeader(value: unknown): PacketHeader | string {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return `the header is ${describe(value)}, not a map`;
  }
  const wire = value as Record<string, unknown>;
  const idBytes = wire.tokenIds;
  if (!(idBytes instanceof Uint8Array) || idBytes.byteLength % 4 !== 0) {
    return `tokenIds must be binary data of whole int32 values, got ${describe(idBytes)}`;
  }
  const tokenIds = new Int32Array(idBytes.byteLength / 4);
  new Uint8Array(tokenIds.buffer).set(idBytes);
  return {
    formatVersion: wire.formatVersion as number,
    modelFingerprint: wire.modelFingerprint as string,
    tokenizerFingerprint: wire.tokenizerFingerprint as string,
    adapterId: wire.adapterId as string,
    adapterFingerprint: wire.adapterFingerprint as string,
    variant: wire.variant as PacketVariant,
    chunkId: wire.chunkId as string,
    kind: wire.kind as PacketKind,
    tokenIds,
    numLayers: wire.numLayers as number,
    numKvHeads: wire.numKvHeads as number,
    headDim: wire.headDim as number,
    tokenCount: wire.tokenCount as number,
    prefixLength: wire.prefixLength as number,
    suffixLength: wire.suffixLength as number,
    basePosition: wire.basePosition as number,
    dtype: wire.dtype as PacketDtype,
    checksum: wire.checksum as string,
    createdAt: wire.createdAt as string,
  };
}

function isInteger(value: unknown, min: number): boolean {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= min;
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value instanceof Uint8Array) return `${value.byteLength} bytes`;
  if (typeof value === 'string') return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
  if (typeof value === 'object' && value !== null) return value.constructor?.name ?? 'an object';
  return String(value);
}
