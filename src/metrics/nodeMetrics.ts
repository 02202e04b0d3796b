/**
 * Everything a node measures about itself, in one prom-client registry of
 * its own (not the global one, so two nodes in one process, as in tests,
 * never share a counter).
 *
 * Events (requests, appends, notifications, role changes) are recorded
 * here as they happen, by the coordinator and the node. Levels that follow
 * from the state (role, epoch, sessions, holders, waiters, grants) are read
 * at scrape time through a MetricsSource, so the hot path never pays for
 * them. The stats log line and `dlm status --json` read the same metrics
 * through snapshot(): there is one bookkeeping of each fact.
 *
 * Labels are bounded sets: operations, outcomes (ok, queued or an error
 * name from the registry), roles, notification events. Nothing is labelled
 * by lock or client: their number is up to the users.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type MetricValue } from "prom-client";
import type { ErrorName } from "../protocol/errors";
import { LOGGED_OPS, UNLOGGED_OPS, type Notification, type Reply } from "../protocol/messages";
import type { Command, State } from "../state";

/** The roles a node reports; one `dlm_role` series each, exactly one of them 1. */
export const ROLES = ["starting", "follower", "candidate", "leader", "stopped"] as const;

/**
 * The `op` label of request metrics: a protocol operation, "invalid" for a
 * request that failed validation (its op is unknown or not trusted), or
 * "unparsed" for one refused before parsing (the node stopped leading).
 */
export const REQUEST_OPS = [...LOGGED_OPS, ...UNLOGGED_OPS, "invalid", "unparsed"] as const;
export type RequestOp = (typeof REQUEST_OPS)[number];

/** The `outcome` label: "ok", "queued" (an acquire now waiting in the queue) or the error's name. */
export type RequestOutcome = "ok" | "queued" | ErrorName;

/** The log tail as measured (JetStream stream info). */
export interface LogTail {
  lastSeq: number;
  messages: number;
  bytes: number;
  /** When it was measured (ms since the epoch). */
  at: number;
}

/** What scrape-time gauges read from the node. Called only while /metrics is scraped. */
export interface MetricsSource {
  role(): (typeof ROLES)[number];
  appliedSeq(): number;
  state(): State;
  natsConnected(): boolean;
  /**
   * The stream's tail, cached and bounded in time by the caller: the last
   * successful measurement (possibly old, see `at`), undefined if none yet.
   */
  logTail(): Promise<LogTail | undefined>;
}

/** Latency buckets in seconds: sub-millisecond cached answers up to multi-second stalls. */
const LATENCY_BUCKETS_SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
/** Commands per log entry: group commit batches up to maxBatchCommands (512 by default). */
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/** Bytes per log entry: up to the entry budget, NATS's max_payload (1 MiB by default) less 4 KiB. */
const ENTRY_BYTES_BUCKETS = [256, 1024, 4096, 16_384, 65_536, 262_144, 524_288, 786_432, 1_048_576];

const EXPIRY_KINDS: Partial<Record<Command["type"], string>> = { expireLease: "lease", expireWait: "wait", expireSession: "session" };

export class NodeMetrics {
  readonly registry = new Registry();
  private source: MetricsSource | undefined;
  private largestBatch = 0;
  private slowestAppendSeconds = 0;

