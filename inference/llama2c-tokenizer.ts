import { readFileSync } from 'node:fs';
import { KvpackError } from '../common/errors.js';

/**
 * A llama2.c tokenizer file (`tokenizer.bin`, `tok512.bin`), as written by llama2.c's
 * `tokenizer.py export`. Ids 0, 1 and 2 are unknown, BOS and EOS, ids 3–258 are the
 * byte-fallback tokens `<0x00>`…`<0xFF>`, and merged pieces store spaces as ' ' where
 * sentencepiece writes '▁'.
 */
export interface Llama2cVocab {
  /** Length in bytes of the longest piece, from the file header. */
  maxTokenLength: number;
  /** Piece of each token id, decoded from UTF-8. */
  pieces: string[];
  /** UTF-8 bytes of each piece, as stored in the file. */
  pieceBytes: Uint8Array[];
  /** Merge score of each token id. A higher score merges first. */
  scores: Float32Array;
}

export const LLAMA2C_UNK_ID = 0;
export const LLAMA2C_BOS_ID = 1;
export const LLAMA2C_EOS_ID = 2;
/** llama2.c encodes a byte that has no piece of its own as token id `byte + 3`. */
export const LLAMA2C_BYTE_TOKEN_OFFSET = 3;

const utf8Decoder = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

/**
 * Reads a llama2.c tokenizer file. `vocabSize` is the vocabulary size from the checkpoint header,
 * because the file itself does not store it.
 *
 * Layout: int32 max_token_length, then per token a float32 score, an int32 byte length and
 * the piece bytes, all little-endian. Raises CHECKPOINT_INVALID when the file is missing or
 * truncated, has bytes after the last token, or contains a length outside 0 to max_token_length
 * or a piece that is not valid UTF-8.
 */
export function readLlama2cTokenizer(file: string, vocabSize: number): Llama2cVocab {
  if (!Number.isInteger(vocabSize) || vocabSize <= 0) {
    throw new KvpackError(
      'INVALID_ARGUMENT',
      `Invalid vocabulary size ${vocabSize} for the llama2.c tokenizer ${file}: expected a positive integer ` +
        '(the absolute value of vocab_size in the checkpoint header).',
      { file, vocabSize },
    );
  }

  const data = readTokenizerBytes(file);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const fileInfo = `llama2.c tokenizer ${file} (${data.byteLength} bytes, vocabulary size ${vocabSize})`;

  if (data.byteLength < 4) {
    throw new KvpackError(
      'CHECKPOINT_INVALID',
      `Truncated ${fileInfo}: the 4-byte max_token_length header is missing. ` +
        'Pass the tokenizer file that belongs to the checkpoint.',
      { file, offset: 0 },
    );
  }
  const maxTokenLength = view.getInt32(0, true);
  if (maxTokenLength <= 0) {
    throw new KvpackError(
      'CHECKPOINT_INVALID',
      `Invalid ${fileInfo}: max_token_length at byte offset 0 is ${maxTokenLength}, expected a positive ` +
        'integer. The file is not a llama2.c tokenizer. Pass the tokenizer .bin file exported with the checkpoint.',
      { file, offset: 0, maxTokenLength },
    );
  }

  const pieces: string[] = [];
  const pieceBytes: Uint8Array[] = [];
  const scores = new Float32Array(vocabSize);
  let offset = 4;
  for (let id = 0; id < vocabSize; id++) {
    if (offset + 8 > data.byteLength) {
      throw truncatedError(fileInfo, file, id, offset, 'its score and length');
    }
    scores[id] = view.getFloat32(offset, true);
    const length = view.getInt32(offset + 4, true);
    if (length < 0 || length > maxTokenLength) {
      throw new KvpackError(
        'CHECKPOINT_INVALID',
        `Invalid ${fileInfo}: token ${id} at byte offset ${offset + 4} has length ${length}, expected 0 to ` +
          `max_token_length ${maxTokenLength}. The file is corrupt or not a llama2.c tokenizer. Export it ` +
          "again with llama2.c's tokenizer.py.",
        { file, tokenId: id, offset: offset + 4, length },
      );
    }
    offset += 8;
    if (offset + length > data.byteLength) {
      throw truncatedError(fileInfo, file, id, offset, `its ${length} piece bytes`);
    }
    const bytes = data.slice(offset, offset + length);
    pieces.push(decodePiece(bytes, fileInfo, file, id, offset));
    pieceBytes.push(bytes);
    offset += length;
  }

  if (offset !== data.byteLength) {
    throw new KvpackError(
      'CHECKPOINT_INVALID',
      `Invalid ${fileInfo}: ${data.byteLength - offset} trailing bytes after the last token (byte offset ` +
        `${offset}). The tokenizer has more tokens than the checkpoint's vocab_size, so it belongs to another ` +
        'checkpoint. Pass the tokenizer file that was exported with this checkpoint.',
      { file, offset, trailingBytes: data.byteLength - offset },
    );
  }

  return { maxTokenLength, pieces, pieceBytes, scores };
}

