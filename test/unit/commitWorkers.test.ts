/** The soak's check of a file written by one-request commits (test/kit/commitWorkers.ts): each rule catches its violation. */
import { checkCommittedSections, sectionText } from "../kit/commitWorkers";

const a = sectionText("big", 0, 0, 64);
const b = sectionText("big", 1, 0, 64);
const c = sectionText("big", 0, 1, 64);

test("sections are exactly sectionBytes long and unique by worker and number", () => {
  expect([a, b, c].map((s) => s.length)).toEqual([64, 64, 64]);
  expect(new Set([a, b, c]).size).toBe(3);
});

test("a right file: every acknowledged section once, a failed one at most once", () => {
  expect(checkCommittedSections(a + b, "big", [a, b], [])).toEqual([]);
  expect(checkCommittedSections(a + c + b, "big", [a, b], [c])).toEqual([]);
  expect(checkCommittedSections(a + b, "big", [a, b], [c])).toEqual([]);
});

test("each violation is named", () => {
  expect(checkCommittedSections(a, "big", [a, b], [])).toEqual(["acknowledged section <big 1-0 is in the file 0 times"]);
  expect(checkCommittedSections(a + a + b, "big", [a, b], [])).toEqual(["acknowledged section <big 0-0 is in the file 2 times"]);
  expect(checkCommittedSections(a + c + c, "big", [a], [c])).toEqual(["section <big 0-1, whose commit failed, is in the file 2 times"]);
  expect(checkCommittedSections(a + c, "big", [a], [])).toEqual(["section <big 0-1 is in the file but was never sent"]);
  expect(checkCommittedSections(a + b.slice(0, 20), "big", [a], [b])).toEqual(["the file ends with 20 bytes that are not a whole section"]);
  expect(checkCommittedSections(a.slice(0, 10) + b, "big", [b], [a])[0]).toMatch(/^bytes 0-10 of the file are not a whole section/);
});
