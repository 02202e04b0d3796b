/** The bench's verdict on issue 10's targets (bench/targets.ts): each target met or not, on the numbers of one run. */
import { checkTargets, formatTargets, TARGETS } from "../../bench/targets";

test("the targets are the issue's: 2.5x and 1.5x the floor, 3x 5,373 ops/s and 2x 639 handoffs/s", () => {
  expect(TARGETS).toEqual({ sectionFloorRatio: 2.5, commitFloorRatio: 1.5, locksPerSecond: 16_119, handoffsPerSecond: 1_278 });
});

test("each target is judged on its own, at its boundary inclusive", () => {
  const verdicts = checkTargets({ floorMs: 0.2, sectionP50Ms: 0.5, commitP50Ms: 0.31, handoffsPerSecond: 1_278, locksPerSecond: 16_118.4 });
  expect(verdicts.map((v) => [v.what, v.met])).toEqual([
    ["lone section p50", true],
    ["lone commit() p50", false],
    ["32 clients on one lock", true],
    ["256 clients on 256 locks", false],
  ]);
  expect(verdicts.map((v) => v.measured)).toEqual(["2.50x", "1.55x", "1,278/s", "16,118/s"]);
});

test("only the workloads that ran are judged, and the lines say met or NOT MET", () => {
  const verdicts = checkTargets({ floorMs: 0.3, commitP50Ms: 0.9 });
  expect(verdicts).toHaveLength(1);
  expect(formatTargets(verdicts)).toEqual([expect.stringMatching(/^ {2}lone commit\(\) p50 +target <= 1\.5x floor +measured 3\.00x +NOT MET$/)]);
});

test("with the relay measured, a latency target also shows what the request path alone reaches: two relays for a section, one for commit()", () => {
  const verdicts = checkTargets({ floorMs: 0.25, relayP50Ms: 0.35, sectionP50Ms: 1.2, commitP50Ms: 0.5, handoffsPerSecond: 900 });
  expect(verdicts.map((v) => v.pathBound)).toEqual(["2.80x", "1.40x", undefined]);
  const lines = formatTargets(verdicts);
  expect(lines[0]).toMatch(/NOT MET +\(the request path alone, no dlm: 2\.80x\)$/);
  expect(lines[2]).not.toMatch(/request path/);
});
