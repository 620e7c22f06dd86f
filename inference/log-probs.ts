/**
 * Log-probabilities and KL divergence of next-token distributions, computed in float64. This
 * module imports nothing, so light callers such as `query/compare.ts` can use it without loading
 * an ONNX session or TensorFlow.js.
 */

/** Converts one logit row `[vocab]` to log-probabilities: `x_i - logsumexp(x)`, stable for large logits. */
export function logSoftmax(logits: Float32Array): Float64Array {
  let max = -Infinity;
  for (const value of logits) max = Math.max(max, value);
  let sum = 0;
  for (const value of logits) sum += Math.exp(value - max);
  const logNormalizer = max + Math.log(sum);
  return Float64Array.from(logits, (value) => value - logNormalizer);
}

/**
 * Computes KL(p ‖ q) in nats from two log-probability rows of the same length. Entries where p is 0
 * add nothing, and a result below 0 from rounding is clamped to 0.
 */
export function klDivergence(pLogProbs: ArrayLike<number>, qLogProbs: ArrayLike<number>): number {
  let kl = 0;
  for (let i = 0; i < pLogProbs.length; i++) {
    const p = Math.exp(pLogProbs[i]);
    if (p > 0) kl += p * (pLogProbs[i] - qLogProbs[i]);
  }
  return Math.max(0, kl);
}
