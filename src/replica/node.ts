/**
 * A dlm node: one binary, two roles.
 *
 * Every node starts the same way: open its data directory (cutting files
 * back to the last checkpoint), rebuild the state by replaying the log from
 * the start (writing to the files only what the checkpoint does not cover),
 * and then follow the log. A follower campaigns for the leader lease; the
 * winner catches up to the log's end, appends a `leader` entry with the
 * expected-last-sequence header (the entry that fences off every older
 * leader), and only then starts a Coordinator that serves clients. Losing
 * the lease or having an append refused sends it back to following.
 */
import { connect } from "@nats-io/transport-node";
import type { ConnectionOptions, NatsConnection, Subscription } from "@nats-io/nats-core";
import type { Logger } from "../log/logger";
import { isWrongLastSequence, LogPurgedError, LogStream, type Follower } from "../log/logStream";
import { fileRangeReader, SnapshotBucket, type FileRangeReader, type StoredSnapshotInfo } from "../log/snapshotBucket";
import { FileStore } from "../storage/fileStore";
import { IncomingFiles } from "../storage/incomingFiles";
import { SNAPSHOT_FORMAT, SnapshotCorruptError, type SnapshotHeader } from "../storage/snapshotFormat";
import type { Limits } from "../protocol/limits";
import { names as subjectNames, type Names } from "../protocol/subjects";
import { apply, createState, entryVersion, restore, snapshot, type Command, type Effect, type LogEntry, type State } from "../state";
import { readSnapshot, writeSnapshot } from "../storage/snapshotStore";
import { errorMessage } from "../util/errorMessage";
import { assert, InvariantError } from "../util/assert";
import { Coordinator, DEFAULT_COORDINATOR_OPTIONS, type CoordinatorHost, type CoordinatorOptions } from "../coordinator/coordinator";
import { decodeEntry, encodeEntry } from "../coordinator/entries";
import { MetricsServer } from "../metrics/httpServer";
import { LogTailProbe } from "../metrics/logTailProbe";
import { NodeMetrics } from "../metrics/nodeMetrics";
import { readiness, type Readiness } from "../metrics/readiness";
import { LeaderLease, type LeaseWrite } from "./leaderLease";
import { version } from "../version";
import { Compactor, type CompactorOptions } from "./compactor";
import { retryWithin } from "../util/retry";

/** How long one JetStream call on the start-up path is retried before the node gives up starting. */
const STARTUP_RETRY_MS = 60_000;

export interface NodeOptions {
  nodeId: string;
  dataDir: string;
  servers: string[];
  /**
   * More NATS connection options: credentials (`user`/`pass`, `token`,
   * `authenticator`) and `tls`, from the shared connection flags
   * (src/cli/natsFlags.ts). Servers, name and reconnect settings are the node's own.
   */
  nats?: ConnectionOptions;
  prefix: string;
  /** Replicas of the log stream and the leader bucket: the NATS cluster size. */
  replicas: number;
  limits: Limits;
  /** The leader lease: the KV key's TTL. */
  leaderTtlMs: number;
  /** How often the leader refreshes its key; well inside the TTL. */
  leaderRenewMs: number;
  /**
   * A follower that has seen no new write of the leader key for this long
   * takes the key over by revision instead of waiting for the TTL: the
   * failure detector. The leader serves reads only while its last renewal
   * was sent less than `leaderTimeoutMs - leaderRenewMs` ago, so it stops
   * before anyone can take over (docs/design.md §6).
   */
  leaderTimeoutMs: number;
  /**
   * Timeout of one JetStream request on the log (an append's ack, stream
   * info): short, so a leader whose stream lost its leader steps down and a
   * take-over retries within about a second instead of waiting 5 s each.
   */
  logTimeoutMs: number;
  /** How often a follower tries to take the lease when it has not seen it expire. */
  campaignIntervalMs: number;
  /**
   * A follower polls the log for new entries this often while they come,
   * backing off to FOLLOW_IDLE_POLL_MS when the log is idle, instead of
   * being woken for every entry (log/logPoller.ts). 0: every entry is
   * pushed as soon as it is stored.
   */
  followPollMs: number;
  /** How often applied state is made durable in the data directory. */
  checkpointIntervalMs: number;
  /** Write a state snapshot after this many applied entries (and at shutdown), so a restart replays only the rest. */
  snapshotEveryEntries: number;
  /** How often a stats line is logged (0: never). */
  statsIntervalMs: number;
  /** Snapshots in the JetStream bucket and log compaction (run by the leader). */
  compaction: CompactorOptions;
  coordinator: CoordinatorOptions;
  /** Serve /metrics, /healthz and /readyz over HTTP; absent: no HTTP port. */
  metrics?: NodeMetricsOptions;
  logger: Logger;
}

