/**
 * "Memory that keeps growing", for the soak: a least-squares line through
 * a node's heap and RSS samples over the second half of the run (its last
 * incarnation only: a restart resets memory) must not rise by more than
 * max(16 MiB, 20% of the mean) over that span. A line through many samples
 * is not fooled by the saw-tooth of garbage collection, and ignoring the
 * first half ignores warm-up (JIT, caches, pools filling). A process
 * restarted late in the run warms up in the run's second half, so its
 * first half of life is ignored as well: its samples count from the later
 * of the run's midpoint and the midpoint of its own sampled life.
 */

export interface MemorySample {
  /** Milliseconds since the run started. */
  atMs: number;
  /** Node index. */
  node: number;
  /** The process's start time (a new value = a restarted process). */
  startTime: number;
  rss: number;
  heap: number;
}

/** Growth over the second half that counts as leaking: max(this, GROWTH_FRACTION of the mean). */
export const GROWTH_MIN_BYTES = 16 * 1024 * 1024;
export const GROWTH_FRACTION = 0.2;
/** Fewer samples than this on the last incarnation in the second half: too few to tell. */
const MIN_SAMPLES = 4;
const MiB = 1024 * 1024;

/** Least-squares slope of y over x. */
export function slope(points: Array<[number, number]>): number {
  const n = points.length;
  if (n === 0) return 0;
  const mx = points.reduce((s, p) => s + p[0], 0) / n;
  const my = points.reduce((s, p) => s + p[1], 0) / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

/** One problem per node and measure whose memory keeps growing; empty when none does. */
export function growthProblems(samples: MemorySample[], runMs: number): string[] {
  const problems: string[] = [];
  for (const node of [...new Set(samples.map((s) => s.node))].sort((a, b) => a - b)) {
    const mine = samples.filter((s) => s.node === node).sort((a, b) => a.atMs - b.atMs);
    const last = mine[mine.length - 1]!;
    const life = mine.filter((s) => s.startTime === last.startTime);
    const bornAt = life[0]!.atMs;
    const from = Math.max(runMs / 2, bornAt + (last.atMs - bornAt) / 2);
    const half = life.filter((s) => s.atMs >= from);
    if (half.length < MIN_SAMPLES) continue;
    const spanMs = half[half.length - 1]!.atMs - half[0]!.atMs;
    for (const key of ["heap", "rss"] as const) {
      const points = half.map((s) => [s.atMs, s[key]] as [number, number]);
      const mean = points.reduce((sum, p) => sum + p[1], 0) / points.length;
      const rise = slope(points) * spanMs;
      const allowed = Math.max(GROWTH_MIN_BYTES, GROWTH_FRACTION * mean);
      if (rise > allowed) {
        problems.push(
          `n${node + 1} ${key} keeps growing: +${(rise / MiB).toFixed(1)} MiB over the last ${(spanMs / 60_000).toFixed(1)} min (allowed ${(allowed / MiB).toFixed(1)} MiB)`,
        );
      }
    }
  }
  return problems;
}
