import { randomBytes } from 'node:crypto';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { KvpackError } from '../common/errors.js';
import {
  LLAMA2C_BOS_ID,
  LLAMA2C_BYTE_TOKEN_OFFSET,
  LLAMA2C_EOS_ID,
  LLAMA2C_UNK_ID,
  type Llama2cVocab,
} from './llama2c-tokenizer.js';

/** The JSON objects of a Hugging Face tokenizer, one per file that `writeTokenizerFiles` writes. */
export interface TokenizerFiles {
  /** tokenizer.json */
  tokenizer: object;
  /** tokenizer_config.json */
  tokenizerConfig: object;
  /** special_tokens_map.json */
  specialTokensMap: object;
}

export interface TokenizerFileOptions {
  /** Maximum sequence length in tokens, written as `model_max_length` (the checkpoint's seq_len). */
  modelMaxLength: number;
}

const UNK_TOKEN = '<unk>';
const BOS_TOKEN = '<s>';
const EOS_TOKEN = '</s>';
/** The sentencepiece meta symbol U+2581, which stands for a space inside pieces. */
const SPACE_SYMBOL = '\u2581';
const BYTE_TOKEN_COUNT = 256;
/** Smallest vocabulary that contains the three special tokens and the 256 byte tokens. */
export const MIN_BYTE_VOCAB_SIZE = LLAMA2C_BYTE_TOKEN_OFFSET + BYTE_TOKEN_COUNT;

function bytePiece(byte: number): string {
  return `<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`;
}

/**
 * Builds a Llama-style (sentencepiece BPE, `legacy: true`) tokenizer.json that encodes exactly as
 * llama2.c's `encode`, with `<unk>`, `<s>` and `</s>` at ids 0, 1 and 2.
 *
 * Pieces store spaces as '▁', and the normalizer prepends '▁' and replaces ' ' with '▁', which is
 * llama2.c's dummy prefix. Transformers.js 4.3.2 skips the normalizer for empty text, so empty text
 * still encodes to no tokens. The merges list every split of every piece into two pieces of the
 * vocabulary. They are ranked by the score of the merged piece, highest first, so that the lowest
 * rank that Hugging Face BPE merges first is llama2.c's highest score.
 *
 * NOTE: text may encode differently from llama2.c in these cases. Merge ranks cannot express
 * different pieces with equal scores, or two splits of one periodic piece ("ab"+"a" and "a"+"ba")
 * that compete for the same symbol. tok512.bin has neither. Literal "<s>", "</s>" and "<unk>" in
 * the text become the special tokens, as in every Hugging Face Llama tokenizer, where llama2.c
 * encodes their characters. A literal '▁' in the text encodes as a space.
 */
export function buildLlama2cTokenizerFiles(vocab: Llama2cVocab, options: TokenizerFileOptions): TokenizerFiles {
  validateMaxLength(options.modelMaxLength);
  validateLlama2cLayout(vocab);

  const specialPieces = new Map([
    [LLAMA2C_UNK_ID, UNK_TOKEN],
    [LLAMA2C_BOS_ID, BOS_TOKEN],
    [LLAMA2C_EOS_ID, EOS_TOKEN],
  ]);
  const hfPieces = vocab.pieces.map((piece, id) => specialPieces.get(id) ?? piece.replaceAll(' ', SPACE_SYMBOL));

  const vocabJson: Record<string, number> = {};
  hfPieces.forEach((piece, id) => {
    if (Object.hasOwn(vocabJson, piece)) {
      throw new KvpackError(
        'CHECKPOINT_INVALID',
        `Invalid llama2.c tokenizer: tokens ${vocabJson[piece]} and ${id} both map to the piece ` +
          `${JSON.stringify(piece)} (a ' ' in a llama2.c piece is written as '▁'), so a tokenizer.json ` +
          'cannot tell them apart.',
        { tokenIds: [vocabJson[piece], id], piece },
      );
    }
    vocabJson[piece] = id;
  });

  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specialAddedTokens(),
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: SPACE_SYMBOL },
        { type: 'Replace', pattern: { String: ' ' }, content: SPACE_SYMBOL },
      ],
    },
    pre_tokenizer: null,
    post_processor: bosPostProcessor(),
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: SPACE_SYMBOL }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        // Removes the dummy-prefix space of the first piece, as llama2.c does after BOS.
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: bpeModel(vocabJson, buildMerges(vocab, hfPieces)),
  };

  return {
    tokenizer,
    tokenizerConfig: llamaTokenizerConfig(options.modelMaxLength),
    specialTokensMap: specialTokensMap(),
  };
}

