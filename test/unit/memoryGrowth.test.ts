/**
 * The soak's definition of memory that keeps growing (bench/memoryGrowth.ts):
 * a steady climb is caught, GC saw-teeth and warm-up are not, and a restart
 * starts the count again.
 */
import { growthProblems, slope, type MemorySample } from "../../bench/memoryGrowth";

const MiB = 1024 * 1024;
const RUN_MS = 10 * 60_000;

function series(node: number, heapAt: (atMs: number, i: number) => number, startTime: (atMs: number) => number = () => 1): MemorySample[] {
  const out: MemorySample[] = [];
  for (let i = 0, at = 0; at <= RUN_MS; i++, at += 10_000) {
    out.push({ atMs: at, node, startTime: startTime(at), heap: heapAt(at, i), rss: 100 * MiB });
  }
  return out;
}

test("slope is the least-squares fit", () => {
  expect(slope([[0, 1], [1, 3], [2, 5]])).toBeCloseTo(2);
  expect(slope([[5, 7]])).toBe(0);
});

test("a steady climb in the second half is a problem; flat with GC saw-teeth and warm-up growth are not", () => {
  const climbing = series(0, (at) => 50 * MiB + (at / 60_000) * 8 * MiB); // +40 MiB over the second half
  const sawTooth = series(1, (_at, i) => 50 * MiB + (i % 6) * 10 * MiB); // GC every minute
  const warmUp = series(2, (at) => (at < RUN_MS / 2 ? 20 * MiB + (at / 60_000) * 20 * MiB : 120 * MiB));
  const problems = growthProblems([...climbing, ...sawTooth, ...warmUp], RUN_MS);
  expect(problems).toHaveLength(1);
  expect(problems[0]).toMatch(/^n1 heap keeps growing/);
});

test("only the last incarnation counts: growth before a restart is not a leak", () => {
  const restartAt = RUN_MS * 0.6;
  const s = series(
    0,
    (at) => (at < restartAt ? 50 * MiB + (at / 60_000) * 30 * MiB : 50 * MiB),
    (at) => (at < restartAt ? 1 : 2),
  );
  expect(growthProblems(s, RUN_MS)).toEqual([]);
});

test("a process restarted late in the run is judged after its own warm-up, not during it", () => {
  // Killed and restarted at 85% of the run (soak seed 1919, n3): it warms up
  // (+20 MiB) in its first half of life, then holds steady.
  const restartAt = RUN_MS * 0.85;
  const s = series(
    0,
    (at) => {
      if (at < restartAt) return 60 * MiB;
      const age = at - restartAt;
      const life = RUN_MS - restartAt;
      return age < life / 2 ? 40 * MiB + (age / (life / 2)) * 20 * MiB : 60 * MiB;
    },
    (at) => (at < restartAt ? 1 : 2),
  );
  expect(growthProblems(s, RUN_MS)).toEqual([]);
  // A late incarnation that keeps climbing through its second half of life is still caught.
  const leaking = series(
    1,
    (at) => (at < restartAt ? 60 * MiB : 40 * MiB + ((at - restartAt) / 60_000) * 40 * MiB),
    (at) => (at < restartAt ? 1 : 2),
  );
  expect(growthProblems(leaking, RUN_MS)).toEqual([expect.stringMatching(/^n2 heap keeps growing/)]);
});
