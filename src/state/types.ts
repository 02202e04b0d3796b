/**
 * Types of the pure state machine: the log entries it consumes, the state it
 * keeps and the effects it returns. Nothing here does I/O or reads a clock.
 */
import type { Limits } from "../protocol/limits";
import type { LockMode, Notification, Reply } from "../protocol/messages";

export type { LockMode };

/**
 * One command inside a log entry. Client commands carry the session id and
 * sequence number that make them at-most-once, and the client's `ack` and
 * `waits` (protocol/messages.ts: which cached answers it has seen); leader
 * commands (expiries, leader change) are decided by the leader's clock and
 * carry no session.
 */
export type Command =
  /** `listsWaits`: the client will list `waits`, so its answer says the server takes them. */
  | { type: "hello"; client: string; seq: number; ack: number; waits?: number[]; listsWaits?: boolean }
  | { type: "goodbye"; client: string; seq: number; ack: number; waits?: number[] }
  | {
      type: "acquire";
      client: string;
      seq: number;
      ack: number;
      waits?: number[];
      lock: string;
      leaseMs: number;
      /** null: wait as long as it takes. 0: try-acquire. */
      waitMs: number | null;
      /**
       * How a lock is held. Absent in commands logged before shared locks
       * existed: those are exclusive, and their grants and answers carry no
       * mode, exactly as then (replicas replaying an old log agree byte for
       * byte with those that restored a snapshot of it).
       */
      mode?: LockMode;
      /** Present: the lock is a semaphore with this many permits in all (the first acquire creates it). */
      limit?: number;
      /** Permits this acquire takes (semaphores only; 1..limit). */
      permits?: number;
    }
  /**
   * Several locks at once, all or none: the waiter joins the queue of every
   * listed lock in this one command, and is granted all of them in one step
   * when it heads every one of those queues and is compatible with every
   * lock's holders. Semaphores are not allowed.
   */
  | {
      type: "acquireAll";
      client: string;
      seq: number;
      ack: number;
      waits?: number[];
      /** 1..maxLocksPerRequest distinct names, in the caller's order (answers list leases in it). */
      locks: LockRequest[];
      leaseMs: number;
      waitMs: number | null;
    }
  | {
      type: "release";
      client: string;
      seq: number;
      ack: number;
      waits?: number[];
      lock: string;
      token: number;
      /**
       * How many appends the client logged on their own under this grant
       * before the release (absent from older clients: no check). A grant
       * that staged another number refuses the release with
       * SECTION_MISMATCH, so a lost or extra logged append can never let a
       * partial section commit.
       */
      staged?: number;
      /** The rest of the section, sent with the release and committed after the staged appends. */
      appends?: SectionAppend[];
    }
  /** Ends the caller's grant without committing its staged appends (the section is discarded). */
  | { type: "abandon"; client: string; seq: number; ack: number; waits?: number[]; lock: string; token: number }
  /**
   * The one-request fenced commit: wait for the lock in FIFO order like an
   * acquire, then append the section and release, all when it is granted.
   */
  | {
      type: "commit";
      client: string;
      seq: number;
      ack: number;
      waits?: number[];
      lock: string;
      leaseMs: number;
      waitMs: number | null;
      appends: SectionAppend[];
    }
  | {
      type: "append";
      client: string;
      seq: number;
      ack: number;
      waits?: number[];
      token: number;
      file: number;
      /** base64, already validated and size-checked by the coordinator. */
      data: string;
    }
  | {
      type: "renew";
      client: string;
      seq: number;
      ack: number;
      waits?: number[];
      lock: string;
      token: number;
      /** null: keep the grant's current lease length. */
      leaseMs: number | null;
    }
  | { type: "cancel"; client: string; seq: number; ack: number; waits?: number[]; target: number }
  | { type: "expireLease"; lock: string; token: number }
  | { type: "expireWait"; client: string; seq: number }
  | { type: "expireSession"; client: string }
  /**
   * The leader's silence digest (sessionLiveness.ts): the sessions it has
   * not heard from for at least `quietAfterMs`, each with how long, as of
   * the entry's time; the longest-quiet first, capped. Logged every
   * `everyMs` while sessions exist.
   */
  | { type: "sessionDigest"; everyMs: number; quietAfterMs: number; quiet: Array<[client: string, quietForMs: number]> }
  /** The leader heard a session the latest digest lists as quiet (a ping, not otherwise logged). */
  | { type: "sessionHeard"; client: string }
  /**
   * `version`: the new leader's dlm version (absent in entries written before versions were logged).
   * `prevAliveAt`: the latest time the new leader saw proof that the previous
   * leadership was alive (a write of the leader key), by the writer's clock;
   * absent when it saw none. Holders' leases are extended only by the time
   * from the later of this and the log's last entry to this entry.
   */
  | { type: "leader"; node: string; epoch: number; limits: Limits; version?: string; prevAliveAt?: number };

