/**
 * The bounded log on real processes: one NATS server, three dlm nodes that
 * store a snapshot every 150 entries, keep 2, and keep 30 entries of margin,
 * under a steady workload of journal sections (and a second writer on
 * another file). The scenarios run in sequence on one cluster, each after
 * more compactions, and each ends with every node caught up, all 100 files
 * identical byte for byte, the journal exactly its committed sections, and
 * tokens still increasing:
 *
 *   (a) a follower down for longer than the retained tail comes back from a
 *       stored snapshot;
 *   (b) a node with a wiped data directory bootstraps;
 *   a follower frozen (SIGSTOP) while the log is compacted past it loads a
 *       snapshot in process when it wakes, instead of skipping entries;
 *   (c) the leader is killed right after a compaction;
 *   (d) the newest stored snapshot is corrupted in place: a node that needs
 *       it skips it and starts from the older one;
 *   (e) every node and the NATS server are killed and restarted.
 */
import * as fs from "fs";
import type { DlmClient } from "../../src/client";
import { addNewestSnapshot, clusterStatus, formatStatus } from "../../src/cli/statusCommand";
import { sleep, startDlmCluster, type DlmTestCluster } from "../kit/dlmCluster";
import { corruptSnapshot, logExtent, storedSnapshots } from "../kit/compaction";
import type { LogExtent } from "../../src/log/logStream";
import type { StoredSnapshotInfo } from "../../src/log/snapshotBucket";
import { JOURNAL_INDEX, Journal, journalTokens } from "../kit/journal";
import { checkEverything as checkAll, type RecoveryOptions } from "../kit/recovery";
import { scenarioWithTails } from "../kit/scenario";
import { until } from "../kit/wait";

jest.setTimeout(120_000);

const EVERY = 150;
const KEEP = 2;
const RETAIN = 30;
/** A lease that rides out a failover, so the workload survives the leader kill. */
const LONG_LEASE = 10_000;
const recovery: RecoveryOptions = { timeoutMs: 30_000, statusTimeoutMs: 15_000, waitJetStream: false };

let c: DlmTestCluster;
const journal = new Journal();
const scenario = scenarioWithTails(() => c);
const checkEverything = () => checkAll(c, journal, recovery);

/** Workloads still running: a failed scenario's is stopped before the next one starts. */
const running = new Set<{ stop: () => Promise<number> }>();

/** Journal sections plus appends to file_7 from a second client, until stopped. */
function workload(tag: string): { stop: () => Promise<number> } {
  let stopped = false;
  let count = 0;
  let clients: DlmClient[] = [];
  const loop = (async () => {
    clients = [await c.client(), await c.client()];
    const [a, b] = clients as [DlmClient, DlmClient];
    while (!stopped) {
      await journal.section(a, `${tag}-${count}`, 2, { leaseMs: LONG_LEASE, alsoTo: "file_7" });
      count++;
      if (count % 4 === 0) {
        const lease = await b.acquire("global", { leaseMs: LONG_LEASE });
        journal.grant(lease.token);
        await b.append("file_42", `${tag} side t=${lease.token} ${"x".repeat(200)}\n`);
        await b.release(lease);
      }
    }
  })();
  const handle = {
    stop: async () => {
      running.delete(handle);
      stopped = true;
      await loop;
      await Promise.all(clients.map((cl) => cl.close()));
      return count;
    },
  };
  running.add(handle);
  return handle;
}

/** Waits until the log's first sequence is past `seq` (compactions happened). */
async function compactedPast(seq: number, timeoutMs = 40_000): Promise<number> {
  let first = 0;
  await until(
    async () => {
      first = (await logExtent(c.nc)).firstSeq;
      return first > seq;
    },
    timeoutMs,
    `the log to be compacted past ${seq}`,
  );
  return first;
}

/**
 * With the workload stopped, waits until the compactor has nothing left to
 * do: no snapshot is due, and the log starts exactly at the oldest kept
 * snapshot minus the margin (as far as the rule allows, no further).
 */
