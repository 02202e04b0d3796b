/**
 * Wire messages between clients and the leader. Every message is one JSON
 * object. Binary data (file appends, reads) travels as base64 in `data`.
 *
 * Requests that change state carry the client's session id (`client`), a
 * per-client sequence number (`seq`, starting at 1, strictly increasing) and
 * `ack`: every request with a sequence number at or below `ack` has been
 * answered and its answer seen, so the server may forget those answers,
 * except the seqs listed in `waits`: requests the server has queued (it
 * answered them "queued") whose final answer the client has not seen yet.
 * Without `waits` a client's `ack` could never pass a request that waits,
 * and every answer after it stayed cached until that wait ended: a client
 * that held one lock while it waited an hour for another filled its reply
 * cache with renewals and was refused LIMIT_EXCEEDED.
 * Retries reuse the same `seq`; that is what makes effects at-most-once.
 */
import type { ErrorName } from "./errors";

export const DEFAULT_LOCK = "global";

/** Operations that go through the log (state changes, at-most-once). */
export const LOGGED_OPS = ["hello", "goodbye", "acquire", "acquireAll", "release", "abandon", "append", "renew", "cancel", "commit"] as const;
/** Operations served from the leader's applied state, never logged. */
export const UNLOGGED_OPS = ["ping", "status", "read"] as const;
export type LoggedOp = (typeof LOGGED_OPS)[number];
export type UnloggedOp = (typeof UNLOGGED_OPS)[number];
export type Op = LoggedOp | UnloggedOp;

interface SessionFields {
  client: string;
  seq: number;
  ack: number;
  /** Queued requests at or below `ack` still waiting for their final answer: strictly increasing, at most MAX_LISTED_WAITS. */
  waits?: number[];
}

export interface HelloRequest extends SessionFields {
  op: "hello";
  /**
   * The client will list `waits`; a server that takes them says so in its
   * answer (`session.acceptsWaits`), one that does not ignores this.
   */
  listsWaits?: boolean;
}
export interface GoodbyeRequest extends SessionFields {
  op: "goodbye";
}
/** How a lock is held: alone, or beside other shared holders. */
export type LockMode = "exclusive" | "shared";

export interface AcquireRequest extends SessionFields {
  op: "acquire";
  lock: string;
  /** Lease length for this grant; the node's default when absent. */
  leaseMs?: number;
  /** Give up waiting after this long (server-side, logged); wait forever when absent. */
  waitMs?: number;
  /** Absent: exclusive. Never "shared" together with `limit`, never "shared" on the files lock. */
  mode?: LockMode;
  /** A semaphore with this many permits in all (1..maxSemaphoreLimit); not on the files lock. */
  limit?: number;
  /** Permits to take (1..limit), only with `limit`; 1 when absent. */
  permits?: number;
}
/**
 * Several locks at once, all or none (no semaphores). Granted when it heads
 * the queue of every listed lock and fits every lock's holders; the answer
 * lists one lease per lock in the order of `locks`.
 */
export interface AcquireAllRequest extends SessionFields {
  op: "acquireAll";
  /** 1..maxLocksPerRequest distinct names; mode absent means exclusive. */
  locks: Array<{ lock: string; mode?: LockMode }>;
  leaseMs?: number;
  waitMs?: number;
}
/** One append of a critical section carried inside a release or commit. */
export interface WireAppend {
  /** `file_0` … `file_99`. */
  file: string;
  /** base64 */
  data: string;
}

export interface ReleaseRequest extends SessionFields {
  op: "release";
  lock: string;
  token: number;
  /**
   * How many appends were logged on their own (`append` requests) under this
   * grant. When present the leader refuses the release with
   * SECTION_MISMATCH unless exactly that many were staged.
   */
  staged?: number;
  /** The rest of the section (only under `global`), committed after the staged appends. */
  appends?: WireAppend[];
}
/**
 * The one-request fenced commit: waits for `lock` in FIFO order like an
 * acquire (interim answer "queued"), and when granted appends `appends` and
 * releases, all in one log entry. The final answer carries the token
 * (`lease`) and `committed`.
 */
export interface CommitRequest extends SessionFields {
  op: "commit";
  lock: string;
  leaseMs?: number;
  waitMs?: number;
  appends: WireAppend[];
}
/** Ends the grant without committing what was staged under it. */
export interface AbandonRequest extends SessionFields {
  op: "abandon";
  lock: string;
  token: number;
}
export interface AppendRequest extends SessionFields {
  op: "append";
  /** `file_0` … `file_99`; any other name is FILE_NOT_FOUND. */
  file: string;
  /** base64 */
  data: string;
  /** The fencing token of the caller's grant of the lock guarding the file (`global`). */
  token: number;
}
export interface RenewRequest extends SessionFields {
  op: "renew";
  lock: string;
  token: number;
  leaseMs?: number;
}
export interface CancelRequest extends SessionFields {
  op: "cancel";
  /** The sequence number of the acquire whose wait is cancelled. */
  target: number;
}
export interface PingRequest {
  op: "ping";
  client: string;
}
export interface StatusRequest {
  op: "status";
}
export interface ReadRequest {
  op: "read";
  file: string;
  /**
   * Where the page starts (filePages.ts). Without it the answer is the
   * whole file, or TOO_LARGE when that does not fit one message.
   */
  offset?: number;
}

