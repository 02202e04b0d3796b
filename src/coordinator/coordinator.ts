/**
 * The leader's loop. It exists only while its node leads, and does four
 * things:
 *
 * 1. Serves the request subjects, the plain one and every namespace's (not
 *    a queue group: see Names.requestSubject; a leader that is not fresh
 *    answers NOT_LEADER): validates each request (a session is only acted
 *    on from its own namespace's subject), answers duplicates from the
 *    replicated session table, and turns new requests into commands.
 * 2. Group commit, pipelined: commands wait in a queue and go out in the
 *    next entry; up to `maxEntriesInFlight` entries are appended at once,
 *    entry N+k with expected last sequence N+k-1 and, after the first, the
 *    previous in-flight entry's message id as the expected last message
 *    id, so an entry lands only right after this leader's previous one and
 *    nobody else can write in between.
 * 3. After JetStream acknowledges an entry, and after every earlier entry
 *    was applied, applies it through the node (state machine and files)
 *    and only then carries out the effects: replies to the waiting request
 *    messages, notifications to clients.
 * 4. Runs the clocks: lease and wait deadlines from the state, session
 *    liveness from what it heard, each expiry logged as a command.
 *
 * A refused append (someone else appended) or an unreachable log ends its
 * leadership at once; from then on it answers nothing but NOT_LEADER. A log
 * whose stream is electing a leader (no responders) is waited for while the
 * lease is fresh, for up to noStreamLeaderWaitMs.
 */
import type { Msg, NatsConnection, Subscription } from "@nats-io/nats-core";
import type { Logger } from "../log/logger";
import { isWrongLastSequence, type AppendOptions, type LogStream } from "../log/logStream";
import { fileIndex } from "../protocol/files";
import { MAX_REQUEST_BYTES, messageBudgetBytes, type Limits } from "../protocol/limits";
import type { LoggedRequest, Notification, Reply } from "../protocol/messages";
import { namespaceMismatch, type Names } from "../protocol/subjects";
import { parseRequest } from "../protocol/validate";
import { classify, dueCommands, endedSessionReply, errorReply, okReply } from "../state";
import type { Command, Effect, LogEntry, State } from "../state";
import { assert, InvariantError } from "../util/assert";
import { errorMessage } from "../util/errorMessage";
import { NoRespondersError } from "../protocol/transportErrors";
import { readPageBytes, readReply } from "../protocol/filePages";
import { COMMAND_OVERHEAD_BYTES, DEFAULT_MAX_ENTRY_BYTES, fitEntry, maxEntryBytesFor, trimDigestToFit } from "./entryBudget";
import { toCommand } from "./requestCommands";
import { fittedStatusReply } from "./statusAnswer";
import { shouldHold } from "./holdPolicy";
import { SessionClock, type SessionClockOptions } from "./sessionClock";
import { takeoverCredits } from "../state/sessionLiveness";
import type { NodeMetrics, RequestOp } from "../metrics/nodeMetrics";

/** What the coordinator needs from the node it runs in. */
export interface CoordinatorHost {
  readonly nodeId: string;
  readonly nc: NatsConnection;
  readonly names: Names;
  readonly log: LogStream;
  readonly logger: Logger;
  readonly metrics: NodeMetrics;
  readonly limits: Limits;
  state(): State;
  appliedSeq(): number;
  /** Applies an acknowledged entry to the state and the files; returns the effects. */
  applyEntry(seq: number, entry: LogEntry): Effect[];
  /** Committed size of a file on this node. */
  fileLength(index: number): number;
  /** Committed bytes of a file on this node from `offset`, at most `maxBytes` of them. */
  readFile(index: number, offset: number, maxBytes: number): Buffer;
  /** True while this node's leader lease is fresh by its own clock. */
  leaseFresh(): boolean;
  /** Called when the coordinator must stop leading (log refused or unreachable). */
  stepDown(reason: string): void;
}

