import { KvpackError } from '../common/errors.js';

/** A held generation slot; `release` is idempotent. */
export interface GenerationSlot {
  release(): void;
}

/**
 * Bounds the queries generating at the same time. There is no queue: when every slot is taken,
 * `acquire` raises TOO_MANY_REQUESTS at once with the seconds to wait before retrying.
 */
export class GenerationSlots {
  #inUse = 0;

  constructor(
    readonly capacity: number,
    private readonly retryAfterSeconds: number,
  ) {}

  get inUse(): number {
    return this.#inUse;
  }

  acquire(): GenerationSlot {
    if (this.#inUse >= this.capacity) {
      throw new KvpackError(
        'TOO_MANY_REQUESTS',
        `All ${this.capacity} generation slots are busy (maxConcurrentGenerations); retry after ${this.retryAfterSeconds} s.`,
        { retryAfterSeconds: this.retryAfterSeconds, capacity: this.capacity },
      );
    }
    this.#inUse += 1;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.#inUse -= 1;
      },
    };
  }
}
