/**
 * Waiting for a grant: an acquire, acquireAll or one-request commit is sent
 * once, waits in the server's FIFO queue, and settles on its reply, its
 * `granted` notification, or a poll.
 *
 * - A queued request polls by re-sending its seq every
 *   min(requestTimeoutMs, leaseMs / 4), so a lost notification or reply is
 *   recovered and the session stays alive.
 * - Aborting a queued acquire sends `cancel`; if the wait had already
 *   ended in a grant, that grant is released. The CancelledError comes once
 *   the cancel is answered, or after 2 * requestTimeoutMs at most (the
 *   cleanup then finishes in the background).
 * - A request the client gave up on (TIMEOUT, UNAVAILABLE) may still wait
 *   on the server: it is cancelled in the background, and a grant it turns
 *   into is handed back. Until that cleanup is answered, the next acquire of
 *   the same locks waits for it (ServerCleanups); if the cancel never got
 *   through, the next acquire refused ALREADY_HELD by that wait cancels it
 *   again (`unendedWaits`).
 * - An acquire runs in up to MAX_LATE_GRANT_ROUNDS rounds: it queues again
 *   after a grant that ran out before it was seen (LateGrant), and after an
 *   ALREADY_HELD caused by a grant or wait this client had given up.
 */
import { DEFAULT_LIMITS } from "../protocol/limits";
import type { LeaseInfo, LoggedRequest, OkReply } from "../protocol/messages";
import { AlreadyHeldError, CancelledError, ClosedError, InternalError, isDlmError } from "./errors";
import { LateGrant, type LeaseKeeper } from "./leaseKeeper";
import type { LockMode, ShapeFields } from "./lockShapes";
import type { Logger, ResolvedOptions } from "./options";
import { errorMessage } from "../util/errorMessage";
import type { Answer, Requests } from "./requests";
import { raceSignal, sleep } from "./retry";
import { MAX_TRACKED_LOCKS, type ServerCleanups } from "./serverCleanups";
import { PendingAcquire, type GrantResult, type Session } from "./session";
import type { Sessions } from "./sessions";
import { Stopper, type StopSignal } from "./stopper";

/**
 * The reason an acquire's internal send/poll loop is stopped once it is no
 * longer needed. Nobody outside sees it; one frozen error serves every
 * acquire rather than a new one (with its stack trace) each time.
 */
const LOOP_ENDED: Error = Object.freeze(new Error("the acquire's send/poll loop ended"));
/** How many times acquire() queues again after a grant that ran out before it was seen. */
const MAX_LATE_GRANT_ROUNDS = 3;
/** Shortest interval between polls of a queued acquire. */
const MIN_POLL_MS = 20;

/** The locks an acquire, commit or acquireAll request names. */
function lockNamesOf(req: LoggedRequest): string[] {
  return req.op === "acquireAll" ? req.locks.map((l) => l.lock) : "lock" in req ? [req.lock] : [];
}

/** The grants an answer to an acquire or acquireAll carries. */
function grantsOf(reply: OkReply): LeaseInfo[] {
  if (reply.leases && reply.leases.length > 0) return reply.leases;
  return reply.lease ? [reply.lease] : [];
}

/** What an acquire or acquireAll request asks for, besides the session fields and the caller's lease and wait. */
export type AcquireFields = ({ op: "acquire"; lock: string } & ShapeFields) | { op: "acquireAll"; locks: Array<{ lock: string; mode: LockMode }> };

/** A running send/poll loop (startLoop). */
interface WaitLoop {
  /** Aborted when the loop is to end: the caller's abort, the client's close, or halt/end. */
  readonly stop: Stopper;
  /** The caller's signal aborted the wait. */
  userAborted: boolean;
  /** Ends the loop now (the waiter settled), without waiting for it. */
  halt(): void;
  /** Ends the loop, drops its listeners, and resolves once it has ended. Idempotent. */
  end(): Promise<void>;
}

export class AcquireWaits {
  /**
   * Waits this client gave up whose cancel did not get through (a fault
   * outlasted it): lock name -> the session and seq still queued on the
   * server. The next acquire of that lock, refused ALREADY_HELD by that
   * wait, cancels it again instead of failing.
   */
  private readonly unendedWaits = new Map<string, { sessionId: string; seq: number }>();

  constructor(
    private readonly requests: Requests,
    private readonly sessions: Sessions,
    private readonly leases: LeaseKeeper,
    private readonly cleanups: ServerCleanups,
    private readonly options: ResolvedOptions,
    private readonly log: Logger,
    private readonly closing: Stopper,
  ) {}

