import { KvpackError } from '../common/errors.js';
import type { SeededRandom } from '../common/random.js';

export interface SamplingOptions {
  /** Softmax temperature; 0 picks the most likely token (greedy). Default 0. */
  temperature?: number;
  /** Sample only among the k most likely tokens; 0 disables. Default 0. */
  topK?: number;
  /** Sample only among the most likely tokens whose probabilities sum to p; 1 disables. Default 1. */
  topP?: number;
  /** Seed of the sampling generator, so a seeded run repeats exactly. Default 0. */
  seed?: number;
}

export function validateSamplingOptions(options: SamplingOptions): void {
  const { temperature = 0, topK = 0, topP = 1 } = options;
  if (!(Number.isFinite(temperature) && temperature >= 0)) {
    throw new KvpackError('INVALID_ARGUMENT', `temperature must be a number >= 0, got ${temperature}.`);
  }
  if (!(Number.isInteger(topK) && topK >= 0)) {
    throw new KvpackError('INVALID_ARGUMENT', `topK must be an integer >= 0 (0 disables it), got ${topK}.`);
  }
  if (!(topP > 0 && topP <= 1)) {
    throw new KvpackError('INVALID_ARGUMENT', `topP must be in (0, 1] (1 disables it), got ${topP}.`);
  }
}

/** Returns the index of the largest logit; the lowest index wins ties. */
export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) {
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}

/** Picks the next token from one row of logits `[vocab]`. */
export function sampleToken(logits: Float32Array, options: SamplingOptions, random: SeededRandom): number {
  const { temperature = 0, topK = 0, topP = 1 } = options;
  if (temperature === 0) {
    return argmax(logits);
  }
  const candidates = candidateIndices(logits, topK, topP < 1);
  const probabilities = softmax(candidates.map((index) => logits[index] / temperature));
  let keep = probabilities.length;
  if (topP < 1) {
    // Candidates are sorted by probability, so the nucleus is a prefix.
    let cumulative = 0;
    for (let i = 0; i < probabilities.length; i++) {
      cumulative += probabilities[i];
      if (cumulative >= topP) {
        keep = i + 1;
        break;
      }
    }
  }
  const total = probabilities.slice(0, keep).reduce((a, b) => a + b, 0);
  let threshold = random.nextFloat() * total;
  for (let i = 0; i < keep; i++) {
    threshold -= probabilities[i];
    if (threshold < 0) return candidates[i];
  }
  return candidates[keep - 1];
}

/** Token indices to sample from: all, or the top k, sorted by logit when a filter needs order. */
function candidateIndices(logits: Float32Array, topK: number, needSorted: boolean): number[] {
  const all = Array.from({ length: logits.length }, (_, i) => i);
  if (topK === 0 && !needSorted) {
    return all;
  }
  all.sort((a, b) => logits[b] - logits[a] || a - b);
  return topK > 0 ? all.slice(0, topK) : all;
}

function softmax(values: number[]): number[] {
  const max = Math.max(...values);
  const exps = values.map((value) => Math.exp(value - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((value) => value / sum);
}