function readTokenizerBytes(file: string): Uint8Array {
  try {
    return readFileSync(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new KvpackError(
        'CHECKPOINT_INVALID',
        `llama2.c tokenizer file not found: ${file}. Pass --tokenizer with the path of the tokenizer .bin ` +
          'file exported with the checkpoint (tok512.bin for stories260K, tokenizer.bin for the Llama 2 vocabulary).',
        { file },
      );
    }
    throw new KvpackError(
      'CHECKPOINT_INVALID',
      `Failed to read the llama2.c tokenizer file ${file}: ${(error as Error).message}`,
      { file },
    );
  }
}

function truncatedError(fileInfo: string, file: string, id: number, offset: number, missing: string): KvpackError {
  return new KvpackError(
    'CHECKPOINT_INVALID',
    `Truncated ${fileInfo}: token ${id} at byte offset ${offset} is missing ${missing}. The file is ` +
      "incomplete, or the checkpoint's vocab_size is larger than this tokenizer's vocabulary. " +
      'Pass the tokenizer file that was exported with this checkpoint.',
    { file, tokenId: id, offset },
  );
}

function decodePiece(bytes: Uint8Array, fileInfo: string, file: string, id: number, offset: number): string {
  try {
    return utf8Decoder.decode(bytes);
  } catch {
    throw new KvpackError(
      'CHECKPOINT_INVALID',
      `Invalid ${fileInfo}: the piece of token ${id} at byte offset ${offset} is not valid UTF-8. ` +
        "Export the tokenizer again with llama2.c's tokenizer.py.",
      { file, tokenId: id, offset },
    );
  }
}

/**
 * Piece lookup keyed by the piece bytes as a latin1 string, so that lookups compare bytes
 * exactly as llama2.c's `strcmp` does. The first id wins when a piece occurs twice.
 */
const byteKeyLookups = new WeakMap<Llama2cVocab, Map<string, number>>();

function byteKey(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
}

function pieceLookup(vocab: Llama2cVocab): Map<string, number> {
  let lookup = byteKeyLookups.get(vocab);
  if (!lookup) {
    lookup = new Map();
    for (let id = 0; id < vocab.pieceBytes.length; id++) {
      const key = byteKey(vocab.pieceBytes[id]);
      if (!lookup.has(key)) {
        lookup.set(key, id);
      }
    }
    byteKeyLookups.set(vocab, lookup);
  }
  return lookup;
}

/**
 * Encodes text as llama2.c's `encode` does, without BOS or EOS. This is the reference that the
 * converted tokenizer.json is tested against, so it transcribes the C code step by step.
 *
 * 1. Non-empty text gets a dummy-prefix space in front.
 * 2. Each UTF-8 code point becomes its piece, or its bytes as ids `byte + 3` when it has none.
 * 3. The adjacent pair whose concatenated piece has the highest score is merged, the leftmost
 *    pair on equal scores, until no concatenation is a piece.
 */
