/**
 * How the client sends one request and gets its answer: the retry policy
 * (retry.ts) around the transport, the reply parsed and typed, and the
 * transport's failures turned into the client's own errors.
 *
 * - `call` sends `build()` until a real answer comes (NOT_LEADER counts as
 *   "nobody answered yet" and is retried like no responders).
 * - `logged` takes a new seq on the session for a request that goes into
 *   the log, acknowledges it once answered or given up, and throws the
 *   typed error of an error reply. A caller that must be able to ask again
 *   about a request whose outcome is unknown (a release) passes its own
 *   seq instead, and acknowledges it itself.
 * - An error reply of SESSION_EXPIRED also ends the session
 *   (`onSessionExpired`, set by the client to its session keeper).
 * - A session's requests go to its namespace's subject
 *   (`Session.requestSubject`), where alone the leader acts on it; those
 *   that name no session to `sessionlessSubject`.
 */
import type { LoggedRequest, OkReply, Reply, Request } from "../protocol/messages";
import type { Names } from "../protocol/subjects";
import { ClosedError, DlmError, InternalError, SessionExpiredError, TimeoutError, TooLargeError, UnavailableError, errorFromReply } from "./errors";
import type { Logger, ResolvedOptions } from "./options";
import { errorMessage } from "../util/errorMessage";
import { attemptTimeoutMs, raceSignal, retry, type RetryPolicy } from "./retry";
import type { Session } from "./session";
import type { StopSignal } from "./stopper";
import {
  TransportClosedError,
  TransportPermissionError,
  TransportTimeoutError,
  TransportTooLargeError,
  TransportUnavailableError,
  type Transport,
} from "./transport";

/** One answered request. */
export interface Answer {
  reply: Reply;
  /** When the attempt that was answered was sent (performance.now()). */
  sentAt: number;
  /** When the first attempt of this request was sent. */
  firstSentAt: number;
}

/** Options of a logged request. */
export interface LoggedOptions extends CallOptions {
  /**
   * Send under this seq, which the caller took (session.seqs.issue()) and
   * acknowledges itself (session.seqs.done()) once it knows the outcome.
   * Given up without an answer (`outcomeUnknown`), the request may have
   * taken effect; sent again under the same seq, it is answered from the
   * server's reply cache if it did, and acted on now if it did not.
   */
  seq?: number;
}

/**
 * True when a request that failed with `e` may still have taken effect: it
 * was sent, and no answer came (TIMEOUT), or the attempts that did not time
 * out found nobody serving (UNAVAILABLE). Any other failure is an answer,
 * or a request that never left the client.
 */
export function outcomeUnknown(e: unknown): boolean {
  return e instanceof TimeoutError || e instanceof UnavailableError;
}

