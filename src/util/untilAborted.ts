/**
 * Waiting for work that cannot itself be cancelled, with a way out: the
 * wait ends as soon as an AbortSignal fires, while the work goes on in the
 * background. `dlm up` uses it so that Ctrl-C during start-up is acted on at
 * once, not after a nats-server, a connection or a leader election that
 * nobody wants any more.
 *
 * The work is not forgotten: a failure it reports later is swallowed (it
 * would otherwise be an unhandled rejection, which ends a Node process), and
 * a result it delivers later is handed to `discard`, so that a connection
 * that opens after the abort is closed instead of leaked. A sleep that an
 * abort cuts short is the client's `sleep(ms, signal)`.
 */
import { raceSignal } from "../client/retry";

/**
 * Resolves or rejects as `work` does, unless `signal` aborts first (or has
 * already): then it rejects at once with `signal.reason` (the client's
 * raceSignal), and a result the work delivers after that goes to `discard`.
 */
export function untilAborted<T>(work: Promise<T>, signal: AbortSignal | undefined, discard?: (late: T) => void): Promise<T> {
  if (signal === undefined) return work;
  const raced = raceSignal(work, signal);
  // Lost to the abort: a late result is handed over, a late failure was already swallowed by raceSignal.
  raced.catch(() => work.then((late) => signal.aborted && discard?.(late), () => undefined));
  return raced;
}

/** Resolves when `signal` aborts (at once if it has). */
export function whenAborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
}
