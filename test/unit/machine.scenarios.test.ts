/**
 * Scripted scenarios against the pure state machine: each one a short story
 * from the issues (basic workflow, lease expiry, duplicates, session expiry,
 * leader change), checked step by step.
 */
import { DEFAULT_LIMITS } from "../../src/protocol/limits";
import type { Reply } from "../../src/protocol/messages";
import { apply, classify, createState, dueCommands, statusView } from "../../src/state";
import type { Command, Effect, Grant, State } from "../../src/state";

const LIMITS = { ...DEFAULT_LIMITS, defaultLeaseMs: 2000 };
const b64 = (text: string) => Buffer.from(text).toString("base64");

class Harness {
  state: State = createState(LIMITS);
  now = 1_000;
  epoch = 0;
  files: string[] = new Array(100).fill("");
  seqs = new Map<string, number>();

  constructor() {
    this.leader("n1");
  }

  leader(node: string): Effect[] {
    return this.entry([{ type: "leader", node, epoch: ++this.epoch, limits: LIMITS }]);
  }

  entry(cmds: Command[]): Effect[] {
    const effects = apply(this.state, { v: 1, t: this.now, node: "n1", epoch: this.epoch, cmds });
    for (const e of effects) if (e.type === "fileAppend") this.files[e.file] += e.data.toString();
    return effects;
  }

  /** Sends a new request for `client` and returns the reply to it. */
  send(client: string, cmd: DistributiveOmit<Command & { client: string; seq: number }, "client" | "seq" | "ack">, seq?: number): Reply {
    const n = seq ?? (this.seqs.get(client) ?? 0) + 1;
    this.seqs.set(client, Math.max(n, this.seqs.get(client) ?? 0));
    const effects = this.entry([{ ...cmd, client, seq: n, ack: 0 } as Command]);
    const reply = effects.find((e) => e.type === "reply" && e.client === client && e.seq === n);
    if (!reply || reply.type !== "reply") throw new Error(`no reply to ${client}/${n}: ${JSON.stringify(effects)}`);
    return reply.reply;
  }

  tick(ms: number): Effect[] {
    this.now += ms;
    const due = dueCommands(this.state, this.now);
    return due.length > 0 ? this.entry(due) : [];
  }
}

