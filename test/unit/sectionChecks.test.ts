/**
 * The checks every partition scenario and the soak end with
 * (test/kit/sectionWorkers.ts checkSections): each kind of violation they
 * exist to catch is caught, and a clean run passes.
 */
import { checkSections, type WorkerSection } from "../kit/sectionWorkers";

const line = (w: number, n: number, t: number, i: number) => `w${w}-${n} t=${t} i=${i}\n`;
const text = (w: number, n: number, t: number) => line(w, n, t, 0) + line(w, n, t, 1);
const section = (worker: number, n: number, token: number, outcome: WorkerSection["outcome"]): WorkerSection => ({
  worker,
  token,
  text: text(worker, n, token),
  outcome,
  endedAt: token * 10 + 5,
});

const sections = [section(0, 0, 1, "committed"), section(1, 0, 2, "refused"), section(0, 1, 3, "unknown"), section(1, 1, 4, "committed")];
const grants = new Map([
  [1, 10],
  [2, 20],
  [3, 30],
  [4, 40],
]);
const acked = [
  { token: 1, sentAt: 12, op: "append" },
  { token: 1, sentAt: 15, op: "release" },
  { token: 4, sentAt: 42, op: "release" },
];

test("the committed sections in token order, an unknown one whole or absent: no problem", () => {
  expect(checkSections(text(0, 0, 1) + text(1, 1, 4), sections, grants, acked)).toEqual([]);
  expect(checkSections(text(0, 0, 1) + text(0, 1, 3) + text(1, 1, 4), sections, grants, acked)).toEqual([]);
});

test("a missing committed section, a refused one present, a torn one, a token out of order, a stranger", () => {
  expect(checkSections(text(1, 1, 4), sections, grants, acked)).toEqual(["committed section t=1 is missing from the journal"]);
  expect(checkSections(text(0, 0, 1) + text(1, 0, 2) + text(1, 1, 4), sections, grants, acked)).toEqual(["journal holds refused section t=2"]);
  expect(checkSections(text(0, 0, 1) + line(0, 1, 3, 0) + text(1, 1, 4), sections, grants, acked)[0]).toMatch(/section t=3 \(unknown\) is torn/);
  expect(checkSections(text(1, 1, 4) + text(0, 0, 1), sections, grants, acked)).toContain("journal tokens not increasing: 4 then 1");
  expect(checkSections(text(0, 0, 1) + text(9, 9, 9) + text(1, 1, 4), sections, grants, acked)).toContain(
    "journal holds token 9, which no worker was granted",
  );
});

test("the fence: an acknowledged operation under an older token sent after a newer grant was seen", () => {
  const stale = [...acked, { token: 1, sentAt: 25, op: "append" }];
  expect(checkSections(text(0, 0, 1) + text(1, 1, 4), sections, grants, stale)).toEqual([
    "append under token 1 was acknowledged although token 2 had been granted before it was sent",
  ]);
});
