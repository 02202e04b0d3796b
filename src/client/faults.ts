/**
 * Fault injection for the client's traffic: drop, delay or duplicate chosen
 * requests and replies, and drop notifications, deterministically.
 *
 * The injector wraps the client's Transport, so it sees exactly what the
 * client sends, including every retry. It reads `op`, `client` and `seq`
 * from each request and counts, per (client, op, seq), how many times it has
 * seen that request: that is the request's `attempt` (1 = first send; a
 * retry or an acquire's poll is 2, 3, ...). Requests without a seq (ping,
 * status, read) count identical payloads. Copies it injects itself
 * (duplicateRequest) are not counted.
 *
 * Usage:
 *
 * ```ts
 * import { connect, FaultInjector } from "dlm";
 *
 * const faults = new FaultInjector({ seed: 42 });
 * // The first reply to every release is lost: the client retries with the
 * // same seq and the server answers from its reply cache.
 * faults.add({ op: "release", attempt: 1, action: { kind: "dropReply" } });
 * // 10% of appends reach the server twice.
 * faults.add({ op: "append", probability: 0.1, action: { kind: "duplicateRequest" } });
 * // The second acquire's grant notification is lost (polling recovers it).
 * faults.add({ action: { kind: "dropNotification", event: "granted" }, times: 1 });
 *
 * const client = await connect({ servers, faults });
 * ...
 * console.log(faults.events); // what was injected, in order
 * ```
 *
 * Rule matching. A rule applies to a request when every field it sets
 * matches: `op` (one or a list), `client`, `seq`, `attempt` (one or a list,
 * 1-based), `nth` (the nth distinct request of that op, 1-based, in the
 * order the injector first saw them). Then, if it sets `probability`, a
 * draw from the injector's seeded PRNG (mulberry32) decides; draws happen
 * only for rules that otherwise match, so a run with the same seed and the
 * same traffic injects the same faults. `times` caps how often a rule fires
 * (default: unlimited). Every matching rule fires; their actions combine
 * (delays add up, any drop wins).
 *
 * Actions, from the caller's point of view (its attempt timeout is `t`):
 * - dropRequest: never sent; the attempt times out after `t`.
 * - dropReply: sent, and the server acts on it; its reply is discarded; the
 *   attempt times out after `t`.
 * - delayRequest {ms}: sent after `ms`. If `ms >= t` the attempt times out
 *   at `t`, the late request still reaches the server, and its reply is
 *   discarded.
 * - delayReply {ms}: the reply is handed back `ms` after it arrived, or the
 *   attempt times out at `t` if that comes first.
 * - duplicateRequest {copies = 1, delayMs = 0}: the request is also sent
 *   `copies` more times after `delayMs` (fire and forget, replies
 *   discarded).
 * - dropNotification {event?}: a notification (of that event, or any) is
 *   dropped before the client sees it. These rules never match requests;
 *   for them only `client`, `seq` (granted / waitEnded), `probability` and
 *   `times` are considered.
 */
import type { Notification, Op } from "../protocol/messages";
import { TransportClosedError, TransportTimeoutError, type Transport, type TransportSubscription } from "./transport";

export type FaultAction =
  | { kind: "dropRequest" }
  | { kind: "dropReply" }
  | { kind: "delayRequest"; ms: number }
  | { kind: "delayReply"; ms: number }
  | { kind: "duplicateRequest"; copies?: number; delayMs?: number }
  | { kind: "dropNotification"; event?: Notification["event"] };

export interface FaultRule {
  op?: Op | Op[];
  client?: string;
  seq?: number;
  /** 1-based attempt number of that (client, op, seq), as counted by the injector. */
  attempt?: number | number[];
  /** The nth distinct request of that op, 1-based. */
  nth?: number;
  /** Fire with this probability (seeded PRNG). */
  probability?: number;
  /** Fire at most this many times. Default unlimited. */
  times?: number;
  action: FaultAction;
}

export interface FaultEvent {
  /** Date.now() when injected. */
  at: number;
  op: Op | "notification";
  client?: string;
  seq?: number;
  attempt?: number;
  nth?: number;
  /** For notifications. */
  event?: Notification["event"];
  action: FaultAction["kind"];
  /** Index of the rule (in the order added) that fired. */
  rule: number;
}

export interface FaultInjectorOptions {
  /** PRNG seed for `probability` rules. Default 1. */
  seed?: number;
  rules?: FaultRule[];
}

