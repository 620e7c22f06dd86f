import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { KvpackError } from '../common/errors.js';
import { cacheDir, findSharedDir } from '../common/paths.js';
import { importLlama2c } from './model-builders.js';

/** A file of a published model with the checksum it is published with. */
export interface ModelFileSpec {
  name: string;
  url: string;
  sha256: string;
  bytes: number;
}

export const DEFAULT_MODEL_NAME = 'stories260K';

/** The llama2.c stories260K checkpoint and its 512-token tokenizer, as published on Hugging Face (karpathy/tinyllamas). */
export const stories260kFiles: { checkpoint: ModelFileSpec; tokenizer: ModelFileSpec } = {
  checkpoint: {
    name: 'stories260K.bin',
    url: 'https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/stories260K.bin',
    sha256: 'b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696',
    bytes: 1_056_540,
  },
  tokenizer: {
    name: 'tok512.bin',
    url: 'https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/tok512.bin',
    sha256: '037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312',
    bytes: 6_227,
  },
};

export interface DefaultModelOptions {
  /** Cache folder; the model folder is `<cache>/models/stories260K`. Default `cacheDir()`. */
  cacheDir?: string;
  /**
   * Folder that contains stories260K.bin and tok512.bin; null downloads them into `<cache>/downloads`.
   * Default: `models/stories260K` of the shared assets folder when it exists, else null.
   */
  sourceDir?: string | null;
  /** Fetch implementation for downloads. Default the global `fetch`. */
  fetch?: typeof fetch;
  /** Progress lines for the user (conversion, downloads). */
  log?: (message: string) => void;
}

/**
 * Returns the folder of the default model, stories260K, converting it on first use: from the
 * shared assets when present, otherwise from files downloaded from Hugging Face. Every source
 * file is checked against its published sha256 before conversion; a mismatch raises
 * MODEL_CHECKSUM_MISMATCH.
 */
export async function resolveDefaultModel(options: DefaultModelOptions = {}): Promise<string> {
  const cache = options.cacheDir ?? cacheDir();
  const target = path.join(cache, 'models', DEFAULT_MODEL_NAME);
  if (existsSync(path.join(target, 'onnx', 'model.onnx')) && existsSync(path.join(target, 'config.json'))) {
    return target;
  }
  const sourceDir = options.sourceDir === undefined ? sharedStoriesDir() : options.sourceDir;
  const files = sourceDir
    ? { checkpoint: path.join(sourceDir, stories260kFiles.checkpoint.name), tokenizer: path.join(sourceDir, stories260kFiles.tokenizer.name) }
    : await downloadStoriesFiles(path.join(cache, 'downloads', DEFAULT_MODEL_NAME), options);
  await verifyModelFile(files.checkpoint, stories260kFiles.checkpoint);
  await verifyModelFile(files.tokenizer, stories260kFiles.tokenizer);
  options.log?.(`Converting ${DEFAULT_MODEL_NAME} into ${target}`);
  await importLlama2c(files.checkpoint, files.tokenizer, target, { overwrite: true });
  return target;
}

/** Raises MODEL_NOT_FOUND for a missing file and MODEL_CHECKSUM_MISMATCH when its sha256 differs from the published one. */
export async function verifyModelFile(file: string, spec: ModelFileSpec): Promise<void> {
  if (!existsSync(file)) {
    throw new KvpackError('MODEL_NOT_FOUND', `${file} does not exist; the default model needs ${spec.name} (${spec.url}).`, { file });
  }
  const actual = await sha256File(file);
  if (actual !== spec.sha256) {
    throw new KvpackError(
      'MODEL_CHECKSUM_MISMATCH',
      `${file} has sha256 ${actual} but ${spec.name} is published with ${spec.sha256}; replace it with the file from ${spec.url}.`,
      { file, expected: spec.sha256, actual },
    );
  }
}

function sharedStoriesDir(): string | undefined {
  const shared = findSharedDir();
  const dir = shared && path.join(shared, 'models', DEFAULT_MODEL_NAME);
  return dir && existsSync(path.join(dir, stories260kFiles.checkpoint.name)) ? dir : undefined;
}

async function downloadStoriesFiles(dir: string, options: DefaultModelOptions): Promise<{ checkpoint: string; tokenizer: string }> {
  await mkdir(dir, { recursive: true });
  const checkpoint = await downloadVerified(stories260kFiles.checkpoint, dir, options);
  const tokenizer = await downloadVerified(stories260kFiles.tokenizer, dir, options);
  return { checkpoint, tokenizer };
}

/**
 * Downloads a file into `dir` unless a copy with the right checksum is there already. The bytes go
 * to a temporary file that is renamed into place only when its sha256 matches.
 */
export async function downloadVerified(spec: ModelFileSpec, dir: string, options: DefaultModelOptions): Promise<string> {
  const file = path.join(dir, spec.name);
  if (existsSync(file) && (await sha256File(file)) === spec.sha256) {
    return file;
  }
  options.log?.(`Downloading ${spec.url}`);
  const fetchFile = options.fetch ?? fetch;
  let response: Response;
  try {
    response = await fetchFile(spec.url);
  } catch (error) {
    throw new KvpackError('MODEL_DOWNLOAD_FAILED', `Failed to download ${spec.url}: ${(error as Error).message}. Check the network, or pass --model DIR.`, { url: spec.url });
  }
  if (!response.ok || !response.body) {
    throw new KvpackError('MODEL_DOWNLOAD_FAILED', `Failed to download ${spec.url}: HTTP ${response.status}. Retry later, or pass --model DIR.`, {
      url: spec.url,
      status: response.status,
    });
  }
  const temp = `${file}.download-${randomBytes(4).toString('hex')}`;
  try {
    await pipeline(Readable.fromWeb(response.body as WebReadableStream<Uint8Array>), createWriteStream(temp));
    const actual = await sha256File(temp);
    if (actual !== spec.sha256) {
      throw new KvpackError(
        'MODEL_CHECKSUM_MISMATCH',
        `The download of ${spec.url} has sha256 ${actual} but ${spec.name} is published with ${spec.sha256}; it was discarded. Retry, or pass --model DIR.`,
        { url: spec.url, expected: spec.sha256, actual },
      );
    }
    await rename(temp, file);
  } finally {
    await rm(temp, { force: true });
  }
  return file;
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
