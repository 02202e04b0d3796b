/**
 * The state machine at the sizes the defaults promise (10,000 waiters on one
 * lock, 100,000 sessions), the leader's version in hello answers, and
 * snapshots that share nothing the machine mutates later.
 */
import { DEFAULT_LIMITS } from "../../src/protocol/limits";
import type { Reply } from "../../src/protocol/messages";
import { apply, createState, entryVersion, restore, snapshot } from "../../src/state";
import type { Command, Effect, State } from "../../src/state";

let t = 1_000;
function entry(state: State, cmds: Command[]): Effect[] {
  return apply(state, { v: entryVersion(cmds), t: t++, node: "n1", epoch: state.epoch, cmds });
}
function lead(state: State, version?: string): void {
  const epoch = state.epoch + 1;
  apply(state, { v: 4, t: t++, node: "n1", epoch, cmds: [{ type: "leader", node: "n1", epoch, limits: DEFAULT_LIMITS, ...(version ? { version } : {}) }] });
}
const id = (i: number) => `client-${String(i).padStart(8, "0")}`;
function replyTo(effects: Effect[], client: string, seq: number): Reply {
  const e = effects.find((x) => x.type === "reply" && x.client === client && x.seq === seq);
  if (!e || e.type !== "reply") throw new Error(`no reply to ${client}/${seq}`);
  return e.reply;
}
function hellos(state: State, from: number, to: number): void {
  for (let i = from; i < to; i += 500) {
    const cmds: Command[] = [];
    for (let k = i; k < Math.min(to, i + 500); k++) cmds.push({ type: "hello", client: id(k), seq: 1, ack: 0 });
    const answered = entry(state, cmds).filter((e) => e.type === "reply" && e.reply.ok).length;
    expect(answered).toBe(cmds.length);
  }
}

test("the default limits take 10,000 waiters on one lock, in order, and refuse the next", () => {
  const state = createState(DEFAULT_LIMITS);
  lead(state);
  const waiters = DEFAULT_LIMITS.maxQueueLength;
  hellos(state, 0, waiters + 2);
  const holder = replyTo(entry(state, [{ type: "acquire", client: id(0), seq: 2, ack: 1, lock: "global", leaseMs: 10_000, waitMs: null }]), id(0), 2);
  expect(holder).toMatchObject({ ok: true, status: "granted" });
  for (let i = 1; i <= waiters; i += 500) {
    const cmds: Command[] = [];
    for (let k = i; k < Math.min(waiters + 1, i + 500); k++) cmds.push({ type: "acquire", client: id(k), seq: 2, ack: 1, lock: "global", leaseMs: 10_000, waitMs: null });
    const positions = entry(state, cmds).map((e) => (e.type === "reply" && e.reply.ok && e.reply.status === "queued" ? e.reply.position : -1));
    expect(positions).toEqual(cmds.map((c) => ("client" in c ? Number(c.client.slice(7)) : 0)));
  }
  const refused = replyTo(entry(state, [{ type: "acquire", client: id(waiters + 1), seq: 2, ack: 1, lock: "global", leaseMs: 10_000, waitMs: null }]), id(waiters + 1), 2);
  expect(refused).toMatchObject({ ok: false, error: "LIMIT_EXCEEDED", message: `queue for global is full (${waiters})` });
  // A waiter asking again under a new seq is told it already waits.
  expect(replyTo(entry(state, [{ type: "acquire", client: id(5), seq: 3, ack: 1, lock: "global", leaseMs: 10_000, waitMs: null }]), id(5), 3)).toMatchObject({
    error: "ALREADY_HELD",
  });
  // Served in FIFO order.
  let token = holder.ok ? holder.lease!.token : 0;
  for (let i = 0; i < 20; i++) {
    const effects = entry(state, [{ type: "release", client: id(i), seq: 4, ack: 2, lock: "global", token }]);
    const granted = effects.find((e) => e.type === "notify" && e.notification.event === "granted");
    expect(granted && granted.type === "notify" && granted.client).toBe(id(i + 1));
    token = state.locks.get("global")!.holders.values().next().value!.token;
  }
});

