import { performance } from 'node:perf_hooks';
import type { ChunkArtifacts, ChunkJob, ChunkProcessor } from '../../ingest/chunk-processor.js';
import type { ExpectedFingerprints, Packet, PacketDtype, PacketKey } from '../../packets/packet.js';
import type { PacketStore, PacketStoreStats } from '../../packets/store.js';
import { HashedEmbedder } from '../../retrieval/hashed-embedder.js';

/**
 * Wall-clock time during which at least one timed call is in flight. Overlapping async calls count
 * once, so the total never exceeds the elapsed time.
 */
export class BusyTimer {
  busyMs = 0;
  calls = 0;
  #inFlight = 0;
  #busySince = 0;

  async time<T>(work: () => Promise<T>): Promise<T> {
    if (this.#inFlight === 0) this.#busySince = performance.now();
    this.#inFlight += 1;
    try {
      return await work();
    } finally {
      this.#inFlight -= 1;
      this.calls += 1;
      if (this.#inFlight === 0) this.busyMs += performance.now() - this.#busySince;
    }
  }
}

/** A chunk processor that times every `process` call of the one it wraps. */
export class TimedChunkProcessor implements ChunkProcessor {
  constructor(
    private readonly inner: ChunkProcessor,
    private readonly timer: BusyTimer,
  ) {}

  process(job: ChunkJob): Promise<ChunkArtifacts> {
    return this.timer.time(() => this.inner.process(job));
  }
}

/** A packet store that times every `put` of the one it wraps and passes the other calls through. */
export class TimedPacketStore implements PacketStore {
  constructor(
    private readonly inner: PacketStore,
    private readonly timer: BusyTimer,
  ) {}

  put(packet: Packet, dtype?: PacketDtype): Promise<void> {
    return this.timer.time(() => this.inner.put(packet, dtype));
  }

  get(key: PacketKey, expected: ExpectedFingerprints): Promise<Packet> {
    return this.inner.get(key, expected);
  }

  has(key: PacketKey): Promise<boolean> {
    return this.inner.has(key);
  }

  delete(key: PacketKey): Promise<boolean> {
    return this.inner.delete(key);
  }

  list(): Promise<PacketKey[]> {
    return this.inner.list();
  }

  stats(): PacketStoreStats {
    return this.inner.stats();
  }
}

/**
 * The default hashed embedder with its document embedding timed. It stays a `HashedEmbedder` with
 * the default settings, so the store records the same embedder and weights summaries by the same IDF.
 */
export class TimedHashedEmbedder extends HashedEmbedder {
  readonly #timer = new BusyTimer();

  get busyMs(): number {
    return this.#timer.busyMs;
  }

  override embedDocuments(texts: readonly string[]): Promise<Float32Array[]> {
    return this.#timer.time(() => super.embedDocuments(texts));
  }
}
