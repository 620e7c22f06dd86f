import type { DecoderArchitecture } from './architecture.js';

/**
 * Named shapes for `kvpack model init-random --config NAME`. Random weights of a real shape cost
 * the same compute as trained ones, so these serve speed measurements and tests.
 */
export const architecturePresets: Record<string, DecoderArchitecture> = {
  /** A ~100M-parameter Llama 3 style shape (tied embeddings, grouped-query attention, llama3 rope). */
  'llama-100m': {
    modelType: 'llama',
    hiddenSize: 768,
    intermediateSize: 2048,
    numLayers: 12,
    numHeads: 12,
    numKvHeads: 4,
    headDim: 64,
    vocabSize: 32000,
    maxPositionEmbeddings: 16384,
    rmsNormEps: 1e-5,
    ropeTheta: 500000,
    ropeScaling: { kind: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 1024 },
    attentionBias: false,
    tieWordEmbeddings: true,
    bosTokenId: 1,
    eosTokenIds: [2],
  },
  /** A ~350M-parameter shape of the same family: 24 layers, hidden 1024, 8 KV heads. */
  'llama-350m': {
    modelType: 'llama',
    hiddenSize: 1024,
    intermediateSize: 2816,
    numLayers: 24,
    numHeads: 16,
    numKvHeads: 8,
    headDim: 64,
    vocabSize: 32000,
    maxPositionEmbeddings: 16384,
    rmsNormEps: 1e-5,
    ropeTheta: 500000,
    ropeScaling: { kind: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 1024 },
    attentionBias: false,
    tieWordEmbeddings: true,
    bosTokenId: 1,
    eosTokenIds: [2],
  },
  /** A small Qwen2 shape: Q/K/V bias, untied output head, 4 query heads per KV head. */
  'qwen2-small': {
    modelType: 'qwen2',
    hiddenSize: 256,
    intermediateSize: 704,
    numLayers: 4,
    numHeads: 8,
    numKvHeads: 2,
    headDim: 32,
    vocabSize: 1024,
    maxPositionEmbeddings: 2048,
    rmsNormEps: 1e-6,
    ropeTheta: 1000000,
    ropeScaling: { kind: 'none' },
    attentionBias: true,
    tieWordEmbeddings: false,
    bosTokenId: 1,
    eosTokenIds: [2],
  },
  /** A tiny Llama shape for fast tests, with linear rope scaling. */
  'llama-tiny': {
    modelType: 'llama',
    hiddenSize: 64,
    intermediateSize: 128,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 16,
    vocabSize: 320,
    maxPositionEmbeddings: 256,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: { kind: 'linear', factor: 2 },
    attentionBias: false,
    tieWordEmbeddings: true,
    bosTokenId: 1,
    eosTokenIds: [2],
  },
};
