/**
 * Retrying a JetStream call within a time bound. In a degraded NATS cluster
 * (one server of three down, a stream electing a new leader) a request may
 * time out or find no responders now and then although the next one
 * succeeds; a node must not give up starting or taking over for that.
 * Errors that another try cannot fix (a broken invariant, a bad argument)
 * are thrown at once.
 */
import type { Logger } from "../log/logger";
import { InvariantError } from "./assert";
import { errorMessage } from "./errorMessage";

export interface RetryOptions {
  /** Give up (throw the last error) once this long has passed since the first try. */
  withinMs: number;
  /** Pause after the first failure; doubles up to maxPauseMs. */
  firstPauseMs?: number;
  maxPauseMs?: number;
  logger: Logger;
  /** Errors that must not be retried, besides InvariantError, RangeError and TypeError. */
  isFinal?: (err: unknown) => boolean;
  /** Stop retrying (throw) when this says so, e.g. the connection closed. */
  abandoned?: () => boolean;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export async function retryWithin<T>(what: string, fn: () => Promise<T>, opts: RetryOptions): Promise<T> {
  const deadline = Date.now() + opts.withinMs;
  let pauseMs = opts.firstPauseMs ?? 100;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const final = err instanceof InvariantError || err instanceof RangeError || err instanceof TypeError || opts.isFinal?.(err) === true;
      if (final || Date.now() + pauseMs >= deadline || opts.abandoned?.() === true) throw err;
      opts.logger.warn({ err: errorMessage(err), attempt, what }, "JetStream call failed; retrying");
      await sleep(pauseMs);
      pauseMs = Math.min(pauseMs * 2, opts.maxPauseMs ?? 1000);
    }
  }
}