export function encodeLlama2c(vocab: Llama2cVocab, text: string): Int32Array {
  const lookup = pieceLookup(vocab);
  const tokens: number[] = [];

  // llama2.c pushes the id of the " " piece. Routing the space through step 2 gives the same id
  // and also covers a vocabulary without a " " piece, where llama2.c would push id -1.
  const bytes = utf8Encoder.encode(text.length > 0 ? ' ' + text : '');

  // Step 2: group each lead byte with up to 3 continuation bytes, as the C loop does.
  let start = 0;
  while (start < bytes.length) {
    let end = start + 1;
    while (end < bytes.length && (bytes[end] & 0xc0) === 0x80 && end - start < 4) {
      end++;
    }
    const codePoint = bytes.subarray(start, end);
    const id = lookup.get(byteKey(codePoint));
    if (id !== undefined) {
      tokens.push(id);
    } else {
      for (const byte of codePoint) {
        tokens.push(byte + LLAMA2C_BYTE_TOKEN_OFFSET);
      }
    }
    start = end;
  }

  // Step 3. pairIds[i] is the piece that tokens[i] + tokens[i + 1] concatenate to, or -1. Only
  // the two pairs next to a merge change, so the others are not looked up again.
  const pairId = (left: number, right: number): number =>
    lookup.get(byteKey(vocab.pieceBytes[left]) + byteKey(vocab.pieceBytes[right])) ?? -1;
  const pairIds: number[] = [];
  for (let i = 0; i + 1 < tokens.length; i++) {
    pairIds.push(pairId(tokens[i], tokens[i + 1]));
  }
  for (;;) {
    let bestScore = -1e10;
    let bestIndex = -1;
    for (let i = 0; i < pairIds.length; i++) {
      // Strictly greater, so that the leftmost pair wins a tie.
      if (pairIds[i] !== -1 && vocab.scores[pairIds[i]] > bestScore) {
        bestScore = vocab.scores[pairIds[i]];
        bestIndex = i;
      }
    }
    if (bestIndex === -1) {
      break;
    }
    tokens.splice(bestIndex, 2, pairIds[bestIndex]);
    pairIds.splice(bestIndex, 1);
    if (bestIndex > 0) {
      pairIds[bestIndex - 1] = pairId(tokens[bestIndex - 1], tokens[bestIndex]);
    }
    if (bestIndex < pairIds.length) {
      pairIds[bestIndex] = pairId(tokens[bestIndex], tokens[bestIndex + 1]);
    }
  }
  return Int32Array.from(tokens);
}

const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

/**
 * Decodes token ids as llama2.c's `decode` does and returns the text. A piece right after BOS,
 * or at the start of `ids`, loses its leading space. Byte tokens `<0xXX>` become raw bytes,
 * and the bytes are decoded as UTF-8 at the end, so one character may span several byte tokens.
 * BOS and EOS produce no text, and the unknown token produces its piece `<unk>`.
 */
export function decodeLlama2c(vocab: Llama2cVocab, ids: ArrayLike<number>): string {
  const bytes: number[] = [];
  let previous = LLAMA2C_BOS_ID;
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id >= vocab.pieceBytes.length) {
      throw new KvpackError(
        'INVALID_ARGUMENT',
        `Invalid token id ${id} at index ${i}: expected an integer from 0 to ${vocab.pieceBytes.length - 1}.`,
        { index: i, tokenId: id },
      );
    }
    if (id !== LLAMA2C_BOS_ID && id !== LLAMA2C_EOS_ID) {
      let piece = vocab.pieceBytes[id];
      if (previous === LLAMA2C_BOS_ID && piece[0] === 0x20) {
        piece = piece.subarray(1);
      }
      const bytePiece = BYTE_PIECE.exec(vocab.pieces[id]);
      if (bytePiece) {
        bytes.push(Number.parseInt(bytePiece[1], 16));
      } else {
        bytes.push(...piece);
      }
    }
    previous = id;
  }
  // ignoreBOM keeps a leading U+FEFF, because llama2.c prints the bytes as they are.
  return new TextDecoder('utf-8', { ignoreBOM: true }).decode(Uint8Array.from(bytes));
}
