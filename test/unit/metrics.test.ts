/**
 * The metrics registry without a cluster: every metric registered once
 * with a valid name, no label that grows with users (locks, clients),
 * events counted where they are recorded, state gauges read at scrape
 * time, and the readiness rule and the log-tail cache.
 */
import { LogTailProbe } from "../../src/metrics/logTailProbe";
import { NodeMetrics, type LogTail, type MetricsSource } from "../../src/metrics/nodeMetrics";
import { readiness, type ReadinessInput } from "../../src/metrics/readiness";
import { DEFAULT_LIMITS } from "../../src/protocol/limits";
import { errorReply, okReply } from "../../src/protocol/replies";
import { apply, createState, entryVersion, type Command, type State } from "../../src/state";
import { parsePrometheus as parse } from "../kit/metrics";

/** Labels whose values are bounded by the code, not by what users do. */
const BOUNDED_LABELS = new Set(["op", "outcome", "role", "event", "reason", "kind", "le", "version", "major", "minor", "patch", "space", "type"]);

function stateWithTraffic(): State {
  const state = createState(DEFAULT_LIMITS);
  const t = 1_000;
  const entry = (cmds: unknown[]) => apply(state, { v: 4, t, node: "n1", epoch: 1, cmds } as never);
  entry([{ type: "leader", node: "n1", epoch: 1, limits: DEFAULT_LIMITS }]);
  entry([
    { type: "hello", client: "client-aaaaaaaa", seq: 1, ack: 0 },
    { type: "hello", client: "client-bbbbbbbb", seq: 1, ack: 0 },
  ]);
  entry([
    { type: "acquire", client: "client-aaaaaaaa", seq: 2, ack: 1, lock: "global", leaseMs: 5000, waitMs: null },
    { type: "acquire", client: "client-bbbbbbbb", seq: 2, ack: 1, lock: "global", leaseMs: 5000, waitMs: null },
  ]);
  return state;
}

function fakeSource(state: State, tail: LogTail | undefined, role: ReturnType<MetricsSource["role"]> = "leader"): MetricsSource {
  return { role: () => role, appliedSeq: () => 3, state: () => state, natsConnected: () => true, logTail: async () => tail };
}

