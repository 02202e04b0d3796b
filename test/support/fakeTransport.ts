/**
 * The plumbing the client unit tests' fake leaders share: a Transport that
 * records every request, answers it with the subclass's `handle`, and
 * delivers notifications to the client's subscriptions on a later tick.
 * Each fake keeps its own protocol rules; only the wire is here.
 */
import { connect, type DlmClient } from "../../src/client/client";
import type { ClientOptions } from "../../src/client/options";
import { errors } from "@nats-io/nats-core";
import { mapNatsError, type Transport, type TransportSubscription } from "../../src/client/transport";
import { ErrorCodes, type ErrorName } from "../../src/protocol/errors";
import type { Reply } from "../../src/protocol/messages";

export const enc = (o: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(o));
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const dec = (b: Uint8Array): any => JSON.parse(new TextDecoder().decode(b));
export const ok = (message: string, extra: Record<string, unknown> = {}): Reply => ({ ok: true, code: 0, message, ...extra });
export const fail = (error: ErrorName, message: string = error, extra: Record<string, unknown> = {}): Reply => ({
  ok: false,
  code: ErrorCodes[error],
  error,
  message,
  ...extra,
});

export abstract class FakeTransport<Req extends { op: string; client?: string }> implements Transport {
  /** Every request that reached the server, in order. */
  readonly received: Req[] = [];
  private readonly subs = new Map<string, Set<(p: Uint8Array) => void>>();
  /** Set: a request larger than this is refused before it is sent, as nats.js refuses one over the server's max_payload. */
  maxPayloadBytes: number | undefined;

  /** The fake leader's answer to one request. */
  protected abstract handle(req: Req): Reply;

  async request(subject: string, payload: Uint8Array): Promise<Uint8Array> {
    if (this.maxPayloadBytes !== undefined && payload.length > this.maxPayloadBytes) {
      throw mapNatsError(errors.InvalidArgumentError.format("payload", "max_payload size exceeded"), subject, 0);
    }
    // A real request never answers within the same tick.
    await new Promise((r) => setImmediate(r));
    const req = dec(payload) as Req;
    this.received.push(req);
    return enc(this.answer(req));
  }

  /** Hook for fakes that refuse before handling (no responders, NOT_LEADER). */
  protected answer(req: Req): Reply {
    return this.handle(req);
  }

  publish(): void {}

  async subscribe(subject: string, handler: (p: Uint8Array) => void): Promise<TransportSubscription> {
    let set = this.subs.get(subject);
    if (!set) this.subs.set(subject, (set = new Set()));
    set.add(handler);
    return { unsubscribe: () => set.delete(handler) };
  }

  async close(): Promise<void> {}

  notify(client: string, n: unknown): void {
    for (const h of this.subs.get(`dlm.notify.${client}`) ?? []) setImmediate(() => h(enc(n)));
  }

  ops(op: string, client?: string): Req[] {
    return this.received.filter((r) => r.op === op && (client === undefined || r.client === client));
  }
}

/**
 * `mk(fake, opts)` connects a client to a fake leader with the unit tests'
 * short timeouts and backoff; every client made is closed after each test.
 * Call once at the top level of a test file.
 */
export function fakeClients(): (transport: Transport, opts?: ClientOptions) => Promise<DlmClient> {
  const clients: DlmClient[] = [];
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
  });
  return async (transport, opts = {}) => {
    const c = await connect({
      transport,
      requestTimeoutMs: 50,
      maxAttempts: 3,
      unavailableTimeoutMs: 300,
      backoff: { initialMs: 5, maxMs: 20, jitter: 0 },
      ...opts,
    });
    clients.push(c);
    return c;
  };
}

/** Polls `cond` every 5 ms; throws after `timeoutMs`. */
export async function waitFor(cond: () => boolean, timeoutMs = 2000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}
