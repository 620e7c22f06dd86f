/** One query in flight: its abort signal and why it was aborted, if it was. */
export interface Generation {
  readonly signal: AbortSignal;
  /** Why `abort` was called: a client disconnect or the shutdown grace period running out. */
  readonly reason: string | undefined;
  abort(reason: string): void;
  /** Removes the query from the registry once it settled. */
  finish(): void;
}

/** The queries in flight, so a shutdown can cancel those still running after its grace period. */
export class InFlightGenerations {
  readonly #active = new Set<{ controller: AbortController; reason: string | undefined }>();

  get size(): number {
    return this.#active.size;
  }

  start(): Generation {
    const entry = { controller: new AbortController(), reason: undefined as string | undefined };
    this.#active.add(entry);
    return {
      signal: entry.controller.signal,
      get reason() {
        return entry.reason;
      },
      abort: (reason) => {
        entry.reason ??= reason;
        entry.controller.abort();
      },
      finish: () => {
        this.#active.delete(entry);
      },
    };
  }

  abortAll(reason: string): number {
    for (const entry of this.#active) {
      entry.reason ??= reason;
      entry.controller.abort();
    }
    return this.#active.size;
  }
}