async function settled(): Promise<{ extent: LogExtent; kept: StoredSnapshotInfo[] }> {
  let extent = await logExtent(c.nc);
  let kept: StoredSnapshotInfo[] = [];
  await until(
    async () => {
      extent = await logExtent(c.nc);
      kept = (await storedSnapshots(c.nc)).slice(0, KEEP);
      return kept.length === KEEP && extent.lastSeq - kept[0]!.meta.seq < EVERY && extent.firstSeq === kept[KEEP - 1]!.meta.seq + 1 - RETAIN;
    },
    30_000,
    "the compactor to settle: no snapshot due, the log starting at the oldest kept snapshot minus the margin",
  );
  return { extent, kept };
}

/** A follower's index (any node but the leader). */
async function aFollower(): Promise<number> {
  const leader = await c.waitForLeader();
  return c.nodes.findIndex((n) => n.name !== `dlm-${leader.id}`);
}

beforeAll(async () => {
  c = await startDlmCluster({
    nodes: 3,
    nats: 1,
    leaseMs: 2000,
    sessionTimeoutMs: 15_000,
    extraArgs: [
      "--compact-every-entries",
      String(EVERY),
      "--keep-snapshots",
      String(KEEP),
      "--retain-entries",
      String(RETAIN),
      "--compact-check-ms",
      "300",
      "--snapshot-every",
      "100",
    ],
  });
  await c.waitForLeader(30_000);
}, 90_000);

afterEach(async () => {
  await Promise.all([...running].map((w) => w.stop().catch(() => undefined)));
});

afterAll(async () => {
  await c?.close();
});

