/**
 * `dlm status` and `dlm read`: ask the cluster without opening a client
 * session (they must work while debugging a sick cluster, and must not
 * create state).
 */
import { createInbox, type NatsConnection } from "@nats-io/nats-core";
import { jetstreamManager, type StreamInfo } from "@nats-io/jetstream";
import { Objm } from "@nats-io/obj";
import { LOG_ID_METADATA_KEY } from "../log/logStream";
import { metaFromRecord } from "../storage/snapshotFormat";
import type { ErrorReply, Reply, StatusView } from "../protocol/messages";
import { readFileFrom, type ReadPage } from "../protocol/filePages";
import { names as subjectNames, DEFAULT_PREFIX } from "../protocol/subjects";
import type { NodeInfo } from "../replica/node";
import { int, parseArgs, splitList, str, UsageError, type CommandSpec } from "./args";
import { knownNodesFile, readKnownNodes, writeKnownNodes } from "./knownNodes";
import { connectNats, natsConnectionFromFlags, NATS_FLAGS } from "./natsFlags";

const commonFlags: CommandSpec["flags"] = [
  ...NATS_FLAGS,
  { name: "prefix", kind: "string", default: DEFAULT_PREFIX, help: "subject prefix of the dlm cluster" },
  { name: "json", kind: "bool", help: "print JSON instead of a table" },
];

export const statusSpec: CommandSpec = {
  usage: "dlm status [flags]",
  summary:
    "Shows the leader and its epoch, the log's last sequence, every node's applied sequence, lag and version,\n" +
    "and every lock. A node named by --expect, or one that answered an earlier status from this machine,\n" +
    "that does not answer now is listed as missing. Exit code: 0 all well, 3 no leader answers,\n" +
    "4 NATS cannot be reached or refuses the credentials, 5 a node is missing (3 wins over 5).",
  flags: [
    ...commonFlags,
    { name: "expect", kind: "string", help: "node ids that should answer, comma-separated" },
    { name: "forget", kind: "string", help: "node ids to stop expecting (decommissioned), comma-separated" },
    { name: "wait-ms", kind: "int", default: 3000, help: "how long to wait for the nodes it expects to answer" },
  ],
};

/** `dlm status` exit code when a leader answers but an expected node does not. */
export const EXIT_NODE_MISSING = 5;
/** `dlm status` exit code when no leader answers. */
export const EXIT_NO_LEADER = 3;

export const readSpec: CommandSpec = {
  usage: "dlm read FILE [flags]",
  positionals: 1,
  summary: "Prints the committed content of FILE (file_0 … file_99) as the leader has it, in pages when it is larger than one NATS message.",
  flags: [
    ...commonFlags.filter((f) => f.name !== "json"),
    { name: "offset", kind: "int", default: 0, help: "start this many bytes into the file (what was appended since a length read before)" },
  ],
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
  /** Nodes expected (`--expect`, or seen by an earlier status) that did not answer. */
  missing?: MissingNode[];
}

export interface MissingNode {
  nodeId: string;
  /** When a status from this machine last saw it answer (ms since epoch); null if never (named by --expect only). */
  lastSeenAt: number | null;
}

/**
 * Collects the nodes' answers on the info subject: for `waitMs`, or until
 * `expect` nodes have answered when the caller knows how many run (a
 * number), or which (their ids).
 */
async function gatherNodes(nc: NatsConnection, subject: string, waitMs: number, expect?: number | string[]): Promise<NodeInfo[]> {
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
      if (typeof expect === "number" && nodes.length >= expect) done();
      if (Array.isArray(expect) && expect.every((id) => nodes.some((n) => n.nodeId === id))) done();
    },
  });
  // A closed connection closes the subscription: stop waiting then, so that
  // closing the connection ends a status call at once, not after waitMs.
  void sub.closed.then(done, done);
  nc.publish(subject, encoder.encode("{}"), { reply: inbox });
  const timer = setTimeout(done, waitMs);
  await enough;
  clearTimeout(timer);
  sub.unsubscribe();
  return nodes.sort((a, b) => a.nodeId.localeCompare(b.nodeId));
}

/**
 * The cluster as seen from NATS. Nodes are gathered for 500 ms, or, with
 * `expectNodes` (a count, or the ids), until those answered (at most
 * `waitMs`, 10 s by default).
 */
