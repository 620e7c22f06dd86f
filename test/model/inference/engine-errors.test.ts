import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InferenceEngine } from '../../../inference/engine.js';
import { generateFromPrompt } from '../../../inference/generate.js';
import { GraphBuilder } from '../../../inference/onnx/graph-builder.js';
import { decodeModel, encodeModel } from '../../../inference/onnx/proto.js';
import { testModelDir } from '../../helpers/models.js';
import { expectKvpackError } from '../../helpers/errors.js';

let scratch: string;
let tiny: InferenceEngine;

beforeAll(async () => {
  scratch = mkdtempSync(path.join(tmpdir(), 'kvpack-engine-errors-'));
  tiny = await InferenceEngine.load(testModelDir('llama-tiny'));
});
afterAll(async () => {
  await tiny.release();
  rmSync(scratch, { recursive: true, force: true });
});

/** Copies the tiny model folder and lets the test edit its config.json. */
function copyWithConfig(name: string, edit: (config: Record<string, unknown>) => void): string {
  const dir = path.join(scratch, name);
  cpSync(testModelDir('llama-tiny'), dir, { recursive: true });
  const configPath = path.join(dir, 'config.json');
  const config = JSON.parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>;
  edit(config);
  writeFileSync(configPath, JSON.stringify(config));
  return dir;
}

describe('engine errors', () => {
  it('missing folder', async () => {
    await expectKvpackError(InferenceEngine.load(path.join(scratch, 'nope')), 'MODEL_NOT_FOUND', /Model folder not found: .*nope/);
  });

  it('folder without an ONNX model', async () => {
    const dir = path.join(scratch, 'no-onnx');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'config.json'), '{}');
    await expectKvpackError(InferenceEngine.load(dir), 'MODEL_NOT_FOUND', /No ONNX model in .*expected onnx\/model\.onnx \(found: config\.json\)/);
  });

  it('unsupported architecture', async () => {
    const dir = copyWithConfig('gpt2', (config) => {
      config.model_type = 'gpt2';
    });
    await expectKvpackError(InferenceEngine.load(dir), 'UNSUPPORTED_ARCHITECTURE', /model_type "gpt2" is not supported/);
  });

  it('unsupported rope scaling', async () => {
    const dir = copyWithConfig('yarn', (config) => {
      config.rope_scaling = { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 128 };
    });
    await expectKvpackError(InferenceEngine.load(dir), 'UNSUPPORTED_ROPE_SCALING', /rope_scaling kind "yarn" is not supported/);
  });

  it('config that does not match the graph', async () => {
    const dir = copyWithConfig('layers', (config) => {
      config.num_hidden_layers = 3;
    });
    await expectKvpackError(InferenceEngine.load(dir), 'MODEL_CONFIG_INVALID', /has 2 layers .* config\.json describes 3 layers/);
  });

  it('fused attention operator', async () => {
    const dir = copyWithConfig('fused', () => {});
    const onnxPath = path.join(dir, 'onnx', 'model.onnx');
    const model = decodeModel(readFileSync(onnxPath));
    const g = new GraphBuilder('fused_');
    g.opMulti('GroupQueryAttention', ['q', 'k', 'v'], 1, { num_heads: 4, kv_num_heads: 2 }, ['gqa_out'], 'com.microsoft');
    model.graph.node.push(...g.nodes);
    model.opsetImport.push({ domain: 'com.microsoft', version: 1 });
    writeFileSync(onnxPath, encodeModel(model));
    await expectKvpackError(InferenceEngine.load(dir), 'UNSUPPORTED_ONNX_GRAPH', /com\.microsoft\.GroupQueryAttention/);
  });

  it('sequence beyond maximum positions', async () => {
    const max = tiny.arch.maxPositionEmbeddings;
    await expectKvpackError(tiny.forward({ tokens: [5, 6], positions: [max - 1, max] }), 'SEQUENCE_TOO_LONG', new RegExp(`Position ${max} is beyond the model's maximum of ${max} positions`));
  });

  it('generation ends at maximum positions', async () => {
    const prompt = 'x'.repeat(tiny.arch.maxPositionEmbeddings - 10);
    const result = await generateFromPrompt(tiny, prompt, { maxTokens: 50 });
    expect(result.finishReason).toBe('length');
    expect(result.cache.length).toBe(tiny.arch.maxPositionEmbeddings - 1);
  });

  it('KV cache of another model', async () => {
    const qwen = await InferenceEngine.load(testModelDir('qwen2-small'));
    const other = await qwen.forward({ tokens: [1, 2, 3] });
    await qwen.release();
    await expectKvpackError(tiny.forward({ tokens: [4], past: other.present }), 'KV_CACHE_SHAPE_MISMATCH', /past KV cache has 4 layers of \[1, 2, seq, 32\] but the model expects 2 layers of \[1, 2, seq, 16\]/);
  });

  it('token outside the vocabulary', async () => {
    await expectKvpackError(tiny.forward({ tokens: [1, 99999] }), 'INVALID_ARGUMENT', /Token id 99999 at index 1 is outside the vocabulary \[0, 320\)/);
  });

  it('both tokens and embeddings', async () => {
    await expectKvpackError(tiny.forward({ tokens: [1], embeddings: new Float32Array(64) }), 'INVALID_ARGUMENT', /either tokens or embeddings/);
  });
});