/** One append of a critical section: a file index and base64 data, already validated. */
export interface SectionAppend {
  file: number;
  data: string;
}

export type LockKind = "lock" | "semaphore";

/** One lock of an acquireAll and how it is wanted. */
export interface LockRequest {
  lock: string;
  mode: LockMode;
}

/** The log entry versions this build reads (LogEntry.v). */
export type EntryVersion = 1 | 2 | 3 | 4;

export type ClientCommand = Extract<Command, { client: string; seq: number; ack: number }>;

/**
 * One JetStream message. `t` is the leader's wall clock when it built the
 * entry; it is the only notion of time the state machine has. Several
 * commands share an entry (group commit).
 */
export interface LogEntry {
  /**
   * 2 when the entry holds a command that a node older than shared locks
   * would misread (a shared or semaphore acquire it would take for an
   * exclusive one, an acquireAll): such a node refuses a version it does
   * not know and crashes instead of silently diverging. 1 otherwise, so a
   * cluster mid-upgrade keeps old followers in step until the new
   * commands are used. 3 when a command lists `waits`: a node from before
   * them would drop cached answers the others keep, and their reply caches
   * would part. See `entryVersion`.
   */
  v: EntryVersion;
  t: number;
  node: string;
  epoch: number;
  cmds: Command[];
}

export interface Grant {
  client: string;
  token: number;
  /** The acquire request that this grant answers. */
  seq: number;
  grantedAt: number;
  leaseMs: number;
  expiresAt: number;
  /** The critical section so far: appends staged until release commits them. */
  staged: Array<{ file: number; data: string }>;
  stagedBytes: number;
  /**
   * Grants of a lock: exclusive or shared. Absent on grants of commands
   * logged before modes existed and of one-request commits: exclusive.
   * Absent on semaphore grants.
   */
  mode?: LockMode;
  /** Grants of a semaphore: the permits this grant holds (1..limit). */
  permits?: number;
}

export interface Waiter {
  client: string;
  seq: number;
  leaseMs: number;
  enqueuedAt: number;
  /** Absolute time the wait gives up, or null to wait forever. */
  deadline: number | null;
  /** A queued one-request commit: the section it commits the moment it is granted. */
  commit?: SectionAppend[];
  /** As on the grant it becomes: absent means exclusive (or a semaphore waiter). */
  mode?: LockMode;
  /** Semaphore waiters: the permits asked for. */
  permits?: number;
  /**
   * An acquireAll waiter: every lock it waits for, in the request's order.
   * The same waiter (client, seq) stands in each of those queues, with the
   * mode it wants there; the list is shared and never changed.
   */
  locks?: LockRequest[];
}

/**
 * A lock or a semaphore while it has holders or waiters (an idle one is
 * dropped, and may come back as the other kind).
 *
 * - kind "lock": `holders` is one exclusive grant or any number of shared
 *   ones.
 * - kind "semaphore": the permits of `holders` add up to at most `limit`.
 *
 * Either way the queue is strict FIFO: no waiter is granted while one
 * queued before it on this lock is still waiting, and after every change
 * the head of the queue is not grantable (see `pump` in machine.ts).
 */
