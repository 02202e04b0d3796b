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
 *
 * Anything else is a bug or a misuse and is passed through unchanged.
 */
import { errors as natsErrors, type NatsConnection, type Subscription } from "@nats-io/nats-core";

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
export class TransportClosedError extends TransportError {
  constructor(message = "NATS connection is closed", options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TransportClosedError";
  }
}

/**
 * Map a @nats-io v3 error to a transport error. In v3 a request timeout
 * rejects with `errors.TimeoutError`; "no responders" rejects with an
 * `errors.RequestError` whose `isNoResponders()` is true (its cause is an
 * `errors.NoRespondersError`); a request cut by a disconnect rejects with a
 * plain `RequestError("connection disconnected")`.
 */
export function mapNatsError(e: unknown, subject: string, timeoutMs: number): unknown {
  if (e instanceof natsErrors.TimeoutError) return new TransportTimeoutError(subject, timeoutMs, { cause: e });
  if (e instanceof natsErrors.NoRespondersError) return new NoRespondersError(subject, { cause: e });
  if (e instanceof natsErrors.RequestError) {
    if (e.isNoResponders()) return new NoRespondersError(subject, { cause: e });
    if (e.cause instanceof natsErrors.TimeoutError) return new TransportTimeoutError(subject, timeoutMs, { cause: e });
    if (e.cause instanceof natsErrors.ClosedConnectionError) return new TransportClosedError(undefined, { cause: e });
    return new DisconnectedError(`NATS request failed: ${e.message}`, { cause: e });
  }
  if (e instanceof natsErrors.ClosedConnectionError || e instanceof natsErrors.DrainingConnectionError) {
    return new TransportClosedError(undefined, { cause: e });
  }
  return e;
}

/** The real transport over a NATS connection. */
export class NatsTransport implements Transport {
  /**
   * @param nc the connection
   * @param owned close `nc` in `close()` (true when the client opened it)
   */
  constructor(
    readonly nc: NatsConnection,
    private readonly owned: boolean,
  ) {}

  async request(subject: string, payload: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    try {
      const msg = await this.nc.request(subject, payload, { timeout: Math.max(1, Math.round(timeoutMs)) });
      return msg.data;
    } catch (e) {
      throw mapNatsError(e, subject, timeoutMs);
    }
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
    try {
      sub = this.nc.subscribe(subject, {
        callback: (err, msg) => {
          if (!err) handler(msg.data);
        },
      });
      // Make sure the server knows the subscription before we say hello, so
      // an early grant notification is not missed (polling would recover it,
      // but later).
      await this.nc.flush();
    } catch (e) {
      throw mapNatsError(e, subject, 0);
    }
    return { unsubscribe: () => sub.unsubscribe() };
  }

  async close(): Promise<void> {
    if (this.owned && !this.nc.isClosed()) await this.nc.close();
  }
}
