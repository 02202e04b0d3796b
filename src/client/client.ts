/**
 * DlmClient: sessions, sequence numbers, retries, waiting for grants, lease
 * renewal and typed errors on top of a Transport.
 *
 * ```ts
 * import { connect } from "dlm";
 *
 * const client = await connect({ servers: "nats://127.0.0.1:4222" });
 * const lease = await client.acquire();           // lock "global", FIFO
 * await client.append("file_3", "hello\n");       // staged under the lease
 * const { appends, bytes } = await lease.release(); // committed atomically
 * // Or all in one request, when the data is at hand:
 * const { token } = await client.commit([{ file: "file_3", data: "hello\n" }]);
 * await client.close();
 * ```
 *
 * Behaviour the protocol leaves to the client (see also docs in options.ts,
 * retry.ts, lease.ts):
 *
 * - Requests are retried under the policy in retry.ts with the same seq, so
 *   they take effect at most once. Several may be in flight at once; `ack`
 *   is kept below the lowest outstanding seq (session.ts).
 * - A queued acquire resolves on its `granted` notification, and also polls
 *   by re-sending its seq every min(requestTimeoutMs, leaseMs / 4) (a lost
 *   notification or reply is recovered, and the session stays alive). If a
 *   grant is found with less than half its lease left by the safe local
 *   bound, the client confirms it with a renew before returning it; if the
 *   grant had already ended, acquire queues again (up to 3 rounds).
 * - Aborting a queued acquire sends `cancel`; if the wait had already ended
 *   in a grant, that grant is released. The CancelledError comes once the
 *   cancel is answered, or after 2 * requestTimeoutMs at most (the cleanup
 *   then finishes in the background).
 * - A request the client gave up on (TIMEOUT, UNAVAILABLE, CLOSED) is no
 *   longer tracked: its seq is acknowledged. If an acquire the client gave up
 *   on is granted later anyway, the grant notification finds no waiter and
 *   the client releases that grant at once (an "orphan").
 * - `append` stages the bytes in the client and sends nothing: the release
 *   carries the section and names how many appends were logged before it,
 *   so a section costs one request and no log entry of its own. A section
 *   larger than what one request may carry spills its earlier appends as
 *   logged `append` requests (awaited by the append that overflowed); the
 *   release then names their count, and the server refuses it with
 *   SECTION_MISMATCH (nothing committed) if it staged another number.
 * - `append` without a held `global` lease throws NotHolderError locally and
 *   sends nothing; under a lease known to be lost it throws the loss
 *   (LockExpiredError...) at once; file names outside file_0 … file_99 throw
 *   FileNotFoundError locally; appends larger than the server's
 *   maxAppendBytes, or growing the section past maxSectionBytes (both from
 *   hello), throw TooLargeError locally.
 * - `commit(appends)` is the one-request fenced commit: it waits for the lock
 *   in FIFO order and, once granted, appends and releases in the same log
 *   entry. Like acquire it resolves on the grant notification and polls
 *   with the same seq; its answer carries the token it ran under.
 * - SESSION_EXPIRED from any request (other than goodbye): every lease of
 *   that session is lost, its waiting acquires reject with
 *   SessionExpiredError, "sessionExpired" is emitted and a fresh session
 *   (new nanoid, seq from 1) is started at once for later operations.
 * - A lease lost by the local deadline (no renew confirmed within leaseMs)
 *   may still be counted by the server: the client ends it there with
 *   `abandon` (nothing commits) in the background, and an acquire of the
 *   same lock waits for that first; if it is still refused ALREADY_HELD by
 *   that grant, the abandon is sent again and the acquire retried. An
 *   append in flight when its lease is declared lost sends no further
 *   attempt, and rejects (with the server's refusal if the attempt in
 *   flight brings one, else with the loss reason, also if the server's
 *   answer was ok). Later calls on a lost lease (or, for append and
 *   release without a lease, on the last lost lease of the lock) reject
 *   with LOCK_EXPIRED (SESSION_EXPIRED / CLOSED when that ended it).
 * - Shared grants (`mode: "shared"`), semaphore permits (`limit`,
 *   `permits`; semaphore.ts) and `acquireAll` (one request for several
 *   locks, all or none; leaseSet.ts) go through the same acquire path:
 *   same seq on every retry and poll, cancel on abort or give-up, orphan
 *   release of a grant nobody waits for (every grant of a set). Each grant
 *   becomes an ordinary Lease with its own token, renewal and loss.
 * - `close()` does not release (commit) held leases: goodbye ends them
 *   without committing, and they are reported lost with ClosedError. Release
 *   first if you want your appends.
 *
 * Events: "leaseLost" (lease, error), "sessionExpired" (error, oldClientId),
 * "session" (clientId) after every successful hello, "closed".
 */
import { EventEmitter } from "node:events";
import { nanoid } from "nanoid";
import { connect as natsConnect } from "@nats-io/transport-node";
import type { ConnectionOptions } from "@nats-io/nats-core";
import { fileIndex } from "../protocol/files";
import { DEFAULT_LIMITS, LOCK_NAME } from "../protocol/limits";
import {
  DEFAULT_LOCK,
  type LeaseInfo,
  type LoggedRequest,
  type Notification,
  type OkReply,
  type Reply,
  type Request,
  type StatusView,
  type WireAppend,
} from "../protocol/messages";
import { names, type Names } from "../protocol/subjects";
import {
  AlreadyHeldError,
  BadRequestError,
  CancelledError,
  ClosedError,
  DlmError,
  FileNotFoundError,
  InternalError,
  LockExpiredError,
  NotHolderError,
  SessionExpiredError,
  TimeoutError,
  TooLargeError,
  UnavailableError,
  errorFromReply,
  isDlmError,
  makeError,
} from "./errors";
import type { FaultInjector } from "./faults";
import { Lease, type Committed, type Discarded, type LeaseOwner } from "./lease";
import { LeaseSet } from "./leaseSet";
import { checkDurations, checkLockName, checkSemaphoreLimit, lockList, shapeFields, type LockMode, type LockSpec, type ShapeFields } from "./lockShapes";
import { Semaphore } from "./semaphore";
import { runWhileHolding } from "./whileHolding";
import {
  inboxPrefixFor,
  NATS_PASS_THROUGH_KEYS,
  resolveOptions,
  type ClientOptions,
  type Logger,
  type ResolvedOptions,
} from "./options";
import { allAttemptsTimeoutMs, attemptTimeoutMs, raceSignal, retry, sleep, type RetryPolicy } from "./retry";
import { PendingAcquire, Session, type GrantResult, type SessionInfo } from "./session";
import { Stopper, type StopSignal } from "./stopper";
import {
  NatsTransport,
  TransportClosedError,
  TransportPermissionError,
  TransportTimeoutError,
  TransportUnavailableError,
  type Transport,
} from "./transport";

export interface AcquireOptions {
  /** Lease length; default the client's `defaultLeaseMs`, else the server's. */
  leaseMs?: number;
  /** Give up waiting after this long (server-side). 0 = try once. Default: wait until granted. */
  waitMs?: number;
  /** Abort the wait: the client cancels it on the server and rejects with CancelledError. */
  signal?: AbortSignal;
  /**
   * "shared": a read grant, held at the same time as other shared grants
   * and never with an exclusive one; "exclusive" (default): the only
   * holder. Not for the files lock "global" (exclusive only), nor together
   * with `limit`.
   */
  mode?: LockMode;
  /**
   * Acquire permits of the counting semaphore `lock`, which lets at most
   * `limit` permits out at once. Every caller must name the same limit
   * (LockKindMismatchError otherwise). See `client.semaphore(name, limit)`.
   */
  limit?: number;
  /** With `limit`: how many permits this grant takes, 1 … limit (default 1). */
  permits?: number;
}

/** Options of `acquireAll`, `tryAcquireAll` and `withLocks` (modes are given per lock). */
export interface AcquireAllOptions {
  /** Lease length of every grant of the set; default the client's `defaultLeaseMs`, else the server's. */
  leaseMs?: number;
  /** Give up waiting after this long (server-side, WaitTimeoutError). 0 = only if all are free now. Default: wait until granted. */
  waitMs?: number;
  /** Abort the wait: the client cancels it on the server (every queue) and rejects with CancelledError. */
  signal?: AbortSignal;
}

export interface AppendOptions {
  /** The lease to append under; default the client's held lease on "global". */
  lease?: Lease;
}

export interface AppendResult {
  /** The critical section staged so far under this grant. */
  staged: { appends: number; bytes: number };
}

/** One append of a one-request commit. */
export interface CommitAppend {
  /** `file_0` … `file_99`. */
  file: string;
  data: string | Uint8Array;
}

export interface CommitOptions {
  /** The lock to commit under; default (and, with appends, the only choice) "global", the lock that guards the files. */
  lock?: string;
  /** Give up waiting after this long (server-side, WaitTimeoutError); 0 = only if free now. Default: wait until granted. */
  waitMs?: number;
  /** Lease of the grant the commit runs under (it ends in the same log entry); rarely worth setting. */
  leaseMs?: number;
  /**
   * Abort to give the commit up. If it has not run yet it is cancelled on
   * the server (also when it has not reached the server yet: a copy that
   * arrives later is refused) and commit() rejects with CancelledError;
   * if it already ran, commit() resolves with its result as usual, since
   * the section is in the files. Only when the cancel itself cannot get
   * through does the rejection say the outcome is unknown.
   */
  signal?: AbortSignal;
}

export interface CommitResult {
  lock: string;
  /** The fencing token the section was committed under. */
  token: number;
  committed: Committed;
}

export type { Committed, Discarded, SessionInfo };

/** One answered request. */
interface Answer {
  reply: Reply;
  /** When the attempt that was answered was sent (performance.now()). */
  sentAt: number;
  /** When the first attempt of this request was sent. */
  firstSentAt: number;
}

interface CallOptions {
  signal?: StopSignal;
  policy?: Partial<RetryPolicy>;
  onSend?: (sentAt: number) => void;
  /**
   * Once aborted, no further attempt is sent (the one in flight may still
   * be answered); the call rejects with its reason instead of retrying.
   */
  noRetryAfter?: AbortSignal;
}

interface LeaseRecord {
  lease: Lease;
  session: Session;
  /** Monotonic time at or before which the server last granted/renewed: the lease runs at least until confirmedAt + leaseMs. */
  confirmedAt: number;
  renewTimer: NodeJS.Timeout | undefined;
  deadlineTimer: NodeJS.Timeout | undefined;
  releasing: Promise<Committed> | undefined;
  abandoning: Promise<Discarded> | undefined;
  section: LocalSection;
  /** The last append() on this lease; each waits for the one before, so the section keeps the callers' order. */
  appending: Promise<unknown>;
}

/**
 * The part of a critical section the server has not logged yet: appends
 * staged in the client, sent with the release. `spilled` counts those
 * already logged on their own (a section too big for one request); the
 * release names that count.
 */
