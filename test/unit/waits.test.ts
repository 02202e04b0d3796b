/**
 * `waits` (protocol/messages.ts): a request the server has queued does not
 * hold the client's `ack` back. Before it, one acquire that waited kept
 * every answer sent after it in the session's reply cache, and about 1,024
 * renewals later the session refused everything with LIMIT_EXCEEDED.
 *
 * Checked here with the real state machine and the client's own SeqTracker
 * computing `ack` and `waits`, as the library sends them; plus the rules
 * that keep a listed wait's answer until it is seen, the entry version, the
 * hello negotiation and the validation of the new fields.
 */
import { SeqTracker } from "../../src/client/session";
import { decodeEntry, encodeEntry } from "../../src/coordinator/entries";
import { toCommand } from "../../src/coordinator/requestCommands";
import { DEFAULT_LIMITS, MAX_LISTED_WAITS } from "../../src/protocol/limits";
import type { LoggedRequest, Reply } from "../../src/protocol/messages";
import { parseRequest } from "../../src/protocol/validate";
import { apply, createState, entryVersion } from "../../src/state";
import type { Command, Effect, State } from "../../src/state";

const LIMITS = { ...DEFAULT_LIMITS };

class World {
  readonly state: State = createState(LIMITS);
  private t = 1_000;

  constructor() {
    this.run([{ type: "leader", node: "n1", epoch: 1, limits: LIMITS }]);
  }

  run(cmds: Command[]): Effect[] {
    return apply(this.state, { v: entryVersion(cmds), t: (this.t += 1), node: "n1", epoch: 1, cmds });
  }
}

function replyTo(effects: Effect[], client: string, seq: number): Reply | undefined {
  const e = effects.find((x) => x.type === "reply" && x.client === client && x.seq === seq);
  return e?.type === "reply" ? e.reply : undefined;
}

/**
 * A client as the library behaves: each request takes a seq, carries the
 * tracker's ack and (when the server takes them) its waits; a "queued"
 * answer marks the seq queued; a final answer marks it done.
 */
class Client {
  readonly seqs = new SeqTracker();

  constructor(
    private readonly world: World,
    readonly id: string,
  ) {}

  send(cmd: Record<string, unknown>, seq = this.seqs.issue()): { seq: number; reply: Reply | undefined; effects: Effect[] } {
    const ack = this.seqs.ack();
    const waits = this.seqs.waitsUpTo(ack);
    const command = { ...cmd, client: this.id, seq, ack, ...(waits.length > 0 ? { waits } : {}) } as Command;
    const effects = this.world.run([command]);
    const reply = replyTo(effects, this.id, seq);
    if (reply?.ok && reply.status === "queued") this.seqs.queued(seq);
    return { seq, reply, effects };
  }

  hello(listsWaits: boolean): Reply | undefined {
    const { seq, reply } = this.send({ type: "hello", ...(listsWaits ? { listsWaits: true } : {}) });
    this.seqs.done(seq);
    this.seqs.acceptsWaits = reply?.ok === true && reply.session?.acceptsWaits === true;
    return reply;
  }
}

/** B waits for x (held by A) while it holds y and renews it `renewals` times; returns the first refused renewal's index, or -1. */
function holdWhileWaiting(listsWaits: boolean, renewals: number): { world: World; b: Client; waitSeq: number; refusedAt: number } {
  const world = new World();
  const a = new Client(world, "client-aaaa");
  a.hello(true);
  const held = a.send({ type: "acquire", lock: "x", leaseMs: 1e9, waitMs: null });
  a.seqs.done(held.seq);
  const b = new Client(world, "client-bbbb");
  expect(b.hello(listsWaits)).toMatchObject({ ok: true });
  const wait = b.send({ type: "acquire", lock: "x", leaseMs: 10_000, waitMs: null });
  expect(wait.reply).toMatchObject({ ok: true, status: "queued" });
  const y = b.send({ type: "acquire", lock: "y", leaseMs: 1e9, waitMs: null });
  b.seqs.done(y.seq);
  const token = y.reply?.ok ? y.reply.lease?.token : undefined;
  expect(token).toBeDefined();
  let refusedAt = -1;
  for (let i = 0; i < renewals && refusedAt < 0; i++) {
    const renew = b.send({ type: "renew", lock: "y", token, leaseMs: null });
    b.seqs.done(renew.seq);
    if (!renew.reply?.ok) {
      expect(renew.reply).toMatchObject({ error: "LIMIT_EXCEEDED" });
      refusedAt = i;
    }
    // The session's cache holds what B has not seen, never the renewals it has.
    if (listsWaits) expect(world.state.sessions.get(b.id)!.replies.size).toBeLessThanOrEqual(1);
  }
  return { world, b, waitSeq: wait.seq, refusedAt };
}

