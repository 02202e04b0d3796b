/**
 * A held lock: what `acquire` returns.
 *
 * ```ts
 * const lease = await client.acquire("global");
 * lease.on("lost", (err) => log.warn({ err }, "lost the lock"));
 * await doWork({ signal: lease.signal }); // aborted when the lease is lost
 * const { appends, bytes } = await lease.release();
 * ```
 *
 * The client renews the lease in the background. The lease is *lost* when
 * the server says so (a renew, append or release answered LOCK_EXPIRED,
 * NOT_HOLDER or SESSION_EXPIRED, or a `lost` notification), when the client
 * could not confirm a renew within `leaseMs` of sending it (measured locally,
 * on the safe side), or when the client is closed while holding it. Then
 * `signal` aborts (its reason is the error), `lost` becomes true, `lostReason`
 * holds the error, and "lost" is emitted once. A lost lease is never used
 * again: `release()` and appends under it reject with `lostReason`
 * (LockExpiredError unless the session expired or the client closed, or a
 * release that got no answer was still unanswered: TimeoutError)
 * without asking the server, so staged appends of a lost lease are never
 * committed, and an append still in flight when the loss is declared
 * rejects too. A lease lost by the local clock is also ended on the server
 * (`abandon`), so the lock moves on and this client can acquire it again.
 * (The server's NOT_HOLDER for a lease's token is reported as LOCK_EXPIRED.)
 *
 * `signal` does not abort on a normal `release()`.
 *
 * A shared (read) grant and a semaphore's permit are leases too (`mode`,
 * `permits`, `limit` say which), with their own token, renewal and loss,
 * and so is each lock of an `acquireAll` (see leaseSet.ts).
 *
 * A lease is `AsyncDisposable`: `await using lease = await client.acquire(name)`
 * ends the grant when the scope is left. Leaving the scope without
 * `release()` *abandons* the grant (nothing staged under it is committed),
 * because a scope can be left by an exception half-way through a critical
 * section, and committing half a section is exactly what dlm promises never
 * to do. Call `release()` as the scope's last statement to commit.
 */
import "./asyncDispose";
import type { DlmError } from "./errors";
import { LostEmitter } from "./lostEvents";
import type { LeaseInfo, LockMode } from "../protocol/messages";

export interface Committed {
  appends: number;
  bytes: number;
}

/**
 * What an abandoned section held and dropped: the counts of what was staged
 * under the grant and never reached the files.
 */
export interface Discarded {
  appends: number;
  bytes: number;
}

/** "released": the holder ended the grant, by `release()` (committed) or `abandon()` (discarded). */
export type LeaseState = "held" | "releasing" | "released" | "lost";

/** What a lease needs from its client (implemented by DlmClient). */
export interface LeaseOwner {
  release(lease: Lease): Promise<Committed>;
  abandon(lease: Lease): Promise<Discarded>;
  renew(lease: Lease): Promise<Lease>;
  /** End the grant without committing if it is still held; never rejects (see `Lease[Symbol.asyncDispose]`). */
  endUncommitted(lease: Lease): Promise<void>;
}

export class Lease extends LostEmitter implements AsyncDisposable {
  readonly lock: string;
  /** The fencing token: strictly increasing across the cluster's life. */
  readonly token: number;
  /** The session the lease was granted to. */
  readonly clientId: string;
  /**
   * How the lock is held: "exclusive" (the only holder) or "shared" (a read
   * grant, held together with other shared grants). Undefined for a permit
   * of a semaphore, and from a server older than shared locks (exclusive).
   */
  readonly mode: LockMode | undefined;
  /** A semaphore's permit: how many permits this grant holds (undefined for a lock). */
  readonly permits: number | undefined;
  /** A semaphore's permit: the semaphore's limit (undefined for a lock). */
  readonly limit: number | undefined;
  private _leaseMs: number;
  private _expiresAt: number;
  private _state: LeaseState = "held";
  private _lostReason: DlmError | undefined;
  /**
   * Made when `signal` is first read: most leases are released without
   * anyone asking for it, and an AbortController per acquire is a visible
   * share of a busy client's CPU.
   */
  private controller: AbortController | undefined;

  constructor(
    private readonly owner: LeaseOwner,
    info: LeaseInfo,
    clientId: string,
  ) {
    super();
    this.lock = info.lock;
    this.token = info.token;
    this.clientId = clientId;
    this.mode = info.mode;
    this.permits = info.permits;
    this.limit = info.limit;
    this._leaseMs = info.leaseMs;
    this._expiresAt = info.expiresAt;
  }

  /** Lease length granted by the server, ms. */
  get leaseMs(): number {
    return this._leaseMs;
  }
  /** When the lease ends unless renewed, in the leader's clock (ms since epoch). Informational. */
  get expiresAt(): number {
    return this._expiresAt;
  }
  /** Aborted when the lease is lost; its reason is the DlmError. */
  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this._lostReason) this.controller.abort(this._lostReason);
    }
    return this.controller.signal;
  }
  get lost(): boolean {
    return this._state === "lost";
  }
  get lostReason(): DlmError | undefined {
    return this._lostReason;
  }
  get released(): boolean {
    return this._state === "released";
  }
  get state(): LeaseState {
    return this._state;
  }

  /** Release the lock, committing the appends staged under it. */
  release(): Promise<Committed> {
    return this.owner.release(this);
  }

  /**
   * End the grant without committing: what was staged under it is dropped
   * and the lock passes to the next waiter at once. For a section that
   * failed half-way; a lease that is already lost resolves with nothing
   * discarded (the server ended it already). After a `release()` that got
   * no answer (TimeoutError) it rejects NotHolderError if that release had
   * committed the section.
   */
  abandon(): Promise<Discarded> {
    return this.owner.abandon(this);
  }

  /** Renew now (the client also renews in the background). */
  renew(): Promise<Lease> {
    return this.owner.renew(this);
  }

  /**
   * What leaving an `await using` scope does: if the lease is still held
   * (not released, not lost), abandon it, so that nothing staged under it
   * is committed. It never throws: a disposer that threw would replace the
   * error that left the scope. If the abandon gets no answer, the client
   * stops renewing the lease and the server ends the grant when the lease
   * runs out; either way the section is not committed. After a `release()`
   * it does nothing.
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.owner.endUncommitted(this);
  }

  toJSON(): LeaseInfo & { state: LeaseState } {
    return {
      lock: this.lock,
      token: this.token,
      leaseMs: this._leaseMs,
      expiresAt: this._expiresAt,
      ...(this.mode !== undefined ? { mode: this.mode } : {}),
      ...(this.permits !== undefined ? { permits: this.permits } : {}),
      ...(this.limit !== undefined ? { limit: this.limit } : {}),
      state: this._state,
    };
  }

  /** @internal The server renewed the lease. */
  _update(info: LeaseInfo): void {
    this._leaseMs = info.leaseMs;
    this._expiresAt = info.expiresAt;
  }

  /** @internal */
  _setState(state: Exclude<LeaseState, "lost">): void {
    if (this._state === "lost" || this._state === "released") return;
    this._state = state;
  }

  /**
   * @internal Mark lost: abort the signal and emit "lost", once. Returns
   * false if the lease was already lost or released. A listener that throws
   * does not stop the others; its error is handed to `onListenerError`.
   */
  _markLost(error: DlmError, onListenerError: (e: unknown) => void): boolean {
    if (this._state === "lost" || this._state === "released") return false;
    this._state = "lost";
    this._lostReason = error;
    this.controller?.abort(error);
    this.emitLost(error, this, onListenerError);
    return true;
  }
}
