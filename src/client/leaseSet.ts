/**
 * Several locks held at once: what `acquireAll` returns.
 *
 * ```ts
 * await using set = await client.acquireAll(["accounts.7", { lock: "rates", mode: "shared" }]);
 * await transfer({ fence: set.get("accounts.7")!.token, signal: set.signal });
 * await set.release();
 * ```
 *
 * The server grants the locks of a set all together or not at all, in one
 * log entry; from then on each is an ordinary `Lease` with its own fencing
 * token, renewed in the background and lost on its own exactly like a lease
 * from `acquire` (the set only gathers them). Because the work a set guards
 * needs every one of its locks, the set counts as lost as soon as any one of
 * them is: `signal` aborts (its reason is that lease's error) and "lost" is
 * emitted once. The others stay held until you release or abandon the set.
 *
 * Releasing or abandoning a set does so to every lease in it at once, and
 * does not stop at the first failure: each lease gets its release, and then
 * the first failure (in the order the locks were listed) is thrown. Leaving
 * an `await using` scope abandons every lease still held, as it does for one
 * `Lease` (nothing staged under them is committed).
 */
import "./asyncDispose";
import type { DlmError } from "./errors";
import type { Committed, Discarded, Lease } from "./lease";
import { LostEmitter } from "./lostEvents";

export class LeaseSet extends LostEmitter implements AsyncDisposable, Iterable<Lease> {
  /** One lease per lock, in the order the locks were listed. */
  readonly leases: readonly Lease[];
  private readonly controller = new AbortController();

  /**
   * @internal The client builds sets. A "lost" listener that throws does not
   * stop the others; its error goes to `onListenerError`.
   */
  constructor(
    leases: readonly Lease[],
    private readonly onListenerError: (e: unknown) => void = () => {},
  ) {
    super();
    this.leases = Object.freeze([...leases]);
    for (const lease of this.leases) {
      if (lease.lost && lease.lostReason) this.onLost(lease.lostReason, lease);
      else lease.once("lost", (error: DlmError) => this.onLost(error, lease));
    }
  }

  /** The lease on `lock`, if the set has one. */
  get(lock: string): Lease | undefined {
    return this.leases.find((l) => l.lock === lock);
  }

  /** How many locks the set holds. */
  get size(): number {
    return this.leases.length;
  }

  /** Aborted as soon as any lease of the set is lost; its reason is that lease's error. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** True once any lease of the set was lost. */
  get lost(): boolean {
    return this.controller.signal.aborted;
  }

  /** The error of the first lease of the set that was lost. */
  get lostReason(): DlmError | undefined {
    return this.lost ? (this.controller.signal.reason as DlmError) : undefined;
  }

  [Symbol.iterator](): Iterator<Lease> {
    return this.leases[Symbol.iterator]();
  }

  /**
   * Release every lease of the set (committing what was staged under the
   * files lock, if the set holds it), all at once. A lease already released
   * on its own is skipped. If any release fails, the others still happen,
   * and then the first failure is thrown (a lost lease: its LockExpiredError
   * …; no answer: TimeoutError, and that lease is still held).
   */
  async release(): Promise<Committed> {
    const results = await Promise.allSettled(this.leases.map((l) => (l.released ? Promise.resolve({ appends: 0, bytes: 0 }) : l.release())));
    return sumOrThrow(results);
  }

  /**
   * End every grant of the set without committing (see `Lease.abandon`),
   * all at once. If any abandon fails, the others still happen, and then the
   * first failure is thrown.
   */
  async abandon(): Promise<Discarded> {
    const results = await Promise.allSettled(this.leases.map((l) => l.abandon()));
    return sumOrThrow(results);
  }

  /** Renew every lease of the set now (the client also renews them in the background); throws the first failure. */
  async renew(): Promise<this> {
    const results = await Promise.allSettled(this.leases.filter((l) => l.state === "held").map((l) => l.renew()));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
    return this;
  }

  /**
   * What leaving an `await using` scope does: abandon every lease of the
   * set that is still held, so nothing staged under them is committed.
   * Never throws (see `Lease[Symbol.asyncDispose]`).
   */
  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all(this.leases.map((l) => l[Symbol.asyncDispose]()));
  }

  toJSON(): Array<ReturnType<Lease["toJSON"]>> {
    return this.leases.map((l) => l.toJSON());
  }

  private onLost(error: DlmError, lease: Lease): void {
    if (this.controller.signal.aborted) return;
    this.controller.abort(error);
    this.emitLost(error, lease, this.onListenerError);
  }
}

/** Sums what each lease committed or discarded, or throws the first failure after all have settled. */
function sumOrThrow(results: Array<PromiseSettledResult<{ appends: number; bytes: number }>>): { appends: number; bytes: number } {
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
  let appends = 0;
  let bytes = 0;
  for (const r of results) {
    if (r.status === "fulfilled") {
      appends += r.value.appends;
      bytes += r.value.bytes;
    }
  }
  return { appends, bytes };
}
