import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { KvpackError } from '../common/errors.js';
import { parseHfConfig, type DecoderArchitecture } from './architecture.js';
import { readLlama2cCheckpoint } from './llama2c-checkpoint.js';
import { readLlama2cTokenizer } from './llama2c-tokenizer.js';
import { writeModelFolder } from './model-folder-writer.js';
import { architecturePresets } from './presets.js';
import { randomWeights } from './random-weights.js';
import { buildByteTokenizerFiles, buildLlama2cTokenizerFiles, type TokenizerFiles } from './tokenizer-json.js';

export interface BuildOptions {
  /** Replace a non-empty output folder. Default false. */
  overwrite?: boolean;
}

/** Converts a llama2.c checkpoint and its tokenizer into a model folder. */
export async function importLlama2c(checkpointFile: string, tokenizerFile: string, outDir: string, options: BuildOptions = {}): Promise<DecoderArchitecture> {
  const checkpoint = readLlama2cCheckpoint(checkpointFile);
  const vocab = readLlama2cTokenizer(tokenizerFile, checkpoint.arch.vocabSize);
  await writeModelFolder(
    outDir,
    {
      arch: checkpoint.arch,
      weights: checkpoint.weights,
      tokenizer: buildLlama2cTokenizerFiles(vocab, { modelMaxLength: checkpoint.arch.maxPositionEmbeddings }),
      metadata: { source: `llama2c:${path.basename(checkpointFile)}`, source_sha256: sha256File(checkpointFile) },
    },
    { overwrite: options.overwrite ?? false },
  );
  return checkpoint.arch;
}

export interface RandomModelOptions extends BuildOptions {
  /** Copy tokenizer files from this model folder instead of writing a byte-level tokenizer. */
  tokenizerFrom?: string;
}

/** Builds a model folder with random weights of the given shape, the same for the same seed. */
export async function initRandomModel(arch: DecoderArchitecture, seed: number, outDir: string, options: RandomModelOptions = {}): Promise<void> {
  if (arch.modelType !== 'llama' && arch.modelType !== 'qwen2') {
    throw new KvpackError('UNSUPPORTED_ARCHITECTURE', `kvpack builds llama and qwen2 graphs; model_type ${arch.modelType} is not supported by the builder.`);
  }
  if (!Number.isInteger(seed) || seed < 0) {
    throw new KvpackError('INVALID_ARGUMENT', `--seed must be a non-negative integer, got ${seed}.`);
  }
  const tokenizer = options.tokenizerFrom
    ? readTokenizerFiles(options.tokenizerFrom)
    : buildByteTokenizerFiles(arch.vocabSize, { modelMaxLength: arch.maxPositionEmbeddings });
  await writeModelFolder(
    outDir,
    { arch, weights: randomWeights(arch, seed), tokenizer, metadata: { source: `random:seed=${seed}` } },
    { overwrite: options.overwrite ?? false },
  );
}

/**
 * Resolves `--config`: a preset name, a path to a config.json, or inline JSON in the Hugging Face
 * config format.
 */
export function resolveArchitecture(config: string): DecoderArchitecture {
  const preset = architecturePresets[config];
  if (preset) {
    return preset;
  }
  let text = config;
  let source = '--config';
  if (!config.trimStart().startsWith('{')) {
    if (!existsSync(config)) {
      throw new KvpackError(
        'INVALID_ARGUMENT',
        `--config ${JSON.stringify(config)} is neither a preset (${Object.keys(architecturePresets).join(', ')}), ` +
          'an existing config.json path, nor inline JSON.',
      );
    }
    text = readFileSync(config, 'utf8');
    source = config;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new KvpackError('MODEL_CONFIG_INVALID', `${source} is not valid JSON: ${(error as Error).message}.`);
  }
  return parseHfConfig(parsed as Record<string, unknown>, source);
}

function readTokenizerFiles(dir: string): TokenizerFiles {
  const read = (name: string) => {
    const file = path.join(dir, name);
    if (!existsSync(file)) {
      throw new KvpackError('TOKENIZER_INVALID', `${file} is missing; --tokenizer-from needs a model folder with ${name}.`);
    }
    return JSON.parse(readFileSync(file, 'utf8')) as object;
  };
  const specialTokensFile = path.join(dir, 'special_tokens_map.json');
  return {
    tokenizer: read('tokenizer.json'),
    tokenizerConfig: read('tokenizer_config.json'),
    specialTokensMap: existsSync(specialTokensFile) ? (JSON.parse(readFileSync(specialTokensFile, 'utf8')) as object) : {},
  };
}

function sha256File(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}