export interface NodeMetricsOptions {
  host: string;
  port: number;
  /** A follower further behind the log's tail than this is not ready. */
  readyMaxLagEntries: number;
}

/**
 * Default of `--ready-max-lag`: a follower this close to the tail replays
 * the rest in well under a second when it takes over.
 */
export const NODE_READY_MAX_LAG_ENTRIES = 1000;

/** Bounds of the metrics HTTP server: a few scrapers and probes, never a crowd. */
const METRICS_SERVER_LIMITS = { maxConnections: 32, requestTimeoutMs: 10_000 };

/** Longest wait between a follower's polls when the log is idle (ms). */
export const FOLLOW_IDLE_POLL_MS = 100;

export const NODE_DEFAULTS = {
  leaderTtlMs: 2000,
  leaderRenewMs: 150,
  leaderTimeoutMs: 500,
  logTimeoutMs: 1000,
  campaignIntervalMs: 50,
  followPollMs: 50,
  checkpointIntervalMs: 200,
  snapshotEveryEntries: 5000,
  statsIntervalMs: 30_000,
  coordinator: DEFAULT_COORDINATOR_OPTIONS,
  compaction: {
    snapshotEveryEntries: 50_000,
    snapshotEveryBytes: 64 * 1024 * 1024,
    keepSnapshots: 2,
    retainEntries: 10_000,
    checkIntervalMs: 5000,
    gatherMs: 500,
    // The clock of an unnamed chunk set restarts with every chunk written,
    // so this must exceed the pause between two chunks of a live upload,
    // not the upload's length. Storing 100 MiB was measured at about 3 s
    // (docs/design.md §12), some 15 ms per 512 KiB chunk: five minutes
    // without one is a writer frozen or dead, not slow.
    orphanChunkAgeMs: 5 * 60_000,
  } satisfies CompactorOptions,
};

export type Role = "starting" | "follower" | "candidate" | "leader" | "stopped";

export interface NodeInfo {
  nodeId: string;
  role: Role;
  appliedSeq: number;
  epoch: number;
  leader: string | null;
  pid: number;
  /** This node's dlm version. */
  version: string;
  metrics: Record<string, number>;
  /** Where this node serves /metrics, /healthz and /readyz, when it does. */
  metricsUrl?: string;
}

/**
 * The options of a node's NATS connection: the operator's (credentials,
 * TLS, inbox prefix), then what a node needs whatever they say: reconnect
 * forever, and no async stack traces (every log append and every reply
 * goes out on this connection; a trace for each cost about a tenth of the
 * leader's CPU).
 */
export function nodeConnectionOptions(opts: Pick<NodeOptions, "nats" | "servers" | "nodeId">): ConnectionOptions {
  return {
    ...opts.nats,
    servers: opts.servers,
    name: `dlm-node-${opts.nodeId}`,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    noAsyncTraces: true,
  };
}

export class DlmNode implements CoordinatorHost {
  readonly names: Names;
  readonly metrics = new NodeMetrics();
  readonly limits: Limits;
  readonly logger: Logger;
  role: Role = "starting";

  private current: State;
  private applied = 0;
  private follower: Follower | undefined;
  private coordinator: Coordinator | undefined;
  private leaseTimer: NodeJS.Timeout | undefined;
  private campaignTimer: NodeJS.Timeout | undefined;
  private checkpointTimer: NodeJS.Timeout | undefined;
  private statsTimer: NodeJS.Timeout | undefined;
  private stopWatch: (() => void) | undefined;
  private infoSub: Subscription | undefined;
  /** When the last renewal that succeeded was *sent* (the safe side of when the key was written). */
  private lastLeaseOkAt = 0;
  /** The newest write of the leader key seen, and when this node first saw it (its own clock). */
  private lastKeyWrite: (LeaseWrite & { seenAt: number }) | undefined;
  /** Whether the last observation says the key is gone (released or expired). */
  private keyGone = false;
  private transition: Promise<void> = Promise.resolve();
  private snapshotSeq = 0;
  private campaigning = false;
  private natsUp = true;
  private metricsServer: MetricsServer | undefined;
  private readonly logTail = new LogTailProbe(async () => {
    const { state } = await this.log.info();
    return { lastSeq: state.last_seq, messages: state.messages, bytes: state.bytes };
  });
  private readonly compactor: Compactor;

