/**
 * Per lock, the cleanup this client still owes the server: the abandon of a
 * grant it declared lost by its own clock, or the cancel of a wait it gave
 * up. Until that cleanup is answered the server still counts the grant or
 * the wait, and would refuse this client's next acquire of the lock with
 * ALREADY_HELD; so the next acquire waits for it first (`settle`).
 *
 * The table is bounded (MAX_TRACKED_LOCKS, oldest dropped first): a lock
 * dropped from it only loses the wait, and the acquire's ALREADY_HELD
 * handling (inRounds in acquireWaits.ts) still ends the stale grant or
 * wait and asks again.
 */
import { raceSignal } from "./retry";

/** Most locks with a cleanup remembered at once. */
export const MAX_TRACKED_LOCKS = 1024;

export class ServerCleanups {
  /** Resolves, never rejects, once the server answered (true: the grant or wait is over) or the cleanup was given up (false). */
  private readonly byLock = new Map<string, Promise<boolean>>();

  /**
   * `lock`'s grant is being abandoned by `abandon` (true once the server
   * says the grant is over); it replaces any earlier cleanup of the lock,
   * and is forgotten once it succeeded.
   */
  trackAbandon(lock: string, abandon: Promise<boolean>): void {
    const done: Promise<boolean> = abandon.then((ended) => {
      if (ended && this.byLock.get(lock) === done) this.byLock.delete(lock);
      return ended;
    });
    this.byLock.delete(lock);
    this.byLock.set(lock, done);
    this.trim();
  }

  /**
   * A wait on `locks` given up in the background (cancelled, or timed out)
   * stands on the server until `cleanup` settles: the next acquire of those
   * locks waits for it, after whatever cleanup of the lock came before.
   */
  trackWait(locks: readonly string[], cleanup: Promise<void>): void {
    for (const name of locks) {
      const before = this.byLock.get(name);
      const done: Promise<boolean> = Promise.all([before, cleanup.catch(() => undefined)]).then(() => {
        if (this.byLock.get(name) === done) this.byLock.delete(name);
        return true;
      });
      this.byLock.set(name, done);
    }
    this.trim();
  }

  /**
   * Waits for the cleanup standing on `lock`, if any. False only when
   * `signal` aborted first; a cleanup that failed still returns true (the
   * acquire then learns of the stale grant from the server's refusal).
   */
  async settle(lock: string, signal: AbortSignal | undefined): Promise<boolean> {
    const done = this.byLock.get(lock);
    if (!done) return true;
    try {
      await raceSignal(done, signal);
      return true;
    } catch {
      return !signal?.aborted;
    }
  }

  private trim(): void {
    if (this.byLock.size > MAX_TRACKED_LOCKS) this.byLock.delete(this.byLock.keys().next().value!);
  }
}
