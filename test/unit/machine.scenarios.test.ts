/**
 * Scripted scenarios against the pure state machine: each one a short story
 * from the issues (basic workflow, lease expiry, duplicates, session expiry,
 * leader change), checked step by step.
 */
import { DEFAULT_LIMITS } from "../../src/protocol/limits";
import type { Reply } from "../../src/protocol/messages";
import { apply, classify, createState, dueCommands, entryVersion, restore, snapshot, statusView } from "../../src/state";
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
    const effects = apply(this.state, { v: entryVersion(cmds), t: this.now, node: "n1", epoch: this.epoch, cmds });
    for (const e of effects) if (e.type === "fileAppend") this.files[e.file] += e.data.toString();
    return effects;
  }

  /** Sends a new request for `client` and returns the reply to it. */
  send(client: string, cmd: DistributiveOmit<Command & { client: string; seq: number }, "client" | "seq" | "ack">, seq?: number): Reply {
    return this.sendAll(client, cmd, seq).reply;
  }

  /** Like send, and also returns every effect of the entry. */
  sendAll(
    client: string,
    cmd: DistributiveOmit<Command & { client: string; seq: number }, "client" | "seq" | "ack">,
    seq?: number,
  ): { reply: Reply; effects: Effect[] } {
    const n = seq ?? (this.seqs.get(client) ?? 0) + 1;
    this.seqs.set(client, Math.max(n, this.seqs.get(client) ?? 0));
    const effects = this.entry([{ ...cmd, client, seq: n, ack: 0 } as Command]);
    const reply = effects.find((e) => e.type === "reply" && e.client === client && e.seq === n);
    if (!reply || reply.type !== "reply") throw new Error(`no reply to ${client}/${n}: ${JSON.stringify(effects)}`);
    return { reply: reply.reply, effects };
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

  test("queued commits hold at most maxQueuedCommitBytes; one more is LIMIT_EXCEEDED and changes nothing", () => {
    const h = new Harness();
    h.entry([{ type: "leader", node: "n2", epoch: ++h.epoch, limits: { ...LIMITS, maxQueuedCommitBytes: 10 } }]);
    for (const c of ["c1-aaaaaaaa", "c2-bbbbbbbb", "c3-cccccccc", "c4-dddddddd"]) h.send(c, { type: "hello" });
    const commit = (data: string) => ({ type: "commit" as const, lock: "global", leaseMs: 2000, waitMs: null, appends: [{ file: 6, data: b64(data) }] });
    const t1 = tokenOf(h.send("c1-aaaaaaaa", { type: "acquire", lock: "global", leaseMs: 2000, waitMs: null }));
    expect(h.send("c2-bbbbbbbb", commit("123456"))).toMatchObject({ status: "queued", position: 1 });
    expect(h.state.queuedCommitBytes).toBe(6);
    const before = JSON.stringify(statusView(h.state, 0));
    const refused = h.send("c3-cccccccc", commit("12345"));
    expect(refused).toMatchObject({ ok: false, error: "LIMIT_EXCEEDED" });
    expect(!refused.ok && refused.message).toMatch(/maxQueuedCommitBytes 10/);
    expect(JSON.stringify(statusView(h.state, 0))).toBe(before);
    expect(h.state.queuedCommitBytes).toBe(6);
    // A smaller one still fits; an acquire (no section) is never counted.
    expect(h.send("c3-cccccccc", commit("1234"), 3)).toMatchObject({ status: "queued", position: 2 });
    expect(h.send("c4-dddddddd", { type: "acquire", lock: "global", leaseMs: 2000, waitMs: null })).toMatchObject({ status: "queued", position: 3 });
    expect(h.state.queuedCommitBytes).toBe(10);
    // The release runs both commits: the bytes they held are free again.
    h.send("c1-aaaaaaaa", { type: "release", lock: "global", token: t1 });
    expect(h.files[6]).toBe("1234561234");
    expect(h.state.queuedCommitBytes).toBe(0);
  });
});

/** The grants an entry made, in order: who got which lock under which token (and mode or permits). */
function grantsIn(effects: Effect[]): Array<{ client: string; lock: string; token: number; mode?: string; permits?: number }> {
  const out: Array<{ client: string; lock: string; token: number; mode?: string; permits?: number }> = [];
  for (const e of effects) {
    if (e.type !== "notify" || e.notification.event !== "granted") continue;
    for (const l of e.notification.leases ?? [e.notification.lease]) {
      out.push({ client: e.client, lock: l.lock, token: l.token, ...(l.mode ? { mode: l.mode } : {}), ...(l.permits ? { permits: l.permits } : {}) });
    }
  }
  return out;
}