  private constructor(
    readonly opts: NodeOptions,
    readonly nc: NatsConnection,
    readonly log: LogStream,
    private readonly files: FileStore,
    private readonly lease: LeaderLease,
    private readonly snapshots: SnapshotBucket,
  ) {
    this.names = subjectNames(opts.prefix);
    this.limits = opts.limits;
    this.logger = opts.logger;
    this.current = createState(opts.limits);
    this.compactor = new Compactor(this, nc, log, snapshots, this.names.nodesInfoSubject, opts.compaction, opts.logger);
  }

  get nodeId(): string {
    return this.opts.nodeId;
  }

  static async start(opts: NodeOptions): Promise<DlmNode> {
    const names = subjectNames(opts.prefix);
    const files = FileStore.open(opts.dataDir, { logger: opts.logger });
    const nc = await connect(nodeConnectionOptions(opts));
    let node: DlmNode | undefined;
    try {
      const log = await LogStream.open(nc, {
        streamName: names.streamName,
        subject: names.logSubject,
        replicas: opts.replicas,
        requestTimeoutMs: opts.logTimeoutMs,
        logger: opts.logger,
      });
      const lease = await LeaderLease.open(nc, {
        bucket: names.leaderBucket,
        key: names.leaderKey,
        ttlMs: opts.leaderTtlMs,
        replicas: opts.replicas,
        nodeId: opts.nodeId,
        logger: opts.logger,
      });
      const snapshots = await SnapshotBucket.open(nc, { bucket: names.snapshotBucket, replicas: opts.replicas, logger: opts.logger });
      node = new DlmNode(opts, nc, log, files, lease, snapshots);
      // Served from before recovery, so a long replay shows as alive but
      // not ready instead of as a dead process.
      await node.serveMetrics();
      await node.recover();
      await node.run();
      return node;
    } catch (err) {
      await node?.metricsServer?.close();
      files.abort();
      await nc.close();
      throw err;
    }
  }

  state(): State {
    return this.current;
  }

  appliedSeq(): number {
    return this.applied;
  }

  fileLength(index: number): number {
    return this.files.length(index);
  }

  readFile(index: number, offset: number, maxBytes: number): Buffer {
    return this.files.read(index, offset, maxBytes);
  }

  leaseFresh(): boolean {
    return this.role === "leader" && Date.now() - this.lastLeaseOkAt < this.freshWindowMs();
  }

  /**
   * How long after sending a renewal that succeeded the leader trusts its
   * own state. A follower takes over only after it saw no new key write for
   * `leaderTimeoutMs`, and it saw this write after it was sent, so the
   * window closes a renew interval before anyone else can lead.
   */
  private freshWindowMs(): number {
    return Math.min(this.opts.leaderTtlMs, this.opts.leaderTimeoutMs) - this.opts.leaderRenewMs;
  }

  async info(): Promise<NodeInfo> {
    return {
      nodeId: this.nodeId,
      role: this.role,
      appliedSeq: this.applied,
      epoch: this.current.epoch,
      leader: this.current.leader,
      pid: process.pid,
      version: version(),
      metrics: await this.metrics.snapshot(),
      ...(this.metricsServer ? { metricsUrl: this.metricsServer.url } : {}),
    };
  }

  /** Liveness: the NATS connection is up (not reconnecting, not closed). */
  natsConnected(): boolean {
    return this.natsUp && !this.nc.isClosed();
  }

  async readiness(): Promise<Readiness> {
    const role = this.role;
    const tail = role === "follower" ? await this.logTail.get() : undefined;
    return readiness({
      role,
      natsConnected: this.natsConnected(),
      leaseFresh: this.leaseFresh(),
      appliedSeq: this.applied,
      tail,
      tailError: this.logTail.lastError,
      maxLagEntries: this.opts.metrics?.readyMaxLagEntries ?? 0,
    });
  }

