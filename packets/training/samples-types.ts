/**
 * One distillation sample of the fidelity protocol: a context of chunks from different documents,
 * a continuation prompt, and the teacher's answer with its distributions.
 */
export interface FidelitySample {
  /** Tokens computed fresh before the chunks at position 0 (BOS), possibly empty. */
  preamble: Int32Array;
  /** Token ids of each chunk, in context order. */
  chunks: Int32Array[];
  /** The continuation prompt that follows the chunks. */
  prompt: Int32Array;
  /** The teacher's greedy continuation `[answerLength]`. */
  teacherTokens: Int32Array;
  /**
   * The teacher's log-probabilities `[answerLength, vocab]`: row i is the distribution that
   * predicted `teacherTokens[i]`, after the prompt and the first i answer tokens.
   */
  teacherLogProbs: Float32Array;
}
