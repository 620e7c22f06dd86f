import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isKvpackError } from '../../../common/errors.js';
import { htmlTitle, htmlToText, loadSourceFile, markdownTitle } from '../../../ingest/loaders.js';
import { discoverSources } from '../../../ingest/sources.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'kvpack-loaders-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, content: string | Buffer): string {
  const file = path.join(dir, name);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, content);
  return file;
}

describe('discoverSources', () => {
  it('walks folders and classifies files', () => {
    write('b.md', '# B');
    write('sub/a.txt', 'a');
    write('sub/deeper/c.html', '<p>c</p>');
    write('d.jsonl', '{}');
    write('image.png', 'x');
    const found = discoverSources([dir]);
    expect(found.files.map((file) => [path.relative(dir, file.path), file.kind])).toEqual([
      ['b.md', 'markdown'],
      ['d.jsonl', 'jsonl'],
      [path.join('sub', 'a.txt'), 'text'],
      [path.join('sub', 'deeper', 'c.html'), 'html'],
    ]);
    expect(found.skipped).toEqual([path.join(dir, 'image.png')]);
  });

  it('lists a file given twice once', () => {
    const file = write('a.txt', 'a');
    expect(discoverSources([file, dir]).files).toHaveLength(1);
  });

  it('throws for a missing path', () => {
    const missing = path.join(dir, 'nope');
    try {
      discoverSources([missing]);
      expect.unreachable();
    } catch (error) {
      expect(isKvpackError(error, 'SOURCE_NOT_FOUND')).toBe(true);
      expect((error as Error).message).toBe(`Cannot ingest ${missing}: no such file or folder. Check the path.`);
    }
  });
});

describe('loadSourceFile', () => {
  it('reads plain text as one document', () => {
    const file = write('a.txt', '\ufeffLine one\r\nLine two\r\n');
    const { documents, warnings } = loadSourceFile({ path: file, kind: 'text' });
    expect(warnings).toEqual([]);
    expect(documents).toHaveLength(1);
    expect(documents[0].id).toBe(file);
    expect(documents[0].text).toBe('Line one\nLine two\n');
    expect(documents[0].title).toBe('');
  });

  it('warns on an empty or blank file', () => {
    for (const [name, content] of [['empty.txt', ''], ['blank.txt', ' \n\t\n']]) {
      const file = write(name, content);
      const { documents, warnings } = loadSourceFile({ path: file, kind: 'text' });
      expect(documents).toEqual([]);
      expect(warnings).toEqual([
        { kind: 'empty-document', source: file, message: `${file} is empty or contains only white space; it yields no chunk.` },
      ]);
    }
  });

  it('reports invalid UTF-8 with file and offset', () => {
    const file = write('bad.txt', Buffer.from([0x41, 0x42, 0xff, 0x43]));
    const { documents, warnings } = loadSourceFile({ path: file, kind: 'text' });
    expect(documents[0].text).toBe('AB\uFFFDC');
    expect(warnings).toHaveLength(1);
    expect(warnings[0].kind).toBe('invalid-utf8');
    expect(warnings[0].byteOffsets).toEqual([2]);
    expect(warnings[0].message).toBe(`${file} has 1 invalid UTF-8 sequence(s), replaced by U+FFFD, at byte offset(s) 2.`);
  });

  it('takes the Markdown title from the first heading', () => {
    const file = write('doc.md', '```\n# not a title\n```\n\n## Real Title ##\n\nBody text.\n');
    const { documents } = loadSourceFile({ path: file, kind: 'markdown' });
    expect(documents[0].title).toBe('Real Title');
    expect(documents[0].text).toContain('Body text.');
  });

  it('converts HTML keeping headings and paragraphs', () => {
    const html =
      '<html><head><title>Page</title><style>p { color: red }</style></head><body>' +
      '<h1>Heading One</h1><p>First &amp; <a href="https://example.com">linked</a>.</p><p>Second<br>line.</p>' +
      '<script>var x = 1;</script><h2>Part</h2><p>End.</p></body></html>';
    const file = write('page.html', html);
    const { documents } = loadSourceFile({ path: file, kind: 'html' });
    expect(documents[0].title).toBe('Page');
    expect(documents[0].text).toBe('Heading One\n\nFirst & linked.\n\nSecond\nline.\n\nPart\n\nEnd.');
  });

  it('reads JSON Lines records with fields', () => {
    const lines = [
      JSON.stringify({ text: 'First record.', title: 'One' }),
      '',
      '{not json',
      JSON.stringify({ body: 'no text field' }),
      JSON.stringify({ text: 'Third.\r\n' }),
    ];
    const file = write('data.jsonl', lines.join('\n'));
    const { documents, warnings } = loadSourceFile({ path: file, kind: 'jsonl' });
    expect(documents.map((doc) => [doc.id, doc.title, doc.text])).toEqual([
      [`${file}#1`, 'One', 'First record.'],
      [`${file}#5`, '', 'Third.\n'],
    ]);
    expect(warnings.map((warning) => [warning.kind, warning.source])).toEqual([
      ['invalid-json', `${file}#3`],
      ['missing-field', `${file}#4`],
    ]);
    expect(warnings[1].message).toBe(`${file}#4 has no string at "text"; skipped. Set the text field with --jsonl-text-field.`);
  });

  it('reads nested JSON Lines records', () => {
    const line = { question: 'q', contexts: [{ title: 'A', paragraph_text: 'Alpha.' }, { title: 'B', paragraph_text: 'Beta.' }] };
    const file = write('nested.jsonl', `${JSON.stringify(line)}\n`);
    const fields = { textField: 'paragraph_text', titleField: 'title', recordsField: 'contexts' };
    const { documents, warnings } = loadSourceFile({ path: file, kind: 'jsonl' }, fields);
    expect(warnings).toEqual([]);
    expect(documents.map((doc) => [doc.id, doc.title, doc.text])).toEqual([
      [`${file}#1:0`, 'A', 'Alpha.'],
      [`${file}#1:1`, 'B', 'Beta.'],
    ]);
  });

  it('changes the content hash with the title', () => {
    const a = write('a.jsonl', JSON.stringify({ text: 'Same.', title: 'A' }));
    const b = write('b.jsonl', JSON.stringify({ text: 'Same.', title: 'B' }));
    const [docA] = loadSourceFile({ path: a, kind: 'jsonl' }).documents;
    const [docB] = loadSourceFile({ path: b, kind: 'jsonl' }).documents;
    expect(docA.contentHash).not.toBe(docB.contentHash);
  });
});

describe('titles', () => {
  it('falls back to the first h1 in HTML', () => {
    expect(htmlTitle('<body><h1>Only Heading</h1><p>x</p></body>')).toBe('Only Heading');
    expect(htmlTitle('<p>none</p>')).toBe('');
  });

  it('reads setext Markdown headings', () => {
    expect(markdownTitle('Setext Title\n============\n\nText')).toBe('Setext Title');
    expect(markdownTitle('plain text only')).toBe('');
  });

  it('converts lists and tables to text', () => {
    expect(htmlToText('<ul><li>a</li><li>b</li></ul>')).toBe('* a\n * b');
  });
});
