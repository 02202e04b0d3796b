/** `dlm node`: run one dlm node (it follows, and leads when it wins the lease). */
import * as path from "path";
import { DEFAULT_PREFIX } from "../protocol/subjects";
import { DlmNode, FOLLOW_IDLE_POLL_MS, NODE_DEFAULTS, NODE_READY_MAX_LAG_ENTRIES } from "../replica/node";
import { asLogger, createLogger } from "../util/logger";
import { version } from "../version";
import { int, MAX_PORT, str, UsageError, type CommandSpec, type ParsedFlags } from "./args";
import { CONFIG_FLAG, parseArgsWithConfig } from "./configFile";
import { coordinatorOptionsOf, LIMIT_FLAGS, limitSettingsFromFlags, limitsOf } from "./limitsConfig";
import { explainConnectError, isConnectFailure, natsConnectionFromFlags, NATS_FLAGS } from "./natsFlags";

export const nodeSpec: CommandSpec = {
  usage: "dlm node [flags]",
  summary:
    "Runs one dlm node. It replays the log into its state and files, follows the log, and becomes the\n" +
    "coordinator when it wins the leader lease. SIGTERM/SIGINT hand leadership over and exit cleanly.",
  flags: [
    ...NATS_FLAGS,
    { name: "id", kind: "string", default: "n1", help: "node id, unique in the cluster" },
    { name: "data", kind: "string", help: "data directory for this node's files (default: .dlm/data/<id>)" },
    { name: "prefix", kind: "string", default: DEFAULT_PREFIX, help: "subject prefix; separates dlm clusters on one NATS" },
    // JetStream keeps at most 5 replicas of a stream.
    { name: "replicas", kind: "int", default: 1, min: 1, max: 5, help: "replicas of the log stream and leader bucket (NATS cluster size)" },
    { name: CONFIG_FLAG, kind: "string", help: "JSON file of settings: keys are these flags in camelCase; flags given here win" },
    ...LIMIT_FLAGS,
    // The KV lease refuses a TTL under 100 ms; a renew interval under 10 ms would hammer the bucket.
    { name: "leader-ttl-ms", kind: "int", default: NODE_DEFAULTS.leaderTtlMs, min: 100, help: "leader lease (KV key TTL)" },
    { name: "leader-renew-ms", kind: "int", default: NODE_DEFAULTS.leaderRenewMs, min: 10, help: "leader lease refresh interval" },
    {
      name: "leader-timeout-ms",
      kind: "int",
      default: NODE_DEFAULTS.leaderTimeoutMs,
      help: "a follower takes over when the leader has not refreshed its lease for this long (failure detection)",
    },
    { name: "log-timeout-ms", kind: "int", default: NODE_DEFAULTS.logTimeoutMs, min: 100, help: "timeout of one JetStream request on the log (append ack, stream info)" },
    {
      name: "follow-poll-ms",
      kind: "int",
      default: NODE_DEFAULTS.followPollMs,
      help: `a follower polls the log this often while entries come (backing off to ${FOLLOW_IDLE_POLL_MS} ms when idle); 0: each entry is pushed to it`,
    },
    { name: "snapshot-every", kind: "int", default: NODE_DEFAULTS.snapshotEveryEntries, min: 1, help: "write a state snapshot every N applied entries" },
    { name: "metrics-port", kind: "int", default: 0, max: MAX_PORT, help: "serve /metrics, /healthz and /readyz over HTTP on this port (0: off)" },
    { name: "metrics-host", kind: "string", default: "127.0.0.1", help: "address the metrics port listens on (0.0.0.0 to let other hosts scrape)" },
    { name: "ready-max-lag", kind: "int", default: NODE_READY_MAX_LAG_ENTRIES, help: "/readyz fails on a follower more than this many log entries behind" },
    {
      name: "compact-every-entries",
      kind: "int",
      default: NODE_DEFAULTS.compaction.snapshotEveryEntries,
      help: "leader stores a snapshot in JetStream after N entries and compacts the log (0: never)",
    },
    { name: "compact-every-bytes", kind: "int", default: NODE_DEFAULTS.compaction.snapshotEveryBytes, help: "… or after about N bytes of log" },
    { name: "keep-snapshots", kind: "int", default: NODE_DEFAULTS.compaction.keepSnapshots, min: 1, help: "stored snapshots kept; the log is kept back to the oldest" },
    { name: "retain-entries", kind: "int", default: NODE_DEFAULTS.compaction.retainEntries, help: "entries kept below the compaction point (margin)" },
    { name: "compact-check-ms", kind: "int", default: NODE_DEFAULTS.compaction.checkIntervalMs, min: 100, help: "how often the leader checks whether to snapshot and compact" },
    {
      name: "orphan-chunk-age-ms",
      kind: "int",
      default: NODE_DEFAULTS.compaction.orphanChunkAgeMs,
      min: 0,
      help: "the leader purges snapshot chunks no stored object names (an upload that died) once their count has not changed for this long",
    },
    { name: "log-level", kind: "string", default: "info", help: "trace|debug|info|warn|error" },
    { name: "pretty", kind: "bool", help: "human-readable logs instead of JSON lines" },
  ],
};