export type LoggedRequest =
  | HelloRequest
  | GoodbyeRequest
  | AcquireRequest
  | AcquireAllRequest
  | ReleaseRequest
  | AbandonRequest
  | AppendRequest
  | RenewRequest
  | CancelRequest
  | CommitRequest;
export type Request = LoggedRequest | PingRequest | StatusRequest | ReadRequest;

/** What a grant looks like on the wire. `expiresAt` is the leader's clock, ms since epoch. */
export interface LeaseInfo {
  lock: string;
  token: number;
  leaseMs: number;
  expiresAt: number;
  /** On locks (absent on grants of requests from before modes existed, and of commits: exclusive). */
  mode?: LockMode;
  /** On semaphores: the permits this grant holds, and the semaphore's limit. */
  permits?: number;
  limit?: number;
}

export interface OkReply {
  ok: true;
  code: 0;
  message: string;
  /** acquire: granted now or queued; later grants arrive as a notification. */
  status?: "granted" | "queued";
  lease?: LeaseInfo;
  /** acquireAll granted: one lease per requested lock, in the request's order. */
  leases?: LeaseInfo[];
  /** queued: 1-based place in the queue (of an acquireAll: in the first listed lock's queue). */
  position?: number;
  /** release and commit: what the commit wrote. */
  committed?: { appends: number; bytes: number };
  /** abandon: what was staged and is now dropped. */
  discarded?: { appends: number; bytes: number };
  /** append: the section staged so far under this grant. */
  staged?: { appends: number; bytes: number };
  /** cancel: whether the target wait was still waiting and is now cancelled. */
  cancelled?: boolean;
  /** hello: the server's settings the client should follow. */
  session?: {
    sessionTimeoutMs: number;
    defaultLeaseMs: number;
    maxAppendBytes: number;
    maxSectionBytes?: number;
    /** This server takes `waits` beside `ack` (SessionFields). */
    acceptsWaits?: boolean;
  };
  /** hello: the dlm version of the leader that started this session. */
  version?: string;
  /** read: `data` is base64 of the page (or of the whole file, to a read without an offset), `length` the file's size now. */
  data?: string;
  length?: number;
  /** read with an offset: where `data` starts in the file. */
  offset?: number;
  /** status */
  view?: StatusView;
}

export interface ErrorReply {
  ok: false;
  code: number;
  error: ErrorName;
  message: string;
  /** ALREADY_HELD carries the lease the client already has, when it holds the lock. */
  lease?: LeaseInfo;
}

export type Reply = OkReply | ErrorReply;

/** Pushed by the leader on `<prefix>.notify.<client>`. */
export type Notification =
  /** A queued acquire was granted; an acquireAll's also lists every lease (`lease` is the first). */
  | { event: "granted"; seq: number; lease: LeaseInfo; leases?: LeaseInfo[] }
  | { event: "lost"; lock: string; token: number; error: "LOCK_EXPIRED" | "SESSION_EXPIRED" }
  /** A wait ended without a grant; an acquireAll's names its first listed lock. */
  | { event: "waitEnded"; seq: number; lock: string; error: "WAIT_TIMEOUT" | "CANCELLED" | "SESSION_EXPIRED" };

/** One grant as `status` shows it. */
export interface StatusHolder {
  client: string;
  token: number;
  expiresAt: number;
  /** Locks only. */
  mode?: LockMode;
  /** Semaphores only. */
  permits?: number;
  stagedAppends: number;
  stagedBytes: number;
}

export interface StatusView {
  leader: string | null;
  epoch: number;
  /** The log sequence the answering node's state reflects. */
  appliedSeq: number;
  now: number;
  nextToken: number;
  sessions: number;
  /** Locks that exist; `locks` lists at most the node's status limit of them. */
  lockCount: number;
  locks: Array<{
    name: string;
    kind: "lock" | "semaphore";
    /** Semaphores only. */
    limit?: number;
    /**
     * The exclusive holder, or the oldest holder of a shared lock or a
     * semaphore, or null: the one-holder view older tools read.
     */
    holder: { client: string; token: number; expiresAt: number; stagedAppends: number; stagedBytes: number } | null;
    /** Every grant in grant order, at most the node's status limit of them. */
    holders: StatusHolder[];
    /** Every holder, listed or not. */
    holderCount: number;
    /** The head of the queue, in order, at most the node's status limit of waiters. */
    queue: Array<{ client: string; seq: number; mode?: LockMode; permits?: number; locks?: string[] }>;
    /** Every waiter, listed or not. */
    queueLength: number;
  }>;
  fileLengths: number[];
}
