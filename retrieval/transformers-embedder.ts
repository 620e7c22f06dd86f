import { createHash } from 'node:crypto';
import { createReadStream, existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { env, pipeline, type FeatureExtractionPipeline } from '@huggingface/transformers';
import { KvpackError } from '../common/errors.js';
import type { Embedder, EmbedderInfo } from './embedder.js';

export interface TransformersEmbedderOptions {
  /** Texts per pipeline call. Default 16. */
  batchSize?: number;
  /** Prepended to queries, for models trained with instructions such as "query: ". Default empty. */
  queryPrefix?: string;
  /** Prepended to documents, such as "passage: ". Default empty. */
  documentPrefix?: string;
}

/** The ONNX file Transformers.js 4.3.2 loads for dtype fp32. */
const ONNX_FILE = path.join('onnx', 'model.onnx');

/**
 * Runs a local sentence-embedding model folder (Transformers.js layout: config.json, tokenizer
 * files, onnx/model.onnx) through the Transformers.js feature-extraction pipeline with mean pooling
 * and L2 normalization. Remote loading is disabled, for every later load in this process too.
 */
export class TransformersEmbedder implements Embedder {
  readonly info: EmbedderInfo;
  readonly #extractor: FeatureExtractionPipeline;
  readonly #options: Required<TransformersEmbedderOptions>;

  private constructor(info: EmbedderInfo, extractor: FeatureExtractionPipeline, options: Required<TransformersEmbedderOptions>) {
    this.info = info;
    this.#extractor = extractor;
    this.#options = options;
  }

  /** Loads the model folder and runs one text to learn the vector dimension. */
  static async load(modelDir: string, options: TransformersEmbedderOptions = {}): Promise<TransformersEmbedder> {
    // Transformers.js reads a relative "owner/name" path as a Hub model id, so only an absolute path is safe.
    const folder = path.resolve(modelDir);
    checkModelFolder(folder);
    env.allowRemoteModels = false;
    let extractor: FeatureExtractionPipeline;
    try {
      extractor = await pipeline('feature-extraction', folder, { local_files_only: true, dtype: 'fp32' });
    } catch (error) {
      throw new KvpackError(
        'EMBEDDER_INVALID',
        `Failed to load ${folder} as a feature-extraction model: ${(error as Error).message}. ` +
          'Pass a Transformers.js sentence-embedding folder with config.json, tokenizer.json and onnx/model.onnx.',
        { folder },
      );
    }
    const resolved = { batchSize: options.batchSize ?? 16, queryPrefix: options.queryPrefix ?? '', documentPrefix: options.documentPrefix ?? '' };
    const probe = await runPipeline(extractor, ['dimension probe'], folder);
    const dimension = probe[0].length;
    const config = { model: folder, pooling: 'mean', normalize: true, queryPrefix: resolved.queryPrefix, documentPrefix: resolved.documentPrefix };
    const fingerprint = await fingerprintEmbedder(folder, dimension, config);
    return new TransformersEmbedder({ kind: 'transformers', dimension, config, fingerprint }, extractor, resolved);
  }

  async embedDocuments(texts: readonly string[]): Promise<Float32Array[]> {
    return this.embedBatches(texts.map((text) => this.#options.documentPrefix + text));
  }

  async embedQuery(text: string): Promise<Float32Array> {
    const [vector] = await this.embedBatches([this.#options.queryPrefix + text]);
    return vector;
  }

  async close(): Promise<void> {
    await this.#extractor.dispose();
  }

  private async embedBatches(texts: string[]): Promise<Float32Array[]> {
    const vectors: Float32Array[] = [];
    for (let start = 0; start < texts.length; start += this.#options.batchSize) {
      const batch = texts.slice(start, start + this.#options.batchSize);
      vectors.push(...(await runPipeline(this.#extractor, batch, String(this.info.config.model))));
    }
    return vectors;
  }
}

/** Runs the pipeline on a batch and splits the `[batch, dimension]` result into rows. */
async function runPipeline(extractor: FeatureExtractionPipeline, texts: string[], folder: string): Promise<Float32Array[]> {
  const output = await extractor(texts, { pooling: 'mean', normalize: true });
  const [rows, dimension] = output.dims;
  if (output.dims.length !== 2 || rows !== texts.length) {
    throw new KvpackError(
      'EMBEDDER_INVALID',
      `${folder} returned features of shape [${output.dims.join(', ')}] for ${texts.length} texts; expected [${texts.length}, dimension].`,
    );
  }
  const data = output.data as Float32Array;
  return Array.from({ length: rows }, (_, row) => data.slice(row * dimension, (row + 1) * dimension));
}

function checkModelFolder(folder: string): void {
  const missing = ['config.json', 'tokenizer.json', ONNX_FILE].filter((file) => !existsSync(path.join(folder, file)));
  if (missing.length > 0) {
    throw new KvpackError(
      'EMBEDDER_INVALID',
      `Embedding model folder ${folder} is missing ${missing.join(', ')}; pass a Transformers.js sentence-embedding folder.`,
      { folder, missing },
    );
  }
}

/** Computes sha256 over the settings and the model files, so that a store notices a changed model. */
async function fingerprintEmbedder(folder: string, dimension: number, config: Record<string, unknown>): Promise<string> {
  const hash = createHash('sha256');
  const { model: _model, ...settings } = config;
  hash.update(JSON.stringify({ kind: 'transformers', dimension, settings }));
  for (const file of ['config.json', 'tokenizer.json', ONNX_FILE]) {
    const full = path.join(folder, file);
    hash.update(`${file}\0${statSync(full).size}\0`);
    for await (const chunk of createReadStream(full)) hash.update(chunk as Buffer);
  }
  return hash.digest('hex');
}
