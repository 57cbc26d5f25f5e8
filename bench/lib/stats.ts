/** Nearest-rank percentile (p in 0..100) of values that are already sorted ascending; NaN when empty. */
export function percentileSorted(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))] as number;
}

/** Median of unsorted values (mean of the middle two for an even count); NaN when empty. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

export interface LatencySummary {
  p50Ms: number;
  p99Ms: number;
}

/** p50 and p99 in milliseconds of per-operation durations given in nanoseconds. */
export function summariseLatencies(samplesNs: readonly number[]): LatencySummary {
  const sorted = Float64Array.from(samplesNs).sort();
  return { p50Ms: percentileSorted(sorted, 50) / 1e6, p99Ms: percentileSorted(sorted, 99) / 1e6 };
}

/** Rounds to `digits` significant digits (keeps JSON lines short without hiding small latencies). */
export function significant(value: number, digits = 3): number {
  if (!Number.isFinite(value) || value === 0) return value;
  return Number(value.toPrecision(digits));
}
