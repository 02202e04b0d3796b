/**
 * Types of the pure state machine: the log entries it consumes, the state it
 * keeps and the effects it returns. Nothing here does I/O or reads a clock.
 */
import type { Limits } from "../protocol/limits";
import type { Notification, Reply } from "../protocol/messages";

/**
 * One command inside a log entry. Client commands carry the session id and
 * sequence number that make them at-most-once; leader commands (expiries,
 * leader change) are decided by the leader's clock and carry no session.
 */
export type Command =
  | { type: "hello"; client: string; seq: number; ack: number }
  | { type: "goodbye"; client: string; seq: number; ack: number }
  | {
      type: "acquire";
      client: string;
      seq: number;
      ack: number;
      lock: string;
      leaseMs: number;
      /** null: wait as long as it takes. 0: try-acquire. */
      waitMs: number | null;
    }
  | {
      type: "release";
      client: string;
      seq: number;
      ack: number;
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
  | { type: "abandon"; client: string; seq: number; ack: number; lock: string; token: number }
  /**
   * The one-request fenced commit: wait for the lock in FIFO order like an
   * acquire, then append the section and release, all when it is granted.
   */
  | {
      type: "commit";
      client: string;
      seq: number;
      ack: number;
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
      lock: string;
      token: number;
      /** null: keep the grant's current lease length. */
      leaseMs: number | null;
    }
  | { type: "cancel"; client: string; seq: number; ack: number; target: number }
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

export type ClientCommand = Extract<Command, { client: string; seq: number; ack: number }>;

/**
 * One JetStream message. `t` is the leader's wall clock when it built the
 * entry; it is the only notion of time the state machine has. Several
 * commands share an entry (group commit).
 */
export interface LogEntry {
  v: 1;
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
}

export interface LockState {
  name: string;
  holder: Grant | null;
  queue: Waiter[];
}

export type EndReason = "released" | "abandoned" | "expired" | "sessionExpired";

export interface Session {
  id: string;
  createdAt: number;
  /** Every request with seq <= acked was answered and the client saw it. */
  acked: number;
  /** Completed requests and their replies, until the client acknowledges them. */
  replies: Map<number, Reply>;
  /** Acquires still waiting in a queue: seq -> lock name. */
  pending: Map<number, string>;
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
  /** Committed length of each file, in bytes. */
  fileLengths: number[];
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