  /**
   * Connects the metrics to this node, follows the connection's status for
   * /healthz, and starts the HTTP server when configured.
   */
  private async serveMetrics(): Promise<void> {
    this.metrics.attach({
      role: () => this.role,
      appliedSeq: () => this.applied,
      state: () => this.current,
      natsConnected: () => this.natsConnected(),
      logTail: async () => (await this.logTail.get()) ?? this.logTail.lastKnown,
    });
    void (async () => {
      for await (const status of this.nc.status()) {
        if (status.type === "disconnect") this.natsUp = false;
        else if (status.type === "reconnect") this.natsUp = true;
      }
    })();
    const opts = this.opts.metrics;
    if (!opts) return;
    this.metricsServer = await MetricsServer.start({ ...opts, ...METRICS_SERVER_LIMITS, logger: this.logger }, this.metrics, this);
    this.logger.info({ url: this.metricsServer.url, host: opts.host, port: opts.port }, "serving /metrics, /healthz and /readyz");
  }

  /**
   * Applies the entry at `seq` to the state and, unless the files already
   * reflect it (it is at or below the checkpoint loaded at start), to the
   * files. Entries must come in order, each exactly once.
   */
  applyEntry(seq: number, entry: LogEntry): Effect[] {
    assert(seq === this.applied + 1, () => `entry ${seq} applied after ${this.applied}`);
    const effects = apply(this.current, entry);
    const writeFiles = seq > this.files.appliedSeq;
    if (writeFiles) {
      for (const effect of effects) if (effect.type === "fileAppend") this.files.append(effect.file, effect.data);
      this.files.markApplied(seq);
    }
    this.applied = seq;
    this.metrics.recordApplied();
    if (writeFiles || seq === this.files.checkpoint.seq) {
      // Both sides of the same fact: what the machine says the files hold,
      // and what the files hold.
      const lengths = this.files.lengths();
      for (let i = 0; i < lengths.length; i++) {
        assert(lengths[i] === this.current.fileLengths[i], () => `file_${i} is ${lengths[i]} bytes, the log says ${this.current.fileLengths[i]} (seq ${seq})`);
      }
    }
    return effects;
  }

  /** Applies an entry read from the log (replay, catch-up, following). Replies and notifications are the leader's business. */
  private readonly applyFromLog = (seq: number, data: Uint8Array): void => {
    this.applyEntry(seq, decodeEntry(seq, data));
  };

  /** Rebuilds state from the snapshot (if usable) and the log after it; files are written only past the checkpoint. */
  private async recover(): Promise<void> {
    const checkpoint = this.files.checkpoint;
    if (checkpoint.logId === null) {
      if (checkpoint.seq !== 0) throw new InvariantError("checkpoint has applied entries but no log id");
      this.files.setLogId(this.log.logId);
    } else if (checkpoint.logId !== this.log.logId) {
      throw new Error(
        `data directory ${this.opts.dataDir} was built from another log (${checkpoint.logId}, the stream now is ${this.log.logId}); ` +
          "move it away or start this node with an empty --data directory",
      );
    }
    const lastSeq = await this.retryStartup("reading the log's tail", () => this.log.lastSeq());
    if (lastSeq < checkpoint.seq) {
      throw new InvariantError(`the log ends at ${lastSeq} but this node's files reflect entry ${checkpoint.seq}: the log lost entries`);
    }
    const started = Date.now();
    this.restoreSnapshot(checkpoint.seq, lastSeq);
    let fromSnapshotSeq = this.applied;
    let fromStoredSnapshot = false;
    // The log may have been compacted past this node (it was down, or is
    // new), before or during the replay: then start from a stored snapshot
    // and read the rest. Each round moves forward; a few are plenty.
    for (let attempt = 1; ; attempt++) {
      try {
        // A retry resumes after the last entry applied.
        await this.retryStartup("replaying the log", async () => this.log.read(this.applied + 1, await this.log.lastSeq(), this.applyFromLog));
        break;
      } catch (err) {
        if (!(err instanceof LogPurgedError) || attempt >= 5) throw err;
        await this.loadStoredSnapshot(err.firstSeq);
        fromSnapshotSeq = this.applied;
        fromStoredSnapshot = true;
      }
    }
    this.files.flush();
    this.logger.info(
      {
        appliedSeq: this.applied,
        checkpointSeq: checkpoint.seq,
        fromSnapshotSeq,
        fromStoredSnapshot,
        replayMs: Date.now() - started,
        epoch: this.current.epoch,
      },
      "recovered state from the log",
    );
  }