test("the default limits take 100,000 sessions", () => {
  const state = createState(DEFAULT_LIMITS);
  lead(state);
  hellos(state, 0, DEFAULT_LIMITS.maxSessions);
  expect(state.sessions.size).toBe(DEFAULT_LIMITS.maxSessions);
  const over = entry(state, [{ type: "hello", client: id(DEFAULT_LIMITS.maxSessions), seq: 1, ack: 0 }]);
  expect(replyTo(over, id(DEFAULT_LIMITS.maxSessions), 1)).toMatchObject({ ok: false, error: "LIMIT_EXCEEDED" });
});

test("hello answers carry the version of the leader, which survives a snapshot", () => {
  const state = createState(DEFAULT_LIMITS);
  lead(state, "9.8.7");
  expect(replyTo(entry(state, [{ type: "hello", client: id(1), seq: 1, ack: 0 }]), id(1), 1)).toMatchObject({ ok: true, version: "9.8.7" });
  const restored = restore(JSON.parse(JSON.stringify(snapshot(state))));
  expect(restored.leaderVersion).toBe("9.8.7");
  lead(restored, "9.9.0");
  expect(replyTo(entry(restored, [{ type: "hello", client: id(2), seq: 1, ack: 0 }]), id(2), 1)).toMatchObject({ version: "9.9.0" });
  // A leader entry from before versions were logged: no version, not a stale one.
  lead(restored);
  const answer = replyTo(entry(restored, [{ type: "hello", client: id(3), seq: 1, ack: 0 }]), id(3), 1);
  expect(answer.ok && answer.version).toBeUndefined();
});

test("a snapshot shares nothing that later entries change, and neither does a restored state", () => {
  const state = createState({ ...DEFAULT_LIMITS, minLeaseMs: 1 });
  lead(state);
  hellos(state, 0, 3);
  const b64 = Buffer.from("x").toString("base64");
  entry(state, [{ type: "acquire", client: id(0), seq: 2, ack: 1, lock: "global", leaseMs: 1000, waitMs: null }]);
  entry(state, [{ type: "acquire", client: id(1), seq: 2, ack: 1, lock: "global", leaseMs: 1000, waitMs: null }]);
  entry(state, [{ type: "append", client: id(0), seq: 3, ack: 2, token: 1, file: 0, data: b64 }]);
  const snap = snapshot(state);
  const before = JSON.stringify(snap);
  const restored = restore(snap);
  const at = t;
  const mutate = (s: State) => {
    t = at;
    entry(s, [{ type: "append", client: id(0), seq: 4, ack: 3, token: 1, file: 0, data: b64 }]);
    entry(s, [{ type: "renew", client: id(0), seq: 5, ack: 4, lock: "global", token: 1, leaseMs: 5000 }]);
    entry(s, [{ type: "acquire", client: id(2), seq: 2, ack: 1, lock: "global", leaseMs: 1000, waitMs: null }]);
    entry(s, [{ type: "release", client: id(0), seq: 6, ack: 5, lock: "global", token: 1 }]);
    entry(s, [{ type: "hello", client: id(9), seq: 1, ack: 0 }]);
  };
  mutate(state);
  mutate(restored);
  expect(JSON.stringify(snap)).toBe(before);
  expect(snapshot(restored)).toEqual(snapshot(state));
});

/** Queues `waiters` commands of clients 1..waiters, 500 per entry, and checks each was queued at its place. */
function queueAll(state: State, waiters: number, command: (client: string) => Command): void {
  for (let i = 1; i <= waiters; i += 500) {
    const cmds: Command[] = [];
    for (let k = i; k < Math.min(waiters + 1, i + 500); k++) cmds.push(command(id(k)));
    const positions = entry(state, cmds).map((e) => (e.type === "reply" && e.reply.ok && e.reply.status === "queued" ? e.reply.position : -1));
    expect(positions).toEqual(cmds.map((c) => ("client" in c ? Number(c.client.slice(7)) : 0)));
  }
}