export interface CallOptions {
  signal?: StopSignal;
  policy?: Partial<RetryPolicy>;
  onSend?: (sentAt: number) => void;
  /**
   * Once aborted, no further attempt is sent (the one in flight may still
   * be answered); the call rejects with its reason instead of retrying.
   */
  noRetryAfter?: AbortSignal;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class Requests {
  /** Called when a request is answered SESSION_EXPIRED: the session is over. */
  onSessionExpired: (session: Session, error: DlmError, answeredSeq?: number) => void = () => {};
  /**
   * Where requests that name no session (status, read) go: the client's
   * namespace's subject, the only one a namespaced client user may publish on.
   */
  readonly sessionlessSubject: string;

  constructor(
    private readonly transport: Transport,
    names: Names,
    private readonly options: ResolvedOptions,
    private readonly log: Logger,
    /** The client's close: the default signal of every request. */
    private readonly closing: StopSignal,
  ) {
    this.sessionlessSubject = options.namespace === undefined ? names.requestSubject : names.namespaceRequestSubject(options.namespace);
  }

  /** A logged request on `session`: new seq (or the caller's, `opts.seq`), retries, typed errors. */
  async logged(session: Session, build: (seq: number, ack: number) => LoggedRequest, opts: LoggedOptions = {}): Promise<OkReply> {
    if (session.expired) throw new SessionExpiredError(`session ${session.id} has expired`);
    const { seq: callersSeq, ...callOpts } = opts;
    const seq = callersSeq ?? session.seqs.issue();
    try {
      const answer = await this.call(session, () => build(seq, session.seqs.ack()), {
        signal: this.closing,
        ...callOpts,
      });
      if (!answer.reply.ok) throw this.replyError(session, answer.reply, seq);
      return answer.reply;
    } finally {
      if (callersSeq === undefined) session.seqs.done(seq);
    }
  }

  /** An unlogged request that needs no session (status, read). */
  async unlogged(req: Request): Promise<OkReply> {
    const answer = await this.call(undefined, () => req, { signal: this.closing });
    if (!answer.reply.ok) throw errorFromReply(answer.reply);
    return answer.reply;
  }

  /**
   * The typed error for an error reply; SESSION_EXPIRED also ends the
   * session. `seq` is the logged request the reply answers, if it is one:
   * the session's end then tells that request's fate (it did not run).
   */
  replyError(session: Session, reply: Extract<Reply, { ok: false }>, seq?: number): DlmError {
    const error = errorFromReply(reply);
    if (error.codeName === "SESSION_EXPIRED") this.onSessionExpired(session, error, seq);
    return error;
  }

  /** One attempt only; undefined if it timed out or nobody answered. */
  async callOnce(session: Session, build: () => Request, signal: StopSignal, onSend?: (at: number) => void): Promise<Answer | undefined> {
    try {
      return await this.call(session, build, { signal, onSend, policy: { maxAttempts: 1, unavailableTimeoutMs: 0 } });
    } catch (e) {
      if (e instanceof TimeoutError || e instanceof UnavailableError) return undefined;
      throw e;
    }
  }

  /** Send `build()` under the retry policy; resolves with the first real answer. */
  call(session: Session | undefined, build: () => Request, opts: CallOptions = {}): Promise<Answer> {
    const policy: RetryPolicy = {
      requestTimeoutMs: this.options.requestTimeoutMs,
      firstAttemptTimeoutMs: this.options.firstAttemptTimeoutMs,
      maxAttempts: this.options.maxAttempts,
      backoff: this.options.backoff,
      unavailableTimeoutMs: this.options.unavailableTimeoutMs,
      ...opts.policy,
    };
    const subject = session?.requestSubject ?? this.sessionlessSubject;
    let firstSentAt: number | undefined;
    let op = "request";
    let seq: number | undefined;
    let waitedMs = 0;
    return retry<Answer>(
      policy,
      async (attempt) => {
        if (attempt > 1 && opts.noRetryAfter?.aborted) throw opts.noRetryAfter.reason;
        const req = build();
        // Every logged request says which of the waits below its ack it has
        // not seen answered (session.ts). A poll of a queued request re-sends
        // an old seq, which the session's ack may have passed since: an ack
        // is always below the seq that carries it.
        if (session && "ack" in req) {
          req.ack = Math.min(req.ack, req.seq - 1);
          const waits = session.seqs.waitsUpTo(req.ack);
          if (waits.length > 0) req.waits = waits;
        }
        op = req.op;
        seq = "seq" in req ? req.seq : undefined;
        const sentAt = performance.now();
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
          throw new InternalError(`unreadable reply to ${op}: ${errorMessage(e)}`, { cause: e });
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

  /** The client's own error for a transport failure (closed, unreachable, timed out, not permitted). */
  mapTransportFailure(e: unknown, what: string): DlmError {
    if (e instanceof DlmError) return e;
    if (e instanceof TransportClosedError) return new ClosedError(`the NATS connection is closed (${what})`, { cause: e });
    if (e instanceof TransportUnavailableError) return new UnavailableError(`NATS is not reachable (${what}): ${e.message}`, { cause: e });
    if (e instanceof TransportTimeoutError) return new TimeoutError(`${what} timed out`, { cause: e });
    if (e instanceof TransportTooLargeError) {
      return new TooLargeError(`${what}: ${e.message}. Nothing was sent: stage smaller appends, or raise the NATS server's max_payload`, { cause: e });
    }
    if (e instanceof TransportPermissionError) {
      return new InternalError(
        `${what}: ${e.message}. The NATS user may not use this subject: check its permissions and the client's namespace (docs/operations.md, "Security").`,
        { cause: e },
      );
    }
    return new InternalError(`${what} failed: ${errorMessage(e)}`, { cause: e });
  }
}
