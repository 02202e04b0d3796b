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
 * that opens after the abort is closed instead of leaked.
 */

/**
 * Resolves or rejects as `work` does, unless `signal` aborts first (or has
 * already): then it rejects at once with `signal.reason`.
 */
export function untilAborted<T>(work: Promise<T>, signal: AbortSignal | undefined, discard?: (late: T) => void): Promise<T> {
  if (signal === undefined) return work;
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const onAbort = (): void => {
      if (settled) return;
      settled = true;
      reject(signal.reason);
    };
    work.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        if (!settled) {
          settled = true;
          resolve(value);
        } else {
          discard?.(value);
        }
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        if (!settled) {
          settled = true;
          reject(err);
        }
      },
    );
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Waits `ms`, or less when `signal` aborts (then rejects with its reason). */
export function sleepUntilAborted(ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  let timer: NodeJS.Timeout | undefined;
  const slept = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
  // The timer goes with the wait: an aborted sleep must not hold the process open.
  return untilAborted(slept, signal).finally(() => clearTimeout(timer));
}

/** Resolves when `signal` aborts (at once if it has). */
export function whenAborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
}
