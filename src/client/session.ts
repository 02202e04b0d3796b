/**
 * One client session: its id, its sequence numbers and the `ack` it reports.
 *
 * Every logged request takes the next seq (1, 2, 3, ...); retries reuse it.
 * A seq is "outstanding" from the moment it is issued until the client has
 * seen its final answer (for an acquire: granted, or failed, or known to be
 * cancelled) or has given up on it. `ack` tells the server which answers it
 * may forget: every seq at or below it is done. With several requests in
 * flight that is (lowest outstanding seq) - 1, or the highest seq issued when
 * nothing is outstanding. It never goes down, and it is always below the seq
 * of any outstanding request, in particular the one that carries it.
 *
 * With a server that takes `waits` (protocol/messages.ts), a request the
 * server has queued does not hold the ack back: the ack passes it and the
 * request carries it in `waits` until its final answer is seen. Otherwise
 * an acquire that waited an hour kept every answer sent meanwhile (renewals,
 * commits) in the server's reply cache, until the cache was full and the
 * session refused everything with LIMIT_EXCEEDED.
 */
import { MAX_LISTED_WAITS } from "../protocol/limits";
import type { LeaseInfo } from "../protocol/messages";
import type { DlmError } from "./errors";
import type { TransportSubscription } from "./transport";

/** Most tokens a session remembers (a duplicate grant notification older than that would be released as an orphan, and refused as not held). */
export const MAX_KNOWN_TOKENS = 1024;

export interface SessionInfo {
  sessionTimeoutMs: number;
  defaultLeaseMs: number;
  maxAppendBytes: number;
  /**
   * Largest critical section. Servers that send it also take a section's
   * appends inside the release and the one-request `commit`; with a server
   * that does not, every append is logged on its own, as before.
   */
  maxSectionBytes?: number;
  /** The server takes `waits` beside `ack`: queued requests do not hold the ack back (SeqTracker). */
  acceptsWaits?: boolean;
}

export class SeqTracker {
  private nextSeq = 1;
  private highest = 0;
  private readonly outstanding = new Set<number>();
  /** Outstanding seqs the server has queued (answered "queued"); the ack may pass them when `acceptsWaits`. */
  private readonly queuedSeqs = new Set<number>();
  /** Set once the server said it takes `waits` (its hello answer). */
  acceptsWaits = false;

  /** Take the next seq; it is outstanding until `done`. */
  issue(): number {
    const seq = this.nextSeq++;
    this.highest = seq;
    this.outstanding.add(seq);
    return seq;
  }

  /** The answer to `seq` has been seen (or the client gave up on it). */
  done(seq: number): void {
    this.outstanding.delete(seq);
    this.queuedSeqs.delete(seq);
  }

  /** The server answered outstanding `seq` "queued": it is logged and waits for its final answer. */
  queued(seq: number): void {
    if (this.outstanding.has(seq)) this.queuedSeqs.add(seq);
  }

  isOutstanding(seq: number): boolean {
    return this.outstanding.has(seq);
  }

  ack(): number {
    const passable = this.acceptsWaits ? this.queuedSeqs : undefined;
    let lowest = Infinity;
    for (const seq of this.outstanding) if (seq < lowest && !passable?.has(seq)) lowest = seq;
    const ack = lowest === Infinity ? this.highest : lowest - 1;
    if (!passable || passable.size <= MAX_LISTED_WAITS) return ack;
    // A request lists at most MAX_LISTED_WAITS waits: stop below the next one.
    const below = [...passable].filter((seq) => seq <= ack).sort((a, b) => a - b);
    return below.length > MAX_LISTED_WAITS ? (below[MAX_LISTED_WAITS] as number) - 1 : ack;
  }

  /** The queued seqs at or below `ack` whose final answer has not been seen, ascending: a request's `waits`. */
  waitsUpTo(ack: number): number[] {
    if (!this.acceptsWaits || this.queuedSeqs.size === 0) return [];
    return [...this.queuedSeqs].filter((seq) => seq <= ack).sort((a, b) => a - b);
  }

  get inFlight(): number {
    return this.outstanding.size;
  }
}

