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
 * The client is a facade over its parts, one job each:
 *
 * - requests.ts: one request under the retry policy, typed errors;
 * - sessions.ts: hello, heartbeats, notifications, expiry, goodbye;
 * - acquireWaits.ts: waiting for a grant (acquire, acquireAll, commit):
 *   polls, cancels, giving up, queueing again;
 * - leaseKeeper.ts: held leases: renewals, local deadlines, release,
 *   abandon, loss;
 * - sections.ts: appends staged in the client and spilled when too big;
 * - serverCleanups.ts: what the next acquire of a lock waits for.
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
 *   longer tracked: its seq is acknowledged (a release's is not; see
 *   below). If an acquire the client gave up on is granted later anyway,
 *   the grant notification finds no waiter and the client releases that
 *   grant at once (an "orphan").
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
 * - A release that got no answer (TimeoutError) may have committed: its
 *   seq stays outstanding on the lease, the lease takes no appends, and the
 *   next release sends the same seq again (leaseKeeper.ts), so a release
 *   that did commit is reported committed, never LOCK_EXPIRED.
 * - `close()` does not release (commit) held leases: goodbye ends them
 *   without committing, and they are reported lost with ClosedError. Release
 *   first if you want your appends.
 *
 * Events: "leaseLost" (lease, error), "sessionExpired" (error, oldClientId),
 * "session" (clientId) after every successful hello, "closed".
 */
import { EventEmitter } from "node:events";
import { connect as natsConnect } from "@nats-io/transport-node";
import type { ConnectionOptions } from "@nats-io/nats-core";
import { readFileFrom } from "../protocol/filePages";
import { fileIndex } from "../protocol/files";
import { LOCK_NAME } from "../protocol/limits";
import { DEFAULT_LOCK, type LoggedRequest, type StatusView, type WireAppend } from "../protocol/messages";
import { names, type Names } from "../protocol/subjects";
import {
  BadRequestError,
  CancelledError,
  ClosedError,
  FileNotFoundError,
  InternalError,
  NotHolderError,
  TimeoutError,
  TooLargeError,
  UnavailableError,
  isDlmError,
} from "./errors";
import type { FaultInjector } from "./faults";
import { AcquireWaits } from "./acquireWaits";
import type { Committed, Discarded, Lease, LeaseOwner } from "./lease";
import { LeaseKeeper } from "./leaseKeeper";
import type { LeaseSet } from "./leaseSet";
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
import { Requests } from "./requests";
import { errorMessage } from "../util/errorMessage";
import { allAttemptsTimeoutMs, raceSignal } from "./retry";
import { RELEASE_FIELDS_WIRE_BYTES, SectionStager, requestBudget, wireBytesOf, type AppendResult } from "./sections";
import { ServerCleanups } from "./serverCleanups";
import { PendingAcquire, type Session, type SessionInfo } from "./session";
import { Sessions } from "./sessions";
import { Stopper } from "./stopper";
import { NatsTransport, type Transport } from "./transport";

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

export interface ReadOptions {
  /**
   * Where to start, in bytes from the start of the file (default 0). Files
   * only grow, so a reader that keeps the length it has read so far can ask
   * for what was appended since; past the end it gets no bytes.
   */
  offset?: number;
}

export interface CommitResult {
  lock: string;
  /** The fencing token the section was committed under. */
  token: number;
  committed: Committed;
}

export type { AppendResult, Committed, Discarded, SessionInfo };

/**
 * How long after its waitMs a tryAcquire waits for the server's answer
 * before it cancels the wait itself (at least 2 * requestTimeoutMs): covers
 * a lost WAIT_TIMEOUT and a leader failover in the middle of the wait.
 */
const TRY_BACKSTOP_MS = 5000;

