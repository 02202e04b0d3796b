/**
 * Metrics and health on real node processes: one nats-server, two dlm
 * nodes, each reaching NATS through a TCP proxy of its own and serving
 * /metrics, /healthz and /readyz.
 *
 * One scenario: scrape during a workload (counters move, histograms fill,
 * role and epoch right on both nodes, lag reported); then cut the
 * follower's link (it stays alive but is neither healthy nor ready, while
 * the leader keeps serving and the log moves on), heal it (ready again
 * once caught up); then stall the link (the connection stays open but
 * nothing moves: healthy as far as its NATS client knows, yet not ready,
 * since it cannot read the log's tail); then pause the follower (SIGSTOP)
 * through a workload and check it is ready again only after it has caught
 * up.
 */
import type { DlmClient } from "../../src/client";
import { startDlmCluster, tails, type DlmTestCluster } from "../kit/dlmCluster";
import { get, scrape } from "../kit/metrics";
import { until } from "../kit/wait";

jest.setTimeout(120_000);

/** A follower this many entries behind the tail is not ready. */
const READY_MAX_LAG = 3;

let cluster: DlmTestCluster;

beforeAll(async () => {
  cluster = await startDlmCluster({ nodes: 2, proxied: true, metrics: { readyMaxLag: READY_MAX_LAG } });
});

afterAll(async () => {
  await cluster?.close();
});

/** `cycles` acquire / append / release rounds on the global lock. */
async function workload(client: DlmClient, cycles: number, file = "file_7"): Promise<void> {
  for (let i = 0; i < cycles; i++) {
    const lease = await client.acquire();
    await client.append(file, `t${lease.token}\n`);
    await client.release(lease);
  }
}

async function status(base: string, path: "/healthz" | "/readyz"): Promise<number> {
  // A follower measures the tail with a 1 s timeout: give it more than that.
  return get(base, path, 3000).then(
    (r) => r.status,
    () => 0,
  );
}

