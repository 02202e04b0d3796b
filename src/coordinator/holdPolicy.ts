/**
 * Which queued commands may wait a moment for company before the leader
 * starts a log entry for them.
 *
 * Why: under contention the previous holder's next acquire usually reaches
 * the leader just before the new holder's release (both answer the same
 * entry: the reply to the release that freed the lock, and the grant that
 * gave it on). Sent at once, the acquire took a log entry of its own, and
 * the release then waited in JetStream behind that entry's fsync: about
 * 1.7 entries and two fsyncs per handoff. The acquire could only join the
 * lock's queue anyway, so nothing is lost by letting it wait a millisecond
 * or two for the release and ride in the same entry.
 *
 * The guess is made on the applied state, without the entries in flight;
 * a wrong guess (an entry in flight frees the lock) costs that command at
 * most the hold, never its place: commands keep their arrival order, and
 * strict FIFO is decided by log order, when the entry is applied.
 */
import type { Command, State } from "../state";

/**
 * True when `command`, applied to `state` now, could only join a queue (or
 * be refused): an acquire or a one-request commit of a lock that others
 * hold in a way that excludes it, or whose queue is not empty. Never for a
 * try-acquire (`waitMs: 0`), whose caller wants the answer now, nor for any
 * other command.
 */
export function canOnlyQueue(state: State, command: Command): boolean {
  if (command.type !== "acquire" && command.type !== "commit") return false;
  if (command.waitMs === 0) return false;
  const lock = state.locks.get(command.lock);
  if (!lock) return false;
  // Strict FIFO: nobody is granted past a waiter.
  if (lock.queue.length > 0) return true;
  if (lock.holders.size === 0) return false;
  if (command.type === "commit") return true;
  if (command.limit !== undefined) {
    return lock.kind !== "semaphore" || lock.permitsOut + (command.permits ?? 1) > (lock.limit ?? command.limit);
  }
  if (command.mode === "shared") {
    for (const grant of lock.holders.values()) if (grant.mode !== "shared") return true;
    return false;
  }
  return true;
}

/**
 * True when the queue should wait for more commands before an entry is
 * started: every queued command can only queue, there are fewer than a
 * full batch of them, and the oldest has waited less than `holdMs`.
 */
export function shouldHold(state: State, queue: readonly Command[], queuedSinceMs: number, nowMs: number, holdMs: number, maxBatchCommands: number): boolean {
  if (holdMs <= 0 || queue.length === 0 || queue.length >= maxBatchCommands) return false;
  if (nowMs - queuedSinceMs >= holdMs) return false;
  for (const command of queue) if (!canOnlyQueue(state, command)) return false;
  return true;
}