/**
 * Builds a tokenizer for random-weight test models. Ids 0–2 are `<unk>`, `<s>` and `</s>`, and
 * ids 3–258 are the byte tokens `<0x00>`…`<0xFF>`. Ids from 259 on are the pieces `<unused_0>`,
 * `<unused_1>`, …, which encoding never produces and decoding prints as they are.
 *
 * Every text encodes to its UTF-8 bytes as ids `byte + 3`. No dummy-prefix space is added,
 * so decoding returns the text unchanged.
 */
export function buildByteTokenizerFiles(vocabSize: number, options: TokenizerFileOptions): TokenizerFiles {
  if (!Number.isInteger(vocabSize) || vocabSize < MIN_BYTE_VOCAB_SIZE) {
    throw new KvpackError(
      'INVALID_ARGUMENT',
      `Invalid vocabulary size ${vocabSize} for a byte tokenizer: expected an integer of at least ` +
        `${MIN_BYTE_VOCAB_SIZE} (3 special tokens and 256 byte tokens).`,
      { vocabSize },
    );
  }
  validateMaxLength(options.modelMaxLength);

  const vocabJson: Record<string, number> = {
    [UNK_TOKEN]: LLAMA2C_UNK_ID,
    [BOS_TOKEN]: LLAMA2C_BOS_ID,
    [EOS_TOKEN]: LLAMA2C_EOS_ID,
  };
  for (let byte = 0; byte < BYTE_TOKEN_COUNT; byte++) {
    vocabJson[bytePiece(byte)] = byte + LLAMA2C_BYTE_TOKEN_OFFSET;
  }
  for (let id = MIN_BYTE_VOCAB_SIZE; id < vocabSize; id++) {
    vocabJson[`<unused_${id - MIN_BYTE_VOCAB_SIZE}>`] = id;
  }

  // Without merges and without single-character pieces, BPE leaves every character unknown,
  // so byte fallback turns each one into its UTF-8 byte tokens.
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specialAddedTokens(),
    normalizer: null,
    pre_tokenizer: null,
    post_processor: bosPostProcessor(),
    decoder: { type: 'Sequence', decoders: [{ type: 'ByteFallback' }, { type: 'Fuse' }] },
    model: bpeModel(vocabJson, []),
  };

  return {
    tokenizer,
    tokenizerConfig: llamaTokenizerConfig(options.modelMaxLength),
    specialTokensMap: specialTokensMap(),
  };
}

/**
 * Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json into `dir`, creating
 * it if needed. Each file goes to a temporary file first and is renamed into place, so a reader
 * never sees a partly written file.
 */
export async function writeTokenizerFiles(dir: string, files: TokenizerFiles): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeJsonAtomically(path.join(dir, 'tokenizer.json'), files.tokenizer);
  await writeJsonAtomically(path.join(dir, 'tokenizer_config.json'), files.tokenizerConfig);
  await writeJsonAtomically(path.join(dir, 'special_tokens_map.json'), files.specialTokensMap);
}

async function writeJsonAtomically(file: string, value: object): Promise<void> {
  const temporary = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(temporary, JSON.stringify(value, null, 2) + '\n', 'utf8');
    await rename(temporary, file);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}

function validateMaxLength(modelMaxLength: number): void {
  if (!Number.isInteger(modelMaxLength) || modelMaxLength <= 0) {
    throw new KvpackError(
      'INVALID_ARGUMENT',
      `Invalid modelMaxLength ${modelMaxLength}: expected a positive integer (the maximum sequence length).`,
      { modelMaxLength },
    );
  }
}

/**
 * Checks the id layout that llama2.c's `encode` relies on: byte b is token b + 3, which a
 * tokenizer.json can only reproduce when that token's piece is `<0xXX>`.
 */
function validateLlama2cLayout(vocab: Llama2cVocab): void {
  if (vocab.pieces.length < MIN_BYTE_VOCAB_SIZE) {
    throw new KvpackError(
      'CHECKPOINT_INVALID',
      `Invalid llama2.c tokenizer: it has ${vocab.pieces.length} tokens, but llama2.c needs at least ` +
        `${MIN_BYTE_VOCAB_SIZE} (unknown, BOS, EOS and 256 byte-fallback tokens).`,
      { vocabSize: vocab.pieces.length },
    );
  }
  for (let byte = 0; byte < BYTE_TOKEN_COUNT; byte++) {
    const id = byte + LLAMA2C_BYTE_TOKEN_OFFSET;
    if (vocab.pieces[id] !== bytePiece(byte)) {
      throw new KvpackError(
        'CHECKPOINT_INVALID',
        `Invalid llama2.c tokenizer: token ${id} is ${JSON.stringify(vocab.pieces[id])}, expected the ` +
          `byte-fallback token ${bytePiece(byte)}. Only tokenizers exported from a sentencepiece model ` +
          'with byte fallback can be converted.',
        { tokenId: id, piece: vocab.pieces[id] },
      );
    }
  }
}