/** The only (or oldest) holder of a lock, as the one-holder tests before shared locks saw it. */
function holderOf(state: State, name: string): Grant | undefined {
  return state.locks.get(name)?.holders.values().next().value;
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

function tokenOf(reply: Reply): number {
  if (!reply.ok || !reply.lease) throw new Error(`not a grant: ${JSON.stringify(reply)}`);
  return reply.lease.token;
}

describe("state machine scenarios", () => {
  test("basic workflow from the original spec: C1 appends A, C2 appends B, file is AB", () => {
    const h = new Harness();
    expect(h.send("c1-aaaaaaaa", { type: "hello" })).toMatchObject({ ok: true, message: "Connected!" });
    h.send("c2-bbbbbbbb", { type: "hello" });
    const t1 = tokenOf(h.send("c1-aaaaaaaa", { type: "acquire", lock: "global", leaseMs: 2000, waitMs: null }));
    expect(h.send("c2-bbbbbbbb", { type: "acquire", lock: "global", leaseMs: 2000, waitMs: null })).toMatchObject({
      ok: true,
      status: "queued",
      position: 1,
    });
    expect(h.send("c1-aaaaaaaa", { type: "append", token: t1, file: 1, data: b64("A") })).toMatchObject({ ok: true });
    // Staged, not yet visible.
    expect(h.files[1]).toBe("");
    const released = h.entry([{ type: "release", client: "c1-aaaaaaaa", seq: 4, ack: 3, lock: "global", token: t1 }]);
    expect(h.files[1]).toBe("A");
    const grant = released.find((e) => e.type === "notify" && e.client === "c2-bbbbbbbb");
    expect(grant).toMatchObject({ notification: { event: "granted", seq: 2, lease: { token: t1 + 1 } } });
    const t2 = t1 + 1;
    h.send("c2-bbbbbbbb", { type: "append", token: t2, file: 1, data: b64("B") });
    expect(h.send("c2-bbbbbbbb", { type: "release", lock: "global", token: t2 })).toMatchObject({
      ok: true,
      committed: { appends: 1, bytes: 1 },
    });
    expect(h.files[1]).toBe("AB");
    expect(h.state.fileLengths[1]).toBe(2);
  });

  test("a lease that runs out discards the staged section and passes the lock on; the late append gets LOCK_EXPIRED", () => {
    const h = new Harness();
    h.send("c1-aaaaaaaa", { type: "hello" });
    h.send("c2-bbbbbbbb", { type: "hello" });
    const t1 = tokenOf(h.send("c1-aaaaaaaa", { type: "acquire", lock: "global", leaseMs: 2000, waitMs: null }));
    h.send("c2-bbbbbbbb", { type: "acquire", lock: "global", leaseMs: 2000, waitMs: null });
    h.send("c1-aaaaaaaa", { type: "append", token: t1, file: 0, data: b64("A") });
    expect(h.tick(1999)).toEqual([]);
    const expired = h.tick(1);
    expect(expired).toContainEqual({
      type: "notify",
      client: "c1-aaaaaaaa",
      notification: { event: "lost", lock: "global", token: t1, error: "LOCK_EXPIRED" },
    });
    expect(h.send("c1-aaaaaaaa", { type: "append", token: t1, file: 0, data: b64("A") })).toMatchObject({ error: "LOCK_EXPIRED" });
    expect(h.send("c1-aaaaaaaa", { type: "release", lock: "global", token: t1 })).toMatchObject({ error: "LOCK_EXPIRED" });
    const t2 = t1 + 1;
    h.send("c2-bbbbbbbb", { type: "append", token: t2, file: 0, data: b64("B") });
    h.send("c2-bbbbbbbb", { type: "release", lock: "global", token: t2 });
    expect(h.files[0]).toBe("B");
  });

  test("a renewal logged before the expiry keeps the grant; an expiry for an old token is a no-op", () => {
    const h = new Harness();
    h.send("c1-aaaaaaaa", { type: "hello" });
    const t1 = tokenOf(h.send("c1-aaaaaaaa", { type: "acquire", lock: "global", leaseMs: 2000, waitMs: null }));
    h.now += 1500;
    h.send("c1-aaaaaaaa", { type: "renew", lock: "global", token: t1, leaseMs: 2000 });
    h.now += 1000;
    expect(h.entry([{ type: "expireLease", lock: "global", token: t1 }])).toEqual([]);
    expect(holderOf(h.state, "global")?.token).toBe(t1);
    h.now += 1000;
    expect(h.entry([{ type: "expireLease", lock: "global", token: t1 }])).toHaveLength(1);
  });

  test("duplicates get the cached reply and change nothing; acknowledged ones are ignored", () => {
    const h = new Harness();
    h.send("c1-aaaaaaaa", { type: "hello" });
    const t1 = tokenOf(h.send("c1-aaaaaaaa", { type: "acquire", lock: "global", leaseMs: 2000, waitMs: null }));
    const first = h.send("c1-aaaaaaaa", { type: "append", token: t1, file: 5, data: b64("1") }, 3);
    const again = h.send("c1-aaaaaaaa", { type: "append", token: t1, file: 5, data: b64("1") }, 3);
    expect(again).toEqual(first);
    expect(holderOf(h.state, "global")?.staged).toHaveLength(1);
    expect(classify(h.state, "c1-aaaaaaaa", 3)).toEqual({ kind: "cached", reply: first });
    // The next request acknowledges 1..3; seq 3 is then stale and dropped.
    h.entry([{ type: "append", client: "c1-aaaaaaaa", seq: 4, ack: 3, token: t1, file: 5, data: b64("A") }]);
    expect(classify(h.state, "c1-aaaaaaaa", 3)).toEqual({ kind: "stale" });
    expect(h.entry([{ type: "append", client: "c1-aaaaaaaa", seq: 3, ack: 2, token: t1, file: 5, data: b64("1") }])).toEqual([]);
    h.entry([{ type: "release", client: "c1-aaaaaaaa", seq: 5, ack: 4, lock: "global", token: t1 }]);
    expect(h.files[5]).toBe("1A");
  });

  test("a duplicated release cannot end the next holder's grant", () => {
    const h = new Harness();
    h.send("c1-aaaaaaaa", { type: "hello" });
    h.send("c2-bbbbbbbb", { type: "hello" });
    const t1 = tokenOf(h.send("c1-aaaaaaaa", { type: "acquire", lock: "global", leaseMs: 2000, waitMs: null }));
    h.send("c2-bbbbbbbb", { type: "acquire", lock: "global", leaseMs: 2000, waitMs: null });
    h.send("c1-aaaaaaaa", { type: "release", lock: "global", token: t1 }, 3);
    expect(holderOf(h.state, "global")?.client).toBe("c2-bbbbbbbb");
    // The same release with a new sequence number (a confused client): the token protects C2.
    expect(h.send("c1-aaaaaaaa", { type: "release", lock: "global", token: t1 })).toMatchObject({ error: "NOT_HOLDER" });
    expect(holderOf(h.state, "global")?.client).toBe("c2-bbbbbbbb");
  });

  test("an expired session loses its grant and its waits; the queue moves on", () => {
    const h = new Harness();
    for (const c of ["c1-aaaaaaaa", "c2-bbbbbbbb", "c3-cccccccc"]) h.send(c, { type: "hello" });
    const t1 = tokenOf(h.send("c1-aaaaaaaa", { type: "acquire", lock: "global", leaseMs: 2000, waitMs: null }));
    h.send("c2-bbbbbbbb", { type: "acquire", lock: "global", leaseMs: 2000, waitMs: null });
    h.send("c3-cccccccc", { type: "acquire", lock: "global", leaseMs: 2000, waitMs: null });
    h.send("c1-aaaaaaaa", { type: "append", token: t1, file: 2, data: b64("X") });
    h.entry([{ type: "expireSession", client: "c2-bbbbbbbb" }]);
    expect(h.state.locks.get("global")?.queue.map((w) => w.client)).toEqual(["c3-cccccccc"]);
    const effects = h.entry([{ type: "expireSession", client: "c1-aaaaaaaa" }]);
    expect(effects).toContainEqual(expect.objectContaining({ type: "notify", client: "c3-cccccccc" }));
    expect(holderOf(h.state, "global")?.client).toBe("c3-cccccccc");
    expect(h.files[2]).toBe("");
    expect(h.send("c1-aaaaaaaa", { type: "append", token: t1, file: 2, data: b64("X") })).toMatchObject({ error: "SESSION_EXPIRED" });
  });

  test("waits time out, try-acquire does not wait, cancel removes a waiter", () => {
    const h = new Harness();
    for (const c of ["c1-aaaaaaaa", "c2-bbbbbbbb", "c3-cccccccc"]) h.send(c, { type: "hello" });
    h.send("c1-aaaaaaaa", { type: "acquire", lock: "jobs", leaseMs: 5000, waitMs: null });
    expect(h.send("c2-bbbbbbbb", { type: "acquire", lock: "jobs", leaseMs: 5000, waitMs: 0 })).toMatchObject({ error: "WAIT_TIMEOUT" });
    h.send("c2-bbbbbbbb", { type: "acquire", lock: "jobs", leaseMs: 5000, waitMs: 1000 });
    h.send("c3-cccccccc", { type: "acquire", lock: "jobs", leaseMs: 5000, waitMs: null });
    const timedOut = h.tick(1000);
    expect(timedOut).toContainEqual(
      expect.objectContaining({ type: "reply", client: "c2-bbbbbbbb", seq: 3, reply: expect.objectContaining({ error: "WAIT_TIMEOUT" }) }),
    );
    expect(h.send("c3-cccccccc", { type: "cancel", target: 2 })).toMatchObject({ ok: true, cancelled: true });
    expect(h.state.locks.get("jobs")?.queue).toEqual([]);
    expect(h.send("c3-cccccccc", { type: "cancel", target: 2 }, 4)).toMatchObject({ ok: true, cancelled: false });
  });

  test("a new leader gives current holders a fresh lease (grace period) and tokens keep increasing", () => {
    const h = new Harness();
    h.send("c1-aaaaaaaa", { type: "hello" });
    const t1 = tokenOf(h.send("c1-aaaaaaaa", { type: "acquire", lock: "global", leaseMs: 2000, waitMs: null }));
    h.now += 1900;
    h.leader("n2");
    expect(holderOf(h.state, "global")?.expiresAt).toBe(h.now + 2000);
    expect(h.tick(1999)).toEqual([]);
    h.send("c1-aaaaaaaa", { type: "release", lock: "global", token: t1 });
    const t2 = tokenOf(h.send("c1-aaaaaaaa", { type: "acquire", lock: "global", leaseMs: 2000, waitMs: null }));
    expect(t2).toBeGreaterThan(t1);
    expect(statusView(h.state, 9)).toMatchObject({ leader: "n2", epoch: 2, appliedSeq: 9 });
  });

  test("limits: a section over maxSectionBytes is TOO_LARGE and leaves the section as it was", () => {
    const h = new Harness();
    h.state.limits = { ...h.state.limits, maxSectionBytes: 4 };
    h.send("c1-aaaaaaaa", { type: "hello" });
    const t1 = tokenOf(h.send("c1-aaaaaaaa", { type: "acquire", lock: "global", leaseMs: 2000, waitMs: null }));
    h.send("c1-aaaaaaaa", { type: "append", token: t1, file: 0, data: b64("abc") });
    expect(h.send("c1-aaaaaaaa", { type: "append", token: t1, file: 0, data: b64("de") })).toMatchObject({ error: "TOO_LARGE" });
    h.send("c1-aaaaaaaa", { type: "release", lock: "global", token: t1 });
    expect(h.files[0]).toBe("abc");
  });

  test("an entry from a deposed epoch is void; one from an epoch nobody started is an invariant break", () => {
    const h = new Harness();
    h.send("c1-aaaaaaaa", { type: "hello" });
    h.leader("n2");
    // A stale leader's pipelined entry that landed behind the new leader's.
    const stale = apply(h.state, {
      v: 1,
      t: h.now,
      node: "n1",
      epoch: 1,
      cmds: [{ type: "acquire", client: "c1-aaaaaaaa", seq: 2, ack: 1, lock: "global", leaseMs: 2000, waitMs: null }],
    });
    expect(stale).toEqual([]);
    expect(h.state.locks.size).toBe(0);
    expect(() =>
      apply(h.state, { v: 1, t: h.now, node: "n1", epoch: 3, cmds: [{ type: "hello", client: "c1-aaaaaaaa", seq: 3, ack: 0 }] }),
    ).toThrow(/epoch/);
  });

  test("a release carries the rest of the section and names how many appends were logged alone", () => {
    const h = new Harness();
    h.send("c1-aaaaaaaa", { type: "hello" });
    const t1 = tokenOf(h.send("c1-aaaaaaaa", { type: "acquire", lock: "global", leaseMs: 2000, waitMs: null }));
    h.send("c1-aaaaaaaa", { type: "append", token: t1, file: 2, data: b64("spilled,") });
    // One append was logged alone; a release that names none (the spilled
    // append's ack was lost and the client believes it failed) or two (a
    // duplicate) commits nothing and keeps the grant.
    for (const staged of [0, 2]) {
      expect(h.send("c1-aaaaaaaa", { type: "release", lock: "global", token: t1, staged, appends: [{ file: 2, data: b64("inline") }] })).toMatchObject({
        ok: false,
        error: "SECTION_MISMATCH",
      });
      expect(h.files[2]).toBe("");
      expect(holderOf(h.state, "global")?.token).toBe(t1);
    }
    expect(
      h.send("c1-aaaaaaaa", { type: "release", lock: "global", token: t1, staged: 1, appends: [{ file: 2, data: b64("inline") }, { file: 3, data: b64("x") }] }),
    ).toMatchObject({ ok: true, committed: { appends: 3, bytes: 15 } });
    expect(h.files[2]).toBe("spilled,inline");
    expect(h.files[3]).toBe("x");
    // The section committed once: a second release under the token commits nothing.
    expect(h.send("c1-aaaaaaaa", { type: "release", lock: "global", token: t1, staged: 0, appends: [{ file: 2, data: b64("again") }] })).toMatchObject({
      error: "NOT_HOLDER",
    });
    expect(h.files[2]).toBe("spilled,inline");
  });

  test("a release whose inline appends overflow the section is TOO_LARGE and changes nothing", () => {
    const h = new Harness();
    h.state.limits = { ...h.state.limits, maxSectionBytes: 4 };
    h.send("c1-aaaaaaaa", { type: "hello" });
    const t1 = tokenOf(h.send("c1-aaaaaaaa", { type: "acquire", lock: "global", leaseMs: 2000, waitMs: null }));
    h.send("c1-aaaaaaaa", { type: "append", token: t1, file: 0, data: b64("abc") });
    expect(h.send("c1-aaaaaaaa", { type: "release", lock: "global", token: t1, staged: 1, appends: [{ file: 0, data: b64("de") }] })).toMatchObject({
      error: "TOO_LARGE",
    });
    expect(h.files[0]).toBe("");
    expect(holderOf(h.state, "global")?.token).toBe(t1);
  });

  test("one-request commit: at once when free, in FIFO order when held, one token each, nothing after a cancel", () => {
    const h = new Harness();
    for (const c of ["c1-aaaaaaaa", "c2-bbbbbbbb", "c3-cccccccc", "c4-dddddddd"]) h.send(c, { type: "hello" });
    const commit = (data: string, waitMs: number | null = null) => ({ type: "commit" as const, lock: "global", leaseMs: 2000, waitMs, appends: [{ file: 5, data: b64(data) }] });
    const first = h.send("c1-aaaaaaaa", commit("1"));
    expect(first).toMatchObject({ ok: true, message: "Committed", committed: { appends: 1, bytes: 1 } });
    expect(h.files[5]).toBe("1");
    expect(h.state.locks.size).toBe(0);
    const t2 = tokenOf(h.send("c2-bbbbbbbb", { type: "acquire", lock: "global", leaseMs: 2000, waitMs: null }));
    expect(t2).toBe(tokenOf(first) + 1);
    expect(h.send("c3-cccccccc", commit("3"))).toMatchObject({ status: "queued", position: 1 });
    expect(h.send("c4-dddddddd", commit("4"))).toMatchObject({ status: "queued", position: 2 });
    expect(h.send("c1-aaaaaaaa", commit("X", 0))).toMatchObject({ error: "WAIT_TIMEOUT" });
    h.send("c2-bbbbbbbb", { type: "append", token: t2, file: 5, data: b64("2") });
    // c2's release runs both queued commits in the same entry, in order.
    const effects = h.entry([{ type: "release", client: "c2-bbbbbbbb", seq: 4, ack: 3, lock: "global", token: t2, staged: 1 }]);
    h.seqs.set("c2-bbbbbbbb", 4);
    expect(h.files[5]).toBe("1234");
    const answers = effects.filter((e) => e.type === "reply" && e.final && e.client !== "c2-bbbbbbbb");
    expect(answers.map((e) => e.type === "reply" && e.reply.ok && e.reply.lease?.token)).toEqual([t2 + 1, t2 + 2]);
    expect(h.state.locks.size).toBe(0);
    // A duplicate of a finished commit gets its cached answer and writes nothing.
    expect(h.send("c3-cccccccc", commit("3"), 2)).toMatchObject({ ok: true, committed: { appends: 1 } });
    expect(h.files[5]).toBe("1234");
    // A cancelled commit never writes.
    const t5 = tokenOf(h.send("c2-bbbbbbbb", { type: "acquire", lock: "global", leaseMs: 2000, waitMs: null }));
    h.send("c1-aaaaaaaa", commit("never"));
    h.send("c1-aaaaaaaa", { type: "cancel", target: 4 });
    h.send("c2-bbbbbbbb", { type: "release", lock: "global", token: t5 });
    expect(h.files[5]).toBe("1234");
  });
});
