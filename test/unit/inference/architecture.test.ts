import { describe, expect, it } from 'vitest';
import { parameterCount, parseHfConfig, ropeInverseFrequencies } from '../../../inference/architecture.js';
import { interleavedToHalves } from '../../../inference/llama2c-checkpoint.js';
import { architecturePresets } from '../../../inference/presets.js';

const base = {
  model_type: 'llama',
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 100,
  max_position_embeddings: 128,
};

describe('parseHfConfig', () => {
  it('reads a Llama config with defaults', () => {
    const arch = parseHfConfig(base, 'config.json');
    expect(arch.headDim).toBe(16);
    expect(arch.ropeTheta).toBe(10000);
    expect(arch.ropeScaling).toEqual({ kind: 'none' });
    expect(arch.attentionBias).toBe(false);
  });

  it('gives Qwen2 its Q/K/V bias', () => {
    expect(parseHfConfig({ ...base, model_type: 'qwen2' }, 'config.json').attentionBias).toBe(true);
  });

  it('reads llama3 rope scaling', () => {
    const arch = parseHfConfig(
      { ...base, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 } },
      'config.json',
    );
    expect(arch.ropeScaling.kind).toBe('llama3');
  });

  it('rejects yarn and dynamic scaling', () => {
    expect(() => parseHfConfig({ ...base, rope_scaling: { type: 'yarn', factor: 4 } }, 'c.json')).toThrow(/rope_scaling kind "yarn" is not supported/);
    expect(() => parseHfConfig({ ...base, rope_scaling: { type: 'dynamic', factor: 2 } }, 'c.json')).toThrow(/"dynamic"/);
  });

  it('rejects other architectures', () => {
    expect(() => parseHfConfig({ ...base, model_type: 'gpt2' }, 'c.json')).toThrow(/c\.json: model_type "gpt2" is not supported/);
  });

  it('rejects inconsistent head counts', () => {
    expect(() => parseHfConfig({ ...base, num_key_value_heads: 3 }, 'c.json')).toThrow(/must be a multiple of num_key_value_heads \(3\)/);
  });

  it('rejects a missing size', () => {
    const { hidden_size: _, ...rest } = base;
    expect(() => parseHfConfig(rest, 'c.json')).toThrow(/hidden_size must be a positive number, got undefined/);
  });
});

describe('rope frequencies', () => {
  const arch = parseHfConfig(base, 'config.json');

  it('match theta^(-2i/d)', () => {
    const invFreq = ropeInverseFrequencies(arch);
    expect(invFreq).toHaveLength(8);
    expect(invFreq[0]).toBe(1);
    expect(invFreq[1]).toBeCloseTo(Math.pow(10000, -2 / 16), 15);
  });

  it('linear scaling divides every frequency', () => {
    const scaled = ropeInverseFrequencies({ ...arch, ropeScaling: { kind: 'linear', factor: 4 } });
    ropeInverseFrequencies(arch).forEach((value, i) => expect(scaled[i]).toBeCloseTo(value / 4, 15));
  });

  it('llama3 scaling keeps high and divides low frequencies', () => {
    const scaling = { kind: 'llama3' as const, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 };
    const plain = ropeInverseFrequencies(arch);
    const scaled = ropeInverseFrequencies({ ...arch, ropeScaling: scaling });
    expect(scaled[0]).toBe(plain[0]);
    expect(scaled[7]).toBeCloseTo(plain[7] / 8, 15);
  });
});

describe('llama2.c conversion', () => {
  it('permutes interleaved rotary rows to halves', () => {
    // One head of head_dim 4 over 2 input features: rows r0..r3 become r0, r2, r1, r3.
    const weight = Float32Array.from([0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5]);
    expect(Array.from(interleavedToHalves(weight, 1, 4, 2))).toEqual([0, 0.5, 2, 2.5, 1, 1.5, 3, 3.5]);
  });

  it('the 100M preset has about 100M parameters', () => {
    const count = parameterCount(architecturePresets['llama-100m']);
    expect(count).toBeGreaterThan(90e6);
    expect(count).toBeLessThan(110e6);
  });

  it('the 350M preset has about 350M parameters', () => {
    const count = parameterCount(architecturePresets['llama-350m']);
    expect(count).toBeGreaterThan(300e6);
    expect(count).toBeLessThan(380e6);
  });
});
