import { describe, expect, it } from 'vitest';
import { demoCorpus, hotpotDocumentId } from '../../../cli/demo-corpus.js';
import { requireSharedDir } from '../../helpers/shared.js';

describe('demoCorpus', () => {
  it('takes every paragraph of the first questions', () => {
    const corpus = demoCorpus(requireSharedDir(), 30);
    expect(corpus.name).toBe('hotpotqa');
    expect(corpus.documents.length).toBeGreaterThanOrEqual(290);
    expect(corpus.documents.length).toBeLessThanOrEqual(310);
    expect(new Set(corpus.documents.map((document) => document.id)).size).toBe(corpus.documents.length);
    expect(corpus.question).toBe('What government position was held by the woman who portrayed Corliss Archer in the film Kiss and Tell?');
  });

  it('includes the supporting paragraphs of the demo question', () => {
    const corpus = demoCorpus(requireSharedDir(), 1);
    const ids = new Set(corpus.documents.map((document) => document.id));
    expect(ids.has(hotpotDocumentId({ question_id: '5a8c7595554299585d9e36b6', question_text: '', contexts: [] }, 1))).toBe(true);
    const shirleyTemple = corpus.documents.find((document) => document.title === 'Shirley Temple');
    expect(shirleyTemple?.text).toContain('Chief of Protocol');
  });
});