export interface CoordinatorOptions extends SessionClockOptions {
  /** Most commands in one log entry. */
  maxBatchCommands: number;
  /**
   * Most bytes in one log entry; the NATS server's max_payload less
   * MESSAGE_HEADROOM_BYTES caps it whatever it is set to (entryBudget.ts).
   */
  maxEntryBytes: number;
  /** How often deadlines and session liveness are checked. */
  tickMs: number;
  /**
   * Attempts for one append whose outcome is unknown (timeout), deduplicated
   * by message id. An append that found no stream leader (no responders) is
   * not counted while it waits (noStreamLeaderWaitMs).
   */
  appendAttempts: number;
  /**
   * How long one append that keeps finding no stream leader (no responders)
   * is retried, after pauses, while the lease is fresh, before it counts as
   * failed. Long enough for an election after a leader stepped down or a
   * partition healed (milliseconds); shorter than an election after the
   * stream leader's server died (4-9 s of raft timeouts), where stepping
   * down tells the clients NOT_LEADER, and they back off as unavailable,
   * instead of holding their requests until those time out.
   */
  noStreamLeaderWaitMs: number;
  /**
   * Log entries appended but not yet acknowledged at once (pipelining). 1
   * is the old behaviour: the next entry waits for the previous ack.
   */
  maxEntriesInFlight: number;
  /** Requests waiting for the next entry; past this, new requests get LIMIT_EXCEEDED (back-pressure). */
  maxQueuedCommands: number;
  /** Largest request parsed, in bytes; larger ones are TOO_LARGE without parsing. */
  maxRequestBytes: number;
  /**
   * How long commands that can only join a lock's queue may wait for
   * another command to share their log entry (holdPolicy.ts); 0 sends
   * every entry as soon as the pipeline allows.
   */
  holdQueuedMs: number;
  /** Locks and waiters per lock listed in a status answer, so it fits in one NATS message (the rest are counted). */
  statusMaxLocks: number;
  statusMaxWaiters: number;
}

export const DEFAULT_COORDINATOR_OPTIONS: CoordinatorOptions = {
  maxBatchCommands: 512,
  maxEntryBytes: DEFAULT_MAX_ENTRY_BYTES,
  tickMs: 50,
  appendAttempts: 3,
  noStreamLeaderWaitMs: 1000,
  maxEntriesInFlight: 8,
  maxQueuedCommands: 10_000,
  maxRequestBytes: MAX_REQUEST_BYTES,
  holdQueuedMs: 2,
  statusMaxLocks: 100,
  statusMaxWaiters: 50,
  sessionDigestEveryMs: 0,
  sessionQuietAfterMs: 0,
  // About 180 KB with 21-character ids, 560 KB with the longest namespaced
  // ones: under NATS's default 1 MB message, with room for the entry's other commands.
  maxDigestSessions: 5_000,
};

const encoder = new TextEncoder();

/**
 * Pauses between appends that found no stream leader (no responders): the
 * first, then doubling up to the last. They keep the retries few while the
 * stream elects a leader and lose at most a quarter second once it has.
 */