  /**
   * Runs one acquire (of `locks`) until it is granted, in up to
   * MAX_LATE_GRANT_ROUNDS rounds: waits first for grants of those locks this
   * client gave up to be ended on the server, and queues again after a
   * grant that ran out before it was seen, or after an ALREADY_HELD caused
   * by a given-up grant or wait the server still counts.
   */
  async inRounds<T>(locks: readonly string[], signal: AbortSignal | undefined, once: () => Promise<T>): Promise<T> {
    for (let round = 1; ; round++) {
      for (const lock of locks) {
        if (!(await this.cleanups.settle(lock, signal))) throw this.cancelledBy(signal!, lock);
      }
      try {
        const granted = await once();
        // Granted, so no wait of this client stands on these locks any more.
        for (const lock of locks) this.unendedWaits.delete(lock);
        return granted;
      } catch (e) {
        // The grant ran out before the client learned of it (its notification
        // was lost and the poll found it late): wait in line again.
        if (e instanceof LateGrant && round < MAX_LATE_GRANT_ROUNDS && !this.closing.aborted && !signal?.aborted) {
          this.log.warn({ locks, round }, "dlm client: a grant ran out before it was seen; acquiring again");
          continue;
        }
        // The server still counts a grant this client gave up (its abandon
        // did not get through yet): end it again, then ask again.
        if (e instanceof AlreadyHeldError && round < MAX_LATE_GRANT_ROUNDS && this.leases.regiveUp(this.sessions.current, e.lease?.lock ?? locks[0]!, e)) continue;
        // Or by a wait it gave up whose cancel did not get through: cancel it again.
        if (e instanceof AlreadyHeldError && round < MAX_LATE_GRANT_ROUNDS && (await this.recancelUnendedWait(locks, e))) continue;
        throw e instanceof LateGrant ? e.error : e;
      }
    }
  }

  /**
   * Sends one acquire or acquireAll (`fields`, plus the session fields and
   * the caller's lease and wait) and waits for its grant under runAcquire.
   */
  async queueFor<T>(
    what: string,
    opts: { leaseMs?: number; waitMs?: number; signal?: AbortSignal },
    fields: AcquireFields,
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
      return await raceSignal(this.sessions.ensure(), signal);
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
    const wait = this.startLoop(session, pending, build, pollMs, signal, () => this.cancelledBy(signal!, pending.lock));
    try {
      let grant: GrantResult;
      try {
        grant = await raceSignal(pending.promise, wait.stop);
      } catch (e) {
        if (wait.userAborted && !this.closing.aborted) {
          wait.halt();
          // Wait for the cancel a little; if the server is slow to answer,
          // finish it in the background (the seq stays outstanding until then)
          // rather than hold the caller's rejection for the whole retry budget.
          cleanupInBackground = true;
          const cleanup = this.cancelWait(session, pending, build).finally(() => this.forgetAcquire(session, pending));
          this.cleanups.trackWait(lockNamesOf(build()), cleanup);
          await Promise.race([cleanup, sleep(2 * this.options.requestTimeoutMs, this.closing).catch(() => {})]);
          throw this.cancelledBy(signal!, pending.lock);
        }
        if (this.closing.aborted) throw new ClosedError(`the client was closed while acquiring ${pending.lock}`, { cause: e });
        // An ended session has no wait left to cancel (its end cancelled it, or it ran).
      if ((isDlmError(e, "TIMEOUT") || isDlmError(e, "UNAVAILABLE")) && !session.expired) {
          // Giving up here does not end the wait on the server: it may still
          // be queued, and would later block this client's own acquires
          // (ALREADY_HELD) or hold the lock for a lease if its grant
          // notification were lost. Cancel it, or hand back the grant, in
          // the background.
          cleanupInBackground = true;
          const cleanup = this.abandonAcquire(session, pending, build).finally(() => this.forgetAcquire(session, pending));
          this.cleanups.trackWait(lockNamesOf(build()), cleanup);
        }
        throw e;
      }
      wait.halt();
      if (signal?.aborted) {
        // Granted and aborted at about the same time: honour the abort.
        this.sessions.releaseGrant(session, grant);
        throw this.cancelledBy(signal, pending.lock);
      }
      return await adopt(grant);
    } finally {
      await wait.end();
      if (!cleanupInBackground) this.forgetAcquire(session, pending);
    }
  }

