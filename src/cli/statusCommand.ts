/**
 * `dlm status` and `dlm read`: ask the cluster without opening a client
 * session (they must work while debugging a sick cluster, and must not
 * create state).
 */
import { connect } from "@nats-io/transport-node";
import { createInbox, type NatsConnection } from "@nats-io/nats-core";
import { jetstreamManager, type StreamInfo } from "@nats-io/jetstream";
import { Objm } from "@nats-io/obj";
import { LOG_ID_METADATA_KEY } from "../log/logStream";
import { metaFromRecord } from "../storage/snapshotFormat";
import type { Reply, StatusView } from "../protocol/messages";
import { names as subjectNames, DEFAULT_PREFIX } from "../protocol/subjects";
import type { NodeInfo } from "../replica/node";
import { parseArgs, splitList, str, UsageError, type CommandSpec } from "./args";

const commonFlags: CommandSpec["flags"] = [
  { name: "nats", kind: "string", default: "nats://127.0.0.1:4222", help: "NATS server URLs, comma-separated" },
  { name: "prefix", kind: "string", default: DEFAULT_PREFIX, help: "subject prefix of the dlm cluster" },
  { name: "json", kind: "bool", help: "print JSON instead of a table" },
];

export const statusSpec: CommandSpec = {
  usage: "dlm status [flags]",
  summary: "Shows the leader and its epoch, the log's last sequence, every node's applied sequence and lag, and every lock.",
  flags: commonFlags,
};

export const readSpec: CommandSpec = {
  usage: "dlm read FILE [flags]",
  summary: "Prints the committed content of FILE (file_0 … file_99) as the leader has it.",
  flags: commonFlags.filter((f) => f.name !== "json"),
};

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The log stream's extent and size, and the newest stored snapshot of it. */
export interface LogStatus {
  /** The log's id (stream metadata): snapshots and data directories belong to one log. */
  logId: string;
  firstSeq: number;
  lastSeq: number;
  messages: number;
  bytes: number;
  /** Newest complete stored snapshot of this log, null if none; absent unless looked up (newestSnapshot). */
  snapshot?: { seq: number; sizeBytes: number; ageMs: number; count: number } | null;
}

export interface ClusterStatus {
  lastSeq: number | null;
  /** null when the stream could not be read. */
  log?: LogStatus | null;
  leader: StatusView | null;
  leaderError?: string;
  nodes: NodeInfo[];
}

/**
 * Collects the nodes' answers on the info subject: for `waitMs`, or until
 * `expect` nodes have answered when the caller knows how many run.
 */
async function gatherNodes(nc: NatsConnection, subject: string, waitMs: number, expect?: number): Promise<NodeInfo[]> {
  const inbox = createInbox();
  const nodes: NodeInfo[] = [];
  let done: () => void = () => undefined;
  const enough = new Promise<void>((resolve) => (done = resolve));
  const sub = nc.subscribe(inbox, {
    callback: (_err, msg) => {
      try {
        nodes.push(JSON.parse(decoder.decode(msg.data)) as NodeInfo);
      } catch {
        // A node that answers garbage is simply not listed.
      }
      if (expect !== undefined && nodes.length >= expect) done();
    },
  });
  nc.publish(subject, encoder.encode("{}"), { reply: inbox });
  const timer = setTimeout(done, waitMs);
  await enough;
  clearTimeout(timer);
  sub.unsubscribe();
  return nodes.sort((a, b) => a.nodeId.localeCompare(b.nodeId));
}

/**
 * The cluster as seen from NATS. Nodes are gathered for 500 ms, or, with
 * `expectNodes`, until that many answered (at most 10 s).
 */
export async function clusterStatus(nc: NatsConnection, prefix: string, expectNodes?: number): Promise<ClusterStatus> {
  const names = subjectNames(prefix);
  const [nodes, streamInfo, leader] = await Promise.all([
    gatherNodes(nc, names.nodesInfoSubject, expectNodes === undefined ? 500 : 10_000, expectNodes),
    jetstreamManager(nc)
      .then((jsm) => jsm.streams.info(names.streamName))
      .catch(() => null),
    nc
      .request(names.requestSubject, encoder.encode(JSON.stringify({ op: "status" })), { timeout: 2000 })
      .then((msg) => JSON.parse(decoder.decode(msg.data)) as Reply)
      .catch((err: Error) => ({ ok: false, code: -1, error: "UNAVAILABLE", message: err.message }) as Reply),
  ]);
  const lastSeq = streamInfo ? streamInfo.state.last_seq : null;
  const log = streamInfo ? logStatus(streamInfo) : null;
  if (leader.ok && leader.view) return { lastSeq, log, leader: leader.view, nodes };
  return { lastSeq, log, leader: null, leaderError: leader.message, nodes };
}

function logStatus(info: StreamInfo): LogStatus {
  const s = info.state;
  const logId = info.config.metadata?.[LOG_ID_METADATA_KEY] ?? `created:${info.created}`;
  return { logId, firstSeq: s.first_seq, lastSeq: s.last_seq, messages: s.messages, bytes: s.bytes };
}

