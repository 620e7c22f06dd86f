import { describe, expect, it } from 'vitest';
import { isKvpackError, type KvpackError } from '../../../common/errors.js';
import { KvCache } from '../../../inference/kv-cache.js';
import {
  decodePacket,
  encodePacket,
  kvBytesPerToken,
  payloadOffset,
  PRELUDE_BYTES,
  scaleBlockBytes,
} from '../../../packets/codec.js';
import { float16BitsToFloat32, float32ToFloat16Bits } from '../../../packets/dtype.js';
import { createPacket, type Packet } from '../../../packets/packet.js';
import { naiveDescription, naivePacket, referencePacket, storiesLayout, syntheticCache } from './fixtures.js';

const SOURCE = '/store/none/ab/abcdef.full.kvp';

function encode(packet: Packet, dtype: 'float32' | 'float16' | 'int8'): Uint8Array {
  return encodePacket(packet.header, packet.kv, dtype);
}

function catchError(run: () => unknown): KvpackError {
  try {
    run();
  } catch (error) {
    if (isKvpackError(error)) return error;
    throw error;
  }
  throw new Error('expected a KvpackError, but the call returned');
}

/** Pairs up the (layer, key or value) blocks of two caches. */
function blockPairs(a: KvCache, b: KvCache): [Float32Array, Float32Array][] {
  return [...a.keys.map((keys, layer) => [keys, b.keys[layer]]), ...a.values.map((values, layer) => [values, b.values[layer]])] as [
    Float32Array,
    Float32Array,
  ][];
}

function headerLengthOf(file: Uint8Array): number {
  return new DataView(file.buffer, file.byteOffset).getUint32(8, true);
}

describe('packet codec round trip', () => {
  it('float32 is bit-exact', () => {
    const packet = referencePacket('abcdef', 40);
    const decoded = decodePacket(encode(packet, 'float32'), SOURCE);
    for (const [original, restored] of blockPairs(packet.kv, decoded.kv)) {
      expect(new Uint32Array(restored.buffer, restored.byteOffset, restored.length)).toEqual(
        new Uint32Array(original.buffer, original.byteOffset, original.length),
      );
    }
    expect(decoded.kv.length).toBe(56);
    expect(decoded.kv.layout).toEqual(storiesLayout);
  });

  it('keeps every header field', () => {
    const packet = referencePacket('abcdef', 40);
    const { header } = decodePacket(encode(packet, 'float16'), SOURCE);
    expect(header).toEqual({
      ...packet.header,
      dtype: 'float16',
      checksum: expect.stringMatching(/^[0-9a-f]{64}$/),
    });
    expect(header.tokenIds).toBeInstanceOf(Int32Array);
    expect(Array.from(header.tokenIds)).toEqual(Array.from(packet.header.tokenIds));
    expect(header.tokenCount).toBe(56);
    expect(header.prefixLength).toBe(8);
    expect(header.suffixLength).toBe(8);
  });

  it('float16 stays within 2^-11 relative', async ({ annotate }) => {
    const packet = naivePacket('abcdef', 64);
    const decoded = decodePacket(encode(packet, 'float16'), SOURCE);
    let maxRelative = 0;
    let maxSubnormalError = 0;
    for (const [original, restored] of blockPairs(packet.kv, decoded.kv)) {
      for (let i = 0; i < original.length; i++) {
        const error = Math.abs(restored[i] - original[i]);
        if (Math.abs(original[i]) >= 2 ** -14) {
          maxRelative = Math.max(maxRelative, error / Math.abs(original[i]));
        } else {
          maxSubnormalError = Math.max(maxSubnormalError, error);
        }
      }
    }
    await annotate(`float16 max relative error ${maxRelative.toExponential(3)} (bound 2^-11 = ${(2 ** -11).toExponential(3)})`);
    expect(maxRelative).toBeLessThanOrEqual(2 ** -11);
    expect(maxRelative).toBeGreaterThan(0);
    expect(maxSubnormalError).toBeLessThanOrEqual(2 ** -25);
  });

  it('int8 stays within half a scale step', async ({ annotate }) => {
    const packet = naivePacket('abcdef', 64);
    const decoded = decodePacket(encode(packet, 'int8'), SOURCE);
    const headFloats = 64 * storiesLayout.headDim;
    let maxStepFraction = 0;
    for (const [original, restored] of blockPairs(packet.kv, decoded.kv)) {
      for (let head = 0; head < storiesLayout.numKvHeads; head++) {
        const range = [head * headFloats, (head + 1) * headFloats] as const;
        const values = original.subarray(...range);
        const scale = values.reduce((max, x) => Math.max(max, Math.abs(x)), 0) / 127;
        const back = restored.subarray(...range);
        for (let i = 0; i < values.length; i++) {
          const error = Math.abs(back[i] - values[i]);
          if (scale === 0) {
            expect(back[i]).toBe(0);
            continue;
          }
          // Half a step, plus the float32 rounding of the scale and of q × scale.
          expect(error).toBeLessThanOrEqual(scale * (0.5 + 2 ** -16));
          maxStepFraction = Math.max(maxStepFraction, error / scale);
        }
      }
    }
    await annotate(`int8 max error ${maxStepFraction.toFixed(4)} × scale (bound 0.5 × scale, scale = max|x| / 127 per head)`);
    expect(maxStepFraction).toBeGreaterThan(0.4);
  });

  it('decodes a file at an unaligned offset', () => {
    const packet = naivePacket('abcdef', 10);
    const file = encode(packet, 'float16');
    const shifted = new Uint8Array(file.byteLength + 1).subarray(1);
    shifted.set(file);
    const decoded = decodePacket(shifted, SOURCE);
    expect(Array.from(decoded.kv.keys[2])).toEqual(Array.from(decodePacket(file, SOURCE).kv.keys[2]));
  });

  it('round-trips an empty chunk', () => {
    const packet = naivePacket('abcdef', 0);
    const decoded = decodePacket(encode(packet, 'int8'), SOURCE);
    expect(decoded.kv.length).toBe(0);
    expect(decoded.header.tokenIds).toHaveLength(0);
  });
});

