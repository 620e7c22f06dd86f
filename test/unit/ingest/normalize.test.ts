import { describe, expect, it } from 'vitest';
import { decodeAndNormalize, findInvalidUtf8, isBlank } from '../../../ingest/normalize.js';

const bytes = (...parts: (string | number[])[]) =>
  Buffer.concat(parts.map((part) => (typeof part === 'string' ? Buffer.from(part, 'utf8') : Buffer.from(part))));

describe('decodeAndNormalize', () => {
  it('removes a leading byte order mark', () => {
    const result = decodeAndNormalize(bytes([0xef, 0xbb, 0xbf], 'Hello'));
    expect(result.text).toBe('Hello');
    expect(result.hadByteOrderMark).toBe(true);
  });

  it('keeps a byte order mark inside the text', () => {
    const result = decodeAndNormalize(bytes('a', [0xef, 0xbb, 0xbf], 'b'));
    expect(result.text).toBe('a\uFEFFb');
    expect(result.hadByteOrderMark).toBe(false);
  });

  it('turns CRLF and lone CR into LF', () => {
    expect(decodeAndNormalize(bytes('one\r\ntwo\rthree\n')).text).toBe('one\ntwo\nthree\n');
  });

  it('composes to NFC', () => {
    const decomposed = 'Cafe\u0301';
    const result = decodeAndNormalize(bytes(decomposed));
    expect(result.text).toBe('Caf\u00e9');
    expect(result.text).toHaveLength(4);
  });

  it('replaces invalid UTF-8 and reports byte offsets', () => {
    const input = bytes('ab', [0xff], 'cd', [0xe2, 0x82], 'e', [0xc3]);
    const result = decodeAndNormalize(input);
    expect(result.text).toBe('ab\uFFFDcd\uFFFDe\uFFFD');
    expect(result.invalidUtf8).toEqual([
      { byteOffset: 2, byteLength: 1 },
      { byteOffset: 5, byteLength: 2 },
      { byteOffset: 8, byteLength: 1 },
    ]);
  });
});

describe('findInvalidUtf8', () => {
  it('matches the replacements of TextDecoder', () => {
    const cases = [
      [0xed, 0xa0, 0x80],
      [0xc0, 0xaf],
      [0xf4, 0x90, 0x80, 0x80],
      [0xf0, 0x9f, 0x98],
      [0xe0, 0x80, 0x80],
      [0x80, 0x80],
      [0xf0, 0x9f, 0x98, 0x80],
    ];
    for (const sequence of cases) {
      const input = Uint8Array.from([0x61, ...sequence, 0x62]);
      const decoded = new TextDecoder('utf-8').decode(input);
      const replacements = [...decoded].filter((char) => char === '\uFFFD').length;
      expect(findInvalidUtf8(input), `bytes ${sequence.map((b) => b.toString(16)).join(' ')}`).toHaveLength(replacements);
    }
  });
});

describe('isBlank', () => {
  it('detects white space only', () => {
    expect(isBlank('')).toBe(true);
    expect(isBlank(' \n\t\u00a0')).toBe(true);
    expect(isBlank(' x ')).toBe(false);
  });
});
