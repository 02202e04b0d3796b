/** `dlm node`: run one dlm node (it follows, and leads when it wins the lease). */
import * as path from "path";
import { DEFAULT_LIMITS, type Limits } from "../protocol/limits";
import { DEFAULT_PREFIX } from "../protocol/subjects";
import { DlmNode, NODE_DEFAULTS } from "../replica/node";
import { asLogger, createLogger } from "../util/logger";
import { int, parseArgs, splitList, str, type CommandSpec } from "./args";

export const nodeSpec: CommandSpec = {
  usage: "dlm node [flags]",
  summary:
    "Runs one dlm node. It replays the log into its state and files, follows the log, and becomes the\n" +
    "coordinator when it wins the leader lease. SIGTERM/SIGINT hand leadership over and exit cleanly.",
  flags: [
    { name: "nats", kind: "string", default: "nats://127.0.0.1:4222", help: "NATS server URLs, comma-separated" },
    { name: "id", kind: "string", default: "n1", help: "node id, unique in the cluster" },
    { name: "data", kind: "string", help: "data directory for this node's files (default: .dlm/data/<id>)" },
    { name: "prefix", kind: "string", default: DEFAULT_PREFIX, help: "subject prefix; separates dlm clusters on one NATS" },
    { name: "replicas", kind: "int", default: 1, help: "replicas of the log stream and leader bucket (NATS cluster size)" },
    { name: "lease-ms", kind: "int", default: DEFAULT_LIMITS.defaultLeaseMs, help: "default lock lease" },
    { name: "session-timeout-ms", kind: "int", default: DEFAULT_LIMITS.sessionTimeoutMs, help: "expire sessions silent this long" },
    { name: "max-append-bytes", kind: "int", default: DEFAULT_LIMITS.maxAppendBytes, help: "largest single append" },
    { name: "max-section-bytes", kind: "int", default: DEFAULT_LIMITS.maxSectionBytes, help: "largest critical section" },
    { name: "leader-ttl-ms", kind: "int", default: NODE_DEFAULTS.leaderTtlMs, help: "leader lease (KV key TTL)" },
    { name: "leader-renew-ms", kind: "int", default: NODE_DEFAULTS.leaderRenewMs, help: "leader lease refresh interval" },
    { name: "snapshot-every", kind: "int", default: NODE_DEFAULTS.snapshotEveryEntries, help: "write a state snapshot every N applied entries" },
    {
      name: "compact-every-entries",
      kind: "int",
      default: NODE_DEFAULTS.compaction.snapshotEveryEntries,
      help: "leader stores a snapshot in JetStream after N entries and compacts the log (0: never)",
    },
    { name: "compact-every-bytes", kind: "int", default: NODE_DEFAULTS.compaction.snapshotEveryBytes, help: "… or after about N bytes of log" },
    { name: "keep-snapshots", kind: "int", default: NODE_DEFAULTS.compaction.keepSnapshots, help: "stored snapshots kept; the log is kept back to the oldest" },
    { name: "retain-entries", kind: "int", default: NODE_DEFAULTS.compaction.retainEntries, help: "entries kept below the compaction point (margin)" },
    { name: "compact-check-ms", kind: "int", default: NODE_DEFAULTS.compaction.checkIntervalMs, help: "how often the leader checks whether to snapshot and compact" },
    { name: "log-level", kind: "string", default: "info", help: "trace|debug|info|warn|error" },
    { name: "pretty", kind: "bool", help: "human-readable logs instead of JSON lines" },
  ],
};

export async function runNode(argv: string[]): Promise<void> {
  const { flags } = parseArgs(nodeSpec, argv);
  const nodeId = str(flags, "id");
  const logger = createLogger({ name: nodeId, level: str(flags, "log-level"), pretty: flags.pretty === true });
  // A broken invariant (or any bug that escapes) must stop the process:
  // its state can no longer be trusted, and a restart rebuilds it from the
  // log. Exit code 70 (EX_SOFTWARE) tells a supervisor it was not a signal.
  const crash = (kind: string) => (err: unknown) => {
    logger.fatal({ err: err instanceof Error ? { message: err.message, name: err.name, stack: err.stack } : String(err) }, kind);
    process.exit(70);
  };
  process.on("uncaughtException", crash("uncaught exception"));
  process.on("unhandledRejection", crash("unhandled rejection"));
  const limits: Limits = {
    ...DEFAULT_LIMITS,
    defaultLeaseMs: int(flags, "lease-ms"),
    sessionTimeoutMs: int(flags, "session-timeout-ms"),
    maxAppendBytes: int(flags, "max-append-bytes"),
    maxSectionBytes: int(flags, "max-section-bytes"),
  };
  const leaderTtlMs = int(flags, "leader-ttl-ms");
  const leaderRenewMs = int(flags, "leader-renew-ms");
  if (leaderRenewMs * 2 > leaderTtlMs) throw new Error("--leader-renew-ms must be at most half of --leader-ttl-ms");
  const node = await DlmNode.start({
    ...NODE_DEFAULTS,
    nodeId,
    dataDir: path.resolve(typeof flags.data === "string" ? flags.data : path.join(".dlm", "data", nodeId)),
    servers: splitList(str(flags, "nats")),
    prefix: str(flags, "prefix"),
    replicas: int(flags, "replicas"),
    limits,
    leaderTtlMs,
    leaderRenewMs,
    snapshotEveryEntries: Math.max(1, int(flags, "snapshot-every")),
    compaction: {
      ...NODE_DEFAULTS.compaction,
      snapshotEveryEntries: int(flags, "compact-every-entries"),
      snapshotEveryBytes: int(flags, "compact-every-bytes"),
      keepSnapshots: Math.max(1, int(flags, "keep-snapshots")),
      retainEntries: int(flags, "retain-entries"),
      checkIntervalMs: Math.max(100, int(flags, "compact-check-ms")),
    },
    logger: asLogger(logger),
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