/** The lock table as plain data, to show that a refused request changed nothing. */
function lockTable(state: State): string {
  return JSON.stringify([...state.locks.values()].map((l) => ({ ...l, holders: [...l.holders.values()] })));
}

const C1 = "c1-aaaaaaaa";
const C2 = "c2-bbbbbbbb";
const C3 = "c3-cccccccc";
const C4 = "c4-dddddddd";

function harness(): Harness {
  const h = new Harness();
  for (const c of [C1, C2, C3, C4]) h.send(c, { type: "hello" });
  return h;
}

const shared = (lock: string) => ({ type: "acquire" as const, lock, leaseMs: 2000, waitMs: null, mode: "shared" as const });
const exclusive = (lock: string, waitMs: number | null = null) => ({ type: "acquire" as const, lock, leaseMs: 2000, waitMs, mode: "exclusive" as const });
const permits = (lock: string, limit: number, n: number, waitMs: number | null = null) => ({ type: "acquire" as const, lock, leaseMs: 2000, waitMs, limit, permits: n });
const all = (locks: Array<[string, "exclusive" | "shared"]>, waitMs: number | null = null) => ({
  type: "acquireAll" as const,
  locks: locks.map(([lock, mode]) => ({ lock, mode })),
  leaseMs: 2000,
  waitMs,
});