describe("NodeMetrics registry", () => {
  test("every metric is registered once, named validly, and carries only bounded labels", async () => {
    const metrics = new NodeMetrics();
    metrics.attach(fakeSource(stateWithTraffic(), { lastSeq: 10, messages: 10, bytes: 4096, at: Date.now() }));
    metrics.recordRequest("acquire", okReply("Granted"), 0.002);
    metrics.countNotification({ event: "lost", lock: "global", token: 1, error: "LOCK_EXPIRED" });
    metrics.countCommitted({ type: "expireLease", lock: "global", token: 1 });
    const all = await metrics.registry.getMetricsAsJSON();
    const names = all.map((m) => m.name);
    expect(new Set(names).size).toBe(names.length);
    const own = all.filter((m) => m.name.startsWith("dlm_"));
    expect(own.map((m) => m.name).sort()).toEqual(
      [
        "dlm_duplicate_requests_total",
        "dlm_epoch",
        "dlm_expiries_total",
        "dlm_grants_total",
        "dlm_lock_holders",
        "dlm_lock_waiters",
        "dlm_locks",
        "dlm_log_append_duration_max_seconds",
        "dlm_log_append_duration_seconds",
        "dlm_log_applied_sequence",
        "dlm_log_entries_applied_total",
        "dlm_log_entry_bytes",
        "dlm_log_entry_commands",
        "dlm_log_entry_commands_max",
        "dlm_log_lag_entries",
        "dlm_log_last_sequence",
        "dlm_log_tail_age_seconds",
        "dlm_nats_connected",
        "dlm_notifications_total",
        "dlm_request_duration_seconds",
        "dlm_role",
        "dlm_sessions",
        "dlm_snapshot_orphan_chunks_purged_total",
        "dlm_step_downs_total",
        "dlm_stream_bytes",
        "dlm_stream_messages",
        "dlm_takeovers_total",
      ].sort(),
    );
    for (const m of all) {
      expect(m.name).toMatch(/^[a-zA-Z_:][a-zA-Z0-9_:]*$/);
      if (String(m.type) === "counter") expect(m.name).toMatch(/_total$/);
      // Default process metrics are there too.
      if (!m.name.startsWith("dlm_")) expect(m.name).toMatch(/^(process|nodejs)_/);
      for (const v of m.values) for (const label of Object.keys(v.labels)) expect(BOUNDED_LABELS).toContain(label);
    }
    expect(names).toContain("process_cpu_user_seconds_total");
    expect(names).toContain("nodejs_eventloop_lag_seconds");
  });

  test("dlm_lock_holders counts every holder: each reader of a shared lock and each semaphore grant", async () => {
    const state = stateWithTraffic();
    const t = 2_000;
    const entry = (cmds: Command[]) => apply(state, { v: entryVersion(cmds), t, node: "n1", epoch: 1, cmds });
    const readers = ["client-cccccccc", "client-dddddddd", "client-eeeeeeee"];
    entry(readers.map((client) => ({ type: "hello", client, seq: 1, ack: 0 })));
    entry(readers.map((client) => ({ type: "acquire", client, seq: 2, ack: 1, lock: "db", leaseMs: 5000, waitMs: null, mode: "shared" })));
    entry(readers.slice(0, 2).map((client) => ({ type: "acquire", client, seq: 3, ack: 2, lock: "pool", leaseMs: 5000, waitMs: null, limit: 4, permits: 2 })));
    const metrics = new NodeMetrics();
    metrics.attach(fakeSource(state, undefined));
    const s = parse(await metrics.text());
    // global's holder, three readers of db, two semaphore grants of pool.
    expect(s.get("dlm_lock_holders")).toBe(6);
    expect(s.get("dlm_locks")).toBe(3);
  });

  test("two nodes in one process keep separate registries", async () => {
    const a = new NodeMetrics();
    const b = new NodeMetrics();
    a.recordDuplicate();
    expect((await a.snapshot()).duplicates).toBe(1);
    expect((await b.snapshot()).duplicates).toBe(0);
  });

  test("events are counted and state gauges are read from the source at scrape time", async () => {
    const metrics = new NodeMetrics();
    const state = stateWithTraffic();
    metrics.attach(fakeSource(state, { lastSeq: 10, messages: 10, bytes: 4096, at: Date.now() }));
    metrics.recordRequest("acquire", okReply("Granted", { status: "granted" }), 0.003);
    metrics.recordRequest("acquire", okReply("Queued", { status: "queued" }), 0.004);
    metrics.recordRequest("release", errorReply("NOT_HOLDER"), 0.001);
    metrics.recordRequest("invalid", errorReply("BAD_REQUEST"), 0.0001);
    metrics.recordAppend(3, 300, 4);
    metrics.recordAppend(7, 5000, 2);
    metrics.recordApplied();
    metrics.countNotification({ event: "granted", seq: 2, lease: { lock: "global", token: 2, leaseMs: 5000, expiresAt: 0 } as never });
    metrics.countCommitted({ type: "expireSession", client: "client-aaaaaaaa" });
    metrics.countCommitted({ type: "hello", client: "client-aaaaaaaa", seq: 1, ack: 0 });
    metrics.recordTakeover();
    metrics.recordStepDown();
    const s = parse(await metrics.text());
    expect(s.get('dlm_request_duration_seconds_count{op="acquire",outcome="ok"}')).toBe(1);
    expect(s.get('dlm_request_duration_seconds_count{op="acquire",outcome="queued"}')).toBe(1);
    expect(s.get('dlm_request_duration_seconds_count{op="release",outcome="NOT_HOLDER"}')).toBe(1);
    expect(s.get("dlm_log_entry_commands_sum")).toBe(10);
    expect(s.get("dlm_log_entry_commands_count")).toBe(2);
    expect(s.get("dlm_log_entry_commands_max")).toBe(7);
    expect(s.get("dlm_log_entry_bytes_sum")).toBe(5300);
    expect(s.get('dlm_log_entry_bytes_bucket{le="1024"}')).toBe(1);
    expect(s.get('dlm_log_entry_bytes_bucket{le="16384"}')).toBe(2);
    expect(s.get('dlm_notifications_total{event="granted",reason="none"}')).toBe(1);
    expect(s.get('dlm_expiries_total{kind="session"}')).toBe(1);
    expect(s.get('dlm_role{role="leader"}')).toBe(1);
    expect(s.get('dlm_role{role="follower"}')).toBe(0);
    expect(s.get("dlm_epoch")).toBe(1);
    expect(s.get("dlm_sessions")).toBe(2);
    expect(s.get("dlm_locks")).toBe(1);
    expect(s.get("dlm_lock_holders")).toBe(1);
    expect(s.get("dlm_lock_waiters")).toBe(1);
    expect(s.get("dlm_grants_total")).toBe(1);
    expect(s.get("dlm_log_applied_sequence")).toBe(3);
    expect(s.get("dlm_log_last_sequence")).toBe(10);
    expect(s.get("dlm_log_lag_entries")).toBe(7);
    expect(s.get("dlm_stream_bytes")).toBe(4096);
    // The snapshot behind the stats line and `dlm status --json`.
    expect(await metrics.snapshot()).toEqual({
      requests: 4,
      badRequests: 1,
      duplicates: 0,
      entriesAppended: 2,
      commandsLogged: 10,
      largestBatch: 7,
      appendMsAvg: 3,
      appendMsMax: 4,
      grantsNotified: 1,
      leasesLost: 0,
      waitsEnded: 0,
      entriesApplied: 1,
      stepDowns: 1,
      leaderTerms: 1,
    });
  });

  test("the tail gauges say how old their measurement is", async () => {
    const metrics = new NodeMetrics();
    metrics.attach(fakeSource(stateWithTraffic(), { lastSeq: 10, messages: 10, bytes: 1, at: Date.now() - 30_000 }, "follower"));
    const s = parse(await metrics.text());
    expect(s.get('dlm_role{role="follower"}')).toBe(1);
    expect(s.get("dlm_log_tail_age_seconds")).toBeGreaterThanOrEqual(30);
    expect(s.get("dlm_log_tail_age_seconds")).toBeLessThan(60);
  });
});

