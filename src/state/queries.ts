/**
 * Read-only questions the coordinator asks the state: is this request new,
 * which timers are due, what does `status` show. Pure, like the machine.
 */
import type { Reply, StatusHolder, StatusView } from "../protocol/messages";
import type { Command, State } from "./types";

export type RequestClass =
  | { kind: "new" }
  /** No such session: it expired, said goodbye, or never said hello. */
  | { kind: "noSession" }
  /** No such session, and its id is one the state remembers as ended: even a hello is refused. */
  | { kind: "ended" }
  /** At or below the client's acknowledged floor: an old duplicate. */
  | { kind: "stale" }
  | { kind: "cached"; reply: Reply }
  | { kind: "pending" };

export function classify(state: State, client: string, seq: number): RequestClass {
  const session = state.sessions.get(client);
  if (!session) return state.endedSessions.has(client) ? { kind: "ended" } : { kind: "noSession" };
  // Cached and pending first: a wait the client listed in `waits` is known below the floor.
  const reply = session.replies.get(seq);
  if (reply) return { kind: "cached", reply };
  if (session.pending.has(seq)) return { kind: "pending" };
  if (seq <= session.acked) return { kind: "stale" };
  return { kind: "new" };
}

/**
 * Expiry commands the leader should log at time `nowMs`. The machine checks
 * again when it applies them (a renewal may land first), so logging one that
 * turns out moot is harmless.
 */
export function dueCommands(state: State, nowMs: number): Command[] {
  const due: Command[] = [];
  for (const lock of state.locks.values()) {
    for (const grant of lock.holders.values()) {
      if (grant.expiresAt <= nowMs) due.push({ type: "expireLease", lock: lock.name, token: grant.token });
    }
    for (const waiter of lock.queue) {
      // An acquireAll stands in several queues; its first listed lock speaks for it, so it expires once.
      if (waiter.locks && waiter.locks[0].lock !== lock.name) continue;
      if (waiter.deadline !== null && waiter.deadline <= nowMs) {
        due.push({ type: "expireWait", client: waiter.client, seq: waiter.seq });
      }
    }
  }
  return due;
}

/** How much of the lock table a status answer lists; the rest is only counted. */
export interface StatusCaps {
  maxLocks: number;
  /** Waiters listed per lock, and holders listed per lock too. */
  maxWaiters: number;
}

/**
 * The status answer. With 100,000 locks or 10,000 waiters the whole table
 * would not fit in one NATS message, so it lists at most `caps.maxLocks`
 * locks and `caps.maxWaiters` waiters of each (the head of the queue, in
 * order) and counts the rest.
 */
export function statusView(state: State, appliedSeq: number, caps: StatusCaps = { maxLocks: Infinity, maxWaiters: Infinity }): StatusView {
  const locks: StatusView["locks"] = [];
  for (const lock of state.locks.values()) {
    if (locks.length >= caps.maxLocks) break;
    const semaphore = lock.kind === "semaphore";
    const holders: StatusHolder[] = [];
    for (const grant of lock.holders.values()) {
      if (holders.length >= caps.maxWaiters) break;
      holders.push({
        client: grant.client,
        token: grant.token,
        expiresAt: grant.expiresAt,
        ...(semaphore ? { permits: grant.permits } : { mode: grant.mode ?? "exclusive" }),
        stagedAppends: grant.staged.length,
        stagedBytes: grant.stagedBytes,
      });
    }
    // The one-holder view of older tools: the exclusive holder, or the oldest of several.
    const oldest = lock.holders.values().next().value;
    locks.push({
      name: lock.name,
      kind: lock.kind,
      ...(semaphore ? { limit: lock.limit } : {}),
      holder: oldest
        ? { client: oldest.client, token: oldest.token, expiresAt: oldest.expiresAt, stagedAppends: oldest.staged.length, stagedBytes: oldest.stagedBytes }
        : null,
      holders,
      holderCount: lock.holders.size,
      queue: lock.queue.slice(0, caps.maxWaiters).map((w) => ({
        client: w.client,
        seq: w.seq,
        ...(semaphore ? { permits: w.permits } : { mode: w.mode ?? "exclusive" }),
        ...(w.locks ? { locks: w.locks.map((l) => l.lock) } : {}),
      })),
      queueLength: lock.queue.length,
    });
  }
  return {
    leader: state.leader,
    epoch: state.epoch,
    appliedSeq,
    now: state.now,
    nextToken: state.nextToken,
    sessions: state.sessions.size,
    lockCount: state.locks.size,
    locks,
    fileLengths: [...state.fileLengths],
  };
}
