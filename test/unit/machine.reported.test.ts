/**
 * Reproducers for state-machine bugs found in review whose fix would change
 * what an existing log replays to, so they are reported rather than fixed
 * (old logs must replay identically). Each is `test.failing`: it passes
 * while the bug is there and starts failing the day it is fixed, at which
 * point turn it into a plain `test`. One fixed later, with a new log
 * entry version so that old logs still replay as before, stays here as a
 * plain test in its own block.
 */
import { DEFAULT_LIMITS } from "../../src/protocol/limits";
import { apply, createState, entryVersion } from "../../src/state";
import type { Command, Effect, State } from "../../src/state";

const b64 = (text: string) => Buffer.from(text).toString("base64");

function harness(limits = DEFAULT_LIMITS): { state: State; files: string[]; entry: (cmds: Command[]) => Effect[]; at: (t: number) => void } {
  const state = createState(limits);
  const files: string[] = new Array(100).fill("");
  let now = 1_000;
  const entry = (cmds: Command[]): Effect[] => {
    const effects = apply(state, { v: entryVersion(cmds), t: now, node: "n1", epoch: 1, cmds });
    for (const e of effects) if (e.type === "fileAppend") files[e.file] += e.data.toString();
    return effects;
  };
  apply(state, { v: 4, t: now, node: "n1", epoch: 1, cmds: [{ type: "leader", node: "n1", epoch: 1, limits }] });
  return { state, files, entry, at: (t) => (now = t) };
}

describe("reported, not fixed (a fix changes replay)", () => {
  // cancel() of a target that has not arrived caches CANCELLED for the
  // target beside the cancel's own answer: two entries after a check that
  // left room for one, so the session holds maxCachedReplies + 1.
  test.failing("a cancel ahead of its target keeps the reply cache within maxCachedReplies", () => {
    const limits = { ...DEFAULT_LIMITS, maxCachedReplies: 3 };
    const h = harness(limits);
    const c = "client-aaaaaaaa";
    h.entry([{ type: "hello", client: c, seq: 1, ack: 0 }]);
    h.entry([{ type: "acquire", client: c, seq: 2, ack: 0, lock: "a", leaseMs: 1000, waitMs: null, mode: "exclusive" }]);
    // seq 3 is still on its way; the client cancels it.
    h.entry([{ type: "cancel", client: c, seq: 4, ack: 0, target: 3 }]);
    const session = h.state.sessions.get(c)!;
    expect(session.replies.size + session.pending.size).toBeLessThanOrEqual(limits.maxCachedReplies);
  });
});

describe("reported, then fixed behind a log entry version (old logs replay as before)", () => {
  // Fixed (maxEndedSessions, log entry version 4): a session that expired
  // (or said goodbye) used to be forgotten whole, reply cache included. A
  // late network duplicate of its hello (seq 1) created it again with an
  // empty cache and floor 0, and a late duplicate of any of its requests
  // then ran a second time: here a one-request commit, whose section
  // landed twice. The ended id is now remembered and its hello refused.
  test("a late duplicate of an expired session's hello and commit does not commit the section twice", () => {
    const h = harness();
    const c = "client-bbbbbbbb";
    const hello: Command = { type: "hello", client: c, seq: 1, ack: 0 };
    const commit: Command = { type: "commit", client: c, seq: 2, ack: 1, lock: "global", leaseMs: 1000, waitMs: null, appends: [{ file: 0, data: b64("X") }] };
    h.entry([hello]);
    h.entry([commit]);
    expect(h.files[0]).toBe("X");
    h.at(60_000);
    h.entry([{ type: "expireSession", client: c }]);
    // The network delivers old copies (design.md §1: messages may be duplicated and delayed).
    h.entry([hello]);
    h.entry([commit]);
    expect(h.files[0]).toBe("X");
  });
});