export interface GrantResult {
  /** The grant (for an acquireAll: the grant of its first lock). */
  info: LeaseInfo;
  /** An acquireAll's grants, one per lock in the order they were listed. */
  all?: LeaseInfo[];
  /** Monotonic time (performance.now()) at or before which the server cannot have granted. */
  grantedAfter: number;
}

/** An acquire (or commit, or acquireAll) that has been sent and has no final outcome yet. */
/**
 * Whether a logged request sent `sends` times may have run before its
 * session ended, once the session's end was learned from the answer to
 * `answeredSeq` (if from a request's answer at all). It may have, once
 * sent, unless the session's end was the answer to its only attempt: then
 * the server had no session to run it in.
 */
export function mayHaveRun(seq: number, sends: number, answeredSeq: number | undefined): boolean {
  return sends > 0 && !(answeredSeq === seq && sends === 1);
}

export class PendingAcquire {
  state: "waiting" | "granted" | "failed" = "waiting";
  /** When the first attempt of this seq was sent. */
  firstSentAt: number | undefined;
  /** Attempts of this seq sent so far. */
  sends = 0;
  /**
   * A one-request commit: if the session ends before its answer is seen,
   * it may have run (granted from the queue, its notice lost), so its fate
   * is unknown rather than "nothing was written".
   */
  commit = false;
  /** When the latest attempt that was answered "queued" was sent: the grant came after it. */
  lastQueuedSentAt: number | undefined;
  result: GrantResult | undefined;
  error: DlmError | Error | undefined;
  readonly promise: Promise<GrantResult>;
  private resolveFn!: (r: GrantResult) => void;
  private rejectFn!: (e: unknown) => void;

  constructor(
    readonly seq: number,
    /** The lock waited for, as messages name it (an acquireAll's: its names joined by ", "). */
    readonly lock: string,
  ) {
    this.promise = new Promise<GrantResult>((resolve, reject) => {
      this.resolveFn = resolve;
      this.rejectFn = reject;
    });
    this.promise.catch(() => {});
  }

  sent(at: number): void {
    this.firstSentAt ??= at;
    this.sends++;
  }

  queued(sentAt: number): void {
    if (this.lastQueuedSentAt === undefined || sentAt > this.lastQueuedSentAt) this.lastQueuedSentAt = sentAt;
  }

  /** Settle with a grant (an acquireAll's: all of them); false if already settled. */
  grant(info: LeaseInfo, now: number, all?: LeaseInfo[]): boolean {
    if (this.state !== "waiting") return false;
    this.state = "granted";
    this.result = { info, ...(all ? { all } : {}), grantedAfter: this.lastQueuedSentAt ?? this.firstSentAt ?? now };
    this.resolveFn(this.result);
    return true;
  }

  /** Settle with an error; false if already settled. */
  fail(error: DlmError | Error): boolean {
    if (this.state !== "waiting") return false;
    this.state = "failed";
    this.error = error;
    this.rejectFn(error);
    return true;
  }
}

export class Session {
  readonly seqs = new SeqTracker();
  info: SessionInfo | undefined;
  /** The dlm version the leader reported in its hello answer (undefined from a server that does not say). */
  serverVersion: string | undefined;
  sub: TransportSubscription | undefined;
  expired = false;
  /** Monotonic time of the last request that carried this session's id. */
  lastSentAt = 0;
  heartbeat: NodeJS.Timeout | undefined;
  readonly pending = new Map<number, PendingAcquire>();
  /** Tokens granted to this session, so a late duplicate grant notification is not mistaken for an orphan. */
  readonly knownTokens = new Set<number>();

  /** Remembers a token granted to this session, forgetting the oldest past MAX_KNOWN_TOKENS. */
  rememberToken(token: number): void {
    this.knownTokens.add(token);
    if (this.knownTokens.size > MAX_KNOWN_TOKENS) this.knownTokens.delete(this.knownTokens.values().next().value!);
  }

  constructor(
    readonly id: string,
    readonly generation: number,
    /** Where this session's requests go: its namespace's subject (protocol/subjects.ts, requestSubjectFor). */
    readonly requestSubject: string,
  ) {}
}
