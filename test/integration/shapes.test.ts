/**
 * Shared (read) locks, counting semaphores and acquireAll through the client
 * library, on real processes: one nats-server and three dlm nodes, lock
 * lease 2 s. The scenarios run in sequence on that one deployment (each uses
 * its own lock names) and the last one kills the leader with the kit while
 * readers, permits and a lock set are held and others wait.
 *
 * What is checked is what a user relies on: readers hold together and a
 * writer queued behind them is not overtaken by later readers; a semaphore
 * never has more permits out than its limit (seen by the callers and in
 * the leader's status); a limit mismatch is LockKindMismatchError and
 * changes nothing; acquireAll by clients listing the same locks in opposite
 * orders all complete (no deadlock) and no status ever shows a set held in
 * part; an aborted or timed-out acquireAll leaves every queue; and across a
 * leader failover every lease stays valid and renewable, releases work,
 * the waiters are granted, and fencing tokens keep increasing.
 */
import { LockKindMismatchError, CancelledError, type DlmClient, type Lease, type LeaseSet } from "../../src/client";
import type { StatusView } from "../../src/protocol/messages";
import { sleep, startDlmCluster, type DlmTestCluster } from "../kit/dlmCluster";
import { leaderStatus } from "../kit/recovery";
import { scenarioWithTails } from "../kit/scenario";
import { until } from "../kit/wait";

jest.setTimeout(60_000);

/** A lease that rides out a failover (a few seconds), as the design's 10 s default does. */
const LONG_LEASE = 10_000;

let c: DlmTestCluster;
const scenario = scenarioWithTails(() => c);
/** The leader's status view; retried, since a node stepping down may still answer NOT_LEADER once. */
const status = (): Promise<StatusView> => leaderStatus(c, 15_000);

type LockView = StatusView["locks"][number];
async function lockView(name: string): Promise<LockView | undefined> {
  return (await status()).locks.find((l) => l.name === name);
}
const holderTokens = (l: LockView | undefined): number[] => (l?.holders ?? []).map((h) => h.token).sort((a, b) => a - b);
const waiting = (l: LockView | undefined): number => l?.queueLength ?? 0;

beforeAll(async () => {
  c = await startDlmCluster({ nodes: 3, nats: 1, leaseMs: 2000, sessionTimeoutMs: 10_000 });
  await c.waitForLeader(30_000);
  await c.waitCaughtUp(30_000);
}, 60_000);

afterAll(async () => {
  await c?.close();
});

