/** Median and spread of repeated timings, in ms. */
export interface TimingSummary {
  median: number;
  min: number;
  max: number;
  samples: number;
}

export function summarizeTimings(values: readonly number[]): TimingSummary {
  if (values.length === 0) {
    throw new Error('No timings to summarize; run at least one repetition.');
  }
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  const median = sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
  return { median, min: sorted[0], max: sorted[sorted.length - 1], samples: sorted.length };
}

/** `median (min–max)` with a precision that suits the magnitude. */
export function formatTiming(summary: TimingSummary): string {
  if (summary.samples === 1) {
    return formatMs(summary.median);
  }
  return `${formatMs(summary.median)} (${formatMs(summary.min)}–${formatMs(summary.max)})`;
}

export function formatMs(ms: number): string {
  if (ms >= 1000) return ms.toFixed(0);
  if (ms >= 10) return ms.toFixed(1);
  return ms.toFixed(2);
}