  /**
   * Starts over from the newest stored snapshot that reads back intact and
   * leaves no hole before the log (its sequence is at least firstSeq - 1).
   * Corrupt or partial ones are skipped. The files are replaced only when
   * the snapshot is past what they reflect; otherwise the state alone is
   * taken and the replay skips file writes up to the checkpoint, as usual.
   */
  private async loadStoredSnapshot(firstSeq: number): Promise<void> {
    const started = Date.now();
    const failed = new Set<string>();
    let candidates: StoredSnapshotInfo[] = [];
    // A snapshot can also vanish while it downloads (the leader stored two
    // newer ones and deleted it): list again, a few times, before giving up.
    for (let round = 1; round <= 3; round++) {
      candidates = (await this.retryStartup("listing stored snapshots", () => this.snapshots.list(this.log.logId))).filter((s) => s.meta.seq + 1 >= firstSeq && s.meta.seq > this.applied);
      const loaded = await this.loadFirstGood(candidates.filter((s) => !failed.has(s.name)), failed, started);
      if (loaded) return;
    }
    throw new Error(
      `the log starts at ${firstSeq} and no stored snapshot that verifies covers entries up to ${firstSeq - 1} ` +
        `(candidates: ${candidates.map((s) => s.name).join(", ") || "none"}): this node cannot catch up`,
    );
  }

  /** Loads the first of `candidates` (newest first) that verifies; records the names of those that do not. */
  private async loadFirstGood(candidates: StoredSnapshotInfo[], failed: Set<string>, started: number): Promise<boolean> {
    for (const snap of candidates) {
      const withFiles = snap.meta.seq > this.files.appliedSeq;
      const incoming = withFiles ? new IncomingFiles(this.opts.dataDir) : undefined;
      let header: SnapshotHeader;
      try {
        header = await this.snapshots.read(snap, incoming);
      } catch (err) {
        incoming?.discard();
        if (!(err instanceof SnapshotCorruptError)) throw err;
        this.logger.warn({ snapshot: snap.name, err: err.message }, "skipping a stored snapshot that does not verify");
        failed.add(snap.name);
        continue;
      }
      if (incoming) {
        incoming.finish();
        this.files.installFiles(incoming, this.log.logId, header.seq, header.lengths);
        incoming.discard();
      }
      this.current = restore(header.state);
      this.applied = header.seq;
      this.saveSnapshot();
      this.logger.info(
        { seq: header.seq, sizeBytes: snap.meta.sizeBytes, withFiles, loadMs: Date.now() - started },
        "loaded a stored snapshot",
      );
      return true;
    }
    return false;
  }

