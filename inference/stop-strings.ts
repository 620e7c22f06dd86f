/**
 * Holds back generated text that could be the start of a stop string, so that a streaming client
 * never sees text that is later cut. `push` returns the text that is safe to emit.
 */
export class StopStringFilter {
  private pending = '';
  private stopped = false;
  private readonly holdBack: number;

  constructor(private readonly stopStrings: readonly string[]) {
    this.holdBack = Math.max(0, ...stopStrings.map((stop) => stop.length - 1));
  }

  /** True once a stop string was found; nothing after it is emitted. */
  get matched(): boolean {
    return this.stopped;
  }

  push(text: string): string {
    if (this.stopped) {
      return '';
    }
    this.pending += text;
    const hit = this.firstMatch();
    if (hit !== undefined) {
      this.stopped = true;
      const out = this.pending.slice(0, hit);
      this.pending = '';
      return out;
    }
    const safeLength = this.safePrefixLength();
    const out = this.pending.slice(0, safeLength);
    this.pending = this.pending.slice(safeLength);
    return out;
  }

  /** Emits what is held back once generation ends without a stop string. */
  flush(): string {
    const out = this.stopped ? '' : this.pending;
    this.pending = '';
    return out;
  }

  private firstMatch(): number | undefined {
    let first: number | undefined;
    for (const stop of this.stopStrings) {
      const index = this.pending.indexOf(stop);
      if (index >= 0 && (first === undefined || index < first)) first = index;
    }
    return first;
  }

  /** Length of the pending text that cannot begin any stop string. */
  private safePrefixLength(): number {
    // Only a tail shorter than the longest stop string can still grow into a match.
    for (let start = Math.max(0, this.pending.length - this.holdBack); start < this.pending.length; start++) {
      const tail = this.pending.slice(start);
      if (this.stopStrings.some((stop) => stop.startsWith(tail))) {
        return start;
      }
    }
    return this.pending.length;
  }
}
