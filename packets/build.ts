import type { InferenceEngine } from '../inference/engine.js';
import type { AdapterVectors } from './adapter-vectors.js';
import { createPacket, NO_ADAPTER, type ExpectedFingerprints, type Packet, type PacketKind } from './packet.js';
import { prefillChunk } from './prefill.js';

export interface BuildPacketOptions {
  chunkId: string;
  kind: PacketKind;
  /** Without an adapter the packet is naive: the tokens alone. */
  adapter?: AdapterVectors;
  /** Also return the logits of every token, for surprisal scores. Default false. */
  logits?: boolean;
}

export interface BuiltPacket {
  packet: Packet;
  /** `[tokens, vocab]`: row j holds the logits after token j; empty unless requested. */
  logits: Float32Array;
}

/** Prefills tokens alone from position 0 (with the adapter, if any) and wraps the cache as a packet. */
export async function buildPacket(engine: InferenceEngine, tokens: Int32Array, options: BuildPacketOptions): Promise<BuiltPacket> {
  const prefill = await prefillChunk(engine, tokens, options.adapter, { logits: options.logits });
  const packet = createPacket(
    {
      modelFingerprint: engine.modelFingerprint,
      tokenizerFingerprint: engine.tokenizerFingerprint,
      adapterId: options.adapter?.id ?? NO_ADAPTER,
      adapterFingerprint: options.adapter?.fingerprint ?? '',
      variant: options.adapter?.variant ?? 'naive',
      chunkId: options.chunkId,
      kind: options.kind,
      tokenIds: Int32Array.from(tokens),
      prefixLength: prefill.prefixLength,
      suffixLength: prefill.suffixLength,
      basePosition: 0,
      createdAt: new Date().toISOString(),
    },
    prefill.kv,
  );
  return { packet, logits: prefill.logits };
}

/** The fingerprints a stored packet must carry to be spliced into this engine with this adapter. */
export function expectedFingerprints(engine: InferenceEngine, adapter?: AdapterVectors): ExpectedFingerprints {
  return {
    modelFingerprint: engine.modelFingerprint,
    tokenizerFingerprint: engine.tokenizerFingerprint,
    adapterFingerprint: adapter?.fingerprint ?? '',
  };
}
