/**
 * Bringing a deployment back after failures, and the checks that it came
 * back whole: every server and node running and caught up, the files
 * identical on every node, the journal as its model says.
 */
import { FILE_COUNT } from "../../src/protocol/files";
import type { OkReply, StatusView } from "../../src/protocol/messages";
import type { DlmTestCluster } from "./dlmCluster";
import { JOURNAL_INDEX, type Journal } from "./journal";
import { retry } from "./wait";

export interface RecoveryOptions {
  /** How long servers and nodes get to come back and catch up. */
  timeoutMs: number;
  /** How long leaderStatus() keeps asking. */
  statusTimeoutMs: number;
  /** After (re)starting NATS servers, wait until every one reports JetStream ready (a NATS cluster needs its meta leader). */
  waitJetStream: boolean;
}

/** The leader's status view; retried through NOT_LEADER (a node stepping down may still answer once), timeouts and no responders. */
export async function leaderStatus(cluster: DlmTestCluster, timeoutMs: number): Promise<StatusView> {
  const reply = await retry(() => cluster.rawRequest({ op: "status" }, 1000), (r) => r.ok && r.view !== undefined, timeoutMs, "no status");
  return (reply as OkReply).view!;
}

/** Restarts every NATS server and dlm node that is not running (servers first) and waits until all nodes have caught up. */
export async function allRunning(cluster: DlmTestCluster, opts: RecoveryOptions): Promise<void> {
  await Promise.all(cluster.natsServers.map((s) => (s.running ? Promise.resolve() : s.restart())));
  if (opts.waitJetStream) await Promise.all(cluster.natsServers.map((s) => s.waitJetStreamReady(opts.timeoutMs)));
  await Promise.all(cluster.nodes.map((n) => (n.running ? Promise.resolve() : n.restart())));
  await cluster.waitCaughtUp(opts.timeoutMs);
}

/** The end of every scenario: everything up and caught up, files identical, the journal as the model says, the leader's file lengths as on disk. */
export async function checkEverything(cluster: DlmTestCluster, journal: Journal, opts: RecoveryOptions): Promise<void> {
  await allRunning(cluster, opts);
  await cluster.expectFilesIdentical(opts.timeoutMs);
  expect(cluster.fileOn(0, JOURNAL_INDEX).toString("utf8")).toBe(journal.expected());
  const view = await leaderStatus(cluster, opts.statusTimeoutMs);
  for (let f = 0; f < FILE_COUNT; f++) expect(view.fileLengths[f]).toBe(cluster.fileOn(0, f).length);
}

/** All 100 files' bytes on one node. */
export function filesOn(cluster: DlmTestCluster, nodeIndex: number): Buffer[] {
  return Array.from({ length: FILE_COUNT }, (_, f) => cluster.fileOn(nodeIndex, f));
}

/** Waits until every node has caught up, then checks each holds exactly `files`. */
export async function expectFilesOnEveryNode(cluster: DlmTestCluster, files: Buffer[], timeoutMs: number): Promise<void> {
  await cluster.waitCaughtUp(timeoutMs);
  for (let i = 0; i < cluster.nodes.length; i++) {
    for (let f = 0; f < FILE_COUNT; f++) expect(cluster.fileOn(i, f).equals(files[f])).toBe(true);
  }
}
