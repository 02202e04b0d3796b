/**
 * Request-reply over one wildcard inbox subscription per connection: what
 * nats.js's own `request()` does, without its per-request costs.
 *
 * Why not `nc.request()`: @nats-io/nats-core 3.4 settles every request by
 * cancelling it, and the cancel builds a `RequestError("cancelled")` (an
 * Error, so a captured stack trace) even after a reply resolved it. In the
 * bench's 256-client workload that was 14% of the client process's CPU (V8
 * profile, `node --cpu-prof dist/bench/fastpath.js --only locks`). The
 * semantics here are the ones the transport documents: a reply, a timeout,
 * no responders (the server's 503 status), a refused publish or inbox
 * subscription, or a closed connection.
 *
 * Only public API of the connection is used (subscribe, publish with a
 * reply subject, status, closed), so a connection from another copy of the
 * @nats-io packages works too.
 */
import { createInbox, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from "@nats-io/nats-core";
import {
  classifyNatsError,
  mapNatsError,
  NoRespondersError,
  TransportClosedError,
  TransportPermissionError,
  TransportTimeoutError,
} from "./transportErrors";

interface PendingRequest {
  subject: string;
  resolve(data: Uint8Array): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

interface ErrorLike {
  name?: unknown;
  message?: unknown;
  operation?: unknown;
  subject?: unknown;
}

export class RequestMux {
  private readonly pending = new Map<string, PendingRequest>();
  /** `<inbox>.`: a reply's subject is this plus the request's token. */
  private prefix = "";
  private sub: Subscription | undefined;
  private counter = 0;
  private status: AsyncIterator<unknown> | undefined;
  private closed = false;

  /**
   * @param nc the connection
   * @param inboxPrefix where inboxes live (the namespace's prefix, or the
   *   connection's own `inboxPrefix`); nats.js's default when undefined
   */
  constructor(
    private readonly nc: NatsConnection,
    private readonly inboxPrefix: string | undefined,
  ) {}

  /** Resolves with the reply's payload; rejects with a transport error (see transportErrors.ts). */
  request(subject: string, payload: Uint8Array, timeoutMs: number, headers?: MsgHdrs): Promise<Uint8Array> {
    if (this.closed || this.nc.isClosed()) return Promise.reject(new TransportClosedError());
    if (this.sub === undefined) this.open();
    const token = (this.counter++).toString(36);
    return new Promise<Uint8Array>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(token)) reject(new TransportTimeoutError(subject, timeoutMs));
      }, timeoutMs);
      this.pending.set(token, { subject, resolve, reject, timer });
      try {
        this.nc.publish(subject, payload, headers ? { reply: this.prefix + token, headers } : { reply: this.prefix + token });
      } catch (e) {
        this.settle(token, undefined, mapNatsError(e, subject, timeoutMs));
      }
    });
  }

  /** Rejects whatever is pending and stops listening. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.failAll(new TransportClosedError());
    if (this.sub && !this.nc.isClosed()) this.sub.unsubscribe();
    this.sub = undefined;
    void this.status?.return?.();
  }

  private open(): void {
    this.prefix = `${createInbox(this.inboxPrefix)}.`;
    // The SUB goes out ahead of the first request's PUB on the same
    // connection, so the server knows the inbox before anyone answers.
    const sub = this.nc.subscribe(`${this.prefix}*`, {
      callback: (err, msg) => {
        if (err) return this.onSubscriptionError(sub, err);
        this.onReply(msg);
      },
    });
    this.sub = sub;
    if (this.status === undefined) this.watch();
  }

  private onReply(msg: Msg): void {
    const token = msg.subject.startsWith(this.prefix) ? msg.subject.slice(this.prefix.length) : "";
    const request = this.pending.get(token);
    if (!request) return; // late: its attempt already timed out
    // A reply with an empty body and status 503 is the server saying nobody listens on the subject.
    if (msg.data.length === 0 && msg.headers?.code === 503) this.settle(token, undefined, new NoRespondersError(request.subject));
    else this.settle(token, msg.data, undefined);
  }

  /** The inbox subscription was refused (permissions) or ended: fail what waits; the next request subscribes again. */
  private onSubscriptionError(sub: Subscription, err: Error): void {
    if (this.sub === sub) this.sub = undefined;
    const error =
      classifyNatsError(err) === "forbidden"
        ? new TransportPermissionError(`NATS refused the reply inbox ${this.prefix}*: ${String((err as ErrorLike).message)}`, { cause: err })
        : new TransportClosedError(`the reply inbox subscription ended: ${String((err as ErrorLike).message)}`, { cause: err });
    this.failAll(error);
  }

  /** Refused publishes (a subject this user may not publish to) and the connection's end. */
  private watch(): void {
    void this.nc.closed().then(() => this.close());
    const status = this.nc.status()[Symbol.asyncIterator]();
    this.status = status;
    void (async () => {
      try {
        for (let next = await status.next(); !next.done && !this.closed; next = await status.next()) {
          const s = next.value;
          if (s.type !== "error") continue;
          const e = s.error as ErrorLike;
          if (classifyNatsError(e) !== "forbidden" || e.operation !== "publish") continue;
          for (const [token, request] of this.pending) {
            if (request.subject === e.subject) {
              this.settle(token, undefined, new TransportPermissionError(`NATS refused ${request.subject}: ${String(e.message)}`, { cause: e }));
            }
          }
        }
      } catch {
        // the status iterator ends with the connection
      }
    })();
  }

  private settle(token: string, data: Uint8Array | undefined, error: unknown): void {
    const request = this.pending.get(token);
    if (!request) return;
    this.pending.delete(token);
    clearTimeout(request.timer);
    if (error === undefined && data !== undefined) request.resolve(data);
    else request.reject(error instanceof Error ? error : new Error(String(error)));
  }

  private failAll(error: Error): void {
    for (const token of [...this.pending.keys()]) this.settle(token, undefined, error);
  }
}
