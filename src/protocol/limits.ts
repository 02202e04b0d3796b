/**
 * Every queue, payload and table has a limit. The leader writes the limits it
 * runs with into its `leader` log entry, so every node applies the log with
 * the same limits and stays deterministic even if nodes are configured
 * differently.
 */
export interface Limits {
  /** Largest single append, in bytes (after base64 decoding). */
  maxAppendBytes: number;
  /** Largest critical section: all appends staged under one grant. */
  maxSectionBytes: number;
  maxSessions: number;
  maxLocks: number;
  /** Waiters per lock. */
  maxQueueLength: number;
  /** Answered-but-unacknowledged requests per client. */
  maxCachedReplies: number;
  /** Remembered ended grants per client, to tell LOCK_EXPIRED from NOT_HOLDER. */
  maxEndedGrants: number;
  defaultLeaseMs: number;
  minLeaseMs: number;
  maxLeaseMs: number;
  maxWaitMs: number;
  sessionTimeoutMs: number;
  /**
   * Locks one acquireAll may name. Checked by validation only (the machine
   * never reads it, so leader entries written before it existed replay the
   * same).
   */
  maxLocksPerRequest: number;
  /** Largest semaphore `limit` an acquire may name. Checked by validation only, like maxLocksPerRequest. */
  maxSemaphoreLimit: number;
  /**
   * Bytes of the sections that queued one-request commits carry while they
   * wait (summed over the files lock's queue, after base64 decoding). A
   * waiting commit holds its whole section on every node, so without this
   * a full queue could hold maxQueueLength * maxSectionBytes. Read by the
   * machine; leader entries written before it existed have none, and then
   * nothing is refused (so old logs replay the same).
   */
  maxQueuedCommitBytes: number;
  /**
   * Ended sessions remembered (their ids, newest kept), so that a late
   * network copy of a dead session's hello cannot create it again with an
   * empty reply cache, after which late copies of its old requests would
   * run a second time (a commit would land twice). Read by the machine;
   * leader entries written before it existed have none, and then nothing
   * is remembered (old logs replay the same). A leader entry that carries
   * it is log entry version 4, which older nodes refuse.
   */
  maxEndedSessions: number;
}

/**
 * Sized for 100,000 sessions and 10,000 waiters on one lock (measured by
 * `npm run bench:waiters`: see docs/operations.md, "Sizing"). Locks scale
 * with sessions: a lock exists only while held or waited for, so there can
 * never be more live locks than sessions holding or waiting.
 */
export const DEFAULT_LIMITS: Limits = {
  maxAppendBytes: 64 * 1024,
  maxSectionBytes: 1024 * 1024,
  maxSessions: 100_000,
  maxLocks: 100_000,
  maxQueueLength: 10_000,
  maxCachedReplies: 1_024,
  maxEndedGrants: 16,
  defaultLeaseMs: 10_000,
  minLeaseMs: 500,
  maxLeaseMs: 10 * 60_000,
  maxWaitMs: 24 * 3600_000,
  sessionTimeoutMs: 15_000,
  maxLocksPerRequest: 32,
  maxSemaphoreLimit: 1_000_000,
  maxQueuedCommitBytes: 64 * 1024 * 1024,
  maxEndedSessions: 10_000,
};

/** Lock names: 1-128 characters, letters, digits and `_ . : -`, starting with a letter or digit. */
export const LOCK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;
/** A client namespace (least privilege: it scopes the client's notify subject and inbox): 1-32 of [A-Za-z0-9_-]. */
export const CLIENT_NAMESPACE = /^[A-Za-z0-9_-]{1,32}$/;
/**
 * Client ids are nanoids by default; we accept the nanoid alphabet, 8-64
 * characters, optionally after a namespace and a dot (`orders.V1StGXR8_Z5jdHi6B-myT`),
 * so the id is one or two subject tokens of the notify subject.
 */
export const CLIENT_ID = /^(?:[A-Za-z0-9_-]{1,32}\.)?[A-Za-z0-9_-]{8,64}$/;
/** NATS's default max_payload, also assumed when a server does not say its own (never, in practice). */
export const NATS_DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024;

/**
 * Room a node leaves in a NATS message beside its JSON body: headers (a log
 * entry's message id and expected last sequence are under 200 bytes), an
 * answer's envelope and the protocol line, with a wide margin.
 */
export const MESSAGE_HEADROOM_BYTES = 4096;

/**
 * The JSON body one message to or from this server may carry: its
 * max_payload (NATS's default when it did not say) less the headroom. Log
 * entries, answers and read pages are all sized from this.
 */
export function messageBudgetBytes(serverMaxPayloadBytes: number | undefined): number {
  const payload = serverMaxPayloadBytes !== undefined && serverMaxPayloadBytes > 0 ? serverMaxPayloadBytes : NATS_DEFAULT_MAX_PAYLOAD_BYTES;
  return payload - MESSAGE_HEADROOM_BYTES;
}

/** Largest request the node will parse, in bytes; larger ones are TOO_LARGE without parsing. */
export const MAX_REQUEST_BYTES = 256 * 1024;

/**
 * Most waiting requests one logged request may list in `waits` (see
 * messages.ts). A client with more requests queued at once keeps its `ack`
 * below the one past this many, as every client did before `waits`.
 */
export const MAX_LISTED_WAITS = 64;