/**
 * Lists every split of every piece into two pieces, ranked by the merged piece's score (highest
 * first), then by id, then by the length of the left part. Specials take no part, because their
 * pieces are renamed. Pieces are split at code points, which is where llama2.c's symbols end.
 */
function buildMerges(vocab: Llama2cVocab, hfPieces: string[]): [string, string][] {
  const idOf = new Map<string, number>();
  vocab.pieces.forEach((piece, id) => {
    // Ids below the byte tokens are the specials.
    if (id >= LLAMA2C_BYTE_TOKEN_OFFSET && !idOf.has(piece)) {
      idOf.set(piece, id);
    }
  });

  const candidates: { left: number; right: number; merged: number; leftLength: number }[] = [];
  for (const [piece, merged] of idOf) {
    const codePoints = Array.from(piece);
    for (let split = 1; split < codePoints.length; split++) {
      const left = idOf.get(codePoints.slice(0, split).join(''));
      const right = idOf.get(codePoints.slice(split).join(''));
      if (left !== undefined && right !== undefined) {
        candidates.push({ left, right, merged, leftLength: split });
      }
    }
  }

  candidates.sort(
    (a, b) =>
      vocab.scores[b.merged] - vocab.scores[a.merged] || a.merged - b.merged || a.leftLength - b.leftLength,
  );
  return candidates.map(({ left, right }) => [hfPieces[left], hfPieces[right]]);
}

function bpeModel(vocabJson: Record<string, number>, merges: [string, string][]): object {
  return {
    type: 'BPE',
    dropout: null,
    unk_token: UNK_TOKEN,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: true,
    byte_fallback: true,
    ignore_merges: false,
    vocab: vocabJson,
    merges,
  };
}

function specialAddedTokens(): object[] {
  return [
    [LLAMA2C_UNK_ID, UNK_TOKEN],
    [LLAMA2C_BOS_ID, BOS_TOKEN],
    [LLAMA2C_EOS_ID, EOS_TOKEN],
  ].map(([id, content]) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
}

/** Adds BOS in front of each sequence when special tokens are requested. */
function bosPostProcessor(): object {
  return {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: BOS_TOKEN, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [
      { SpecialToken: { id: BOS_TOKEN, type_id: 0 } },
      { Sequence: { id: 'A', type_id: 0 } },
      { SpecialToken: { id: BOS_TOKEN, type_id: 1 } },
      { Sequence: { id: 'B', type_id: 1 } },
    ],
    special_tokens: { [BOS_TOKEN]: { id: BOS_TOKEN, ids: [LLAMA2C_BOS_ID], tokens: [BOS_TOKEN] } },
  };
}

function specialTokenEntry(content: string): object {
  return { content, lstrip: false, normalized: false, rstrip: false, single_word: false };
}

/**
 * tokenizer_config.json as Transformers writes it for a Llama tokenizer. Transformers.js 4.3.2
 * reads `tokenizer_class`, the special tokens, `model_max_length` and `clean_up_tokenization_spaces`
 * from it. The cleanup must be off, because it would delete the space in " ." and " ,".
 */
function llamaTokenizerConfig(modelMaxLength: number): object {
  const addedTokensDecoder: Record<string, object> = {};
  for (const [id, content] of [
    [LLAMA2C_UNK_ID, UNK_TOKEN],
    [LLAMA2C_BOS_ID, BOS_TOKEN],
    [LLAMA2C_EOS_ID, EOS_TOKEN],
  ] as const) {
    addedTokensDecoder[String(id)] = { ...specialTokenEntry(content), special: true };
  }
  return {
    add_bos_token: true,
    add_eos_token: false,
    added_tokens_decoder: addedTokensDecoder,
    bos_token: BOS_TOKEN,
    clean_up_tokenization_spaces: false,
    eos_token: EOS_TOKEN,
    legacy: true,
    model_max_length: modelMaxLength,
    pad_token: null,
    tokenizer_class: 'LlamaTokenizer',
    unk_token: UNK_TOKEN,
  };
}

function specialTokensMap(): object {
  return {
    bos_token: specialTokenEntry(BOS_TOKEN),
    eos_token: specialTokenEntry(EOS_TOKEN),
    unk_token: specialTokenEntry(UNK_TOKEN),
  };
}
