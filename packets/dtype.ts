/**
 * Conversions between float32 and the compact storage types of packets: IEEE 754 binary16
 * (Node 20 has no Float16Array) and symmetric int8 with one scale per block.
 */

const scratchFloat = new Float32Array(1);
const scratchBits = new Uint32Array(scratchFloat.buffer);

/**
 * Converts a number to the bits of the nearest binary16 value, rounding ties to even. Values
 * beyond the binary16 range become ±Infinity, values below half the smallest subnormal (2^-25)
 * become ±0, and NaN becomes the quiet NaN 0x7e00 with the input's sign.
 */
export function float32ToFloat16Bits(value: number): number {
  scratchFloat[0] = value;
  const bits = scratchBits[0];
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;

  if (exponent === 0xff) {
    return sign | (mantissa === 0 ? 0x7c00 : 0x7e00);
  }
  // Exponent rebased from the float32 bias (127) to the binary16 bias (15).
  const halfExponent = exponent - 112;
  if (halfExponent >= 31) {
    return sign | 0x7c00;
  }
  if (halfExponent <= 0) {
    return sign | subnormalHalfBits(mantissa, halfExponent);
  }
  let half = (halfExponent << 10) | (mantissa >>> 13);
  const remainder = mantissa & 0x1fff;
  if (remainder > 0x1000 || (remainder === 0x1000 && (half & 1) === 1)) {
    // A carry out of the mantissa steps the exponent, which also turns 65520 and above into Infinity.
    half += 1;
  }
  return sign | half;
}

/** Rounds a float32 below the binary16 normal range to a subnormal (or, after a carry, the smallest normal). */
function subnormalHalfBits(mantissa: number, halfExponent: number): number {
  if (halfExponent < -10) {
    return 0;
  }
  // The value is significand × 2^(exponent - 150) and a subnormal half is bits × 2^-24. Float32
  // subnormals never get here (their rebased exponent is -112), so the implicit leading 1 is set.
  const significand = mantissa | 0x800000;
  const shift = 14 - halfExponent;
  let half = significand >>> shift;
  const remainder = significand & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  if (remainder > halfway || (remainder === halfway && (half & 1) === 1)) {
    half += 1;
  }
  return half;
}

/** Converts binary16 bits to the float32 value they encode (exactly: every binary16 value is a float32). */
export function float16BitsToFloat32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) {
    return sign * mantissa * 2 ** -24;
  }
  if (exponent === 31) {
    return mantissa === 0 ? sign * Infinity : NaN;
  }
  return sign * (1024 + mantissa) * 2 ** (exponent - 25);
}

let float16Table: Float32Array | undefined;

/** Returns the float32 value of every binary16 bit pattern, a 256 KiB table built on first use. */
function float16DecodeTable(): Float32Array {
  if (!float16Table) {
    float16Table = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) float16Table[bits] = float16BitsToFloat32(bits);
  }
  return float16Table;
}

/** Writes the binary16 bits of each `source` element into `target` (same length). */
export function encodeFloat16(source: Float32Array, target: Uint16Array): void {
  for (let i = 0; i < source.length; i++) target[i] = float32ToFloat16Bits(source[i]);
}

/** Writes the float32 value of each binary16 element of `source` into `target` (same length). */
export function decodeFloat16(source: Uint16Array, target: Float32Array): void {
  const table = float16DecodeTable();
  for (let i = 0; i < source.length; i++) target[i] = table[source[i]];
}

/**
 * Returns the symmetric int8 scale of a block, max|x| / 127 rounded to float32 (the precision it
 * is stored at), or 0 for an all-zero block. Returns NaN when the block contains a NaN or an infinity,
 * which int8 cannot represent.
 */
export function int8Scale(block: Float32Array): number {
  let max = 0;
  for (let i = 0; i < block.length; i++) {
    const magnitude = Math.abs(block[i]);
    if (magnitude > max) max = magnitude;
    else if (Number.isNaN(magnitude)) return NaN;
  }
  return max === Infinity ? NaN : Math.fround(max / 127);
}

/** Writes round(x / scale), clamped to [-127, 127], for each `source` element; zeros when `scale` is 0. */
export function quantizeInt8(source: Float32Array, scale: number, target: Int8Array): void {
  if (scale === 0) {
    target.fill(0, 0, source.length);
    return;
  }
  for (let i = 0; i < source.length; i++) {
    // Int8Array would wrap an out-of-range level. A scale of max|x| / 127 keeps every level within
    // ±127 already, so the clamp only matters for a caller-chosen scale.
    const level = Math.round(source[i] / scale);
    target[i] = Math.max(-127, Math.min(127, level));
  }
}

/** Writes q × scale for each int8 element of `source` into `target`. */
export function dequantizeInt8(source: Int8Array, scale: number, target: Float32Array): void {
  for (let i = 0; i < source.length; i++) target[i] = source[i] * scale;
}
