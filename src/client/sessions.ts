/**
 * The client's session with the cluster: started by `hello`, kept alive by
 * heartbeats, told of grants and losses by notifications, ended by
 * `goodbye` or by expiry.
 *
 * - One session at a time. `ensure()` starts one if there is none (the
 *   first operation after connect, or after an expiry).
 * - SESSION_EXPIRED from any request (other than goodbye), or an expiry
 *   notification: every lease of that session is lost, its waiting
 *   acquires reject with SessionExpiredError, "sessionExpired" is emitted
 *   and a fresh session (new nanoid, seq from 1) is started at once.
 * - A heartbeat (ping) goes out an interval (a third of the session
 *   timeout) after the last request sent, and soon again after one fails
 *   (docs/design.md §5).
 * - A grant notification nobody waits for (the acquire was given up or
 *   cancelled) is an orphan: its grant is released at once.
 */
import { nanoid } from "nanoid";
import { DEFAULT_LIMITS } from "../protocol/limits";
import type { LeaseInfo, Notification } from "../protocol/messages";
import { requestSubjectFor, type Names } from "../protocol/subjects";
import { ClosedError, SessionExpiredError, TimeoutError, errorFromReply, makeError, type DlmError } from "./errors";
import type { FaultInjector } from "./faults";
import type { LeaseKeeper } from "./leaseKeeper";
import type { Logger, ResolvedOptions } from "./options";
import { errorMessage } from "../util/errorMessage";
import type { Requests } from "./requests";
import { raceSignal } from "./retry";
import { mayHaveRun, Session, type GrantResult } from "./session";
import { Stopper } from "./stopper";
import type { Transport } from "./transport";

const decoder = new TextDecoder();

export class Sessions {
  private sessionPromise: Promise<Session> | undefined;
  private currentSession: Session | undefined;
  private generation = 0;

  constructor(
    private readonly transport: Transport,
    private readonly names: Names,
    private readonly options: ResolvedOptions,
    private readonly log: Logger,
    private readonly closing: Stopper,
    private readonly faults: FaultInjector | undefined,
    private readonly requests: Requests,
    private readonly leases: LeaseKeeper,
    private readonly emit: (event: string, ...args: unknown[]) => void,
  ) {}

  /** The session in use, once its hello was answered. */
  get current(): Session | undefined {
    return this.currentSession;
  }

  /** The session to send on: the current one, or a new one (hello) if there is none. */
  ensure(): Promise<Session> {
    if (this.closing.aborted) return Promise.reject(new ClosedError("the dlm client is closed"));
    if (!this.sessionPromise) {
      const p = this.startFresh();
      this.sessionPromise = p;
      p.catch(() => {
        if (this.sessionPromise === p) this.sessionPromise = undefined;
      });
    }
    return this.sessionPromise;
  }

  /**
   * start(), again under a new id if the hello was answered SESSION_EXPIRED:
   * its first attempt created the session, which then expired before a
   * retry of the hello got through (the client was paused that long), and
   * the cluster never revives an ended id. A fixed clientId is not
   * replaced: that answer is then the caller's to see.
   */
  private async startFresh(): Promise<Session> {
    for (let attempt = 1; ; attempt++) {
      const fixedId = this.generation === 0 && this.options.clientId !== undefined;
      try {
        return await this.start();
      } catch (e) {
        if (fixedId || attempt >= 3 || !(e instanceof SessionExpiredError)) throw e;
        this.log.warn({ err: errorMessage(e) }, "dlm client: the new session ended before its hello was answered; starting another");
      }
    }
  }

