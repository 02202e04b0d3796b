/**
 * A cheap internal stand-in for AbortController, for the signals the client
 * makes and drops on every request (an acquire's send/poll loop, the
 * client's own close).
 *
 * Why: Node's AbortController and EventTarget cost microseconds each
 * (signal objects, listener bookkeeping, an Event per abort), and the
 * acquire path made one controller and added and removed several listeners
 * per request: about 10% of a busy client's CPU in the bench's profile. A
 * Stopper is a flag, a reason and an array of callbacks.
 *
 * It has the part of AbortSignal's shape the client's helpers use
 * (`aborted`, `reason`, `addEventListener("abort")`,
 * `removeEventListener("abort")`), so those helpers take either: a caller's
 * AbortSignal or a Stopper. Listeners run once, in the order added; one
 * added after the abort never runs, as with AbortSignal.
 */

/** What the client's helpers need of a signal: an AbortSignal or a Stopper. */
export interface StopSignal {
  readonly aborted: boolean;
  readonly reason: unknown;
  addEventListener(type: "abort", listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: "abort", listener: () => void): void;
}

export class Stopper implements StopSignal {
  private _aborted = false;
  private _reason: unknown = undefined;
  private listeners: Array<() => void> = [];

  get aborted(): boolean {
    return this._aborted;
  }

  get reason(): unknown {
    return this._reason;
  }

  /** Listeners run once anyway, so `once` changes nothing. */
  addEventListener(_type: "abort", listener: () => void, _options?: { once?: boolean }): void {
    if (!this._aborted) this.listeners.push(listener);
  }

  removeEventListener(_type: "abort", listener: () => void): void {
    // The listener removed is nearly always the one added last.
    const i = this.listeners.lastIndexOf(listener);
    if (i >= 0) this.listeners.splice(i, 1);
  }

  /** Stops once: later calls change nothing. Every listener runs even if one throws; the first error is rethrown after. */
  abort(reason: unknown): void {
    if (this._aborted) return;
    this._aborted = true;
    this._reason = reason;
    const listeners = this.listeners;
    this.listeners = [];
    let failure: { error: unknown } | undefined;
    for (const listener of listeners) {
      try {
        listener();
      } catch (e) {
        failure ??= { error: e };
      }
    }
    if (failure) throw failure.error;
  }
}