describe("the bounded log", () => {
  scenario("a steady workload compacts the log many times and keeps it bounded", async () => {
    const w = workload("steady");
    await compactedPast(10 * EVERY);
    await w.stop();
    // How far compaction lags while a workload runs depends on this
    // machine's load, so the test checks where it settles, not a size
    // taken mid-run.
    const { extent } = await settled();
    expect(extent.firstSeq).toBeGreaterThan(1);
    // Bounded by the schedule, not by history.
    expect(extent.messages).toBeLessThan(extent.lastSeq / 2);
    const snaps = await storedSnapshots(c.nc);
    expect(snaps.length).toBeLessThanOrEqual(KEEP + 1);
    await checkEverything();
    // dlm status shows the stream's extent and the newest snapshot.
    const status = await clusterStatus(c.nc, "dlm", 3);
    await addNewestSnapshot(c.nc, "dlm", status);
    expect(status.log?.firstSeq).toBeGreaterThan(1);
    expect(status.log?.snapshot?.seq).toBe((await storedSnapshots(c.nc))[0]!.meta.seq);
    expect(formatStatus(status)).toMatch(/log: last sequence \d+, first \d+, \d+ entries, \d+ bytes\nsnapshot: seq \d+, \d+ s old, \d+ bytes/);
  });

  scenario("(a) a follower down for longer than the retained tail comes back from a stored snapshot", async () => {
    const i = await aFollower();
    const node = c.nodes[i]!;
    const w = workload("a");
    await sleep(300);
    await node.kill("SIGKILL");
    const last = (await logExtent(c.nc)).lastSeq;
    await compactedPast(last + 1);
    const mark = node.lineCount;
    await node.restart();
    await node.waitForLine(/"loaded a stored snapshot"/, 30_000, mark);
    await w.stop();
    await checkEverything();
  });

  scenario("(b) a node with a wiped data directory bootstraps from a snapshot and the tail", async () => {
    const i = await aFollower();
    const node = c.nodes[i]!;
    const w = workload("b");
    await compactedPast((await logExtent(c.nc)).lastSeq);
    await node.kill("SIGKILL");
    fs.rmSync(c.dataDirs[i]!, { recursive: true, force: true });
    const mark = node.lineCount;
    await node.restart();
    const line = await node.waitForLine(/"recovered state from the log"/, 30_000, mark);
    expect(JSON.parse(line)).toMatchObject({ fromStoredSnapshot: true, checkpointSeq: 0 });
    await w.stop();
    await checkEverything();
  });

  scenario("a follower frozen while the log is compacted past it starts over from a snapshot, in process", async () => {
    const i = await aFollower();
    const node = c.nodes[i]!;
    const w = workload("frozen");
    await sleep(300);
    await node.pause();
    // Past what the frozen follower may already hold in its socket buffer
    // (a pull request of up to 128 entries was open when it froze).
    await compactedPast((await logExtent(c.nc)).lastSeq + 300);
    const mark = node.lineCount;
    node.resume();
    await node.waitForLine(/"the log was compacted past this follower; loading a stored snapshot"/, 30_000, mark);
    await node.waitForLine(/"loaded a stored snapshot"/, 30_000, mark);
    await w.stop();
    expect(node.running).toBe(true);
    await checkEverything();
  });

  scenario("(c) the leader killed right after a compaction", async () => {
    const leader = await c.waitForLeader();
    const w = workload("c");
    const mark = leader.node.lineCount;
    await leader.node.waitForLine(/"log compacted"/, 30_000, mark);
    await leader.node.kill("SIGKILL");
    const next = await c.waitForLeader(30_000, leader.id);
    // The new leader compacts too.
    await next.node.waitForLine(/"log compacted"/, 30_000, next.node.lineCount);
    await w.stop();
    await checkEverything();
  });

  scenario("(d) a corrupted snapshot is detected and skipped; the node starts from the older one", async () => {
    const w = workload("d");
    await until(async () => (await storedSnapshots(c.nc)).length >= 2, 30_000, "two stored snapshots");
    await w.stop();
    const {
      extent,
      kept: [newest, older],
    } = await settled();
    await corruptSnapshot(c.nc, newest!);
    expect(older!.meta.seq + 1).toBeGreaterThanOrEqual(extent.firstSeq);
    expect(extent.firstSeq).toBeGreaterThan(1);

    const i = await aFollower();
    const node = c.nodes[i]!;
    await node.kill("SIGKILL");
    fs.rmSync(c.dataDirs[i]!, { recursive: true, force: true });
    const mark = node.lineCount;
    await node.restart();
    const skipped = await node.waitForLine(/"skipping a stored snapshot that does not verify"/, 30_000, mark);
    expect(JSON.parse(skipped)).toMatchObject({ snapshot: newest!.name });
    const loaded = await node.waitForLine(/"loaded a stored snapshot"/, 30_000, mark);
    expect(JSON.parse(loaded)).toMatchObject({ seq: older!.meta.seq, withFiles: true });
    await checkEverything();
  });

  scenario("(e) a full restart after compaction: every node and NATS", async () => {
    const w = workload("e");
    await compactedPast((await logExtent(c.nc)).lastSeq);
    await w.stop();
    await Promise.all(c.nodes.map((n) => n.kill("SIGKILL")));
    await c.natsServers[0]!.kill();
    await c.natsServers[0]!.restart();
    await Promise.all(c.nodes.map((n) => n.restart()));
    await c.waitForLeader(30_000);
    const after = workload("e-after");
    await compactedPast((await logExtent(c.nc)).lastSeq);
    await after.stop();
    await checkEverything();
  });

  scenario("tokens strictly increase through every compaction and failure", async () => {
    await checkEverything();
    const tokens = journalTokens(c.fileOn(0, JOURNAL_INDEX).toString("utf8"));
    expect(tokens.length).toBeGreaterThan(50);
    for (let t = 1; t < tokens.length; t++) expect(tokens[t]).toBeGreaterThan(tokens[t - 1]!);
    expect(new Set(journal.granted).size).toBe(journal.granted.length);
    expect(tokens).toEqual(journal.committedTokens());
  });
});
