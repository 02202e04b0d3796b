/**
 * The client's view of the network: request-reply to the leader and a
 * subscription for notifications. `NatsTransport` is the real one; tests and
 * the fault injector (`faults.ts`) provide or wrap others.
 *
 * A transport rejects a request with exactly one of these typed errors:
 *
 * - `TransportTimeoutError`: no reply within the attempt's timeout. The
 *   request may have reached the server; retrying with the same seq is safe.
 * - `TransportUnavailableError` (`NoRespondersError`, `DisconnectedError`):
 *   nobody serves the subject right now, or the NATS connection is down
 *   (it reconnects by itself). Retry after a backoff.
 * - `TransportClosedError`: the connection is closed for good.
 * - `TransportPermissionError`: NATS refused a subject this client needs
 *   (publish to the request subject, subscribe to its notifications or
 *   inbox). Not retried.
 *
 * Anything else is a bug or a misuse and is passed through unchanged.
 */
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import { connectionInboxPrefix } from "../protocol/subjects";
import { RequestMux } from "./requestMux";

export interface TransportSubscription {
  unsubscribe(): void;
}

export interface Transport {
  /** One request, one reply, at most `timeoutMs`. */
  request(subject: string, payload: Uint8Array, timeoutMs: number): Promise<Uint8Array>;
  /** Fire and forget. */
  publish(subject: string, payload: Uint8Array): void;
  /** Resolves once the subscription is registered with the server. */
  subscribe(subject: string, handler: (payload: Uint8Array) => void): Promise<TransportSubscription>;
  /** Release what the transport owns (a NatsTransport closes its connection only if it opened it). */
  close(): Promise<void>;
}

export class TransportError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TransportError";
  }
}
export class TransportTimeoutError extends TransportError {
  constructor(
    readonly subject: string,
    readonly timeoutMs: number,
    options?: { cause?: unknown },
  ) {
    super(`no reply on ${subject} within ${timeoutMs}ms`, options);
    this.name = "TransportTimeoutError";
  }
}
export class TransportUnavailableError extends TransportError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TransportUnavailableError";
  }
}
export class NoRespondersError extends TransportUnavailableError {
  constructor(
    readonly subject: string,
    options?: { cause?: unknown },
  ) {
    super(`no responders on ${subject}`, options);
    this.name = "NoRespondersError";
  }
}
export class DisconnectedError extends TransportUnavailableError {
  constructor(message = "NATS connection is disconnected", options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DisconnectedError";
  }
}
/**
 * NATS refused this connection a subject it needs (a permissions
 * violation): retrying cannot help, the NATS user's permissions (or the
 * client's namespace) must change.
 */
export class TransportPermissionError extends TransportError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TransportPermissionError";
  }
}
export class TransportClosedError extends TransportError {
  constructor(message = "NATS connection is closed", options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TransportClosedError";
  }
}

/** What kind of failure a NATS error is, for the retry policy. */
export type NatsErrorKind = "timeout" | "noResponders" | "closed" | "forbidden" | "disconnected" | "other";

interface ErrorLike {
  name?: unknown;
  message?: unknown;
  cause?: unknown;
}

function nameOf(e: unknown): string {
  return typeof (e as ErrorLike | null)?.name === "string" ? ((e as ErrorLike).name as string) : "";
}
function messageOf(e: unknown): string {
  return typeof (e as ErrorLike | null)?.message === "string" ? ((e as ErrorLike).message as string) : "";
}

/**
 * Classifies an error from @nats-io v3 by its `name` and message, never by
 * `instanceof`: a connection handed to `connect({ nc })` may come from
 * another copy of the @nats-io packages (another version, or the same one
 * installed twice), whose error classes are not dlm's.
 *
 * In v3 a request timeout rejects with a `TimeoutError` ("timeout"); "no
 * responders" rejects with a `RequestError` whose cause is a
 * `NoRespondersError` (its `name` is "NoResponders"; message "no
 * responders: '<subject>'"); a request cut by a disconnect rejects with a
 * plain `RequestError("connection disconnected")`; a closed or draining
 * connection with `ClosedConnectionError` / `DrainingConnectionError`; a
 * subject the user may not use with a `PermissionViolationError` (or a
 * `RequestError` caused by one).
 */
