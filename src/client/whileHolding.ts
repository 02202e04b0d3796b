/**
 * The one critical-section pattern behind `withLock`, `withLocks` and
 * `Semaphore.withPermits`: run the caller's function while holding a grant
 * (a `Lease`, or a `LeaseSet`), then
 *
 * - the function resolved: release, committing what it staged, and return
 *   its result. If the release fails, end what is still held without
 *   committing (a release whose outcome is unknown must not leave a grant
 *   that the client renews for ever) and throw the release's error.
 * - the function threw: end the grant without committing, so nothing it
 *   staged reaches the files, and rethrow its own error unchanged. Ending
 *   never throws (it is what leaving an `await using` scope does), so it
 *   cannot replace the function's error.
 */

/** A grant the pattern can hold: released to commit, disposed to end it without committing. */
export interface Held {
  release(): Promise<unknown>;
  [Symbol.asyncDispose](): Promise<void>;
}

export async function runWhileHolding<H extends Held, T>(held: H, fn: (held: H) => T | PromiseLike<T>): Promise<T> {
  let result: T;
  try {
    result = await fn(held);
  } catch (e) {
    await held[Symbol.asyncDispose]();
    throw e;
  }
  try {
    await held.release();
  } catch (e) {
    await held[Symbol.asyncDispose]();
    throw e;
  }
  return result;
}
