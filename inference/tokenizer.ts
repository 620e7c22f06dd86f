import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { AutoTokenizer, env, type PreTrainedTokenizer } from '@huggingface/transformers';
import { KvpackError } from '../common/errors.js';

/** The files that Transformers.js 4.3.2 reads to build a tokenizer. */
const TOKENIZER_FILE = 'tokenizer.json';
const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';

export interface EncodeOptions {
  /** Put the BOS token in front of the ids when the tokenizer defines one (Qwen tokenizers do not). Default false. */
  addBos?: boolean;
}

export interface DecodeOptions {
  /** Leave special tokens (BOS, EOS, unknown, …) out of the text. Default true. */
  skipSpecialTokens?: boolean;
}

/**
 * A Hugging Face tokenizer (tokenizer.json and tokenizer_config.json) loaded from a model folder
 * through Transformers.js, with remote loading disabled.
 */
export class Tokenizer {
  /** Absolute path of the model folder. */
  readonly folder: string;
  readonly bosTokenId: number | undefined;
  readonly eosTokenId: number | undefined;
  /** Number of token ids, added tokens included: the largest id plus one. */
  readonly vocabSize: number;
  readonly #tokenizer: PreTrainedTokenizer;

  private constructor(folder: string, tokenizer: PreTrainedTokenizer) {
    this.folder = folder;
    this.#tokenizer = tokenizer;
    this.bosTokenId = tokenIdOrUndefined(tokenizer.bos_token_id);
    this.eosTokenId = tokenIdOrUndefined(tokenizer.eos_token_id);
    let maxId = -1;
    for (const id of tokenizer.get_vocab().values()) {
      maxId = Math.max(maxId, id);
    }
    this.vocabSize = maxId + 1;
  }

  /**
   * Loads the tokenizer of a model folder. Sets `env.allowRemoteModels = false` in Transformers.js,
   * for every later load in this process too, so that nothing is fetched from the Hugging Face Hub.
   * Raises TOKENIZER_INVALID when the folder or one of the files is missing or invalid.
   */
  static async fromFolder(dir: string): Promise<Tokenizer> {
    // Transformers.js takes a relative path that looks like "owner/name" for a Hub model id and
    // looks it up under env.localModelPath, so only an absolute path is safe.
    const folder = path.resolve(dir);
    await checkFolder(folder);
    // Checked here, because Transformers.js fails with a TypeError on a missing
    // tokenizer_config.json and caches that result, so it misses a file that is added later.
    await readTokenizerJson(folder, TOKENIZER_FILE);
    await readTokenizerJson(folder, TOKENIZER_CONFIG_FILE);

    env.allowRemoteModels = false;
    let tokenizer: PreTrainedTokenizer;
    try {
      tokenizer = await AutoTokenizer.from_pretrained(folder, { local_files_only: true });
    } catch (error) {
      throw new KvpackError(
        'TOKENIZER_INVALID',
        `Failed to load the tokenizer in ${folder}: ${(error as Error).message}. Check that tokenizer.json ` +
          'is a Hugging Face tokenizers file.',
        { folder },
      );
    }
    keepByteOrderMarks(tokenizer._tokenizer.decoder);
    return new Tokenizer(folder, tokenizer);
  }

  /** Encodes text to token ids. Special-token text such as "</s>" in `text` becomes that token. */
  encode(text: string, { addBos = false }: EncodeOptions = {}): Int32Array {
    const ids = this.#tokenizer.encode(text, { add_special_tokens: false });
    if (!addBos) {
      return Int32Array.from(ids);
    }
    if (this.bosTokenId === undefined) {
      // Some families (Qwen2, Qwen3) define no BOS and start sequences with the text itself.
      return Int32Array.from(ids);
    }
    const result = new Int32Array(ids.length + 1);
    result[0] = this.bosTokenId;
    result.set(ids, 1);
    return result;
  }

  /** Decodes token ids to text. Raises INVALID_ARGUMENT for an id outside the vocabulary. */
  decode(ids: ArrayLike<number>, { skipSpecialTokens = true }: DecodeOptions = {}): string {
    const list = Array.from(ids);
    list.forEach((id, index) => checkTokenId(this, id, index));
    if (list.length === 0) {
      // Transformers.js raises on an empty list.
      return '';
    }
    return this.#tokenizer.decode(list, { skip_special_tokens: skipSpecialTokens });
  }

  /** Starts decoding a sequence of generated tokens one token at a time. */
  createStreamDecoder(): StreamDecoder {
    return new StreamDecoder(this);
  }

}

function checkTokenId(tokenizer: Tokenizer, id: number, index?: number): void {
  if (!Number.isInteger(id) || id < 0 || id >= tokenizer.vocabSize) {
    const where = index === undefined ? '' : ` at index ${index}`;
    throw new KvpackError(
      'INVALID_ARGUMENT',
      `Invalid token id ${id}${where}: expected an integer from 0 to ${tokenizer.vocabSize - 1} ` +
        `(the vocabulary of ${tokenizer.folder}).`,
      { tokenId: id, index, folder: tokenizer.folder },
    );
  }
}