/**
 * The leader lease's timings from the flags, checked against each other
 * before anything starts: a combination that cannot work is a usage error
 * (exit 2), not a node that starts and then fails or flaps.
 */
export function leaderTimings(flags: ParsedFlags): { leaderTtlMs: number; leaderRenewMs: number; leaderTimeoutMs: number } {
  const leaderTtlMs = int(flags, "leader-ttl-ms");
  const leaderRenewMs = int(flags, "leader-renew-ms");
  if (leaderRenewMs * 2 > leaderTtlMs) throw new UsageError(`--leader-renew-ms (${leaderRenewMs}) must be at most half of --leader-ttl-ms (${leaderTtlMs})`);
  const leaderTimeoutMs = int(flags, "leader-timeout-ms");
  // Three refreshes may be late before followers take over, and the TTL is
  // only the backstop for a key nobody saw written.
  if (leaderRenewMs * 3 > leaderTimeoutMs || leaderTimeoutMs > leaderTtlMs) {
    throw new UsageError(
      `--leader-timeout-ms (${leaderTimeoutMs}) must be at least 3 x --leader-renew-ms (${leaderRenewMs}) and at most --leader-ttl-ms (${leaderTtlMs})`,
    );
  }
  return { leaderTtlMs, leaderRenewMs, leaderTimeoutMs };
}

export async function runNode(argv: string[]): Promise<void> {
  const { flags } = parseArgsWithConfig(nodeSpec, argv);
  const { leaderTtlMs, leaderRenewMs, leaderTimeoutMs } = leaderTimings(flags);
  const limitSettings = limitSettingsFromFlags(flags);
  const nats = natsConnectionFromFlags(flags);
  const nodeId = str(flags, "id");
  const logger = createLogger({ name: nodeId, level: str(flags, "log-level"), pretty: flags.pretty === true });
  logger.info({ version: version(), nodeId, pid: process.pid, limits: limitSettings }, "dlm node starting");
  // A broken invariant (or any bug that escapes) must stop the process:
  // its state can no longer be trusted, and a restart rebuilds it from the
  // log. Exit code 70 (EX_SOFTWARE) tells a supervisor it was not a signal.
  const crash = (kind: string) => (err: unknown) => {
    logger.fatal({ err: err instanceof Error ? { message: err.message, name: err.name, stack: err.stack } : String(err) }, kind);
    process.exit(70);
  };
  process.on("uncaughtException", crash("uncaught exception"));
  process.on("unhandledRejection", crash("unhandled rejection"));
  const node = await DlmNode.start({
    ...NODE_DEFAULTS,
    nodeId,
    dataDir: path.resolve(typeof flags.data === "string" ? flags.data : path.join(".dlm", "data", nodeId)),
    servers: nats.servers,
    nats: nats.options,
    prefix: str(flags, "prefix"),
    replicas: int(flags, "replicas"),
    limits: limitsOf(limitSettings),
    coordinator: coordinatorOptionsOf(limitSettings),
    leaderTtlMs,
    leaderRenewMs,
    leaderTimeoutMs,
    // Ranges are checked by the flag parser (nodeSpec's min and max); values
    // are used as given, never clamped.
    logTimeoutMs: int(flags, "log-timeout-ms"),
    followPollMs: int(flags, "follow-poll-ms"),
    snapshotEveryEntries: int(flags, "snapshot-every"),
    metrics:
      int(flags, "metrics-port") === 0
        ? undefined
        : { host: str(flags, "metrics-host"), port: int(flags, "metrics-port"), readyMaxLagEntries: int(flags, "ready-max-lag") },
    compaction: {
      ...NODE_DEFAULTS.compaction,
      snapshotEveryEntries: int(flags, "compact-every-entries"),
      snapshotEveryBytes: int(flags, "compact-every-bytes"),
      keepSnapshots: int(flags, "keep-snapshots"),
      retainEntries: int(flags, "retain-entries"),
      checkIntervalMs: int(flags, "compact-check-ms"),
      orphanChunkAgeMs: int(flags, "orphan-chunk-age-ms"),
    },
    logger: asLogger(logger),
  }).catch((err: unknown) => {
    throw isConnectFailure(err) ? explainConnectError(err, nats) : err;
  });
  logger.info({ pid: process.pid }, "node ready");
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down");
    node.stop().then(
      () => process.exit(0),
      (err: Error) => {
        logger.error({ err: err.message }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
}
