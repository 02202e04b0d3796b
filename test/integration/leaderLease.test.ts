import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { startNats, type TestNats } from "../kit/nats";
import { LeaderLease } from "../../src/replica/leaderLease";

const TTL = 1000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<number> {
  const start = Date.now();
  while (!(await cond())) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
  return Date.now() - start;
}

describe("LeaderLease", () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let n = 0;

  /** Two nodes contending for a fresh bucket. */
  const pair = async () => {
    n++;
    const opts = { bucket: `leader_${n}`, key: "leader", ttlMs: TTL, replicas: 1 };
    const a = await LeaderLease.open(nc, { ...opts, nodeId: "node-a" });
    const b = await LeaderLease.open(nc, { ...opts, nodeId: "node-b" });
    return { a, b };
  };

  beforeAll(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
  });
  afterAll(async () => {
    await nc?.close();
    await nats?.close();
  });

  test("only one of two candidates acquires; the loser cannot renew", async () => {
    const { a, b } = await pair();
    const [ra, rb] = await Promise.all([a.tryAcquire(), b.tryAcquire()]);
    expect([ra, rb].filter(Boolean)).toHaveLength(1);
    const [winner, loser] = ra ? [a, b] : [b, a];
    expect(winner.held).toBe(true);
    expect(loser.held).toBe(false);
    expect(await loser.renew()).toBe(false);
    expect(await loser.tryAcquire()).toBe(false);
    const cur = await loser.current();
    expect(cur?.nodeId).toBe(winner.nodeId);
    expect(cur?.revision).toBe(winner.revision);
  });

  test("adoptPrevious: a restarted node takes over its own stale key at once; others cannot", async () => {
    n++;
    const opts = { bucket: `leader_${n}`, key: "leader", ttlMs: TTL, replicas: 1 };
    const crashed = await LeaderLease.open(nc, { ...opts, nodeId: "node-a" });
    expect(await crashed.tryAcquire()).toBe(true);
    // node-a "crashes" (stops renewing); node-b may not adopt it, node-a's next run may.
    const other = await LeaderLease.open(nc, { ...opts, nodeId: "node-b" });
    expect(await other.adoptPrevious()).toBe(false);
    const restarted = await LeaderLease.open(nc, { ...opts, nodeId: "node-a" });
    expect(await restarted.adoptPrevious()).toBe(true);
    expect(restarted.held).toBe(true);
    // The old incarnation, were it alive, can no longer renew.
    expect(await crashed.renew()).toBe(false);
    expect(await restarted.renew()).toBe(true);
    expect((await other.current())?.nodeId).toBe("node-a");
    await restarted.release();
  });

  test("takeOver: a follower takes the key from a silent holder by the revision it saw, never from one that renewed", async () => {
    const { a, b } = await pair();
    expect(await a.tryAcquire()).toBe(true);
    const writes: Array<{ nodeId: string; revision: number; writtenAt: number }> = [];
    const stop = await b.watch(() => undefined, { onWrite: (w) => writes.push(w), pollMs: 0 });
    await until(() => writes.length > 0, 5000, "the watch to see a's write");
    const seen = writes[writes.length - 1];
    expect(seen).toMatchObject({ nodeId: "node-a", revision: a.revision });
    expect(Math.abs(seen.writtenAt - Date.now())).toBeLessThan(5000);
    // a renews after b looked: b's take-over by the old revision must fail.
    expect(await a.renew()).toBe(true);
    expect(await b.takeOver(seen.revision)).toBe(false);
    expect(b.held).toBe(false);
    // a goes silent: b takes over by a's last revision, well before the TTL, and a is out.
    await until(() => writes.some((w) => w.revision === a.revision), 5000, "the watch to see a's renewal");
    expect(await b.takeOver(a.revision!)).toBe(true);
    expect(b.held).toBe(true);
    expect(await a.renew()).toBe(false);
    expect((await a.current())?.nodeId).toBe("node-b");
    stop();
    await b.release();
  });

  test("renewing keeps the lease past its TTL", async () => {
    const { a, b } = await pair();
    expect(await a.tryAcquire()).toBe(true);
    const rev0 = a.revision!;
    for (let i = 0; i < 6; i++) {
      await sleep(TTL / 3);
      expect(await a.renew()).toBe(true);
      expect(await b.tryAcquire()).toBe(false);
    }
    expect(a.revision).toBeGreaterThan(rev0);
    expect((await b.current())?.nodeId).toBe("node-a");
  });

  test("when the holder stops renewing, the key expires after ~TTL and the other acquires", async () => {
    const { a, b } = await pair();
    expect(await a.tryAcquire()).toBe(true);
    const waited = await until(() => b.tryAcquire(), 5 * TTL, "b to acquire after expiry");
    // Not before the TTL; nats-server 2.10 drops it within about a second after.
    expect(waited).toBeGreaterThanOrEqual(TTL - 50);
    expect(waited).toBeLessThan(TTL + 1500);
    expect((await a.current())?.nodeId).toBe("node-b");
    // a's stale renew fails: b took over.
    expect(await a.renew()).toBe(false);
    expect(a.held).toBe(false);
  });

  test("release() lets the other acquire at once", async () => {
    const { a, b } = await pair();
    expect(await a.tryAcquire()).toBe(true);
    expect(await b.tryAcquire()).toBe(false);
    await a.release();
    expect(a.held).toBe(false);
    expect(await a.current()).toBeNull();
    expect(await b.tryAcquire()).toBe(true);
  });

  test("release() by a node that lost the lease leaves the new holder alone", async () => {
    const { a, b } = await pair();
    expect(await a.tryAcquire()).toBe(true);
    await until(() => b.tryAcquire(), 5 * TTL, "b to take over");
    await a.release(); // a still believes it held the key at its old revision
    expect((await b.current())?.nodeId).toBe("node-b");
    expect(await b.renew()).toBe(true);
  });

  test("a renew after someone else took over returns false", async () => {
    const { a, b } = await pair();
    expect(await a.tryAcquire()).toBe(true);
    // a pauses past its lease (no renewals); the server drops the key between
    // TTL and TTL + 1 s after the last write (its expiry timer's granularity).
    await until(() => b.tryAcquire(), 5 * TTL, "b to take over");
    expect(a.held).toBe(true); // a does not know yet
    expect(await a.renew()).toBe(false);
    expect(a.held).toBe(false);
    expect(await b.renew()).toBe(true);
  });

  test("watch: puts and deletes arrive as events; TTL expiry is silent on the watch and caught by polling", async () => {
    const { a, b } = await pair();
    const watchOnly: (string | null)[] = [];
    const withPoll: (string | null)[] = [];
    const stop1 = await b.watch((l) => watchOnly.push(l), { pollMs: 0 });
    const stop2 = await b.watch((l) => withPoll.push(l));
    try {
      expect(await a.tryAcquire()).toBe(true);
      await until(() => watchOnly.includes("node-a"), 2000, "put event");
      await a.release();
      await until(() => watchOnly[watchOnly.length - 1] === null, 2000, "delete event");
      expect(watchOnly).toEqual(["node-a", null]);

      // Now let a lease expire instead of releasing it.
      expect(await a.tryAcquire()).toBe(true);
      await until(() => watchOnly[watchOnly.length - 1] === "node-a", 2000, "second put event");
      await until(async () => (await b.current()) === null, 5 * TTL, "expiry");
      await until(() => withPoll[withPoll.length - 1] === null, 2 * TTL, "expiry seen by polling");
      await sleep(500);
      // nats-server 2.10, no subject delete markers: the pure watch never saw the expiry.
      expect(watchOnly).toEqual(["node-a", null, "node-a"]);
      expect(withPoll).toEqual(["node-a", null, "node-a", null]);
    } finally {
      stop1();
      stop2();
    }
  });
});