/** mulberry32: a small, fast, seedable PRNG returning floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What the injector decided for one request. */
export interface FaultPlan {
  dropRequest: boolean;
  dropReply: boolean;
  requestDelayMs: number;
  replyDelayMs: number;
  duplicates: Array<{ copies: number; delayMs: number }>;
}

interface RequestInfo {
  op: Op;
  client?: string;
  seq?: number;
  attempt: number;
  nth: number;
}

const decoder = new TextDecoder();

export class FaultInjector {
  /** Everything injected so far, in order. */
  readonly events: FaultEvent[] = [];
  private rules: Array<{ rule: FaultRule; index: number; fired: number }> = [];
  private nextIndex = 0;
  private readonly attempts = new Map<string, number>();
  private readonly nthByKey = new Map<string, number>();
  private readonly distinctPerOp = new Map<string, number>();
  private random: () => number;
  private readonly seed: number;

  constructor(opts: FaultInjectorOptions = {}) {
    this.seed = opts.seed ?? 1;
    this.random = mulberry32(this.seed);
    for (const rule of opts.rules ?? []) this.add(rule);
  }

  /** Add a rule; returns its index (as reported in events). */
  add(rule: FaultRule): number {
    const index = this.nextIndex++;
    this.rules.push({ rule, index, fired: 0 });
    return index;
  }

  /** Remove every rule. Counters, the PRNG and the event log are kept. */
  clear(): void {
    this.rules = [];
  }

  /** Remove every rule and forget counters and events; the PRNG restarts from the seed. */
  reset(): void {
    this.rules = [];
    this.nextIndex = 0;
    this.attempts.clear();
    this.nthByKey.clear();
    this.distinctPerOp.clear();
    this.events.length = 0;
    this.random = mulberry32(this.seed);
  }

  /** A transport that sends through `inner` with this injector's faults. */
  wrap(inner: Transport): Transport {
    return new FaultyTransport(inner, this);
  }

  /** Asked by the client for every notification it receives; true = drop it. */
  shouldDropNotification(n: Notification, client?: string): boolean {
    let drop = false;
    for (const entry of this.rules) {
      const { rule } = entry;
      if (rule.action.kind !== "dropNotification") continue;
      if (rule.action.event !== undefined && rule.action.event !== n.event) continue;
      if (rule.client !== undefined && rule.client !== client) continue;
      if (rule.seq !== undefined && !("seq" in n && n.seq === rule.seq)) continue;
      if (!this.fires(entry)) continue;
      drop = true;
      this.events.push({
        at: Date.now(),
        op: "notification",
        client,
        seq: "seq" in n ? n.seq : undefined,
        event: n.event,
        action: "dropNotification",
        rule: entry.index,
      });
    }
    return drop;
  }

  /** Decide the faults for one outgoing request (counts it as an attempt). */
  plan(payload: Uint8Array): FaultPlan {
    const plan: FaultPlan = { dropRequest: false, dropReply: false, requestDelayMs: 0, replyDelayMs: 0, duplicates: [] };
    const info = this.identify(payload);
    if (!info) return plan;
    for (const entry of this.rules) {
      const { rule } = entry;
      const action = rule.action;
      if (action.kind === "dropNotification") continue;
      if (rule.op !== undefined && !(Array.isArray(rule.op) ? rule.op.includes(info.op) : rule.op === info.op)) continue;
      if (rule.client !== undefined && rule.client !== info.client) continue;
      if (rule.seq !== undefined && rule.seq !== info.seq) continue;
      if (rule.attempt !== undefined) {
        const wanted = Array.isArray(rule.attempt) ? rule.attempt : [rule.attempt];
        if (!wanted.includes(info.attempt)) continue;
      }
      if (rule.nth !== undefined && rule.nth !== info.nth) continue;
      if (!this.fires(entry)) continue;
      switch (action.kind) {
        case "dropRequest":
          plan.dropRequest = true;
          break;
        case "dropReply":
          plan.dropReply = true;
          break;
        case "delayRequest":
          plan.requestDelayMs += action.ms;
          break;
        case "delayReply":
          plan.replyDelayMs += action.ms;
          break;
        case "duplicateRequest":
          plan.duplicates.push({ copies: action.copies ?? 1, delayMs: action.delayMs ?? 0 });
          break;
      }
      this.events.push({
        at: Date.now(),
        op: info.op,
        client: info.client,
        seq: info.seq,
        attempt: info.attempt,
        nth: info.nth,
        action: action.kind,
        rule: entry.index,
      });
    }
    return plan;
  }