/**
 * Adds the newest stored snapshot of the log to `status.log`. Separate from
 * clusterStatus(), which tests poll: listing the bucket costs a consumer.
 */
export async function addNewestSnapshot(nc: NatsConnection, prefix: string, status: ClusterStatus): Promise<void> {
  const log = status.log;
  if (!log) return;
  log.snapshot = null;
  try {
    const store = await new Objm(nc).open(subjectNames(prefix).snapshotBucket);
    const metas = (await store.list())
      .filter((o) => !o.deleted)
      .map((o) => ({ meta: metaFromRecord(o.metadata), mtime: Date.parse(o.mtime) }))
      .filter((o) => o.meta?.logId === log.logId)
      .sort((a, b) => b.meta!.seq - a.meta!.seq);
    const newest = metas[0];
    if (newest) log.snapshot = { seq: newest.meta!.seq, sizeBytes: newest.meta!.sizeBytes, ageMs: Math.max(0, Date.now() - newest.mtime), count: metas.length };
  } catch {
    // No bucket yet (no snapshot was ever stored), or it cannot be read: none to show.
  }
}

/** The newest snapshot's line, when it was looked up. */
function snapshotLine(log: LogStatus | null | undefined): string[] {
  if (!log || log.snapshot === undefined) return [];
  const snap = log.snapshot;
  if (snap === null) return ["snapshot: none stored"];
  return [`snapshot: seq ${snap.seq}, ${Math.round(snap.ageMs / 1000)} s old, ${snap.sizeBytes} bytes (${snap.count} stored)`];
}

export function formatStatus(status: ClusterStatus): string {
  const lines: string[] = [];
  const view = status.leader;
  lines.push(
    view ? `leader: ${view.leader} (epoch ${view.epoch})` : `leader: none answering (${status.leaderError ?? "unknown"})`,
    status.log
      ? `log: last sequence ${status.log.lastSeq}, first ${status.log.firstSeq}, ${status.log.messages} entries, ${status.log.bytes} bytes`
      : `log: last sequence ${status.lastSeq ?? "unknown"}`,
    ...snapshotLine(status.log),
    "",
    "nodes:",
  );
  if (status.nodes.length === 0) lines.push("  (no node answered)");
  for (const n of status.nodes) {
    const lag = status.lastSeq === null ? "?" : String(Math.max(0, status.lastSeq - n.appliedSeq));
    lines.push(`  ${n.nodeId.padEnd(10)} ${n.role.padEnd(9)} applied ${String(n.appliedSeq).padStart(7)}  lag ${lag.padStart(5)}  pid ${n.pid}`);
  }
  if (view) {
    lines.push("", `sessions: ${view.sessions}   next token: ${view.nextToken}`, "", "locks:");
    if (view.locks.length === 0) lines.push("  (all free)");
    for (const lock of view.locks) {
      const h = lock.holder;
      const holder = h
        ? `held by ${h.client} token ${h.token}, expires in ${Math.max(0, h.expiresAt - view.now)} ms, ${h.stagedAppends} staged appends (${h.stagedBytes} B)`
        : "free";
      lines.push(`  ${lock.name}: ${holder}; ${lock.queue.length} waiting`);
    }
    const files = view.fileLengths.map((len, i) => (len > 0 ? `file_${i}=${len}B` : "")).filter(Boolean);
    lines.push("", `files with content: ${files.length === 0 ? "none" : files.join(" ")}`);
  }
  return lines.join("\n");
}

export async function runStatus(argv: string[]): Promise<void> {
  const { flags } = parseArgs(statusSpec, argv);
  const nc = await connect({ servers: splitList(str(flags, "nats")), name: "dlm-status" });
  try {
    const status = await clusterStatus(nc, str(flags, "prefix"));
    await addNewestSnapshot(nc, str(flags, "prefix"), status);
    process.stdout.write((flags.json ? JSON.stringify(status, null, 2) : formatStatus(status)) + "\n");
    if (!status.leader) process.exitCode = 3;
  } finally {
    await nc.close();
  }
}

export async function runRead(argv: string[]): Promise<void> {
  const { flags, positionals } = parseArgs(readSpec, argv);
  if (positionals.length !== 1) throw new UsageError("dlm read takes exactly one FILE (file_0 … file_99)");
  const nc = await connect({ servers: splitList(str(flags, "nats")), name: "dlm-read" });
  try {
    const names = subjectNames(str(flags, "prefix"));
    const msg = await nc.request(names.requestSubject, encoder.encode(JSON.stringify({ op: "read", file: positionals[0] })), { timeout: 5000 });
    const reply = JSON.parse(decoder.decode(msg.data)) as Reply;
    if (!reply.ok) {
      process.stderr.write(`dlm: ${reply.error} (code ${reply.code}): ${reply.message}\n`);
      process.exitCode = 1;
      return;
    }
    process.stdout.write(Buffer.from(reply.data ?? "", "base64"));
  } finally {
    await nc.close();
  }
}