describe("shared locks, semaphores and acquireAll", () => {
  test("readers share a lock; a writer queued behind them is not overtaken by later readers", () => {
    const h = harness();
    const r1 = tokenOf(h.send(C1, shared("db")));
    expect(h.send(C1, { type: "renew", lock: "db", token: r1, leaseMs: null })).toMatchObject({ lease: { mode: "shared" } });
    const r2 = tokenOf(h.send(C2, shared("db")));
    expect(r2).toBe(r1 + 1);
    expect(h.state.locks.get("db")?.holders.size).toBe(2);
    // The writer waits for both readers; a reader after it waits for the writer, though it would fit beside the readers.
    expect(h.send(C3, exclusive("db"))).toMatchObject({ status: "queued", position: 1 });
    expect(h.send(C4, shared("db"))).toMatchObject({ status: "queued", position: 2 });
    expect(h.send(C4, shared("db"))).toMatchObject({ error: "ALREADY_HELD" });
    expect(grantsIn(h.sendAll(C1, { type: "release", lock: "db", token: r1 }).effects)).toEqual([]);
    // A release of a shared grant commits nothing.
    const last = h.sendAll(C2, { type: "release", lock: "db", token: r2 });
    expect(last.reply).toMatchObject({ ok: true, committed: { appends: 0, bytes: 0 } });
    expect(grantsIn(last.effects)).toEqual([{ client: C3, lock: "db", token: r2 + 1, mode: "exclusive" }]);
    expect(h.send(C1, shared("db"))).toMatchObject({ status: "queued", position: 2 });
    // The writer leaves: both readers behind it are granted together, in queue order.
    expect(grantsIn(h.sendAll(C3, { type: "release", lock: "db", token: r2 + 1 }).effects)).toEqual([
      { client: C4, lock: "db", token: r2 + 2, mode: "shared" },
      { client: C1, lock: "db", token: r2 + 3, mode: "shared" },
    ]);
    expect(holderOf(h.state, "db")?.client).toBe(C4);
    // Try-acquire: a writer does not get a lock with readers.
    expect(h.send(C2, exclusive("db", 0))).toMatchObject({ error: "WAIT_TIMEOUT", message: "db is held (try-acquire does not wait)" });
  });

  test("a waiter that leaves the head of a queue lets the compatible waiters behind it in", () => {
    const h = harness();
    h.send(C1, shared("db"));
    expect(h.send(C2, exclusive("db"))).toMatchObject({ status: "queued" });
    expect(h.send(C3, shared("db"))).toMatchObject({ status: "queued", position: 2 });
    const cancelled = h.sendAll(C2, { type: "cancel", target: 2 });
    expect(cancelled.reply).toMatchObject({ cancelled: true });
    expect(grantsIn(cancelled.effects)).toEqual([{ client: C3, lock: "db", token: 2, mode: "shared" }]);
  });

  test("semaphores: permits up to the limit, strict FIFO, a large request is not starved by small ones", () => {
    const h = harness();
    const s1 = h.send(C1, permits("pool", 3, 2));
    expect(s1).toMatchObject({ status: "granted", lease: { lock: "pool", permits: 2, limit: 3 } });
    expect(s1.ok && s1.lease?.mode).toBeUndefined();
    expect(h.send(C2, permits("pool", 3, 2))).toMatchObject({ status: "queued", position: 1 });
    // One permit is free, but C2 came first.
    expect(h.send(C3, permits("pool", 3, 1))).toMatchObject({ status: "queued", position: 2 });
    expect(h.send(C4, permits("pool", 3, 1, 0))).toMatchObject({ error: "WAIT_TIMEOUT" });
    const released = h.sendAll(C1, { type: "release", lock: "pool", token: tokenOf(s1) });
    expect(grantsIn(released.effects)).toEqual([
      { client: C2, lock: "pool", token: 2, permits: 2 },
      { client: C3, lock: "pool", token: 3, permits: 1 },
    ]);
    expect(h.state.locks.get("pool")?.permitsOut).toBe(3);
    // Every holder expires on its own: the leader finds each one due.
    h.now += 2000;
    expect(dueCommands(h.state, h.now)).toEqual([
      { type: "expireLease", lock: "pool", token: 2 },
      { type: "expireLease", lock: "pool", token: 3 },
    ]);
    h.tick(0);
    expect(h.state.locks.has("pool")).toBe(false);
  });

  test("a request for another kind or limit is refused with LOCK_KIND_MISMATCH and changes nothing", () => {
    const h = harness();
    h.send(C1, permits("pool", 5, 1));
    expect(h.send(C2, permits("pool", 5, 5))).toMatchObject({ status: "queued" });
    const orders = tokenOf(h.send(C1, exclusive("orders")));
    const before = lockTable(h.state);
    const nextToken = h.state.nextToken;
    expect(h.send(C3, permits("pool", 3, 1))).toMatchObject({
      ok: false,
      code: 19,
      error: "LOCK_KIND_MISMATCH",
      message: "pool is a semaphore with limit 5; this request asked for limit 3",
    });
    expect(h.send(C3, exclusive("pool"))).toMatchObject({ error: "LOCK_KIND_MISMATCH", message: "pool is a semaphore with limit 5; this request asked for a lock" });
    expect(h.send(C3, permits("orders", 2, 1))).toMatchObject({ error: "LOCK_KIND_MISMATCH", message: "orders is a lock; this request asked for a semaphore with limit 2" });
    expect(h.send(C3, all([["free", "exclusive"], ["pool", "shared"]]))).toMatchObject({ error: "LOCK_KIND_MISMATCH" });
    expect(h.send(C3, { type: "commit", lock: "pool", leaseMs: 2000, waitMs: null, appends: [] })).toMatchObject({ error: "LOCK_KIND_MISMATCH" });
    expect(lockTable(h.state)).toBe(before);
    expect(h.state.nextToken).toBe(nextToken);
    expect(h.state.sessions.get(C3)?.pending.size).toBe(0);
    // Once idle, a name may come back as the other kind.
    h.send(C1, { type: "release", lock: "orders", token: orders });
    expect(h.send(C3, permits("orders", 2, 1))).toMatchObject({ status: "granted", lease: { limit: 2, permits: 1 } });
  });

  test("acquireAll partially available stays queued, holding nothing, and nobody overtakes it", () => {
    const h = harness();
    const b = tokenOf(h.send(C1, exclusive("b")));
    const queued = h.send(C2, all([["a", "exclusive"], ["b", "exclusive"]]));
    expect(queued).toMatchObject({ status: "queued", position: 1 });
    // "a" is free, but C2 waits in its queue and holds nothing.
    expect(h.state.locks.get("a")?.holders.size).toBe(0);
    expect(h.state.sessions.get(C2)?.held.size).toBe(0);
    expect(h.send(C3, exclusive("a"))).toMatchObject({ status: "queued", position: 2 });
    expect(h.send(C4, exclusive("a", 0))).toMatchObject({ error: "WAIT_TIMEOUT", message: "a has waiters (try-acquire does not wait)" });
    expect(h.send(C4, all([["c", "exclusive"], ["a", "shared"]], 0))).toMatchObject({ error: "WAIT_TIMEOUT" });
    expect(h.state.locks.has("c")).toBe(false);
    // The status view shows the waiter in both queues.
    const view = statusView(h.state, 0);
    expect(view.locks.find((l) => l.name === "a")).toMatchObject({ kind: "lock", holder: null, holders: [], holderCount: 0, queueLength: 2 });
    expect(view.locks.find((l) => l.name === "a")?.queue[0]).toEqual({ client: C2, seq: 2, mode: "exclusive", locks: ["a", "b"] });
    // When "b" frees, C2 gets both in one step, leases in its order; C3 still waits for "a".
    const released = h.sendAll(C1, { type: "release", lock: "b", token: b });
    expect(grantsIn(released.effects)).toEqual([
      { client: C2, lock: "a", token: b + 1, mode: "exclusive" },
      { client: C2, lock: "b", token: b + 2, mode: "exclusive" },
    ]);
    const answer = released.effects.find((e) => e.type === "reply" && e.client === C2);
    expect(answer).toMatchObject({ final: true, reply: { status: "granted", leases: [{ lock: "a" }, { lock: "b" }] } });
    expect(h.state.locks.get("a")?.queue.map((w) => w.client)).toEqual([C3]);
  });

  test("two acquireAll in opposite orders are both granted in turn, never deadlocked", () => {
    const h = harness();
    const x = tokenOf(h.send(C1, exclusive("x")));
    const y = tokenOf(h.send(C4, shared("y")));
    expect(h.send(C2, all([["x", "exclusive"], ["y", "exclusive"]]))).toMatchObject({ status: "queued", position: 1 });
    expect(h.send(C3, all([["y", "exclusive"], ["x", "exclusive"]]))).toMatchObject({ status: "queued", position: 2 });
    h.send(C1, { type: "release", lock: "x", token: x });
    // C2 is first in both queues; it still waits for the reader of y.
    expect(grantsIn(h.sendAll(C4, { type: "release", lock: "y", token: y }).effects)).toEqual([
      { client: C2, lock: "x", token: y + 1, mode: "exclusive" },
      { client: C2, lock: "y", token: y + 2, mode: "exclusive" },
    ]);
    h.send(C2, { type: "release", lock: "x", token: y + 1 });
    const second = h.sendAll(C2, { type: "release", lock: "y", token: y + 2 });
    // C3's leases come in its own order: y, then x.
    expect(grantsIn(second.effects)).toEqual([
      { client: C3, lock: "y", token: y + 3, mode: "exclusive" },
      { client: C3, lock: "x", token: y + 4, mode: "exclusive" },
    ]);
    const notice = second.effects.find((e) => e.type === "notify" && e.client === C3);
    expect(notice).toMatchObject({ notification: { event: "granted", seq: 2, lease: { lock: "y" }, leases: [{ lock: "y" }, { lock: "x" }] } });
  });

  test("an acquireAll waiter leaves every queue when cancelled, when its wait runs out and when its session ends", () => {
    const h = harness();
    h.send(C1, shared("a"));
    h.send(C1, exclusive("b"));
    const cancelled = () => h.state.locks.get("a")?.queue.length ?? 0;
    h.send(C2, all([["a", "exclusive"], ["b", "shared"]]));
    expect(h.send(C3, shared("a"))).toMatchObject({ status: "queued", position: 2 });
    const cancel = h.sendAll(C2, { type: "cancel", target: 2 });
    expect(cancel.effects).toContainEqual({ type: "notify", client: C2, notification: { event: "waitEnded", seq: 2, lock: "a", error: "CANCELLED" } });
    // C3's reader was only waiting for C2: it joins C1's reader at once.
    expect(grantsIn(cancel.effects)).toEqual([{ client: C3, lock: "a", token: 3, mode: "shared" }]);
    expect(cancelled()).toBe(0);
    expect(h.state.locks.get("b")?.queue).toEqual([]);
    // A wait that runs out: expired once, from its first lock, and gone from both queues.
    h.send(C4, all([["b", "shared"], ["a", "exclusive"]], 500));
    h.now += 500;
    expect(dueCommands(h.state, h.now)).toEqual([{ type: "expireWait", client: C4, seq: 2 }]);
    const expired = h.tick(0);
    expect(expired).toContainEqual({ type: "notify", client: C4, notification: { event: "waitEnded", seq: 2, lock: "b", error: "WAIT_TIMEOUT" } });
    expect([h.state.locks.get("a")?.queue.length, h.state.locks.get("b")?.queue.length]).toEqual([0, 0]);
    // A session that ends: its acquireAll leaves both queues before its grants end.
    h.send(C2, all([["b", "exclusive"], ["a", "exclusive"]]));
    const gone = h.entry([{ type: "expireSession", client: C2 }]);
    expect(gone).toContainEqual({ type: "notify", client: C2, notification: { event: "waitEnded", seq: 4, lock: "b", error: "SESSION_EXPIRED" } });
    expect([h.state.locks.get("a")?.queue.length, h.state.locks.get("b")?.queue.length]).toEqual([0, 0]);
  });

  test("a session that ends is never granted one of its own waits on the way out", () => {
    const h = harness();
    h.send(C1, exclusive("b"));
    h.send(C4, shared("c"));
    // C3 waits for a and b (b is held); C2 waits for a (behind C3) and c;
    // C3 also waits to read c, behind C2.
    expect(h.send(C3, all([["a", "exclusive"], ["b", "exclusive"]]))).toMatchObject({ status: "queued", position: 1 });
    expect(h.send(C2, all([["a", "exclusive"], ["c", "shared"]]))).toMatchObject({ status: "queued", position: 2 });
    expect(h.send(C3, shared("c"))).toMatchObject({ status: "queued", position: 2 });
    // C3 says goodbye. Once its first wait is gone, C2 gets a and c, and
    // C3's reader of c would then fit: it must leave with C3, not be granted.
    const effects = h.entry([{ type: "goodbye", client: C3, seq: 9, ack: 0 }]);
    expect(grantsIn(effects)).toEqual([
      { client: C2, lock: "a", token: 3, mode: "exclusive" },
      { client: C2, lock: "c", token: 4, mode: "shared" },
    ]);
    expect(effects.filter((e) => e.type === "notify" && e.client === C3).map((e) => e.type === "notify" && e.notification.event)).toEqual(["waitEnded", "waitEnded"]);
    expect(h.state.sessions.has(C3)).toBe(false);
    expect(h.state.locks.get("c")?.holders.size).toBe(2);
  });

  test("a queued commit behind readers runs whole when they leave, then the queue moves on", () => {
    const h = harness();
    const r = tokenOf(h.send(C1, shared("orders")));
    h.send(C2, { type: "commit", lock: "orders", leaseMs: 2000, waitMs: null, appends: [] });
    h.send(C3, shared("orders"));
    const released = h.sendAll(C1, { type: "release", lock: "orders", token: r });
    const answers = released.effects.filter((e) => e.type === "reply" && e.final && e.client !== C1);
    expect(answers).toMatchObject([
      { client: C2, reply: { message: "Committed", lease: { token: r + 1 } } },
      { client: C3, reply: { status: "granted", lease: { token: r + 2, mode: "shared" } } },
    ]);
  });

  test("status lists every holder with its mode or permits, and keeps the one-holder view", () => {
    const h = harness();
    h.send(C1, shared("db"));
    h.send(C2, shared("db"));
    h.send(C3, exclusive("db"));
    h.send(C1, permits("pool", 4, 3));
    h.send(C2, permits("pool", 4, 2));
    const view = statusView(h.state, 7, { maxLocks: 10, maxWaiters: 1 });
    const db = view.locks.find((l) => l.name === "db")!;
    expect(db).toMatchObject({ kind: "lock", holderCount: 2, queueLength: 1, queue: [{ client: C3, seq: 2, mode: "exclusive" }] });
    expect(db.limit).toBeUndefined();
    expect(db.holder).toEqual({ client: C1, token: 1, expiresAt: h.now + 2000, stagedAppends: 0, stagedBytes: 0 });
    // Capped like the queue.
    expect(db.holders).toEqual([{ client: C1, token: 1, expiresAt: h.now + 2000, mode: "shared", stagedAppends: 0, stagedBytes: 0 }]);
    const pool = view.locks.find((l) => l.name === "pool")!;
    expect(pool).toMatchObject({ kind: "semaphore", limit: 4, holderCount: 1, holders: [{ client: C1, permits: 3 }], queue: [{ client: C2, permits: 2 }] });
  });
});