export async function clusterStatus(nc: NatsConnection, prefix: string, expectNodes?: number | string[], waitMs?: number): Promise<ClusterStatus> {
  const names = subjectNames(prefix);
  const [nodes, streamInfo, leader] = await Promise.all([
    gatherNodes(nc, names.nodesInfoSubject, waitMs ?? (expectNodes === undefined ? 500 : 10_000), expectNodes),
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

type StatusLock = StatusView["locks"][number];

/**
 * Who holds a lock, in one line: an exclusive holder as it always was
 * shown, the readers of a shared lock, or the permits out of a semaphore
 * and their holders. A leader older than shared locks sends no `holders`;
 * its one holder is shown as before.
 */
function lockLine(lock: StatusLock, now: number): string {
  const expires = (expiresAt: number) => `expires in ${Math.max(0, expiresAt - now)} ms`;
  const holders = lock.holders as StatusLock["holders"] | undefined;
  const count = lock.holderCount ?? holders?.length ?? 0;
  const more = holders && count > holders.length ? `, … and ${count - holders.length} more` : "";
  if (lock.kind === "semaphore" && holders) {
    const listed = holders.map((h) => `${h.client} ${h.permits} permit${h.permits === 1 ? "" : "s"} token ${h.token} (${expires(h.expiresAt)})`);
    const out = count > holders.length ? "" : ` ${holders.reduce((sum, h) => sum + (h.permits ?? 0), 0)}/${lock.limit} permits out,`;
    return `semaphore of ${lock.limit},${out} ${count} holder${count === 1 ? "" : "s"}${listed.length > 0 ? `: ${listed.join(", ")}` : ""}${more}`;
  }
  if (holders && holders.length > 0 && holders[0].mode === "shared") {
    const listed = holders.map((h) => `${h.client} token ${h.token} (${expires(h.expiresAt)})`);
    return `shared by ${count}: ${listed.join(", ")}${more}`;
  }
  const h = lock.holder;
  if (!h) return "free";
  return `held by ${h.client} token ${h.token}, ${expires(h.expiresAt)}, ${h.stagedAppends} staged appends (${h.stagedBytes} B)`;
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
    lines.push(`  ${n.nodeId.padEnd(10)} ${n.role.padEnd(9)} applied ${String(n.appliedSeq).padStart(7)}  lag ${lag.padStart(5)}  pid ${n.pid}  version ${n.version ?? "unknown"}`);
  }
  for (const m of status.missing ?? []) {
    const seen = m.lastSeenAt === null ? "never answered (named by --expect)" : `last answered ${new Date(m.lastSeenAt).toISOString()}`;
    lines.push(`  ${m.nodeId.padEnd(10)} ${"MISSING".padEnd(9)} ${seen}`);
  }
  if (view) {
    lines.push("", `sessions: ${view.sessions}   next token: ${view.nextToken}`, "", "locks:");
    if (view.locks.length === 0) lines.push("  (all free)");
    for (const lock of view.locks) lines.push(`  ${lock.name}: ${lockLine(lock, view.now)}; ${lock.queueLength ?? lock.queue.length} waiting`);
    if (view.lockCount > view.locks.length) lines.push(`  … and ${view.lockCount - view.locks.length} more locks`);
    const files = view.fileLengths.map((len, i) => (len > 0 ? `file_${i}=${len}B` : "")).filter(Boolean);
    lines.push("", `files with content: ${files.length === 0 ? "none" : files.join(" ")}`);
  }
  return lines.join("\n");
}

export async function runStatus(argv: string[]): Promise<void> {
  const { flags } = parseArgs(statusSpec, argv);
  const connection = natsConnectionFromFlags(flags);
  const servers = connection.servers;
  const prefix = str(flags, "prefix");
  const expected = typeof flags.expect === "string" ? splitList(flags.expect) : [];
  const forget = new Set(typeof flags.forget === "string" ? splitList(flags.forget) : []);
  // What earlier runs saw is remembered per cluster (prefix and servers),
  // so a node that died since then is reported without anyone having to
  // list the nodes; --forget drops a node that was taken away on purpose.
  const memoryFile = knownNodesFile(prefix, servers);
  const known = readKnownNodes(memoryFile);
  for (const id of forget) known.delete(id);
  const wanted = new Set([...known.keys(), ...expected]);
  for (const id of forget) if (!expected.includes(id)) wanted.delete(id);
  const nc = await connectNats(connection, { name: "dlm-status" });
  try {
    const status = await clusterStatus(nc, prefix, wanted.size > 0 ? [...wanted] : undefined, wanted.size > 0 ? int(flags, "wait-ms") : undefined);
    const now = Date.now();
    for (const n of status.nodes) known.set(n.nodeId, now);
    const answered = new Set(status.nodes.map((n) => n.nodeId));
    status.missing = [...wanted].filter((id) => !answered.has(id)).sort().map((nodeId) => ({ nodeId, lastSeenAt: known.get(nodeId) ?? null }));
    writeKnownNodes(memoryFile, prefix, servers, known);
    await addNewestSnapshot(nc, prefix, status);
    process.stdout.write((flags.json ? JSON.stringify(status, null, 2) : formatStatus(status)) + "\n");
    if (!status.leader) process.exitCode = EXIT_NO_LEADER;
    else if (status.missing.length > 0) process.exitCode = EXIT_NODE_MISSING;
  } finally {
    await nc.close();
  }
}

/** An error answer to one page of `dlm read`, printed as the answer says. */
class RefusedRead extends Error {
  constructor(readonly reply: ErrorReply) {
    super(reply.message);
  }
}

export async function runRead(argv: string[]): Promise<void> {
  const { flags, positionals } = parseArgs(readSpec, argv);
  if (positionals.length !== 1) throw new UsageError("dlm read takes exactly one FILE (file_0 … file_99)");
  // The flag parser takes non-negative integers only.
  const from = int(flags, "offset");
  const nc = await connectNats(natsConnectionFromFlags(flags), { name: "dlm-read" });
  try {
    const names = subjectNames(str(flags, "prefix"));
    const file = positionals[0];
    const fetchPage = async (offset: number): Promise<ReadPage> => {
      const msg = await nc.request(names.requestSubject, encoder.encode(JSON.stringify({ op: "read", file, offset })), { timeout: 5000 });
      const reply = JSON.parse(decoder.decode(msg.data)) as Reply;
      if (!reply.ok) throw new RefusedRead(reply);
      return reply;
    };
    let data: Buffer;
    try {
      data = await readFileFrom(fetchPage, (message) => new Error(`read ${file}: ${message}`), from);
    } catch (err) {
      if (!(err instanceof RefusedRead)) throw err;
      process.stderr.write(`dlm: ${err.reply.error} (code ${err.reply.code}): ${err.reply.message}\n`);
      process.exitCode = 1;
      return;
    }
    process.stdout.write(data);
  } finally {
    await nc.close();
  }
}
