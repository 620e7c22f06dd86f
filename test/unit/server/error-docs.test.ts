import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { errorCatalog } from '../../../common/errors.js';
import { packageRoot } from '../../../common/paths.js';

/** `| \`CODE\` | STATUS | meaning |` rows of docs/errors.md. */
function documentedCodes(): Map<string, number> {
  const text = readFileSync(path.join(packageRoot, 'docs', 'errors.md'), 'utf8');
  const rows = new Map<string, number>();
  for (const match of text.matchAll(/^\| `([A-Z0-9_]+)` \| (\d{3}) \|/gm)) {
    rows.set(match[1], Number(match[2]));
  }
  return rows;
}

describe('docs/errors.md', () => {
  const documented = documentedCodes();

  it('documents every catalog code', () => {
    const missing = Object.keys(errorCatalog).filter((code) => !documented.has(code));
    expect(missing, 'codes in common/errors.ts without a row in docs/errors.md').toEqual([]);
  });

  it('documents no unknown code', () => {
    const unknown = [...documented.keys()].filter((code) => !(code in errorCatalog));
    expect(unknown, 'rows in docs/errors.md without a code in common/errors.ts').toEqual([]);
  });

  it('gives each code its catalog status', () => {
    const wrong = Object.entries(errorCatalog)
      .filter(([code, entry]) => documented.has(code) && documented.get(code) !== entry.status)
      .map(([code, entry]) => `${code}: catalog ${entry.status}, docs ${documented.get(code)}`);
    expect(wrong).toEqual([]);
  });
});