  private readonly requestSeconds = new Histogram({
    name: "dlm_request_duration_seconds",
    help: "Time from a request's arrival at the leader to its reply, by operation and outcome (ok, queued, or the error name).",
    labelNames: ["op", "outcome"] as const,
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [this.registry],
  });
  private readonly duplicates = new Counter({
    name: "dlm_duplicate_requests_total",
    help: "Requests recognised as retries or network duplicates and answered without a new log entry.",
    registers: [this.registry],
  });
  private readonly appendSeconds = new Histogram({
    name: "dlm_log_append_duration_seconds",
    help: "Time from sending a log entry to JetStream's acknowledgement, retries included (leader only).",
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [this.registry],
  });
  private readonly entryCommands = new Histogram({
    name: "dlm_log_entry_commands",
    help: "Commands per appended log entry (group commit batch size; leader only).",
    buckets: BATCH_BUCKETS,
    registers: [this.registry],
  });
  private readonly entryBytes = new Histogram({
    name: "dlm_log_entry_bytes",
    help: "Bytes per appended log entry; an entry is never larger than --max-entry-bytes or the NATS server's max_payload less 4 KiB (leader only).",
    buckets: ENTRY_BYTES_BUCKETS,
    registers: [this.registry],
  });
  private readonly entryCommandsMax = new Gauge({
    name: "dlm_log_entry_commands_max",
    help: "Largest batch this process has appended in one log entry since it started.",
    registers: [this.registry],
  });
  private readonly appendSecondsMax = new Gauge({
    name: "dlm_log_append_duration_max_seconds",
    help: "Slowest log append this process has seen since it started.",
    registers: [this.registry],
  });
  private readonly entriesApplied = new Counter({
    name: "dlm_log_entries_applied_total",
    help: "Log entries applied to this node's state and files (replay, following and leading).",
    registers: [this.registry],
  });
  private readonly notifications = new Counter({
    name: "dlm_notifications_total",
    help: "Notifications the leader sent: granted (from the queue), lost (a grant ended without release) and waitEnded, with the reason.",
    labelNames: ["event", "reason"] as const,
    registers: [this.registry],
  });
  private readonly expiries = new Counter({
    name: "dlm_expiries_total",
    help: "Expiry commands the leader committed to the log, by kind: lease, wait, session.",
    labelNames: ["kind"] as const,
    registers: [this.registry],
  });
  private readonly takeovers = new Counter({
    name: "dlm_takeovers_total",
    help: "Times this node became leader.",
    registers: [this.registry],
  });
  private readonly orphanChunksPurged = new Counter({
    name: "dlm_snapshot_orphan_chunks_purged_total",
    help: "Chunk messages of unfinished snapshot uploads (no object names them) that this node's compactor purged from the snapshot bucket.",
    registers: [this.registry],
  });
  private readonly stepDowns = new Counter({
    name: "dlm_step_downs_total",
    help: "Times this node stopped leading because its lease could not be renewed or its log append was refused or failed.",
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    const metrics = this;
    new Gauge({
      name: "dlm_role",
      help: "The node's role: 1 for the current one, 0 for the others.",
      labelNames: ["role"] as const,
      registers: [this.registry],
      collect() {
        const role = metrics.source?.role();
        for (const r of ROLES) this.set({ role: r }, r === role ? 1 : 0);
      },
    });
    const fromState = (name: string, help: string, read: (state: State) => number): void => {
      new Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          const state = metrics.source?.state();
          if (state) this.set(read(state));
        },
      });
    };
    fromState("dlm_epoch", "The leader epoch of the last applied leader entry.", (s) => s.epoch);
    fromState("dlm_sessions", "Client sessions in the applied state.", (s) => s.sessions.size);
    fromState("dlm_locks", "Locks in the lock table (held or with waiters).", (s) => s.locks.size);
    fromState(
      "dlm_lock_holders",
      "Grants currently held: every holder of every lock counts (each shared holder, each semaphore grant).",
      (s) => count(s.locks.values(), (l) => l.holders.size),
    );
    fromState("dlm_lock_waiters", "Acquires waiting in lock queues.", (s) => count(s.locks.values(), (l) => l.queue.length));
    // A counter read from the state: every grant takes the next fencing
    // token, so tokens issued is the cluster's grant count, the same on
    // every node, and it survives failovers.
    new Counter({
      name: "dlm_grants_total",
      help: "Grants in the life of the cluster (fencing tokens issued), as of the applied log.",
      registers: [this.registry],
      collect() {
        const state = metrics.source?.state();
        if (!state) return;
        this.reset();
        this.inc(state.nextToken - 1);
      },
    });
    new Gauge({
      name: "dlm_log_applied_sequence",
      help: "The log sequence this node's state and files reflect.",
      registers: [this.registry],
      collect() {
        if (metrics.source) this.set(metrics.source.appliedSeq());
      },
    });
    new Gauge({
      name: "dlm_nats_connected",
      help: "1 while the node's NATS connection is connected, 0 while it is reconnecting or closed.",
      registers: [this.registry],
      collect() {
        if (metrics.source) this.set(metrics.source.natsConnected() ? 1 : 0);
      },
    });
    // The stream's tail is one JetStream request; the source caches it and
    // shares a request in flight, so the gauges below cost one per scrape.
    const fromTail = (name: string, help: string, read: (t: LogTail, applied: number) => number): void => {
      new Gauge({
        name,
        help,
        registers: [this.registry],
        async collect() {
          const t = await metrics.source?.logTail();
          if (t && metrics.source) this.set(read(t, metrics.source.appliedSeq()));
        },
      });
    };
    fromTail("dlm_log_last_sequence", "The log stream's last sequence, as last measured.", (t) => t.lastSeq);
    fromTail("dlm_log_lag_entries", "Entries in the log this node has not applied yet.", (t, applied) => Math.max(0, t.lastSeq - applied));
    fromTail("dlm_stream_messages", "Messages in the log stream.", (t) => t.messages);
    fromTail("dlm_stream_bytes", "Bytes in the log stream.", (t) => t.bytes);
    // When the tail cannot be measured (JetStream unreachable), the gauges
    // above keep their last values; this says how old they are.
    fromTail("dlm_log_tail_age_seconds", "Age of the log tail measurement behind the lag and stream gauges.", (t) => Math.max(0, Date.now() - t.at) / 1000);
  }

  /** Connects the scrape-time gauges to the node they describe. */
  attach(source: MetricsSource): void {
    this.source = source;
  }

  /** The Prometheus text exposition of every metric. */
  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  recordRequest(op: RequestOp, reply: Reply, elapsedSeconds: number): void {
    const outcome: RequestOutcome = reply.ok ? (reply.status === "queued" ? "queued" : "ok") : reply.error;
    this.requestSeconds.observe({ op, outcome }, elapsedSeconds);
  }

  recordDuplicate(): void {
    this.duplicates.inc();
  }

  recordAppend(commands: number, bytes: number, elapsedMs: number): void {
    this.appendSeconds.observe(elapsedMs / 1000);
    this.entryCommands.observe(commands);
    this.entryBytes.observe(bytes);
    // prom-client gauges have no synchronous read, so the maxima are kept
    // beside them to compare against.
    if (commands > this.largestBatch) this.entryCommandsMax.set((this.largestBatch = commands));
    if (elapsedMs / 1000 > this.slowestAppendSeconds) this.appendSecondsMax.set((this.slowestAppendSeconds = elapsedMs / 1000));
  }

  recordApplied(): void {
    this.entriesApplied.inc();
  }

  countNotification(notification: Notification): void {
    this.notifications.inc({ event: notification.event, reason: notification.event === "granted" ? "none" : notification.error });
  }

  /** Counts a committed leader command if it is an expiry. */
  countCommitted(command: Command): void {
    const kind = EXPIRY_KINDS[command.type];
    if (kind) this.expiries.inc({ kind });
  }

  recordTakeover(): void {
    this.takeovers.inc();
  }

  recordStepDown(): void {
    this.stepDowns.inc();
  }

  recordOrphanChunksPurged(chunks: number): void {
    this.orphanChunksPurged.inc(chunks);
  }

  /**
   * The counters the stats log line and `dlm status --json` show, derived
   * from the metrics above (names kept from before the metrics existed).
   */
  async snapshot(): Promise<Record<string, number>> {
    const [requests, appends, batches, notifications] = await Promise.all([
      this.requestSeconds.get(),
      this.appendSeconds.get(),
      this.entryCommands.get(),
      this.notifications.get(),
    ]);
    const counts = requests.values.filter((v) => v.metricName === "dlm_request_duration_seconds_count");
    const entriesAppended = sumOf(appends.values.filter((v) => v.metricName?.endsWith("_count")));
    const appendSecondsTotal = sumOf(appends.values.filter((v) => v.metricName?.endsWith("_sum")));
    const notified = (event: Notification["event"]) => sumOf(notifications.values.filter((v) => v.labels.event === event));
    return {
      requests: sumOf(counts),
      badRequests: sumOf(counts.filter((v) => v.labels.op === "invalid")),
      duplicates: await single(this.duplicates),
      entriesAppended,
      commandsLogged: sumOf(batches.values.filter((v) => v.metricName?.endsWith("_sum"))),
      largestBatch: await single(this.entryCommandsMax),
      appendMsAvg: entriesAppended === 0 ? 0 : Math.round((appendSecondsTotal / entriesAppended) * 100_000) / 100,
      appendMsMax: Math.round((await single(this.appendSecondsMax)) * 100_000) / 100,
      grantsNotified: notified("granted"),
      leasesLost: notified("lost"),
      waitsEnded: notified("waitEnded"),
      entriesApplied: await single(this.entriesApplied),
      stepDowns: await single(this.stepDowns),
      leaderTerms: await single(this.takeovers),
    };
  }
}

function count<T>(items: Iterable<T>, of: (item: T) => number): number {
  let total = 0;
  for (const item of items) total += of(item);
  return total;
}

function sumOf(values: Array<MetricValue<string>>): number {
  let total = 0;
  for (const v of values) total += v.value;
  return total;
}

async function single(metric: Counter | Gauge): Promise<number> {
  return (await metric.get()).values[0]?.value ?? 0;
}
