/**
 * The JetStream log: one stream, one subject, every state change in order.
 *
 * - `append(data, expectedLastSeq)` is a compare-and-swap on the log tail
 *   (the `Nats-Expected-Last-Sequence` header, and optionally
 *   `Nats-Expected-Last-Msg-Id`). A writer that is not at the tail gets
 *   `WrongLastSequenceError` and nothing is written; that, not the leader
 *   election, is what makes two would-be leaders harmless.
 * - `read(from, to)` and `follow(from)` hand entries over strictly in order,
 *   each one only after the previous handler resolved, without gaps or
 *   repeats, across NATS reconnects and server restarts.
 *
 * The stream is created with no limits (no max msgs/bytes/age), so it never
 * drops entries on its own, and with deny_delete so a stray admin command
 * cannot punch holes in it. The only way entries leave is `purgeBelow(seq)`:
 * the compactor drops a prefix that snapshots cover (replica/compactor.ts).
 * A reader that asks for entries below the stream's first sequence gets
 * LogPurgedError (the node then starts from a snapshot); a follower that
 * meets a hole in the middle fails loudly instead of skipping it.
 *
 * Streams created before compaction existed have deny_purge set, which the
 * server does not let an update clear: on those `canPurge` is false and the
 * log is never compacted.
 */
import { randomUUID } from "crypto";
import { headers, type NatsConnection } from "@nats-io/nats-core";
import {
  DeliverPolicy,
  DiscardPolicy,
  jetstream,
  JetStreamApiCodes,
  JetStreamApiError,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type Consumer,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type StreamConfig,
  type StreamInfo,
} from "@nats-io/jetstream";
import { type Logger, silentLogger } from "./logger";
import { LogPoller } from "./logPoller";
import { RequestMux } from "../protocol/requestMux";
import { connectionInboxPrefix } from "../protocol/subjects";

/** Stream metadata key holding a random id chosen when the stream was created. */
export const LOG_ID_METADATA_KEY = "dlm_log_id";

export interface LogStreamOptions {
  streamName: string;
  subject: string;
  /** Stream replicas: the size of the NATS cluster (1, 3 or 5). */
  replicas: number;
  logger?: Logger;
  /** How long open() keeps retrying while JetStream is not ready. Default 30 s. */
  readyTimeoutMs?: number;
  /** Timeout of one JetStream API request / publish ack. Default 5 s. */
  requestTimeoutMs?: number;
  /** Dedupe window for `append(..., { msgId })`. Default 2 min. */
  duplicateWindowMs?: number;
}

export interface AppendOptions {
  /**
   * Nats-Msg-Id: a retry with the same id inside the duplicate window gets
   * the original ack back instead of a second entry (or a wrong-last-seq
   * refusal), so a writer can retry an append whose ack was lost.
   */
  msgId?: string;
  /**
   * Nats-Expected-Last-Msg-Id: the entry is written only if the log's last
   * entry carries this message id (and the expected last sequence matches
   * too). A leader with several entries in flight sends each one after the
   * first with the previous one's id, so it can land only right behind its
   * own predecessor, never behind another leader's entry that happens to
   * sit at the expected sequence (coordinator.ts, flushLoop). JetStream
   * answers a retried duplicate (same msgId) before it checks this, so a
   * retry after a lost ack still gets its original sequence.
   */
  expectedLastMsgId?: string;
  timeoutMs?: number;
}

export type EntryHandler = (seq: number, data: Uint8Array) => void | Promise<void>;

export interface FollowOptions {
  /** Stop by itself after delivering this sequence (`done` then resolves). */
  until?: number;
  /** Messages per pull request. Default 128. */
  batch?: number;
  /**
   * Pull request expiry (ms, >= 1000). Also paces the client library's own
   * recovery after a reconnect. Default 5000.
   */
  expiresMs?: number;
  /**
   * Watchdog period (ms): when idle, the follower checks the stream's last
   * sequence; if entries exist that it has not received for two periods in a
   * row, it recreates its consumer. Default 5000.
   */
  stallCheckMs?: number;
  /** Called once if following ends on an unrecoverable error (the handler threw, a hole in the log, connection closed). */
  onError?: (err: Error) => void;
  /**
   * Poll for new entries instead of having each one pushed (logPoller.ts):
   * every `minPollMs` while entries come, backing off to `maxPollMs` when
   * the log is idle. Not with `until`.
   */
  poll?: { minPollMs: number; maxPollMs: number; batch?: number; maxBytes?: number };
}

