/**
 * DlmClient against an in-memory fake of the leader: enough of the server's
 * behaviour (sessions with (client, seq) dedupe and ack, FIFO locks, grant
 * notifications, staged appends committed on release, renew, cancel, ping)
 * to test retries, acks, polling, cancellation, lease loss and sessions
 * without NATS.
 */
import { connect, type DlmClient } from "../../src/client/client";
import {
  BadRequestError,
  CancelledError,
  ClosedError,
  FileNotFoundError,
  LockExpiredError,
  NotHolderError,
  SessionExpiredError,
  TimeoutError,
  UnavailableError,
  WaitTimeoutError,
  type DlmError,
} from "../../src/client/errors";
import { FaultInjector, type FaultRule } from "../../src/client/faults";
import type { Lease } from "../../src/client/lease";
import type { ClientOptions } from "../../src/client/options";
import { NoRespondersError } from "../../src/client/transport";
import { fail, fakeClients, FakeTransport, ok, waitFor } from "../support/fakeTransport";
import { fileIndex } from "../../src/protocol/files";
import type { LeaseInfo, Reply } from "../../src/protocol/messages";

// ------------------------------------------------------------------ the fake

type Req = Record<string, any> & { op: string };
interface FakeSession {
  id: string;
  acked: number;
  replies: Map<number, Reply>;
  waiting: Map<number, string>;
}
interface Holder {
  client: string;
  token: number;
  leaseMs: number;
  expiresAt: number;
  staged: Array<{ file: string; data: Buffer }>;
}
interface FakeLock {
  holder: Holder | null;
  queue: Array<{ client: string; seq: number; leaseMs: number }>;
}


class FakeServer extends FakeTransport<Req> {
  noResponders = false;
  notLeader = 0;
  sessionTimeoutMs = 15_000;
  defaultLeaseMs = 10_000;
  maxAppendBytes = 64 * 1024;
  /** Set: the server announces maxSectionBytes and takes a section's appends inside the release (the fast path). */
  maxSectionBytes: number | undefined;
  readonly sessions = new Map<string, FakeSession>();
  readonly locks = new Map<string, FakeLock>();
  readonly ended = new Set<number>();
  readonly files = new Map<string, Buffer>();
  nextToken = 1;
  override async request(subject: string, payload: Uint8Array): Promise<Uint8Array> {
    if (this.noResponders) {
      await new Promise((r) => setImmediate(r));
      throw new NoRespondersError(subject);
    }
    return super.request(subject, payload);
  }

  protected override answer(req: Req): Reply {
    if (this.notLeader > 0) {
      this.notLeader--;
      return fail("NOT_LEADER");
    }
    return this.handle(req);
  }

  lock(name: string): FakeLock {
    let l = this.locks.get(name);
    if (!l) this.locks.set(name, (l = { holder: null, queue: [] }));
    return l;
  }

  /** Test control: the lease ran out (the leader's timer). */
  expireLease(name: string, notify = true): void {
    const l = this.lock(name);
    const h = l.holder!;
    this.ended.add(h.token);
    l.holder = null;
    if (notify) this.notify(h.client, { event: "lost", lock: name, token: h.token, error: "LOCK_EXPIRED" });
    this.grantNext(name);
  }
  /** Test control: the session went silent too long. */
  expireSession(client: string): void {
    this.endSession(client);
  }

  private endSession(client: string): void {
    this.sessions.delete(client);
    for (const [name, l] of this.locks) {
      l.queue = l.queue.filter((w) => w.client !== client);
      if (l.holder?.client === client) {
        this.ended.add(l.holder.token);
        l.holder = null;
        this.grantNext(name);
      }
    }
  }

  private info(name: string, h: Holder): LeaseInfo {
    return { lock: name, token: h.token, leaseMs: h.leaseMs, expiresAt: h.expiresAt };
  }
  private grant(name: string, client: string, leaseMs: number): Holder {
    const h: Holder = { client, token: this.nextToken++, leaseMs, expiresAt: Date.now() + leaseMs, staged: [] };
    this.lock(name).holder = h;
    return h;
  }
  private grantNext(name: string): void {
    const l = this.lock(name);
    const next = l.queue.shift();
    if (!next) return;
    const s = this.sessions.get(next.client)!;
    const h = this.grant(name, next.client, next.leaseMs);
    s.waiting.delete(next.seq);
    const lease = this.info(name, h);
    s.replies.set(next.seq, ok("Granted", { status: "granted", lease }));
    this.notify(next.client, { event: "granted", seq: next.seq, lease });
  }
  private queued(s: FakeSession, seq: number): Reply {
    const name = s.waiting.get(seq)!;
    const position = this.lock(name).queue.findIndex((w) => w.client === s.id) + 1;
    return ok("Queued", { status: "queued", position });
  }
  private holderCheck(s: FakeSession, name: string, token: number): Holder | Reply {
    const h = this.lock(name).holder;
    if (h && h.client === s.id && h.token === token) return h;
    return this.ended.has(token) ? fail("LOCK_EXPIRED") : fail("NOT_HOLDER");
  }

  protected handle(req: Req): Reply {
    switch (req.op) {
      case "ping":
        return this.sessions.has(req.client) ? ok("pong") : fail("SESSION_EXPIRED");
      case "status":
        return ok("status", {
          view: { leader: "fake", epoch: 1, appliedSeq: 0, now: Date.now(), nextToken: this.nextToken, sessions: this.sessions.size, locks: [], fileLengths: [] },
        });
      case "read":
        if (fileIndex(req.file) === undefined) return fail("FILE_NOT_FOUND");
        return ok("read", { data: (this.files.get(req.file) ?? Buffer.alloc(0)).toString("base64") });
    }
    if (req.op === "hello" && !this.sessions.has(req.client)) {
      this.sessions.set(req.client, { id: req.client, acked: 0, replies: new Map(), waiting: new Map() });
    }
    const s = this.sessions.get(req.client);
    if (!s) return req.op === "goodbye" ? ok("Disconnected!") : fail("SESSION_EXPIRED");
    const seq = req.seq as number;
    if (seq <= s.acked) return fail("STALE_REQUEST");
    const cached = s.replies.get(seq);
    if (cached) return cached;
    if (s.waiting.has(seq)) return this.queued(s, seq);
    let ack = Math.min(req.ack as number, seq - 1);
    for (const w of s.waiting.keys()) ack = Math.min(ack, w - 1);
    if (ack > s.acked) {
      for (const k of [...s.replies.keys()]) if (k <= ack) s.replies.delete(k);
      s.acked = ack;
    }
    const reply = this.execute(s, req);
    if (reply === "queued") return this.queued(s, seq);
    if (req.op !== "goodbye") s.replies.set(seq, reply);
    return reply;
  }