  /**
   * Starts the send/poll loop of `pending`, stopped by the caller's abort
   * (`signal`, with `userAbortReason`), by the client's close, or by the
   * waiter once settled (`halt`, `end`).
   */
  private startLoop(
    session: Session,
    pending: PendingAcquire,
    build: () => LoggedRequest,
    pollMs: number,
    signal: AbortSignal | undefined,
    userAbortReason: () => unknown,
  ): WaitLoop {
    const stop = new Stopper();
    const wait: WaitLoop = {
      stop,
      userAborted: false,
      halt: () => stop.abort(LOOP_ENDED),
      end: async () => {
        stop.abort(LOOP_ENDED);
        signal?.removeEventListener("abort", onUserAbort);
        this.closing.removeEventListener("abort", onClose);
        await loop;
      },
    };
    const onUserAbort = (): void => {
      wait.userAborted = true;
      stop.abort(userAbortReason());
    };
    const onClose = (): void => stop.abort(this.closing.reason);
    // A listener added to a signal that has already aborted never runs: an
    // abort that came after the caller's last check (while the session
    // started, say) would be ignored and the request sent anyway.
    if (signal?.aborted) onUserAbort();
    else signal?.addEventListener("abort", onUserAbort, { once: true });
    this.closing.addEventListener("abort", onClose, { once: true });
    const loop = this.acquireLoop(session, pending, build, stop, pollMs).catch((e: unknown) => {
      if (!stop.aborted) pending.fail(e instanceof Error ? e : new InternalError(String(e)));
    });
    return wait;
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
    const first = await this.requests.call(session, build, { signal, onSend });
    if (this.onAcquireAnswer(session, pending, first) !== "queued") return;
    for (;;) {
      await sleep(pollMs, signal);
      if (pending.state !== "waiting") return;
      const answer = await this.requests.callOnce(session, build, signal, onSend);
      if (answer && this.onAcquireAnswer(session, pending, answer) !== "queued") return;
    }
  }