const NO_STREAM_LEADER_FIRST_PAUSE_MS = 50;
const NO_STREAM_LEADER_MAX_PAUSE_MS = 250;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export class Coordinator {
  private readonly subscriptions: Subscription[] = [];
  private ticker: NodeJS.Timeout | undefined;
  private readonly queue: Command[] = [];
  /** When the oldest command in the queue was queued (performance.now()). */
  private queuedSince = 0;
  /** Wakes the flush loop when a held queue has waited its `holdQueuedMs`. */
  private holdTimer: NodeJS.Timeout | undefined;
  /** Request messages waiting for the entry that answers them, by "client/seq". */
  private readonly waiting = new Map<string, Msg[]>();
  /** Expiry commands queued or in flight, so a slow append does not log them twice. */
  private readonly timersInFlight = new Set<string>();
  /**
   * When each client was last heard from; volatile, credited from the
   * log's silence digest by every new leader (sessionLiveness.ts). Kept in the order clients were last heard (hearing one moves it
   * to the end), so the tick finds the silent ones at the front and stops at
   * the first live one instead of visiting 100,000 sessions every 50 ms.
   */
  private readonly lastHeard = new Map<string, number>();
  private lastSweepAt = 0;
  private flushing: Promise<void> | undefined;
  /**
   * Entries appended to the log and not yet applied, oldest first. Entry i
   * was appended with expected last sequence appliedSeq() + i and, for
   * i > 0, with entry i-1's message id as the expected last message id, so
   * each can land only right behind the one before it.
   */
  private readonly inFlight: Array<{ entry: LogEntry; msgId: string; seq: Promise<number | undefined> }> = [];
  /** Whether this leader has warned that a session digest had to be cut to fit an entry (it warns once). */
  private warnedDigestCut = false;
  /** Set once an append failed: this coordinator appends nothing more. */
  private appendFailed = false;
  private stopped = false;
  /** When each request message arrived and what it asked, for the latency histogram at its reply. */
  private readonly arrivals = new WeakMap<Msg, { op: RequestOp; startedMs: number }>();
  /** Silence digests and the pings that wait for the log (session liveness across takeovers). */
  private readonly sessionClock: SessionClock;

  constructor(
    private readonly host: CoordinatorHost,
    private readonly opts: CoordinatorOptions = DEFAULT_COORDINATOR_OPTIONS,
  ) {
    this.sessionClock = new SessionClock(opts);
  }

  start(): void {
    const { nc, names } = this.host;
    // Not a queue group: see Names.requestSubject. A second subscriber is
    // always a leader that is no longer fresh, and it answers NOT_LEADER.
    for (const subject of [names.requestSubject, names.namespaceRequestWildcard]) {
      this.subscriptions.push(
        nc.subscribe(subject, {
          callback: (err, msg) => {
            if (err) {
              this.host.logger.warn({ err: err.message, subject }, "request subscription error");
              return;
            }
            try {
              this.onRequest(msg);
            } catch (err) {
              this.requestFailed(msg, err);
            }
          },
        }),
      );
    }
    // Each session is credited with the last time the log shows it heard,
    // plus the time nobody led since (without a digest in the log: the
    // takeover). Oldest first, as the tick expects.
    this.lastSweepAt = Date.now();
    for (const [client, heardAt] of takeoverCredits(this.host.state(), this.lastSweepAt)) this.lastHeard.set(client, heardAt);
    this.ticker = setInterval(() => this.tick(), this.opts.tickMs);
    const budget = this.maxEntryBytes();
    if (budget < this.opts.maxRequestBytes + COMMAND_OVERHEAD_BYTES) {
      this.host.logger.warn(
        { maxEntryBytes: budget, maxRequestBytes: this.opts.maxRequestBytes, serverMaxPayload: nc.info?.max_payload },
        "a log entry is smaller than the largest request: requests near maxRequestBytes will be refused TOO_LARGE (raise the NATS server's max_payload or lower --max-request-bytes)",
      );
    }
  }

  /**
   * Stops serving: no new requests are taken, the appends in flight settle
   * (their entries are applied and answered in order while they landed),
   * and everything still queued is refused with NOT_LEADER, so no client is
   * told a success that is not in the log.
   */
  async stop(reason: string): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.ticker) clearInterval(this.ticker);
    if (this.holdTimer) clearTimeout(this.holdTimer);
    // Drain rather than unsubscribe: requests already delivered to this
    // process are answered NOT_LEADER (clients retry at once) instead of
    // being dropped (clients would wait out a whole attempt timeout).
    await Promise.all(this.subscriptions.map((sub) => sub.drain().catch(() => undefined)));
    await this.flushing;
    this.queue.length = 0;
    this.timersInFlight.clear();
    for (const msgs of this.waiting.values()) {
      for (const msg of msgs) this.respond(msg, errorReply("NOT_LEADER", `this node stopped leading: ${reason}`));
    }
    this.waiting.clear();
    for (const msg of this.sessionClock.drainHeld()) this.respond(msg, errorReply("NOT_LEADER", `this node stopped leading: ${reason}`));
  }

  private onRequest(msg: Msg): void {
    const startedMs = performance.now();
    this.arrivals.set(msg, { op: "unparsed", startedMs });
    if (this.stopped) return this.respond(msg, errorReply("NOT_LEADER", "this node is not the leader"));
    const parsed = parseRequest(msg.data, this.host.limits, this.opts.maxRequestBytes);
    if (!parsed.ok) {
      this.arrivals.set(msg, { op: "invalid", startedMs });
      return this.respond(msg, parsed.reply);
    }
    this.arrivals.set(msg, { op: parsed.request.op, startedMs });
    // Before anything is done for the session it names, not even hearing
    // from it: a client user may only act under its own namespace's sessions.
    const mismatch = namespaceMismatch(this.host.names, msg.subject, "client" in parsed.request ? parsed.request.client : undefined);
    if (mismatch) return this.respond(msg, errorReply("BAD_REQUEST", mismatch));
    // Everything but a new logged request is answered from this node's
    // state without the log (cached replies, "no such session", reads). A
    // leader paused past its lease must not answer from a stale picture (a
    // client told SESSION_EXPIRED by a stale leader would drop live leases),
    // so unless the lease is fresh by its own clock it answers NOT_LEADER.
    if (!this.host.leaseFresh()) return this.respond(msg, errorReply("NOT_LEADER", "leader lease is not fresh"));
    const request = parsed.request;
    const state = this.host.state();
    // Only sessions (and hellos that may create one) are tracked, so
    // requests under made-up client ids cannot grow the table.
    if ("client" in request && (request.op === "hello" || state.sessions.has(request.client))) {
      const now = Date.now();
      this.heard(request.client, now);
      const note = this.sessionClock.heardCommand(state, request.client, now);
      if (note) this.enqueue(note);
    }
    switch (request.op) {
      case "status":
      case "read":
      case "ping": {
        if (request.op === "status") {
          const caps = { maxLocks: this.opts.statusMaxLocks, maxWaiters: this.opts.statusMaxWaiters };
          return this.respond(msg, fittedStatusReply(state, this.host.appliedSeq(), caps, this.maxAnswerBytes()));
        }
        if (request.op === "ping") {
          if (state.sessions.has(request.client) && this.sessionClock.holdPing(request.client, msg)) return;
          return this.respond(msg, state.sessions.has(request.client) ? okReply("Pong") : errorReply("SESSION_EXPIRED"));
        }
        const index = fileIndex(request.file);
        assert(index !== undefined, "validated file name has no index");
        const pageBytes = readPageBytes(this.host.nc.info?.max_payload);
        const read = (start: number, maxBytes: number): Buffer => this.host.readFile(index, start, maxBytes);
        return this.respond(msg, readReply(request.file, this.host.fileLength(index), request.offset, pageBytes, read));
      }
      default:
        return this.onLoggedRequest(msg, request, state);
    }
  }

  private onLoggedRequest(msg: Msg, request: LoggedRequest, state: State): void {
    const known = classify(state, request.client, request.seq);
    switch (known.kind) {
      case "noSession":
        if (request.op === "goodbye") return this.respond(msg, okReply("Disconnected!"));
        if (request.op !== "hello") return this.respond(msg, errorReply("SESSION_EXPIRED"));
        break;
      case "ended":
        // The machine would refuse it as well (a late copy of a dead
        // session's hello cannot revive it): answer without logging.
        if (request.op === "goodbye") return this.respond(msg, okReply("Disconnected!"));
        return this.respond(msg, endedSessionReply());
      case "stale":
        return this.respond(msg, errorReply("STALE_REQUEST", `seq ${request.seq} was already acknowledged by this client`));
      case "cached":
        this.host.metrics.recordDuplicate();
        return this.respond(msg, known.reply);
      case "pending":
        this.host.metrics.recordDuplicate();
        return this.respond(msg, okReply("Queued", { status: "queued" }));
      case "new":
        break;
    }
    const key = `${request.client}/${request.seq}`;
    const waiting = this.waiting.get(key);
    if (waiting) {
      // The same request is already on its way into the log: answer both
      // copies from the one entry.
      this.host.metrics.recordDuplicate();
      waiting.push(msg);
      return;
    }
    if (this.queue.length >= this.opts.maxQueuedCommands) {
      return this.respond(msg, errorReply("LIMIT_EXCEEDED", `leader has ${this.queue.length} requests queued for the log; retry later`));
    }
    this.waiting.set(key, [msg]);
    this.enqueue(toCommand(request, this.host.limits));
  }

  private tick(): void {
    if (this.stopped) return;
    const now = Date.now();
    const state = this.host.state();
    const due = dueCommands(state, now);
    const timeoutMs = state.limits.sessionTimeoutMs;
    for (const [client, heard] of this.lastHeard) {
      if (now - heard <= timeoutMs) break;
      // Once logged, the expiry ends the session whatever happens next, so
      // the entry is done with; a client heard again meanwhile is added back
      // at the end and dropped later if its session is gone.
      this.lastHeard.delete(client);
      if (state.sessions.has(client)) {
        due.push({ type: "expireSession", client });
        this.sessionClock.expiring.set(client, heard);
      }
    }
    if (now - this.lastSweepAt >= timeoutMs) {
      // Safety net, once per timeout: a session whose hello was heard so long
      // before it was applied that its entry was already dropped above would
      // otherwise never expire.
      this.lastSweepAt = now;
      for (const client of state.sessions.keys()) if (!this.lastHeard.has(client)) this.lastHeard.set(client, now);
    }
    for (const command of due) {
      const key = JSON.stringify(command);
      if (this.timersInFlight.has(key)) continue;
      this.timersInFlight.add(key);
      this.enqueue(command);
    }
    // The digest goes into the next entry built; with nothing else to log, that entry is the digest alone.
    if (this.sessionClock.digestDue(state, now)) this.kick();
  }

  private heard(client: string, now: number): void {
    this.lastHeard.delete(client);
    this.lastHeard.set(client, now);
  }

  private enqueue(command: Command): void {
    if (this.queue.length === 0) this.queuedSince = performance.now();
    this.queue.push(command);
    this.kick();
  }

  private kick(): void {
    if (!this.flushing) {
      this.flushing = this.flushLoop().finally(() => {
        this.flushing = undefined;
      });
    }
  }

  /**
   * Group commit, pipelined: up to maxEntriesInFlight entries are appended
   * at once, each one only when it is at least as large as the entry sent
   * before it, and whatever arrives meanwhile rides in the next entry.
   * Acknowledgements are taken strictly in log order: an entry is applied,
   * and its requests answered, only after every earlier one was.
   *
   * If an append fails, this leader stops at that entry: nothing after it is
   * applied or answered here, even if it landed (its clients learn the
   * outcome by retrying with the same seq). An entry behind a refused one
   * does not land after another leader's entries: the expected sequence
   * alone would let it (after a stall, entry k's expected sequence can be
   * the slot right behind the new leader's `leader` entry, and the new
   * leader's next append would then be refused although nobody else
   * leads), so each entry after the first also names its predecessor's
   * message id, which is the log's last only if the predecessor landed
   * right there. The state machine still treats an entry from a deposed
   * epoch as void, should one ever land.
   */
  private async flushLoop(): Promise<void> {
    // Let requests that arrived in the same tick of the event loop join.
    await new Promise<void>((resolve) => setImmediate(resolve));
    // Once stopped, no new entry goes out, but those already out are still
    // applied and answered in order if they landed (see stop()).
    while (!this.appendFailed) {
      while (
        (this.queue.length > 0 || this.sessionClock.digestDue(this.host.state(), Date.now())) &&
        this.inFlight.length < this.opts.maxEntriesInFlight &&
        !this.stopped
      ) {
        // With the log fsyncing every message, each entry costs one disk
        // write whatever its size: an entry sent early only helps if it is
        // no smaller than the one before it, else pipelining would trade
        // one big batch for many small ones and lower throughput.
        const last = this.inFlight[this.inFlight.length - 1];
        if (last && this.queue.length < Math.min(last.entry.cmds.length, this.opts.maxBatchCommands)) break;
        const t = Date.now();
        if (this.holdForCompany(t)) break;
        const digest = this.sessionClock.takeDigest(this.host.state(), this.lastHeard, t);
        const oldestQueuedAt = this.queuedSince;
        const commands = this.queue.splice(0, this.opts.maxBatchCommands - (digest ? 1 : 0));
        if (digest) commands.unshift(digest);
        const header = { t, node: this.host.nodeId, epoch: this.host.state().epoch };
        const fitted = fitEntry(header, commands, this.maxEntryBytes());
        if (fitted.taken < commands.length) {
          // What does not fit waits, in order, at the head of the queue for
          // the next entry; it has waited already, so it is not held again.
          this.queue.unshift(...commands.slice(Math.max(1, fitted.taken)));
          this.queuedSince = oldestQueuedAt;
          if (fitted.taken === 0) {
            this.oversized(header, commands[0] as Command);
            continue;
          }
        } else if (this.queue.length > 0) {
          this.queuedSince = performance.now();
        }
        const { entry, bytes } = fitted;
        const expected = this.host.appliedSeq() + this.inFlight.length;
        // The message id makes a retry after a lost ack idempotent: JetStream
        // answers a duplicate with the original sequence instead of a second
        // entry, and it does so before it checks the expectations.
        const msgId = `${this.host.nodeId}:${entry.epoch}:${expected + 1}`;
        const after = this.inFlight[this.inFlight.length - 1]?.msgId;
        this.inFlight.push({ entry, msgId, seq: this.appendEntry(entry, bytes, expected, { msgId, ...(after !== undefined ? { expectedLastMsgId: after } : {}) }) });
      }
      const head = this.inFlight[0];
      if (!head) return;
      const seq = await head.seq;
      if (seq === undefined) break;
      this.inFlight.shift();
      const effects = this.host.applyEntry(seq, head.entry);
      this.carryOut(effects, head.entry.cmds);
      // Let requests that arrived meanwhile join the next entry rather than
      // each going out alone while the pipeline has room.
      if (this.queue.length > 0 && this.inFlight.length > 0) await new Promise<void>((resolve) => setImmediate(resolve));
    }
    // An append failed: wait for the appends still out (they never reject),
    // so stop() returns only when nothing of this leader is in the air.
    const rest = this.inFlight.splice(0);
    await Promise.all(rest.map((f) => f.seq));
  }

  /**
   * True when the queued commands can only join queues and may wait for
   * another command to share their entry (holdPolicy.ts); then a timer
   * wakes the loop when the oldest has waited `holdQueuedMs`. A due
   * session digest is never held.
   */
  private holdForCompany(nowMs: number): boolean {
    const { holdQueuedMs, maxBatchCommands } = this.opts;
    if (this.sessionClock.digestDue(this.host.state(), nowMs)) return false;
    const now = performance.now();
    if (!shouldHold(this.host.state(), this.queue, this.queuedSince, now, holdQueuedMs, maxBatchCommands)) return false;
    if (!this.holdTimer) {
      this.holdTimer = setTimeout(() => {
        this.holdTimer = undefined;
        this.kick();
      }, Math.max(0, this.queuedSince + holdQueuedMs - now));
    }
    return true;
  }

  /** The largest answer the connected server carries, less the headroom. */
  private maxAnswerBytes(): number {
    return messageBudgetBytes(this.host.nc.info?.max_payload);
  }

  /** The byte budget of the next entry: the setting, capped by what the connected server accepts in one message. */
  private maxEntryBytes(): number {
    return maxEntryBytesFor(this.opts.maxEntryBytes, this.host.nc.info?.max_payload);
  }

  /**
   * A command that does not fit an entry even alone. A session digest is
   * cut to the sessions that fit and goes first in the next entry (a
   * session it leaves out is expired later by a new leader, never sooner:
   * §5). A request gets TOO_LARGE (nothing was logged, so its retry gets
   * the same answer). A command of the leader's own is never this large.
   */
  private oversized(header: Omit<LogEntry, "v" | "cmds">, command: Command): void {
    const budget = this.maxEntryBytes();
    if (command.type === "sessionDigest") {
      const trimmed = trimDigestToFit(header, command, budget);
      assert(trimmed !== undefined, () => `an empty session digest does not fit a log entry of ${budget} bytes`);
      const log = this.warnedDigestCut ? this.host.logger.debug.bind(this.host.logger) : this.host.logger.warn.bind(this.host.logger);
      log({ sessions: command.quiet.length, listed: trimmed.quiet.length, maxEntryBytes: budget }, "session digest cut to fit one log entry (lower --max-digest-sessions)");
      this.warnedDigestCut = true;
      this.queue.unshift(trimmed);
      return;
    }
    assert("seq" in command && "ack" in command, () => `a ${command.type} command of the leader's own does not fit a log entry of ${budget} bytes`);
    const key = `${command.client}/${command.seq}`;
    const message = `request does not fit one log entry of ${budget} bytes (the NATS server's max_payload, or --max-entry-bytes)`;
    this.host.logger.warn({ client: command.client, seq: command.seq, type: command.type, maxEntryBytes: budget }, "request too large for a log entry; refused");
    for (const msg of this.waiting.get(key) ?? []) this.respond(msg, errorReply("TOO_LARGE", message));
    this.waiting.delete(key);
  }

  /**
   * Whether an earlier attempt of this append landed at `seq` after all
   * (its acknowledgement was lost), so that the retry's refusal is its own
   * entry in the way. nats-server 2.10 answers such a retry with the
   * original sequence, because it checks the message id first; from 2.12,
   * a stream on a single server checks the expected last sequence first and
   * refuses the retry, which deposed a leader that had lost nothing.
   */
  private async landedEarlier(seq: number, msgId: string | undefined): Promise<boolean> {
    if (msgId === undefined) return false;
    try {
      return (await this.host.log.msgIdAt(seq)) === msgId;
    } catch (err) {
      this.host.logger.warn({ err: errorMessage(err), seq }, "could not read the log entry an append may have written; stepping down");
      return false;
    }
  }

  private async appendEntry(entry: LogEntry, bytes: Uint8Array, expected: number, appendOpts: AppendOptions): Promise<number | undefined> {
    // performance.now(), not Date.now(): an append takes a fraction of a
    // millisecond on a local disk, and whole milliseconds would put every
    // one of them in the histogram's 0 or 1 ms bucket.
    const started = performance.now();
    let attempt = 1;
    let pauseMs = NO_STREAM_LEADER_FIRST_PAUSE_MS;
    let unledSince: number | undefined;
    for (;;) {
      try {
        const seq = await this.host.log.append(bytes, expected, appendOpts);
        assert(seq === expected + 1, () => `log appended at ${seq}, expected ${expected + 1}`);
        this.host.metrics.recordAppend(entry.cmds.length, bytes.length, performance.now() - started);
        return seq;
      } catch (err) {
        if (this.appendFailed) return undefined;
        if (isWrongLastSequence(err) && attempt > 1 && (await this.landedEarlier(expected + 1, appendOpts.msgId))) {
          this.host.metrics.recordAppend(entry.cmds.length, bytes.length, performance.now() - started);
          return expected + 1;
        }
        if (isWrongLastSequence(err)) {
          this.appendFailed = true;
          this.host.logger.warn({ expected }, "log tail moved: another leader appended; stepping down");
          this.host.stepDown("another leader appended to the log");
          return undefined;
        }
        if (err instanceof NoRespondersError) {
          // Nobody took the append: the log's stream is electing a leader
          // (its leader stepped down, a partition between nats-servers
          // healed, a server died). Nothing was written and nobody else can
          // write either, so this is not a failed attempt: retrying at once
          // used the three attempts within a millisecond and deposed the
          // leader at every stream-leader election. Wait a little and try
          // again while this node's lease is fresh, as the lease renewal
          // does when its bucket has no leader ("notWritten", node.ts), but
          // only for noStreamLeaderWaitMs: past that the election is a long
          // one, and the clients waiting here are better told NOT_LEADER.
          const first = unledSince === undefined;
          unledSince ??= performance.now();
          const waitedMs = performance.now() - unledSince;
          if (!this.stopped && this.host.leaseFresh() && waitedMs < this.opts.noStreamLeaderWaitMs) {
            const log = first ? this.host.logger.warn.bind(this.host.logger) : this.host.logger.debug.bind(this.host.logger);
            log({ err: errorMessage(err), expected, pauseMs }, "log append found no stream leader; retrying");
            await sleep(pauseMs);
            pauseMs = Math.min(pauseMs * 2, NO_STREAM_LEADER_MAX_PAUSE_MS);
            continue;
          }
        }
        if (attempt >= this.opts.appendAttempts || this.stopped) {
          this.appendFailed = true;
          this.host.logger.error({ err: (err as Error).message, attempt }, "log append failed; stepping down");
          this.host.stepDown(`log append failed: ${(err as Error).message}`);
          return undefined;
        }
        this.host.logger.warn({ err: (err as Error).message, attempt }, "log append failed; retrying");
        attempt++;
      }
    }
  }

  /**
   * Log lines that answer "why did the lock move?": every grant that ended
   * without a release and every wait that ended without a grant. Grants
   * from the queue are frequent, so they are debug.
   */
  private explain(client: string, n: Notification): void {
    const log = this.host.logger;
    if (n.event === "lost") log.info({ client, lock: n.lock, token: n.token, reason: n.error }, "grant ended without release; staged appends discarded");
    else if (n.event === "waitEnded") log.info({ client, lock: n.lock, seq: n.seq, reason: n.error }, "wait ended without a grant");
    else log.debug({ client, lock: n.lease.lock, token: n.lease.token, seq: n.seq }, "granted from the queue");
  }

  private carryOut(effects: Effect[], commands: Command[]): void {
    const { nc, names } = this.host;
    for (const effect of effects) {
      if (effect.type === "reply") {
        const key = `${effect.client}/${effect.seq}`;
        const msgs = this.waiting.get(key);
        if (msgs) {
          for (const msg of msgs) this.respond(msg, effect.reply);
          this.waiting.delete(key);
        }
      } else if (effect.type === "notify") {
        this.host.metrics.countNotification(effect.notification);
        this.explain(effect.client, effect.notification);
        nc.publish(names.notifySubject(effect.client), encoder.encode(JSON.stringify(effect.notification)));
      }
    }
    for (const command of commands) {
      if (!("seq" in command) || !("ack" in command)) {
        this.host.metrics.countCommitted(command);
        this.timersInFlight.delete(JSON.stringify(command));
        const pings = this.sessionClock.applied(command);
        if (pings.length > 0 && command.type === "sessionHeard") {
          const answer = this.host.state().sessions.has(command.client) ? okReply("Pong") : errorReply("SESSION_EXPIRED");
          for (const msg of pings) this.respond(msg, answer);
        }
        continue;
      }
      // A command the machine dropped as an old duplicate produced no reply.
      const key = `${command.client}/${command.seq}`;
      const msgs = this.waiting.get(key);
      if (!msgs) continue;
      const known = classify(this.host.state(), command.client, command.seq);
      const reply: Reply =
        known.kind === "cached"
          ? known.reply
          : known.kind === "pending"
            ? okReply("Queued", { status: "queued" })
            : errorReply(known.kind === "noSession" || known.kind === "ended" ? "SESSION_EXPIRED" : "STALE_REQUEST");
      for (const msg of msgs) this.respond(msg, reply);
      this.waiting.delete(key);
    }
  }

  /**
   * An exception out of a subscription callback would end nats.js's reader
   * for this connection, silently: the node would stop answering and stop
   * renewing its lease without exiting. A broken invariant crashes the node
   * as everywhere else (thrown again outside nats.js, to the process's
   * handler); anything else is a bug in handling one request, which gets
   * INTERNAL while the node goes on serving.
   */
  private requestFailed(msg: Msg, err: unknown): void {
    if (err instanceof InvariantError) {
      setImmediate(() => {
        throw err;
      });
      return;
    }
    this.host.logger.error({ err: errorMessage(err), stack: (err as Error).stack, subject: msg.subject }, "request handling failed");
    this.respond(msg, errorReply("INTERNAL", `the leader failed to handle this request: ${errorMessage(err)}`));
  }

  /** Answers a request message and records how long it took, by op and outcome. */
  private respond(msg: Msg, reply: Reply): void {
    const arrival = this.arrivals.get(msg);
    if (arrival) {
      this.arrivals.delete(msg);
      this.host.metrics.recordRequest(arrival.op, reply, (performance.now() - arrival.startedMs) / 1000);
    }
    // A request published without a reply subject gets no answer, by design.
    if (!msg.reply) return;
    const bytes = encoder.encode(JSON.stringify(reply));
    try {
      msg.respond(bytes);
    } catch (err) {
      // Larger than the server's max_payload (answers are bounded so that
      // this does not happen), or the connection is closing: say so in an
      // answer that fits, if it can still be sent.
      this.host.logger.error({ err: errorMessage(err), bytes: bytes.length, reply: reply.message }, "answer could not be sent");
      const error = errorReply(reply.ok ? "INTERNAL" : reply.error, `the leader's answer could not be sent (${bytes.length} bytes): ${errorMessage(err)}`);
      try {
        msg.respond(encoder.encode(JSON.stringify(error)));
      } catch {
        // Nothing more can be said on this connection.
      }
    }
  }
}