describe("readiness", () => {
  const base: ReadinessInput = {
    role: "follower",
    natsConnected: true,
    leaseFresh: false,
    appliedSeq: 100,
    tail: { lastSeq: 105, messages: 105, bytes: 1, at: 0 },
    maxLagEntries: 10,
  };
  test.each<[string, Partial<ReadinessInput>, boolean, RegExp]>([
    ["follower within the lag", {}, true, /5 entries behind/],
    ["follower too far behind", { appliedSeq: 50 }, false, /55 entries behind the log \(at most 10\)/],
    ["follower that cannot read the tail", { tail: undefined, tailError: "timeout" }, false, /log tail unknown: timeout/],
    ["disconnected follower", { natsConnected: false }, false, /not connected/],
    ["leader with a fresh lease", { role: "leader", leaseFresh: true, tail: undefined }, true, /leader, serving/],
    ["leader with a stale lease", { role: "leader", leaseFresh: false }, false, /lease is not fresh/],
    ["candidate", { role: "candidate" }, false, /candidate/],
    ["starting", { role: "starting" }, false, /starting/],
  ])("%s", (_name, change, ready, reason) => {
    const r = readiness({ ...base, ...change });
    expect(r.ready).toBe(ready);
    expect(r.reason).toMatch(reason);
  });
});

describe("LogTailProbe", () => {
  test("caches a measurement, shares one in flight, and does not cache failures", async () => {
    let now = 0;
    let calls = 0;
    let fail = false;
    const probe = new LogTailProbe(
      async () => {
        calls++;
        if (fail) throw new Error("no responders");
        return { lastSeq: calls, messages: calls, bytes: 0 };
      },
      { cacheMs: 1000, timeoutMs: 50 },
      () => now,
    );
    const [a, b] = await Promise.all([probe.get(), probe.get()]);
    expect(calls).toBe(1);
    expect(a).toBe(b);
    now = 999;
    expect((await probe.get())?.lastSeq).toBe(1);
    now = 1000;
    expect((await probe.get())?.lastSeq).toBe(2);
    fail = true;
    now = 5000;
    expect(await probe.get()).toBeUndefined();
    expect(probe.lastError).toMatch(/no responders/);
    expect(await probe.get()).toBeUndefined();
    expect(calls).toBe(4);
  });

  test("gives up on a measurement after its timeout", async () => {
    const probe = new LogTailProbe(() => new Promise(() => undefined), { cacheMs: 1000, timeoutMs: 30 });
    expect(await probe.get()).toBeUndefined();
    expect(probe.lastError).toMatch(/longer than 30 ms/);
  });
});