  private onAcquireAnswer(session: Session, pending: PendingAcquire, answer: Answer): "queued" | "settled" {
    const reply = answer.reply;
    if (reply.ok) {
      if (reply.status === "queued") {
        pending.queued(answer.sentAt);
        session.seqs.queued(pending.seq);
        return "queued";
      }
      if (reply.leases && reply.leases.length > 0) {
        pending.grant(reply.leases[0]!, performance.now(), reply.leases);
        return "settled";
      }
      if (reply.lease) {
        pending.grant(reply.lease, performance.now());
        return "settled";
      }
      pending.fail(new InternalError(`unexpected acquire reply: ${JSON.stringify(reply)}`));
      return "settled";
    }
    pending.fail(this.requests.replyError(session, reply, pending.seq));
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
        const reply = await this.requests.logged(session, (cseq, ack) => ({ op: "cancel", client: session.id, seq: cseq, ack, target: seq }));
        if (reply.cancelled) {
          pending.fail(new CancelledError("cancelled"));
          return;
        }
        if (pending.state !== "waiting") break;
        // Not waiting: granted, ended, or never arrived. Ask with the same seq.
        const answer = await this.requests.call(session, build, { signal: this.closing });
        if (this.onAcquireAnswer(session, pending, answer) === "settled") break;
      }
      if (pending.state === "granted" && pending.result) this.sessions.releaseGrant(session, pending.result);
    } catch (e) {
      this.log.warn({ err: errorMessage(e), seq }, "dlm client: cancelling a wait failed; a late grant will be released");
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
      const reply = await this.requests.logged(session, (cseq, ack) => ({ op: "cancel", client: session.id, seq: cseq, ack, target: pending.seq }));
      if (reply.cancelled) return;
      const answer = await this.requests.call(session, build, { signal: this.closing });
      // A grant whose notification came meanwhile was released as an orphan then (its token is known).
      if (answer.reply.ok) for (const info of grantsOf(answer.reply)) if (!session.knownTokens.has(info.token)) this.sessions.releaseOrphan(session, info);
    } catch (e) {
      this.log.warn({ err: errorMessage(e), seq: pending.seq }, "dlm client: abandoning a timed-out acquire failed; a late grant will be released");
      this.rememberUnendedWait(session, build, pending.seq);
    }
  }

  private rememberUnendedWait(session: Session, build: () => LoggedRequest, seq: number): void {
    if (session.expired) return;
    for (const name of lockNamesOf(build())) this.unendedWaits.set(name, { sessionId: session.id, seq });
    while (this.unendedWaits.size > MAX_TRACKED_LOCKS) this.unendedWaits.delete(this.unendedWaits.keys().next().value!);
  }

  /**
   * An acquire of `locks` was refused ALREADY_HELD: if that is a wait this
   * client gave up and could not cancel, cancel it again (by its seq; a
   * grant it turned into is handed back) and say so, so the acquire is
   * sent again. False when the refusal is about something else.
   */
  private async recancelUnendedWait(locks: readonly string[], e: AlreadyHeldError): Promise<boolean> {
    if (e.lease) return false;
    const session = this.sessions.current;
    const name = locks.find((l) => this.unendedWaits.get(l)?.sessionId === session?.id);
    const stale = name === undefined ? undefined : this.unendedWaits.get(name);
    if (!session || name === undefined || !stale) return false;
    try {
      const reply = await this.requests.logged(session, (cseq, ack) => ({ op: "cancel", client: session.id, seq: cseq, ack, target: stale.seq }));
      this.log.info({ lock: name, seq: stale.seq, cancelled: reply.cancelled }, "dlm client: cancelled again a wait it had given up");
    } catch (err) {
      this.log.warn({ lock: name, seq: stale.seq, err: errorMessage(err) }, "dlm client: could not cancel a wait it had given up");
      return false;
    }
    for (const [lock, wait] of [...this.unendedWaits]) if (wait.seq === stale.seq && wait.sessionId === stale.sessionId) this.unendedWaits.delete(lock);
    return true;
  }

  // ---------------------------------------------------------------- one-request commit

  /**
   * Waits for a one-request commit (`pending`, sent by `build`) to run:
   * resolves with the grant it ran under. If the caller aborts (`signal`)
   * before it ran, it is cancelled on the server (CancelledError); if it
   * ran anyway, its grant is returned, since the section is in the files.
   * A commit the client gives up on (TIMEOUT, UNAVAILABLE) is cancelled in
   * the background, so it does not commit long after the caller was told
   * it timed out; the next acquire or commit of the lock waits for that
   * cancel, as after a given-up acquire.
   */
  async runCommit(session: Session, pending: PendingAcquire, build: () => LoggedRequest, signal: AbortSignal | undefined, lock: string): Promise<GrantResult> {
    const wait = this.startLoop(session, pending, build, this.options.requestTimeoutMs, signal, () => signal?.reason);
    let abandoned = false;
    try {
      return await raceSignal(pending.promise, wait.stop);
    } catch (e) {
      if (this.closing.aborted) throw new ClosedError(`the client was closed while committing under ${lock}`, { cause: e });
      if (wait.userAborted) {
        await wait.end();
        return await this.cancelCommit(session, pending, build, lock);
      }
      if (isDlmError(e, "TIMEOUT") || isDlmError(e, "UNAVAILABLE")) {
        // It may still wait in the queue: cancel it in the background so it
        // does not commit long after the caller was told it timed out. Like
        // a given-up acquire's wait, it would also refuse this client's next
        // acquire or commit of the lock ALREADY_HELD: that one waits for the
        // cancel first.
        abandoned = true;
        const cleanup = this.abandonCommit(session, pending, build).finally(() => this.forgetAcquire(session, pending));
        this.cleanups.trackWait([lock], cleanup);
      }
      throw e;
    } finally {
      await wait.end();
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
    const reply = await this.requests.logged(session, (cseq, ack) => ({ op: "cancel", client: session.id, seq: cseq, ack, target: pending.seq }));
    if (reply.cancelled) throw new CancelledError(`commit under ${lock} was cancelled; nothing was written`);
    const answer = await this.requests.call(session, build, { signal: this.closing });
    this.onAcquireAnswer(session, pending, answer);
    if (pending.state === "granted" && pending.result) return pending.result;
    throw pending.error ?? new InternalError(`a cancelled commit (seq ${pending.seq}) is neither waiting nor answered`);
  }

  /**
   * Best effort: cancel a commit the client gave up on, if it is still
   * waiting. If the cancel does not get through, the next acquire refused
   * ALREADY_HELD by that wait cancels it again (`unendedWaits`).
   */
  private async abandonCommit(session: Session, pending: PendingAcquire, build: () => LoggedRequest): Promise<void> {
    try {
      await this.requests.logged(session, (cseq, ack) => ({ op: "cancel", client: session.id, seq: cseq, ack, target: pending.seq }));
    } catch (e) {
      this.log.warn({ err: errorMessage(e), seq: pending.seq }, "dlm client: cancelling an abandoned commit failed; it may still commit once");
      this.rememberUnendedWait(session, build, pending.seq);
    }
  }
}
