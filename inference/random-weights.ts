import { SeededRandom } from '../common/random.js';
import { weightSpecs, type DecoderArchitecture } from './architecture.js';

/** Standard deviation of random weights, Hugging Face's default `initializer_range`. */
export const INITIALIZER_RANGE = 0.02;

/**
 * Draws every weight of the architecture from N(0, 0.02²), normalization weights set to 1.
 * The same seed and architecture always give the same weights.
 */
export function randomWeights(arch: DecoderArchitecture, seed: number): Map<string, Float32Array> {
  const random = new SeededRandom(seed);
  const weights = new Map<string, Float32Array>();
  for (const spec of weightSpecs(arch)) {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(size);
    if (spec.init === 'ones') {
      data.fill(1);
    } else {
      for (let i = 0; i < size; i++) data[i] = random.nextNormal() * INITIALIZER_RANGE;
    }
    weights.set(spec.name, data);
  }
  return weights;
}
