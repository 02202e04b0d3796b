/**
 * Compatibility with what deployed clusters already have: a log written
 * before shared locks, semaphores and acquireAll (commands without mode or
 * limit) and version-1 snapshots of it (one `holder` per lock).
 *
 * The fixture was recorded by running the state machine of commit 9f16061
 * (the last one before those features) on a seeded random log of the
 * commands it knew: the log, version-1 snapshots taken along the way and at
 * the end, and a digest of every effect it produced. The machine of today
 * must replay that log to the very same effects, and restoring any of the
 * recorded snapshots must give the state a replay reaches at that point.
 */
import { createHash } from "crypto";
import * as fs from "fs";
import * as path from "path";
import { apply, createState, restore, snapshot } from "../../src/state";
import type { Effect, LogEntry, StateSnapshotV1 } from "../../src/state";
import type { Limits } from "../../src/protocol/limits";

interface Fixture {
  limits: Limits;
  log: LogEntry[];
  snapshots: Array<{ entries: number; state: StateSnapshotV1 }>;
  final: StateSnapshotV1;
  effectsSha256: string;
}

const fixture = JSON.parse(fs.readFileSync(path.join(__dirname, "../support/fixtures/legacy-v1.json"), "utf8")) as Fixture;
const copy = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;

test("an old log replays to the very effects the old machine produced", () => {
  const state = createState(fixture.limits);
  const effects: Effect[][] = fixture.log.map((entry) => apply(state, copy(entry)));
  expect(createHash("sha256").update(JSON.stringify(effects)).digest("hex")).toBe(fixture.effectsSha256);
  // The recorded log holds waiters, staged sections and queued commits at its end.
  expect(fixture.final.locks.some(([, l]) => l.queue.length > 0 && l.holder)).toBe(true);
});

test("a version-1 snapshot restores to the state a replay reaches, and continues identically", () => {
  for (const { entries, state: v1 } of [...fixture.snapshots, { entries: fixture.log.length, state: fixture.final }]) {
    expect(v1.version).toBe(1);
    const replayed = createState(fixture.limits);
    for (const entry of fixture.log.slice(0, entries)) apply(replayed, copy(entry));
    const restored = restore(copy(v1));
    expect(snapshot(restored)).toEqual(snapshot(replayed));
  }
  // Restored from the middle and fed the rest, it ends where the full replay ends, with the same effects.
  const cut = fixture.snapshots[1];
  const resumed = restore(copy(cut.state));
  const full = createState(fixture.limits);
  const fullEffects = fixture.log.map((entry) => apply(full, copy(entry)));
  const resumedEffects = fixture.log.slice(cut.entries).map((entry) => apply(resumed, copy(entry)));
  expect(JSON.stringify(resumedEffects)).toBe(JSON.stringify(fullEffects.slice(cut.entries)));
  expect(snapshot(resumed)).toEqual(snapshot(full));
});
