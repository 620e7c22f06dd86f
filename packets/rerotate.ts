import { KvpackError } from '../common/errors.js';
import { ropeInverseFrequencies, type DecoderArchitecture } from '../inference/architecture.js';
import { KvCache } from '../inference/kv-cache.js';

/**
 * Rotary position embedding turns a key at position p by the angle `p * inv_freq[i]` in each
 * pair (i, i + head_dim/2). Attention between entries of one sequence depends only on their
 * position differences, so the cache of a chunk prefilled alone at offset 0 becomes the cache of
 * the same chunk prefilled alone at offset p by turning every key a further `p * inv_freq[i]`.
 * Values carry no position and are shared, not copied.
 */

/** Precomputed rotation for one shift: `[head_dim / 2]` cosines and sines in float64. */
export interface KeyRotation {
  delta: number;
  cos: Float64Array;
  sin: Float64Array;
}

export function keyRotation(arch: DecoderArchitecture, delta: number): KeyRotation {
  assertReRotatable(arch);
  if (!Number.isInteger(delta)) {
    throw new KvpackError('INVALID_ARGUMENT', `A position shift must be an integer, got ${delta}.`);
  }
  const invFreq = ropeInverseFrequencies(arch);
  const cos = new Float64Array(invFreq.length);
  const sin = new Float64Array(invFreq.length);
  for (let i = 0; i < invFreq.length; i++) {
    cos[i] = Math.cos(delta * invFreq[i]);
    sin[i] = Math.sin(delta * invFreq[i]);
  }
  return { delta, cos, sin };
}

/**
 * Rejects rotary variants that a key rotation cannot reproduce. The architecture parser already
 * refuses them at load; this guard keeps the contract where the rotation happens.
 */
export function assertReRotatable(arch: DecoderArchitecture): void {
  const kind = arch.ropeScaling.kind;
  if (kind !== 'none' && kind !== 'linear' && kind !== 'llama3') {
    throw new KvpackError(
      'UNSUPPORTED_ROPE_SCALING',
      `Keys cannot be re-rotated exactly under rope_scaling ${String(kind)}; only none, linear and llama3 are pure rotations.`,
    );
  }
}

/** Returns a cache whose keys are rotated `delta` positions further; values are the same arrays. */
export function rerotateKeys(cache: KvCache, arch: DecoderArchitecture, delta: number): KvCache {
  if (delta === 0) {
    return cache;
  }
  const rotation = keyRotation(arch, delta);
  const keys = cache.keys.map((layerKeys) => rotateKeyArray(layerKeys, rotation));
  return new KvCache(cache.layout, cache.length, keys, [...cache.values]);
}

/** Rotates every `head_dim` vector of a `[kv_heads, seq, head_dim]` key array. */
export function rotateKeyArray(keys: Float32Array, rotation: KeyRotation): Float32Array {
  const half = rotation.cos.length;
  const headDim = 2 * half;
  const out = new Float32Array(keys.length);
  for (let base = 0; base < keys.length; base += headDim) {
    for (let i = 0; i < half; i++) {
      const x = keys[base + i];
      const y = keys[base + half + i];
      out[base + i] = x * rotation.cos[i] - y * rotation.sin[i];
      out[base + half + i] = y * rotation.cos[i] + x * rotation.sin[i];
    }
  }
  return out;
}