export function classifyNatsError(e: unknown): NatsErrorKind {
  const name = nameOf(e);
  const message = messageOf(e);
  if (name === "TimeoutError") return "timeout";
  if (name === "NoResponders" || name === "NoRespondersError" || /^no responders/i.test(message)) return "noResponders";
  if (name === "ClosedConnectionError" || name === "DrainingConnectionError") return "closed";
  if (name === "PermissionViolationError" || /permissions violation/i.test(message)) return "forbidden";
  if (name === "RequestError") {
    const cause = (e as ErrorLike).cause;
    if (cause !== undefined && cause !== null && cause !== e) {
      const inner = classifyNatsError(cause);
      if (inner !== "other") return inner;
    }
    return "disconnected";
  }
  return "other";
}

/** Map a @nats-io v3 error to a transport error (see `classifyNatsError`); anything else is returned unchanged. */
export function mapNatsError(e: unknown, subject: string, timeoutMs: number): unknown {
  switch (classifyNatsError(e)) {
    case "timeout":
      return new TransportTimeoutError(subject, timeoutMs, { cause: e });
    case "noResponders":
      return new NoRespondersError(subject, { cause: e });
    case "closed":
      return new TransportClosedError(undefined, { cause: e });
    case "forbidden":
      return new TransportPermissionError(`NATS refused ${subject}: ${messageOf(e)}`, { cause: e });
    case "disconnected":
      return new DisconnectedError(`NATS request failed: ${messageOf(e)}`, { cause: e });
    default:
      return e;
  }
}

/** The real transport over a NATS connection. */
export class NatsTransport implements Transport {
  private readonly mux: RequestMux;

  /**
   * @param nc the connection
   * @param owned close `nc` in `close()` (true when the client opened it)
   * @param inboxPrefix where reply inboxes live; by default the
   *   connection's own `inboxPrefix` (what `nc.request()` would use)
   */
  constructor(
    readonly nc: NatsConnection,
    private readonly owned: boolean,
    inboxPrefix: string | undefined = connectionInboxPrefix(nc),
  ) {
    this.mux = new RequestMux(nc, inboxPrefix);
  }

  request(subject: string, payload: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    return this.mux.request(subject, payload, Math.max(1, Math.round(timeoutMs)));
  }

  publish(subject: string, payload: Uint8Array): void {
    try {
      this.nc.publish(subject, payload);
    } catch (e) {
      throw mapNatsError(e, subject, 0);
    }
  }

  async subscribe(subject: string, handler: (payload: Uint8Array) => void): Promise<TransportSubscription> {
    let sub: Subscription;
    let refused: unknown;
    try {
      sub = this.nc.subscribe(subject, {
        callback: (err, msg) => {
          if (err) refused ??= err;
          else handler(msg.data);
        },
      });
      // Make sure the server knows the subscription before we say hello, so
      // an early grant notification is not missed (polling would recover it,
      // but later). The server answers a refused subscription before the
      // flush's PONG, so a permissions violation is known here.
      await this.nc.flush();
    } catch (e) {
      throw mapNatsError(e, subject, 0);
    }
    if (refused !== undefined && classifyNatsError(refused) === "forbidden") {
      throw new TransportPermissionError(`NATS refused the subscription to ${subject}: ${messageOf(refused)}`, { cause: refused });
    }
    return { unsubscribe: () => sub.unsubscribe() };
  }

  async close(): Promise<void> {
    this.mux.close();
    if (this.owned && !this.nc.isClosed()) await this.nc.close();
  }
}
