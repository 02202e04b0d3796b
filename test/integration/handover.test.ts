/**
 * Planned hand-over: SIGTERM makes the leader stop serving, flush, delete
 * its leader key and exit 0, so a standby takes over without waiting for
 * the key's TTL to run out. A client waiting for the lock keeps its place.
 */
import { startDlmCluster, type DlmTestCluster } from "../kit/dlmCluster";

const LEADER_TTL_MS = 2000;
let cluster: DlmTestCluster;

beforeAll(async () => {
  cluster = await startDlmCluster({ nodes: 3, leaseMs: 5000, extraArgs: ["--leader-ttl-ms", String(LEADER_TTL_MS)] });
  await cluster.waitForLeader();
  await cluster.waitCaughtUp();
});

afterAll(async () => {
  await cluster?.close();
});

test("SIGTERM on the leader hands over well inside the leader TTL; a waiter is granted by the new leader", async () => {
  const holder = await cluster.client({ name: "holder" });
  const waiter = await cluster.client({ name: "waiter" });
  const lease = await holder.acquire("global");
  await holder.append("file_9", "held across the hand-over;");
  const waiting = waiter.acquire("global");
  const old = await cluster.waitForLeader();

  const started = Date.now();
  const exited = old.node.stop(10_000);
  const next = await pollForLeader(old.id);
  const handoverMs = Date.now() - started;
  expect((await exited).code).toBe(0);
  // Taking over before the TTL could have run out shows the key was deleted,
  // not left to expire.
  expect(handoverMs).toBeLessThan(LEADER_TTL_MS);
  expect(next.epoch).toBeGreaterThan(old.epoch);
  process.stderr.write(`planned hand-over ${old.id} -> ${next.id}: ${handoverMs} ms\n`);

  // The holder's grant and staged section survived; release commits it and
  // the waiter, still in the queue, is granted by the new leader.
  expect(await holder.release(lease)).toEqual({ appends: 1, bytes: 26 });
  const granted = await waiting;
  expect(granted.token).toBeGreaterThan(lease.token);
  await waiter.append("file_9", "next");
  await waiter.release(granted);
  expect((await waiter.read("file_9")).toString()).toBe("held across the hand-over;next");

  // The old leader comes back as a follower and catches up.
  await old.node.restart();
  await old.node.waitForLine(/node ready/, 30_000);
  await cluster.expectFilesIdentical();
  const infos = await cluster.nodeInfos();
  expect(infos.filter((n) => n.role === "leader").map((n) => n.nodeId)).toEqual([next.id]);
});

/** Polls status with short timeouts (a probe lost to the exiting leader must not dominate the measurement). */
async function pollForLeader(notId: string): Promise<{ id: string; epoch: number }> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const reply = await cluster.rawRequest({ op: "status" }, 200).catch(() => undefined);
    if (reply?.ok && reply.view?.leader && reply.view.leader !== notId) return { id: reply.view.leader, epoch: reply.view.epoch };
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error("no new leader within 10 s");
}