describe('packet file size', () => {
  it('stores exactly the bytes the shapes imply', async ({ annotate }) => {
    expect(kvBytesPerToken(storiesLayout, 'float32')).toBe(2 * 5 * 4 * 8 * 4);
    expect(kvBytesPerToken(storiesLayout, 'float16')).toBe(640);
    expect(kvBytesPerToken(storiesLayout, 'int8')).toBe(320);
    expect(scaleBlockBytes(storiesLayout, 'int8')).toBe(2 * 5 * 4 * 4);
    expect(scaleBlockBytes(storiesLayout, 'float16')).toBe(0);

    const tokens = 48;
    for (const dtype of ['float32', 'float16', 'int8'] as const) {
      const file = encode(naivePacket('abcdef', tokens), dtype);
      const headerLength = headerLengthOf(file);
      const payload = file.byteLength - payloadOffset(headerLength);
      expect(payload).toBe(scaleBlockBytes(storiesLayout, dtype) + tokens * kvBytesPerToken(storiesLayout, dtype));

      // The fixed part: prelude, header (including 4 bytes per token id) and at most 7 padding bytes.
      const overhead = file.byteLength - tokens * kvBytesPerToken(storiesLayout, dtype) - scaleBlockBytes(storiesLayout, dtype);
      const headerWithoutIds = headerLength - 4 * tokens;
      expect(overhead - PRELUDE_BYTES - headerLength).toBeLessThan(8);
      expect(headerWithoutIds).toBeLessThan(512);
      await annotate(`${dtype}: ${file.byteLength} bytes for ${tokens} tokens, overhead ${overhead} (header ${headerLength} incl. ${4 * tokens} of token ids)`);
    }
  });
});

