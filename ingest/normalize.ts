/** One invalid UTF-8 sequence found while decoding, replaced by U+FFFD in the text. */
export interface InvalidUtf8 {
  /** Offset of the first byte of the invalid sequence in the file or record. */
  byteOffset: number;
  /** Bytes replaced, 1 to 3. */
  byteLength: number;
}

export interface NormalizedText {
  /** The text: byte order mark removed, line ends as LF, Unicode NFC. */
  text: string;
  /** True when a leading byte order mark was removed. */
  hadByteOrderMark: boolean;
  /** Invalid UTF-8 sequences, in byte order. Each one became one U+FFFD. */
  invalidUtf8: InvalidUtf8[];
}

const decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

/**
 * Decodes UTF-8 bytes and normalizes the text. A leading byte order mark is removed, CRLF and lone
 * CR become LF, and the text is composed to Unicode NFC. Each invalid UTF-8 sequence becomes U+FFFD
 * (as the WHATWG decoder does) and is reported with its byte offset.
 */
export function decodeAndNormalize(bytes: Uint8Array): NormalizedText {
  const invalidUtf8 = findInvalidUtf8(bytes);
  const decoded = decoder.decode(bytes);
  const { text, hadByteOrderMark } = normalizeString(decoded);
  return { text, hadByteOrderMark, invalidUtf8 };
}

/** Normalizes text that is already a string, as `decodeAndNormalize` does after decoding. */
export function normalizeString(input: string): { text: string; hadByteOrderMark: boolean } {
  const hadByteOrderMark = input.charCodeAt(0) === 0xfeff;
  const withoutBom = hadByteOrderMark ? input.slice(1) : input;
  const text = withoutBom.replace(/\r\n?/g, '\n').normalize('NFC');
  return { text, hadByteOrderMark };
}

/** Returns true when the text contains nothing but white space (or nothing at all). */
export function isBlank(text: string): boolean {
  return !/\S/u.test(text);
}

/**
 * Finds the invalid sequences of a UTF-8 byte string with the WHATWG decoder's rules: a sequence
 * that breaks off is one error covering its valid prefix, and the byte that broke it is read again.
 */
export function findInvalidUtf8(bytes: Uint8Array): InvalidUtf8[] {
  const found: InvalidUtf8[] = [];
  let i = 0;
  while (i < bytes.length) {
    const lead = bytes[i];
    if (lead < 0x80) {
      i += 1;
      continue;
    }
    const expected = continuationCount(lead);
    if (expected === 0) {
      found.push({ byteOffset: i, byteLength: 1 });
      i += 1;
      continue;
    }
    let length = 1;
    while (length <= expected && i + length < bytes.length && isValidContinuation(lead, length, bytes[i + length])) {
      length += 1;
    }
    if (length === expected + 1) {
      i += length;
    } else {
      found.push({ byteOffset: i, byteLength: length });
      i += length;
    }
  }
  return found;
}

/** Continuation bytes a lead byte announces, or 0 for a byte that cannot start a sequence. */
function continuationCount(lead: number): number {
  if (lead >= 0xc2 && lead <= 0xdf) return 1;
  if (lead >= 0xe0 && lead <= 0xef) return 2;
  if (lead >= 0xf0 && lead <= 0xf4) return 3;
  return 0;
}

/** Checks a continuation byte. The second byte has a narrower range after E0, ED, F0 and F4 (no overlongs, surrogates or > U+10FFFF). */
function isValidContinuation(lead: number, index: number, byte: number): boolean {
  if (index === 1) {
    if (lead === 0xe0) return byte >= 0xa0 && byte <= 0xbf;
    if (lead === 0xed) return byte >= 0x80 && byte <= 0x9f;
    if (lead === 0xf0) return byte >= 0x90 && byte <= 0xbf;
    if (lead === 0xf4) return byte >= 0x80 && byte <= 0x8f;
  }
  return byte >= 0x80 && byte <= 0xbf;
}
