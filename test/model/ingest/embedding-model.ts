import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { toHfConfig } from '../../../inference/architecture.js';
import { readLlama2cCheckpoint } from '../../../inference/llama2c-checkpoint.js';
import { readLlama2cTokenizer } from '../../../inference/llama2c-tokenizer.js';
import { buildDecoderGraph } from '../../../inference/onnx/decoder-graph.js';
import { encodeModel } from '../../../inference/onnx/proto.js';
import { buildLlama2cTokenizerFiles, writeTokenizerFiles } from '../../../inference/tokenizer-json.js';
import { stories260kFiles } from '../../helpers/shared.js';

/**
 * Writes a Transformers.js feature-extraction folder from stories260K: the decoder graph with the
 * final-norm hidden states as `last_hidden_state`, which Transformers.js runs as a LlamaModel.
 */
export async function writeStoriesEmbeddingModel(outDir: string): Promise<void> {
  const { checkpoint, tokenizer } = stories260kFiles();
  const { arch, weights } = readLlama2cCheckpoint(checkpoint);
  const vocab = readLlama2cTokenizer(tokenizer, arch.vocabSize);
  mkdirSync(path.join(outDir, 'onnx'), { recursive: true });
  writeFileSync(path.join(outDir, 'config.json'), JSON.stringify(toHfConfig(arch)));
  await writeTokenizerFiles(outDir, buildLlama2cTokenizerFiles(vocab, { modelMaxLength: arch.maxPositionEmbeddings }));
  const graph = buildDecoderGraph(arch, weights, { embeddingInput: 'input_ids', output: 'last_hidden_state' });
  writeFileSync(path.join(outDir, 'onnx', 'model.onnx'), encodeModel(graph));
}