describe('float16 conversion', () => {
  const patterns: [string, number, number][] = [
    ['+0', 0, 0x0000],
    ['-0', -0, 0x8000],
    ['1', 1, 0x3c00],
    ['-2', -2, 0xc000],
    ['1/3', 1 / 3, 0x3555],
    ['0.1', 0.1, 0x2e66],
    ['max normal 65504', 65504, 0x7bff],
    ['65519 rounds down to 65504', 65519, 0x7bff],
    ['65520 rounds up to infinity', 65520, 0x7c00],
    ['1e6 overflows', 1e6, 0x7c00],
    ['-1e6 overflows', -1e6, 0xfc00],
    ['infinity', Infinity, 0x7c00],
    ['-infinity', -Infinity, 0xfc00],
    ['NaN', NaN, 0x7e00],
    ['smallest normal 2^-14', 2 ** -14, 0x0400],
    ['largest subnormal', 1023 * 2 ** -24, 0x03ff],
    ['smallest subnormal 2^-24', 2 ** -24, 0x0001],
    ['2^-25 ties to even zero', 2 ** -25, 0x0000],
    ['1.5 × 2^-24 ties to even 2', 1.5 * 2 ** -24, 0x0002],
    ['-3 × 2^-26 rounds up', -3 * 2 ** -26, 0x8001],
    ['below half the smallest subnormal', 2 ** -26, 0x0000],
    ['1 + 2^-11 ties to even 1', 1 + 2 ** -11, 0x3c00],
    ['1 + 3 × 2^-11 ties to even up', 1 + 3 * 2 ** -11, 0x3c02],
    ['float32 subnormal', 1e-40, 0x0000],
  ];

  it.each(patterns)('encodes %s', (_name, value, bits) => {
    expect(float32ToFloat16Bits(value)).toBe(bits);
  });

  it('decodes known bit patterns', () => {
    expect(float16BitsToFloat32(0x7bff)).toBe(65504);
    expect(float16BitsToFloat32(0x0001)).toBe(2 ** -24);
    expect(float16BitsToFloat32(0x03ff)).toBe(1023 * 2 ** -24);
    expect(float16BitsToFloat32(0x3555)).toBe(0.333251953125);
    expect(float16BitsToFloat32(0xfc00)).toBe(-Infinity);
    expect(float16BitsToFloat32(0x8000)).toBe(-0);
    expect(float16BitsToFloat32(0x7e00)).toBeNaN();
  });

  it('round-trips every non-NaN bit pattern', () => {
    const wrong: number[] = [];
    for (let bits = 0; bits < 65536; bits++) {
      const value = float16BitsToFloat32(bits);
      if (!Number.isNaN(value) && float32ToFloat16Bits(value) !== bits) wrong.push(bits);
    }
    expect(wrong).toEqual([]);
  });
});

describe('packet decoding errors', () => {
  const file = encode(naivePacket('abcdef', 20), 'float16');

  it('rejects a flipped payload byte', () => {
    const broken = file.slice();
    broken[broken.byteLength - 100] ^= 0x01;
    const error = catchError(() => decodePacket(broken, SOURCE));
    expect(error.code).toBe('PACKET_CORRUPT');
    expect(error.message).toMatch(
      /^Packet file \/store\/none\/ab\/abcdef\.full\.kvp is corrupt: payload checksum mismatch: the header records sha256 [0-9a-f]{12}, the KV bytes hash to [0-9a-f]{12}\. It is never spliced; recompute the packet \(run "kvpack ingest" on its document again\) to replace it\.$/,
    );
    expect(error.status).toBe(500);
  });

  it('rejects a flipped header byte', () => {
    const broken = file.slice();
    broken[PRELUDE_BYTES + 20] ^= 0x40;
    const error = catchError(() => decodePacket(broken, SOURCE));
    expect(error.code).toBe('PACKET_CORRUPT');
    expect(error.message).toMatch(/is corrupt: header checksum mismatch: the prelude records sha256 [0-9a-f]{12}, the header bytes hash to [0-9a-f]{12}/);
  });

  it('rejects a flipped padding byte', () => {
    const headerEnd = PRELUDE_BYTES + headerLengthOf(file);
    const offset = payloadOffset(headerLengthOf(file));
    const broken = file.slice();
    // Byte just before the payload; with no padding this test would corrupt the header instead.
    expect(offset).toBeGreaterThan(headerEnd);
    broken[offset - 1] = 0xff;
    const error = catchError(() => decodePacket(broken, SOURCE));
    expect(error.message).toMatch(/is corrupt: the padding between header and payload \(bytes \d+ to \d+\) is not zero/);
  });

  it('rejects a file truncated in the payload', () => {
    const error = catchError(() => decodePacket(file.subarray(0, file.byteLength - 1), SOURCE));
    expect(error.code).toBe('PACKET_CORRUPT');
    expect(error.message).toMatch(
      new RegExp(`is corrupt: the file is truncated: it has ${file.byteLength - 1} bytes, but its header describes ${file.byteLength}\\.`),
    );
  });

  it('rejects a file truncated in the header', () => {
    const error = catchError(() => decodePacket(file.subarray(0, PRELUDE_BYTES + 10), SOURCE));
    expect(error.code).toBe('PACKET_CORRUPT');
    expect(error.message).toMatch(/is corrupt: the file is truncated: it has 54 bytes, but its \d+-byte header ends at byte \d+/);
  });

  it('rejects a file shorter than the prelude', () => {
    const error = catchError(() => decodePacket(new Uint8Array(0), SOURCE));
    expect(error.code).toBe('PACKET_CORRUPT');
    expect(error.message).toMatch(/is corrupt: the file is truncated: it has 0 bytes, fewer than the 44-byte prelude/);
  });

  it('rejects trailing bytes', () => {
    const longer = new Uint8Array(file.byteLength + 3);
    longer.set(file);
    const error = catchError(() => decodePacket(longer, SOURCE));
    expect(error.code).toBe('PACKET_CORRUPT');
    expect(error.message).toMatch(new RegExp(`is corrupt: it has 3 bytes after the ${file.byteLength} its header describes`));
  });

  it('rejects a wrong magic number', () => {
    const broken = file.slice();
    broken.set([0x50, 0x4b, 0x03, 0x04], 0);
    const error = catchError(() => decodePacket(broken, SOURCE));
    expect(error.code).toBe('PACKET_CORRUPT');
    expect(error.message).toMatch(/is corrupt: it does not start with the magic number "KVPK" \(4b56504b\), found 504b0304/);
  });

  it('rejects a newer format version', () => {
    const newer = file.slice();
    new DataView(newer.buffer).setUint32(4, 2, true);
    const error = catchError(() => decodePacket(newer, SOURCE));
    expect(error.code).toBe('PACKET_VERSION_UNSUPPORTED');
    expect(error.message).toBe(
      `Packet file ${SOURCE} has format version 2, but this kvpack reads versions up to 1. ` +
        'Upgrade kvpack to read it, or delete the packet store and run "kvpack ingest" again.',
    );
  });

  it('rejects format version 0', () => {
    const zero = file.slice();
    new DataView(zero.buffer).setUint32(4, 0, true);
    const error = catchError(() => decodePacket(zero, SOURCE));
    expect(error.code).toBe('PACKET_CORRUPT');
    expect(error.message).toMatch(/is corrupt: its format version is 0, which no kvpack writes/);
  });
});

