/** When a snapshot is due and how far the log may be purged. */
import { compactionPoint, snapshotDue, type CompactionSettings } from "../../src/replica/compactionPolicy";
import { mulberry32 } from "../support/random";

const settings: CompactionSettings = { snapshotEveryEntries: 1000, snapshotEveryBytes: 1_000_000, keepSnapshots: 2, retainEntries: 100 };
const log = (firstSeq: number, lastSeq: number, bytesPerEntry = 100) => ({
  firstSeq,
  lastSeq,
  messages: lastSeq - firstSeq + 1,
  bytes: (lastSeq - firstSeq + 1) * bytesPerEntry,
});

test("a snapshot is due after enough entries or enough bytes, never with nothing new", () => {
  expect(snapshotDue(settings, log(1, 999), 999, 0)).toBe(false);
  expect(snapshotDue(settings, log(1, 1000), 1000, 0)).toBe(true);
  expect(snapshotDue(settings, log(1, 1500), 1500, 1000)).toBe(false);
  expect(snapshotDue(settings, log(1, 1500, 5000), 1500, 1000)).toBe(true); // 500 entries × 5000 B
  expect(snapshotDue(settings, log(1, 5000), 5000, 5000)).toBe(false);
  expect(snapshotDue({ ...settings, snapshotEveryEntries: 0 }, log(1, 5000), 5000, 0)).toBe(false);
});

test("the log is kept back to the oldest kept snapshot, the slowest live node, and the margin", () => {
  // Snapshots at 2000 and 3000, every node past them: keep from 2000 + 1 - 100.
  expect(compactionPoint({ log: log(1, 3500), liveApplied: [3500, 3400], keptSnapshotSeqs: [3000, 2000], retainEntries: 100 })).toBe(1901);
  // A slow live node bounds it.
  expect(compactionPoint({ log: log(1, 3500), liveApplied: [3500, 1500], keptSnapshotSeqs: [3000, 2000], retainEntries: 100 })).toBe(1401);
  // Nothing new to purge.
  expect(compactionPoint({ log: log(1901, 3500), liveApplied: [3500], keptSnapshotSeqs: [3000, 2000], retainEntries: 100 })).toBeUndefined();
  // No verified snapshot, or no live node: never purge.
  expect(compactionPoint({ log: log(1, 3500), liveApplied: [3500], keptSnapshotSeqs: [], retainEntries: 100 })).toBeUndefined();
  expect(compactionPoint({ log: log(1, 3500), liveApplied: [], keptSnapshotSeqs: [3000], retainEntries: 100 })).toBeUndefined();
});

test("the compaction point never passes a snapshot or a live node", () => {
  const seed = Number(process.env.DLM_SEED ?? 8);
  const rand = mulberry32(seed);
  const random = () => rand();
  for (let i = 0; i < 500; i++) {
    const last = 1 + Math.floor(random() * 10_000);
    const first = 1 + Math.floor(random() * last);
    const live = Array.from({ length: 1 + (i % 3) }, () => first - 1 + Math.floor(random() * (last - first + 2)));
    const snaps = Array.from({ length: 1 + (i % 2) }, () => Math.floor(random() * (last + 1)));
    const retain = Math.floor(random() * 200);
    const point = compactionPoint({ log: log(first, last), liveApplied: live, keptSnapshotSeqs: snaps, retainEntries: retain });
    if (point === undefined) continue;
    expect(point).toBeGreaterThan(first);
    expect(point - 1).toBeLessThanOrEqual(Math.min(...live, ...snaps) - retain);
  }
});
