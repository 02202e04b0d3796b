/**
 * The client's shared grants, semaphore permits and acquireAll against an
 * in-memory fake of the leader that follows the agreed protocol
 * (shapes-protocol): FIFO queues where a waiter is granted when it is first
 * in every queue it joined and compatible with the holders, semaphores
 * created by their first acquire, acquireAll granted all or none,
 * (client, seq) dedupe with a reply cache, grant notifications, renew,
 * release, abandon and cancel. What the real state machine does with the
 * same requests is checked in test/integration/shapes.test.ts; here the
 * point is what the client sends and how it handles the answers, without
 * NATS.
 */
import { BadRequestError, CancelledError, LockExpiredError, LockKindMismatchError, type DlmError } from "../../src/client/errors";
import { FaultInjector } from "../../src/client/faults";
import type { Lease } from "../../src/client/lease";
import { LeaseSet } from "../../src/client/leaseSet";
import { fail, fakeClients, FakeTransport, ok, waitFor } from "../support/fakeTransport";
import type { Reply } from "../../src/protocol/messages";

// ------------------------------------------------------------------ the fake

type Req = Record<string, any> & { op: string };
type Mode = "exclusive" | "shared";
interface Holder {
  client: string;
  token: number;
  mode?: Mode;
  permits?: number;
  leaseMs: number;
}
interface Waiter {
  client: string;
  seq: number;
  order: number;
  leaseMs: number;
  entries: Array<{ lock: string; mode?: Mode; permits?: number }>;
  all: boolean;
}
interface FakeLock {
  limit?: number;
  holders: Holder[];
  queue: Waiter[];
}
interface FakeSession {
  acked: number;
  replies: Map<number, Reply>;
  waiting: Map<number, Waiter>;
}


class ShapesServer extends FakeTransport<Req> {
  readonly sessions = new Map<string, FakeSession>();
  readonly locks = new Map<string, FakeLock>();
  readonly ended = new Set<number>();
  nextToken = 1;
  private order = 0;
  lock(name: string): FakeLock {
    let l = this.locks.get(name);
    if (!l) this.locks.set(name, (l = { holders: [], queue: [] }));
    return l;
  }
  holders(name: string): Holder[] {
    return this.locks.get(name)?.holders ?? [];
  }
  waiting(name: string): number {
    return this.locks.get(name)?.queue.length ?? 0;
  }
  /** Test control: the lease of `token` on `name` ran out (the leader's timer). */
  expire(name: string, token: number): void {
    const l = this.lock(name);
    const h = l.holders.find((x) => x.token === token)!;
    l.holders = l.holders.filter((x) => x !== h);
    this.ended.add(token);
    this.notify(h.client, { event: "lost", lock: name, token, error: "LOCK_EXPIRED" });
    this.grantReady();
  }

  private info(name: string, h: Holder): Record<string, unknown> {
    const l = this.lock(name);
    return {
      lock: name,
      token: h.token,
      leaseMs: h.leaseMs,
      expiresAt: Date.now() + h.leaseMs,
      ...(l.limit === undefined ? { mode: h.mode ?? "exclusive" } : { permits: h.permits, limit: l.limit }),
    };
  }
  private compatible(name: string, e: Waiter["entries"][number]): boolean {
    const l = this.lock(name);
    if (l.limit !== undefined) return l.holders.reduce((n, h) => n + (h.permits ?? 0), 0) + (e.permits ?? 1) <= l.limit;
    if (l.holders.length === 0) return true;
    return e.mode === "shared" && l.holders.every((h) => h.mode === "shared");
  }
  /** Grants every waiter first in all its queues and compatible, oldest first, until nothing changes. */
  private grantReady(arriving?: Waiter): Array<{ w: Waiter; leases: Record<string, unknown>[] }> {
    const granted: Array<{ w: Waiter; leases: Record<string, unknown>[] }> = [];
    for (let changed = true; changed; ) {
      changed = false;
      const waiters = [...new Set([...this.locks.values()].flatMap((l) => l.queue))].sort((a, b) => a.order - b.order);
      for (const w of waiters) {
        if (!w.entries.every((e) => this.lock(e.lock).queue[0] === w && this.compatible(e.lock, e))) continue;
        const leases = w.entries.map((e) => {
          const l = this.lock(e.lock);
          l.queue.shift();
          const h: Holder = { client: w.client, token: this.nextToken++, leaseMs: w.leaseMs, ...(l.limit === undefined ? { mode: e.mode ?? "exclusive" } : { permits: e.permits ?? 1 }) };
          l.holders.push(h);
          return this.info(e.lock, h);
        });
        const s = this.sessions.get(w.client)!;
        s.waiting.delete(w.seq);
        const reply = ok("Granted", w.all ? { status: "granted", leases } : { status: "granted", lease: leases[0] });
        s.replies.set(w.seq, reply);
        // A request granted as it arrives is answered by its reply alone.
        if (w !== arriving) {
          this.notify(w.client, w.all ? { event: "granted", seq: w.seq, lease: leases[0], leases } : { event: "granted", seq: w.seq, lease: leases[0] });
        }
        granted.push({ w, leases });
        changed = true;
      }
    }
    return granted;
  }
  private holderOf(s: string, name: string, token: number): Holder | Reply {
    const h = this.locks.get(name)?.holders.find((x) => x.token === token && x.client === s);
    if (h) return h;
    return this.ended.has(token) ? fail("LOCK_EXPIRED") : fail("NOT_HOLDER");
  }
  private drop(name: string, h: Holder): void {
    const l = this.lock(name);
    l.holders = l.holders.filter((x) => x !== h);
    this.ended.add(h.token);
    this.grantReady();
    if (l.holders.length === 0 && l.queue.length === 0) this.locks.delete(name);
  }