describe("waits: a queued request does not hold the ack back", () => {
  test("a client that lists its waits renews a held lock 3,000 times while it waits for another; the wait is granted after", () => {
    const { world, b, waitSeq, refusedAt } = holdWhileWaiting(true, 3_000);
    expect(refusedAt).toBe(-1);
    const session = world.state.sessions.get(b.id)!;
    expect(session.acked).toBeGreaterThan(waitSeq);
    expect(session.pending.has(waitSeq)).toBe(true);
    // A gives x up: B's wait, far below its floor, is granted ...
    const holder = [...world.state.locks.get("x")!.holders.values()][0]!;
    const freed = world.run([{ type: "abandon", client: "client-aaaa", seq: 100, ack: 99, lock: "x", token: holder.token }]);
    expect(freed).toContainEqual(expect.objectContaining({ type: "notify", client: b.id, notification: expect.objectContaining({ event: "granted", seq: waitSeq }) }));
    // ... and, its notification lost, B's poll (the same seq, still listed) gets the grant from the cache.
    const poll = b.send({ type: "acquire", lock: "x", leaseMs: 10_000, waitMs: null }, waitSeq);
    expect(poll.reply).toMatchObject({ ok: true, status: "granted" });
    b.seqs.done(waitSeq);
    // Seen, it is no longer listed, and the next request drops it.
    b.seqs.done(b.send({ type: "renew", lock: "x", token: poll.reply?.ok ? poll.reply.lease?.token : 0, leaseMs: null }).seq);
    expect(session.replies.has(waitSeq)).toBe(false);
  });

  test("a client that does not list its waits (an older one) is still refused after maxCachedReplies answers, as before", () => {
    const { refusedAt } = holdWhileWaiting(false, 1_100);
    expect(refusedAt).toBeGreaterThan(1_000);
    expect(refusedAt).toBeLessThan(LIMITS.maxCachedReplies);
  });

  test("a listed wait's answer survives a request that passes it, and goes with the first request that no longer lists it", () => {
    const world = new World();
    world.run([{ type: "hello", client: "client-aaaa", seq: 1, ack: 0 }]);
    world.run([{ type: "acquire", client: "client-aaaa", seq: 2, ack: 1, lock: "x", leaseMs: 1e9, waitMs: null }]);
    world.run([{ type: "hello", client: "client-bbbb", seq: 1, ack: 0, listsWaits: true }]);
    world.run([{ type: "acquire", client: "client-bbbb", seq: 2, ack: 1, lock: "x", leaseMs: 5_000, waitMs: null }]);
    const b = world.state.sessions.get("client-bbbb")!;
    // Granted while B's next request, which lists the wait, is on its way.
    world.run([{ type: "release", client: "client-aaaa", seq: 3, ack: 2, lock: "x", token: 1 }]);
    expect(b.replies.get(2)).toMatchObject({ ok: true, status: "granted" });
    world.run([{ type: "renew", client: "client-bbbb", seq: 3, ack: 2, waits: [2], lock: "x", token: 2, leaseMs: null }]);
    expect(b.acked).toBe(2);
    expect(b.replies.get(2)).toMatchObject({ ok: true, status: "granted" });
    // A copy of the poll still gets the grant.
    const again = world.run([{ type: "acquire", client: "client-bbbb", seq: 2, ack: 1, lock: "x", leaseMs: 5_000, waitMs: null }]);
    expect(replyTo(again, "client-bbbb", 2)).toMatchObject({ ok: true, status: "granted" });
    // Not listed any more: dropped although the floor did not move, and a late copy is stale (no effect at all).
    world.run([{ type: "renew", client: "client-bbbb", seq: 4, ack: 2, lock: "x", token: 2, leaseMs: null }]);
    expect(b.replies.has(2)).toBe(false);
    expect(world.run([{ type: "acquire", client: "client-bbbb", seq: 2, ack: 1, lock: "x", leaseMs: 5_000, waitMs: null }])).toEqual([]);
  });

  test("an ack past a wait the client does not list stops below it (a confused client cannot make a later grant look old)", () => {
    const world = new World();
    world.run([{ type: "hello", client: "client-aaaa", seq: 1, ack: 0 }]);
    world.run([{ type: "acquire", client: "client-aaaa", seq: 2, ack: 1, lock: "x", leaseMs: 1e9, waitMs: null }]);
    world.run([{ type: "hello", client: "client-bbbb", seq: 1, ack: 0, listsWaits: true }]);
    world.run([{ type: "acquire", client: "client-bbbb", seq: 2, ack: 1, lock: "x", leaseMs: 5_000, waitMs: null }]);
    world.run([{ type: "acquire", client: "client-bbbb", seq: 3, ack: 1, lock: "y", leaseMs: 5_000, waitMs: null }]);
    world.run([{ type: "renew", client: "client-bbbb", seq: 4, ack: 3, lock: "y", token: 2, leaseMs: null }]);
    const b = world.state.sessions.get("client-bbbb")!;
    expect(b.acked).toBe(1);
    expect(b.replies.has(3)).toBe(true);
    world.run([{ type: "renew", client: "client-bbbb", seq: 5, ack: 4, waits: [2], lock: "y", token: 2, leaseMs: null }]);
    expect(b.acked).toBe(4);
    expect([...b.replies.keys()]).toEqual([5]);
  });

  test("only a hello that lists waits is told the server takes them, so an old log replays to the answers it gave", () => {
    const world = new World();
    const old = world.run([{ type: "hello", client: "client-aaaa", seq: 1, ack: 0 }]);
    const now = world.run([{ type: "hello", client: "client-bbbb", seq: 1, ack: 0, listsWaits: true }]);
    expect(replyTo(old, "client-aaaa", 1)).toMatchObject({ ok: true });
    expect(JSON.stringify(replyTo(old, "client-aaaa", 1))).not.toContain("acceptsWaits");
    expect(replyTo(now, "client-bbbb", 1)).toMatchObject({ ok: true, session: { acceptsWaits: true } });
  });

  test("entries with waits, or a hello that will list them, are version 3, which older nodes refuse instead of diverging", () => {
    const plain: Command = { type: "renew", client: "client-aaaa", seq: 3, ack: 2, lock: "x", token: 1, leaseMs: null };
    expect(entryVersion([plain])).toBe(1);
    expect(entryVersion([{ ...plain, waits: [1] }])).toBe(3);
    expect(entryVersion([{ type: "hello", client: "client-aaaa", seq: 1, ack: 0, listsWaits: true }])).toBe(3);
    const cmds: Command[] = [{ type: "hello", client: "client-aaaa", seq: 1, ack: 0, listsWaits: true }];
    const state = createState(LIMITS);
    apply(state, { v: 4, t: 1, node: "n1", epoch: 0, cmds: [{ type: "leader", node: "n1", epoch: 1, limits: LIMITS }] });
    expect(() => apply(state, { v: 2, t: 2, node: "n1", epoch: 1, cmds })).toThrow(/version-2 log entry holds a command of version 3/);
    const entry = { v: 3 as const, t: 2, node: "n1", epoch: 1, cmds };
    expect(decodeEntry(2, encodeEntry(entry))).toEqual(entry);
  });

  test("a request's waits reach its command only when there are some", () => {
    const request: LoggedRequest = { op: "renew", client: "client-aaaa", seq: 5, ack: 4, lock: "x", token: 1 };
    expect(toCommand(request, LIMITS)).not.toHaveProperty("waits");
    expect(toCommand({ ...request, waits: [] }, LIMITS)).not.toHaveProperty("waits");
    expect(toCommand({ ...request, waits: [2, 3] }, LIMITS)).toMatchObject({ type: "renew", waits: [2, 3] });
    expect(toCommand({ op: "hello", client: "client-aaaa", seq: 1, ack: 0, listsWaits: true }, LIMITS)).toEqual({
      type: "hello",
      client: "client-aaaa",
      seq: 1,
      ack: 0,
      listsWaits: true,
    });
  });
});

