import { describe, expect, it } from 'vitest';
import { demoCorpus } from '../../../cli/demo-corpus.js';

describe('demoCorpus', () => {
  it('falls back to the project docs', () => {
    const corpus = demoCorpus(undefined, 30);
    expect(corpus.name).toBe('docs');
    const ids = corpus.documents.map((document) => document.id);
    expect(ids).toContain('docs:README.md');
    expect(ids).toContain('docs:docs/api.md');
    expect(corpus.description).toBe(`${ids.length} kvpack documentation files`);
    const readme = corpus.documents.find((document) => document.id === 'docs:README.md');
    expect(readme?.title).toBe('kvpack');
    expect(readme?.text.length).toBeGreaterThan(100);
  });

  it('falls back when the shared folder lacks HotpotQA', () => {
    expect(demoCorpus('/nonexistent-shared-folder', 30).name).toBe('docs');
  });
});
