/**
 * The client's view of the network: request-reply to the leader and a
 * subscription for notifications. `NatsTransport` is the real one; tests and
 * the fault injector (`faults.ts`) provide or wrap others.
 *
 * A transport rejects a request with exactly one of the typed errors of
 * `protocol/transportErrors.ts` (timeout, unavailable, closed, permission),
 * re-exported here; anything else is a bug or a misuse and is passed
 * through unchanged.
 */
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import { connectionInboxPrefix } from "../protocol/subjects";
import { RequestMux } from "../protocol/requestMux";
import { classifyNatsError, mapNatsError, messageOf, TransportPermissionError } from "../protocol/transportErrors";

export * from "../protocol/transportErrors";

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