describe("SeqTracker with waits", () => {
  test("passes queued seqs only once the server takes waits, and lists them until they are done", () => {
    const seqs = new SeqTracker();
    const [s1, s2, s3] = [seqs.issue(), seqs.issue(), seqs.issue()];
    seqs.done(s1);
    seqs.queued(s2);
    seqs.done(s3);
    expect(seqs.ack()).toBe(1);
    expect(seqs.waitsUpTo(seqs.ack())).toEqual([]);
    seqs.acceptsWaits = true;
    expect(seqs.ack()).toBe(3);
    expect(seqs.waitsUpTo(3)).toEqual([2]);
    // A seq not outstanding cannot be marked queued.
    seqs.queued(s3);
    expect(seqs.waitsUpTo(3)).toEqual([2]);
    const s4 = seqs.issue();
    expect(seqs.ack()).toBe(3);
    seqs.done(s2);
    expect(seqs.waitsUpTo(seqs.ack())).toEqual([]);
    seqs.done(s4);
    expect(seqs.ack()).toBe(4);
  });

  test(`lists at most ${MAX_LISTED_WAITS} waits: the ack stops below the next one, and never goes down`, () => {
    const seqs = new SeqTracker();
    seqs.acceptsWaits = true;
    let last = 0;
    const queued: number[] = [];
    for (let i = 0; i < MAX_LISTED_WAITS + 10; i++) {
      const seq = seqs.issue();
      seqs.queued(seq);
      queued.push(seq);
      const ack = seqs.ack();
      expect(ack).toBeGreaterThanOrEqual(last);
      last = ack;
      expect(seqs.waitsUpTo(ack).length).toBeLessThanOrEqual(MAX_LISTED_WAITS);
    }
    expect(seqs.ack()).toBe(queued[MAX_LISTED_WAITS]! - 1);
    expect(seqs.waitsUpTo(seqs.ack())).toEqual(queued.slice(0, MAX_LISTED_WAITS));
  });
});