  protected handle(req: Req): Reply {
    if (req.op === "ping") return this.sessions.has(req.client) ? ok("pong") : fail("SESSION_EXPIRED");
    if (req.op === "hello" && !this.sessions.has(req.client)) this.sessions.set(req.client, { acked: 0, replies: new Map(), waiting: new Map() });
    const s = this.sessions.get(req.client);
    if (!s) return req.op === "goodbye" ? ok("Disconnected!") : fail("SESSION_EXPIRED");
    const seq = req.seq as number;
    if (seq <= s.acked) return fail("STALE_REQUEST");
    const cached = s.replies.get(seq);
    if (cached) return cached;
    if (s.waiting.has(seq)) return ok("Queued", { status: "queued", position: 1 });
    const ack = Math.min(req.ack as number, seq - 1);
    if (ack > s.acked) s.acked = ack;
    const reply = this.execute(req.client, s, req);
    if (req.op !== "goodbye") s.replies.set(seq, reply);
    return reply;
  }

  private enqueue(client: string, s: FakeSession, req: Req, entries: Waiter["entries"], all: boolean): Reply {
    for (const e of entries) {
      const l = this.locks.get(e.lock);
      if (l?.holders.some((h) => h.client === client) || l?.queue.some((w) => w.client === client)) return fail("ALREADY_HELD");
      if (l && (l.holders.length > 0 || l.queue.length > 0)) {
        if (l.limit !== (all ? undefined : req.limit)) {
          return fail("LOCK_KIND_MISMATCH", l.limit === undefined ? `${e.lock} is a lock` : `${e.lock} is a semaphore with limit ${l.limit}`);
        }
      }
    }
    const w: Waiter = { client, seq: req.seq, order: this.order++, leaseMs: req.leaseMs ?? 10_000, entries, all };
    for (const e of entries) {
      const l = this.lock(e.lock);
      if (!all && req.limit !== undefined) l.limit = req.limit;
      l.queue.push(w);
    }
    s.waiting.set(req.seq, w);
    const now = this.grantReady(w).find((g) => g.w === w);
    if (now) return s.replies.get(req.seq)!;
    if (req.waitMs === 0) {
      this.cancel(s, req.seq);
      return fail("WAIT_TIMEOUT");
    }
    return ok("Queued", { status: "queued", position: this.lock(entries[0]!.lock).queue.indexOf(w) + 1 });
  }
  private cancel(s: FakeSession, target: number): boolean {
    const w = s.waiting.get(target);
    if (!w) return false;
    for (const e of w.entries) {
      const l = this.lock(e.lock);
      l.queue = l.queue.filter((x) => x !== w);
      if (l.holders.length === 0 && l.queue.length === 0) this.locks.delete(e.lock);
    }
    s.waiting.delete(target);
    this.grantReady();
    return true;
  }