  /** Retries a JetStream call of the start-up path within STARTUP_RETRY_MS; a purged log is not retried (the caller handles it). */
  private retryStartup<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return retryWithin(what, fn, {
      withinMs: STARTUP_RETRY_MS,
      logger: this.logger,
      isFinal: (err) => err instanceof LogPurgedError,
      abandoned: () => this.nc.isClosed(),
    });
  }

  /** For the compactor's orphan chunk sweep (see CompactorHost). */
  recordOrphanChunksPurged(chunks: number): void {
    this.metrics.recordOrphanChunksPurged(chunks);
  }

  /** The state and files at the applied sequence, for the compactor (see CompactorHost). */
  captureSnapshot(): { header: SnapshotHeader; readRange: FileRangeReader } {
    const lengths = this.files.lengths();
    assert(this.files.appliedSeq === this.applied, () => `files reflect ${this.files.appliedSeq}, state ${this.applied}`);
    for (let i = 0; i < lengths.length; i++) {
      assert(lengths[i] === this.current.fileLengths[i], () => `file_${i} is ${lengths[i]} bytes, the state says ${this.current.fileLengths[i]}`);
    }
    return {
      header: { format: SNAPSHOT_FORMAT, logId: this.log.logId, seq: this.applied, lengths, state: snapshot(this.current) },
      readRange: fileRangeReader((i) => this.files.pathOf(i)),
    };
  }

  /**
   * Starts from the stored state snapshot when it belongs to this log and
   * the files already reflect it (its sequence is at or below the file
   * checkpoint), so only the log after it is replayed.
   */
  private restoreSnapshot(checkpointSeq: number, lastSeq: number): void {
    const stored = readSnapshot(this.opts.dataDir);
    if (!stored) return;
    if (stored.logId !== this.log.logId || stored.seq > checkpointSeq || stored.seq > lastSeq) {
      this.logger.warn({ snapshotSeq: stored.seq, checkpointSeq, lastSeq }, "ignoring a state snapshot that does not match this log and these files");
      return;
    }
    // The local snapshot is only a shortcut past the replay: one that parses
    // but does not restore (damaged on disk, or written by a build whose
    // state this one cannot read) costs a full replay, not the start-up.
    let state: State;
    try {
      state = restore(stored.state);
    } catch (err) {
      this.logger.warn({ snapshotSeq: stored.seq, err: errorMessage(err) }, "ignoring a state snapshot that cannot be restored; replaying the log instead");
      return;
    }
    this.current = state;
    this.applied = stored.seq;
    this.snapshotSeq = stored.seq;
    if (stored.seq === checkpointSeq) {
      const lengths = this.files.lengths();
      for (let i = 0; i < lengths.length; i++) {
        assert(lengths[i] === this.current.fileLengths[i], () => `file_${i} is ${lengths[i]} bytes, the snapshot at ${stored.seq} says ${this.current.fileLengths[i]}`);
      }
    }
  }

  private async run(): Promise<void> {
    this.infoSub = this.nc.subscribe(this.names.nodesInfoSubject, {
      callback: (_err, msg) => {
        // An answer that cannot go out (the connection is draining at
        // shutdown) is only a missed status line, not a reason to crash.
        if (msg.reply) void this.info().then((info) => msg.respond(JSON.stringify(info))).catch((err: unknown) => this.logger.debug({ err: errorMessage(err) }, "node info answer not sent"));
      },
    });
    this.checkpointTimer = setInterval(() => this.checkpoint(), this.opts.checkpointIntervalMs);
    if (this.opts.statsIntervalMs > 0) {
      this.statsTimer = setInterval(
        () =>
          void this.info()
            .then((info) => this.logger.info({ ...info }, "stats"))
            .catch((err: unknown) => this.logger.warn({ err: errorMessage(err) }, "stats not gathered")),
        this.opts.statsIntervalMs,
      );
      this.statsTimer.unref();
    }
    this.stopWatch = await this.lease.watch(
      (leader) => {
        this.keyGone = leader === null;
        if (leader === null) void this.campaign();
      },
      { onWrite: (write) => this.sawKeyWrite(write) },
    );
    this.startFollowing();
    this.campaignTimer = setInterval(() => void this.campaign(), this.opts.campaignIntervalMs);
    void this.campaign(true);
  }

  private checkpoint(): void {
    try {
      this.files.flush();
      if (this.applied - this.snapshotSeq >= this.opts.snapshotEveryEntries) this.saveSnapshot();
    } catch (err) {
      this.fatal(err);
    }
  }

  /** Call only right after files.flush(): the snapshot must not run ahead of the files' checkpoint. */
  private saveSnapshot(): void {
    if (this.applied === this.snapshotSeq) return;
    const started = Date.now();
    writeSnapshot(this.opts.dataDir, { logId: this.log.logId, seq: this.applied, state: snapshot(this.current) });
    this.snapshotSeq = this.applied;
    this.logger.info({ seq: this.applied, ms: Date.now() - started }, "state snapshot written");
  }

  private startFollowing(): void {
    this.role = "follower";
    const follower = this.log.follow(
      this.applied + 1,
      this.applyFromLog,
      {
        ...(this.opts.followPollMs > 0
          ? { poll: { minPollMs: this.opts.followPollMs, maxPollMs: Math.max(this.opts.followPollMs, FOLLOW_IDLE_POLL_MS) } }
          : {}),
        onError: (err) => {
          if (this.follower !== follower) return;
          if (err instanceof LogPurgedError) void this.serialize(() => this.resync(err.firstSeq));
          else this.fatal(err);
        },
      },
    );
    this.follower = follower;
  }

  /**
   * A follower fell behind the compacted log (it was too slow to answer the
   * compactor, or paused): start again from a stored snapshot, in process,
   * then follow on. Never skips entries silently.
   */
  private async resync(firstSeq: number): Promise<void> {
    if (this.role !== "follower") return;
    this.role = "starting";
    this.logger.warn({ appliedSeq: this.applied, firstSeq }, "the log was compacted past this follower; loading a stored snapshot");
    try {
      await this.follower?.stop();
      this.follower = undefined;
      this.files.flush();
      await this.loadStoredSnapshot(firstSeq);
      this.startFollowing();
    } catch (err) {
      this.fatal(err);
    }
  }

  private sawKeyWrite(write: LeaseWrite): void {
    if (this.lastKeyWrite && write.revision <= this.lastKeyWrite.revision) return;
    this.lastKeyWrite = { ...write, seenAt: Date.now() };
    this.keyGone = false;
  }

  /**
   * Tries to lead when the key is gone, or when its holder has not
   * rewritten it for `leaderTimeoutMs` (a dead, frozen or cut-off leader):
   * then by revision, so a leader that did renew meanwhile keeps it.
   */
  private async campaign(first = false): Promise<void> {
    if (this.role !== "follower" || this.campaigning) return;
    const seen = this.lastKeyWrite;
    const silent = seen !== undefined && Date.now() - seen.seenAt >= this.opts.leaderTimeoutMs;
    if (!first && seen !== undefined && !this.keyGone && !silent) return;
    this.campaigning = true;
    try {
      // The last proof that the previous leadership was alive, taken before
      // this node writes the key itself.
      const prevAliveAt = seen?.writtenAt;
      const sentAt = Date.now();
      const won =
        (first && (await this.lease.adoptPrevious())) ||
        (silent && !this.keyGone ? await this.lease.takeOver(seen.revision) : await this.lease.tryAcquire());
      if (!won) return;
      // A won lease whose write was a renewal already in flight (the key was
      // still ours after a step-down) was written before sentAt.
      await this.serialize(() => this.becomeLeader(prevAliveAt, Math.min(sentAt, this.lease.lastWriteSentAt ?? sentAt)));
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, "campaign failed");
    } finally {
      this.campaigning = false;
    }
  }

  /**
   * Role changes run one at a time. A step handles the failures it expects
   * (a take-over that cannot reach the log follows again); anything that
   * escapes one, such as the coordinator's stop() failing to apply an entry
   * in flight, leaves the role half changed (a "candidate" that neither
   * leads nor follows), so it crashes the node like any broken invariant
   * instead of being dropped without a word.
   */
  private serialize(step: () => Promise<void>): Promise<void> {
    const next = this.transition.then(step, step);
    this.transition = next.catch((err: unknown) => this.fatal(err));
    return next;
  }

  private async becomeLeader(prevAliveAt: number | undefined, leaseSentAt: number): Promise<void> {
    if (this.role !== "follower") return;
    const started = Date.now();
    this.role = "candidate";
    this.lastLeaseOkAt = leaseSentAt;
    this.leaseTimer = setInterval(() => void this.renewLease(), this.opts.leaderRenewMs);
    // An entry that fails to apply (a broken invariant, a full disk) leaves
    // the state and files part-way through it: crash, as a follower does,
    // rather than count it as a failed take-over and follow on from there.
    const applyOrCrash = (seq: number, entry: () => LogEntry): void => {
      try {
        this.applyEntry(seq, entry());
      } catch (err) {
        this.fatal(err);
      }
    };
    try {
      await this.follower?.stop();
      this.follower = undefined;
      for (let attempt = 1; ; attempt++) {
        // Catch up to the end of the log, then claim the next slot. If
        // someone appended in between, catch up again.
        const lastSeq = await this.log.lastSeq();
        await this.log.read(this.applied + 1, lastSeq, (seq, data) => applyOrCrash(seq, () => decodeEntry(seq, data)));
        const epoch = this.current.epoch + 1;
        const cmds: Command[] = [
          { type: "leader", node: this.nodeId, epoch, limits: this.limits, version: version(), ...(prevAliveAt === undefined ? {} : { prevAliveAt }) },
        ];
        // Version 4 (limits with maxEndedSessions): a node from before it refuses the log rather than apply it differently.
        const entry: LogEntry = { v: entryVersion(cmds), t: Date.now(), node: this.nodeId, epoch, cmds };
        try {
          const seq = await this.log.append(encodeEntry(entry), this.applied);
          applyOrCrash(seq, () => entry);
          break;
        } catch (err) {
          if (!isWrongLastSequence(err) || attempt >= 5) throw err;
          this.logger.info({ attempt }, "log moved while taking over; catching up again");
        }
      }
      if (this.role !== "candidate") return;
      this.coordinator = new Coordinator(this, this.opts.coordinator);
      this.coordinator.start();
      this.role = "leader";
      this.compactor.start();
      this.metrics.recordTakeover();
      this.logger.info(
        { epoch: this.current.epoch, appliedSeq: this.applied, takeoverMs: Date.now() - started, holders: this.current.locks.size },
        "became leader",
      );
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, "could not take over; following again");
      await this.leaveLeadership("take-over failed", true);
    }
  }

  private async renewLease(): Promise<void> {
    if (this.role !== "leader" && this.role !== "candidate") return;
    if (!this.leaseFresh() && this.role === "leader") {
      // The renewal in flight hangs (NATS slow or cut off): a follower may
      // take over any moment now, so stop taking requests at once.
      this.stepDown("leader lease is not fresh");
      return;
    }
    // One renewal at a time for the key as this node holds it: two would
    // race on the revision and the loser would step a healthy leader down
    // (the lease also joins a second one to the first). One still out for
    // an acquisition given up since (a step-down released the key and this
    // node won it anew) does not count: it would leave the new term with
    // no renewal at all, and when it settles it says nothing about the new
    // acquisition ("superseded").
    if (this.lease.renewalInFlight) return;
    const sentAt = Date.now();
    const outcome = await this.lease.renewOutcome().catch(() => "lost" as const);
    if (outcome === "superseded") return;
    if (outcome === "renewed") {
      // When the write was sent, not when this tick asked: a joined renewal
      // went out earlier, and freshness counts from the send.
      this.lastLeaseOkAt = Math.max(this.lastLeaseOkAt, this.lease.lastWriteSentAt ?? sentAt);
      return;
    }
    // Nobody could write the key (its stream is electing a leader, e.g.
    // right after a partition between nats-servers healed): keep leading
    // while the lease is fresh and try again at the next tick.
    if (outcome === "notWritten") return;
    this.stepDown("leader lease could not be renewed");
  }

  stepDown(reason: string): void {
    if (this.role !== "leader" && this.role !== "candidate") return;
    this.logger.warn({ reason, epoch: this.current.epoch, appliedSeq: this.applied }, "stepping down");
    this.metrics.recordStepDown();
    void this.serialize(() => this.leaveLeadership(reason, false));
  }

  private async leaveLeadership(reason: string, releaseLease: boolean): Promise<void> {
    if (this.role === "stopped" || this.role === "follower") return;
    if (this.leaseTimer) clearInterval(this.leaseTimer);
    this.leaseTimer = undefined;
    const coordinator = this.coordinator;
    this.coordinator = undefined;
    this.role = "candidate";
    this.compactor.stop();
    await coordinator?.stop(reason);
    if (releaseLease) await this.lease.release().catch(() => undefined);
    if (this.role === "candidate") this.startFollowing();
  }

  /**
   * Planned shutdown: stop serving, let the append in flight land, make the
   * files durable, and delete the leader key so another node takes over at
   * once instead of waiting for the lease to run out.
   */
  async stop(): Promise<void> {
    if (this.role === "stopped") return;
    await this.transition;
    const wasLeading = this.role === "leader" || this.role === "candidate";
    for (const timer of [this.leaseTimer, this.campaignTimer, this.checkpointTimer, this.statsTimer]) if (timer) clearInterval(timer);
    this.role = "stopped";
    this.compactor.stop();
    await this.coordinator?.stop("node is shutting down");
    this.coordinator = undefined;
    await this.follower?.stop();
    this.stopWatch?.();
    this.infoSub?.unsubscribe();
    this.files.flush();
    this.saveSnapshot();
    this.files.close();
    if (wasLeading) await this.lease.release().catch(() => undefined);
    this.logger.info({ appliedSeq: this.applied, wasLeading }, "stopped");
    await this.metricsServer?.close();
    await this.nc.drain().catch(() => undefined);
  }

  /** A broken invariant or an unusable log: crash; a restart rebuilds from the log. */
  private fatal(err: unknown): never {
    this.logger.error({ err: (err as Error).message, stack: (err as Error).stack }, "fatal: exiting");
    process.exit(70);
  }
}