export interface Follower {
  /** The next sequence the follower will hand over. */
  readonly nextSeq: number;
  /**
   * Settles when the follower has ended: resolves after stop() or after
   * `until` was delivered, rejects with the fatal error otherwise.
   */
  readonly done: Promise<void>;
  /**
   * Stops following; resolves once no handler runs and none will be called
   * again. Do not await it from inside the handler (it waits for the handler).
   */
  stop(): Promise<void>;
}

/**
 * The server refused an append because the log's tail was not the expected
 * one: its last sequence, or the message id of its last entry when the
 * writer named one. Nothing was written.
 */
export class WrongLastSequenceError extends Error {
  override readonly name = "WrongLastSequenceError";
  readonly expectedLastSeq: number;
  readonly expectedLastMsgId: string | undefined;
  constructor(expectedLastSeq: number, options?: { cause?: unknown; expectedLastMsgId?: string }) {
    const behind = options?.expectedLastMsgId === undefined ? "" : ` behind message ${options.expectedLastMsgId}`;
    super(`wrong last sequence: the log is not at ${expectedLastSeq}${behind}`, options);
    this.expectedLastSeq = expectedLastSeq;
    this.expectedLastMsgId = options?.expectedLastMsgId;
  }
}

/**
 * JetStream API code for "wrong last msg ID" (nats-server's
 * JSStreamWrongLastMsgIDErrF): the Nats-Expected-Last-Msg-Id refusal, which
 * @nats-io/jetstream 3.4 does not name.
 */
export const STREAM_WRONG_LAST_MSG_ID = 10070;

/** True for our WrongLastSequenceError and for the server's raw refusals (API codes 10071, 10164 and 10070). */
export function isWrongLastSequence(err: unknown): boolean {
  if (err instanceof WrongLastSequenceError) return true;
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence ||
      err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown ||
      err.code === STREAM_WRONG_LAST_MSG_ID)
  );
}

const pubAckDecoder = new TextDecoder();

/**
 * A JetStream publish acknowledgement: `{stream, seq, duplicate?}`, or
 * `{error: {code, err_code, description}}`, which becomes the
 * JetStreamApiError js.publish would have thrown (so isWrongLastSequence
 * and the log's callers see the same errors either way).
 */
export function parsePubAck(reply: Uint8Array): { stream: string; seq: number; duplicate: boolean } {
  let v: { stream?: unknown; seq?: unknown; duplicate?: unknown; error?: { code: number; err_code?: number; description?: string } };
  try {
    v = JSON.parse(pubAckDecoder.decode(reply)) as typeof v;
  } catch (e) {
    throw new Error(`append: unreadable publish acknowledgement: ${String(e)}`, { cause: e });
  }
  if (v.error) throw new JetStreamApiError({ code: v.error.code, err_code: v.error.err_code ?? 0, description: v.error.description ?? "" });
  if (typeof v.stream !== "string" || v.stream === "" || typeof v.seq !== "number") {
    throw new Error(`append: invalid publish acknowledgement ${pubAckDecoder.decode(reply)}`);
  }
  return { stream: v.stream, seq: v.seq, duplicate: v.duplicate === true };
}

/** The stream exists with a configuration this log cannot use; retrying will not help. */
export class LogConfigError extends Error {
  override readonly name = "LogConfigError";
}

/** The log lost entries or has a hole where a follower expected one: an invariant break. */
export class LogGapError extends Error {
  override readonly name: string = "LogGapError";
}

/**
 * The entries a reader asked for were compacted away: the stream now starts
 * at `firstSeq`. Not a broken invariant: the reader must start from a
 * snapshot at or past `firstSeq - 1`.
 */
export class LogPurgedError extends LogGapError {
  override readonly name = "LogPurgedError";
  constructor(
    readonly wantedSeq: number,
    readonly firstSeq: number,
  ) {
    super(`the log starts at ${firstSeq}; entries from ${wantedSeq} were compacted away`);
  }
}

/** The stream's extent and size. */
export interface LogExtent {
  firstSeq: number;
  lastSeq: number;
  messages: number;
  bytes: number;
}