  private execute(client: string, s: FakeSession, req: Req): Reply {
    switch (req.op) {
      case "hello":
        return ok("Connected!", { session: { sessionTimeoutMs: 15_000, defaultLeaseMs: 10_000, maxAppendBytes: 65_536, maxSectionBytes: 1 << 20 } });
      case "goodbye":
        return ok("Disconnected!");
      case "acquire":
        return this.enqueue(client, s, req, [{ lock: req.lock, mode: req.mode, permits: req.limit === undefined ? undefined : (req.permits ?? 1) }], false);
      case "acquireAll":
        return this.enqueue(client, s, req, req.locks as Waiter["entries"], true);
      case "release":
      case "abandon": {
        const h = this.holderOf(client, req.lock, req.token);
        if ("ok" in h) return h;
        this.drop(req.lock, h);
        return req.op === "release" ? ok("Released", { committed: { appends: 0, bytes: 0 } }) : ok("Abandoned", { discarded: { appends: 0, bytes: 0 } });
      }
      case "renew": {
        const h = this.holderOf(client, req.lock, req.token);
        if ("ok" in h) return h;
        return ok("Renewed", { lease: this.info(req.lock, h) });
      }
      case "cancel": {
        const cancelled = this.cancel(s, req.target);
        if (cancelled) s.replies.set(req.target, fail("CANCELLED"));
        return ok(cancelled ? "Cancelled" : "Not waiting", { cancelled });
      }
      default:
        return fail("UNKNOWN_OP");
    }
  }
}

// ------------------------------------------------------------------ helpers

const mk = fakeClients();

// ------------------------------------------------------------------ tests

