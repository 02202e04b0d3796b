/**
 * LeaderLease renewals against an in-memory KV whose writes the test
 * settles by hand: a renewal asked for while one is out joins it (two
 * updates at one revision would race, and the loser would report a renewed
 * lease lost), and a renewal that settles after its acquisition was given
 * up and replaced is "superseded", touching nothing of the new one.
 */
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { LeaderLease, type LeaderLeaseOptions } from "../../src/replica/leaderLease";

interface PendingWrite {
  op: "create" | "update" | "delete";
  revision?: number;
  resolve: (revision: number) => void;
  reject: (err: Error) => void;
}

/** A KV of one key whose writes wait until the test settles them. */
class HandKv {
  readonly writes: PendingWrite[] = [];
  private write(op: PendingWrite["op"], revision?: number): Promise<number> {
    return new Promise<number>((resolve, reject) => this.writes.push({ op, revision, resolve, reject }));
  }
  create(): Promise<number> {
    return this.write("create");
  }
  update(_key: string, _value: Uint8Array, revision: number): Promise<number> {
    return this.write("update", revision);
  }
  delete(_key: string, opts?: { previousSeq?: number }): Promise<void> {
    return this.write("delete", opts?.previousSeq).then(() => undefined);
  }
  async get(): Promise<null> {
    return null;
  }
}

function wrongLastSequence(): Error {
  return new JetStreamApiError({ code: 400, err_code: JetStreamApiCodes.StreamWrongLastSequence, description: "wrong last sequence" });
}

const settle = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
};

function leaseOn(kv: HandKv): LeaderLease {
  const opts: LeaderLeaseOptions = { bucket: "leader", key: "leader", ttlMs: 1000, replicas: 1, nodeId: "A", opTimeoutMs: 60_000 };
  // The constructor is private (open() makes the bucket); the test hands it the KV directly.
  const Ctor = LeaderLease as unknown as new (kv: KV, ttlMs: number, o: LeaderLeaseOptions) => LeaderLease;
  return new Ctor(kv as unknown as KV, 1000, opts);
}

/** A lease over a fresh HandKv that holds the key at `revision`. */
async function heldAt(revision: number): Promise<{ kv: HandKv; lease: LeaderLease }> {
  const kv = new HandKv();
  const lease = leaseOn(kv);
  await acquired(kv, lease, revision);
  return { kv, lease };
}

async function acquired(kv: HandKv, lease: LeaderLease, revision: number): Promise<void> {
  const won = lease.tryAcquire();
  await settle();
  kv.writes.shift()?.resolve(revision);
  expect(await won).toBe(true);
}

test("a renewal asked for while one is out joins it: one update, both renewed, the revision advanced once", async () => {
  const { kv, lease } = await heldAt(7);
  const first = lease.renewOutcome();
  await settle();
  expect(lease.renewalInFlight).toBe(true);
  const second = lease.renewOutcome();
  // A campaign's tryAcquire on a lease still held is a renewal too, and joins as well.
  const third = lease.tryAcquire();
  await settle();
  expect(kv.writes.map((w) => [w.op, w.revision])).toEqual([["update", 7]]);
  kv.writes.shift()?.resolve(8);
  expect(await Promise.all([first, second, third])).toEqual(["renewed", "renewed", true]);
  expect(lease.revision).toBe(8);
  expect(lease.renewalInFlight).toBe(false);
});

test("a renewal that settles after its lease was released and won anew is 'superseded' and leaves the new lease alone", async () => {
  const { kv, lease } = await heldAt(3);
  const old = lease.renewOutcome();
  await settle();
  const oldUpdate = kv.writes.shift() as PendingWrite;
  // A step-down releases the key (the delete lands), and the node wins it again.
  const released = lease.release();
  await settle();
  kv.writes.shift()?.resolve(4);
  await released;
  expect(lease.held).toBe(false);
  await acquired(kv, lease, 5);
  // The old renewal is still out, but it is not this lease's: a new one goes out.
  expect(lease.renewalInFlight).toBe(false);
  const fresh = lease.renewOutcome();
  await settle();
  expect(kv.writes.map((w) => [w.op, w.revision])).toEqual([["update", 5]]);

  oldUpdate.reject(wrongLastSequence());
  expect(await old).toBe("superseded");
  expect(lease.held).toBe(true);
  expect(lease.revision).toBe(5);

  kv.writes.shift()?.resolve(6);
  expect(await fresh).toBe("renewed");
  expect(lease.revision).toBe(6);
});

test("a refused renewal of the lease as held is 'lost' and the lease is no longer held", async () => {
  const { kv, lease } = await heldAt(2);
  const outcome = lease.renewOutcome();
  await settle();
  kv.writes.shift()?.reject(wrongLastSequence());
  expect(await outcome).toBe("lost");
  expect(lease.held).toBe(false);
});

test("lastWriteSentAt is when the write that holds the key was sent, not when it was answered", async () => {
  const kv = new HandKv();
  const lease = leaseOn(kv);
  const before = Date.now();
  const won = lease.tryAcquire();
  await settle();
  await new Promise((resolve) => setTimeout(resolve, 30));
  kv.writes.shift()?.resolve(1);
  await won;
  const sentAt = lease.lastWriteSentAt as number;
  expect(sentAt).toBeGreaterThanOrEqual(before);
  expect(sentAt).toBeLessThan(before + 25);
});