export interface LockState {
  name: string;
  kind: LockKind;
  /** Semaphores: permits in all. Absent on locks. */
  limit?: number;
  /** Current grants by token, in grant order (a Map keeps insertion order and removes in O(1)). */
  holders: Map<number, Grant>;
  /** Semaphores: the sum of the holders' permits, kept so a grant check does not add them up again. 0 on locks. */
  permitsOut: number;
  queue: Waiter[];
}

export type EndReason = "released" | "abandoned" | "expired" | "sessionExpired";

export interface Session {
  id: string;
  createdAt: number;
  /**
   * Every request with seq <= acked was answered and the client saw it,
   * except those the client listed in `waits` (still queued, or answered
   * and the answer not seen yet): their entries in `pending` and `replies`
   * stay below the floor until the client stops listing them.
   */
  acked: number;
  /** Completed requests and their replies, until the client acknowledges them. */
  replies: Map<number, Reply>;
  /**
   * Acquires still waiting: seq -> the names of the locks whose queues it
   * stands in (one, or an acquireAll's list in its order).
   */
  pending: Map<number, string[]>;
  /** Locks this client holds: lock name -> token. */
  held: Map<string, number>;
  /** Recently ended grants (token -> why), so a late request learns why it failed. */
  ended: Map<number, EndReason>;
}

export interface State {
  /** The latest entry time seen; time never runs backwards in the machine. */
  now: number;
  /** The next fencing token. Tokens are never reused, across leaders too. */
  nextToken: number;
  epoch: number;
  leader: string | null;
  /** The current leader's dlm version, from its leader entry; hello answers carry it. */
  leaderVersion: string | null;
  limits: Limits;
  locks: Map<string, LockState>;
  sessions: Map<string, Session>;
  /**
   * Ids of ended sessions (expired or said goodbye), oldest first, with the
   * log time each ended; at most limits.maxEndedSessions (none when the
   * leader entry carries no such limit). A hello for one of them is
   * refused SESSION_EXPIRED: only a late copy of the old hello can ask,
   * since a client always starts a new session under a new id.
   */
  endedSessions: Map<string, number>;
  /** Committed length of each file, in bytes. */
  fileLengths: number[];
  /**
   * Bytes (decoded) of the sections queued one-request commits carry while
   * they wait; bounded by limits.maxQueuedCommitBytes. Derived from the
   * queues (a snapshot does not store it; restore adds it up again).
   */
  queuedCommitBytes: number;
  /** What the log knows about session silence; null until the first digest (older logs). */
  sessionDigest: SessionDigest | null;
}

/**
 * The latest silence digest, kept up to date by later entries. The credit
 * a new leader gives a session (sessionLiveness.ts) is `quietSince + shiftMs`
 * for a listed session, else `max(createdAt, at - quietAfterMs) + shiftMs`.
 */
export interface SessionDigest {
  /** The digest entry's time. */
  at: number;
  /** How often its leader logs one (the next was due at `at + everyMs`). */
  everyMs: number;
  /** Every existing session not listed was heard after `at - quietAfterMs`. */
  quietAfterMs: number;
  /** Time nobody could hear anyone since `at`, added up over takeovers. */
  shiftMs: number;
  /**
   * Listed sessions: when each was last heard, minus the shift accumulated
   * at that point (so adding the current shift counts only later takeovers).
   */
  quietSince: Map<string, number>;
}

/**
 * What the caller must do after applying an entry, in this order:
 * 1. `fileAppend`s, in order (the files then reflect this entry);
 * 2. `reply`s and `notify`s to clients.
 * The entry was acknowledged by the log before apply was called, so every
 * reply here is backed by durable state.
 */
export type Effect =
  | { type: "fileAppend"; file: number; data: Buffer }
  /**
   * The answer to request (client, seq). `final` replies are also cached in
   * the session; a non-final one (an acquire that is queued) is an interim
   * answer to the request message only.
   */
  | { type: "reply"; client: string; seq: number; reply: Reply; final: boolean }
  | { type: "notify"; client: string; notification: Notification };
