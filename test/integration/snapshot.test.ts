/**
 * State snapshots: a node SIGKILLed between snapshots restarts from its
 * latest one and replays only the log after it, and ends with exactly the
 * state a full replay gives: the same lock table (held lock, staged
 * section, waiter), sessions, tokens and files.
 */
import * as fs from "fs";
import * as path from "path";
import type { StatusView } from "../../src/protocol/messages";
import { startDlmCluster, type DlmTestCluster } from "../kit/dlmCluster";

let cluster: DlmTestCluster;

beforeAll(async () => {
  cluster = await startDlmCluster({ nodes: 1, leaseMs: 10_000, sessionTimeoutMs: 30_000, extraArgs: ["--snapshot-every", "25"] });
  await cluster.waitForLeader();
});

afterAll(async () => {
  await cluster?.close();
});

/** SIGKILL and restart the node; returns what its recovery line says. */
async function crashAndRestart(): Promise<{ appliedSeq: number; fromSnapshotSeq: number }> {
  const node = cluster.nodes[0];
  await node.kill("SIGKILL");
  const mark = node.lineCount;
  await node.restart();
  const line = await node.waitForLine(/"recovered state from the log"/, 30_000, mark);
  await cluster.waitForLeader();
  return JSON.parse(line) as { appliedSeq: number; fromSnapshotSeq: number };
}

/** The lock table without lease deadlines, which a new leader's extension (for the time nobody led) moves. */
function comparable(view: StatusView): unknown {
  return {
    locks: view.locks.map((l) => ({ ...l, holder: l.holder && { ...l.holder, expiresAt: 0 }, holders: l.holders.map((h) => ({ ...h, expiresAt: 0 })) })),
    fileLengths: view.fileLengths,
    sessions: view.sessions,
    nextToken: view.nextToken,
  };
}

test("restart from a snapshot equals a full replay, and the staged section still commits", async () => {
  const client = await cluster.client({ name: "cycler" });
  // The holder logs its append as it makes it, so the open section is in the snapshot.
  const holder = await cluster.client({ name: "holder", logEachAppend: true });
  for (let i = 0; i < 40; i++) {
    const lease = await client.acquire();
    await client.append("file_11", `line ${i}\n`);
    await client.release(lease);
  }
  const held = await holder.acquire("global");
  await holder.append("file_11", "staged, not committed\n");
  const waiting = client.acquire("global");
  await new Promise((r) => setTimeout(r, 600)); // a checkpoint and a snapshot land
  const before = await cluster.status();
  const snapshotFile = path.join(cluster.dataDirs[0], "state-snapshot.json");
  expect(fs.existsSync(snapshotFile)).toBe(true);

  const fromSnapshot = await crashAndRestart();
  expect(fromSnapshot.fromSnapshotSeq).toBeGreaterThan(0);
  const viewSnapshot = await cluster.status();
  expect(comparable(viewSnapshot)).toEqual(comparable(before));

  // The same crash without the snapshot: a full replay must agree exactly.
  fs.renameSync(snapshotFile, `${snapshotFile}.moved`);
  const fullReplay = await crashAndRestart();
  expect(fullReplay.fromSnapshotSeq).toBe(0);
  expect(comparable(await cluster.status())).toEqual(comparable(viewSnapshot));

  expect(await holder.release(held)).toEqual({ appends: 1, bytes: 22 });
  await client.release(await waiting);
  const lines = (await client.read("file_11")).toString().split("\n").filter(Boolean);
  expect(lines).toHaveLength(41);
  expect(lines[40]).toBe("staged, not committed");
  expect(cluster.fileOn(0, 11).toString()).toBe(lines.join("\n") + "\n");
});
