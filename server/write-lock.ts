/**
 * Runs store writes one at a time, in call order: each document commit of an ingestion and each
 * deletion. A failed task does not block the ones after it.
 */
export class WriteLock {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => T | Promise<T>): Promise<T> {
    const result = this.#tail.then(task);
    this.#tail = result.catch(() => undefined);
    return result;
  }

  /** Resolves once every task queued so far has settled. */
  async idle(): Promise<void> {
    await this.#tail;
  }
}
