import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { KvpackError } from '../common/errors.js';
import { parseHfConfig, type DecoderArchitecture } from './architecture.js';

/** ONNX files kvpack looks for, in order: the standard export, then a merged decoder export. */
const onnxCandidates = ['onnx/model.onnx', 'onnx/decoder_model_merged.onnx', 'model.onnx', 'decoder_model_merged.onnx'];

export interface ModelFolder {
  dir: string;
  onnxPath: string;
  config: Record<string, unknown>;
  arch: DecoderArchitecture;
}

/** Locates and validates the parts of a Hugging Face / Transformers.js model folder. */
export function openModelFolder(dir: string): ModelFolder {
  const resolved = path.resolve(dir);
  if (!existsSync(resolved) || !statSync(resolved).isDirectory()) {
    throw new KvpackError(
      'MODEL_NOT_FOUND',
      `Model folder not found: ${resolved}. Pass a folder with config.json, tokenizer.json and onnx/model.onnx; ` +
        '`kvpack model import-llama2c` or `kvpack model init-random` create one.',
      { dir: resolved },
    );
  }
  const onnxRelative = onnxCandidates.find((candidate) => existsSync(path.join(resolved, candidate)));
  if (!onnxRelative) {
    throw new KvpackError(
      'MODEL_NOT_FOUND',
      `No ONNX model in ${resolved}: expected ${onnxCandidates[0]} (found: ${listFolder(resolved)}). ` +
        'Export the model with `optimum-cli export onnx --task text-generation-with-past` or use a Transformers.js folder.',
      { dir: resolved },
    );
  }
  const config = readConfig(resolved);
  const arch = parseHfConfig(config, path.join(resolved, 'config.json'));
  return { dir: resolved, onnxPath: path.join(resolved, onnxRelative), config, arch };
}

function readConfig(dir: string): Record<string, unknown> {
  const file = path.join(dir, 'config.json');
  if (!existsSync(file)) {
    throw new KvpackError('MODEL_CONFIG_INVALID', `${file} is missing; a model folder needs the Hugging Face config.json of its model.`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new KvpackError('MODEL_CONFIG_INVALID', `${file} is not valid JSON: ${(error as Error).message}.`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new KvpackError('MODEL_CONFIG_INVALID', `${file} must contain a JSON object.`);
  }
  return parsed as Record<string, unknown>;
}

function listFolder(dir: string): string {
  const entries = readdirSync(dir, { recursive: true }).map(String).slice(0, 20);
  return entries.length > 0 ? entries.join(', ') : 'nothing';
}