describe("log entry versions", () => {
  test("entries with shared, semaphore or acquireAll requests are version 2, so an older node refuses them instead of misreading them", () => {
    const acquire = { type: "acquire" as const, client: C1, seq: 2, ack: 1, lock: "db", leaseMs: 2000, waitMs: null };
    expect(entryVersion([acquire])).toBe(1);
    expect(entryVersion([{ ...acquire, mode: "exclusive" }])).toBe(1);
    expect(entryVersion([{ type: "hello", client: C2, seq: 1, ack: 0 }, { ...acquire, mode: "shared" }])).toBe(2);
    expect(entryVersion([{ ...acquire, limit: 3, permits: 1 }])).toBe(2);
    expect(entryVersion([{ type: "acquireAll", client: C1, seq: 2, ack: 1, locks: [{ lock: "a", mode: "exclusive" }], leaseMs: 2000, waitMs: null }])).toBe(2);
    // A version-1 entry that holds one was not written by this code: the machine refuses it.
    const state = createState(LIMITS);
    apply(state, { v: 4, t: 1, node: "n1", epoch: 1, cmds: [{ type: "leader", node: "n1", epoch: 1, limits: LIMITS }] });
    expect(() => apply(state, { v: 1, t: 2, node: "n1", epoch: 1, cmds: [{ ...acquire, mode: "shared" }] })).toThrow(/version-1 log entry/);
  });
});

