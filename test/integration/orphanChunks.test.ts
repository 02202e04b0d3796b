/**
 * The orphan chunk sweep on a real node process: one nats-server and one
 * dlm node that stores a snapshot every 20 entries, with
 * `--orphan-chunk-age-ms` small. Chunks published into the snapshot
 * bucket's stream with no metadata naming them (what a leader SIGKILLed
 * mid-upload leaves) are purged by the leader's compactor once they have
 * been unnamed and unchanged for the age, counted in
 * dlm_snapshot_orphan_chunks_purged_total and logged, while the stored
 * snapshots stay whole.
 */
import { jetstream } from "@nats-io/jetstream";
import { nuid } from "@nats-io/nats-core";
import { SnapshotBucket } from "../../src/log/snapshotBucket";
import { names } from "../../src/protocol/subjects";
import { startDlmCluster, tails, type DlmTestCluster } from "../kit/dlmCluster";
import { storedSnapshots } from "../kit/compaction";
import { scrape } from "../kit/metrics";
import { until } from "../kit/wait";

jest.setTimeout(120_000);

const AGE_MS = 1000;

let c: DlmTestCluster;

beforeAll(async () => {
  c = await startDlmCluster({
    nodes: 1,
    metrics: {},
    extraArgs: ["--compact-every-entries", "20", "--retain-entries", "5", "--compact-check-ms", "200", "--orphan-chunk-age-ms", String(AGE_MS)],
  });
}, 90_000);

afterAll(async () => {
  await c?.close();
});

test("the leader purges a dead upload's chunks after the age, counts and logs them, and leaves stored snapshots whole", async () => {
  const leader = await c.waitForLeader(30_000);
  const context = () => tails(c.nodes);
  const client = await c.client();
  for (let i = 0; i < 15; i++) {
    const lease = await client.acquire();
    await client.append("file_3", `t${lease.token}\n`);
    await client.release(lease);
  }
  await client.close();
  await until(async () => (await storedSnapshots(c.nc)).length > 0, 30_000, "a stored snapshot", context);

  const bucketName = names().snapshotBucket;
  const bucket = await SnapshotBucket.open(c.nc, { bucket: bucketName, replicas: 1 });
  const mark = leader.node.lineCount;
  const dead = nuid.next();
  const js = jetstream(c.nc);
  for (let i = 0; i < 4; i++) await js.publish(bucket.chunkSubject(dead), new Uint8Array(1000).fill(i));
  expect((await bucket.chunkSets()).get(dead)).toBe(4);

  const line = await leader.node.waitForLine(/"purged the chunks of an unfinished snapshot upload"/, 30_000, mark);
  const logged = JSON.parse(line) as { nuid: string; chunks: number; unchangedMs: number };
  expect(logged).toMatchObject({ nuid: dead, chunks: 4 });
  expect(logged.unchangedMs).toBeGreaterThanOrEqual(AGE_MS);
  expect((await bucket.chunkSets()).has(dead)).toBe(false);
  const metrics = await scrape(c.metricsUrls[0]!);
  expect(metrics.get("dlm_snapshot_orphan_chunks_purged_total")).toBe(4);

  // Every chunk set left is a stored object's, and each snapshot is whole.
  // (Checked until it holds: the goodbye of the closed client may still
  // bring one more snapshot, and with it a delete of the oldest.)
  await until(
    async () => {
      const named = await bucket.namedChunkSets();
      const sets = [...(await bucket.chunkSets()).keys()];
      if (sets.length !== named.size || !sets.every((id) => named.has(id))) return false;
      const snaps = await storedSnapshots(c.nc);
      const whole = await Promise.all(snaps.map((s) => bucket.checkStored(s).then(() => true, () => false)));
      return snaps.length > 0 && whole.every(Boolean);
    },
    10_000,
    "only stored snapshots' chunks left, all whole",
    context,
  );
});
