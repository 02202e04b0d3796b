import { randomBytes } from "crypto";
import type { Reply } from "../../src/protocol/messages";
import type { DlmTestCluster } from "./dlmCluster";
import { retry } from "./wait";

export interface RawSessionOptions {
  /** How long call() keeps retrying one request before it gives up (default 30 s). */
  callTimeoutMs?: number;
}

/** A session spoken in the raw wire protocol: no renewals, no heartbeats, full control. */
export class RawSession {
  readonly id = `raw${randomBytes(8).toString("hex")}`;
  private seq = 0;
  private keepalive: NodeJS.Timeout | undefined;
  private readonly callTimeoutMs: number;

  constructor(
    private readonly cluster: Pick<DlmTestCluster, "rawRequest">,
    opts: RawSessionOptions = {},
  ) {
    this.callTimeoutMs = opts.callTimeoutMs ?? 30_000;
  }

  /** The next request sequence number of this session. */
  next(): number {
    return ++this.seq;
  }

  /** Pings every second so the session does not expire (a raw session has no heartbeat of its own). */
  keepAlive(): void {
    this.keepalive ??= setInterval(() => {
      this.cluster.rawRequest({ op: "ping", client: this.id }, 900).catch(() => undefined);
    }, 1000);
  }

  stopKeepAlive(): void {
    if (this.keepalive) clearInterval(this.keepalive);
    this.keepalive = undefined;
  }

  /** The body of a logged request of this session. */
  body(op: string, seq: number, extra: object = {}): object {
    return { op, client: this.id, seq, ack: 0, ...extra };
  }

  /** Sends one logged request, retrying it (same seq) through timeouts, no responders and NOT_LEADER. */
  async call(op: string, extra: object = {}, timeoutMs = this.callTimeoutMs): Promise<Reply> {
    const seq = this.next();
    return retry(
      () => this.cluster.rawRequest(this.body(op, seq, extra), 1000),
      (reply) => reply.ok || reply.error !== "NOT_LEADER",
      timeoutMs,
      `${op} (seq ${seq}) got no answer`,
    );
  }
}