describe("shared locks, semaphores and acquireAll on 3 dlm nodes", () => {
  scenario("readers hold together; a writer waits behind them and is not overtaken by a later reader", async () => {
    const [r1, r2, r3, w] = await Promise.all([c.client(), c.client(), c.client(), c.client()]);
    const l1 = await r1.acquire("rw.doc", { mode: "shared" });
    const l2 = await r2.acquire("rw.doc", { mode: "shared", waitMs: 0 });
    expect([l1.mode, l2.mode]).toEqual(["shared", "shared"]);
    let view = await lockView("rw.doc");
    expect(view).toMatchObject({ kind: "lock", holderCount: 2, queueLength: 0 });
    expect(view!.holders.map((h) => h.mode)).toEqual(["shared", "shared"]);
    expect(holderTokens(view)).toEqual([l1.token, l2.token].sort((a, b) => a - b));

    const writer = w.acquire("rw.doc");
    await until(async () => waiting(await lockView("rw.doc")) === 1, 10_000, "the writer to queue");
    // A reader that comes after the writer waits behind it, though the lock is held shared.
    let lateReader: Lease | undefined;
    const late = r3.acquire("rw.doc", { mode: "shared" }).then((l) => (lateReader = l));
    await until(async () => waiting(await lockView("rw.doc")) === 2, 10_000, "the late reader to queue");
    view = await lockView("rw.doc");
    expect(view!.queue.map((q) => q.mode ?? "exclusive")).toEqual(["exclusive", "shared"]);
    expect(await r3.tryAcquire("rw.other", { mode: "shared" })).not.toBeNull(); // the client is not blocked meanwhile

    await l1.release();
    await sleep(200);
    expect(lateReader).toBeUndefined();
    await l2.release();
    const wl = await writer;
    expect(wl.mode).not.toBe("shared");
    expect(wl.token).toBeGreaterThan(Math.max(l1.token, l2.token));
    expect(holderTokens(await lockView("rw.doc"))).toEqual([wl.token]);
    expect(lateReader).toBeUndefined();
    await wl.release();
    await late;
    expect(lateReader!.token).toBeGreaterThan(wl.token);
    await lateReader!.release();
    await r3.release("rw.other");
    await Promise.all([r1, r2, r3, w].map((x) => x.close()));
  });

  scenario("a semaphore with limit 3 and 5 contenders never has more than 3 permits out; another limit is LockKindMismatchError", async () => {
    const clients = await Promise.all(Array.from({ length: 5 }, () => c.client()));
    let inside = 0;
    let mostInside = 0;
    const tokens: number[] = [];
    let sampling = true;
    let mostOut = 0;
    let samples = 0;
    const sampler = (async () => {
      while (sampling) {
        const view = await lockView("sem.pool");
        if (view) {
          expect(view.kind).toBe("semaphore");
          expect(view.limit).toBe(3);
          const out = view.holders.reduce((n, h) => n + (h.permits ?? 0), 0);
          expect(out).toBeLessThanOrEqual(3);
          mostOut = Math.max(mostOut, out);
          samples++;
        }
        await sleep(20);
      }
    })();
    await Promise.all(
      clients.map(async (client, i) => {
        const sem = client.semaphore("sem.pool", 3);
        for (let round = 0; round < 4; round++) {
          await sem.withPermits(
            async (lease) => {
              expect(lease.limit).toBe(3);
              tokens.push(lease.token);
              inside += lease.permits!;
              mostInside = Math.max(mostInside, inside);
              expect(inside).toBeLessThanOrEqual(3);
              await sleep(60);
              inside -= lease.permits!;
            },
            // One contender takes two permits at a time: it must not be starved by the others.
            { permits: i === 0 ? 2 : 1 },
          );
        }
      }),
    );
    sampling = false;
    await sampler;
    expect(mostInside).toBeGreaterThanOrEqual(2);
    expect(mostOut).toBeGreaterThanOrEqual(2);
    expect(samples).toBeGreaterThan(0);
    expect(new Set(tokens).size).toBe(tokens.length);

    // While the semaphore exists, another limit, a lock acquire and an acquireAll naming it are refused.
    const held = await clients[0]!.semaphore("sem.pool", 3).acquire();
    const other = clients[1]!;
    await expect(other.semaphore("sem.pool", 2).acquire()).rejects.toBeInstanceOf(LockKindMismatchError);
    await expect(other.semaphore("sem.pool", 2).acquire()).rejects.toThrow(/limit 3/);
    await expect(other.acquire("sem.pool")).rejects.toBeInstanceOf(LockKindMismatchError);
    await expect(other.acquireAll(["sem.free", "sem.pool"])).rejects.toBeInstanceOf(LockKindMismatchError);
    // And a lock's name cannot be taken as a semaphore.
    const lock = await other.acquire("sem.lock");
    await expect(clients[2]!.acquire("sem.lock", { limit: 2 })).rejects.toBeInstanceOf(LockKindMismatchError);
    // Nothing changed.
    const view = await lockView("sem.pool");
    expect(holderTokens(view)).toEqual([held.token]);
    expect(waiting(view)).toBe(0);
    expect(await lockView("sem.free")).toBeUndefined();
    expect(holderTokens(await lockView("sem.lock"))).toEqual([lock.token]);
    await held.release();
    await lock.release();
    await Promise.all(clients.map((x) => x.close()));
  });

  scenario("acquireAll in opposite orders: both complete, and no status shows a set held in part", async () => {
    const [a, b, blocker] = await Promise.all([c.client(), c.client(), c.client()]);
    const ids = [a.clientId!, b.clientId!];
    // Both start while one of the locks is taken, so both queue at once.
    const hold = await blocker.acquire("all.y");
    let sampling = true;
    let samples = 0;
    const sampler = (async () => {
      while (sampling) {
        const view = await status();
        const holdersOf = (name: string) => view.locks.find((l) => l.name === name)?.holders.map((h) => h.client) ?? [];
        const [x, y] = [holdersOf("all.x"), holdersOf("all.y")];
        for (const id of ids) expect(x.includes(id)).toBe(y.includes(id));
        samples++;
        await sleep(10);
      }
    })();
    const rounds = async (client: DlmClient, order: string[]): Promise<number[]> => {
      const seen: number[] = [];
      for (let i = 0; i < 6; i++) {
        await client.withLocks(order, async (set: LeaseSet) => {
          expect(set.leases.map((l) => l.lock)).toEqual(order);
          seen.push(...set.leases.map((l) => l.token));
          await sleep(20);
        });
      }
      return seen;
    };
    const both = Promise.all([rounds(a, ["all.x", "all.y"]), rounds(b, ["all.y", "all.x"])]);
    await until(async () => waiting(await lockView("all.x")) === 2 && waiting(await lockView("all.y")) === 2, 10_000, "both sets to queue");
    // Queued, neither holds all.x though it is free: nothing is granted in part.
    expect(holderTokens(await lockView("all.x"))).toEqual([]);
    await hold.release();
    const [ta, tb] = await both;
    sampling = false;
    await sampler;
    expect(samples).toBeGreaterThan(0);
    expect(ta).toHaveLength(12);
    expect(tb).toHaveLength(12);
    expect(new Set([...ta, ...tb]).size).toBe(24);
    // A set with a shared member: two sets sharing the reader lock hold it together.
    const s1 = await a.acquireAll(["all.p", { lock: "all.shared", mode: "shared" }]);
    const s2 = await b.acquireAll([{ lock: "all.shared", mode: "shared" }, "all.q"], { waitMs: 0 });
    expect(holderTokens(await lockView("all.shared"))).toEqual([s1.get("all.shared")!.token, s2.get("all.shared")!.token].sort((x, y) => x - y));
    await Promise.all([s1.release(), s2.release()]);
    await Promise.all([a, b, blocker].map((x) => x.close()));
  });

  scenario("an aborted or timed-out acquireAll leaves every queue, and holds nothing", async () => {
    const [holder, waiter] = await Promise.all([c.client(), c.client()]);
    const hold = await holder.acquire("cancel.y");
    const ac = new AbortController();
    const pending = waiter.acquireAll(["cancel.x", "cancel.y"], { signal: ac.signal });
    await until(async () => waiting(await lockView("cancel.x")) === 1 && waiting(await lockView("cancel.y")) === 1, 10_000, "the set to queue");
    ac.abort();
    await expect(pending).rejects.toBeInstanceOf(CancelledError);
    expect(await lockView("cancel.x")).toBeUndefined();
    expect(waiting(await lockView("cancel.y"))).toBe(0);
    expect(await waiter.tryAcquireAll(["cancel.x", "cancel.y"], { waitMs: 300 })).toBeNull();
    expect(await lockView("cancel.x")).toBeUndefined();
    expect(waiting(await lockView("cancel.y"))).toBe(0);
    expect(waiter.leases).toEqual([]);
    await hold.release();
    const set = await waiter.tryAcquireAll(["cancel.x", "cancel.y"]);
    expect(set?.size).toBe(2);
    await set!.release();
    await Promise.all([holder.close(), waiter.close()]);
  });

  scenario("leader SIGKILLed while readers, permits and a set are held: leases stay valid and renewable, releases work, tokens keep increasing", async () => {
    const [r1, r2, s1, s2, setter, w, sw] = await Promise.all(Array.from({ length: 7 }, () => c.client()));
    const opts = { leaseMs: LONG_LEASE };
    const read1 = await r1.acquire("fo.doc", { ...opts, mode: "shared" });
    const read2 = await r2.acquire("fo.doc", { ...opts, mode: "shared" });
    const permit1 = await s1.semaphore("fo.sem", 3).acquire(opts);
    const permit2 = await s2.semaphore("fo.sem", 3).acquire({ ...opts, permits: 2 });
    const set = await setter.acquireAll(["fo.a", { lock: "fo.b", mode: "shared" }], opts);
    // Waiters queued before the crash: a writer behind the readers, a permit beyond the limit.
    const writer = w.acquire("fo.doc", opts);
    const extra = sw.semaphore("fo.sem", 3).acquire(opts);
    await until(async () => waiting(await lockView("fo.doc")) === 1 && waiting(await lockView("fo.sem")) === 1, 10_000, "the waiters to queue");
    const held: Lease[] = [read1, read2, permit1, permit2, ...set.leases];
    const before = Math.max(...held.map((l) => l.token));

    const old = await c.waitForLeader();
    await old.node.kill("SIGKILL");
    const fresh = await c.waitForLeader(30_000, old.id);
    expect(fresh.epoch).toBeGreaterThan(old.epoch);

    // The new leader has the same holders and waiters.
    const view = await status();
    const of = (name: string) => view.locks.find((l) => l.name === name);
    expect(holderTokens(of("fo.doc"))).toEqual([read1.token, read2.token].sort((a, b) => a - b));
    expect(of("fo.sem")).toMatchObject({ kind: "semaphore", limit: 3, holderCount: 2, queueLength: 1 });
    expect(holderTokens(of("fo.a"))).toEqual([set.get("fo.a")!.token]);
    expect(of("fo.doc")!.queueLength).toBe(1);

    // Every lease renews on the new leader and none was lost.
    await Promise.all([read1.renew(), read2.renew(), permit1.renew(), permit2.renew(), set.renew()]);
    expect(held.filter((l) => l.lost)).toEqual([]);
    expect(set.lost).toBe(false);

    // Releases work, and the waiters are granted with newer tokens.
    await read1.release();
    await read2.release();
    const wl = await writer;
    expect(wl.token).toBeGreaterThan(before);
    await permit2.release();
    const xl = await extra;
    expect(xl.token).toBeGreaterThan(wl.token);
    expect(xl.permits).toBe(1);
    await set.release();
    const again = await setter.acquireAll(["fo.a", "fo.b"], { waitMs: 0 });
    expect(Math.min(...again.leases.map((l) => l.token))).toBeGreaterThan(xl.token);
    await Promise.all([wl.release(), xl.release(), permit1.release(), again.release()]);

    await old.node.restart();
    await c.waitCaughtUp(30_000);
    const after = await status();
    for (const name of ["fo.doc", "fo.sem", "fo.a", "fo.b"]) expect(after.locks.find((l) => l.name === name)).toBeUndefined();
    await Promise.all([r1, r2, s1, s2, setter, w, sw].map((x) => x.close()));
  });
});