  private async start(): Promise<Session> {
    const generation = ++this.generation;
    const ns = this.options.namespace;
    const id = generation === 1 && this.options.clientId ? this.options.clientId : ns === undefined ? nanoid() : `${ns}.${nanoid()}`;
    const session = new Session(id, generation, requestSubjectFor(this.names, id));
    try {
      session.sub = await raceSignal(
        this.transport.subscribe(this.names.notifySubject(id), (payload) => this.onNotification(session, payload)),
        this.closing,
      );
    } catch (e) {
      throw this.requests.mapTransportFailure(e, "subscribe");
    }
    try {
      const seq = session.seqs.issue();
      const answer = await this.requests.call(session, () => ({ op: "hello", client: id, seq, ack: session.seqs.ack(), listsWaits: true }), {
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
      session.seqs.acceptsWaits = session.info.acceptsWaits === true;
      if (this.closing.aborted) throw new ClosedError("the dlm client was closed during hello");
      this.currentSession = session;
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

  /**
   * The server ended `session`: its leases are lost, its waits fail, and a
   * new session starts. `answeredSeq`: the logged request whose answer said
   * so, if one did.
   */
  expire(session: Session, error: DlmError, answeredSeq?: number): void {
    if (session.expired) return;
    session.expired = true;
    this.stopHeartbeat(session);
    session.sub?.unsubscribe();
    this.log.warn({ client: session.id }, "dlm client: session expired; starting a new one");
    for (const pending of session.pending.values()) {
      // A commit that was sent may have run before the session ended (its
      // grant and answer went with the session): unknown, not "nothing was
      // written", unless the session's end was its own only attempt's answer.
      const unknown = pending.commit && mayHaveRun(pending.seq, pending.sends, answeredSeq);
      pending.fail(
        unknown
          ? new TimeoutError(
              `session ${session.id} expired while the commit under ${pending.lock} (seq ${pending.seq}) had no final answer: ` +
                "it may or may not have been committed, and the answer is gone with the session (read the files to know)",
              { cause: error },
            )
          : new SessionExpiredError(`session ${session.id} expired while waiting for ${pending.lock}`, { cause: error }),
      );
    }
    this.leases.loseSession(session, error, answeredSeq);
    if (this.currentSession === session) {
      this.currentSession = undefined;
      this.sessionPromise = undefined;
    }
    this.emit("sessionExpired", error, session.id);
    if (!this.closing.aborted && !this.sessionPromise) {
      this.ensure().catch((e: unknown) => {
        this.log.warn({ err: errorMessage(e) }, "dlm client: could not start a new session yet; the next operation retries");
      });
    }
  }

  /** For close(): the current session, which is no longer handed out. */
  detach(): Session | undefined {
    const session = this.currentSession;
    this.currentSession = undefined;
    this.sessionPromise = undefined;
    return session;
  }

  /**
   * Ends a detached session for close(): stops its heartbeat, fails its
   * waits with `closedError`, says goodbye (unless the server already ended
   * it) and unsubscribes. Resolves to the server's goodbye message, if it
   * confirmed.
   */
  async end(session: Session, closedError: ClosedError): Promise<string | undefined> {
    this.stopHeartbeat(session);
    for (const pending of session.pending.values()) pending.fail(closedError);
    const message = session.expired ? undefined : await this.goodbye(session);
    session.expired = true;
    session.sub?.unsubscribe();
    return message;
  }

  private async goodbye(session: Session): Promise<string | undefined> {
    const budget = this.options.closeTimeoutMs;
    const stop = new Stopper();
    const timer = setTimeout(() => stop.abort(new TimeoutError(`goodbye got no answer within ${budget}ms`)), budget);
    const seq = session.seqs.issue();
    try {
      const answer = await this.requests.call(
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
      this.log.warn({ err: errorMessage(e) }, "dlm client: goodbye failed; the session will expire on the server");
    } finally {
      clearTimeout(timer);
    }
    return undefined;
  }

  // ---------------------------------------------------------------- heartbeats

  /**
   * The next heartbeat: an interval after the last request sent, or, after
   * a ping that failed (no leader, or none answered it in time), soon: a
   * new leader counts a client as silent since before the takeover, so it
   * must hear this client well within one interval of taking over, not two
   * (docs/design.md §5).
   */
  private scheduleHeartbeat(session: Session, failed = false): void {
    this.stopHeartbeat(session);
    if (session.expired || this.closing.aborted || !session.info) return;
    const interval = session.info.sessionTimeoutMs / 3;
    // 250 ms: a new leader starts serving within about that of its takeover.
    const due = failed ? Math.min(250, interval / 4) : Math.max(0, session.lastSentAt + interval - performance.now());
    session.heartbeat = setTimeout(() => void this.heartbeat(session, interval, failed), due);
    session.heartbeat.unref?.();
  }

  private stopHeartbeat(session: Session): void {
    if (session.heartbeat) clearTimeout(session.heartbeat);
    session.heartbeat = undefined;
  }

  private async heartbeat(session: Session, interval: number, retrying: boolean): Promise<void> {
    session.heartbeat = undefined;
    if (session.expired || this.closing.aborted) return;
    let failed = false;
    // A retry pings even though the failed ping counts as the last request sent.
    if (retrying || performance.now() - session.lastSentAt >= interval - 1) {
      try {
        // A leader answers a ping at once (or after one log append), so an
        // attempt that takes a quarter interval went to a leader that is
        // gone or frozen: give up on it and retry, rather than wait a whole
        // request timeout while the next leader is already serving.
        const answer = await this.requests.call(session, () => ({ op: "ping", client: session.id }), {
          signal: this.closing,
          policy: { maxAttempts: 1, unavailableTimeoutMs: 0, requestTimeoutMs: Math.min(this.options.requestTimeoutMs, interval / 4) },
        });
        if (!answer.reply.ok) throw this.requests.replyError(session, answer.reply);
      } catch (e) {
        failed = true;
        this.log.debug({ err: errorMessage(e) }, "dlm client: heartbeat failed; retrying soon");
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
      this.log.warn({ err: errorMessage(e) }, "dlm client: unreadable notification");
      return;
    }
    if (this.faults?.shouldDropNotification(n, session.id)) return;
    if (session.expired) return;
    this.log.debug({ client: session.id, notification: n }, "dlm client: notification");
    // This runs inside the NATS subscription callback: an exception here
    // would end nats.js's reader, and with it every reply and notification
    // on this connection, silently. A notification that cannot be handled
    // is only lost, which polling already covers.
    try {
      this.handleNotification(session, n);
    } catch (e) {
      this.log.error({ err: errorMessage(e), notification: n as unknown }, "dlm client: a notification could not be handled; dropped");
    }
  }

  private handleNotification(session: Session, n: Notification): void {
    switch (n.event) {
      case "granted": {
        const pending = session.pending.get(n.seq);
        const all = n.leases && n.leases.length > 0 ? n.leases : undefined;
        // A wait that already failed (given up on TIMEOUT, and still being
        // cancelled) stays in `pending` until its cleanup ends, but nobody
        // will take this grant: it is an orphan as much as one with no
        // entry. Dropping it would leave the grant to the cleanup, whose
        // cancel may never be answered, and the lock held for a whole lease.
        if (pending?.state === "waiting") {
          pending.grant(n.lease, performance.now(), all);
        } else if (pending?.state !== "granted") {
          for (const info of all ?? [n.lease]) if (!session.knownTokens.has(info.token)) this.releaseOrphan(session, info);
        }
        return;
      }
      case "lost": {
        const error = makeError(n.error, `lost ${n.lock} (token ${n.token}): ${n.error}`);
        if (n.error === "SESSION_EXPIRED") {
          this.expire(session, error);
          return;
        }
        this.leases.loseGrant(session, n.lock, n.token, error);
        return;
      }
      case "waitEnded": {
        const error = makeError(n.error, `wait for ${n.lock} ended: ${n.error}`);
        if (n.error === "SESSION_EXPIRED") {
          this.expire(session, error);
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
  releaseGrant(session: Session, grant: GrantResult): void {
    for (const info of grant.all ?? [grant.info]) this.releaseOrphan(session, info);
  }

  /** A grant nobody waits for (the acquire was given up or cancelled): hand it back. */
  releaseOrphan(session: Session, info: LeaseInfo): void {
    session.rememberToken(info.token);
    this.log.warn({ lock: info.lock, token: info.token }, "dlm client: releasing a grant nobody waits for");
    this.requests
      .logged(session, (seq, ack) => ({ op: "release", client: session.id, seq, ack, lock: info.lock, token: info.token }))
      .catch((e: unknown) => this.log.debug({ err: errorMessage(e) }, "dlm client: releasing an orphan grant failed"));
  }
}
