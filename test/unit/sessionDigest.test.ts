/**
 * The silence digest in the state: applied from the log, kept fresh by later
 * entries, shifted at takeovers, carried by snapshots; and a snapshot or log
 * from before digests still loads, crediting sessions as before.
 */
import { DEFAULT_LIMITS } from "../../src/protocol/limits";
import { apply, createState, restore, snapshot, type StateSnapshot } from "../../src/state";
import type { Command, LogEntry, State } from "../../src/state";
import { takeoverCredits } from "../../src/state/sessionLiveness";

const LIMITS = { ...DEFAULT_LIMITS, sessionTimeoutMs: 10_000 };

function entry(state: State, t: number, ...cmds: Command[]): LogEntry {
  return { v: 1, t, node: "n", epoch: state.epoch, cmds };
}

function lead(state: State, t: number, prevAliveAt?: number): void {
  const epoch = state.epoch + 1;
  apply(state, { v: 4, t, node: `n${epoch}`, epoch, cmds: [{ type: "leader", node: `n${epoch}`, epoch, limits: LIMITS, ...(prevAliveAt === undefined ? {} : { prevAliveAt }) }] });
}

function withSessions(): State {
  const state = createState(LIMITS);
  lead(state, 1000);
  apply(state, entry(state, 1000, { type: "hello", client: "aaaaaaaa1", seq: 1, ack: 0 }, { type: "hello", client: "bbbbbbbb2", seq: 1, ack: 0 }));
  return state;
}

test("credits come from the digest: listed at quietSince, unlisted at quietAfterMs before it, plus leaderless time", () => {
  const state = withSessions();
  apply(state, entry(state, 9000, { type: "sessionDigest", everyMs: 1000, quietAfterMs: 3500, quiet: [["aaaaaaaa1", 6000]] }));
  expect(state.sessionDigest).toMatchObject({ at: 9000, shiftMs: 0, quietSince: new Map([["aaaaaaaa1", 3000]]) });
  // The old leader wrote its key last at 9500, its next digest was due at 10000; takeover at 12000.
  lead(state, 12_000, 9500);
  expect(state.sessionDigest!.shiftMs).toBe(2500);
  expect(takeoverCredits(state, 12_050)).toEqual([
    ["aaaaaaaa1", 3000 + 2500],
    ["bbbbbbbb2", 9000 - 3500 + 2500],
  ]);
});

test("leaderless time counts from the old leader's next digest due time when its key was written later: it may have heard clients the log never saw", () => {
  const state = withSessions();
  apply(state, entry(state, 9000, { type: "sessionDigest", everyMs: 1000, quietAfterMs: 3500, quiet: [] }));
  lead(state, 20_000, 19_000);
  expect(state.sessionDigest!.shiftMs).toBe(10_000);
});

test("later entries keep it fresh: a logged request or sessionHeard of a listed session, a new session, a session's end", () => {
  const state = withSessions();
  apply(state, entry(state, 9000, { type: "sessionDigest", everyMs: 1000, quietAfterMs: 3500, quiet: [["aaaaaaaa1", 6000], ["bbbbbbbb2", 5000]] }));
  lead(state, 10_500, 9000); // 1500 ms nobody led (from the key write, before the next digest was due)
  apply(state, entry(state, 11_000, { type: "sessionHeard", client: "aaaaaaaa1" }, { type: "hello", client: "cccccccc3", seq: 1, ack: 0 }));
  apply(state, entry(state, 11_200, { type: "goodbye", client: "bbbbbbbb2", seq: 2, ack: 1 }));
  // Stored without the shift so far: only later takeovers are added.
  expect(state.sessionDigest!.quietSince).toEqual(new Map([["aaaaaaaa1", 9500], ["cccccccc3", 9500]]));
  expect(takeoverCredits(state, 11_300)).toEqual([["aaaaaaaa1", 11_000], ["cccccccc3", 11_000]]);
  // The next digest was due at 10000, before the last entry (11200): nobody led from 11200.
  lead(state, 12_000, 11_300);
  expect(takeoverCredits(state, 12_000)).toEqual([["aaaaaaaa1", 11_800], ["cccccccc3", 11_800]]);
});

test("a digest survives a snapshot round trip, and applying to the restored state matches", () => {
  const state = withSessions();
  apply(state, entry(state, 9000, { type: "sessionDigest", everyMs: 1000, quietAfterMs: 3500, quiet: [["aaaaaaaa1", 6000]] }));
  lead(state, 11_000, 9000);
  const restored = restore(JSON.parse(JSON.stringify(snapshot(state))) as StateSnapshot);
  expect(restored.sessionDigest).toEqual(state.sessionDigest);
  const next = entry(state, 11_500, { type: "sessionHeard", client: "aaaaaaaa1" });
  apply(state, next);
  apply(restored, next);
  expect(snapshot(restored)).toEqual(snapshot(state));
});

test("a snapshot from before digests loads without one, and every session is credited with the takeover as before", () => {
  const state = withSessions();
  const old = JSON.parse(JSON.stringify(snapshot(state))) as StateSnapshot;
  delete old.sessionDigest;
  const restored = restore(old);
  expect(restored.sessionDigest).toBeNull();
  expect(takeoverCredits(restored, 5000)).toEqual([["aaaaaaaa1", 5000], ["bbbbbbbb2", 5000]]);
  lead(restored, 6000, 1000); // a takeover without a digest shifts nothing and creates none
  expect(restored.sessionDigest).toBeNull();
});
