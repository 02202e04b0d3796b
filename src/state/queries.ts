/**
 * Read-only questions the coordinator asks the state: is this request new,
 * which timers are due, what does `status` show. Pure, like the machine.
 */
import type { Reply, StatusView } from "../protocol/messages";
import type { Command, State } from "./types";

export type RequestClass =
  | { kind: "new" }
  /** No such session: it expired, said goodbye, or never said hello. */
  | { kind: "noSession" }
  /** At or below the client's acknowledged floor: an old duplicate. */
  | { kind: "stale" }
  | { kind: "cached"; reply: Reply }
  | { kind: "pending" };

export function classify(state: State, client: string, seq: number): RequestClass {
  const session = state.sessions.get(client);
  if (!session) return { kind: "noSession" };
  if (seq <= session.acked) return { kind: "stale" };
  const reply = session.replies.get(seq);
  if (reply) return { kind: "cached", reply };
  if (session.pending.has(seq)) return { kind: "pending" };
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
    if (lock.holder && lock.holder.expiresAt <= nowMs) {
      due.push({ type: "expireLease", lock: lock.name, token: lock.holder.token });
    }
    for (const waiter of lock.queue) {
      if (waiter.deadline !== null && waiter.deadline <= nowMs) {
        due.push({ type: "expireWait", client: waiter.client, seq: waiter.seq });
      }
    }
  }
  return due;
}

export function statusView(state: State, appliedSeq: number): StatusView {
  return {
    leader: state.leader,
    epoch: state.epoch,
    appliedSeq,
    now: state.now,
    nextToken: state.nextToken,
    sessions: state.sessions.size,
    locks: [...state.locks.values()].map((lock) => ({
      name: lock.name,
      holder: lock.holder && {
        client: lock.holder.client,
        token: lock.holder.token,
        expiresAt: lock.holder.expiresAt,
        stagedAppends: lock.holder.staged.length,
        stagedBytes: lock.holder.stagedBytes,
      },
      queue: lock.queue.map((w) => ({ client: w.client, seq: w.seq })),
    })),
    fileLengths: [...state.fileLengths],
  };
}