  private fires(entry: { rule: FaultRule; fired: number }): boolean {
    const { rule } = entry;
    if (rule.times !== undefined && entry.fired >= rule.times) return false;
    if (rule.probability !== undefined && !(this.random() < rule.probability)) return false;
    entry.fired++;
    return true;
  }

  private identify(payload: Uint8Array): RequestInfo | undefined {
    let text: string;
    let req: { op?: unknown; client?: unknown; seq?: unknown };
    try {
      text = decoder.decode(payload);
      req = JSON.parse(text) as typeof req;
    } catch {
      return undefined;
    }
    if (typeof req !== "object" || req === null || typeof req.op !== "string") return undefined;
    const op = req.op as Op;
    const client = typeof req.client === "string" ? req.client : undefined;
    const seq = typeof req.seq === "number" ? req.seq : undefined;
    const key = seq !== undefined ? `${client ?? ""}|${op}|${seq}` : `${op}|${text}`;
    const attempt = (this.attempts.get(key) ?? 0) + 1;
    this.attempts.set(key, attempt);
    let nth = this.nthByKey.get(key);
    if (nth === undefined) {
      nth = (this.distinctPerOp.get(op) ?? 0) + 1;
      this.distinctPerOp.set(op, nth);
      this.nthByKey.set(key, nth);
    }
    return { op, client, seq, attempt, nth };
  }
}

/** The transport the injector hands to the client. */
class FaultyTransport implements Transport {
  private readonly timers = new Set<NodeJS.Timeout>();
  /** Rejecters of faulted requests still outstanding, settled by close(). */
  private readonly outstanding = new Set<(e: Error) => void>();

  constructor(
    private readonly inner: Transport,
    private readonly faults: FaultInjector,
  ) {}

  private later(ms: number, fn: () => void): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
  }

  request(subject: string, payload: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    const plan = this.faults.plan(payload);
    for (const dup of plan.duplicates) {
      for (let i = 0; i < dup.copies; i++) {
        const send = (): void => void this.inner.request(subject, payload, timeoutMs).catch(() => {});
        if (dup.delayMs > 0) this.later(dup.delayMs, send);
        else send();
      }
    }
    const noFaults = !plan.dropRequest && !plan.dropReply && plan.requestDelayMs === 0 && plan.replyDelayMs === 0;
    if (noFaults) return this.inner.request(subject, payload, timeoutMs);

    return new Promise<Uint8Array>((resolve, reject) => {
      let settled = false;
      const finish = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(deadline);
        this.timers.delete(deadline);
        this.outstanding.delete(abandon);
        fn();
      };
      const abandon = (e: Error): void => finish(() => reject(e));
      this.outstanding.add(abandon);
      const deadline = setTimeout(() => finish(() => reject(new TransportTimeoutError(subject, timeoutMs))), timeoutMs);
      this.timers.add(deadline);
      if (plan.dropRequest) return;
      const send = (): void => {
        // A request sent after the caller gave up still gets a full timeout;
        // its reply is discarded either way.
        const left = timeoutMs - plan.requestDelayMs;
        this.inner.request(subject, payload, left > 0 ? left : timeoutMs).then(
          (reply) => {
            if (plan.dropReply || settled) return;
            if (plan.replyDelayMs > 0) this.later(plan.replyDelayMs, () => finish(() => resolve(reply)));
            else finish(() => resolve(reply));
          },
          (err: unknown) => {
            if (plan.dropReply || settled) return;
            if (plan.replyDelayMs > 0) this.later(plan.replyDelayMs, () => finish(() => reject(err)));
            else finish(() => reject(err));
          },
        );
      };
      if (plan.requestDelayMs > 0) this.later(plan.requestDelayMs, send);
      else send();
    });
  }

  publish(subject: string, payload: Uint8Array): void {
    this.inner.publish(subject, payload);
  }

  subscribe(subject: string, handler: (payload: Uint8Array) => void): Promise<TransportSubscription> {
    return this.inner.subscribe(subject, handler);
  }

  async close(): Promise<void> {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    for (const abandon of [...this.outstanding]) abandon(new TransportClosedError("transport closed"));
    await this.inner.close();
  }
}