/**
 * Turns generated tokens into text deltas. The deltas concatenate to `decode(allIds)`, with
 * special tokens skipped: a character that spans several byte tokens comes out once it is
 * complete, and the decoder's removal of the first leading space happens once, at the start.
 *
 * Each push decodes a short window twice, from the start of the previously returned chunk to the
 * last returned token and to the new token, and returns the difference. The window starts with
 * the same token in both decodes, so the decoder's leading-space strip affects both alike. Text
 * that ends in U+FFFD is held back, because the next byte token may complete the character.
 *
 * NOTE: for tokenizers with clean_up_tokenization_spaces on, the cleanup of " ." or " 's" can
 * change text that an earlier delta already returned, and the deltas then differ from decode().
 * The tokenizers that kvpack writes turn it off.
 */
export class StreamDecoder {
  readonly #tokenizer: Tokenizer;
  readonly #ids: number[] = [];
  /** Start of the window that each push decodes again. */
  #prefixOffset = 0;
  /** End of the tokens whose text has been returned. */
  #readOffset = 0;

  constructor(tokenizer: Tokenizer) {
    this.#tokenizer = tokenizer;
  }

  /** Adds one generated token and returns the text it completes, often empty. */
  push(tokenId: number): string {
    checkTokenId(this.#tokenizer, tokenId);
    this.#ids.push(tokenId);
    return this.#takeDelta(false);
  }

  /** Returns the text held back so far, an incomplete character included, as U+FFFD. */
  flush(): string {
    return this.#takeDelta(true);
  }

  #takeDelta(force: boolean): string {
    if (this.#readOffset === this.#ids.length) {
      return '';
    }
    const prefixText = this.#tokenizer.decode(this.#ids.slice(this.#prefixOffset, this.#readOffset));
    const text = this.#tokenizer.decode(this.#ids.slice(this.#prefixOffset));
    if (!force && (text.length <= prefixText.length || text.endsWith('\uFFFD'))) {
      return '';
    }
    this.#prefixOffset = this.#readOffset;
    this.#readOffset = this.#ids.length;
    return text.slice(prefixText.length);
  }
}

/**
 * Returns the sha256 (hex) of tokenizer.json followed by tokenizer_config.json, so that cached
 * results keyed by it change when either file changes.
 */
export async function fingerprintTokenizer(dir: string): Promise<string> {
  const folder = path.resolve(dir);
  const hash = createHash('sha256');
  hash.update(await readTokenizerFile(folder, TOKENIZER_FILE));
  hash.update(await readTokenizerFile(folder, TOKENIZER_CONFIG_FILE));
  return hash.digest('hex');
}

async function checkFolder(folder: string): Promise<void> {
  let isFolder: boolean;
  try {
    isFolder = (await stat(folder)).isDirectory();
  } catch {
    isFolder = false;
  }
  if (!isFolder) {
    throw new KvpackError(
      'TOKENIZER_INVALID',
      `Tokenizer folder not found: ${folder}. Pass the model folder that contains tokenizer.json and ` +
        'tokenizer_config.json.',
      { folder },
    );
  }
}

async function readTokenizerFile(folder: string, name: string): Promise<Buffer> {
  const file = path.join(folder, name);
  try {
    return await readFile(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new KvpackError(
        'TOKENIZER_INVALID',
        `Missing ${name} in ${folder}. A model folder needs tokenizer.json and tokenizer_config.json, ` +
          'and `kvpack model import-llama2c` writes them for a llama2.c checkpoint.',
        { folder, file },
      );
    }
    throw new KvpackError('TOKENIZER_INVALID', `Failed to read ${file}: ${(error as Error).message}`, {
      folder,
      file,
    });
  }
}

async function readTokenizerJson(folder: string, name: string): Promise<object> {
  const file = path.join(folder, name);
  const bytes = await readTokenizerFile(folder, name);
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch (error) {
    throw new KvpackError('TOKENIZER_INVALID', `Invalid JSON in ${file}: ${(error as Error).message}`, {
      folder,
      file,
    });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new KvpackError('TOKENIZER_INVALID', `Invalid ${file}: expected a JSON object.`, { folder, file });
  }
  return value;
}

function tokenIdOrUndefined(id: unknown): number | undefined {
  return typeof id === 'number' && Number.isInteger(id) ? id : undefined;
}

/**
 * Makes the ByteFallback decoders keep a U+FEFF at the start of a run of byte tokens.
 *
 * NOTE: @huggingface/tokenizers 0.2.0 (under Transformers.js 4.3.2) decodes byte runs with a
 * default TextDecoder, which drops a leading byte order mark, while the Rust tokenizers library
 * and llama2.c keep it. This replaces that internal field and does nothing if it is gone.
 */
function keepByteOrderMarks(decoder: unknown): void {
  if ((typeof decoder !== 'object' && typeof decoder !== 'function') || decoder === null) {
    return;
  }
  const node = decoder as { config?: { type?: unknown }; text_decoder?: unknown; decoders?: unknown };
  if (node.config?.type === 'ByteFallback' && node.text_decoder instanceof TextDecoder) {
    node.text_decoder = new TextDecoder('utf-8', { ignoreBOM: true });
  }
  if (Array.isArray(node.decoders)) {
    node.decoders.forEach(keepByteOrderMarks);
  }
}
