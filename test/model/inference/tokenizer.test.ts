import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { env } from '@huggingface/transformers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KvpackError } from '../../../common/errors.js';
import {
  decodeLlama2c,
  encodeLlama2c,
  readLlama2cTokenizer,
  type Llama2cVocab,
} from '../../../inference/llama2c-tokenizer.js';
import {
  buildByteTokenizerFiles,
  buildLlama2cTokenizerFiles,
  writeTokenizerFiles,
} from '../../../inference/tokenizer-json.js';
import { fingerprintTokenizer, Tokenizer } from '../../../inference/tokenizer.js';
import { requireSharedDir, stories260kFiles } from '../../helpers/shared.js';

const TOK512_VOCAB_SIZE = 512;
const SEQ_LEN = 512;

/** Samples for the llama2c tokenizer.json, each encoded and decoded against llama2.c's algorithm. */
const samples: [name: string, text: string][] = [
  ['ascii sentence', 'Once upon a time, there was a little girl named Lily.'],
  ['story with dialogue', 'Tom said, "I want to play!" Mom smiled: "Yes, you can."'],
  ['punctuation', 'Wait... what?! (Yes) [x] {y} <z> #1 @a $5 %6 ^7 &8 *9 _ ~ ` | \\ / ; :'],
  ['digits', '3.14159 2024-01-01 1,000,000 007'],
  ['whitespace runs', 'a  b   c\t\td     e'],
  ['leading and trailing spaces', '  leading and trailing  '],
  ['single space', ' '],
  ['newlines', 'line one\nline two\r\n\nend\n'],
  ['chinese', '我们今天去公园。'],
  ['cyrillic', 'Привет, мир!'],
  ['emoji', 'I ❤️ 🦙 and 👩‍👩‍👧!'],
  ['combining marks', 'e\u0301 a\u0308 n\u0303 Z\u0327\u030c'],
  ['latin accents', 'café, naïve, señor, Ærø'],
  ['unicode spaces', 'a\u00a0b\u200ac\u3000d'],
  ['byte order mark', '\ufeffText after a byte order mark'],
  ['mixed scripts', 'Hello 世界 🌍 Привет! Ünïcödé…'],
  ['empty string', ''],
];

/** Texts that llama2.c does not round-trip either: a lone surrogate becomes U+FFFD. */
const encodeOnlySamples: [name: string, text: string][] = [['lone surrogate', 'a\ud800b']];

function errorOf(action: () => unknown): KvpackError {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(KvpackError);
    return error as KvpackError;
  }
  throw new Error('expected the call to throw');
}

async function asyncErrorOf(action: () => Promise<unknown>): Promise<KvpackError> {
  try {
    await action();
  } catch (error) {
    expect(error).toBeInstanceOf(KvpackError);
    return error as KvpackError;
  }
  throw new Error('expected the call to reject');
}

function streamDeltas(tokenizer: Tokenizer, ids: ArrayLike<number>): string[] {
  const stream = tokenizer.createStreamDecoder();
  const deltas = Array.from(ids, (id) => stream.push(id));
  deltas.push(stream.flush());
  return deltas;
}

/** Paragraph texts of the HotpotQA subsample and the XQuAD contexts, per source. */
function corpusTexts(): Map<string, string[]> {
  const sharedDir = requireSharedDir();
  const sources = new Map<string, string[]>();

  const hotpot: string[] = [];
  const lines = readFileSync(path.join(sharedDir, 'data', 'hotpotqa', 'dev_subsampled.jsonl'), 'utf8').split('\n');
  for (const line of lines) {
    if (line.trim() === '') {
      continue;
    }
    const question = JSON.parse(line) as { contexts: { paragraph_text: string }[] };
    hotpot.push(...question.contexts.map((context) => context.paragraph_text));
  }
  sources.set('hotpotqa', hotpot);

  for (const language of ['en', 'de', 'zh']) {
    const file = path.join(sharedDir, 'data', 'xquad', `xquad.${language}.json`);
    const xquad = JSON.parse(readFileSync(file, 'utf8')) as { data: { paragraphs: { context: string }[] }[] };
    sources.set(
      `xquad.${language}`,
      xquad.data.flatMap((article) => article.paragraphs.map((paragraph) => paragraph.context)),
    );
  }
  return sources;
}

