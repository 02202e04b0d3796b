/**
 * A whole-deployment outage: every dlm node SIGKILLed and every NATS server
 * killed at once, then everything restarted. What must survive it: the
 * committed bytes, the lock table (holder, token, staged appends, queue,
 * next token) and a holder's section, which then commits whole.
 */
import type { StatusView } from "../../src/protocol/messages";
import { sleep, type DlmTestCluster } from "./dlmCluster";
import type { Journal } from "./journal";
import { RawSession } from "./rawSession";
import { expectFilesOnEveryNode, filesOn, leaderStatus, type RecoveryOptions } from "./recovery";

export interface OutageOptions {
  /** How long the new leader may take to appear after the restart. */
  leaderTimeoutMs: number;
  /** How long each of the raw holder's requests is retried. */
  callTimeoutMs: number;
}

/** Every dlm node SIGKILLed and every NATS server killed, all at once. */
export async function killEverything(cluster: DlmTestCluster): Promise<void> {
  await Promise.all([...cluster.nodes.map((n) => n.kill("SIGKILL")), ...cluster.natsServers.map((s) => s.kill())]);
}

/** After killEverything(): the NATS servers back first, then every node. */
export async function restartEverything(cluster: DlmTestCluster, recovery: RecoveryOptions): Promise<void> {
  await Promise.all(cluster.natsServers.map((s) => s.restart()));
  if (recovery.waitJetStream) await Promise.all(cluster.natsServers.map((s) => s.waitJetStreamReady(recovery.timeoutMs)));
  await Promise.all(cluster.nodes.map((n) => n.restart()));
}

/**
 * A holder that speaks the wire protocol (it never renews) takes "global"
 * with a 3 s lease and stages 4 journal lines. Then everything is killed for
 * 3.5 s, longer than that lease, and restarted: only the new leader's
 * extension by the time nobody led keeps the holder's lock. After the
 * restart the lock table and every node's files are as before, the lease
 * still runs past the takeover, and the
 * release commits exactly the 4 lines (recorded in `journal`). The holder
 * then says goodbye. Resolves with the holder's token.
 */
export async function holdThroughOutage(
  cluster: DlmTestCluster,
  journal: Journal,
  recovery: RecoveryOptions,
  outage: OutageOptions,
): Promise<number> {
  const status = () => leaderStatus(cluster, recovery.statusTimeoutMs);
  const holder = new RawSession(cluster, { callTimeoutMs: outage.callTimeoutMs });
  expect((await holder.call("hello")).ok).toBe(true);
  const held = await journal.rawSection(holder, "X-holder", 4, 3000);
  await cluster.waitCaughtUp(30_000);
  const filesBefore = filesOn(cluster, 0);
  const viewBefore = await status();

  await killEverything(cluster);
  holder.keepAlive(); // pings fail during the outage; after it they keep the session alive
  await sleep(3500); // longer than the holder's lease
  await restartEverything(cluster, recovery);
  const fresh = await cluster.waitForLeader(outage.leaderTimeoutMs);
  expect(fresh.epoch).toBeGreaterThan(viewBefore.epoch);

  expectLockTableBack(viewBefore, await status(), { client: holder.id, token: held.token, stagedAppends: 4 });
  // The extension leaves the holder what was left of its 3 s lease when
  // the cluster went down; the checks below can take longer than that on a restarting cluster, so the
  // holder renews at once, as a real client would after an outage.
  const renewed = await holder.call("renew", { lock: "global", token: held.token, leaseMs: 120_000 });
  expect(renewed).toMatchObject({ ok: true, lease: { token: held.token } });
  await expectFilesOnEveryNode(cluster, filesBefore, recovery.timeoutMs);

  await journal.commitRaw(holder, held);
  holder.stopKeepAlive();
  expect((await holder.call("goodbye")).ok).toBe(true);
  return held.token;
}

/**
 * After an outage longer than the holder's lease: lock "global" has the
 * same holder, token, staged appends and queue as before; its lease, which
 * ran out during the outage, runs past the takeover (extended by the
 * time nobody led); the next
 * token and the file lengths are unchanged.
 */
function expectLockTableBack(before: StatusView, after: StatusView, holder: { client: string; token: number; stagedAppends: number }): void {
  const was = before.locks.find((l) => l.name === "global")!;
  const is = after.locks.find((l) => l.name === "global")!;
  expect(is.holder?.client).toBe(holder.client);
  expect(is.holder?.token).toBe(holder.token);
  expect(is.holder?.stagedAppends).toBe(holder.stagedAppends);
  expect(is.queue).toEqual(was.queue);
  // The lease elapsed during the outage, yet runs past the takeover.
  expect(was.holder!.expiresAt).toBeLessThan(after.now);
  expect(is.holder!.expiresAt).toBeGreaterThan(after.now);
  expect(after.nextToken).toBe(before.nextToken);
  expect(after.fileLengths).toEqual(before.fileLengths);
}