const nanos = (ms: number): number => ms * 1_000_000;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function errInfo(err: unknown): { message: string; name?: string; code?: number | string } {
  if (err instanceof JetStreamApiError) return { name: err.name, message: err.message, code: err.code };
  if (err instanceof Error) {
    const code = (err as { code?: number | string }).code;
    return code === undefined ? { name: err.name, message: err.message } : { name: err.name, message: err.message, code };
  }
  return { message: String(err) };
}

function isStreamNotFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound;
}

/** JetStream API code for "stream name already in use" (someone else created it first). */
const STREAM_NAME_IN_USE = 10058;

export class LogStream {
  readonly streamName: string;
  readonly subject: string;
  /**
   * Stable id of this stream instance: the random id stored in the stream's
   * metadata at creation, or (for a stream created without one) its
   * `created` timestamp. A data directory whose checkpoint carries another
   * id was built from a different log.
   */
  readonly logId: string;
  /** False for a stream created with deny_purge (before compaction existed): it is never compacted. */
  readonly canPurge: boolean;

  private readonly nc: NatsConnection;
  private readonly js: JetStreamClient;
  private readonly jsm: JetStreamManager;
  private readonly log: Logger;
  private readonly requestTimeoutMs: number;
  /** The appends' request path (see append). */
  private readonly publisher: RequestMux;

  private constructor(
    nc: NatsConnection,
    js: JetStreamClient,
    jsm: JetStreamManager,
    info: StreamInfo,
    opts: LogStreamOptions,
  ) {
    this.nc = nc;
    this.js = js;
    this.jsm = jsm;
    this.streamName = opts.streamName;
    this.subject = opts.subject;
    this.log = opts.logger ?? silentLogger;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 5000;
    this.logId = info.config.metadata?.[LOG_ID_METADATA_KEY] ?? `created:${info.created}`;
    this.canPurge = info.config.deny_purge !== true;
    this.publisher = new RequestMux(nc, connectionInboxPrefix(nc));
  }

  /**
   * Opens the log, creating the stream if it does not exist. Retries for up
   * to `readyTimeoutMs` while JetStream is not ready (no meta leader yet,
   * "JetStream system temporarily unavailable", timeouts, no responders).
   * Throws LogConfigError at once if the existing stream has other subjects.
   */
  static async open(nc: NatsConnection, opts: LogStreamOptions): Promise<LogStream> {
    const log = opts.logger ?? silentLogger;
    const timeout = opts.requestTimeoutMs ?? 5000;
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
    if (!Number.isInteger(opts.replicas) || opts.replicas < 1) {
      throw new LogConfigError(`replicas must be a positive integer, got ${opts.replicas}`);
    }
    const config: Partial<StreamConfig> & { name: string } = {
      name: opts.streamName,
      subjects: [opts.subject],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      discard: DiscardPolicy.Old,
      num_replicas: opts.replicas,
      max_msgs: -1,
      max_bytes: -1,
      max_age: 0,
      max_msgs_per_subject: -1,
      max_msg_size: -1,
      max_consumers: -1,
      duplicate_window: nanos(opts.duplicateWindowMs ?? 120_000),
      allow_direct: true,
      deny_delete: true,
      deny_purge: false,
      metadata: { [LOG_ID_METADATA_KEY]: randomUUID() },
    };

    for (let attempt = 0; ; attempt++) {
      try {
        const jsm = await jetstreamManager(nc, { timeout });
        let info: StreamInfo;
        try {
          info = await jsm.streams.info(opts.streamName);
        } catch (err) {
          if (!isStreamNotFound(err)) throw err;
          try {
            info = await jsm.streams.add(config);
            log.info({ stream: opts.streamName, replicas: opts.replicas }, "log stream created");
          } catch (addErr) {
            // Another node created it between our info and add: use theirs.
            if (!(addErr instanceof JetStreamApiError && addErr.code === STREAM_NAME_IN_USE)) throw addErr;
            info = await jsm.streams.info(opts.streamName);
          }
        }
        LogStream.check(info, opts, log);
        info = await LogStream.waitForStreamLeader(jsm, info, deadline);
        const js = jetstream(nc, { timeout });
        const stream = new LogStream(nc, js, jsm, info, opts);
        log.info({ stream: opts.streamName, logId: stream.logId, lastSeq: info.state.last_seq }, "log stream opened");
        return stream;
      } catch (err) {
        if (err instanceof LogConfigError || nc.isClosed() || Date.now() >= deadline) throw err;
        log.warn({ err: errInfo(err), attempt }, "JetStream not ready for the log stream; retrying");
        await sleep(Math.min(250 * 2 ** Math.min(attempt, 4), 2000));
      }
    }
  }

