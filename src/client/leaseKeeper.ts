/**
 * The client's held leases: a record per lease, its renewals in the
 * background, its safe local deadline, how it ends (release commits the
 * section, abandon discards it) and how it is lost.
 *
 * - A grant becomes a Lease in `adopt`. If less than half of it is left by
 *   the safe local bound (it was found late, by polling), a renew confirms
 *   it first; if the server says it already ended, `LateGrant` is thrown so
 *   the acquire queues again.
 * - Renewals go out every leaseMs * renewFraction. `confirmedAt` is the
 *   first send of the last renew the server confirmed: the lease runs at
 *   least until confirmedAt + leaseMs, and when that passes with no renew
 *   confirmed the lease is lost here and abandoned on the server (giveUp),
 *   since the server may still count it.
 * - A lease is lost when the server says its grant ended (LOCK_EXPIRED,
 *   NOT_HOLDER, SESSION_EXPIRED), by the local deadline, or when the client
 *   closes. Later calls on the lock say why (`lastLost`).
 * - A release that got no answer (TIMEOUT, UNAVAILABLE) may have committed.
 *   Its seq stays outstanding on the record (`releaseSeq`), the lease takes
 *   no more appends, and the next release sends the same seq again: the
 *   server answers it from its reply cache if it ran (committed, or its
 *   refusal), and runs it now if it never arrived. A new seq would be
 *   refused NOT_HOLDER after a release that did commit, and the caller,
 *   told LOCK_EXPIRED, would run the section again and write it twice.
 */
import { DEFAULT_LOCK, type OkReply } from "../protocol/messages";
import {
  type AlreadyHeldError,
  type DlmError,
  InternalError,
  LockExpiredError,
  NotHolderError,
  SessionExpiredError,
  TimeoutError,
  isDlmError,
} from "./errors";
import { Lease, type Committed, type Discarded, type LeaseOwner } from "./lease";
import { LeaseSet } from "./leaseSet";
import type { Logger, ResolvedOptions } from "./options";
import { errorMessage } from "../util/errorMessage";
import { outcomeUnknown, type Requests } from "./requests";
import { emptySection, type LocalSection } from "./sections";
import { MAX_TRACKED_LOCKS, type ServerCleanups } from "./serverCleanups";
import { mayHaveRun, type GrantResult, type Session } from "./session";
import type { Stopper } from "./stopper";

export interface LeaseRecord {
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
  /**
   * The seq of a release of this lease that got no answer: it may have
   * committed. Outstanding (not acknowledged) until it is answered or the
   * lease ends here, so the server keeps its answer; the next release sends
   * it again. While it is set the lease takes no appends.
   */
  releaseSeq: number | undefined;
  /** How many times `releaseSeq` was sent (every attempt of every release() call); 0 once it is settled. */
  releaseSends: number;
}

/** A grant that had already ended when the client learned of it (internal). */
export class LateGrant extends Error {
  constructor(readonly error: DlmError) {
    super(`the grant ended before the client saw it: ${error.message}`);
  }
}

/** Errors that end a grant: the lease is lost. */
const LEASE_ENDING = new Set(["LOCK_EXPIRED", "NOT_HOLDER", "SESSION_EXPIRED"]);

export class LeaseKeeper {
  private readonly records = new Map<Lease, LeaseRecord>();
  /** Per lock: the latest lease lost and not yet followed by a new grant, so later calls say why. */
  private readonly lost = new Map<string, Lease>();
  /**
   * Leases whose release got no answer at first and was answered later,
   * not through the caller's own release() (in the background, or inside
   * an abandon): what it committed, so the caller's next release() of the
   * lease says so instead of "already released".
   */
  private readonly committedLate = new WeakMap<Lease, Committed>();

  constructor(
    /** The client: what a Lease calls back for release, abandon and renew. */
    private readonly owner: LeaseOwner,
    private readonly requests: Requests,
    private readonly cleanups: ServerCleanups,
    private readonly options: ResolvedOptions,
    private readonly log: Logger,
    private readonly closing: Stopper,
    private readonly emit: (event: string, ...args: unknown[]) => void,
  ) {}

