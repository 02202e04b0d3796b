/**
 * The retry policy of one request.
 *
 * - An attempt that times out is retried at once (it already waited its
 *   timeout), with the same seq, up to `maxAttempts` attempts; then the
 *   request fails with TIMEOUT: it may or may not have taken effect. The
 *   first attempt waits `firstAttemptTimeoutMs`, each later one twice as
 *   long as the one before, up to `requestTimeoutMs`: a request that was
 *   routed to a leader as it died is sent again after half a second, not
 *   two, while a slow but live cluster still gets the full timeout.
 * - "No responders", a disconnected NATS connection and NOT_LEADER mean that
 *   nobody could take the request right now. They are retried with
 *   exponential backoff and do not count as attempts, but they are bounded in
 *   time by `unavailableTimeoutMs` (counted from the first such answer);
 *   then the request fails with UNAVAILABLE.
 *
 * Because a retry reuses the request's seq, the server runs it at most once
 * and answers duplicates from its reply cache.
 */
import type { BackoffOptions } from "./options";
import type { StopSignal } from "./stopper";

export interface RetryPolicy {
  /** The longest one attempt waits for its answer. */
  requestTimeoutMs: number;
  /** How long the first attempt waits; absent: `requestTimeoutMs`. */
  firstAttemptTimeoutMs?: number;
  maxAttempts: number;
  backoff: BackoffOptions;
  unavailableTimeoutMs: number;
}

/** Exponential backoff with optional downward jitter. */
export class Backoff {
  private n = 0;
  constructor(
    private readonly opts: BackoffOptions,
    private readonly random: () => number = Math.random,
  ) {}

  /** The next delay, in ms. */
  next(): number {
    const base = Math.min(this.opts.maxMs, this.opts.initialMs * Math.pow(this.opts.multiplier, this.n));
    this.n++;
    return Math.max(0, base * (1 - this.opts.jitter * this.random()));
  }

  reset(): void {
    this.n = 0;
  }
}

/** What one attempt came to. */
export type AttemptOutcome<T> =
  | { kind: "done"; value: T }
  | { kind: "timeout"; error: unknown }
  | { kind: "unavailable"; error: unknown };

export interface RetryHooks {
  /** Stops the loop (between attempts and during backoff) with the signal's reason. */
  signal?: StopSignal;
  /** The error to throw after `maxAttempts` timeouts. */
  timeoutExhausted(attempts: number, last: unknown): Error;
  /** The error to throw when the unavailable budget is spent. */
  unavailableExhausted(elapsedMs: number, last: unknown): Error;
  onRetry?(info: { attempt: number; kind: "timeout" | "unavailable"; delayMs: number; error: unknown }): void;
  now?(): number;
  random?(): number;
}

/** How long attempt `n` (1-based) waits for its answer under `policy`. */
export function attemptTimeoutMs(policy: RetryPolicy, n: number): number {
  const first = Math.min(policy.firstAttemptTimeoutMs ?? policy.requestTimeoutMs, policy.requestTimeoutMs);
  return Math.min(policy.requestTimeoutMs, first * Math.pow(2, Math.max(0, n - 1)));
}

/** How long a request waits in all when every one of its attempts times out. */
export function allAttemptsTimeoutMs(policy: RetryPolicy): number {
  let total = 0;
  for (let n = 1; n <= policy.maxAttempts; n++) total += attemptTimeoutMs(policy, n);
  return total;
}

/** Run `attempt(1)`, `attempt(2)`, ... under `policy` until one is done. */
export async function retry<T>(
  policy: RetryPolicy,
  attempt: (n: number) => Promise<AttemptOutcome<T>>,
  hooks: RetryHooks,
): Promise<T> {
  const now = hooks.now ?? (() => performance.now());
  const backoff = new Backoff(policy.backoff, hooks.random);
  let timeouts = 0;
  let unavailableSince: number | undefined;
  for (let n = 1; ; n++) {
    throwIfAborted(hooks.signal);
    const outcome = await attempt(n);
    switch (outcome.kind) {
      case "done":
        return outcome.value;
      case "timeout":
        timeouts++;
        if (timeouts >= policy.maxAttempts) throw hooks.timeoutExhausted(timeouts, outcome.error);
        hooks.onRetry?.({ attempt: n, kind: "timeout", delayMs: 0, error: outcome.error });
        break;
      case "unavailable": {
        const t = now();
        unavailableSince ??= t;
        const elapsed = t - unavailableSince;
        const left = policy.unavailableTimeoutMs - elapsed;
        if (left <= 0) throw hooks.unavailableExhausted(elapsed, outcome.error);
        const delayMs = Math.min(backoff.next(), left);
        hooks.onRetry?.({ attempt: n, kind: "unavailable", delayMs, error: outcome.error });
        await sleep(delayMs, hooks.signal);
        break;
      }
    }
  }
}

export function throwIfAborted(signal: StopSignal | undefined): void {
  if (signal?.aborted) throw signal.reason;
}

/** Wait `ms`; rejects with the signal's reason if it aborts first. */
export function sleep(ms: number, signal?: StopSignal, unref = false): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, Math.max(0, ms));
    if (unref) timer.unref?.();
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** `promise`, or a rejection with the signal's reason if the signal aborts first. */
export function raceSignal<T>(promise: Promise<T>, signal: StopSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) {
    promise.catch(() => {});
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}