interface LocalSection {
  inline: WireAppend[];
  inlineBytes: number;
  /** Size of `inline` as it travels in the release request (base64 and JSON). */
  inlineWireBytes: number;
  spilled: number;
  spilledBytes: number;
}

/** Room a release or commit request needs besides its appends (op, ids, seq, ack, lock, token, staged). */
const RELEASE_FIELDS_WIRE_BYTES = 256;
/** Room one append needs inside the `appends` array besides its base64 data. */
const APPEND_ITEM_WIRE_BYTES = 40;

function wireBytesOf(size: number): number {
  return Math.ceil(size / 3) * 4 + APPEND_ITEM_WIRE_BYTES;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
/**
 * The reason an acquire's internal send/poll loop is stopped once it is no
 * longer needed. Nobody outside sees it; one frozen error serves every
 * acquire rather than a new one (with its stack trace) each time.
 */
const LOOP_ENDED: Error = Object.freeze(new Error("the acquire's send/poll loop ended"));
const now = (): number => performance.now();
/** Errors that end a grant: the lease is lost. */
const LEASE_ENDING = new Set(["LOCK_EXPIRED", "NOT_HOLDER", "SESSION_EXPIRED"]);
const MAX_KNOWN_TOKENS = 1024;
/** How many times acquire() queues again after a grant that ran out before it was seen. */
const MAX_LATE_GRANT_ROUNDS = 3;
/** Shortest interval between polls of a queued acquire. */
const MIN_POLL_MS = 20;
/**
 * How long after its waitMs a tryAcquire waits for the server's answer
 * before it cancels the wait itself (at least 2 * requestTimeoutMs): covers
 * a lost WAIT_TIMEOUT and a leader failover in the middle of the wait.
 */
const TRY_BACKSTOP_MS = 5000;

/** A grant that had already ended when the client learned of it (internal). */
class LateGrant extends Error {
  constructor(readonly error: DlmError) {
    super(`the grant ended before the client saw it: ${error.message}`);
  }
}

/** The locks an acquire, commit or acquireAll request names. */
function lockNamesOf(req: LoggedRequest): string[] {
  return req.op === "acquireAll" ? req.locks.map((l) => l.lock) : "lock" in req ? [req.lock] : [];
}

function toBytes(data: string | Uint8Array): Buffer {
  return typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** The grants an answer to an acquire or acquireAll carries. */
function grantsOf(reply: OkReply): LeaseInfo[] {
  if (reply.leases && reply.leases.length > 0) return reply.leases;
  return reply.lease ? [reply.lease] : [];
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export class DlmClient extends EventEmitter implements LeaseOwner {
  readonly options: ResolvedOptions;
  private readonly transport: Transport;
  private readonly names: Names;
  private readonly log: Logger;
  private readonly faults: FaultInjector | undefined;
  /** Stopped by close(): ends every wait, retry and loop of this client. */
  private readonly closing = new Stopper();
  private closePromise: Promise<string | undefined> | undefined;
  private sessionPromise: Promise<Session> | undefined;
  private current: Session | undefined;
  private generation = 0;
  private readonly records = new Map<Lease, LeaseRecord>();
  /**
   * Per lock: the abandon of a grant this client declared lost by its own
   * clock (see giveUp). Resolves, never rejects, once the server answered
   * (true: the grant is over) or the attempt was given up (false).
   */
  private readonly givenUp = new Map<string, Promise<boolean>>();
  /**
   * Waits this client gave up whose cancel did not get through (a fault
   * outlasted it): lock name -> the session and seq still queued on the
   * server. The next acquire of that lock, refused ALREADY_HELD by that
   * wait, cancels it again instead of failing.
   */
  private readonly unendedWaits = new Map<string, { sessionId: string; seq: number }>();
  /** Per lock: the latest lease lost and not yet followed by a new grant, so later calls say why. */
  private readonly lastLost = new Map<string, Lease>();

  /**
   * Lower-level constructor: `connect()` is the usual way in. The client
   * sends through `transport` (wrapped by `options.faults` if given) and
   * says hello on `start()`.
   */
  constructor(transport: Transport, options: ClientOptions = {}) {
    super();
    this.options = resolveOptions(options);
    this.names = names(this.options.prefix);
    this.log = this.options.logger;
    this.faults = this.options.faults;
    this.transport = this.faults ? this.faults.wrap(transport) : transport;
  }

  /** Say hello (with the retry policy). connect() calls this. */
  async start(): Promise<this> {
    try {
      await this.ensureSession();
    } catch (e) {
      if (e instanceof TimeoutError) {
        const total = allAttemptsTimeoutMs(this.options) / 1000;
        throw new UnavailableError(
          `no dlm coordinator answered on ${this.names.requestSubject} within ${total}s: is a node running?`,
          { cause: e },
        );
      }
      throw e;
    }
    return this;
  }

  /** The current session id (changes when a session is renewed after expiry). */
  get clientId(): string | undefined {
    return this.current?.id;
  }

  /** The server's settings from the last hello. */
  get session(): SessionInfo | undefined {
    return this.current?.info;
  }

  /** The dlm version of the leader that answered the last hello. */
  get serverVersion(): string | undefined {
    return this.current?.serverVersion;
  }

  get closed(): boolean {
    return this.closing.aborted;
  }

  /** Leases currently held (not released, not lost). */
  get leases(): Lease[] {
    return [...this.records.keys()];
  }

  /** The held lease on `lock`, if any. */
  leaseFor(lock: string = DEFAULT_LOCK): Lease | undefined {
    for (const lease of this.records.keys()) if (lease.lock === lock) return lease;
    return undefined;
  }

  // ---------------------------------------------------------------- locks

  /**
   * Acquire `lock` (default "global"), waiting in FIFO order until granted.
   * Rejects with WaitTimeoutError (waitMs ran out), CancelledError
   * (signal), AlreadyHeldError, SessionExpiredError, TimeoutError or
   * UnavailableError (the first send could not get through), ClosedError.
   */
  async acquire(lock: string = DEFAULT_LOCK, opts: AcquireOptions = {}): Promise<Lease> {
    this.checkOpen();
    checkLockName(lock);
    checkDurations(opts);
    const shape = shapeFields(lock, opts);
    return this.inRounds([lock], opts.signal, () => this.acquireOnce(lock, opts, shape));
  }

  /**
   * Runs one acquire (of `locks`) until it is granted, in up to
   * MAX_LATE_GRANT_ROUNDS rounds: waits first for grants of those locks this
   * client gave up to be ended on the server, and queues again after a
   * grant that ran out before it was seen, or after an ALREADY_HELD caused
   * by a given-up grant or wait the server still counts.
   */
  private async inRounds<T>(locks: readonly string[], signal: AbortSignal | undefined, once: () => Promise<T>): Promise<T> {
    for (let round = 1; ; round++) {
      for (const lock of locks) await this.settleGivenUp(lock, signal);
      try {
        const granted = await once();
        // Granted, so no wait of this client stands on these locks any more.
        for (const lock of locks) this.unendedWaits.delete(lock);
        return granted;
      } catch (e) {
        // The grant ran out before the client learned of it (its notification
        // was lost and the poll found it late): wait in line again.
        if (e instanceof LateGrant && round < MAX_LATE_GRANT_ROUNDS && !this.closed && !signal?.aborted) {
          this.log.warn({ locks, round }, "dlm client: a grant ran out before it was seen; acquiring again");
          continue;
        }
        // The server still counts a grant this client gave up (its abandon
        // did not get through yet): end it again, then ask again.
        if (e instanceof AlreadyHeldError && round < MAX_LATE_GRANT_ROUNDS && this.regiveUp(e.lease?.lock ?? locks[0]!, e)) continue;
        // Or by a wait it gave up whose cancel did not get through: cancel it again.
        if (e instanceof AlreadyHeldError && round < MAX_LATE_GRANT_ROUNDS && (await this.recancelUnendedWait(locks, e))) continue;
        throw e instanceof LateGrant ? e.error : e;
      }
    }
  }

  private acquireOnce(lock: string, opts: AcquireOptions, shape: ShapeFields): Promise<Lease> {
    return this.queueFor(lock, opts, { op: "acquire", lock, ...shape }, (session, grant) => this.adoptLease(session, grant));
  }

  /**
   * Sends one acquire or acquireAll (`fields`, plus the session fields and
   * the caller's lease and wait) and waits for its grant under runAcquire.
   */
  private async queueFor<T>(
    what: string,
    opts: { leaseMs?: number; waitMs?: number; signal?: AbortSignal },
    fields: ({ op: "acquire"; lock: string } & ShapeFields) | { op: "acquireAll"; locks: Array<{ lock: string; mode: LockMode }> },
    adopt: (session: Session, grant: GrantResult) => Promise<T>,
  ): Promise<T> {
    const session = await this.sessionFor(what, opts.signal);
    const leaseMs = opts.leaseMs ?? this.options.defaultLeaseMs;
    const seq = session.seqs.issue();
    const pending = new PendingAcquire(seq, what);
    session.pending.set(seq, pending);
    const build = (): LoggedRequest => ({
      ...fields,
      client: session.id,
      seq,
      ack: session.seqs.ack(),
      ...(leaseMs !== undefined ? { leaseMs } : {}),
      ...(opts.waitMs !== undefined ? { waitMs: opts.waitMs } : {}),
    });
    return this.runAcquire(session, pending, build, opts.signal, this.pollMsFor(session, leaseMs), (grant) => adopt(session, grant));
  }

  /** The session to send an acquire on; CancelledError if `signal` aborts first. */
  private async sessionFor(what: string, signal: AbortSignal | undefined): Promise<Session> {
    if (signal?.aborted) throw this.cancelledBy(signal, what);
    try {
      return await raceSignal(this.ensureSession(), signal);
    } catch (e) {
      if (signal?.aborted) throw this.cancelledBy(signal, what);
      throw e;
    }
  }

  /** Poll a queued acquire often enough that a grant whose notification was lost is found with most of its lease left. */
  private pollMsFor(session: Session, leaseMs: number | undefined): number {
    const expectedLeaseMs = leaseMs ?? session.info?.defaultLeaseMs ?? DEFAULT_LIMITS.defaultLeaseMs;
    return Math.max(MIN_POLL_MS, Math.min(this.options.requestTimeoutMs, expectedLeaseMs / 4));
  }

  /**
   * Acquire several locks at once, all or none: one request joins the
   * queue of every listed lock in the same log entry, and the server grants
   * them together when the request is first in line on each and compatible
   * with every lock's holders. There is no deadlock whatever order callers
   * list the names in (the oldest waiter is first in all its queues), and
   * never a partial grant. `locks` are names (held exclusively) or
   * `{ lock, mode: "shared" }`; semaphores cannot be part of a set.
   *
   * Resolves to a `LeaseSet`: one ordinary `Lease` per lock, in the order
   * given, each renewed and lost on its own (see leaseSet.ts). Rejects like
   * `acquire` (WaitTimeoutError, CancelledError, AlreadyHeldError if this
   * client holds or waits for any of the locks, LockKindMismatchError if
   * one is a semaphore, …); an abort or a timeout cancels the wait on the
   * server in every queue.
   */
  async acquireAll(locks: readonly LockSpec[], opts: AcquireAllOptions = {}): Promise<LeaseSet> {
    this.checkOpen();
    const list = lockList(locks);
    checkDurations(opts);
    return this.inRounds(
      list.map((l) => l.lock),
      opts.signal,
      () => this.acquireAllOnce(list, opts),
    );
  }

  private acquireAllOnce(list: Array<{ lock: string; mode: LockMode }>, opts: AcquireAllOptions): Promise<LeaseSet> {
    const what = list.map((l) => l.lock).join(", ");
    return this.queueFor(what, opts, { op: "acquireAll", locks: list }, (session, grant) => this.adoptLeaseSet(session, grant, list.length));
  }

  /**
   * `acquireAll` if all the locks are granted within `opts.waitMs` (default
   * 0: only if all are free right now); resolves `null` otherwise, with the
   * same backstop as `tryAcquire`.
   */
  tryAcquireAll(locks: readonly LockSpec[], opts: AcquireAllOptions = {}): Promise<LeaseSet | null> {
    return this.tryWithin(opts, (o) => this.acquireAll(locks, o));
  }

  /**
   * Run `fn` while holding every lock of `locks` (taken with `acquireAll`),
   * as `withLock` does for one lock: when `fn` resolves, release them all
   * (committing what `fn` appended under "global", if listed) and resolve
   * with its result; when `fn` throws, abandon them all and rethrow its
   * error. `set.signal` aborts if any lease of the set is lost while `fn` runs.
   */
  async withLocks<T>(locks: readonly LockSpec[], fn: (set: LeaseSet) => T | PromiseLike<T>, opts: AcquireAllOptions = {}): Promise<T> {
    if (typeof fn !== "function") throw new BadRequestError("withLocks needs a function to run under the locks");
    return runWhileHolding(await this.acquireAll(locks, opts), fn);
  }

  /**
   * A counting semaphore named `name` that lets at most `limit` permits out
   * at once; nothing is sent until a permit is acquired (see semaphore.ts).
   */
  semaphore(name: string, limit: number): Semaphore {
    checkLockName(name);
    checkSemaphoreLimit(limit);
    shapeFields(name, { limit });
    return new Semaphore(this, name, limit);
  }

  /**
   * Acquire `lock` if it is granted within `opts.waitMs` (default 0: only
   * if it is free right now). Resolves to the lease, or to `null` when the
   * lock was not granted in time: the ordinary "someone else has it" case
   * is not an exception. The server ends the wait at `waitMs` and the
   * waiter leaves the queue. Should that answer be lost, the client gives
   * up `TRY_BACKSTOP_MS` (or 2 * requestTimeoutMs, whichever is larger)
   * later on its own, cancels the wait on the server, hands back a grant
   * that raced the cancel, and resolves `null` as well. Other failures
   * (UNAVAILABLE, SESSION_EXPIRED, CANCELLED by `opts.signal` …) reject as
   * for `acquire`.
   */
  tryAcquire(lock: string = DEFAULT_LOCK, opts: AcquireOptions = {}): Promise<Lease | null> {
    return this.tryWithin(opts, (o) => this.acquire(lock, o));
  }

  /** `attempt` with waitMs (default 0) and the backstop of tryAcquire; null when not granted in time. */
  private async tryWithin<O extends { waitMs?: number; signal?: AbortSignal }, T>(opts: O, attempt: (opts: O) => Promise<T>): Promise<T | null> {
    const waitMs = opts.waitMs ?? 0;
    if (typeof waitMs !== "number" || !Number.isFinite(waitMs) || waitMs < 0) {
      throw new BadRequestError(`invalid waitMs: ${String(waitMs)}`);
    }
    const backstopMs = waitMs + Math.max(TRY_BACKSTOP_MS, 2 * this.options.requestTimeoutMs);
    const backstop = AbortSignal.timeout(backstopMs);
    const signal = opts.signal ? AbortSignal.any([opts.signal, backstop]) : backstop;
    try {
      return await attempt({ ...opts, waitMs, signal });
    } catch (e) {
      if (isDlmError(e, "WAIT_TIMEOUT")) return null;
      if (isDlmError(e, "CANCELLED") && backstop.aborted && !opts.signal?.aborted) return null;
      throw e;
    }
  }

  /**
   * Run `fn` while holding `lock`, as one critical section: acquire (with
   * `opts`, as `acquire`), call `fn(lease)`, then
   *
   * - `fn` resolved: release the lease, committing what `fn` appended, and
   *   resolve with `fn`'s result. If the release fails (the lease was lost
   *   while `fn` ran: LockExpiredError …) `withLock` rejects with that error
   *   and nothing of the section was committed. If the release got no
   *   answer (TimeoutError, UnavailableError), it rejects with that error:
   *   the section may or may not have been committed, as the error says,
   *   and the grant is abandoned so that it does not outlive the call.
   * - `fn` threw (or rejected): abandon the grant, so nothing `fn` appended
   *   reaches the files, and reject with `fn`'s own error, unchanged. A
   *   failure of the abandon itself does not replace it: it is logged (warn,
   *   "dlm client: abandoning after a failed section failed"), the client
   *   stops renewing the lease and the server ends the grant when the lease
   *   runs out, which discards the section just the same.
   *
   * `lease.signal` aborts if the lease is lost while `fn` runs: pass it to
   * the work `fn` does so that it stops early; what it appended after that
   * is refused by the server anyway.
   */
  async withLock<T>(lock: string, fn: (lease: Lease) => T | PromiseLike<T>, opts: AcquireOptions = {}): Promise<T> {
    if (typeof fn !== "function") throw new BadRequestError("withLock needs a function to run under the lock");
    // The release's outcome may be unknown (TIMEOUT): runWhileHolding then
    // abandons, so no lease is left behind that the client renews for ever.
    return runWhileHolding(await this.acquire(lock, opts), fn);
  }

  /**
   * End `lease`'s grant without committing if it is still held, and never
   * reject: what leaving an `await using` scope and a failed `withLock` do.
   * If the abandon cannot be confirmed, the lease is dropped locally (no
   * more renewals, reported lost with the abandon's error): the server ends
   * the grant when its lease runs out, which discards the section too.
   */
  async endUncommitted(lease: Lease): Promise<void> {
    let rec = this.records.get(lease);
    if (!rec) return;
    // A release or abandon in flight decides first.
    const inFlight = rec.releasing ?? rec.abandoning;
    if (inFlight) await inFlight.then(() => undefined, () => undefined);
    rec = this.records.get(lease);
    if (!rec || this.closed || lease.state !== "held") return;
    try {
      await this.abandon(lease);
    } catch (e) {
      this.log.warn({ lock: lease.lock, token: lease.token, err: describe(e) }, "dlm client: abandoning after a failed section failed; the lease will run out");
      const left = this.records.get(lease);
      if (left) this.loseLease(left, isDlmError(e) ? e : new InternalError(`abandon failed: ${describe(e)}`, { cause: e }));
    }
  }

  /** Release a lease (default: the held lease on "global"), committing its staged appends. */
  release(leaseOrLock?: Lease | string): Promise<Committed> {
    try {
      this.checkOpen();
      const rec = this.recordFor(leaseOrLock, "release");
      rec.releasing ??= this.doRelease(rec).finally(() => {
        rec.releasing = undefined;
      });
      return rec.releasing;
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * End a lease's grant without committing what was staged under it (see
   * `Lease.abandon`). A lease already lost or released resolves with
   * nothing discarded: the grant is over either way.
   */
  abandon(lease: Lease): Promise<Discarded> {
    if (lease.state === "lost" || lease.state === "released") return Promise.resolve({ appends: 0, bytes: 0 });
    try {
      this.checkOpen();
      const rec = this.recordFor(lease, "abandon");
      rec.abandoning ??= this.doAbandon(rec).finally(() => {
        rec.abandoning = undefined;
      });
      return rec.abandoning;
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Renew a lease now; the client also renews every leaseMs * renewFraction. */
  async renew(lease: Lease): Promise<Lease> {
    this.checkOpen();
    const rec = this.recordFor(lease, "renew");
    await this.renewRecord(rec);
    return lease;
  }

  // ---------------------------------------------------------------- files

  /**
   * Stage an append to `file` under the held `global` lease (or `opts.lease`).
   * The bytes reach the file when the lease is released, together with the
   * rest of the section. The append itself usually sends nothing: the
   * release carries the section (see the notes at the top of this file).
   */
  async append(file: string, data: string | Uint8Array, opts: AppendOptions = {}): Promise<AppendResult> {
    this.checkOpen();
    if (fileIndex(file) === undefined) {
      throw new FileNotFoundError(`${JSON.stringify(file)} is not one of file_0 … file_99`);
    }
    const bytes = toBytes(data);
    const lease = opts.lease ?? this.leaseFor(DEFAULT_LOCK);
    if (!lease) {
      const lost = this.lastLost.get(DEFAULT_LOCK);
      if (lost?.lostReason) throw lost.lostReason;
      throw new NotHolderError(`append needs a held lease on "${DEFAULT_LOCK}" (the lock that guards the files): acquire it first`);
    }
    if (lease.lock !== DEFAULT_LOCK) {
      throw new NotHolderError(`files are guarded by lock "${DEFAULT_LOCK}", not by "${lease.lock}"`);
    }
    const rec = this.recordFor(lease, "append");
    const max = rec.session.info?.maxAppendBytes;
    if (max !== undefined && bytes.length > max) {
      throw new TooLargeError(`append of ${bytes.length} bytes is larger than the server's limit of ${max}`);
    }
    if (rec.lease.state !== "held") {
      throw new NotHolderError(`cannot append: the lease on ${lease.lock} (token ${lease.token}) is being released`);
    }
    const payload = bytes.toString("base64");
    const run = rec.appending.then(() => this.stage(rec, file, payload, bytes.length));
    rec.appending = run.catch(() => undefined);
    return run;
  }

  /** Adds one append to the lease's local section, spilling the earlier ones first if it would not fit one request. */
  private async stage(rec: LeaseRecord, file: string, data: string, size: number): Promise<AppendResult> {
    // The deadline timer may not have had its turn yet (a busy event loop
    // runs promise continuations first, and a section's appends are all
    // continuations), so the deadline itself is checked here: an append is
    // never accepted under a lease past its safe local bound.
    if (rec.lease.state === "held" && rec.confirmedAt + rec.lease.leaseMs <= now()) this.expireLocally(rec);
    // A lease lost while an earlier append spilled is never written to again.
    if (rec.lease.lost && rec.lease.lostReason) throw rec.lease.lostReason;
    const section = rec.section;
    const info = rec.session.info;
    const maxSection = info?.maxSectionBytes;
    if (maxSection !== undefined && section.spilledBytes + section.inlineBytes + size > maxSection) {
      throw new TooLargeError(`the critical section would grow to ${section.spilledBytes + section.inlineBytes + size} bytes, over the server's limit of ${maxSection}`);
    }
    const item: WireAppend = { file, data };
    section.inline.push(item);
    section.inlineBytes += size;
    section.inlineWireBytes += wireBytesOf(size);
    // A server that does not take appends inside the release gets each one
    // logged at once (and so does a client that asked for it); otherwise
    // only what no longer fits one request spills.
    const keep = maxSection === undefined || this.options.logEachAppend ? 0 : 1;
    if (keep === 0 || section.inlineWireBytes + RELEASE_FIELDS_WIRE_BYTES > this.requestBudget(rec.session)) {
      try {
        await this.spill(rec, keep);
      } catch (e) {
        // This append failed, so it is not part of the section. (If its own
        // request's outcome is unknown and it did land, the release's count
        // no longer matches the server's and the release is refused.)
        if (section.inline[section.inline.length - 1] === item) {
          section.inline.pop();
          section.inlineBytes -= size;
          section.inlineWireBytes -= wireBytesOf(size);
        }
        throw e;
      }
    }
    return { staged: { appends: section.spilled + section.inline.length, bytes: section.spilledBytes + section.inlineBytes } };
  }

  /**
   * The most bytes a release or commit request may carry: what one append of
   * the server's maxAppendBytes takes on the wire, which the server's
   * maxRequestBytes is configured to admit.
   */
  private requestBudget(session: Session): number {
    const maxAppend = session.info?.maxAppendBytes ?? DEFAULT_LIMITS.maxAppendBytes;
    return Math.ceil(maxAppend / 3) * 4 + 512;
  }

  /**
   * Logs the oldest staged appends on their own, one request each, until
   * `keep` are left. On a failure the append that failed stays staged; if
   * its outcome is unknown (TIMEOUT), the count the release names may not
   * match the server's, which then refuses the release (SECTION_MISMATCH)
   * rather than commit a section the client did not mean.
   */
  private async spill(rec: LeaseRecord, keep: number): Promise<void> {
    const section = rec.section;
    const { lease, session } = rec;
    while (section.inline.length > keep) {
      const next = section.inline[0];
      try {
        // Once the lease is declared lost its section can never commit: the
        // attempt in flight may still bring the server's answer (its refusal
        // at the token check), but no retry is sent for it.
        await this.logged(
          session,
          (seq, ack) => ({ op: "append", client: session.id, seq, ack, file: next.file, data: next.data, token: lease.token }),
          { noRetryAfter: lease.signal },
        );
      } catch (e) {
        this.loseIfEnded(rec, e);
        throw e;
      }
      // The loss was declared as the reply arrived: the append that
      // overflowed must not report success for a section that never commits.
      if (lease.lost && lease.lostReason) throw lease.lostReason;
      const size = Buffer.byteLength(next.data, "base64");
      section.inline.shift();
      section.inlineBytes -= size;
      section.inlineWireBytes -= wireBytesOf(size);
      section.spilled++;
      section.spilledBytes += size;
    }
  }

  /**
   * The one-request fenced commit: waits for `opts.lock` (default "global")
   * in FIFO order, and once granted appends `appends` and releases, in one
   * log entry. Resolves with the token the section ran under. At most once
   * like every request: a retry, a duplicate or a failover never commits it
   * twice. Rejects like acquire (WaitTimeoutError, SessionExpiredError,
   * ClosedError...) and with FileNotFoundError / TooLargeError locally for
   * bad appends; on TimeoutError the commit may still happen once later.
   *
   * A section larger than one request (or a server without the one-request
   * commit) runs as acquire, append…, release instead: still atomic, three
   * or more requests.
   */
  async commit(appends: CommitAppend[], opts: CommitOptions = {}): Promise<CommitResult> {
    this.checkOpen();
    const lock = opts.lock ?? DEFAULT_LOCK;
    if (typeof lock !== "string" || !LOCK_NAME.test(lock)) throw new BadRequestError(`invalid lock name ${JSON.stringify(lock)}`);
    if (!Array.isArray(appends)) throw new BadRequestError("commit takes an array of { file, data }");
    if (appends.length > 0 && lock !== DEFAULT_LOCK) {
      throw new BadRequestError(`files are guarded by lock "${DEFAULT_LOCK}", not by "${lock}"`);
    }
    checkDurations(opts);
    if (opts.signal?.aborted) throw new CancelledError(`commit under ${lock} was cancelled before it was sent`, { cause: opts.signal.reason });
    const session = await this.ensureSession();
    const info = session.info;
    const wire: WireAppend[] = [];
    let bytes = 0;
    let wireBytes = RELEASE_FIELDS_WIRE_BYTES;
    for (const a of appends) {
      if (fileIndex(a.file) === undefined) throw new FileNotFoundError(`${JSON.stringify(a.file)} is not one of file_0 … file_99`);
      const data = toBytes(a.data);
      if (info && data.length > info.maxAppendBytes) {
        throw new TooLargeError(`append of ${data.length} bytes is larger than the server's limit of ${info.maxAppendBytes}`);
      }
      bytes += data.length;
      wireBytes += wireBytesOf(data.length);
      wire.push({ file: a.file, data: data.toString("base64") });
    }
    if (info?.maxSectionBytes !== undefined && bytes > info.maxSectionBytes) {
      throw new TooLargeError(`a section of ${bytes} bytes is larger than the server's limit of ${info.maxSectionBytes}`);
    }
    if (info?.maxSectionBytes === undefined || wireBytes > this.requestBudget(session)) {
      return this.commitInSteps(lock, appends, opts);
    }
    const seq = session.seqs.issue();
    const pending = new PendingAcquire(seq, lock);
    session.pending.set(seq, pending);
    const build = (): LoggedRequest => ({
      op: "commit",
      client: session.id,
      seq,
      ack: session.seqs.ack(),
      lock,
      appends: wire,
      ...(opts.leaseMs !== undefined ? { leaseMs: opts.leaseMs } : {}),
      ...(opts.waitMs !== undefined ? { waitMs: opts.waitMs } : {}),
    });
    const stop = new Stopper();
    const onClose = (): void => stop.abort(this.closing.reason);
    this.closing.addEventListener("abort", onClose, { once: true });
    let userAborted = false;
    const onUserAbort = (): void => {
      userAborted = true;
      stop.abort(opts.signal?.reason);
    };
    opts.signal?.addEventListener("abort", onUserAbort, { once: true });
    const loop = this.acquireLoop(session, pending, build, stop, this.options.requestTimeoutMs).catch((e: unknown) => {
      if (!stop.aborted) pending.fail(e instanceof Error ? e : new InternalError(String(e)));
    });
    let abandoned = false;
    const result = (grant: GrantResult): CommitResult => {
      session.knownTokens.add(grant.info.token);
      return { lock, token: grant.info.token, committed: { appends: wire.length, bytes } };
    };
    try {
      return result(await raceSignal(pending.promise, stop));
    } catch (e) {
      if (this.closed) throw new ClosedError(`the client was closed while committing under ${lock}`, { cause: e });
      if (userAborted) {
        stop.abort(LOOP_ENDED);
        await loop;
        const ran = await this.cancelCommit(session, pending, build, lock);
        return result(ran);
      }
      if (isDlmError(e, "TIMEOUT") || isDlmError(e, "UNAVAILABLE")) {
        // It may still wait in the queue: cancel it in the background so it
        // does not commit long after the caller was told it timed out.
        abandoned = true;
        void this.abandonCommit(session, pending).finally(() => this.forgetAcquire(session, pending));
      }
      throw e;
    } finally {
      stop.abort(LOOP_ENDED);
      this.closing.removeEventListener("abort", onClose);
      opts.signal?.removeEventListener("abort", onUserAbort);
      await loop;
      if (!abandoned) this.forgetAcquire(session, pending);
    }
  }

  /**
   * The caller aborted a commit: cancel it on the server. The server
   * either takes it out of the queue, or refuses it ahead of its arrival
   * (both: CancelledError), or says it is not waiting because it already
   * ran; then its answer, cached under the same seq, is fetched and the
   * commit's grant returned, since the section is in the files.
   */
  private async cancelCommit(session: Session, pending: PendingAcquire, build: () => LoggedRequest, lock: string): Promise<GrantResult> {
    if (pending.state === "granted" && pending.result) return pending.result;
    const reply = await this.logged(session, (cseq, ack) => ({ op: "cancel", client: session.id, seq: cseq, ack, target: pending.seq }));
    if (reply.cancelled) throw new CancelledError(`commit under ${lock} was cancelled; nothing was written`);
    const answer = await this.call(session, build, { signal: this.closing });
    this.onAcquireAnswer(session, pending, answer);
    if (pending.state === "granted" && pending.result) return pending.result;
    throw pending.error ?? new InternalError(`a cancelled commit (seq ${pending.seq}) is neither waiting nor answered`);
  }

  /** Best effort: cancel a commit the client gave up on, if it is still waiting. */
  private async abandonCommit(session: Session, pending: PendingAcquire): Promise<void> {
    try {
      await this.logged(session, (cseq, ack) => ({ op: "cancel", client: session.id, seq: cseq, ack, target: pending.seq }));
    } catch (e) {
      this.log.warn({ err: describe(e), seq: pending.seq }, "dlm client: cancelling an abandoned commit failed; it may still commit once");
    }
  }

  /** A commit too large for one request: the same section as acquire, append…, release. */
  private async commitInSteps(lock: string, appends: CommitAppend[], opts: CommitOptions): Promise<CommitResult> {
    const lease = await this.acquire(lock, {
      ...(opts.leaseMs !== undefined ? { leaseMs: opts.leaseMs } : {}),
      ...(opts.waitMs !== undefined ? { waitMs: opts.waitMs } : {}),
      // Here the signal gives up the wait; once granted the section runs whole.
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    try {
      for (const a of appends) await this.append(a.file, a.data, { lease });
      const committed = await this.release(lease);
      return { lock, token: lease.token, committed };
    } catch (e) {
      // The section cannot commit whole: let the grant go without it.
      await this.endUncommitted(lease);
      throw e;
    }
  }

  /** The committed content of `file`. */
  async read(file: string): Promise<Buffer> {
    this.checkOpen();
    if (fileIndex(file) === undefined) {
      throw new FileNotFoundError(`${JSON.stringify(file)} is not one of file_0 … file_99`);
    }
    const reply = await this.unlogged({ op: "read", file });
    return Buffer.from(reply.data ?? "", "base64");
  }

  /** The leader's view of locks, queues, sessions and files. */
  async status(): Promise<StatusView> {
    this.checkOpen();
    const reply = await this.unlogged({ op: "status" });
    if (!reply.view) throw new InternalError("status reply without a view");
    return reply.view;
  }

  // ---------------------------------------------------------------- close

  /**
   * Stop timers, say goodbye (bounded by closeTimeoutMs, best effort), reject
   * what is outstanding with ClosedError, unsubscribe, and close the NATS
   * connection if the client opened it. Resolves to the server's goodbye
   * message ("Disconnected!") when it confirmed, else undefined. Idempotent.
   */
  close(): Promise<string | undefined> {
    this.closePromise ??= this.doClose();
    return this.closePromise;
  }

  private async doClose(): Promise<string | undefined> {
    const closedError = new ClosedError("the dlm client was closed");
    this.closing.abort(closedError);
    const session = this.current;
    this.current = undefined;
    this.sessionPromise = undefined;
    for (const rec of [...this.records.values()]) {
      this.loseLease(rec, new ClosedError(`the client was closed while holding ${rec.lease.lock}; its grant ends without a commit`));
    }
    let message: string | undefined;
    if (session) {
      this.stopHeartbeat(session);
      for (const pending of session.pending.values()) pending.fail(closedError);
      if (!session.expired) message = await this.goodbye(session);
      session.expired = true;
      session.sub?.unsubscribe();
    }
    try {
      await this.transport.close();
    } catch (e) {
      this.log.warn({ err: e }, "dlm client: closing the transport failed");
    }
    this.emit("closed");
    return message;
  }

  private async goodbye(session: Session): Promise<string | undefined> {
    const budget = this.options.closeTimeoutMs;
    const stop = new Stopper();
    const timer = setTimeout(() => stop.abort(new TimeoutError(`goodbye got no answer within ${budget}ms`)), budget);
    const seq = session.seqs.issue();
    try {
      const answer = await this.call(
        session,
        () => ({ op: "goodbye", client: session.id, seq, ack: session.seqs.ack() }),
        {
          signal: stop,
          policy: {
            requestTimeoutMs: Math.min(this.options.requestTimeoutMs, budget),
            maxAttempts: Number.MAX_SAFE_INTEGER,
            unavailableTimeoutMs: budget,
          },
        },
      );
      const reply = answer.reply;
      if (reply.ok) return reply.message;
      // A retried goodbye whose first reply was lost finds no session: that is success.
      if (reply.error === "SESSION_EXPIRED") return undefined;
      this.log.warn({ reply }, "dlm client: goodbye refused");
    } catch (e) {
      this.log.warn({ err: describe(e) }, "dlm client: goodbye failed; the session will expire on the server");
    } finally {
      clearTimeout(timer);
    }
    return undefined;
  }

  // ---------------------------------------------------------------- sessions

  private ensureSession(): Promise<Session> {
    if (this.closed) return Promise.reject(new ClosedError("the dlm client is closed"));
    if (!this.sessionPromise) {
      const p = this.startSession();
      this.sessionPromise = p;
      p.catch(() => {
        if (this.sessionPromise === p) this.sessionPromise = undefined;
      });
    }
    return this.sessionPromise;
  }

  private async startSession(): Promise<Session> {
    const generation = ++this.generation;
    const ns = this.options.namespace;
    const id = generation === 1 && this.options.clientId ? this.options.clientId : ns === undefined ? nanoid() : `${ns}.${nanoid()}`;
    const session = new Session(id, generation);
    try {
      session.sub = await raceSignal(
        this.transport.subscribe(this.names.notifySubject(id), (payload) => this.onNotification(session, payload)),
        this.closing,
      );
    } catch (e) {
      throw this.mapTransportFailure(e, "subscribe");
    }
    try {
      const seq = session.seqs.issue();
      const answer = await this.call(session, () => ({ op: "hello", client: id, seq, ack: session.seqs.ack() }), {
        signal: this.closing,
      });
      session.seqs.done(seq);
      const reply = answer.reply;
      if (!reply.ok) throw errorFromReply(reply);
      session.info = reply.session ?? {
        sessionTimeoutMs: DEFAULT_LIMITS.sessionTimeoutMs,
        defaultLeaseMs: DEFAULT_LIMITS.defaultLeaseMs,
        maxAppendBytes: DEFAULT_LIMITS.maxAppendBytes,
      };
      session.serverVersion = reply.version;
      if (this.closed) throw new ClosedError("the dlm client was closed during hello");
      this.current = session;
      this.log.info({ client: id, session: reply.session }, "dlm client: session started");
      this.scheduleHeartbeat(session);
      this.emit("session", id);
      return session;
    } catch (e) {
      session.expired = true;
      session.sub?.unsubscribe();
      throw e;
    }
  }

  private expireSession(session: Session, error: DlmError): void {
    if (session.expired) return;
    session.expired = true;
    this.stopHeartbeat(session);
    session.sub?.unsubscribe();
    this.log.warn({ client: session.id }, "dlm client: session expired; starting a new one");
    for (const pending of session.pending.values()) {
      pending.fail(new SessionExpiredError(`session ${session.id} expired while waiting for ${pending.lock}`, { cause: error }));
    }
    for (const rec of [...this.records.values()]) {
      if (rec.session === session) {
        this.loseLease(rec, new SessionExpiredError(`session ${session.id} expired: the grant on ${rec.lease.lock} ended`, { cause: error }));
      }
    }
    if (this.current === session) {
      this.current = undefined;
      this.sessionPromise = undefined;
    }
    this.safeEmit("sessionExpired", error, session.id);
    if (!this.closed && !this.sessionPromise) {
      this.ensureSession().catch((e: unknown) => {
        this.log.warn({ err: describe(e) }, "dlm client: could not start a new session yet; the next operation retries");
      });
    }
  }

  /**
   * The next heartbeat: an interval after the last request sent, or, after
   * a ping that failed (no leader, or none answered it in time), soon: a
   * new leader counts a client as silent since before the takeover, so it
   * must hear this client well within one interval of taking over, not two
   * (docs/design.md §5).
   */
  private scheduleHeartbeat(session: Session, failed = false): void {
    this.stopHeartbeat(session);
    if (session.expired || this.closed || !session.info) return;
    const interval = session.info.sessionTimeoutMs / 3;
    // 250 ms: a new leader starts serving within about that of its takeover.
    const due = failed ? Math.min(250, interval / 4) : Math.max(0, session.lastSentAt + interval - now());
    session.heartbeat = setTimeout(() => void this.heartbeat(session, interval, failed), due);
    session.heartbeat.unref?.();
  }

  private stopHeartbeat(session: Session): void {
    if (session.heartbeat) clearTimeout(session.heartbeat);
    session.heartbeat = undefined;
  }

  private async heartbeat(session: Session, interval: number, retrying: boolean): Promise<void> {
    session.heartbeat = undefined;
    if (session.expired || this.closed) return;
    let failed = false;
    // A retry pings even though the failed ping counts as the last request sent.
    if (retrying || now() - session.lastSentAt >= interval - 1) {
      try {
        // A leader answers a ping at once (or after one log append), so an
        // attempt that takes a quarter interval went to a leader that is
        // gone or frozen: give up on it and retry, rather than wait a whole
        // request timeout while the next leader is already serving.
        const answer = await this.call(session, () => ({ op: "ping", client: session.id }), {
          signal: this.closing,
          policy: { maxAttempts: 1, unavailableTimeoutMs: 0, requestTimeoutMs: Math.min(this.options.requestTimeoutMs, interval / 4) },
        });
        if (!answer.reply.ok) throw this.replyError(session, answer.reply);
      } catch (e) {
        failed = true;
        this.log.debug({ err: describe(e) }, "dlm client: heartbeat failed; retrying soon");
      }
    }
    this.scheduleHeartbeat(session, failed);
  }

  // ---------------------------------------------------------------- notifications

  private onNotification(session: Session, payload: Uint8Array): void {
    let n: Notification;
    try {
      n = JSON.parse(decoder.decode(payload)) as Notification;
    } catch (e) {
      this.log.warn({ err: describe(e) }, "dlm client: unreadable notification");
      return;
    }
    if (this.faults?.shouldDropNotification(n, session.id)) return;
    if (session.expired) return;
    this.log.debug({ client: session.id, notification: n }, "dlm client: notification");
    switch (n.event) {
      case "granted": {
        const pending = session.pending.get(n.seq);
        const all = n.leases && n.leases.length > 0 ? n.leases : undefined;
        if (pending) {
          pending.grant(n.lease, now(), all);
        } else {
          for (const info of all ?? [n.lease]) if (!session.knownTokens.has(info.token)) this.releaseOrphan(session, info);
        }
        return;
      }
      case "lost": {
        const error = makeError(n.error, `lost ${n.lock} (token ${n.token}): ${n.error}`);
        if (n.error === "SESSION_EXPIRED") {
          this.expireSession(session, error);
          return;
        }
        for (const rec of this.records.values()) {
          if (rec.session === session && rec.lease.lock === n.lock && rec.lease.token === n.token) {
            this.loseLease(rec, error);
            return;
          }
        }
        return;
      }
      case "waitEnded": {
        const error = makeError(n.error, `wait for ${n.lock} ended: ${n.error}`);
        if (n.error === "SESSION_EXPIRED") {
          this.expireSession(session, error);
          return;
        }
        session.pending.get(n.seq)?.fail(error);
        return;
      }
      default:
        this.log.debug({ notification: n as unknown }, "dlm client: unknown notification");
    }
  }

  /** Hands back every grant of an acquire (all of an acquireAll's) that nobody will use. */
  private releaseGrant(session: Session, grant: GrantResult): void {
    for (const info of grant.all ?? [grant.info]) this.releaseOrphan(session, info);
  }

  /** A grant nobody waits for (the acquire was given up or cancelled): hand it back. */
  private releaseOrphan(session: Session, info: LeaseInfo): void {
    session.knownTokens.add(info.token);
    this.log.warn({ lock: info.lock, token: info.token }, "dlm client: releasing a grant nobody waits for");
    this.logged(session, (seq, ack) => ({ op: "release", client: session.id, seq, ack, lock: info.lock, token: info.token })).catch(
      (e: unknown) => this.log.debug({ err: describe(e) }, "dlm client: releasing an orphan grant failed"),
    );
  }

  // ---------------------------------------------------------------- acquire internals

  private cancelledBy(signal: AbortSignal, lock: string): CancelledError {
    return new CancelledError(`acquire of ${lock} was cancelled`, { cause: signal.reason });
  }

  /** Forget a finished acquire: no more notifications for it, and its seq is acknowledged. */
  private forgetAcquire(session: Session, pending: PendingAcquire): void {
    session.pending.delete(pending.seq);
    session.seqs.done(pending.seq);
  }

  /**
   * Send an acquire (or acquireAll), wait for its grant (reply, notification
   * or poll), and turn the grant into what the caller gets with `adopt`.
   * Handles the user's abort (cancel on the server), close, and giving up.
   */
  private async runAcquire<T>(
    session: Session,
    pending: PendingAcquire,
    build: () => LoggedRequest,
    signal: AbortSignal | undefined,
    pollMs: number,
    adopt: (grant: GrantResult) => Promise<T>,
  ): Promise<T> {
    let cleanupInBackground = false;
    // `stop` ends the send/poll loop: on the user's abort, on close, or once settled.
    const stop = new Stopper();
    const userAborted = { value: false };
    const onUserAbort = (): void => {
      userAborted.value = true;
      stop.abort(this.cancelledBy(signal!, pending.lock));
    };
    const onClose = (): void => stop.abort(this.closing.reason);
    signal?.addEventListener("abort", onUserAbort, { once: true });
    this.closing.addEventListener("abort", onClose, { once: true });
    const loop = this.acquireLoop(session, pending, build, stop, pollMs).catch((e: unknown) => {
      if (!stop.aborted) pending.fail(e instanceof Error ? e : new InternalError(String(e)));
    });
    try {
      let grant: GrantResult;
      try {
        grant = await raceSignal(pending.promise, stop);
      } catch (e) {
        if (userAborted.value && !this.closed) {
          stop.abort(LOOP_ENDED);
          // Wait for the cancel a little; if the server is slow to answer,
          // finish it in the background (the seq stays outstanding until then)
          // rather than hold the caller's rejection for the whole retry budget.
          cleanupInBackground = true;
          const cleanup = this.cancelWait(session, pending, build).finally(() => this.forgetAcquire(session, pending));
          this.settleBeforeNextAcquire(build, cleanup);
          await Promise.race([cleanup, sleep(2 * this.options.requestTimeoutMs, this.closing).catch(() => {})]);
          throw this.cancelledBy(signal!, pending.lock);
        }
        if (this.closed) throw new ClosedError(`the client was closed while acquiring ${pending.lock}`, { cause: e });
        if (isDlmError(e, "TIMEOUT") || isDlmError(e, "UNAVAILABLE")) {
          // Giving up here does not end the wait on the server: it may still
          // be queued, and would later block this client's own acquires
          // (ALREADY_HELD) or hold the lock for a lease if its grant
          // notification were lost. Cancel it, or hand back the grant, in
          // the background.
          cleanupInBackground = true;
          const cleanup = this.abandonAcquire(session, pending, build).finally(() => this.forgetAcquire(session, pending));
          this.settleBeforeNextAcquire(build, cleanup);
        }
        throw e;
      }
      stop.abort(LOOP_ENDED);
      if (signal?.aborted) {
        // Granted and aborted at about the same time: honour the abort.
        this.releaseGrant(session, grant);
        throw this.cancelledBy(signal, pending.lock);
      }
      return await adopt(grant);
    } finally {
      stop.abort(LOOP_ENDED);
      signal?.removeEventListener("abort", onUserAbort);
      this.closing.removeEventListener("abort", onClose);
      await loop;
      if (!cleanupInBackground) this.forgetAcquire(session, pending);
    }
  }

  /** Send the acquire, then poll it (same seq) every pollMs while queued. */
  private async acquireLoop(
    session: Session,
    pending: PendingAcquire,
    build: () => LoggedRequest,
    signal: StopSignal,
    pollMs: number,
  ): Promise<void> {
    const onSend = (at: number): void => pending.sent(at);
    const first = await this.call(session, build, { signal, onSend });
    if (this.onAcquireAnswer(session, pending, first) !== "queued") return;
    for (;;) {
      await sleep(pollMs, signal);
      if (pending.state !== "waiting") return;
      const answer = await this.callOnce(session, build, signal, onSend);
      if (answer && this.onAcquireAnswer(session, pending, answer) !== "queued") return;
    }
  }

  private onAcquireAnswer(session: Session, pending: PendingAcquire, answer: Answer): "queued" | "settled" {
    const reply = answer.reply;
    if (reply.ok) {
      if (reply.status === "queued") {
        pending.queued(answer.sentAt);
        return "queued";
      }
      if (reply.leases && reply.leases.length > 0) {
        pending.grant(reply.leases[0]!, now(), reply.leases);
        return "settled";
      }
      if (reply.lease) {
        pending.grant(reply.lease, now());
        return "settled";
      }
      pending.fail(new InternalError(`unexpected acquire reply: ${JSON.stringify(reply)}`));
      return "settled";
    }
    pending.fail(this.replyError(session, reply));
    return "settled";
  }

  /**
   * The user aborted a wait: cancel it on the server. If it was not waiting
   * any more, learn its outcome by re-sending the acquire's seq and hand back
   * a grant. Best effort: if the server cannot be reached, a grant that
   * arrives later is released as an orphan.
   */
  private async cancelWait(session: Session, pending: PendingAcquire, build: () => LoggedRequest): Promise<void> {
    const seq = pending.seq;
    try {
      for (let round = 0; round < 3 && !session.expired; round++) {
        if (pending.state === "granted") break;
        if (pending.state === "failed") return;
        const reply = await this.logged(session, (cseq, ack) => ({ op: "cancel", client: session.id, seq: cseq, ack, target: seq }));
        if (reply.cancelled) {
          pending.fail(new CancelledError("cancelled"));
          return;
        }
        if (pending.state !== "waiting") break;
        // Not waiting: granted, ended, or never arrived. Ask with the same seq.
        const answer = await this.call(session, build, { signal: this.closing });
        if (this.onAcquireAnswer(session, pending, answer) === "settled") break;
      }
      if (pending.state === "granted" && pending.result) this.releaseGrant(session, pending.result);
    } catch (e) {
      this.log.warn({ err: describe(e), seq }, "dlm client: cancelling a wait failed; a late grant will be released");
      this.rememberUnendedWait(session, build, seq);
    }
  }

  /**
   * The client gave up on an acquire (no answer within its attempts) whose
   * fate on the server is unknown: cancel the wait if it is still queued,
   * otherwise learn the outcome with the same seq and hand back a grant.
   */
  private async abandonAcquire(session: Session, pending: PendingAcquire, build: () => LoggedRequest): Promise<void> {
    try {
      const reply = await this.logged(session, (cseq, ack) => ({ op: "cancel", client: session.id, seq: cseq, ack, target: pending.seq }));
      if (reply.cancelled) return;
      const answer = await this.call(session, build, { signal: this.closing });
      if (answer.reply.ok) for (const info of grantsOf(answer.reply)) this.releaseOrphan(session, info);
    } catch (e) {
      this.log.warn({ err: describe(e), seq: pending.seq }, "dlm client: abandoning a timed-out acquire failed; a late grant will be released");
      this.rememberUnendedWait(session, build, pending.seq);
    }
  }

  private rememberUnendedWait(session: Session, build: () => LoggedRequest, seq: number): void {
    if (session.expired) return;
    for (const name of lockNamesOf(build())) this.unendedWaits.set(name, { sessionId: session.id, seq });
    while (this.unendedWaits.size > MAX_KNOWN_TOKENS) this.unendedWaits.delete(this.unendedWaits.keys().next().value!);
  }

  /**
   * An acquire of `locks` was refused ALREADY_HELD: if that is a wait this
   * client gave up and could not cancel, cancel it again (by its seq; a
   * grant it turned into is handed back) and say so, so the acquire is
   * sent again. False when the refusal is about something else.
   */
  private async recancelUnendedWait(locks: readonly string[], e: AlreadyHeldError): Promise<boolean> {
    if (e.lease) return false;
    const session = this.current;
    const name = locks.find((l) => this.unendedWaits.get(l)?.sessionId === session?.id);
    const stale = name === undefined ? undefined : this.unendedWaits.get(name);
    if (!session || name === undefined || !stale) return false;
    try {
      const reply = await this.logged(session, (cseq, ack) => ({ op: "cancel", client: session.id, seq: cseq, ack, target: stale.seq }));
      this.log.info({ lock: name, seq: stale.seq, cancelled: reply.cancelled }, "dlm client: cancelled again a wait it had given up");
    } catch (err) {
      this.log.warn({ lock: name, seq: stale.seq, err: describe(err) }, "dlm client: could not cancel a wait it had given up");
      return false;
    }
    for (const [lock, wait] of [...this.unendedWaits]) if (wait.seq === stale.seq && wait.sessionId === stale.sessionId) this.unendedWaits.delete(lock);
    return true;
  }

  // ---------------------------------------------------------------- leases

  /**
   * Turn an acquireAll's grants into held Leases (each as adoptLease does)
   * and gather them in a LeaseSet. All or none: if one cannot be adopted
   * (it ran out before it was seen: LateGrant, so the set queues again),
   * the others are ended without committing and the error is thrown.
   */
  private async adoptLeaseSet(session: Session, grant: GrantResult, expected: number): Promise<LeaseSet> {
    const infos = grant.all ?? [grant.info];
    if (infos.length !== expected) {
      this.releaseGrant(session, grant);
      throw new InternalError(`acquireAll asked for ${expected} locks and was granted ${infos.length}`);
    }
    const adopted = await Promise.allSettled(infos.map((info) => this.adoptLease(session, { info, grantedAfter: grant.grantedAfter })));
    const leases = adopted.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    const failed = adopted.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) {
      await Promise.all(leases.map((lease) => this.endUncommitted(lease)));
      throw failed.reason;
    }
    return new LeaseSet(leases, (e) => this.log.error({ err: describe(e) }, "dlm client: a lease set 'lost' listener threw"));
  }

  /**
   * Turn a grant into a held Lease with its renew and deadline timers. If
   * less than half the lease is left by the safe local bound (the grant was
   * found late, by polling), confirm it with a renew first; if the server
   * says the grant already ended, throw LateGrant so acquire() queues again.
   */
  private async adoptLease(session: Session, grant: GrantResult): Promise<Lease> {
    if (session.expired) {
      throw new SessionExpiredError(`session ${session.id} expired as ${grant.info.lock} was granted`);
    }
    session.knownTokens.add(grant.info.token);
    if (session.knownTokens.size > MAX_KNOWN_TOKENS) {
      const oldest = session.knownTokens.values().next().value;
      if (oldest !== undefined) session.knownTokens.delete(oldest);
    }
    let info = grant.info;
    let confirmedAt = grant.grantedAfter;
    if (confirmedAt + info.leaseMs - now() < info.leaseMs / 2) {
      try {
        const { reply, firstSentAt } = await this.sendRenew(session, info);
        if (reply.lease) info = reply.lease;
        if (firstSentAt !== undefined) confirmedAt = Math.max(confirmedAt, firstSentAt);
      } catch (e) {
        if (isDlmError(e, "LOCK_EXPIRED") || isDlmError(e, "NOT_HOLDER")) throw new LateGrant(e);
        if (isDlmError(e, "SESSION_EXPIRED") || isDlmError(e, "CLOSED")) throw e;
        // Outcome unknown: keep the grant; the local deadline decides.
        this.log.debug({ err: describe(e) }, "dlm client: could not confirm a late grant");
      }
    }
    if (confirmedAt + info.leaseMs <= now()) {
      // Seen so late that even the safe local bound has passed, and no renew
      // confirmed it: the server may already have granted the lock to the
      // next waiter. Handing this lease out would let the caller stage a
      // section under it before the deadline timer gets a turn, so end it on
      // the server without committing and queue again.
      void this.abandonOnServer(session, info.lock, info.token);
      throw new LateGrant(
        new LockExpiredError(`the grant of ${info.lock} (token ${info.token}) was seen after its lease ran out (measured locally)`),
      );
    }
    const lease = new Lease(this, info, session.id);
    const rec: LeaseRecord = {
      lease,
      session,
      confirmedAt,
      renewTimer: undefined,
      deadlineTimer: undefined,
      releasing: undefined,
      abandoning: undefined,
      section: { inline: [], inlineBytes: 0, inlineWireBytes: 0, spilled: 0, spilledBytes: 0 },
      appending: Promise.resolve(),
    };
    this.records.set(lease, rec);
    this.lastLost.delete(lease.lock);
    this.log.debug({ lock: lease.lock, token: lease.token, leaseMs: lease.leaseMs }, "dlm client: granted");
    this.scheduleRenew(rec);
    this.scheduleDeadline(rec);
    return lease;
  }

  private recordFor(leaseOrLock: Lease | string | undefined, what: string): LeaseRecord {
    if (leaseOrLock instanceof Lease) {
      const rec = this.records.get(leaseOrLock);
      if (rec) return rec;
      if (leaseOrLock.lost && leaseOrLock.lostReason) throw leaseOrLock.lostReason;
      if (leaseOrLock.released) {
        throw new NotHolderError(`cannot ${what}: the lease on ${leaseOrLock.lock} (token ${leaseOrLock.token}) was released`);
      }
      throw new NotHolderError(`cannot ${what}: this lease does not belong to this client`);
    }
    const lock = leaseOrLock ?? DEFAULT_LOCK;
    const lease = this.leaseFor(lock);
    if (!lease) {
      const lost = this.lastLost.get(lock);
      if (lost?.lostReason) throw lost.lostReason;
      throw new NotHolderError(`cannot ${what}: this client holds no lease on ${lock}`);
    }
    return this.records.get(lease)!;
  }

  private scheduleRenew(rec: LeaseRecord): void {
    if (rec.renewTimer) clearTimeout(rec.renewTimer);
    rec.renewTimer = undefined;
    if (rec.lease.state !== "held" || this.closed) return;
    const every = Math.max(1, rec.lease.leaseMs * this.options.renewFraction);
    rec.renewTimer = setTimeout(() => void this.backgroundRenew(rec), every);
    rec.renewTimer.unref?.();
  }

  private async backgroundRenew(rec: LeaseRecord): Promise<void> {
    rec.renewTimer = undefined;
    if (rec.lease.state !== "held") return;
    try {
      await this.renewRecord(rec);
    } catch (e) {
      if (rec.lease.state === "held") {
        this.log.warn({ lock: rec.lease.lock, err: describe(e) }, "dlm client: renew failed; retrying");
      }
    }
    if (rec.lease.state === "held" && !rec.renewTimer) this.scheduleRenew(rec);
  }

  /**
   * Renews one grant. Also returns when the first attempt was sent: the
   * server renewed no earlier than that, so it is the safe start of the
   * renewed lease by the local clock.
   */
  private async sendRenew(
    session: Session,
    grant: { lock: string; token: number; leaseMs: number },
  ): Promise<{ reply: OkReply; firstSentAt: number | undefined }> {
    let firstSentAt: number | undefined;
    const reply = await this.logged(
      session,
      (seq, ack) => ({ op: "renew", client: session.id, seq, ack, lock: grant.lock, token: grant.token, leaseMs: grant.leaseMs }),
      {
        signal: this.closing,
        onSend: (at) => {
          firstSentAt ??= at;
        },
      },
    );
    return { reply, firstSentAt };
  }

  private async renewRecord(rec: LeaseRecord): Promise<void> {
    const { lease, session } = rec;
    try {
      const { reply, firstSentAt } = await this.sendRenew(session, lease);
      if (lease.state !== "held" && lease.state !== "releasing") return;
      if (reply.lease) lease._update(reply.lease);
      // The server renewed no earlier than our first send of this seq.
      if (firstSentAt !== undefined && firstSentAt > rec.confirmedAt) rec.confirmedAt = firstSentAt;
      this.scheduleDeadline(rec);
    } catch (e) {
      this.loseIfEnded(rec, e);
      throw e;
    }
  }

  private scheduleDeadline(rec: LeaseRecord): void {
    if (rec.deadlineTimer) clearTimeout(rec.deadlineTimer);
    rec.deadlineTimer = undefined;
    const { lease } = rec;
    if (lease.state === "lost" || lease.state === "released") return;
    const due = rec.confirmedAt + lease.leaseMs - now();
    rec.deadlineTimer = setTimeout(() => {
      rec.deadlineTimer = undefined;
      // While a release is in flight its answer decides.
      if (lease.state !== "held") return;
      if (rec.confirmedAt + lease.leaseMs - now() > 1) {
        this.scheduleDeadline(rec);
        return;
      }
      this.expireLocally(rec);
    }, Math.max(0, due));
    rec.deadlineTimer.unref?.();
  }

  /** The lease's safe local bound has passed: it is lost here, and ended on the server. */
  private expireLocally(rec: LeaseRecord): void {
    const { lease } = rec;
    this.loseLease(
      rec,
      new LockExpiredError(
        `the lease on ${lease.lock} (token ${lease.token}) ran out: no renew was confirmed within ${lease.leaseMs}ms (measured locally)`,
      ),
    );
    // The server may still count the grant (its clock is on the late
    // side of ours, or it never heard the renewals): end it there too.
    this.giveUp(rec.session, lease);
  }

  /**
   * Releases a grant: commits its section (the staged appends named by
   * count, then those still in the client, sent with the release).
   */
  private async doRelease(rec: LeaseRecord): Promise<Committed> {
    const { lease, session } = rec;
    lease._setState("releasing");
    if (rec.renewTimer) clearTimeout(rec.renewTimer);
    rec.renewTimer = undefined;
    try {
      // Appends still spilling belong to the section: wait for them.
      await rec.appending;
      if (lease.lost && lease.lostReason) throw lease.lostReason;
      const section = rec.section;
      const reply = await this.logged(session, (seq, ack) => ({
        op: "release",
        client: session.id,
        seq,
        ack,
        lock: lease.lock,
        token: lease.token,
        ...(session.info?.maxSectionBytes === undefined ? {} : { staged: section.spilled }),
        ...(section.inline.length > 0 ? { appends: section.inline } : {}),
      }));
      this.dropRecord(rec);
      lease._setState("released");
      this.log.debug({ lock: lease.lock, token: lease.token, committed: reply.committed }, "dlm client: released");
      return reply.committed ?? { appends: 0, bytes: 0 };
    } catch (e) {
      if (lease.state === "releasing") {
        if (isDlmError(e) && LEASE_ENDING.has(e.codeName)) {
          this.loseLease(rec, e);
        } else {
          // Outcome unknown (TIMEOUT, UNAVAILABLE...): keep holding; the caller may retry.
          lease._setState("held");
          this.scheduleRenew(rec);
          this.scheduleDeadline(rec);
        }
      }
      throw e;
    }
  }

  /**
   * Ends a grant without committing: the server drops what it staged (the
   * spilled appends), and the client drops the rest of the section, which
   * it never sent. An append still spilling is waited for first, so the
   * count of what was discarded is whole.
   */
  private async doAbandon(rec: LeaseRecord): Promise<Discarded> {
    const { lease, session } = rec;
    lease._setState("releasing");
    if (rec.renewTimer) clearTimeout(rec.renewTimer);
    rec.renewTimer = undefined;
    try {
      await rec.appending;
      if (lease.lost) return { appends: 0, bytes: 0 };
      const local = { appends: rec.section.inline.length, bytes: rec.section.inlineBytes };
      const reply = await this.logged(session, (seq, ack) => ({
        op: "abandon",
        client: session.id,
        seq,
        ack,
        lock: lease.lock,
        token: lease.token,
      }));
      this.dropRecord(rec);
      lease._setState("released");
      const discarded = {
        appends: (reply.discarded?.appends ?? 0) + local.appends,
        bytes: (reply.discarded?.bytes ?? 0) + local.bytes,
      };
      this.log.debug({ lock: lease.lock, token: lease.token, discarded }, "dlm client: abandoned");
      return discarded;
    } catch (e) {
      if (lease.state === "releasing") {
        if (isDlmError(e) && LEASE_ENDING.has(e.codeName)) {
          // The grant had ended already: nothing of it will ever commit,
          // which is what abandoning asked for.
          this.loseLease(rec, e);
          return { appends: 0, bytes: 0 };
        }
        lease._setState("held");
        this.scheduleRenew(rec);
        this.scheduleDeadline(rec);
      }
      throw e;
    }
  }

  private loseIfEnded(rec: LeaseRecord, e: unknown): void {
    if (isDlmError(e) && LEASE_ENDING.has(e.codeName)) this.loseLease(rec, e);
  }

  private dropRecord(rec: LeaseRecord): void {
    if (rec.renewTimer) clearTimeout(rec.renewTimer);
    if (rec.deadlineTimer) clearTimeout(rec.deadlineTimer);
    rec.renewTimer = undefined;
    rec.deadlineTimer = undefined;
    this.records.delete(rec.lease);
  }

  private loseLease(rec: LeaseRecord, cause: DlmError): void {
    this.dropRecord(rec);
    const lease = rec.lease;
    // To the holder, a grant that ended under it has expired: NOT_HOLDER
    // from the server says the same thing less helpfully.
    const error =
      cause.codeName === "NOT_HOLDER"
        ? new LockExpiredError(`the grant on ${lease.lock} (token ${lease.token}) has ended: ${cause.message}`, { cause })
        : cause;
    const onListenerError = (e: unknown): void => this.log.error({ err: describe(e) }, "dlm client: a lease 'lost' listener threw");
    if (!lease._markLost(error, onListenerError)) return;
    this.lastLost.delete(lease.lock);
    this.lastLost.set(lease.lock, lease);
    if (this.lastLost.size > MAX_KNOWN_TOKENS) this.lastLost.delete(this.lastLost.keys().next().value!);
    this.log.warn({ lock: lease.lock, token: lease.token, error: error.codeName }, "dlm client: lease lost");
    this.safeEmit("leaseLost", lease, error);
  }

  /**
   * End on the server a grant this client has declared lost by its own
   * clock, without committing (`abandon`), in the background. Until that is
   * answered, an acquire of the same lock waits for it (settleGivenUp), so
   * it is not refused ALREADY_HELD by the grant it gave up.
   */
  private giveUp(session: Session, lease: Lease): void {
    if (this.closed || session.expired) return;
    const done: Promise<boolean> = this.abandonOnServer(session, lease.lock, lease.token).then((ended) => {
      if (ended && this.givenUp.get(lease.lock) === done) this.givenUp.delete(lease.lock);
      return ended;
    });
    this.givenUp.delete(lease.lock);
    this.givenUp.set(lease.lock, done);
    if (this.givenUp.size > MAX_KNOWN_TOKENS) this.givenUp.delete(this.givenUp.keys().next().value!);
  }

  /** True when the grant is over on the server (abandoned now, or ended before). */
  private async abandonOnServer(session: Session, lock: string, token: number): Promise<boolean> {
    try {
      const reply = await this.logged(session, (seq, ack) => ({ op: "abandon", client: session.id, seq, ack, lock, token }));
      this.log.info({ lock, token, discarded: reply.discarded }, "dlm client: a lease lost locally was ended on the server");
      return true;
    } catch (e) {
      if (isDlmError(e) && LEASE_ENDING.has(e.codeName)) return true;
      this.log.warn({ lock, token, err: describe(e) }, "dlm client: could not end a lost lease on the server; the next acquire of the lock tries again");
      return false;
    }
  }

  /**
   * A wait given up in the background (cancelled, or timed out) still stands
   * on the server until its cleanup is answered; the next acquire of the
   * same locks waits for that cleanup first, so it is not refused
   * ALREADY_HELD by the wait (or the grant) this client already gave up.
   */
  private settleBeforeNextAcquire(build: () => LoggedRequest, cleanup: Promise<void>): void {
    for (const name of lockNamesOf(build())) {
      const before = this.givenUp.get(name);
      const done: Promise<boolean> = Promise.all([before, cleanup.catch(() => undefined)]).then(() => {
        if (this.givenUp.get(name) === done) this.givenUp.delete(name);
        return true;
      });
      this.givenUp.set(name, done);
    }
    if (this.givenUp.size > MAX_KNOWN_TOKENS) this.givenUp.delete(this.givenUp.keys().next().value!);
  }

  /** Waits (within the caller's signal) for a lost grant on `lock` to be ended on the server. */
  private async settleGivenUp(lock: string, signal: AbortSignal | undefined): Promise<void> {
    const done = this.givenUp.get(lock);
    if (!done) return;
    try {
      await raceSignal(done, signal);
    } catch {
      if (signal?.aborted) throw this.cancelledBy(signal, lock);
    }
  }

  /**
   * An acquire was refused ALREADY_HELD by a grant this client declared lost
   * (its abandon has not got through): abandon it again. False when the
   * refusal is about something else (a lease the caller still holds).
   */
  private regiveUp(lock: string, e: AlreadyHeldError): boolean {
    const lost = this.lastLost.get(lock);
    const session = this.current;
    if (!lost || !session || e.lease?.token !== lost.token || lost.clientId !== session.id) return false;
    this.giveUp(session, lost);
    return true;
  }

  private safeEmit(event: string, ...args: unknown[]): void {
    try {
      this.emit(event, ...args);
    } catch (e) {
      this.log.error({ err: describe(e), event }, "dlm client: an event listener threw");
    }
  }

  // ---------------------------------------------------------------- requests

  private checkOpen(): void {
    if (this.closed) throw new ClosedError("the dlm client is closed");
  }

  /** A logged request on `session`: new seq, retries, typed errors. */
  private async logged(
    session: Session,
    build: (seq: number, ack: number) => LoggedRequest,
    opts: CallOptions = {},
  ): Promise<OkReply> {
    if (session.expired) throw new SessionExpiredError(`session ${session.id} has expired`);
    const seq = session.seqs.issue();
    try {
      const answer = await this.call(session, () => build(seq, session.seqs.ack()), {
        signal: this.closing,
        ...opts,
      });
      if (!answer.reply.ok) throw this.replyError(session, answer.reply);
      return answer.reply;
    } finally {
      session.seqs.done(seq);
    }
  }

  /** An unlogged request that needs no session (status, read). */
  private async unlogged(req: Request): Promise<OkReply> {
    const answer = await this.call(undefined, () => req, { signal: this.closing });
    if (!answer.reply.ok) throw errorFromReply(answer.reply);
    return answer.reply;
  }

  /** The typed error for an error reply; SESSION_EXPIRED also ends the session. */
  private replyError(session: Session, reply: Extract<Reply, { ok: false }>): DlmError {
    const error = errorFromReply(reply);
    if (error.codeName === "SESSION_EXPIRED") this.expireSession(session, error);
    return error;
  }

  /** One attempt only; undefined if it timed out or nobody answered. */
  private async callOnce(
    session: Session,
    build: () => Request,
    signal: StopSignal,
    onSend?: (at: number) => void,
  ): Promise<Answer | undefined> {
    try {
      return await this.call(session, build, { signal, onSend, policy: { maxAttempts: 1, unavailableTimeoutMs: 0 } });
    } catch (e) {
      if (e instanceof TimeoutError || e instanceof UnavailableError) return undefined;
      throw e;
    }
  }

  /** Send `build()` under the retry policy; resolves with the first real answer. */
  private async call(session: Session | undefined, build: () => Request, opts: CallOptions = {}): Promise<Answer> {
    const policy: RetryPolicy = {
      requestTimeoutMs: this.options.requestTimeoutMs,
      firstAttemptTimeoutMs: this.options.firstAttemptTimeoutMs,
      maxAttempts: this.options.maxAttempts,
      backoff: this.options.backoff,
      unavailableTimeoutMs: this.options.unavailableTimeoutMs,
      ...opts.policy,
    };
    const subject = this.names.requestSubject;
    let firstSentAt: number | undefined;
    let op = "request";
    let seq: number | undefined;
    let waitedMs = 0;
    return retry<Answer>(
      policy,
      async (attempt) => {
        if (attempt > 1 && opts.noRetryAfter?.aborted) throw opts.noRetryAfter.reason;
        const req = build();
        op = req.op;
        seq = "seq" in req ? req.seq : undefined;
        const sentAt = now();
        firstSentAt ??= sentAt;
        if (session && "client" in req) session.lastSentAt = sentAt;
        opts.onSend?.(sentAt);
        let bytes: Uint8Array;
        const timeoutMs = attemptTimeoutMs(policy, attempt);
        try {
          bytes = await raceSignal(this.transport.request(subject, encoder.encode(JSON.stringify(req)), timeoutMs), opts.signal);
        } catch (e) {
          if (e instanceof TransportTimeoutError) {
            waitedMs += timeoutMs;
            return { kind: "timeout", error: e };
          }
          if (e instanceof TransportUnavailableError) return { kind: "unavailable", error: e };
          throw this.mapTransportFailure(e, op);
        }
        let reply: Reply;
        try {
          reply = JSON.parse(decoder.decode(bytes)) as Reply;
          if (typeof reply !== "object" || reply === null || typeof reply.ok !== "boolean") throw new Error("not a reply object");
        } catch (e) {
          throw new InternalError(`unreadable reply to ${op}: ${describe(e)}`, { cause: e });
        }
        this.log.trace?.({ op, seq, attempt, reply }, "dlm client: reply");
        if (!reply.ok && reply.error === "NOT_LEADER") return { kind: "unavailable", error: errorFromReply(reply) };
        return { kind: "done", value: { reply, sentAt, firstSentAt } };
      },
      {
        signal: opts.signal,
        timeoutExhausted: (attempts, last) =>
          new TimeoutError(
            `dlm ${op}${seq !== undefined ? ` (seq ${seq})` : ""} got no reply after ${attempts} attempt(s) (${waitedMs} ms in all); it may or may not have taken effect`,
            { cause: last },
          ),
        unavailableExhausted: (_elapsed, last) =>
          new UnavailableError(
            `no dlm coordinator answered on ${subject} within ${policy.unavailableTimeoutMs / 1000}s: is a node running?`,
            { cause: last },
          ),
        onRetry: (info) =>
          this.log.debug({ op, seq, attempt: info.attempt, kind: info.kind, delayMs: info.delayMs }, "dlm client: retrying"),
      },
    );
  }

  private mapTransportFailure(e: unknown, what: string): DlmError {
    if (e instanceof DlmError) return e;
    if (e instanceof TransportClosedError) return new ClosedError(`the NATS connection is closed (${what})`, { cause: e });
    if (e instanceof TransportUnavailableError) return new UnavailableError(`NATS is not reachable (${what}): ${e.message}`, { cause: e });
    if (e instanceof TransportTimeoutError) return new TimeoutError(`${what} timed out`, { cause: e });
    if (e instanceof TransportPermissionError) {
      return new InternalError(
        `${what}: ${e.message}. The NATS user may not use this subject: check its permissions and the client's namespace (docs/operations.md, "Security").`,
        { cause: e },
      );
    }
    return new InternalError(`${what} failed: ${describe(e)}`, { cause: e });
  }
}

/**
 * The options for the NATS connection `connect()` opens itself: the
 * pass-through ones as given, the namespace's inbox prefix unless one is
 * set, and the client's name. Timeouts become the client's own typed
 * errors, so the async stack trace nats.js would build for every request
 * is pure cost (`noAsyncTraces`).
 */
export function natsConnectionOptions(options: ClientOptions, resolved: ResolvedOptions): ConnectionOptions {
  const nats: ConnectionOptions = {};
  for (const key of NATS_PASS_THROUGH_KEYS) {
    if (options[key] !== undefined) (nats as Record<string, unknown>)[key] = options[key];
  }
  if (nats.inboxPrefix === undefined && resolved.namespace !== undefined) nats.inboxPrefix = inboxPrefixFor(resolved.namespace);
  return { ...nats, servers: resolved.servers, noAsyncTraces: true, ...(resolved.name ? { name: resolved.name } : {}) };
}

/**
 * Connect to a dlm cluster: open (or reuse) a NATS connection, subscribe to
 * notifications and say hello. Rejects with UnavailableError if NATS cannot
 * be reached (or refuses the credentials) or no coordinator answers within
 * the retry budget.
 *
 * The NATS connection is `options.nc` if given (left open by `close()`),
 * else one opened with `options.servers` and the NATS options in
 * `NatsPassThroughOptions` (credentials, TLS, reconnect settings,
 * `inboxPrefix`), closed by `close()`.
 */
export async function connect(options: ClientOptions = {}): Promise<DlmClient> {
  const resolved = resolveOptions(options); // validate before opening anything
  let transport: Transport;
  if (options.transport) {
    transport = options.transport;
  } else if (options.nc) {
    transport = new NatsTransport(options.nc, false);
  } else {
    try {
      const nc = await natsConnect(natsConnectionOptions(options, resolved));
      transport = new NatsTransport(nc, true);
    } catch (e) {
      throw new UnavailableError(`cannot connect to NATS at ${String(resolved.servers)}: ${describe(e)}`, { cause: e });
    }
  }
  const client = new DlmClient(transport, options);
  try {
    return await client.start();
  } catch (e) {
    await client.close().catch(() => undefined);
    throw e;
  }
}

/** Alias of `connect`, after the original lock server's `init`. */
export const init = connect;
