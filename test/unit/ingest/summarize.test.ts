import { describe, expect, it } from 'vitest';
import { splitSentences } from '../../../ingest/chunker.js';
import { leadSentences, summarizeSentences, summaryTokenBudget, surprisalFromLogits, type SentenceSpan } from '../../../ingest/summarize.js';

/** Sentences with one token per word, so budgets are word counts. */
function sentencesOf(text: string): SentenceSpan[] {
  return splitSentences(text).map((span) => ({ ...span, tokenCount: text.slice(span.start, span.end).split(/\s+/).length }));
}

/** Token starts at each word, for surprisal given per word. */
function wordStarts(text: string): Int32Array {
  return Int32Array.from([...text.matchAll(/\S+/g)].map((match) => match.index));
}

const text = 'The cat sat. Quantum chromodynamics binds quarks tightly. The dog sat. It was nice.';

describe('summarizeSentences', () => {
  it('keeps high-surprisal sentences in original order', () => {
    const sentences = sentencesOf(text);
    const starts = wordStarts(text);
    // Surprisal per word: high in sentences 1 and 3, low elsewhere.
    const perWord = [NaN, 1, 1, 6, 6, 6, 6, 6, 1, 1, 1, 5, 5, 5];
    const summary = summarizeSentences({ text, sentences, tokenBudget: 8, surprisal: { tokenStarts: starts, surprisal: Float32Array.from(perWord) } });
    expect(summary.selected).toEqual([1, 3]);
    expect(summary.text).toBe('Quantum chromodynamics binds quarks tightly. It was nice.');
    expect(summary.truncated).toBe(false);
  });

  it('takes the first sentence first when asked', () => {
    const sentences = sentencesOf(text);
    const rare = new Set(['quantum', 'chromodynamics', 'quarks']);
    const wordWeight = (word: string) => (rare.has(word) ? 10 : 1);
    const summary = summarizeSentences({ text, sentences, tokenBudget: 8, wordWeight, keepFirstSentence: true });
    expect(summary.selected).toEqual([0, 1]);
    expect(summary.text).toBe('The cat sat. Quantum chromodynamics binds quarks tightly.');
  });

  it('stays within the token budget', () => {
    const sentences = sentencesOf(text);
    for (const budget of [3, 5, 8, 12, 14]) {
      const summary = summarizeSentences({ text, sentences, tokenBudget: budget });
      const used = summary.selected.reduce((sum, i) => sum + sentences[i].tokenCount, 0);
      expect(used, `budget ${budget}`).toBeLessThanOrEqual(budget);
    }
  });

  it('scores by TF-IDF without surprisal', () => {
    const sentences = sentencesOf(text);
    const rare = new Set(['quantum', 'chromodynamics', 'quarks']);
    const summary = summarizeSentences({ text, sentences, tokenBudget: 5, wordWeight: (word) => (rare.has(word) ? 10 : 1) });
    expect(summary.selected).toEqual([1]);
  });

  it('takes the best word window when no sentence fits', () => {
    const long = 'Alpha beta gamma delta epsilon zeta eta theta iota kappa.';
    const weights: Record<string, number> = { theta: 10, iota: 10, kappa: 2 };
    const summary = summarizeSentences({ text: long, sentences: sentencesOf(long), tokenBudget: 4, wordWeight: (word) => weights[word] ?? 1 });
    expect(summary.truncated).toBe(true);
    expect(summary.text).toBe('eta theta iota kappa.');
    expect(leadSentences(long, sentencesOf(long), 4).text).toBe('Alpha beta gamma delta');
  });

  it('returns nothing for no sentences', () => {
    expect(summarizeSentences({ text: '', sentences: [], tokenBudget: 10 }).text).toBe('');
  });
});

describe('leadSentences', () => {
  it('takes the first sentences that fit', () => {
    const summary = leadSentences(text, sentencesOf(text), 7);
    expect(summary.text).toBe('The cat sat.');
    expect(leadSentences(text, sentencesOf(text), 3).selected).toEqual([0]);
  });
});

describe('summary helpers', () => {
  it('computes the budget from the ratio', () => {
    expect(summaryTokenBudget(48, 0.5)).toBe(24);
    expect(summaryTokenBudget(1, 0.5)).toBe(1);
  });

  it('computes surprisal from logits', () => {
    // Vocabulary of 2: after token 0 the logits favour token 1 strongly.
    const logits = Float32Array.from([0, Math.log(3), 0, 0]);
    const surprisal = surprisalFromLogits(logits, [0, 1, 0], 2);
    expect(Number.isNaN(surprisal[0])).toBe(true);
    expect(surprisal[1]).toBeCloseTo(-Math.log(0.75), 5);
    expect(surprisal[2]).toBeCloseTo(Math.log(2), 5);
  });
});