  /**
   * A replicated stream that was just created has no leader for a moment,
   * and a publish to it meanwhile finds no responders (which the client
   * reports as "jetstream is not enabled"). Waits until its group has
   * elected one, so the first append does not fail.
   */
  private static async waitForStreamLeader(jsm: JetStreamManager, info: StreamInfo, deadline: number): Promise<StreamInfo> {
    while (info.config.num_replicas > 1 && !info.cluster?.leader) {
      if (Date.now() >= deadline) throw new Error(`log stream ${info.config.name} has no leader`);
      await sleep(100);
      info = await jsm.streams.info(info.config.name);
    }
    return info;
  }

  private static check(info: StreamInfo, opts: LogStreamOptions, log: Logger): void {
    const subjects = info.config.subjects ?? [];
    if (subjects.length !== 1 || subjects[0] !== opts.subject) {
      throw new LogConfigError(
        `stream ${opts.streamName} exists with subjects ${JSON.stringify(subjects)}, expected [${JSON.stringify(opts.subject)}]`,
      );
    }
    if (info.config.storage !== StorageType.File) {
      log.warn({ stream: opts.streamName, storage: info.config.storage }, "log stream is not on file storage");
    }
    if (info.config.num_replicas !== opts.replicas) {
      log.warn(
        { stream: opts.streamName, have: info.config.num_replicas, want: opts.replicas },
        "log stream has a different replica count than configured",
      );
    }
    if (info.config.max_msgs > 0 || info.config.max_bytes > 0 || info.config.max_age > 0) {
      throw new LogConfigError(`stream ${opts.streamName} has limits that would drop log entries`);
    }
  }

  /**
   * Appends one entry if and only if the log's last sequence is
   * `expectedLastSeq` (0 for an empty log) and, when `opts.expectedLastMsgId`
   * is given, the last entry carries that message id. Returns the new
   * entry's sequence (always expectedLastSeq + 1). Throws
   * WrongLastSequenceError when the server refuses (nothing was written);
   * any other error (timeout, disconnect) leaves it unknown whether the
   * entry was written.
   */
  async append(data: Uint8Array, expectedLastSeq: number, opts: AppendOptions = {}): Promise<number> {
    if (!Number.isSafeInteger(expectedLastSeq) || expectedLastSeq < 0) {
      throw new Error(`append: bad expected last sequence ${expectedLastSeq}`);
    }
    // The leader's every entry comes through here, so it is sent through the
    // request mux rather than js.publish(): nats.js's request builds a
    // RequestError, stack trace and all, when it settles every request (6%
    // of a leader's CPU under a lone client's commits). The answer is the
    // same PubAck, read the way js.publish reads it.
    const h = headers();
    h.set("Nats-Expected-Last-Sequence", String(expectedLastSeq));
    if (opts.msgId !== undefined) h.set("Nats-Msg-Id", opts.msgId);
    if (opts.expectedLastMsgId !== undefined) h.set("Nats-Expected-Last-Msg-Id", opts.expectedLastMsgId);
    let seq: number;
    try {
      const reply = await this.publisher.request(this.subject, data, opts.timeoutMs ?? this.requestTimeoutMs, h);
      const ack = parsePubAck(reply);
      if (ack.stream !== this.streamName) {
        throw new Error(`append: ack from stream ${ack.stream}, expected ${this.streamName}`);
      }
      seq = ack.seq;
    } catch (err) {
      if (isWrongLastSequence(err)) {
        throw new WrongLastSequenceError(expectedLastSeq, { cause: err, ...(opts.expectedLastMsgId !== undefined ? { expectedLastMsgId: opts.expectedLastMsgId } : {}) });
      }
      throw err;
    }
    if (seq !== expectedLastSeq + 1) {
      throw new Error(`append: server stored the entry at ${seq}, expected ${expectedLastSeq + 1}`);
    }
    return seq;
  }