  protected execute(s: FakeSession, req: Req): Reply | "queued" {
    switch (req.op) {
      case "hello":
        return ok("Connected!", {
          session: {
            sessionTimeoutMs: this.sessionTimeoutMs,
            defaultLeaseMs: this.defaultLeaseMs,
            maxAppendBytes: this.maxAppendBytes,
            ...(this.maxSectionBytes !== undefined ? { maxSectionBytes: this.maxSectionBytes } : {}),
          },
        });
      case "goodbye":
        this.endSession(s.id);
        return ok("Disconnected!");
      case "acquire": {
        const name = req.lock as string;
        const l = this.lock(name);
        if (l.holder?.client === s.id) return fail("ALREADY_HELD", "ALREADY_HELD", { lease: this.info(name, l.holder) });
        if (l.queue.some((w) => w.client === s.id)) return fail("ALREADY_HELD");
        const leaseMs = (req.leaseMs as number | undefined) ?? this.defaultLeaseMs;
        if (!l.holder) return ok("Granted", { status: "granted", lease: this.info(name, this.grant(name, s.id, leaseMs)) });
        if (req.waitMs === 0) return fail("WAIT_TIMEOUT");
        l.queue.push({ client: s.id, seq: req.seq, leaseMs });
        s.waiting.set(req.seq, name);
        return "queued";
      }
      case "release": {
        const h = this.holderCheck(s, req.lock, req.token);
        if ("ok" in h) return h;
        if (req.staged !== undefined && req.staged !== h.staged.length) return fail("SECTION_MISMATCH");
        for (const a of (req.appends ?? []) as Array<{ file: string; data: string }>) h.staged.push({ file: a.file, data: Buffer.from(a.data, "base64") });
        let bytes = 0;
        for (const { file, data } of h.staged) {
          this.files.set(file, Buffer.concat([this.files.get(file) ?? Buffer.alloc(0), data]));
          bytes += data.length;
        }
        this.lock(req.lock).holder = null;
        this.grantNext(req.lock);
        return ok("Released", { committed: { appends: h.staged.length, bytes } });
      }
      case "abandon": {
        const h = this.holderCheck(s, req.lock, req.token);
        if ("ok" in h) return h;
        const bytes = h.staged.reduce((n, { data }) => n + data.length, 0);
        this.ended.add(h.token);
        this.lock(req.lock).holder = null;
        this.grantNext(req.lock);
        return ok("Abandoned", { discarded: { appends: h.staged.length, bytes } });
      }
      case "append": {
        if (fileIndex(req.file) === undefined) return fail("FILE_NOT_FOUND");
        const h = this.holderCheck(s, "global", req.token);
        if ("ok" in h) return h;
        h.staged.push({ file: req.file, data: Buffer.from(req.data, "base64") });
        return ok("Staged", { staged: { appends: h.staged.length, bytes: h.staged.reduce((n, x) => n + x.data.length, 0) } });
      }
      case "renew": {
        const h = this.holderCheck(s, req.lock, req.token);
        if ("ok" in h) return h;
        h.leaseMs = req.leaseMs ?? h.leaseMs;
        h.expiresAt = Date.now() + h.leaseMs;
        return ok("Renewed", { lease: this.info(req.lock, h) });
      }
      case "commit": {
        // Only what the tests need: a commit on a free lock.
        const name = req.lock as string;
        if (this.lock(name).holder) return fail("WAIT_TIMEOUT");
        const h = this.grant(name, s.id, this.defaultLeaseMs);
        let bytes = 0;
        for (const a of req.appends as Array<{ file: string; data: string }>) {
          const data = Buffer.from(a.data, "base64");
          this.files.set(a.file, Buffer.concat([this.files.get(a.file) ?? Buffer.alloc(0), data]));
          bytes += data.length;
        }
        this.lock(name).holder = null;
        return ok("Committed", { lease: this.info(name, h), committed: { appends: (req.appends as unknown[]).length, bytes } });
      }
      case "cancel": {
        const name = s.waiting.get(req.target);
        if (name === undefined) {
          // As the real leader: a request sent before the cancel that has not
          // arrived yet is cancelled ahead of its arrival.
          if (req.target > s.acked && req.target < req.seq && !s.replies.has(req.target)) {
            s.replies.set(req.target, fail("CANCELLED"));
            return ok("Cancelled before it arrived", { cancelled: true });
          }
          return ok("Not waiting", { cancelled: false });
        }
        const l = this.lock(name);
        l.queue = l.queue.filter((w) => !(w.client === s.id && w.seq === req.target));
        s.waiting.delete(req.target);
        s.replies.set(req.target, fail("CANCELLED"));
        return ok("Cancelled", { cancelled: true });
      }
      default:
        return fail("UNKNOWN_OP");
    }
  }
}

// ------------------------------------------------------------------ helpers

const mk = fakeClients();

/**
 * A waiter whose grant of "x" (token 2) reaches it only after its lease ran
 * out locally: the grant notification is dropped, its acquire's polls lose
 * their replies, and the renew that would confirm the grant gets no answer.
 * `waiterRules` are more faults of the waiter's. Resolves with what the
 * acquire finally returned.
 */