function toBytes(data: string | Uint8Array): Buffer {
  return typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
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
  private readonly requests: Requests;
  private readonly sessions: Sessions;
  private readonly keeper: LeaseKeeper;
  private readonly waits: AcquireWaits;
  private readonly sections: SectionStager;

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
    const emit = (event: string, ...args: unknown[]): void => this.safeEmit(event, ...args);
    const cleanups = new ServerCleanups();
    this.requests = new Requests(this.transport, this.names, this.options, this.log, this.closing);
    this.keeper = new LeaseKeeper(this, this.requests, cleanups, this.options, this.log, this.closing, emit);
    this.sessions = new Sessions(this.transport, this.names, this.options, this.log, this.closing, this.faults, this.requests, this.keeper, emit);
    this.requests.onSessionExpired = (session, error, answeredSeq) => this.sessions.expire(session, error, answeredSeq);
    this.waits = new AcquireWaits(this.requests, this.sessions, this.keeper, cleanups, this.options, this.log, this.closing);
    this.sections = new SectionStager(this.requests, this.keeper, this.options);
  }

  /** Say hello (with the retry policy). connect() calls this. */
  async start(): Promise<this> {
    try {
      await this.sessions.ensure();
    } catch (e) {
      if (e instanceof TimeoutError) {
        const total = allAttemptsTimeoutMs(this.options) / 1000;
        throw new UnavailableError(
          `no dlm coordinator answered on ${this.requests.sessionlessSubject} within ${total}s: is a node running?`,
          { cause: e },
        );
      }
      throw e;
    }
    return this;
  }

  /** The current session id (changes when a session is renewed after expiry). */
  get clientId(): string | undefined {
    return this.sessions.current?.id;
  }

  /** The server's settings from the last hello. */
  get session(): SessionInfo | undefined {
    return this.sessions.current?.info;
  }

  /** The dlm version of the leader that answered the last hello. */
  get serverVersion(): string | undefined {
    return this.sessions.current?.serverVersion;
  }

  get closed(): boolean {
    return this.closing.aborted;
  }

  /** Leases currently held (not released, not lost). */
  get leases(): Lease[] {
    return this.keeper.held();
  }

  /** The held lease on `lock`, if any. */
  leaseFor(lock: string = DEFAULT_LOCK): Lease | undefined {
    return this.keeper.leaseFor(lock);
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
    return this.waits.inRounds([lock], opts.signal, () => this.acquireOnce(lock, opts, shape));
  }

  private acquireOnce(lock: string, opts: AcquireOptions, shape: ShapeFields): Promise<Lease> {
    return this.waits.queueFor(lock, opts, { op: "acquire", lock, ...shape }, (session, grant) => this.keeper.adopt(session, grant));
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
    return this.waits.inRounds(
      list.map((l) => l.lock),
      opts.signal,
      () => this.acquireAllOnce(list, opts),
    );
  }

  private acquireAllOnce(list: Array<{ lock: string; mode: LockMode }>, opts: AcquireAllOptions): Promise<LeaseSet> {
    const what = list.map((l) => l.lock).join(", ");
    return this.waits.queueFor(what, opts, { op: "acquireAll", locks: list }, (session, grant) =>
      this.keeper.adoptSet(session, grant, list.length, (g) => this.sessions.releaseGrant(session, g)),
    );
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
  endUncommitted(lease: Lease): Promise<void> {
    return this.keeper.endUncommitted(lease);
  }

  /** Release a lease (default: the held lease on "global"), committing its staged appends. */
  release(leaseOrLock?: Lease | string): Promise<Committed> {
    try {
      this.checkOpen();
      return this.keeper.releaseOf(leaseOrLock);
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
      return this.keeper.abandon(this.keeper.recordFor(lease, "abandon"));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Renew a lease now; the client also renews every leaseMs * renewFraction. */
  async renew(lease: Lease): Promise<Lease> {
    this.checkOpen();
    await this.keeper.renew(this.keeper.recordFor(lease, "renew"));
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
    if (bytes.length === 0) throw new BadRequestError("an append needs at least one byte of data");
    const lease = opts.lease ?? this.leaseFor(DEFAULT_LOCK);
    if (!lease) {
      const lost = this.keeper.lastLost(DEFAULT_LOCK);
      if (lost?.lostReason) throw lost.lostReason;
      throw new NotHolderError(`append needs a held lease on "${DEFAULT_LOCK}" (the lock that guards the files): acquire it first`);
    }
    if (lease.lock !== DEFAULT_LOCK) {
      throw new NotHolderError(`files are guarded by lock "${DEFAULT_LOCK}", not by "${lease.lock}"`);
    }
    const rec = this.keeper.recordFor(lease, "append");
    const max = rec.session.info?.maxAppendBytes;
    if (max !== undefined && bytes.length > max) {
      throw new TooLargeError(`append of ${bytes.length} bytes is larger than the server's limit of ${max}`);
    }
    if (rec.lease.state !== "held") {
      throw new NotHolderError(`cannot append: the lease on ${lease.lock} (token ${lease.token}) is being released`);
    }
    if (rec.releaseSeq !== undefined) {
      // The release got no answer and may have committed the section: an
      // append now would join a section that is already in the files, or
      // change the one the release is sent again with.
      throw new NotHolderError(
        `cannot append: the release of the lease on ${lease.lock} (token ${lease.token}) got no answer and may have committed the section; release() again to learn its outcome`,
      );
    }
    const payload = bytes.toString("base64");
    return this.sections.append(rec, file, payload, bytes.length);
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
    const cancelled = (signal: AbortSignal): CancelledError =>
      new CancelledError(`commit under ${lock} was cancelled before it was sent`, { cause: signal.reason });
    if (opts.signal?.aborted) throw cancelled(opts.signal);
    // A session may be starting (the first call, or after an expiry), which
    // can take the whole retry budget: an abort meanwhile ends the wait, and
    // nothing is sent.
    let session: Session;
    try {
      session = await raceSignal(this.sessions.ensure(), opts.signal);
    } catch (e) {
      if (opts.signal?.aborted) throw cancelled(opts.signal);
      throw e;
    }
    const info = session.info;
    const wire: WireAppend[] = [];
    let bytes = 0;
    let wireBytes = RELEASE_FIELDS_WIRE_BYTES;
    for (const a of appends) {
      if (fileIndex(a.file) === undefined) throw new FileNotFoundError(`${JSON.stringify(a.file)} is not one of file_0 … file_99`);
      const data = toBytes(a.data);
      if (data.length === 0) throw new BadRequestError(`an append needs at least one byte of data (${a.file})`);
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
    if (info?.maxSectionBytes === undefined || wireBytes > requestBudget(session.info)) {
      return this.commitInSteps(lock, appends, opts);
    }
    const seq = session.seqs.issue();
    const pending = new PendingAcquire(seq, lock);
    pending.commit = true;
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
    const grant = await this.waits.runCommit(session, pending, build, opts.signal, lock);
    session.rememberToken(grant.info.token);
    return { lock, token: grant.info.token, committed: { appends: wire.length, bytes } };
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

  /**
   * The committed content of `file` (from `opts.offset`), as it was when
   * the first page was read: a file larger than one NATS message comes in
   * pages (protocol/filePages.ts), and appends made meanwhile are not
   * included.
   */
  async read(file: string, opts: ReadOptions = {}): Promise<Buffer> {
    this.checkOpen();
    if (fileIndex(file) === undefined) {
      throw new FileNotFoundError(`${JSON.stringify(file)} is not one of file_0 … file_99`);
    }
    const from = opts.offset ?? 0;
    if (!Number.isSafeInteger(from) || from < 0) throw new BadRequestError(`read offset must be a non-negative integer, got ${String(opts.offset)}`);
    return readFileFrom(
      (offset) => this.requests.unlogged({ op: "read", file, offset }),
      (message) => new InternalError(`read ${file}: ${message}`),
      from,
    );
  }

  /** The leader's view of locks, queues, sessions and files. */
  async status(): Promise<StatusView> {
    this.checkOpen();
    const reply = await this.requests.unlogged({ op: "status" });
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
    const session = this.sessions.detach();
    this.keeper.loseAll(undefined, (lease) => new ClosedError(`the client was closed while holding ${lease.lock}; its grant ends without a commit`));
    const message = session ? await this.sessions.end(session, closedError) : undefined;
    try {
      await this.transport.close();
    } catch (e) {
      this.log.warn({ err: e }, "dlm client: closing the transport failed");
    }
    this.emit("closed");
    return message;
  }

  private safeEmit(event: string, ...args: unknown[]): void {
    try {
      this.emit(event, ...args);
    } catch (e) {
      this.log.error({ err: errorMessage(e), event }, "dlm client: an event listener threw");
    }
  }

  private checkOpen(): void {
    if (this.closed) throw new ClosedError("the dlm client is closed");
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
      throw new UnavailableError(`cannot connect to NATS at ${String(resolved.servers)}: ${errorMessage(e)}`, { cause: e });
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