describe("ended sessions stay ended (maxEndedSessions)", () => {
  const hello = (h: Harness, client: string, seq = 1): Reply => h.send(client, { type: "hello" }, seq);

  test("a goodbye's id is remembered too: a late copy of its hello is refused and creates nothing", () => {
    const h = new Harness();
    expect(hello(h, "client-gone")).toMatchObject({ ok: true });
    expect(h.send("client-gone", { type: "goodbye" })).toMatchObject({ ok: true });
    expect(hello(h, "client-gone")).toMatchObject({ ok: false, error: "SESSION_EXPIRED" });
    expect(h.state.sessions.has("client-gone")).toBe(false);
    expect(classify(h.state, "client-gone", 1)).toEqual({ kind: "ended" });
    expect(classify(h.state, "client-never", 1)).toEqual({ kind: "noSession" });
  });

  test("only the newest maxEndedSessions ids are kept; a new leader with a smaller table keeps the newest of them", () => {
    const h = new Harness();
    for (const id of ["client-1111", "client-2222", "client-3333"]) {
      hello(h, id);
      h.entry([{ type: "expireSession", client: id }]);
    }
    expect([...h.state.endedSessions.keys()]).toEqual(["client-1111", "client-2222", "client-3333"]);
    h.entry([{ type: "leader", node: "n2", epoch: ++h.epoch, limits: { ...LIMITS, maxEndedSessions: 2 } }]);
    expect([...h.state.endedSessions.keys()]).toEqual(["client-2222", "client-3333"]);
    hello(h, "client-4444");
    h.entry([{ type: "expireSession", client: "client-4444" }]);
    expect([...h.state.endedSessions.keys()]).toEqual(["client-3333", "client-4444"]);
    // Forgotten, the oldest id can be created again: the bound is what the table costs.
    expect(hello(h, "client-2222")).toMatchObject({ ok: true });
  });

  test("a log whose leader entry names no maxEndedSessions (written before it) remembers none and replays as it did", () => {
    const { maxEndedSessions: _dropped, ...older } = LIMITS;
    const state = createState(LIMITS);
    const entry = (cmds: Command[]): Effect[] => apply(state, { v: entryVersion(cmds), t: 1_000, node: "n1", epoch: 1, cmds });
    const leader: Command = { type: "leader", node: "n1", epoch: 1, limits: older as typeof LIMITS };
    expect(entryVersion([leader])).toBe(1);
    entry([leader]);
    entry([{ type: "hello", client: "client-old1", seq: 1, ack: 0 }]);
    entry([{ type: "expireSession", client: "client-old1" }]);
    expect(state.endedSessions.size).toBe(0);
    const again = entry([{ type: "hello", client: "client-old1", seq: 1, ack: 0 }]);
    expect(again).toContainEqual(expect.objectContaining({ type: "reply", reply: expect.objectContaining({ ok: true }) }));
    expect(snapshot(state).version).toBe(2);
  });

  test("a leader entry that names it is version 4, and the state snapshot that keeps the ids is version 3 and restores them", () => {
    expect(entryVersion([{ type: "leader", node: "n1", epoch: 1, limits: LIMITS }])).toBe(4);
    const h = new Harness();
    hello(h, "client-snap");
    h.entry([{ type: "expireSession", client: "client-snap" }]);
    const snap = snapshot(h.state);
    expect(snap.version).toBe(3);
    expect(snap.endedSessions).toEqual([["client-snap", h.now]]);
    const restored = restore(JSON.parse(JSON.stringify(snap)));
    expect([...restored.endedSessions.keys()]).toEqual(["client-snap"]);
    expect(snapshot(restored)).toEqual(snap);
  });
});