  /**
   * The message id (Nats-Msg-Id) the entry at `seq` was appended with;
   * undefined when it had none or there is no such entry.
   */
  async msgIdAt(seq: number): Promise<string | undefined> {
    const stored = await this.jsm.streams.getMessage(this.streamName, { seq });
    return stored?.header?.get("Nats-Msg-Id") || undefined;
  }

  async info(): Promise<StreamInfo> {
    return this.jsm.streams.info(this.streamName);
  }

  /** The log's last sequence (0 when empty). */
  async lastSeq(): Promise<number> {
    return (await this.info()).state.last_seq;
  }

  /** The log's first sequence (1 once anything was written; 0 when empty). */
  async firstSeq(): Promise<number> {
    return (await this.info()).state.first_seq;
  }

  async extent(): Promise<LogExtent> {
    const state = (await this.info()).state;
    return { firstSeq: state.first_seq, lastSeq: state.last_seq, messages: state.messages, bytes: state.bytes };
  }

  /**
   * Drops every entry below `keepFromSeq` (the compaction). The caller must
   * know that snapshots cover them; see replica/compactionPolicy.ts.
   * Returns how many entries went.
   */
  async purgeBelow(keepFromSeq: number): Promise<number> {
    if (!Number.isSafeInteger(keepFromSeq) || keepFromSeq < 1) throw new RangeError(`purgeBelow: bad sequence ${keepFromSeq}`);
    if (!this.canPurge) throw new LogConfigError(`stream ${this.streamName} denies purges (created before compaction existed)`);
    const response = await this.jsm.streams.purge(this.streamName, { seq: keepFromSeq });
    return response.purged;
  }

  /**
   * Hands entries fromSeq..toSeq to `onEntry` in order (each after the
   * previous resolved), through one ordered consumer pulling in batches.
   * Throws RangeError if toSeq is past the log's end; does nothing if
   * toSeq < fromSeq.
   */
  async read(fromSeq: number, toSeq: number, onEntry: EntryHandler, opts: Omit<FollowOptions, "until" | "onError"> = {}): Promise<void> {
    if (!Number.isSafeInteger(fromSeq) || fromSeq < 1) throw new RangeError(`read: bad fromSeq ${fromSeq}`);
    if (!Number.isSafeInteger(toSeq)) throw new RangeError(`read: bad toSeq ${toSeq}`);
    if (toSeq < fromSeq) return;
    const state = (await this.info()).state;
    if (toSeq > state.last_seq) throw new RangeError(`read: toSeq ${toSeq} is past the log's last sequence ${state.last_seq}`);
    if (state.first_seq > fromSeq) throw new LogPurgedError(fromSeq, state.first_seq);
    await this.follow(fromSeq, onEntry, { ...opts, until: toSeq }).done;
  }

  /**
   * Follows the log from `fromSeq` on: every entry from there, now and
   * later, exactly once and in order. See Follower.
   */
  follow(fromSeq: number, onEntry: EntryHandler, opts: FollowOptions = {}): Follower {
    if (!Number.isSafeInteger(fromSeq) || fromSeq < 1) throw new RangeError(`follow: bad fromSeq ${fromSeq}`);
    if (opts.poll) {
      if (opts.until !== undefined) throw new RangeError("follow: poll does not take until");
      return new LogPoller(this, this.jsm, this.nc, this.log, fromSeq, onEntry, {
        ...opts.poll,
        ...(opts.stallCheckMs !== undefined ? { stallCheckMs: opts.stallCheckMs } : {}),
        ...(opts.onError ? { onError: opts.onError } : {}),
      });
    }
    return new LogFollower(this, this.js, this.nc, this.log, fromSeq, onEntry, opts);
  }
}

/**
 * A follower was handed `to` where `at` was expected. Restarting from `at`
 * cures a client/consumer glitch; if the stream no longer starts at or
 * before `at`, or the same gap comes back three times, the entries are not
 * there: fail instead of skipping them.
 */
export async function checkGap(stream: LogStream, log: Logger, at: number, to: number, count: number): Promise<void> {
  log.warn({ expected: at, got: to, count }, "log follower: gap in delivered sequences");
  let first: number | undefined;
  try {
    first = await stream.firstSeq();
  } catch {
    // unknown; rely on the repeat count
  }
  if (first !== undefined && first > at) throw new LogPurgedError(at, first);
  if (count >= 3) throw new LogGapError(`the log has a hole: entries ${at}..${to - 1} are missing`);
}