test("10,000 readers queued behind a writer are all granted in the one entry that releases it", () => {
  const state = createState(DEFAULT_LIMITS);
  lead(state);
  const waiters = DEFAULT_LIMITS.maxQueueLength;
  hellos(state, 0, waiters + 1);
  const writer = replyTo(entry(state, [{ type: "acquire", client: id(0), seq: 2, ack: 1, lock: "db", leaseMs: 10_000, waitMs: null, mode: "exclusive" }]), id(0), 2);
  queueAll(state, waiters, (client) => ({ type: "acquire", client, seq: 2, ack: 1, lock: "db", leaseMs: 10_000, waitMs: null, mode: "shared" }));
  const token = writer.ok ? writer.lease!.token : 0;
  const effects = entry(state, [{ type: "release", client: id(0), seq: 3, ack: 2, lock: "db", token }]);
  const granted = effects.filter((e) => e.type === "notify" && e.notification.event === "granted");
  expect(granted).toHaveLength(waiters);
  expect(granted.map((e) => (e.type === "notify" ? e.client : ""))).toEqual(Array.from({ length: waiters }, (_, i) => id(i + 1)));
  expect(state.locks.get("db")?.holders.size).toBe(waiters);
  expect(state.locks.get("db")?.queue).toHaveLength(0);
});

test("10,000 acquireAll waiters on two locks, listed in both orders, are granted one after another", () => {
  const state = createState(DEFAULT_LIMITS);
  lead(state);
  const waiters = DEFAULT_LIMITS.maxQueueLength;
  hellos(state, 0, waiters + 1);
  entry(state, [{ type: "acquire", client: id(0), seq: 2, ack: 1, lock: "a", leaseMs: 10_000, waitMs: null, mode: "exclusive" }]);
  queueAll(state, waiters, (client) => {
    const locks = [
      { lock: "a", mode: "exclusive" as const },
      { lock: "b", mode: "shared" as const },
    ];
    return { type: "acquireAll", client, seq: 2, ack: 1, locks: Number(client.slice(7)) % 2 ? locks : locks.reverse(), leaseMs: 10_000, waitMs: null };
  });
  // Each release passes both locks to the next waiter in one step.
  let holder = 0;
  let tokenA = 1;
  for (let i = 0; i < 50; i++) {
    const cmds: Command[] = [{ type: "release", client: id(holder), seq: 3, ack: 2, lock: "a", token: tokenA }];
    if (holder > 0) cmds.push({ type: "release", client: id(holder), seq: 4, ack: 2, lock: "b", token: state.sessions.get(id(holder))!.held.get("b")! });
    const effects = entry(state, cmds);
    const granted = effects.filter((e) => e.type === "notify" && e.notification.event === "granted");
    expect(granted).toHaveLength(1);
    holder++;
    expect(granted[0]).toMatchObject({ client: id(holder), notification: { leases: [{}, {}] } });
    tokenA = state.sessions.get(id(holder))!.held.get("a")!;
  }
  // Cancelling them all, oldest first (as waits time out), leaves nothing behind.
  const cancels: Command[] = [];
  for (let k = holder + 1; k <= waiters; k++) cancels.push({ type: "cancel", client: id(k), seq: 3, ack: 1, target: 2 });
  for (let i = 0; i < cancels.length; i += 500) entry(state, cancels.slice(i, i + 500));
  expect(state.locks.get("a")?.queue).toHaveLength(0);
  expect(state.locks.get("b")?.queue).toHaveLength(0);
});

test("10,000 semaphore waiters are granted as permits free up, in order", () => {
  const state = createState(DEFAULT_LIMITS);
  lead(state);
  const waiters = DEFAULT_LIMITS.maxQueueLength;
  hellos(state, 0, waiters + 1);
  const first = replyTo(entry(state, [{ type: "acquire", client: id(0), seq: 2, ack: 1, lock: "pool", leaseMs: 10_000, waitMs: null, limit: waiters, permits: waiters }]), id(0), 2);
  queueAll(state, waiters, (client) => ({ type: "acquire", client, seq: 2, ack: 1, lock: "pool", leaseMs: 10_000, waitMs: null, limit: waiters, permits: 1 }));
  const effects = entry(state, [{ type: "release", client: id(0), seq: 3, ack: 2, lock: "pool", token: first.ok ? first.lease!.token : 0 }]);
  expect(effects.filter((e) => e.type === "notify" && e.notification.event === "granted")).toHaveLength(waiters);
  expect(state.locks.get("pool")?.permitsOut).toBe(waiters);
});
