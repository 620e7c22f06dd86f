import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { KvpackError } from '../common/errors.js';
import { FolderExistsError, replaceFolderAtomic, writeFileAtomic, writeJsonAtomic } from '../common/fs-atomic.js';
import { toHfConfig, type DecoderArchitecture } from './architecture.js';
import { buildDecoderGraph, type WeightMap } from './onnx/decoder-graph.js';
import { encodeModel } from './onnx/proto.js';
import { writeTokenizerFiles, type TokenizerFiles } from './tokenizer-json.js';

export interface ModelFolderContents {
  arch: DecoderArchitecture;
  weights: WeightMap;
  tokenizer: TokenizerFiles;
  /** Free-form provenance stored in the ONNX metadata, such as the source checkpoint. */
  metadata?: Record<string, string>;
}

/**
 * Writes a complete Hugging Face / Transformers.js model folder: config.json,
 * generation_config.json, the tokenizer files and onnx/model.onnx (the standard export with an
 * `input_ids` input). The folder appears complete or not at all.
 */
export async function writeModelFolder(outDir: string, contents: ModelFolderContents, options = { overwrite: false }): Promise<void> {
  const { arch } = contents;
  const model = buildDecoderGraph(arch, contents.weights, { embeddingInput: 'input_ids' });
  model.metadataProps = [
    ...(model.metadataProps ?? []),
    ...Object.entries(contents.metadata ?? {}).map(([key, value]) => ({ key, value })),
  ];
  const onnxBytes = encodeModel(model);
  try {
    await replaceFolderAtomic(
      outDir,
      async (temp) => {
        mkdirSync(path.join(temp, 'onnx'), { recursive: true });
        writeJsonAtomic(path.join(temp, 'config.json'), toHfConfig(arch));
        writeJsonAtomic(path.join(temp, 'generation_config.json'), generationConfig(arch));
        await writeTokenizerFiles(temp, contents.tokenizer);
        writeFileAtomic(path.join(temp, 'onnx', 'model.onnx'), onnxBytes);
      },
      options,
    );
  } catch (error) {
    if (error instanceof FolderExistsError) {
      throw new KvpackError(
        'INVALID_ARGUMENT',
        `Output folder ${outDir} already exists and is not empty; choose another --out or pass --force to replace it.`,
        { outDir },
      );
    }
    throw error;
  }
}

function generationConfig(arch: DecoderArchitecture): Record<string, unknown> {
  return {
    bos_token_id: arch.bosTokenId ?? null,
    eos_token_id: arch.eosTokenIds.length === 1 ? arch.eosTokenIds[0] : arch.eosTokenIds,
    max_length: arch.maxPositionEmbeddings,
    do_sample: false,
  };
}