describe("shared grants", () => {
  test("a plain acquire sends no shape fields; mode: shared is sent and comes back on the lease", async () => {
    const server = new ShapesServer();
    const a = await mk(server);
    const plain = await a.acquire("plain");
    const sent = server.ops("acquire", a.clientId)[0]!;
    expect(sent).not.toHaveProperty("mode");
    expect(sent).not.toHaveProperty("limit");
    expect(sent).not.toHaveProperty("permits");
    expect(plain.mode).toBe("exclusive");
    const shared = await a.acquire("doc", { mode: "shared" });
    expect(server.ops("acquire", a.clientId)[1]).toMatchObject({ lock: "doc", mode: "shared" });
    expect(shared.mode).toBe("shared");
    expect(shared.permits).toBeUndefined();
    expect(shared.toJSON()).toMatchObject({ lock: "doc", mode: "shared", state: "held" });
  });

  test("readers hold together, a writer waits behind them, and tryAcquire / withLock pass the mode through", async () => {
    const server = new ShapesServer();
    const [r1, r2, w] = [await mk(server), await mk(server), await mk(server)];
    const l1 = await r1.acquire("doc", { mode: "shared" });
    const l2 = await r2.tryAcquire("doc", { mode: "shared" });
    expect(l2?.mode).toBe("shared");
    expect(server.holders("doc").map((h) => h.token)).toEqual([l1.token, l2!.token]);
    expect(await w.tryAcquire("doc")).toBeNull();
    const writer = w.acquire("doc");
    await waitFor(() => server.waiting("doc") === 1);
    await l1.release();
    await l2!.release();
    const wl = await writer;
    expect(wl.mode).toBe("exclusive");
    expect(wl.token).toBeGreaterThan(l2!.token);
    await wl.release();
    const seen: Array<string | undefined> = [];
    await r1.withLock("doc", (lease) => void seen.push(lease.mode), { mode: "shared" });
    expect(seen).toEqual(["shared"]);
    expect(server.holders("doc")).toEqual([]);
  });

  test("bad shapes are refused locally and nothing is sent", async () => {
    const server = new ShapesServer();
    const a = await mk(server);
    const before = server.received.length;
    const refused = async (p: Promise<unknown>, re: RegExp) => {
      await expect(p).rejects.toBeInstanceOf(BadRequestError);
      await expect(p).rejects.toThrow(re);
    };
    await refused(a.acquire("global", { mode: "shared" }), /exclusive only/);
    await refused(a.acquire("doc", { mode: "read" as never }), /invalid mode/);
    await refused(a.acquire("doc", { permits: 2 }), /permits needs the semaphore's limit/);
    await refused(a.acquire("doc", { mode: "shared", limit: 3 }), /not both/);
    await refused(a.acquire("doc", { limit: 0 }), /invalid semaphore limit/);
    await refused(a.acquire("doc", { limit: 2.5 }), /invalid semaphore limit/);
    await refused(a.acquire("doc", { limit: 3, permits: 4 }), /invalid permits 4/);
    await refused(a.acquire("global", { limit: 3 }), /cannot be a semaphore/);
    await refused(a.acquireAll([]), /non-empty array/);
    await refused(a.acquireAll(["a", { lock: "a", mode: "shared" }]), /lists "a" twice/);
    await refused(a.acquireAll([{ lock: "global", mode: "shared" }]), /exclusive only/);
    await refused(a.acquireAll(["a", "bad name"]), /invalid lock name/);
    await refused(a.acquireAll(["a"], { waitMs: -1 }), /invalid waitMs/);
    expect(() => a.semaphore("s", 0)).toThrow(BadRequestError);
    expect(() => a.semaphore("global", 2)).toThrow(BadRequestError);
    await refused(a.semaphore("s", 2).acquire({ permits: 3 }), /invalid permits 3/);
    expect(server.received.length).toBe(before);
  });
});

describe("semaphores", () => {
  test("a handle sends its limit and permits; permits come back on the lease; the limit holds; withPermits releases", async () => {
    const server = new ShapesServer();
    const [a, b, c] = [await mk(server), await mk(server), await mk(server)];
    const sem = a.semaphore("exports", 3);
    expect({ name: sem.name, limit: sem.limit }).toEqual({ name: "exports", limit: 3 });
    const two = await sem.acquire({ permits: 2 });
    expect(server.ops("acquire", a.clientId)[0]).toMatchObject({ lock: "exports", limit: 3, permits: 2 });
    expect({ permits: two.permits, limit: two.limit, mode: two.mode }).toEqual({ permits: 2, limit: 3, mode: undefined });
    const one = await b.acquire("exports", { limit: 3 });
    expect(server.ops("acquire", b.clientId)[0]).toMatchObject({ limit: 3, permits: 1 });
    expect(one.permits).toBe(1);
    expect(await c.semaphore("exports", 3).tryAcquire()).toBeNull();
    const waiting = c.semaphore("exports", 3).withPermits(async (lease) => lease.token);
    await waitFor(() => server.waiting("exports") === 1);
    await two.release();
    expect(await waiting).toBeGreaterThan(one.token);
    await one.release();
    expect(server.locks.has("exports")).toBe(false);
  });

  test("another limit for the same name is LOCK_KIND_MISMATCH from the server, and changes nothing", async () => {
    const server = new ShapesServer();
    const [a, b] = [await mk(server), await mk(server)];
    const held = await a.semaphore("pool", 5).acquire();
    const e = (await b.semaphore("pool", 3).acquire().catch((x: unknown) => x)) as DlmError;
    expect(e).toBeInstanceOf(LockKindMismatchError);
    expect(e.code).toBe(19);
    expect(e.message).toMatch(/semaphore with limit 5/);
    const e2 = (await b.acquire("pool").catch((x: unknown) => x)) as DlmError;
    expect(e2).toBeInstanceOf(LockKindMismatchError);
    expect(server.holders("pool").map((h) => h.token)).toEqual([held.token]);
    expect(server.waiting("pool")).toBe(0);
  });
});

describe("acquireAll", () => {
  test("grants a LeaseSet in the order given, one ordinary Lease per lock, each renewed on its own", async () => {
    const server = new ShapesServer();
    const a = await mk(server, { renewFraction: 0.1 });
    const set = await a.acquireAll(["b", { lock: "a", mode: "shared" }], { leaseMs: 300 });
    expect(server.ops("acquireAll", a.clientId)[0]).toMatchObject({
      locks: [
        { lock: "b", mode: "exclusive" },
        { lock: "a", mode: "shared" },
      ],
      leaseMs: 300,
    });
    expect(set).toBeInstanceOf(LeaseSet);
    expect(set.size).toBe(2);
    expect(set.leases.map((l) => [l.lock, l.mode])).toEqual([
      ["b", "exclusive"],
      ["a", "shared"],
    ]);
    expect(set.get("a")).toBe(set.leases[1]);
    expect(set.get("zzz")).toBeUndefined();
    expect([...set]).toEqual(set.leases);
    expect(a.leases).toHaveLength(2);
    const tokens = set.leases.map((l) => l.token);
    await waitFor(() => tokens.every((t) => server.ops("renew", a.clientId).filter((r) => r.token === t).length >= 2));
    expect(await set.release()).toEqual({ appends: 0, bytes: 0 });
    expect(set.leases.every((l) => l.released)).toBe(true);
    expect(server.ops("release", a.clientId).map((r) => r.token).sort()).toEqual([...tokens].sort());
    expect(a.leases).toEqual([]);
  });

  test("waits in every queue and is granted all at once, by notification; never a partial grant", async () => {
    const server = new ShapesServer();
    const [a, b] = [await mk(server), await mk(server)];
    const ha = await a.acquire("x");
    const pending = b.acquireAll(["y", "x"]);
    await waitFor(() => server.waiting("x") === 1 && server.waiting("y") === 1);
    // y is free, but the set waits for x: nothing of it is held meanwhile.
    expect(server.holders("y")).toEqual([]);
    expect(b.leases).toEqual([]);
    await ha.release();
    const set = await pending;
    expect(set.leases.map((l) => l.lock)).toEqual(["y", "x"]);
    expect(set.leases[0]!.token).toBeGreaterThan(ha.token);
    await set.release();
  });

  test("a lost grant notification is recovered by polling the same seq", async () => {
    const server = new ShapesServer();
    const faults = new FaultInjector({ rules: [{ action: { kind: "dropNotification", event: "granted" } }] });
    const [a, b] = [await mk(server), await mk(server, { faults })];
    const ha = await a.acquire("x");
    const pending = b.acquireAll(["x", "y"]);
    await waitFor(() => server.waiting("x") === 1);
    await ha.release();
    const set = await pending;
    expect(faults.events.some((e) => e.action === "dropNotification")).toBe(true);
    const seqs = new Set(server.ops("acquireAll", b.clientId).map((r) => r.seq));
    expect(seqs.size).toBe(1);
    await set.release();
  });

  test("at most once: a lost reply is retried with the same seq and answered from the cache", async () => {
    const server = new ShapesServer();
    const faults = new FaultInjector({ rules: [{ op: "acquireAll", attempt: 1, action: { kind: "dropReply" } }] });
    const a = await mk(server, { faults });
    const set = await a.acquireAll(["p", "q"]);
    const sent = server.ops("acquireAll", a.clientId);
    expect(sent.length).toBe(2);
    expect(sent[1]!.seq).toBe(sent[0]!.seq);
    expect(server.holders("p").map((h) => h.token)).toEqual([set.get("p")!.token]);
    expect(server.holders("q").map((h) => h.token)).toEqual([set.get("q")!.token]);
    await set.release();
  });

  test("aborting a waiting acquireAll cancels it on the server: it leaves every queue", async () => {
    const server = new ShapesServer();
    const [a, b] = [await mk(server), await mk(server)];
    const hy = await a.acquire("y");
    const ac = new AbortController();
    const p = b.acquireAll(["x", "y"], { signal: ac.signal });
    await waitFor(() => server.waiting("x") === 1 && server.waiting("y") === 1);
    ac.abort();
    await expect(p).rejects.toBeInstanceOf(CancelledError);
    const seq = server.ops("acquireAll", b.clientId)[0]!.seq;
    expect(server.ops("cancel", b.clientId).map((r) => r.target)).toEqual([seq]);
    expect(server.waiting("x") + server.waiting("y")).toBe(0);
    await hy.release();
  });

  test("aborted after an unseen grant: every lease of the set is handed back", async () => {
    const server = new ShapesServer();
    const faults = new FaultInjector({ rules: [{ action: { kind: "dropNotification", event: "granted" } }] });
    const [a, b] = [await mk(server), await mk(server, { faults, requestTimeoutMs: 2000 })];
    const hy = await a.acquire("y");
    const ac = new AbortController();
    const p = b.acquireAll(["x", "y"], { signal: ac.signal });
    await waitFor(() => server.waiting("y") === 1);
    await hy.release(); // granted to b; the notification is dropped, and no poll comes before the abort
    await waitFor(() => server.holders("x").length === 1);
    ac.abort();
    await expect(p).rejects.toBeInstanceOf(CancelledError);
    await waitFor(() => server.holders("x").length === 0 && server.holders("y").length === 0);
    expect(server.ops("release", b.clientId)).toHaveLength(2);
    expect(b.leases).toEqual([]);
  });

  test("tryAcquireAll resolves null when one lock is taken and leaves no waiter; withLocks releases all, or abandons all on a throw", async () => {
    const server = new ShapesServer();
    const [a, b] = [await mk(server), await mk(server)];
    const hx = await a.acquire("x");
    expect(await b.tryAcquireAll(["w", "x"])).toBeNull();
    expect(server.waiting("x") + server.waiting("w")).toBe(0);
    await hx.release();
    const got = await b.tryAcquireAll(["w", "x"], { waitMs: 100 });
    expect(got?.size).toBe(2);
    await got!.release();
    const result = await b.withLocks(["w", "x"], (set) => set.leases.map((l) => l.lock).join("+"));
    expect(result).toBe("w+x");
    expect(server.ops("release", b.clientId)).toHaveLength(4);
    const boom = new Error("half-way");
    await expect(b.withLocks(["w", "x"], () => Promise.reject(boom))).rejects.toBe(boom);
    expect(server.ops("abandon", b.clientId)).toHaveLength(2);
    expect(b.leases).toEqual([]);
    await expect(b.withLocks(["w"], undefined as never)).rejects.toBeInstanceOf(BadRequestError);
  });

  test("a lease of the set lost: the set's signal aborts and 'lost' is emitted once; release still releases the others, then throws", async () => {
    const server = new ShapesServer();
    const a = await mk(server);
    const set = await a.acquireAll(["x", "y", "z"]);
    const lostEvents: Array<[DlmError, Lease]> = [];
    set.on("lost", (e, lease) => lostEvents.push([e, lease]));
    set.on("lost", () => {
      throw new Error("a listener that throws does not stop the others");
    });
    server.expire("y", set.get("y")!.token);
    await waitFor(() => set.lost);
    expect(set.signal.aborted).toBe(true);
    expect(set.lostReason).toBeInstanceOf(LockExpiredError);
    server.expire("z", set.get("z")!.token);
    await waitFor(() => set.get("z")!.lost);
    expect(lostEvents.map(([, l]) => l.lock)).toEqual(["y"]);
    await expect(set.release()).rejects.toBeInstanceOf(LockExpiredError);
    expect(set.get("x")!.released).toBe(true);
    expect(server.holders("x")).toEqual([]);
  });

  test("a set found late whose grant of one lock already ran out: the other is abandoned and the set queues again", async () => {
    const server = new ShapesServer();
    // The grant notification is lost and the polls' answers come late, so the
    // set is found with less than half its lease left and is confirmed by renews.
    const faults = new FaultInjector({
      rules: [
        { action: { kind: "dropNotification", event: "granted" } },
        { op: "acquireAll", attempt: [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], action: { kind: "delayReply", ms: 80 } },
      ],
    });
    const [a, b] = [await mk(server), await mk(server, { faults, requestTimeoutMs: 2000 })];
    const hx = await a.acquire("x");
    const pending = b.acquireAll(["x", "y"], { leaseMs: 100 });
    await waitFor(() => server.waiting("x") === 1);
    await hx.release();
    const first = server.holders("x").find((h) => h.client === b.clientId)!;
    const firstY = server.holders("y").find((h) => h.client === b.clientId)!;
    server.expire("x", first.token); // ran out before the client saw it
    const set = await pending;
    const seqs = [...new Set(server.ops("acquireAll", b.clientId).map((r) => r.seq))];
    expect(seqs).toHaveLength(2);
    expect(server.ops("abandon", b.clientId).map((r) => [r.lock, r.token])).toEqual([["y", firstY.token]]);
    expect(set.leases.map((l) => l.lock)).toEqual(["x", "y"]);
    expect(set.get("x")!.token).toBeGreaterThan(first.token);
    await set.release();
  });

  test("await using a set abandons every lease still held", async () => {
    const server = new ShapesServer();
    const a = await mk(server);
    {
      await using set = await a.acquireAll(["x", "y"]);
      await set.get("x")!.release();
    }
    expect(server.ops("release", a.clientId)).toHaveLength(1);
    expect(server.ops("abandon", a.clientId).map((r) => r.lock)).toEqual(["y"]);
    expect(a.leases).toEqual([]);
  });
});