const temporaryDirs: string[] = [];

async function makeTemporaryDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'kvpack-tokenizer-test-'));
  temporaryDirs.push(dir);
  return dir;
}

afterAll(async () => {
  await Promise.all(temporaryDirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

describe('readLlama2cTokenizer', () => {
  it('reads tok512.bin', () => {
    const vocab = readLlama2cTokenizer(stories260kFiles().tokenizer, TOK512_VOCAB_SIZE);

    expect(vocab.maxTokenLength).toBe(7);
    expect(vocab.pieces).toHaveLength(TOK512_VOCAB_SIZE);
    expect(vocab.pieceBytes).toHaveLength(TOK512_VOCAB_SIZE);
    expect(vocab.scores).toHaveLength(TOK512_VOCAB_SIZE);
    expect(vocab.pieces.slice(0, 4)).toEqual(['<unk>', '\n<s>\n', '\n</s>\n', '<0x00>']);
    expect(vocab.pieces[258]).toBe('<0xFF>');
    expect(vocab.pieces[265]).toBe(' the');
  });

  it('rejects a missing file', () => {
    const error = errorOf(() => readLlama2cTokenizer('/nonexistent/tok512.bin', TOK512_VOCAB_SIZE));

    expect(error.code).toBe('CHECKPOINT_INVALID');
    expect(error.message).toMatch(/not found: \/nonexistent\/tok512\.bin/);
    expect(error.message).toMatch(/--tokenizer/);
  });

  it('rejects a truncated file', async () => {
    const bytes = await readFile(stories260kFiles().tokenizer);
    const file = path.join(await makeTemporaryDir(), 'truncated.bin');
    await writeFile(file, bytes.subarray(0, 3000));

    const error = errorOf(() => readLlama2cTokenizer(file, TOK512_VOCAB_SIZE));

    expect(error.code).toBe('CHECKPOINT_INVALID');
    expect(error.message).toMatch(/^Truncated llama2\.c tokenizer /);
    expect(error.message).toContain(file);
    expect(error.message).toMatch(/token \d+ at byte offset \d+/);
  });

  it('rejects a smaller vocabulary size', () => {
    const error = errorOf(() => readLlama2cTokenizer(stories260kFiles().tokenizer, TOK512_VOCAB_SIZE - 1));

    expect(error.code).toBe('CHECKPOINT_INVALID');
    expect(error.message).toMatch(/trailing bytes after the last token/);
  });

  it('rejects a larger vocabulary size', () => {
    const error = errorOf(() => readLlama2cTokenizer(stories260kFiles().tokenizer, TOK512_VOCAB_SIZE + 1));

    expect(error.code).toBe('CHECKPOINT_INVALID');
    expect(error.message).toMatch(/Truncated .* token 512 at byte offset 6227/);
  });

  it('rejects a negative length', async () => {
    const bytes = Buffer.alloc(12);
    bytes.writeInt32LE(7, 0);
    bytes.writeFloatLE(0, 4);
    bytes.writeInt32LE(-1, 8);
    const file = path.join(await makeTemporaryDir(), 'negative.bin');
    await writeFile(file, bytes);

    const error = errorOf(() => readLlama2cTokenizer(file, 1));

    expect(error.code).toBe('CHECKPOINT_INVALID');
    expect(error.message).toMatch(/token 0 at byte offset 8 has length -1/);
  });
});

describe('encodeLlama2c', () => {
  let vocab: Llama2cVocab;
  beforeAll(() => {
    vocab = readLlama2cTokenizer(stories260kFiles().tokenizer, TOK512_VOCAB_SIZE);
  });

  it('adds the dummy prefix', () => {
    expect(Array.from(encodeLlama2c(vocab, 'the'))).toEqual([265]);
    expect(Array.from(encodeLlama2c(vocab, 'Once upon a time')).map((id) => vocab.pieces[id])).toEqual([
      ' Once',
      ' upon',
      ' a',
      ' time',
    ]);
  });

  it('encodes empty text to nothing', () => {
    expect(Array.from(encodeLlama2c(vocab, ''))).toEqual([]);
  });

  it('falls back to bytes', () => {
    // '中' is E4 B8 AD in UTF-8 and has no piece, so each byte b becomes token b + 3.
    expect(Array.from(encodeLlama2c(vocab, '中'))).toEqual([410, 0xe4 + 3, 0xb8 + 3, 0xad + 3]);
  });

  it('decodes bytes and strips the first space', () => {
    expect(decodeLlama2c(vocab, encodeLlama2c(vocab, ' two  spaces 中'))).toBe(' two  spaces 中');
    expect(decodeLlama2c(vocab, [1, 265, 2])).toBe('the');
  });

  it('decode rejects an unknown id', () => {
    const error = errorOf(() => decodeLlama2c(vocab, [265, -1]));

    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toMatch(/Invalid token id -1 at index 1/);
  });
});

describe('llama2.c tokenizer.json', () => {
  let vocab: Llama2cVocab;
  let folder: string;
  let tokenizer: Tokenizer;

  beforeAll(async () => {
    vocab = readLlama2cTokenizer(stories260kFiles().tokenizer, TOK512_VOCAB_SIZE);
    folder = await makeTemporaryDir();
    await writeTokenizerFiles(folder, buildLlama2cTokenizerFiles(vocab, { modelMaxLength: SEQ_LEN }));
    tokenizer = await Tokenizer.fromFolder(folder);
  });

  it('loads the special tokens', () => {
    expect(tokenizer.bosTokenId).toBe(1);
    expect(tokenizer.eosTokenId).toBe(2);
    expect(tokenizer.vocabSize).toBe(TOK512_VOCAB_SIZE);
    expect(tokenizer.folder).toBe(folder);
  });

  it.each([...samples, ...encodeOnlySamples])('encodes %s as llama2.c', (_name, text) => {
    expect(Array.from(tokenizer.encode(text))).toEqual(Array.from(encodeLlama2c(vocab, text)));
  });

  it.each(samples)('round-trips %s', (_name, text) => {
    const ids = tokenizer.encode(text);

    expect(decodeLlama2c(vocab, ids)).toBe(text);
    expect(tokenizer.decode(ids)).toBe(text);
  });

  it('decodes a lone surrogate as llama2.c', () => {
    const ids = tokenizer.encode('a\ud800b');

    expect(tokenizer.decode(ids)).toBe('a\ufffdb');
    expect(decodeLlama2c(vocab, ids)).toBe('a\ufffdb');
  });

  it('adds BOS on request', () => {
    const ids = tokenizer.encode('Once upon a time', { addBos: true });

    expect(Array.from(ids)).toEqual([1, ...encodeLlama2c(vocab, 'Once upon a time')]);
    expect(tokenizer.decode(ids)).toBe('Once upon a time');
    expect(Array.from(tokenizer.encode('', { addBos: true }))).toEqual([1]);
  });

  it('keeps special tokens on request', () => {
    const ids = [1, ...tokenizer.encode('Hi there'), 2];

    expect(tokenizer.decode(ids, { skipSpecialTokens: false })).toBe('<s> Hi there</s>');
    expect(tokenizer.decode(ids)).toBe('Hi there');
    expect(tokenizer.decode([])).toBe('');
  });

  it('rejects an id outside the vocabulary', () => {
    const error = errorOf(() => tokenizer.decode([265, TOK512_VOCAB_SIZE]));

    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toMatch(/Invalid token id 512 at index 1: expected an integer from 0 to 511/);
  });

  it('encodes special-token text as the token', () => {
    // Every Hugging Face Llama tokenizer does this, while llama2.c encodes the characters of "</s>".
    expect(Array.from(tokenizer.encode('end</s>'))).toContain(2);
    expect(Array.from(encodeLlama2c(vocab, 'end</s>'))).not.toContain(2);
  });

  it('matches llama2.c on the corpus', () => {
    const counts: Record<string, number> = {};
    const mismatches: string[] = [];
    const failedRoundTrips: string[] = [];
    for (const [source, texts] of corpusTexts()) {
      counts[source] = texts.length;
      for (const text of texts) {
        const expected = encodeLlama2c(vocab, text);
        const actual = tokenizer.encode(text);
        if (actual.length !== expected.length || actual.some((id, i) => id !== expected[i])) {
          mismatches.push(`${source}: ${JSON.stringify(text.slice(0, 80))}`);
        }
        if (tokenizer.decode(actual) !== text) {
          failedRoundTrips.push(`${source}: ${JSON.stringify(text.slice(0, 80))}`);
        }
      }
    }

    expect(counts).toEqual({ hotpotqa: 4931, 'xquad.en': 240, 'xquad.de': 240, 'xquad.zh': 240 });
    expect(mismatches).toEqual([]);
    expect(failedRoundTrips).toEqual([]);
  });

  it.each(samples)('streams %s', (_name, text) => {
    const ids = tokenizer.encode(text, { addBos: true });

    expect(streamDeltas(tokenizer, ids).join('')).toBe(tokenizer.decode(ids));
  });

  it('streams a character only when complete', () => {
    // ' ' then the three byte tokens of '中', then ' the'.
    const ids = [410, 0xe4 + 3, 0xb8 + 3, 0xad + 3, 265];

    expect(streamDeltas(tokenizer, ids)).toEqual(['', '', '', '中', ' the', '']);
  });

  it('streams after EOS', () => {
    const ids = [1, ...tokenizer.encode('One day'), 2, ...tokenizer.encode(' she saw 🦙 a ball.')];

    expect(streamDeltas(tokenizer, ids).join('')).toBe(tokenizer.decode(ids));
  });

  it('flushes an incomplete character', () => {
    const stream = tokenizer.createStreamDecoder();

    expect(stream.push(265)).toBe('the');
    expect(stream.push(0xe4 + 3)).toBe('');
    expect(stream.flush()).toBe('\ufffd');
    expect(stream.flush()).toBe('');
  });

  it('fingerprints the tokenizer files', async () => {
    const copy = await makeTemporaryDir();
    await writeTokenizerFiles(copy, buildLlama2cTokenizerFiles(vocab, { modelMaxLength: SEQ_LEN }));
    const fingerprint = await fingerprintTokenizer(folder);

    expect(fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(await fingerprintTokenizer(copy)).toBe(fingerprint);

    await writeTokenizerFiles(copy, buildLlama2cTokenizerFiles(vocab, { modelMaxLength: SEQ_LEN * 2 }));
    expect(await fingerprintTokenizer(copy)).not.toBe(fingerprint);
  });
});

describe('byte tokenizer', () => {
  let tokenizer: Tokenizer;

  beforeAll(async () => {
    const folder = await makeTemporaryDir();
    await writeTokenizerFiles(folder, buildByteTokenizerFiles(600, { modelMaxLength: 128 }));
    tokenizer = await Tokenizer.fromFolder(folder);
  });

  it('encodes UTF-8 bytes', () => {
    const text = 'Hi 世界 🦙';
    const expected = Array.from(new TextEncoder().encode(text), (byte) => byte + 3);

    expect(Array.from(tokenizer.encode(text))).toEqual(expected);
    expect(Array.from(tokenizer.encode(text, { addBos: true }))).toEqual([1, ...expected]);
    expect(Array.from(tokenizer.encode(''))).toEqual([]);
  });

  it.each(samples)('round-trips %s', (_name, text) => {
    expect(tokenizer.decode(tokenizer.encode(text))).toBe(text);
  });

  it('streams bytes', () => {
    const ids = tokenizer.encode('  Привет 🦙!', { addBos: true });

    expect(streamDeltas(tokenizer, ids).join('')).toBe('  Привет 🦙!');
  });

  it('decodes unused ids as pieces', () => {
    expect(tokenizer.vocabSize).toBe(600);
    expect(tokenizer.decode([259, 599])).toBe('<unused_0><unused_340>');
  });

  it('rejects a vocabulary below 259', () => {
    const error = errorOf(() => buildByteTokenizerFiles(258, { modelMaxLength: 128 }));

    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toMatch(/at least 259/);
  });
});

describe('Tokenizer.fromFolder', () => {
  it('loads without network access', async () => {
    const folder = await makeTemporaryDir();
    await writeTokenizerFiles(folder, buildByteTokenizerFiles(300, { modelMaxLength: 64 }));
    const originalFetch = env.fetch;
    let fetchCalls = 0;
    env.fetch = async () => {
      fetchCalls++;
      throw new Error('network access in a tokenizer test');
    };
    try {
      const tokenizer = await Tokenizer.fromFolder(path.relative(process.cwd(), folder));

      expect(tokenizer.folder).toBe(folder);
      expect(env.allowRemoteModels).toBe(false);
    } finally {
      env.fetch = originalFetch;
    }
    expect(fetchCalls).toBe(0);
  });

  it('rejects a missing tokenizer.json', async () => {
    const folder = await makeTemporaryDir();
    await writeTokenizerFiles(folder, buildByteTokenizerFiles(300, { modelMaxLength: 64 }));
    await rm(path.join(folder, 'tokenizer.json'));

    const error = await asyncErrorOf(() => Tokenizer.fromFolder(folder));

    expect(error.code).toBe('TOKENIZER_INVALID');
    expect(error.message).toMatch(/^Missing tokenizer\.json in /);
    expect(error.message).toContain(folder);
  });

  it('rejects a missing tokenizer_config.json', async () => {
    const folder = await makeTemporaryDir();
    await writeTokenizerFiles(folder, buildByteTokenizerFiles(300, { modelMaxLength: 64 }));
    await rm(path.join(folder, 'tokenizer_config.json'));

    const error = await asyncErrorOf(() => Tokenizer.fromFolder(folder));

    expect(error.code).toBe('TOKENIZER_INVALID');
    expect(error.message).toMatch(/^Missing tokenizer_config\.json in /);
  });

  it('rejects a missing folder', async () => {
    const error = await asyncErrorOf(() => Tokenizer.fromFolder('/nonexistent/model'));

    expect(error.code).toBe('TOKENIZER_INVALID');
    expect(error.message).toMatch(/^Tokenizer folder not found: \/nonexistent\/model\./);
  });

  it('rejects invalid JSON', async () => {
    const folder = await makeTemporaryDir();
    await writeTokenizerFiles(folder, buildByteTokenizerFiles(300, { modelMaxLength: 64 }));
    await writeFile(path.join(folder, 'tokenizer.json'), '{"model": ');

    const error = await asyncErrorOf(() => Tokenizer.fromFolder(folder));

    expect(error.code).toBe('TOKENIZER_INVALID');
    expect(error.message).toMatch(/^Invalid JSON in .*tokenizer\.json: /);
  });

  it('rejects a tokenizer.json without a model', async () => {
    const folder = await makeTemporaryDir();
    await writeTokenizerFiles(folder, buildByteTokenizerFiles(300, { modelMaxLength: 64 }));
    await writeFile(path.join(folder, 'tokenizer.json'), '{"version": "1.0"}');

    const error = await asyncErrorOf(() => Tokenizer.fromFolder(folder));

    expect(error.code).toBe('TOKENIZER_INVALID');
    expect(error.message).toMatch(/^Failed to load the tokenizer in .*: Tokenizer must contain a "model" property/);
  });
});

describe('fingerprintTokenizer', () => {
  it('rejects a missing file', async () => {
    const error = await asyncErrorOf(() => fingerprintTokenizer('/nonexistent/model'));

    expect(error.code).toBe('TOKENIZER_INVALID');
    expect(error.message).toMatch(/^Missing tokenizer\.json in \/nonexistent\/model/);
  });
});