describe('packet encoding errors', () => {
  it('rejects a token count that does not fit the cache', () => {
    const packet = createPacket(naiveDescription('abcdef', 10), syntheticCache(storiesLayout, 12, 1));
    const error = catchError(() => encode(packet, 'float32'));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe(
      'Cannot encode the packet of chunk "abcdef": the packet holds 12 cache entries but prefixLength 0 + 10 token ids + suffixLength 0 = 10.',
    );
  });

  it('rejects a naive packet with an adapter', () => {
    const description = { ...naiveDescription('abcdef', 4), adapterId: 'stories-v1' };
    const error = catchError(() => encodePacket(description, syntheticCache(storiesLayout, 4, 1), 'float16'));
    expect(error.message).toMatch(/a naive packet needs adapterId "none" and an empty adapterFingerprint, got "stories-v1" and ""/);
  });

  it('rejects adapter entries in a conditioned packet', () => {
    const description = { ...naiveDescription('abcdef', 4), variant: 'conditioned' as const, adapterId: 'cond-v1', adapterFingerprint: 'ff', prefixLength: 8 };
    const error = catchError(() => encodePacket(description, syntheticCache(storiesLayout, 12, 1), 'float16'));
    expect(error.message).toMatch(/a conditioned packet holds only token entries, but prefixLength is 8 and suffixLength is 0/);
  });

  it('rejects an unknown dtype', () => {
    const packet = naivePacket('abcdef', 4);
    const error = catchError(() => encodePacket(packet.header, packet.kv, 'bfloat16' as 'float16'));
    expect(error.message).toBe('Unknown packet dtype "bfloat16"; use one of float32, float16, int8.');
  });

  it('rejects NaN for int8 but keeps it in float16', () => {
    const packet = naivePacket('abcdef', 4);
    const keys = packet.kv.keys.map((layer) => layer.slice());
    keys[3][5] = NaN;
    const withNan = createPacket(naiveDescription('abcdef', 4), new KvCache(storiesLayout, 4, keys, [...packet.kv.values]));
    const error = catchError(() => encode(withNan, 'int8'));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toMatch(/Cannot store the packet of chunk "abcdef" as int8: its KV cache contains a NaN or an infinity/);
    expect(decodePacket(encode(withNan, 'float16'), SOURCE).kv.keys[3][5]).toBeNaN();
  });
});