describe("validation of waits and listsWaits", () => {
  const base = { op: "renew", client: "client-aaaa", seq: 9, ack: 8, lock: "x", token: 1 };
  const parse = (raw: unknown) => parseRequest(Buffer.from(JSON.stringify(raw)), LIMITS);
  test.each([
    ["not a list", { ...base, waits: 3 }],
    ["a string inside", { ...base, waits: ["2"] }],
    ["a fraction", { ...base, waits: [1.5] }],
    ["zero", { ...base, waits: [0] }],
    ["above ack", { ...base, waits: [9] }],
    ["not increasing", { ...base, waits: [3, 2] }],
    ["twice", { ...base, waits: [2, 2] }],
    ["too many", { ...base, seq: 200, ack: 199, waits: Array.from({ length: MAX_LISTED_WAITS + 1 }, (_, i) => i + 1) }],
    ["listsWaits not a boolean", { op: "hello", client: "client-aaaa", seq: 1, ack: 0, listsWaits: "yes" }],
  ])("%s is BAD_REQUEST", (_what, raw) => {
    const parsed = parse(raw);
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.reply).toMatchObject({ error: "BAD_REQUEST" });
  });

  test("good ones parse", () => {
    expect(parse({ ...base, waits: [1, 5, 8] })).toMatchObject({ ok: true, request: { waits: [1, 5, 8] } });
    expect(parse({ op: "hello", client: "client-aaaa", seq: 1, ack: 0, listsWaits: true })).toMatchObject({ ok: true, request: { listsWaits: true } });
    expect(parse({ op: "hello", client: "client-aaaa", seq: 1, ack: 0, listsWaits: false })).toEqual({
      ok: true,
      request: { op: "hello", client: "client-aaaa", seq: 1, ack: 0 },
    });
  });
});