  /** Leases currently held (not released, not lost). */
  held(): Lease[] {
    return [...this.records.keys()];
  }

  /** The held lease on `lock`, if any. */
  leaseFor(lock: string): Lease | undefined {
    for (const lease of this.records.keys()) if (lease.lock === lock) return lease;
    return undefined;
  }

  /** The latest lease on `lock` that was lost and not followed by a new grant. */
  lastLost(lock: string): Lease | undefined {
    return this.lost.get(lock);
  }

  /**
   * The record of a held lease (or of the held lease on a lock, default
   * "global"); throws why there is none: the loss, the release, or that
   * nothing is held.
   */
  recordFor(leaseOrLock: Lease | string | undefined, what: string): LeaseRecord {
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
      const lost = this.lost.get(lock);
      if (lost?.lostReason) throw lost.lostReason;
      throw new NotHolderError(`cannot ${what}: this client holds no lease on ${lock}`);
    }
    return this.records.get(lease)!;
  }

  // ---------------------------------------------------------------- adopting grants

  /**
   * Turn a grant into a held Lease with its renew and deadline timers. If
   * less than half the lease is left by the safe local bound (the grant was
   * found late, by polling), confirm it with a renew first; if the server
   * says the grant already ended, throw LateGrant so acquire() queues again.
   */
  async adopt(session: Session, grant: GrantResult): Promise<Lease> {
    if (session.expired) {
      throw new SessionExpiredError(`session ${session.id} expired as ${grant.info.lock} was granted`);
    }
    session.rememberToken(grant.info.token);
    let info = grant.info;
    let confirmedAt = grant.grantedAfter;
    if (confirmedAt + info.leaseMs - performance.now() < info.leaseMs / 2) {
      try {
        const { reply, firstSentAt } = await this.sendRenew(session, info);
        if (reply.lease) info = reply.lease;
        if (firstSentAt !== undefined) confirmedAt = Math.max(confirmedAt, firstSentAt);
      } catch (e) {
        if (isDlmError(e, "LOCK_EXPIRED") || isDlmError(e, "NOT_HOLDER")) throw new LateGrant(e);
        if (isDlmError(e, "SESSION_EXPIRED") || isDlmError(e, "CLOSED")) throw e;
        // Outcome unknown: keep the grant; the local deadline decides.
        this.log.debug({ err: errorMessage(e) }, "dlm client: could not confirm a late grant");
      }
    }
    if (confirmedAt + info.leaseMs <= performance.now()) {
      // Seen so late that even the safe local bound has passed, and no renew
      // confirmed it: the server may already have granted the lock to the
      // next waiter. Handing this lease out would let the caller stage a
      // section under it before the deadline timer gets a turn, so end it on
      // the server without committing and queue again. The acquire's next
      // round waits for that abandon (ServerCleanups), or the server, still
      // counting this grant, would refuse it ALREADY_HELD.
      this.giveUp(session, info.lock, info.token);
      throw new LateGrant(
        new LockExpiredError(`the grant of ${info.lock} (token ${info.token}) was seen after its lease ran out (measured locally)`),
      );
    }
    const lease = new Lease(this.owner, info, session.id);
    const rec: LeaseRecord = {
      lease,
      session,
      confirmedAt,
      renewTimer: undefined,
      deadlineTimer: undefined,
      releasing: undefined,
      abandoning: undefined,
      section: emptySection(),
      appending: Promise.resolve(),
      releaseSeq: undefined,
      releaseSends: 0,
    };
    this.records.set(lease, rec);
    this.lost.delete(lease.lock);
    this.log.debug({ lock: lease.lock, token: lease.token, leaseMs: lease.leaseMs }, "dlm client: granted");
    this.scheduleRenew(rec);
    this.scheduleDeadline(rec);
    return lease;
  }

  /**
   * Turn an acquireAll's grants into held Leases (each as `adopt` does)
   * and gather them in a LeaseSet. All or none: if one cannot be adopted
   * (it ran out before it was seen: LateGrant, so the set queues again),
   * the others are ended without committing and the error is thrown.
   */
  async adoptSet(session: Session, grant: GrantResult, expected: number, releaseGrant: (grant: GrantResult) => void): Promise<LeaseSet> {
    const infos = grant.all ?? [grant.info];
    if (infos.length !== expected) {
      releaseGrant(grant);
      throw new InternalError(`acquireAll asked for ${expected} locks and was granted ${infos.length}`);
    }
    const adopted = await Promise.allSettled(infos.map((info) => this.adopt(session, { info, grantedAfter: grant.grantedAfter })));
    const leases = adopted.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    const failed = adopted.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) {
      await Promise.all(leases.map((lease) => this.endUncommitted(lease)));
      throw failed.reason;
    }
    return new LeaseSet(leases, (e) => this.log.error({ err: errorMessage(e) }, "dlm client: a lease set 'lost' listener threw"));
  }

  // ---------------------------------------------------------------- ending grants

  /**
   * Release `leaseOrLock` (a Lease, or the held lease on a lock, default
   * "global"), as client.release() does. A lease whose release was answered
   * after the caller's last release() gave up on it resolves with what that
   * release committed.
   */
  releaseOf(leaseOrLock: Lease | string | undefined): Promise<Committed> {
    const late = leaseOrLock instanceof Lease ? this.committedLate.get(leaseOrLock) : undefined;
    if (late) return Promise.resolve(late);
    return this.release(this.recordFor(leaseOrLock, "release"));
  }

  /** Release (commit) the lease's section; one release at a time per lease. */
  release(rec: LeaseRecord): Promise<Committed> {
    rec.releasing ??= this.doRelease(rec).finally(() => {
      rec.releasing = undefined;
    });
    return rec.releasing;
  }

  /** Abandon (discard) the lease's section; one abandon at a time per lease. */
  abandon(rec: LeaseRecord): Promise<Discarded> {
    rec.abandoning ??= this.doAbandon(rec).finally(() => {
      rec.abandoning = undefined;
    });
    return rec.abandoning;
  }

  /**
   * End `lease`'s grant without committing if it is still held, and never
   * reject. If the abandon cannot be confirmed, the lease is dropped locally
   * (no more renewals, reported lost with the abandon's error): the server
   * ends the grant when its lease runs out, which discards the section too.
   */
  async endUncommitted(lease: Lease): Promise<void> {
    let rec = this.records.get(lease);
    if (!rec) return;
    // A release or abandon in flight decides first.
    const inFlight = rec.releasing ?? rec.abandoning;
    if (inFlight) await inFlight.then(() => undefined, () => undefined);
    rec = this.records.get(lease);
    if (!rec || this.closing.aborted || lease.state !== "held") return;
    try {
      await this.abandon(rec);
    } catch (e) {
      if (lease.released) {
        // The abandon found that a release sent earlier, whose answer had
        // been lost, committed the section: the grant is over all the same.
        this.log.info({ lock: lease.lock, token: lease.token, err: errorMessage(e) }, "dlm client: the lease's earlier release had committed its section");
        return;
      }
      this.log.warn({ lock: lease.lock, token: lease.token, err: errorMessage(e) }, "dlm client: abandoning after a failed section failed; the lease will run out");
      const left = this.records.get(lease);
      if (left) this.loseLease(left, isDlmError(e) ? e : new InternalError(`abandon failed: ${errorMessage(e)}`, { cause: e }));
    }
  }

  /**
   * Releases a grant: commits its section (the staged appends named by
   * count, then those still in the client, sent with the release).
   */
  private async doRelease(rec: LeaseRecord): Promise<Committed> {
    const { lease } = rec;
    try {
      // Appends still spilling belong to the section: wait for them.
      await this.startEnding(rec);
      if (lease.lost && lease.lostReason) throw lease.lostReason;
      const reply = await this.sendRelease(rec);
      this.dropRecord(rec);
      lease._setState("released");
      this.log.debug({ lock: lease.lock, token: lease.token, committed: reply.committed }, "dlm client: released");
      return reply.committed ?? { appends: 0, bytes: 0 };
    } catch (e) {
      if (lease.state === "releasing") {
        if (isDlmError(e) && LEASE_ENDING.has(e.codeName)) {
          this.loseLease(rec, e);
        } else {
          // Refused for another reason (nothing committed), or the outcome
          // is unknown (its seq is kept in releaseSeq): keep holding; the
          // caller may release again.
          this.holdAgain(rec);
        }
      }
      // The session's end, learned from this release's answer, may have
      // lost the lease with a truer reason (the section's fate is unknown).
      if (isDlmError(e, "SESSION_EXPIRED") && lease.lost && lease.lostReason) throw lease.lostReason;
      throw e;
    }
  }

  /**
   * Sends the lease's release: the section (the count of appends logged on
   * their own, and those still in the client). A release that got no answer
   * before goes again under its own seq (`releaseSeq`); the section is the
   * same, since the lease took no appends since. If this one gets no answer
   * either, its seq stays outstanding in `releaseSeq`.
   */
  private async sendRelease(rec: LeaseRecord): Promise<OkReply> {
    const { lease, session, section } = rec;
    rec.releaseSeq ??= session.seqs.issue();
    const seq = rec.releaseSeq;
    const sent = (): void => {
      if (rec.releaseSeq === seq) rec.releaseSends++;
    };
    try {
      const reply = await this.requests.logged(
        session,
        (s, ack) => ({
          op: "release",
          client: session.id,
          seq: s,
          ack,
          lock: lease.lock,
          token: lease.token,
          ...(session.info?.maxSectionBytes === undefined ? {} : { staged: section.spilled }),
          ...(section.inline.length > 0 ? { appends: section.inline } : {}),
        }),
        { seq, onSend: sent },
      );
      this.settleRelease(rec);
      return reply;
    } catch (e) {
      if (!outcomeUnknown(e)) this.settleRelease(rec);
      throw e;
    }
  }

  /** The lease's release was answered, or will never be asked about again: its seq is acknowledged. */
  private settleRelease(rec: LeaseRecord): void {
    if (rec.releaseSeq === undefined) return;
    rec.session.seqs.done(rec.releaseSeq);
    rec.releaseSeq = undefined;
    rec.releaseSends = 0;
  }

  /**
   * Ends a grant without committing: the server drops what it staged (the
   * spilled appends), and the client drops the rest of the section, which
   * it never sent. An append still spilling is waited for first, so the
   * count of what was discarded is whole.
   */
  private async doAbandon(rec: LeaseRecord): Promise<Discarded> {
    const { lease, session } = rec;
    try {
      await this.startEnding(rec);
      if (lease.lost) return { appends: 0, bytes: 0 };
      const local = { appends: rec.section.inline.length, bytes: rec.section.inlineBytes };
      let reply: OkReply;
      try {
        reply = await this.requests.logged(session, (seq, ack) => ({
          op: "abandon",
          client: session.id,
          seq,
          ack,
          lock: lease.lock,
          token: lease.token,
        }));
      } catch (e) {
        // The grant is over. If a release of it got no answer, that release
        // may be what ended it (a released token is NOT_HOLDER; one that
        // expired or was abandoned is LOCK_EXPIRED): its own seq tells.
        if (rec.releaseSeq !== undefined && isDlmError(e, "NOT_HOLDER")) throw await this.releasedBeforeAbandon(rec);
        throw e;
      }
      // Abandoned: a release still unanswered had not run, and never will
      // (the grant is over); dropRecord acknowledges its seq.
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
        this.holdAgain(rec);
      }
      throw e;
    }
  }

  /**
   * An abandon was refused NOT_HOLDER while a release of the lease had no
   * answer: send that release again (same seq) to learn whether it
   * committed. If it did, the lease is released and this returns the error
   * the abandon rejects with, since the caller must not think the section
   * was discarded. If it did not, this throws the release's refusal (the
   * grant ended without a commit) or its TimeoutError, which doAbandon
   * handles as its own.
   */
  private async releasedBeforeAbandon(rec: LeaseRecord): Promise<DlmError> {
    const { lease } = rec;
    const seq = rec.releaseSeq;
    const reply = await this.sendRelease(rec);
    const committed = reply.committed ?? { appends: 0, bytes: 0 };
    this.dropRecord(rec);
    lease._setState("released");
    this.committedLate.set(lease, committed);
    this.log.info({ lock: lease.lock, token: lease.token, committed }, "dlm client: released (an earlier release, asked again before abandoning)");
    return new NotHolderError(
      `cannot abandon the lease on ${lease.lock} (token ${lease.token}): its release sent earlier (seq ${seq}), whose answer was lost, ` +
        `had committed the section (${committed.appends} appends, ${committed.bytes} bytes)`,
    );
  }

  /**
   * A release or abandon begins: the lease stops renewing (its answer
   * decides, not the deadline), and the appends still spilling are waited
   * for, since they belong to the section either one ends.
   */
  private startEnding(rec: LeaseRecord): Promise<unknown> {
    rec.lease._setState("releasing");
    if (rec.renewTimer) clearTimeout(rec.renewTimer);
    rec.renewTimer = undefined;
    return rec.appending;
  }

  /** A release or abandon whose outcome is unknown: the lease is held (and renewed) again. */
  private holdAgain(rec: LeaseRecord): void {
    rec.lease._setState("held");
    this.scheduleRenew(rec);
    this.scheduleDeadline(rec);
  }

  // ---------------------------------------------------------------- renewals and deadlines

  /** Renews the lease of `rec` now, and moves its local deadline. */
  async renew(rec: LeaseRecord): Promise<void> {
    const { lease, session } = rec;
    try {
      const { reply, firstSentAt } = await this.sendRenew(session, lease);
      if (lease.state !== "held" && lease.state !== "releasing") return;
      if (reply.lease) lease._update(reply.lease);
      // The server renewed no earlier than our first send of this seq.
      if (firstSentAt !== undefined && firstSentAt > rec.confirmedAt) rec.confirmedAt = firstSentAt;
      this.scheduleDeadline(rec);
    } catch (e) {
      this.onRenewRefused(rec, e);
      throw e;
    }
  }

  /**
   * A renew of `rec` failed with `e`. Only a held lease is lost by it: while
   * a release or abandon is in flight, its own answer decides (a renew that
   * reached the server after a release that committed is refused
   * NOT_HOLDER, and the lease is released, not lost). On a lease whose
   * release got no answer, NOT_HOLDER may be that release's doing: the
   * release is sent again (same seq) in the background to learn which.
   * LOCK_EXPIRED cannot be (the server says NOT_HOLDER for a released
   * token), so it loses the lease as usual.
   */
  private onRenewRefused(rec: LeaseRecord, e: unknown): void {
    if (rec.lease.state !== "held") return;
    if (rec.releaseSeq !== undefined && isDlmError(e, "NOT_HOLDER")) {
      this.releaseInBackground(rec);
      return;
    }
    this.loseIfEnded(rec, e);
  }

  /**
   * Sends again, in the background, a release of `rec` that got no answer.
   * Answered, the lease is released (what it committed is kept for the
   * caller's next release()) or lost with the server's refusal; unanswered
   * again, the lease is held as before and the local deadline still bounds it.
   */
  private releaseInBackground(rec: LeaseRecord): void {
    const { lease } = rec;
    this.release(rec).then(
      (committed) => {
        this.committedLate.set(lease, committed);
        this.log.info({ lock: lease.lock, token: lease.token, committed }, "dlm client: a release whose answer was lost committed");
      },
      (e: unknown) => this.log.debug({ lock: lease.lock, token: lease.token, err: errorMessage(e) }, "dlm client: asking again about a release with no answer failed"),
    );
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
    const reply = await this.requests.logged(
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

  private scheduleRenew(rec: LeaseRecord): void {
    if (rec.renewTimer) clearTimeout(rec.renewTimer);
    rec.renewTimer = undefined;
    if (rec.lease.state !== "held" || this.closing.aborted) return;
    const every = Math.max(1, rec.lease.leaseMs * this.options.renewFraction);
    rec.renewTimer = setTimeout(() => void this.backgroundRenew(rec), every);
    rec.renewTimer.unref?.();
  }

  private async backgroundRenew(rec: LeaseRecord): Promise<void> {
    rec.renewTimer = undefined;
    if (rec.lease.state !== "held") return;
    try {
      await this.renew(rec);
    } catch (e) {
      if (rec.lease.state === "held") {
        this.log.warn({ lock: rec.lease.lock, err: errorMessage(e) }, "dlm client: renew failed; retrying");
      }
    }
    if (rec.lease.state === "held" && !rec.renewTimer) this.scheduleRenew(rec);
  }

  private scheduleDeadline(rec: LeaseRecord): void {
    if (rec.deadlineTimer) clearTimeout(rec.deadlineTimer);
    rec.deadlineTimer = undefined;
    const { lease } = rec;
    if (lease.state === "lost" || lease.state === "released") return;
    const due = rec.confirmedAt + lease.leaseMs - performance.now();
    rec.deadlineTimer = setTimeout(() => {
      rec.deadlineTimer = undefined;
      // While a release is in flight its answer decides.
      if (lease.state !== "held") return;
      if (rec.confirmedAt + lease.leaseMs - performance.now() > 1) {
        this.scheduleDeadline(rec);
        return;
      }
      this.expireLocally(rec);
    }, Math.max(0, due));
    rec.deadlineTimer.unref?.();
  }

  /** The lease's safe local bound has passed: it is lost here, and ended on the server. */
  expireLocally(rec: LeaseRecord): void {
    const { lease } = rec;
    this.loseLease(
      rec,
      rec.releaseSeq === undefined
        ? new LockExpiredError(
            `the lease on ${lease.lock} (token ${lease.token}) ran out: no renew was confirmed within ${lease.leaseMs}ms (measured locally)`,
          )
        : // LOCK_EXPIRED would say nothing was written; the release may have committed.
          new TimeoutError(
            `the lease on ${lease.lock} (token ${lease.token}) ran out (no renew was confirmed within ${lease.leaseMs}ms, measured locally) ` +
              `while its release (seq ${rec.releaseSeq}) had no answer: the section may or may not have been committed`,
          ),
    );
    // The server may still count the grant (its clock is on the late
    // side of ours, or it never heard the renewals): end it there too.
    this.giveUp(rec.session, lease.lock, lease.token);
  }

  // ---------------------------------------------------------------- loss

  /** Loses the lease of `rec` if `e` says its grant ended. */
  loseIfEnded(rec: LeaseRecord, e: unknown): void {
    if (isDlmError(e) && LEASE_ENDING.has(e.codeName)) this.loseLease(rec, e);
  }

  /** The server says the grant `token` on `lock` of `session` ended: its lease, if held, is lost. */
  loseGrant(session: Session, lock: string, token: number, error: DlmError): void {
    for (const rec of this.records.values()) {
      if (rec.session === session && rec.lease.lock === lock && rec.lease.token === token) {
        this.loseLease(rec, error);
        return;
      }
    }
  }

  /**
   * The server ended `session` (`answeredSeq`: the logged request whose
   * answer said so, if one did): every lease of it is lost. A lease whose
   * release was sent and not answered may have committed before the
   * session ended, and that answer went with the session, so it is lost
   * with TimeoutError ("may or may not have committed"), not
   * SESSION_EXPIRED ("nothing was written"). The exception is a release
   * whose only attempt was answered SESSION_EXPIRED: it never ran.
   */
  loseSession(session: Session, error: DlmError, answeredSeq?: number): void {
    for (const rec of [...this.records.values()]) {
      if (rec.session !== session) continue;
      const { lease } = rec;
      const unknown = rec.releaseSeq !== undefined && mayHaveRun(rec.releaseSeq, rec.releaseSends, answeredSeq);
      this.loseLease(
        rec,
        unknown
          ? new TimeoutError(
              `session ${session.id} expired while the release of ${lease.lock} (token ${lease.token}, seq ${rec.releaseSeq}) had no answer: ` +
                "the section may or may not have been committed, and the answer is gone with the session (read the files to know)",
              { cause: error },
            )
          : new SessionExpiredError(`session ${session.id} expired: the grant on ${lease.lock} ended`, { cause: error }),
      );
    }
  }

  /** Every lease of `session` (of every session when undefined) is lost, with the error `errorFor` makes for it. */
  loseAll(session: Session | undefined, errorFor: (lease: Lease) => DlmError): void {
    for (const rec of [...this.records.values()]) {
      if (session === undefined || rec.session === session) this.loseLease(rec, errorFor(rec.lease));
    }
  }

  /** The lease ends here: no more timers, and a release still unanswered will not be asked about again. */
  private dropRecord(rec: LeaseRecord): void {
    if (rec.renewTimer) clearTimeout(rec.renewTimer);
    if (rec.deadlineTimer) clearTimeout(rec.deadlineTimer);
    rec.renewTimer = undefined;
    rec.deadlineTimer = undefined;
    this.settleRelease(rec);
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
    const onListenerError = (e: unknown): void => this.log.error({ err: errorMessage(e) }, "dlm client: a lease 'lost' listener threw");
    if (!lease._markLost(error, onListenerError)) return;
    this.lost.delete(lease.lock);
    this.lost.set(lease.lock, lease);
    if (this.lost.size > MAX_TRACKED_LOCKS) this.lost.delete(this.lost.keys().next().value!);
    this.log.warn({ lock: lease.lock, token: lease.token, error: error.codeName }, "dlm client: lease lost");
    this.emit("leaseLost", lease, error);
  }

  // ---------------------------------------------------------------- giving up

  /**
   * End on the server a grant this client has declared lost by its own
   * clock (or seen too late to hand out), without committing (`abandon`),
   * in the background. Until that is
   * answered, an acquire of the same lock waits for it (ServerCleanups), so
   * it is not refused ALREADY_HELD by the grant it gave up.
   */
  private giveUp(session: Session, lock: string, token: number): void {
    if (this.closing.aborted || session.expired) return;
    this.cleanups.trackAbandon(lock, this.abandonOnServer(session, lock, token));
  }

  /**
   * An acquire was refused ALREADY_HELD by a grant this client declared lost
   * (its abandon has not got through): abandon it again. False when the
   * refusal is about something else (a lease the caller still holds).
   */
  regiveUp(session: Session | undefined, lock: string, e: AlreadyHeldError): boolean {
    const lost = this.lost.get(lock);
    if (!lost || !session || e.lease?.token !== lost.token || lost.clientId !== session.id) return false;
    this.giveUp(session, lost.lock, lost.token);
    return true;
  }

  /** True when the grant is over on the server (abandoned now, or ended before). */
  private async abandonOnServer(session: Session, lock: string, token: number): Promise<boolean> {
    try {
      const reply = await this.requests.logged(session, (seq, ack) => ({ op: "abandon", client: session.id, seq, ack, lock, token }));
      this.log.info({ lock, token, discarded: reply.discarded }, "dlm client: a lease lost locally was ended on the server");
      return true;
    } catch (e) {
      if (isDlmError(e) && LEASE_ENDING.has(e.codeName)) return true;
      this.log.warn({ lock, token, err: errorMessage(e) }, "dlm client: could not end a lost lease on the server; the next acquire of the lock tries again");
      return false;
    }
  }
}
