import { SeededRandom } from '../../../common/random.js';
import { KvCache, type KvLayout } from '../../../inference/kv-cache.js';
import { createPacket, type Packet, type PacketDescription } from '../../../packets/packet.js';

/** The cache shape of stories260K: 5 layers, 4 KV heads, head_dim 8. */
export const storiesLayout: KvLayout = { numLayers: 5, numKvHeads: 4, headDim: 8 };

export const MODEL_FINGERPRINT = 'a1'.repeat(32);
export const TOKENIZER_FINGERPRINT = 'b2'.repeat(32);
export const ADAPTER_FINGERPRINT = 'c3'.repeat(32);

/**
 * Builds a cache of normal samples whose spread differs per layer, key/value and head (0.01 to about 20),
 * so int8 scales differ per head. Head 0 of the first layer's values is all zero.
 */
export function syntheticCache(layout: KvLayout, length: number, seed: number): KvCache {
  const random = new SeededRandom(seed);
  const headFloats = length * layout.headDim;
  const block = (layer: number, kind: number) => {
    const data = new Float32Array(layout.numKvHeads * headFloats);
    for (let head = 0; head < layout.numKvHeads; head++) {
      const spread = layer === 0 && kind === 1 && head === 0 ? 0 : 0.01 * 3 ** ((layer + 2 * head + kind) % 8);
      for (let i = 0; i < headFloats; i++) data[head * headFloats + i] = spread * random.nextNormal();
    }
    return data;
  };
  const layers = Array.from({ length: layout.numLayers }, (_, layer) => layer);
  return new KvCache(
    layout,
    length,
    layers.map((layer) => block(layer, 0)),
    layers.map((layer) => block(layer, 1)),
  );
}

export function naiveDescription(chunkId: string, tokenCount: number): PacketDescription {
  return {
    modelFingerprint: MODEL_FINGERPRINT,
    tokenizerFingerprint: TOKENIZER_FINGERPRINT,
    adapterId: 'none',
    adapterFingerprint: '',
    variant: 'naive',
    chunkId,
    kind: 'full',
    tokenIds: Int32Array.from({ length: tokenCount }, (_, i) => (i * 37 + 5) % 512),
    prefixLength: 0,
    suffixLength: 0,
    basePosition: 0,
    createdAt: '2026-01-02T03:04:05.000Z',
  };
}

export function naivePacket(chunkId: string, tokenCount: number, seed = 1, layout: KvLayout = storiesLayout): Packet {
  return createPacket(naiveDescription(chunkId, tokenCount), syntheticCache(layout, tokenCount, seed));
}

/** Builds a reference-variant packet: 8 header entries, the tokens, 8 trailer entries. */
export function referencePacket(chunkId: string, tokenCount: number, seed = 2): Packet {
  const description: PacketDescription = {
    ...naiveDescription(chunkId, tokenCount),
    adapterId: 'stories-v1',
    adapterFingerprint: ADAPTER_FINGERPRINT,
    variant: 'reference',
    prefixLength: 8,
    suffixLength: 8,
  };
  return createPacket(description, syntheticCache(storiesLayout, tokenCount + 16, seed));
}
