/**
 * A counting semaphore: at most `limit` permits out at once, across every
 * client of the cluster. What `client.semaphore(name, limit)` returns.
 *
 * ```ts
 * const exports = client.semaphore("exports", 3); // at most 3 exports at a time
 * await exports.withPermits(async (lease) => runExport({ fence: lease.token, signal: lease.signal }));
 * ```
 *
 * A permit is an ordinary `Lease` (with `lease.permits` and `lease.limit`):
 * it has its own fencing token, is renewed in the background, can be lost,
 * and is released or abandoned like a lock. Waiters are served in strict
 * FIFO order: a request for many permits at the head of the queue is not
 * overtaken by smaller ones behind it, so it is never starved.
 *
 * The semaphore exists on the server while someone holds or waits for a
 * permit, and the first acquire that finds it idle sets its limit. Every
 * caller must name the same limit: a request with another limit (or a plain
 * lock acquire of a semaphore's name, or a permit of a lock's name) is
 * refused with LockKindMismatchError and changes nothing.
 */
import type { AcquireOptions } from "./client";
import type { Lease } from "./lease";

/** Options of a permit acquire. */
export interface PermitOptions {
  /** How many permits to take at once (1 … limit, default 1). */
  permits?: number;
  /** Lease length; default the client's `defaultLeaseMs`, else the server's. */
  leaseMs?: number;
  /** Give up waiting after this long (server-side, WaitTimeoutError). 0 = only if available now. Default: wait until granted. */
  waitMs?: number;
  /** Abort the wait: the client cancels it on the server and rejects with CancelledError. */
  signal?: AbortSignal;
}

/** What a semaphore needs from its client (implemented by DlmClient). */
export interface SemaphoreOwner {
  acquire(lock: string, opts: AcquireOptions): Promise<Lease>;
  tryAcquire(lock: string, opts: AcquireOptions): Promise<Lease | null>;
  withLock<T>(lock: string, fn: (lease: Lease) => T | PromiseLike<T>, opts: AcquireOptions): Promise<T>;
}

export class Semaphore {
  /** @internal Use `client.semaphore(name, limit)`, which checks both. */
  constructor(
    private readonly owner: SemaphoreOwner,
    /** The semaphore's name (a lock name: the two share one namespace on the server). */
    readonly name: string,
    /** How many permits may be out at once. */
    readonly limit: number,
  ) {}

  /**
   * Take `opts.permits` (default 1) permits, waiting in FIFO order until
   * they are available. Rejects like `client.acquire`, and with
   * LockKindMismatchError if the name is in use with another limit or as a lock.
   */
  acquire(opts: PermitOptions = {}): Promise<Lease> {
    return this.owner.acquire(this.name, this.acquireOptions(opts));
  }

  /**
   * Take the permits if they are granted within `opts.waitMs` (default 0:
   * only if available now); resolves `null` otherwise, as `client.tryAcquire`.
   */
  tryAcquire(opts: PermitOptions = {}): Promise<Lease | null> {
    return this.owner.tryAcquire(this.name, this.acquireOptions(opts));
  }

  /**
   * Run `fn` while holding the permits, as `client.withLock` does for a lock:
   * release them when `fn` resolves, abandon them when it throws (and
   * rethrow its error).
   */
  withPermits<T>(fn: (lease: Lease) => T | PromiseLike<T>, opts: PermitOptions = {}): Promise<T> {
    return this.owner.withLock(this.name, fn, this.acquireOptions(opts));
  }

  private acquireOptions(opts: PermitOptions): AcquireOptions {
    return { ...opts, limit: this.limit, permits: opts.permits ?? 1 };
  }
}