async function grantSeenTooLate(waiterRules: Array<Omit<FaultRule, "client">> = []) {
  const server = new FakeServer();
  const holder = await mk(server);
  const faults = new FaultInjector({ rules: [{ action: { kind: "dropNotification", event: "granted" } }] });
  const waiter = await mk(server, { faults, requestTimeoutMs: 30 });
  faults.add({ op: "acquire", client: waiter.clientId, seq: 2, attempt: [2, 3, 4, 5, 6, 7, 8, 9, 10, 11], action: { kind: "dropReply" } });
  faults.add({ op: "renew", client: waiter.clientId, action: { kind: "dropReply" } });
  for (const rule of waiterRules) faults.add({ ...rule, client: waiter.clientId } as FaultRule);
  const held = await holder.acquire("x");
  const p = waiter.acquire("x", { leaseMs: 150 });
  await waitFor(() => server.lock("x").queue.length === 1);
  await held.release();
  return { server, waiter, lease: await p };
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ tests

describe("DlmClient fast path: appends ride with the release", () => {
  test("append sends nothing; the release carries the section and names zero logged appends", async () => {
    const server = new FakeServer();
    server.maxSectionBytes = 1024;
    const c = await mk(server);
    const lease = await c.acquire();
    expect(await c.append("file_3", "hello ")).toEqual({ staged: { appends: 1, bytes: 6 } });
    expect(await c.append("file_4", "world")).toEqual({ staged: { appends: 2, bytes: 11 } });
    expect(server.ops("append")).toHaveLength(0);
    // A section past the server's maxSectionBytes is refused locally and not staged.
    await expect(c.append("file_3", Buffer.alloc(1020))).rejects.toMatchObject({ codeName: "TOO_LARGE" });
    expect(await lease.release()).toEqual({ appends: 2, bytes: 11 });
    const [release] = server.ops("release");
    expect(release).toMatchObject({
      staged: 0,
      appends: [
        { file: "file_3", data: Buffer.from("hello ").toString("base64") },
        { file: "file_4", data: Buffer.from("world").toString("base64") },
      ],
    });
    expect((await c.read("file_3")).toString()).toBe("hello ");
  });

  test("a section larger than one request spills its earlier appends and the release names their count", async () => {
    const server = new FakeServer();
    server.maxSectionBytes = 64 * 1024;
    server.maxAppendBytes = 300; // one request carries ~400 bytes of base64 plus fields
    const c = await mk(server);
    const lease = await c.acquire();
    const chunks = ["a", "b", "c", "d"].map((ch) => ch.repeat(200));
    for (const chunk of chunks) await c.append("file_5", chunk);
    const spilled = server.ops("append").length;
    expect(spilled).toBeGreaterThan(0);
    expect(spilled).toBeLessThan(4);
    expect(await lease.release()).toEqual({ appends: 4, bytes: 800 });
    const [release] = server.ops("release");
    expect(release.staged).toBe(spilled);
    expect((release.appends as unknown[]).length).toBe(4 - spilled);
    expect((await c.read("file_5")).toString()).toBe(chunks.join(""));
  });

  test("logEachAppend logs every append at once, and an append under a lost lease fails without a request", async () => {
    const server = new FakeServer();
    server.maxSectionBytes = 1024;
    const c = await mk(server, { logEachAppend: true });
    const lease = await c.acquire();
    await c.append("file_6", "x");
    expect(server.ops("append")).toHaveLength(1);
    server.expireLease("global");
    await waitFor(() => lease.lost);
    await expect(c.append("file_6", "y", { lease })).rejects.toMatchObject({ codeName: "LOCK_EXPIRED" });
    expect(server.ops("append")).toHaveLength(1);
  });

  test("commit sends one request carrying the section and resolves with its token", async () => {
    const server = new FakeServer();
    server.maxSectionBytes = 1024;
    const c = await mk(server);
    const result = await c.commit([{ file: "file_7", data: "one\n" }]);
    expect(result).toEqual({ lock: "global", token: 1, committed: { appends: 1, bytes: 4 } });
    expect(server.ops("commit")).toHaveLength(1);
    expect(server.ops("commit")[0]).toMatchObject({ lock: "global", appends: [{ file: "file_7", data: Buffer.from("one\n").toString("base64") }] });
  });
});

/**
 * A holder takes "jobs"; a second client's first acquire of it is queued on
 * the server but every reply is lost, so it gives up with TimeoutError.
 * `cleanupRules` are faults for the cancel that then cleans the wait up.
 */
async function giveUpOnJobs(
  cleanupRules: FaultRule[],
  opts: ClientOptions,
): Promise<{ server: FakeServer; holder: DlmClient; held: Lease; c: DlmClient; faults: FaultInjector; gaveUp: number }> {
  const server = new FakeServer();
  const holder = await mk(server);
  const held = await holder.acquire("jobs");
  const faults = new FaultInjector({ rules: [{ op: "acquire", nth: 1, action: { kind: "dropReply" } }, ...cleanupRules] });
  const c = await mk(server, { faults, maxAttempts: 2, ...opts });
  await expect(c.acquire("jobs")).rejects.toBeInstanceOf(TimeoutError);
  const gaveUp = server.ops("acquire", c.clientId)[0].seq as number;
  return { server, holder, held, c, faults, gaveUp };
}

describe("DlmClient against a fake leader", () => {
  test("connect says hello (seq 1, ack 0) and learns the session settings", async () => {
    const server = new FakeServer();
    const c = await mk(server);
    expect(server.received[0]).toEqual({ op: "hello", client: c.clientId, seq: 1, ack: 0, listsWaits: true });
    expect(c.clientId).toHaveLength(21); // nanoid
    expect(c.session).toEqual({ sessionTimeoutMs: 15_000, defaultLeaseMs: 10_000, maxAppendBytes: 65536 });
  });

  test("acquire, append, release commits; read returns the bytes", async () => {
    const server = new FakeServer();
    const c = await mk(server);
    const lease = await c.acquire();
    expect(lease.lock).toBe("global");
    expect(lease.token).toBe(1);
    expect(await c.append("file_3", "hello ")).toEqual({ staged: { appends: 1, bytes: 6 } });
    expect(await c.append("file_3", new Uint8Array([119, 111, 114, 108, 100]))).toEqual({ staged: { appends: 2, bytes: 11 } });
    expect(await lease.release()).toEqual({ appends: 2, bytes: 11 });
    expect(lease.released).toBe(true);
    expect(lease.signal.aborted).toBe(false);
    expect((await c.read("file_3")).toString()).toBe("hello world");
    expect((await c.status()).leader).toBe("fake");
  });

  test("abandon ends the grant without committing; the next waiter gets the lock", async () => {
    const server = new FakeServer();
    const c = await mk(server);
    const other = await mk(server);
    const lease = await c.acquire();
    await c.append("file_4", "half a section");
    const next = other.acquire();
    expect(await lease.abandon()).toEqual({ appends: 1, bytes: 14 });
    expect(lease.released).toBe(true);
    expect(server.ops("abandon")).toHaveLength(1);
    expect(server.ops("release")).toHaveLength(0);
    expect((await next).token).toBe(2);
    expect((await c.read("file_4")).length).toBe(0);
    // Abandoning again, or a lease already ended, is a no-op: the grant is over.
    expect(await lease.abandon()).toEqual({ appends: 0, bytes: 0 });
    expect(server.ops("abandon")).toHaveLength(1);
  });

  test("with local staging, abandon drops the client's section and what the server staged; nothing commits", async () => {
    const server = new FakeServer();
    server.maxSectionBytes = 1024 * 1024;
    const c = await mk(server);
    const other = await mk(server);
    const lease = await c.acquire();
    await c.append("file_4", "half a ");
    await c.append("file_4", "section");
    expect(server.ops("append")).toHaveLength(0); // staged in the client
    const next = other.acquire();
    expect(await lease.abandon()).toEqual({ appends: 2, bytes: 14 });
    expect(server.ops("abandon")).toHaveLength(1);
    expect(server.ops("release")).toHaveLength(0);
    expect((await next).token).toBe(2);
    expect((await c.read("file_4")).length).toBe(0);
    // The fast path itself: the section rides with the release.
    const again = await other.append("file_4", "whole");
    expect(again.staged).toEqual({ appends: 1, bytes: 5 });
    expect(await other.release()).toEqual({ appends: 1, bytes: 5 });
    expect(server.ops("release")[0]).toMatchObject({ staged: 0, appends: [{ file: "file_4" }] });
    expect((await c.read("file_4")).toString()).toBe("whole");
  });

  test("a retry after a lost reply reuses the seq and takes effect once", async () => {
    const server = new FakeServer();
    const faults = new FaultInjector({ rules: [{ op: "acquire", attempt: 1, action: { kind: "dropReply" } }] });
    const c = await mk(server, { faults });
    const lease = await c.acquire("orders");
    const acquires = server.ops("acquire");
    expect(acquires).toHaveLength(2);
    expect(acquires[0]!.seq).toBe(acquires[1]!.seq);
    expect(server.nextToken).toBe(2); // granted once
    expect(lease.token).toBe(1);
    expect(faults.events).toEqual([expect.objectContaining({ op: "acquire", attempt: 1, action: "dropReply" })]);
  });

  test("a duplicated append is staged once; a delayed reply past the timeout is retried", async () => {
    const server = new FakeServer();
    const faults = new FaultInjector({
      rules: [
        { op: "append", nth: 1, attempt: 1, action: { kind: "duplicateRequest", copies: 2 } },
        { op: "append", nth: 2, attempt: 1, action: { kind: "delayReply", ms: 120 } },
      ],
    });
    const c = await mk(server, { faults });
    const lease = await c.acquire();
    await c.append("file_1", "a");
    const second = await c.append("file_1", "b");
    expect(second.staged).toEqual({ appends: 2, bytes: 2 });
    expect(await lease.release()).toEqual({ appends: 2, bytes: 2 });
    expect((await c.read("file_1")).toString()).toBe("ab");
    expect(faults.events.map((e) => [e.nth, e.action])).toEqual([
      [1, "duplicateRequest"],
      [2, "delayReply"],
    ]);
  });

  test("TimeoutError after maxAttempts, with the same seq each attempt", async () => {
    const server = new FakeServer();
    const faults = new FaultInjector({ rules: [{ op: "release", action: { kind: "dropRequest" } }] });
    const c = await mk(server, { faults, maxAttempts: 3 });
    const lease = await c.acquire();
    const err = await lease.release().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TimeoutError);
    expect((err as Error).message).toMatch(/3 attempt\(s\) \(150 ms in all\); it may or may not have taken effect/);
    expect(server.ops("release")).toHaveLength(0);
    const seqs = new Set(faults.events.map((e) => e.seq));
    expect(seqs.size).toBe(1);
    expect(faults.events.map((e) => e.attempt)).toEqual([1, 2, 3]);
    // the outcome is unknown, so the client still holds the lease and can retry
    expect(lease.state).toBe("held");
    faults.clear();
    expect(await lease.release()).toEqual({ appends: 0, bytes: 0 });
  });

  test("an acquire given up after its attempts is cancelled on the server, so the next acquire is not ALREADY_HELD", async () => {
    const { server, holder, held, c, gaveUp } = await giveUpOnJobs([], {});
    await waitFor(() => server.ops("cancel", c.clientId).some((r) => r.target === gaveUp));
    expect(server.lock("jobs").queue).toEqual([]);
    const next = c.acquire("jobs");
    await holder.release(held);
    expect((await next).lock).toBe("jobs");
  });

  test("an acquire right after one given up waits for that one's cleanup instead of being refused ALREADY_HELD", async () => {
    // The cancel that cleans the given-up wait up is slow to reach the
    // server, so the wait still stands there when the caller acquires again.
    const { server, holder, held, c } = await giveUpOnJobs([{ op: "cancel", nth: 1, action: { kind: "delayRequest", ms: 150 } }], { requestTimeoutMs: 400 });
    const next = c.acquire("jobs");
    await waitFor(() => server.ops("cancel", c.clientId).length >= 1);
    await holder.release(held);
    expect((await next).lock).toBe("jobs");
  });

  test("a given-up wait whose cancel never got through is cancelled again when the next acquire is refused ALREADY_HELD by it", async () => {
    // Every attempt of the cancel that should clean the given-up wait up is lost.
    const { server, holder, held, c, faults, gaveUp } = await giveUpOnJobs([{ op: "cancel", nth: 1, action: { kind: "dropRequest" } }], { requestTimeoutMs: 50 });
    await waitFor(() => faults.events.filter((e) => e.op === "cancel").length >= 2);
    await pause(150); // the cleanup has given up by now
    expect(server.lock("jobs").queue.map((w) => w.seq)).toEqual([gaveUp]); // still queued on the server
    const next = c.acquire("jobs");
    await waitFor(() => server.ops("cancel", c.clientId).some((r) => r.target === gaveUp));
    await waitFor(() => server.lock("jobs").queue.length === 1 && server.lock("jobs").queue[0].seq !== gaveUp);
    await holder.release(held);
    expect((await next).lock).toBe("jobs");
  });

  test("ack stays below the lowest outstanding seq with several requests in flight", async () => {
    const server = new FakeServer();
    const b = await mk(server);
    const a = await mk(server);
    const bLease = await b.acquire("b");
    await a.acquire("global"); // a: seq 2
    const waiting = a.acquire("b"); // a: seq 3, queued
    await waitFor(() => server.ops("acquire", a.clientId).some((r) => r.lock === "b"));
    await a.append("file_0", "x"); // seq 4
    await a.renew(a.leaseFor("global")!); // seq 5
    const during = server.received.filter((r) => r.client === a.clientId && r.seq >= 4);
    expect(during.map((r) => [r.op, r.seq, r.ack])).toEqual([
      ["append", 4, 2],
      ["renew", 5, 2],
    ]);
    await bLease.release();
    const bHeld = await waiting;
    expect(bHeld.lock).toBe("b");
    await a.append("file_0", "y");
    const last = server.ops("append", a.clientId).at(-1)!;
    expect(last.ack).toBe(last.seq - 1); // nothing else outstanding any more
    for (const r of server.received) if (typeof r.seq === "number") expect(r.ack).toBeLessThan(r.seq);
  });

  test("a lost grant notification is recovered by polling the same seq", async () => {
    const server = new FakeServer();
    const holder = await mk(server);
    const faults = new FaultInjector({ rules: [{ action: { kind: "dropNotification", event: "granted" } }] });
    const waiter = await mk(server, { faults });
    const held = await holder.acquire("x");
    const p = waiter.acquire("x");
    await waitFor(() => server.ops("acquire", waiter.clientId).length >= 2); // it polls while queued
    await held.release();
    const lease = await p;
    expect(lease.token).toBe(2);
    expect(faults.events).toEqual([expect.objectContaining({ op: "notification", event: "granted", action: "dropNotification" })]);
    const seqs = new Set(server.ops("acquire", waiter.clientId).map((r) => r.seq));
    expect(seqs.size).toBe(1);
  });

  test("a grant notification resolves a queued acquire", async () => {
    const server = new FakeServer();
    const holder = await mk(server);
    const waiter = await mk(server, { requestTimeoutMs: 1000 }); // slow polls: the notification must do it
    const held = await holder.acquire("x");
    const p = waiter.acquire("x");
    await waitFor(() => server.ops("acquire", waiter.clientId).length === 1);
    await pause(10);
    await held.release();
    const started = Date.now();
    await p;
    expect(Date.now() - started).toBeLessThan(500);
    expect(server.ops("acquire", waiter.clientId)).toHaveLength(1);
  });

  test("a request over the NATS server's max_payload is a TooLargeError at once: nothing sent, no retry", async () => {
    const server = new FakeServer();
    const client = await mk(server);
    server.maxPayloadBytes = 2000;
    const before = server.received.length;
    await expect(client.commit([{ file: "file_1", data: "z".repeat(3000) }])).rejects.toMatchObject({
      codeName: "TOO_LARGE",
      message: expect.stringMatching(/larger than the NATS server's max_payload.*Nothing was sent/),
    });
    // This fake leader predates one-request commits, so commit() ran as
    // acquire, append, release: the append never left, the grant was ended.
    expect(server.received.slice(before).map((r) => r.op)).toEqual(["acquire", "abandon"]);
  });

  test("a malformed notification is logged and dropped; the client's connection goes on delivering", async () => {
    const server = new FakeServer();
    const client = await mk(server);
    // Each of these made the handler throw inside the NATS subscription
    // callback, which ends nats.js's reader for the connection for good.
    server.notify(client.clientId!, { event: "granted", seq: 99 });
    server.notify(client.clientId!, { event: "lost" });
    server.notify(client.clientId!, { event: "granted", seq: 98, lease: null, leases: [null] });
    await pause(20);
    const lease = await client.acquire("after");
    await lease.release();
  });

  test("UnavailableError when nobody serves the subject past the budget", async () => {
    const server = new FakeServer();
    server.noResponders = true;
    const err = await connect({ transport: server, unavailableTimeoutMs: 150, backoff: { initialMs: 5, maxMs: 20, jitter: 0 } }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(UnavailableError);
    expect((err as Error).message).toBe("no dlm coordinator answered on dlm.req within 0.15s: is a node running?");
    expect((err as DlmError).cause).toBeInstanceOf(NoRespondersError);
  });

  test("NOT_LEADER and no-responders are retried with the same seq without using attempts", async () => {
    const server = new FakeServer();
    const c = await mk(server, { maxAttempts: 1 });
    server.notLeader = 4;
    const lease = await c.acquire("n");
    const acquires = server.ops("acquire");
    expect(acquires).toHaveLength(5);
    expect(new Set(acquires.map((r) => r.seq)).size).toBe(1);
    server.noResponders = true;
    setTimeout(() => (server.noResponders = false), 60);
    expect(await lease.release()).toEqual({ appends: 0, bytes: 0 });
  });

  test("tryAcquire returns null when held; waitMs 0 is WAIT_TIMEOUT", async () => {
    const server = new FakeServer();
    const a = await mk(server);
    const b = await mk(server);
    const lease = await a.tryAcquire("t");
    expect(lease).not.toBeNull();
    expect(await b.tryAcquire("t")).toBeNull();
    await expect(b.acquire("t", { waitMs: 0 })).rejects.toBeInstanceOf(WaitTimeoutError);
  });

  test("a lease's signal read before the loss aborts with the reason when the lease is lost", async () => {
    const server = new FakeServer();
    const c = await mk(server);
    const lease = await c.acquire();
    const signal = lease.signal;
    expect(lease.signal).toBe(signal);
    const onAbort = jest.fn();
    signal.addEventListener("abort", onAbort);
    expect(signal.aborted).toBe(false);
    server.expireLease("global");
    await waitFor(() => lease.lost);
    expect(onAbort).toHaveBeenCalledTimes(1);
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBeInstanceOf(LockExpiredError);
    expect(lease.signal).toBe(signal);
  });

  test("a lost notification: signal aborts, 'lost' is emitted once, the client emits leaseLost", async () => {
    const server = new FakeServer();
    const c = await mk(server);
    const lease = await c.acquire();
    const onLost = jest.fn();
    const onClientLost = jest.fn();
    lease.on("lost", onLost);
    c.on("leaseLost", onClientLost);
    server.expireLease("global");
    await waitFor(() => lease.lost);
    expect(lease.signal.aborted).toBe(true);
    expect(lease.signal.reason).toBeInstanceOf(LockExpiredError);
    expect(lease.lostReason).toBeInstanceOf(LockExpiredError);
    // later failures do not emit again; a lost lease never commits
    await expect(lease.release()).rejects.toBeInstanceOf(LockExpiredError);
    await expect(c.append("file_0", "x", { lease })).rejects.toBeInstanceOf(LockExpiredError);
    await pause(20);
    expect(onLost).toHaveBeenCalledTimes(1);
    expect(onClientLost).toHaveBeenCalledTimes(1);
    expect(onClientLost.mock.calls[0]![0]).toBe(lease);
    expect(server.ops("release")).toHaveLength(0);
  });

  test("a renew answered LOCK_EXPIRED loses the lease", async () => {
    const server = new FakeServer();
    const c = await mk(server, { renewFraction: 0.2 });
    const lease = await c.acquire("r", { leaseMs: 100 });
    const lost = new Promise<DlmError>((resolve) => lease.on("lost", resolve));
    await waitFor(() => server.ops("renew").length >= 1); // background renew runs
    server.expireLease("r", false); // silently: only the next renew tells
    const err = await lost;
    expect(err).toBeInstanceOf(LockExpiredError);
    expect(err.reply?.error).toBe("LOCK_EXPIRED");
  });

  test("renews that get no answer lose the lease locally after leaseMs", async () => {
    const server = new FakeServer();
    const faults = new FaultInjector({ rules: [{ op: "renew", action: { kind: "dropReply" } }] });
    const c = await mk(server, { faults, requestTimeoutMs: 30 });
    const started = performance.now();
    const lease = await c.acquire("d", { leaseMs: 150 });
    const err = await new Promise<DlmError>((resolve) => lease.on("lost", resolve));
    const elapsed = performance.now() - started;
    expect(err).toBeInstanceOf(LockExpiredError);
    expect(err.message).toMatch(/measured locally/);
    expect(elapsed).toBeGreaterThanOrEqual(145);
    expect(elapsed).toBeLessThan(400);
    expect(server.ops("renew").length).toBeGreaterThan(0);
  });

  test("a lease lost by the local deadline is abandoned on the server; later calls say LOCK_EXPIRED; the next acquire is granted", async () => {
    const server = new FakeServer();
    const faults = new FaultInjector({ rules: [{ op: "renew", action: { kind: "dropReply" } }] });
    const c = await mk(server, { faults, requestTimeoutMs: 30 });
    const lease = await c.acquire("global", { leaseMs: 150 });
    await c.append("file_5", "never committed");
    await new Promise<DlmError>((resolve) => lease.on("lost", resolve));
    // The server renewed the grant (only the replies were lost): the client ends it.
    await waitFor(() => server.lock("global").holder === null);
    const abandons = server.ops("abandon", c.clientId);
    expect(abandons).toHaveLength(1);
    expect(abandons[0]).toMatchObject({ lock: "global", token: lease.token });
    await expect(c.append("file_5", "x")).rejects.toBeInstanceOf(LockExpiredError);
    await expect(c.release()).rejects.toBeInstanceOf(LockExpiredError);
    await expect(lease.release()).rejects.toBeInstanceOf(LockExpiredError);
    faults.clear();
    const next = await c.acquire("global", { leaseMs: 10_000 });
    expect(next.token).toBeGreaterThan(lease.token);
    expect(await next.release()).toEqual({ appends: 0, bytes: 0 });
    expect(server.files.get("file_5")).toBeUndefined();
    expect(server.ops("release")).toHaveLength(1);
  });

  test("with local staging, a lease lost by the local deadline: append and release say LOCK_EXPIRED at once, the grant is abandoned, nothing commits", async () => {
    const server = new FakeServer();
    server.maxSectionBytes = 1024 * 1024;
    const faults = new FaultInjector({ rules: [{ op: "renew", action: { kind: "dropReply" } }] });
    const c = await mk(server, { faults, requestTimeoutMs: 30 });
    const lease = await c.acquire("global", { leaseMs: 150 });
    await c.append("file_7", "staged locally");
    await new Promise<DlmError>((resolve) => lease.on("lost", resolve));
    await waitFor(() => server.lock("global").holder === null);
    expect(server.ops("abandon", c.clientId)).toHaveLength(1);
    const sent = (): number => server.received.filter((r) => r.op !== "ping").length;
    const sentBefore = sent();
    await expect(c.append("file_7", "x")).rejects.toBeInstanceOf(LockExpiredError);
    await expect(lease.release()).rejects.toBeInstanceOf(LockExpiredError);
    await expect(c.release()).rejects.toBeInstanceOf(LockExpiredError);
    expect(sent()).toBe(sentBefore); // refused locally
    faults.clear();
    const next = await c.acquire("global", { leaseMs: 10_000 });
    expect(next.token).toBeGreaterThan(lease.token);
    expect(await next.release()).toEqual({ appends: 0, bytes: 0 });
    expect(server.files.get("file_7")).toBeUndefined();
    expect(server.ops("append")).toHaveLength(0);
  });

  test("an append made after the local deadline, before its timer had a turn, is refused LOCK_EXPIRED", async () => {
    const server = new FakeServer();
    server.maxSectionBytes = 1024 * 1024;
    const c = await mk(server, { requestTimeoutMs: 30 });
    const lease = await c.acquire("global", { leaseMs: 100 });
    // A busy event loop: the deadline passes while no timer can run, and
    // the appends that follow are promise continuations that run first.
    const until = performance.now() + 150;
    while (performance.now() < until) {
      // spin
    }
    await expect(c.append("file_3", "too late")).rejects.toBeInstanceOf(LockExpiredError);
    expect(lease.lost).toBe(true);
    await expect(lease.release()).rejects.toBeInstanceOf(LockExpiredError);
    await waitFor(() => server.lock("global").holder === null);
    expect(server.ops("abandon", c.clientId)).toHaveLength(1);
    expect(server.files.get("file_3")).toBeUndefined();
  });

  test("a grant seen after its local deadline that no renew confirms is not handed out: it is abandoned and acquire queues again", async () => {
    const { server, waiter, lease } = await grantSeenTooLate();
    // The first grant (token 2) was given back without committing; the
    // lease returned is a later grant, confirmed in time.
    expect(server.ops("abandon", waiter.clientId).map((r) => r.token)).toContain(2);
    expect(lease.token).toBeGreaterThan(2);
  });

  test("an append in flight when the lease is declared lost fails with LOCK_EXPIRED and never commits", async () => {
    const server = new FakeServer();
    const faults = new FaultInjector({
      rules: [
        { op: "renew", action: { kind: "dropReply" } },
        { op: "append", action: { kind: "dropReply" } },
      ],
    });
    // Without an answer the append would retry for 3 x 400 ms and end in
    // TimeoutError; the loss at 150 ms ends it at once.
    const c = await mk(server, { faults, requestTimeoutMs: 400 });
    const lease = await c.acquire("global", { leaseMs: 150 });
    const append = c.append("file_6", "in flight");
    await expect(append).rejects.toBeInstanceOf(LockExpiredError);
    expect(lease.lost).toBe(true);
    expect(server.ops("append")).toHaveLength(1); // the server did stage it...
    await waitFor(() => server.lock("global").holder === null);
    expect(server.ops("abandon")).toHaveLength(1); // ...and then dropped it
    expect(server.files.get("file_6")).toBeUndefined();
  });

  test("an abandon that did not get through is sent again when the next acquire is refused ALREADY_HELD by that grant", async () => {
    const server = new FakeServer();
    const faults = new FaultInjector({
      rules: [
        { op: "renew", action: { kind: "dropReply" } },
        { op: "abandon", action: { kind: "dropRequest" }, times: 3 },
      ],
    });
    const c = await mk(server, { faults, requestTimeoutMs: 30 });
    const lease = await c.acquire("g2", { leaseMs: 150 });
    await new Promise<DlmError>((resolve) => lease.on("lost", resolve));
    expect(server.lock("g2").holder?.token).toBe(lease.token); // the server still counts it
    const next = await c.acquire("g2", { leaseMs: 10_000 });
    expect(next.token).toBeGreaterThan(lease.token);
    const acquires = server.ops("acquire", c.clientId).map((r) => r.seq);
    expect(new Set(acquires).size).toBe(3); // the first grant, one refused ALREADY_HELD, the one granted
    expect(server.ops("abandon")).toHaveLength(1); // the three dropped attempts never reached it
    await next.release();
  });

  test("background renewals keep a lease alive past leaseMs", async () => {
    const server = new FakeServer();
    const c = await mk(server);
    const lease = await c.acquire("k", { leaseMs: 90 });
    await pause(300);
    expect(lease.lost).toBe(false);
    expect(server.ops("renew").length).toBeGreaterThanOrEqual(5);
    await lease.release();
    const renews = server.ops("renew").length;
    await pause(100);
    expect(server.ops("renew")).toHaveLength(renews); // stopped on release
  });

  test("aborting a queued acquire sends cancel for its seq and rejects CancelledError", async () => {
    const server = new FakeServer();
    const holder = await mk(server);
    const waiter = await mk(server);
    await holder.acquire("x");
    const ac = new AbortController();
    const p = waiter.acquire("x", { signal: ac.signal });
    await waitFor(() => server.lock("x").queue.length === 1);
    ac.abort();
    await expect(p).rejects.toBeInstanceOf(CancelledError);
    const acquireSeq = server.ops("acquire", waiter.clientId)[0]!.seq;
    expect(server.ops("cancel", waiter.clientId).map((r) => r.target)).toEqual([acquireSeq]);
    expect(server.lock("x").queue).toHaveLength(0);
  });

  test("abort after an unseen grant: cancel says not waiting, the client learns the grant and releases it", async () => {
    const server = new FakeServer();
    const holder = await mk(server);
    const faults = new FaultInjector({ rules: [{ action: { kind: "dropNotification", event: "granted" } }] });
    const waiter = await mk(server, { faults, requestTimeoutMs: 2000 }); // no poll during the test
    const held = await holder.acquire("x");
    const ac = new AbortController();
    const p = waiter.acquire("x", { signal: ac.signal });
    await waitFor(() => server.lock("x").queue.length === 1);
    await held.release(); // granted to the waiter, notification dropped
    await waitFor(() => server.lock("x").holder?.client === waiter.clientId);
    ac.abort();
    await expect(p).rejects.toBeInstanceOf(CancelledError);
    await waitFor(() => server.lock("x").holder === null);
    expect(server.ops("cancel", waiter.clientId)).toHaveLength(1);
    expect(server.ops("release", waiter.clientId)).toHaveLength(1);
    expect(waiter.leases).toHaveLength(0);
  });

  test("abort while the leader is unreachable rejects promptly; the cancel completes later", async () => {
    const server = new FakeServer();
    const holder = await mk(server);
    const waiter = await mk(server, { unavailableTimeoutMs: 5000 });
    await holder.acquire("x");
    const ac = new AbortController();
    const p = waiter.acquire("x", { signal: ac.signal });
    await waitFor(() => server.lock("x").queue.length === 1);
    server.noResponders = true;
    const started = Date.now();
    ac.abort();
    await expect(p).rejects.toBeInstanceOf(CancelledError);
    expect(Date.now() - started).toBeLessThan(1000); // not the 5 s budget
    expect(server.lock("x").queue).toHaveLength(1);
    server.noResponders = false;
    await waitFor(() => server.lock("x").queue.length === 0);
    expect(server.ops("cancel", waiter.clientId)).toHaveLength(1);
  });

  test("a grant found late by polling is confirmed with a renew before it is returned", async () => {
    const server = new FakeServer();
    const holder = await mk(server);
    const faults = new FaultInjector({ rules: [{ action: { kind: "dropNotification", event: "granted" } }] });
    const waiter = await mk(server, { faults, requestTimeoutMs: 30 });
    // the waiter's first acquire is seq 2; its polls 2..6 lose their replies
    faults.add({ op: "acquire", client: waiter.clientId, seq: 2, attempt: [2, 3, 4, 5, 6], action: { kind: "dropReply" } });
    const held = await holder.acquire("x");
    const p = waiter.acquire("x", { leaseMs: 200 });
    await waitFor(() => server.lock("x").queue.length === 1);
    await held.release();
    const lease = await p;
    expect(lease.token).toBe(2);
    expect(server.ops("renew", waiter.clientId).length).toBeGreaterThanOrEqual(1);
    await pause(60);
    expect(lease.lost).toBe(false);
  });

  test("a grant that ran out before the client saw it: acquire queues again", async () => {
    const server = new FakeServer();
    const holder = await mk(server);
    const faults = new FaultInjector({ rules: [{ action: { kind: "dropNotification", event: "granted" } }] });
    const waiter = await mk(server, { faults, requestTimeoutMs: 30 });
    faults.add({ op: "acquire", client: waiter.clientId, seq: 2, attempt: [2, 3, 4, 5, 6], action: { kind: "dropReply" } });
    const lost = jest.fn();
    waiter.on("leaseLost", lost);
    const held = await holder.acquire("x");
    const p = waiter.acquire("x", { leaseMs: 200 });
    await waitFor(() => server.lock("x").queue.length === 1);
    await held.release();
    server.expireLease("x", false); // the leader's timer ends the unseen grant
    const lease = await p;
    expect(lease.token).toBe(3);
    const renews = server.ops("renew", waiter.clientId);
    expect(renews[0]!.token).toBe(2);
    expect(new Set(server.ops("acquire", waiter.clientId).map((r) => r.seq)).size).toBe(2);
    expect(lost).not.toHaveBeenCalled(); // the caller never saw the ended grant
  });

  test("an already aborted signal rejects without sending", async () => {
    const server = new FakeServer();
    const c = await mk(server);
    const before = server.received.length;
    await expect(c.acquire("x", { signal: AbortSignal.abort() })).rejects.toBeInstanceOf(CancelledError);
    expect(server.received).toHaveLength(before);
  });

  test("SESSION_EXPIRED: leases lost, waits rejected, a fresh session takes over", async () => {
    const server = new FakeServer();
    const other = await mk(server);
    const c = await mk(server);
    const oldId = c.clientId!;
    await other.acquire("busy");
    const lease = await c.acquire("mine");
    const waiting = c.acquire("busy");
    await waitFor(() => server.lock("busy").queue.length === 1);
    const expired = jest.fn();
    c.on("sessionExpired", expired);
    server.expireSession(oldId);
    await expect(c.renew(lease)).rejects.toBeInstanceOf(SessionExpiredError);
    await expect(waiting).rejects.toBeInstanceOf(SessionExpiredError);
    expect(lease.lost).toBe(true);
    expect(lease.lostReason).toBeInstanceOf(SessionExpiredError);
    expect(expired).toHaveBeenCalledTimes(1);
    await waitFor(() => c.clientId !== undefined && c.clientId !== oldId);
    const hello = server.ops("hello", c.clientId);
    expect(hello).toEqual([{ op: "hello", client: c.clientId, seq: 1, ack: 0, listsWaits: true }]);
    const again = await c.acquire("mine");
    expect(again.clientId).toBe(c.clientId);
    expect(server.ops("acquire", c.clientId)[0]!.seq).toBe(2);
  });

  test("a hello answered SESSION_EXPIRED (its session ended before a retry got through) starts over under a new id; a fixed clientId does not", async () => {
    class EndsFirstSession extends FakeServer {
      refused: string[] = [];
      protected override answer(req: Req): Reply {
        if (req.op === "hello" && this.refused.length === 0) {
          this.refused.push(req.client);
          return fail("SESSION_EXPIRED");
        }
        return super.answer(req);
      }
    }
    const server = new EndsFirstSession();
    const c = await mk(server);
    expect(server.refused).toHaveLength(1);
    expect(c.clientId).not.toBe(server.refused[0]);
    expect((await c.acquire("a")).lock).toBe("a");

    const fixed = new EndsFirstSession();
    await expect(mk(fixed, { clientId: "fixed-client-id" })).rejects.toBeInstanceOf(SessionExpiredError);
  });

  test("heartbeat pings keep an idle session alive", async () => {
    const server = new FakeServer();
    server.sessionTimeoutMs = 90;
    const c = await mk(server);
    await pause(200);
    expect(server.ops("ping", c.clientId).length).toBeGreaterThanOrEqual(3);
    expect(server.ops("ping", c.clientId)[0]).toEqual({ op: "ping", client: c.clientId });
  });

  test("an empty append or commit fails locally with BadRequestError and sends nothing", async () => {
    const server = new FakeServer();
    server.maxSectionBytes = 1024;
    const c = await mk(server);
    await c.acquire("global");
    const before = server.received.length;
    await expect(c.append("file_1", "")).rejects.toBeInstanceOf(BadRequestError);
    await expect(c.commit([{ file: "file_1", data: new Uint8Array(0) }])).rejects.toBeInstanceOf(BadRequestError);
    expect(server.received).toHaveLength(before);
  });

  test("append without a global lease fails locally; bad file names fail locally", async () => {
    const server = new FakeServer();
    const c = await mk(server);
    const before = server.received.length;
    await expect(c.append("file_0", "x")).rejects.toBeInstanceOf(NotHolderError);
    const other = await c.acquire("other");
    await expect(c.append("file_0", "x", { lease: other })).rejects.toBeInstanceOf(NotHolderError);
    await c.acquire();
    await expect(c.append("../etc/passwd", "x")).rejects.toBeInstanceOf(FileNotFoundError);
    await expect(c.read("file_100")).rejects.toBeInstanceOf(FileNotFoundError);
    expect(server.received.filter((r) => r.op === "append")).toHaveLength(0);
    expect(server.received.length).toBe(before + 2); // the two acquires
  });

  test("close: pending acquire rejects ClosedError, goodbye is sent, later calls throw ClosedError", async () => {
    const server = new FakeServer();
    const holder = await mk(server);
    const c = await mk(server);
    await holder.acquire("x");
    const held = await c.acquire("y");
    const p = c.acquire("x").catch((e: unknown) => e);
    await waitFor(() => server.lock("x").queue.length === 1);
    const message = await c.close();
    expect(message).toBe("Disconnected!");
    expect(await p).toBeInstanceOf(ClosedError);
    expect(held.lost).toBe(true);
    expect(held.lostReason).toBeInstanceOf(ClosedError);
    expect(server.ops("goodbye")).toHaveLength(1);
    expect(server.sessions.has(c.clientId ?? "gone")).toBe(false);
    expect(server.lock("x").queue).toHaveLength(0);
    expect(server.lock("y").holder).toBeNull();
    await expect(c.acquire("z")).rejects.toBeInstanceOf(ClosedError);
    expect(await c.close()).toBe("Disconnected!"); // idempotent
  });

  test("a retried goodbye whose first reply was lost still closes cleanly", async () => {
    const server = new FakeServer();
    const faults = new FaultInjector({ rules: [{ op: "goodbye", attempt: 1, action: { kind: "dropReply" } }] });
    const c = await mk(server, { faults });
    await expect(c.close()).resolves.toBe("Disconnected!");
    expect(server.ops("goodbye")).toHaveLength(2);
  });

  test("several clients: FIFO order of grants", async () => {
    const server = new FakeServer();
    const h = await mk(server);
    const ws = await Promise.all([mk(server), mk(server), mk(server)]);
    const first = await h.acquire("f");
    const order: number[] = [];
    const ps: Array<Promise<Lease>> = [];
    for (const [i, w] of ws.entries()) {
      ps.push(
        w.acquire("f").then(async (l) => {
          order.push(i);
          await l.release();
          return l;
        }),
      );
      await waitFor(() => server.lock("f").queue.length === i + 1);
    }
    await first.release();
    await Promise.all(ps);
    expect(order).toEqual([0, 1, 2]);
  });
});

describe("DlmClient: a renew that crosses a release", () => {
  test("a renew refused NOT_HOLDER because the release got there first does not mark the released lease lost", async () => {
    const server = new FakeServer();
    server.maxSectionBytes = 1024;
    const faults = new FaultInjector({
      rules: [
        // The background renew reaches the server after the release, and is
        // refused NOT_HOLDER while the release's answer is still on its way.
        { op: "renew", nth: 1, attempt: 1, action: { kind: "delayRequest", ms: 30 } },
        { op: "release", nth: 1, action: { kind: "delayReply", ms: 50 } },
      ],
    });
    const c = await mk(server, { faults, requestTimeoutMs: 100 });
    const lost = jest.fn();
    c.on("leaseLost", lost);
    const lease = await c.acquire("global", { leaseMs: 600 });
    await c.append("file_5", "ok");
    await waitFor(() => faults.events.some((e) => e.op === "renew"));
    expect(await lease.release()).toEqual({ appends: 1, bytes: 2 });
    expect(server.ops("renew")).toHaveLength(1);
    const order = server.received.filter((r) => r.op === "renew" || r.op === "release").map((r) => r.op);
    expect(order).toEqual(["release", "renew"]); // it did cross the release
    expect(lease.released).toBe(true);
    expect(lease.lost).toBe(false);
    expect(lease.signal.aborted).toBe(false);
    expect(lost).not.toHaveBeenCalled();
    expect((await c.read("file_5")).toString()).toBe("ok");
  });
});

describe("DlmClient: a release that got no answer is asked about again under its own seq", () => {
  /** A client on a fast-path server whose first release loses the replies of its first three attempts (TimeoutError). */
  async function releaseWithoutAnswer(extraRules: FaultRule[] = [], leaseMs?: number) {
    const server = new FakeServer();
    server.maxSectionBytes = 1024;
    const faults = new FaultInjector({ rules: [{ op: "release", nth: 1, attempt: [1, 2, 3], action: { kind: "dropReply" } }, ...extraRules] });
    const c = await mk(server, { faults });
    const lost = jest.fn();
    c.on("leaseLost", lost);
    const lease = await c.acquire("global", leaseMs === undefined ? {} : { leaseMs });
    await c.append("file_1", "data");
    await expect(lease.release()).rejects.toBeInstanceOf(TimeoutError);
    return { server, c, lease, lost };
  }

  test("release() after a TimeoutError sends the same seq again and resolves with what the first one committed", async () => {
    const { server, c, lease, lost } = await releaseWithoutAnswer();
    // The section may be in the files already: it takes no more appends.
    await expect(c.append("file_1", "more")).rejects.toThrow(/got no answer and may have committed/);
    expect(await lease.release()).toEqual({ appends: 1, bytes: 4 });
    expect(lease.released).toBe(true);
    expect(lost).not.toHaveBeenCalled();
    expect((await c.read("file_1")).toString()).toBe("data");
    expect(new Set(server.ops("release").map((r) => r.seq)).size).toBe(1);
  });

  test("a renew refused NOT_HOLDER after a release with no answer asks about the release in the background; the next release() says it committed", async () => {
    const { c, lease, lost } = await releaseWithoutAnswer([], 600);
    await waitFor(() => lease.released || lease.lost);
    expect(lease.released).toBe(true);
    expect(lost).not.toHaveBeenCalled();
    expect(await lease.release()).toEqual({ appends: 1, bytes: 4 });
    expect((await c.read("file_1")).toString()).toBe("data");
  });

  test("abandon() after a release with no answer that committed rejects saying so, and the lease is released, not lost", async () => {
    const { server, c, lease, lost } = await releaseWithoutAnswer();
    await expect(lease.abandon()).rejects.toThrow(/had committed the section \(1 appends, 4 bytes\)/);
    expect(lease.released).toBe(true);
    expect(lost).not.toHaveBeenCalled();
    expect(await lease.release()).toEqual({ appends: 1, bytes: 4 });
    expect((await c.read("file_1")).toString()).toBe("data");
    expect(new Set(server.ops("release").map((r) => r.seq)).size).toBe(1);
  });

  test("abandon() after a release that never reached the server discards the section, and that release never commits", async () => {
    const server = new FakeServer();
    server.maxSectionBytes = 1024;
    const faults = new FaultInjector({ rules: [{ op: "release", nth: 1, attempt: [1, 2, 3], action: { kind: "dropRequest" } }] });
    const c = await mk(server, { faults });
    const lease = await c.acquire();
    await c.append("file_1", "data");
    await expect(lease.release()).rejects.toBeInstanceOf(TimeoutError);
    expect(await lease.abandon()).toEqual({ appends: 1, bytes: 4 });
    expect(lease.released).toBe(true);
    expect(server.ops("release")).toHaveLength(0);
    expect(server.lock("global").holder).toBeNull();
    expect(server.files.get("file_1")).toBeUndefined();
  });

  test("a release retried after its session expired is lost with TimeoutError (it may have committed), not SESSION_EXPIRED", async () => {
    const { server, c, lease, lost } = await releaseWithoutAnswer();
    server.expireSession(c.clientId!);
    // The first release did commit; its answer went with the session.
    const e = await lease.release().catch((err: unknown) => err);
    expect(e).toBeInstanceOf(TimeoutError);
    expect((e as Error).message).toMatch(/may or may not have been committed/);
    expect(lease.lost).toBe(true);
    expect(lease.lostReason).toBeInstanceOf(TimeoutError);
    expect(lost).toHaveBeenCalledTimes(1);
    expect((await c.read("file_1")).toString()).toBe("data");
  });

  test("a session that expires while a release has no answer (learned from another request) loses that lease with TimeoutError, the others with SESSION_EXPIRED", async () => {
    const { server, c, lease } = await releaseWithoutAnswer();
    const other = await c.acquire("other");
    server.expireSession(c.clientId!);
    await expect(c.renew(other)).rejects.toBeInstanceOf(SessionExpiredError);
    expect(lease.lostReason).toBeInstanceOf(TimeoutError);
    expect(other.lostReason).toBeInstanceOf(SessionExpiredError);
  });

  test("a release whose only attempt is answered SESSION_EXPIRED never ran: the lease is lost with SESSION_EXPIRED", async () => {
    const server = new FakeServer();
    server.maxSectionBytes = 1024;
    const c = await mk(server);
    const lease = await c.acquire();
    await c.append("file_1", "data");
    server.expireSession(c.clientId!);
    await expect(lease.release()).rejects.toBeInstanceOf(SessionExpiredError);
    expect(lease.lostReason).toBeInstanceOf(SessionExpiredError);
    expect(server.files.get("file_1")).toBeUndefined();
  });

  test("a lease whose release still has no answer when its local deadline passes is lost with TimeoutError, not LOCK_EXPIRED", async () => {
    const { c, lease, lost } = await releaseWithoutAnswer(
      [
        { op: "release", nth: 1, action: { kind: "dropReply" } },
        { op: "renew", action: { kind: "dropReply" } },
      ],
      300,
    );
    await waitFor(() => lease.lost);
    // The release did commit: LOCK_EXPIRED ("nothing was written") would be false.
    expect(lease.lostReason).toBeInstanceOf(TimeoutError);
    expect(lost).toHaveBeenCalledTimes(1);
    await expect(lease.release()).rejects.toBeInstanceOf(TimeoutError);
    expect((await c.read("file_1")).toString()).toBe("data");
  });
});

/** A fake whose commit on a held lock waits in the lock's queue, as the real leader's does (the plain fake refuses it). */
class QueueingCommits extends FakeServer {
  protected override execute(s: FakeSession, req: Req): Reply | "queued" {
    if (req.op === "commit" && this.lock(req.lock).holder) {
      this.lock(req.lock).queue.push({ client: s.id, seq: req.seq, leaseMs: 1000 });
      s.waiting.set(req.seq, req.lock);
      return "queued";
    }
    return super.execute(s, req);
  }
}

describe("DlmClient: what it owes the server after giving up is paid, and the next acquire waits for it", () => {
  /** A commit that waits behind another client's grant of "global" and is given up (TimeoutError), with `rules` on its cleanup. */
  async function giveUpOnCommit(rules: FaultRule[], opts: ClientOptions) {
    const server = new QueueingCommits();
    server.maxSectionBytes = 1024;
    const holder = await mk(server);
    const held = await holder.acquire("global");
    const faults = new FaultInjector({ rules: [{ op: "commit", nth: 1, action: { kind: "dropReply" } }, ...rules] });
    const c = await mk(server, { faults, ...opts });
    await expect(c.commit([{ file: "file_2", data: "x" }])).rejects.toBeInstanceOf(TimeoutError);
    const gaveUp = server.ops("commit", c.clientId)[0]!.seq as number;
    return { server, held, c, gaveUp };
  }

  test("a commit queued when its session expires rejects with TimeoutError (it may have run), not SESSION_EXPIRED", async () => {
    const server = new QueueingCommits();
    server.maxSectionBytes = 1024;
    const holder = await mk(server);
    await holder.acquire("global");
    const c = await mk(server, { requestTimeoutMs: 100 });
    const commit = c.commit([{ file: "file_2", data: "x" }]);
    await waitFor(() => server.lock("global").queue.length === 1);
    server.expireSession(c.clientId!);
    const e = await commit.catch((err: unknown) => err);
    expect(e).toBeInstanceOf(TimeoutError);
    expect((e as Error).message).toMatch(/may or may not have been committed/);
  });

  test("a commit whose only attempt is answered SESSION_EXPIRED never ran: SessionExpiredError", async () => {
    const server = new FakeServer();
    server.maxSectionBytes = 1024;
    const c = await mk(server);
    server.expireSession(c.clientId!);
    await expect(c.commit([{ file: "file_2", data: "x" }])).rejects.toBeInstanceOf(SessionExpiredError);
    expect(server.files.get("file_2")).toBeUndefined();
  });

  test("an acquire right after a commit given up on TIMEOUT waits for that commit's cancel instead of being refused ALREADY_HELD", async () => {
    // The cancel is slow to reach the server, so the commit still waits there when the caller acquires.
    const { server, held, c, gaveUp } = await giveUpOnCommit([{ op: "cancel", nth: 1, action: { kind: "delayRequest", ms: 150 } }], { requestTimeoutMs: 400 });
    const next = c.acquire("global");
    await waitFor(() => server.ops("cancel", c.clientId).some((r) => r.target === gaveUp));
    await held.release();
    expect((await next).lock).toBe("global");
    expect(server.files.get("file_2")).toBeUndefined();
  });

  test("a commit given up whose cancel never got through is cancelled again when the next acquire is refused ALREADY_HELD by it", async () => {
    const { server, held, c, gaveUp } = await giveUpOnCommit([{ op: "cancel", action: { kind: "dropRequest" }, times: 3 }], { requestTimeoutMs: 50 });
    const next = c.acquire("global");
    await waitFor(() => server.ops("cancel", c.clientId).some((r) => r.target === gaveUp));
    await waitFor(() => server.lock("global").queue.length === 1 && server.lock("global").queue[0]!.seq !== gaveUp);
    await held.release();
    expect((await next).lock).toBe("global");
    expect(server.files.get("file_2")).toBeUndefined();
  });

  test("the abandon of a grant seen too late is waited for before the acquire queues again, also when its first attempt is lost", async () => {
    // As "a grant seen after its local deadline that no renew confirms is
    // not handed out", and the first attempt of that abandon is lost.
    const { server, waiter, lease } = await grantSeenTooLate([{ op: "abandon", nth: 1, attempt: 1, action: { kind: "dropRequest" } }]);
    expect(server.ops("abandon", waiter.clientId).map((r) => r.token)).toEqual([2]); // its second attempt got through
    expect(lease.token).toBeGreaterThan(2);
    // The acquire queued again only after the abandon: never refused ALREADY_HELD by the grant it gave back.
    const acquires = server.ops("acquire", waiter.clientId);
    expect(new Set(acquires.map((r) => r.seq)).size).toBe(2);
  });

  test("a grant notification that arrives while a given-up acquire is being cancelled is released as an orphan", async () => {
    const server = new FakeServer();
    const holder = await mk(server);
    const held = await holder.acquire("jobs");
    const faults = new FaultInjector({
      rules: [
        { op: "acquire", nth: 1, action: { kind: "dropReply" } },
        // The cancel of the given-up wait reaches the server after the grant,
        // and none of its answers comes back.
        { op: "cancel", nth: 1, attempt: 1, action: { kind: "delayRequest", ms: 20 } },
        { op: "cancel", nth: 1, action: { kind: "dropReply" } },
      ],
    });
    const c = await mk(server, { faults });
    await expect(c.acquire("jobs")).rejects.toBeInstanceOf(TimeoutError);
    // The old wait is granted now; its notification reaches c while the cancel is in flight.
    await holder.release(held);
    await waitFor(() => server.ops("release", c.clientId).length === 1);
    expect(server.lock("jobs").holder).toBeNull();
    expect(c.leases).toHaveLength(0);
    const next = await c.acquire("jobs");
    expect(next.lock).toBe("jobs");
    expect(server.ops("release", c.clientId)).toHaveLength(1);
  });

  test("a grant released as an orphan while its wait was being cancelled is not released again by that cleanup", async () => {
    const server = new FakeServer();
    const holder = await mk(server);
    const held = await holder.acquire("jobs");
    const faults = new FaultInjector({
      rules: [
        { op: "acquire", nth: 1, attempt: [1, 2, 3], action: { kind: "dropReply" } },
        // The cancel reaches the server after the grant: "not waiting", so
        // the cleanup asks the acquire's seq and learns of the same grant.
        { op: "cancel", nth: 1, attempt: 1, action: { kind: "delayRequest", ms: 20 } },
      ],
    });
    const c = await mk(server, { faults });
    await expect(c.acquire("jobs")).rejects.toBeInstanceOf(TimeoutError);
    await holder.release(held);
    const next = await c.acquire("jobs"); // after the cleanup
    const gaveUp = server.ops("acquire", c.clientId)[0]!.seq;
    // Three attempts, then the cleanup's question after "not waiting".
    expect(server.ops("acquire", c.clientId).filter((r) => r.seq === gaveUp)).toHaveLength(4);
    expect(server.ops("release", c.clientId)).toHaveLength(1); // handed back once
    expect(next.lock).toBe("jobs");
  });
});

describe("DlmClient: an abort before a commit is sent", () => {
  test("commit() aborted while a new session's hello is in flight rejects CancelledError and sends nothing", async () => {
    const server = new FakeServer();
    server.maxSectionBytes = 1024;
    const faults = new FaultInjector({ rules: [{ op: "hello", nth: 2, action: { kind: "delayRequest", ms: 100 } }] });
    const c = await mk(server, { faults, requestTimeoutMs: 400 });
    server.expireSession(c.clientId!);
    // A logged request learns of the expiry; the client starts a new session, whose hello is slow.
    await expect(c.tryAcquire("other")).rejects.toBeInstanceOf(SessionExpiredError);
    const ac = new AbortController();
    const p = c.commit([{ file: "file_9", data: "must not land" }], { signal: ac.signal });
    await waitFor(() => faults.events.some((e) => e.op === "hello"));
    expect(server.ops("hello")).toHaveLength(1); // the new session's hello has not arrived yet
    ac.abort();
    await expect(p).rejects.toBeInstanceOf(CancelledError);
    await waitFor(() => server.ops("hello").length === 2);
    expect(server.ops("commit")).toHaveLength(0);
    expect(server.ops("cancel")).toHaveLength(0);
    expect(server.files.get("file_9")).toBeUndefined();
  });

  test("commit() aborted after its session is ready but before its request goes out is cancelled, not sent", async () => {
    const server = new FakeServer();
    server.maxSectionBytes = 1024;
    const c = await mk(server);
    const ac = new AbortController();
    // The abort lands after commit() has its session and checked the signal,
    // just before the send loop starts: reading the append's data aborts it.
    const append = {
      file: "file_9",
      get data(): string {
        ac.abort();
        return "must not land";
      },
    };
    await expect(c.commit([append], { signal: ac.signal })).rejects.toBeInstanceOf(CancelledError);
    expect(server.ops("commit")).toHaveLength(0);
    expect(server.files.get("file_9")).toBeUndefined();
  });
});