test("metrics move with a workload; /healthz and /readyz follow a cut link and a paused follower", async () => {
  const leader = await cluster.waitForLeader();
  const leaderIndex = cluster.nodes.indexOf(leader.node);
  const followerIndex = 1 - leaderIndex;
  const leaderUrl = cluster.metricsUrls[leaderIndex];
  const followerUrl = cluster.metricsUrls[followerIndex];
  const context = () => tails(cluster.nodes);
  await until(async () => (await status(leaderUrl, "/readyz")) === 200, 10_000, "the leader to be ready", context);
  await until(async () => (await status(followerUrl, "/readyz")) === 200, 10_000, "the follower to be ready", context);
  expect((await get(leaderUrl, "/readyz")).body).toMatch(/^ready: leader, serving/);
  expect((await get(followerUrl, "/readyz")).body).toMatch(/^ready: follower/);

  // --- scrape during a workload
  const before = await scrape(leaderUrl);
  // Appends logged one by one, so the append op's metrics move too.
  const client = await cluster.client({ name: "observer", logEachAppend: true });
  await workload(client, 5);
  const bad = await cluster.rawRequest("not json");
  expect(bad.ok).toBe(false);
  const after = await scrape(leaderUrl);
  const moved = (name: string) => (after.get(name) ?? 0) - (before.get(name) ?? 0);
  for (const op of ["acquire", "append", "release"]) expect(moved(`dlm_request_duration_seconds_count{op="${op}",outcome="ok"}`)).toBeGreaterThanOrEqual(5);
  expect(moved('dlm_request_duration_seconds_count{op="hello",outcome="ok"}')).toBe(1);
  expect(moved('dlm_request_duration_seconds_count{op="invalid",outcome="BAD_REQUEST"}')).toBe(1);
  expect(after.get('dlm_request_duration_seconds_bucket{le="+Inf",op="acquire",outcome="ok"}')).toBe(after.get('dlm_request_duration_seconds_count{op="acquire",outcome="ok"}'));
  expect(moved("dlm_log_append_duration_seconds_count")).toBeGreaterThanOrEqual(5);
  // Timed finer than whole milliseconds (a local append takes a fraction of
  // one): a millisecond clock would make the sum a whole number of them.
  const appendMs = Math.round(after.get("dlm_log_append_duration_seconds_sum")! * 1e6) / 1000;
  expect({ appendMs, whole: Number.isInteger(appendMs) }).toMatchObject({ whole: false });
  expect(moved("dlm_log_entry_commands_sum")).toBeGreaterThanOrEqual(16);
  expect(moved("dlm_grants_total")).toBe(5);
  expect(moved("dlm_log_entries_applied_total")).toBeGreaterThanOrEqual(5);
  expect(after.get('dlm_role{role="leader"}')).toBe(1);
  expect(after.get('dlm_role{role="follower"}')).toBe(0);
  expect(after.get("dlm_epoch")).toBe(leader.epoch);
  expect(after.get("dlm_takeovers_total")).toBe(1);
  expect(after.get("dlm_sessions")).toBeGreaterThanOrEqual(1);
  expect(after.get("dlm_nats_connected")).toBe(1);
  expect(after.has("dlm_log_lag_entries")).toBe(true);
  expect(after.get("dlm_stream_messages")).toBeGreaterThan(0);
  expect(after.get("dlm_stream_bytes")).toBeGreaterThan(0);
  expect(after.has("process_cpu_user_seconds_total")).toBe(true);

  const lastSeq = await cluster.waitCaughtUp();
  // At least: while a session is open the leader logs a small digest entry every 750 ms, and the follower may have applied one since.
  const follower = await until(async () => ((await scrape(followerUrl)).get("dlm_log_applied_sequence") ?? 0) >= lastSeq, 10_000, "the follower's applied gauge to reach the tail").then(() => scrape(followerUrl));
  expect(follower.get('dlm_role{role="follower"}')).toBe(1);
  expect(follower.get('dlm_role{role="leader"}')).toBe(0);
  expect(follower.get("dlm_epoch")).toBe(leader.epoch);
  expect(follower.get("dlm_grants_total")).toBe(after.get("dlm_grants_total"));
  expect(follower.has("dlm_log_lag_entries")).toBe(true);
  // A follower serves no requests: no request series at all.
  expect([...follower.keys()].some((k) => k.startsWith("dlm_request_duration_seconds_count"))).toBe(false);
  const infos = await cluster.nodeInfos();
  expect(infos.map((n) => n.metricsUrl).sort()).toEqual([...cluster.metricsUrls].sort());
  expect(infos.find((n) => n.role === "leader")?.metrics.requests).toBeGreaterThan(0);

  // --- cut the follower's link: alive, but neither healthy nor ready
  cluster.links[followerIndex].cut();
  await until(async () => (await status(followerUrl, "/healthz")) === 503, 10_000, "the cut follower's /healthz to fail", context);
  expect((await get(followerUrl, "/readyz")).status).toBe(503);
  expect((await get(followerUrl, "/readyz")).body).toMatch(/not ready: NATS connection is not connected/);
  expect((await scrape(followerUrl)).get("dlm_nats_connected")).toBe(0);
  const seqBefore = (await cluster.status()).appliedSeq;
  await workload(client, 5);
  expect((await cluster.status()).appliedSeq).toBeGreaterThan(seqBefore + READY_MAX_LAG);
  expect(await status(leaderUrl, "/readyz")).toBe(200);
  expect(await status(followerUrl, "/readyz")).toBe(503);

  // --- heal: healthy at once, ready once caught up
  cluster.links[followerIndex].heal();
  await until(async () => (await status(followerUrl, "/readyz")) === 200, 20_000, "the healed follower to be ready", context);
  expect(await status(followerUrl, "/healthz")).toBe(200);
  await cluster.waitCaughtUp();

  // --- stall the follower's link: its client still counts as connected, but it cannot follow
  cluster.links[followerIndex].stall();
  try {
    await workload(client, 5);
    await until(async () => (await status(followerUrl, "/readyz")) === 503, 10_000, "the stalled follower to be unready", context);
    expect((await get(followerUrl, "/readyz", 3000)).body).toMatch(/^not ready: (log tail unknown|follower is \d+ entries behind)/);
    expect(await status(followerUrl, "/healthz")).toBe(200);
    expect(await status(leaderUrl, "/readyz")).toBe(200);
  } finally {
    cluster.links[followerIndex].heal();
  }
  await until(async () => (await status(followerUrl, "/readyz")) === 200, 20_000, "the un-stalled follower to be ready", context);

  // --- pause the follower: no answer while stopped, ready again only when caught up
  const followerNode = cluster.nodes[followerIndex];
  await followerNode.pause();
  try {
    expect(await status(followerUrl, "/readyz")).toBe(0);
    await workload(client, 5);
  } finally {
    followerNode.resume();
  }
  await until(async () => (await status(followerUrl, "/readyz")) === 200, 20_000, "the resumed follower to be ready", context);
  const tail = (await cluster.status()).appliedSeq;
  const resumed = await scrape(followerUrl);
  expect(tail - (resumed.get("dlm_log_applied_sequence") ?? 0)).toBeLessThanOrEqual(READY_MAX_LAG);
  await cluster.expectFilesIdentical();
});