/**
 * LogPurgedError when the log no longer holds entry `next` (it starts after
 * it), else undefined. The stall checks need it: after a purge that left no
 * entry at all (retain-entries 0 on an idle log) a consumer from `next`
 * receives nothing, so no gap ever shows.
 */
export function purgedPast(extent: Pick<LogExtent, "firstSeq">, next: number): LogPurgedError | undefined {
  return extent.firstSeq > next ? new LogPurgedError(next, extent.firstSeq) : undefined;
}

/**
 * One ordered consumer at a time, recreated from `next` whenever anything
 * looks wrong. The client library's ordered consumer already recreates
 * itself when its delivery sequence skips or its consumer vanished (server
 * restart: ordered consumers are R1 in-memory consumers and do not survive
 * one); on top of that this class checks every stream sequence against the
 * one it expects and runs a stall watchdog, so that whatever the library
 * does, an entry is never skipped or handed over twice.
 */
class LogFollower implements Follower {
  readonly done: Promise<void>;

  private next: number;
  private stopping = false;
  private messages: ConsumerMessages | undefined;
  private inHandler = false;
  private lastProgress = Date.now();
  private stalls = 0;
  private watchdog: NodeJS.Timeout | undefined;
  private kicked: ConsumerMessages | undefined;
  private kickReason: string | undefined;
  /** Set by the stall watchdog when the entries from `next` were purged: run() ends with it. */
  private purged: LogPurgedError | undefined;
  private readonly batch: number;
  private readonly expiresMs: number;
  private readonly until: number | undefined;

  constructor(
    private readonly stream: LogStream,
    private readonly js: JetStreamClient,
    private readonly nc: NatsConnection,
    private readonly log: Logger,
    fromSeq: number,
    private readonly onEntry: EntryHandler,
    private readonly opts: FollowOptions,
  ) {
    this.next = fromSeq;
    this.batch = Math.max(1, opts.batch ?? 128);
    this.expiresMs = Math.max(1000, opts.expiresMs ?? 5000);
    this.until = opts.until;
    const stallCheckMs = opts.stallCheckMs ?? 5000;
    if (stallCheckMs > 0) {
      this.watchdog = setInterval(() => void this.checkStall(), stallCheckMs);
      this.watchdog.unref();
    }
    this.done = this.run().finally(() => {
      if (this.watchdog) clearInterval(this.watchdog);
    });
    // Reported through onError / `done`; never an unhandled rejection.
    this.done.catch((err: Error) => {
      this.log.error({ err: errInfo(err), stream: stream.streamName, next: this.next }, "log follower failed");
      opts.onError?.(err);
    });
  }

  get nextSeq(): number {
    return this.next;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.messages?.close();
    try {
      await this.done;
    } catch {
      // already reported through onError
    }
  }

  private finished(): boolean {
    return this.stopping || (this.until !== undefined && this.next > this.until);
  }

  private async run(): Promise<void> {
    let attempt = 0;
    let gap: { at: number; to: number; count: number } | undefined;
    // Set when the handler threw: that ends following (retrying the same
    // entry after a partial apply could apply it twice).
    let handlerFailed: { err: unknown } | undefined;
    while (!this.finished()) {
      if (this.nc.isClosed()) throw new Error("log follower: NATS connection closed");
      let consumer: Consumer | undefined;
      let messages: ConsumerMessages | undefined;
      let restartReason = "consumer ended";
      try {
        consumer = await this.js.consumers.get(this.stream.streamName, {
          deliver_policy: DeliverPolicy.StartSequence,
          opt_start_seq: this.next,
        });
        if (this.finished()) break;
        messages = await consumer.consume({ max_messages: this.batch, expires: this.expiresMs });
        this.messages = messages;
        // stop() during consume() found no messages to close: close them
        // now, or on an idle log the loop below waits for an entry that
        // never comes. (Not `break`: close() settles only once the
        // iterator is read up to its end, which the loop does.)
        if (this.finished()) void messages.close().catch(() => undefined);
        this.watchStatus(messages);
        this.lastProgress = Date.now();
        this.stalls = 0;
        for await (const m of messages) {
          if (this.finished()) break;
          const seq = m.seq;
          if (seq < this.next) {
            this.log.warn({ seq, next: this.next }, "log follower: skipping an entry it already handed over");
            continue;
          }
          if (seq > this.next) {
            gap = gap && gap.at === this.next && gap.to === seq ? { ...gap, count: gap.count + 1 } : { at: this.next, to: seq, count: 1 };
            await checkGap(this.stream, this.log, gap.at, gap.to, gap.count);
            restartReason = `gap: expected ${this.next}, got ${seq}`;
            break;
          }
          gap = undefined;
          attempt = 0;
          this.inHandler = true;
          try {
            await this.onEntry(seq, m.data);
          } catch (err) {
            handlerFailed = { err };
            throw err;
          } finally {
            this.inHandler = false;
          }
          this.next = seq + 1;
          this.lastProgress = Date.now();
          this.stalls = 0;
          if (this.finished()) break;
        }
      } catch (err) {
        if (err instanceof LogGapError || handlerFailed) throw err;
        if (this.nc.isClosed()) throw new Error("log follower: NATS connection closed", { cause: err });
        restartReason = `error: ${errInfo(err).message}`;
      } finally {
        this.messages = undefined;
        if (messages) await messages.close().catch(() => undefined);
        if (consumer) consumer.delete().catch(() => undefined);
      }
      if (this.finished()) break;
      if (this.purged) throw this.purged;
      if (messages !== undefined && this.kicked === messages) restartReason = this.kickReason ?? restartReason;
      this.log.warn({ stream: this.stream.streamName, next: this.next, reason: restartReason, attempt }, "log follower restarting its consumer");
      await sleep(Math.min(100 * 2 ** Math.min(attempt, 5), 2000));
      attempt++;
    }
  }

  /**
   * Watches the consumer's notifications. When the client library had to
   * recreate the ordered consumer, lost it, or stopped hearing from it, the
   * follower drops it and makes a fresh one from `next` itself: with
   * @nats-io/jetstream 3.4 a library-side reset keeps the old pull
   * accounting, and the new consumer then receives nothing until two idle
   * heartbeats are missed (observed: ~12 s stall after a server restart).
   */
  private watchStatus(messages: ConsumerMessages): void {
    void (async () => {
      try {
        for await (const s of messages.status()) {
          switch (s.type) {
            case "heartbeat":
            case "next":
            case "flow_control":
            case "discard":
              break;
            case "reset":
            case "ordered_consumer_recreated":
            case "consumer_not_found":
            case "consumer_deleted":
            case "stream_not_found":
            case "heartbeats_missed":
            case "no_responders":
              this.kick(messages, s.type);
              break;
            default:
              this.log.debug({ status: s, next: this.next }, "log follower: consumer status");
          }
        }
      } catch {
        // the status iterator ends with the messages iterator
      }
    })();
  }

  /** Ends this consumer's iterator; run() then recreates it from `next`. */
  private kick(messages: ConsumerMessages, reason: string): void {
    if (this.messages !== messages || this.kicked === messages) return;
    this.kicked = messages;
    this.kickReason = reason;
    void messages.close().catch(() => undefined);
  }

  /** If entries exist that have not arrived for two checks in a row, recreate the consumer. */
  private async checkStall(): Promise<void> {
    const messages = this.messages;
    if (!messages || this.inHandler || this.finished()) return;
    if (Date.now() - this.lastProgress < (this.opts.stallCheckMs ?? 5000)) return;
    let extent: LogExtent;
    try {
      extent = await this.stream.extent();
    } catch {
      return; // server unreachable: the consumer is not the problem
    }
    const last = extent.lastSeq;
    if (this.messages !== messages) {
      this.stalls = 0;
      return;
    }
    // Purged up to the very end: no entry is left to arrive past `next` and
    // show the purge as a gap, so waiting would wait for the next append.
    const purged = purgedPast(extent, this.next);
    if (purged) {
      this.purged = purged;
      this.kick(messages, purged.message);
      return;
    }
    if (last < this.next) {
      this.stalls = 0;
      return;
    }
    this.stalls++;
    if (this.stalls >= 2) {
      this.log.warn({ next: this.next, last }, "log follower stalled; recreating its consumer");
      this.stalls = 0;
      this.kick(messages, `stalled below last sequence ${last}`);
    }
  }
}
