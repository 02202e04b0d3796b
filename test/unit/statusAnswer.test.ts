/**
 * The status answer fits one message (src/coordinator/statusAnswer.ts):
 * queues of acquireAll waiters with long lock names make a view of
 * megabytes under the default caps; the answer lists fewer waiters, then
 * fewer locks, until it fits, and its counts still cover everything.
 */
import { fittedStatusReply } from "../../src/coordinator/statusAnswer";
import { DEFAULT_LIMITS } from "../../src/protocol/limits";
import { apply, createState, entryVersion, statusView } from "../../src/state";
import type { Command, State } from "../../src/state";

const LOCKS = 32;
const WAITERS = 50;
const caps = { maxLocks: 100, maxWaiters: 50 };
const lockName = (i: number) => `${String(i).padStart(3, "0")}-${"n".repeat(124)}`;

let t = 1_000;
function entry(state: State, cmds: Command[]): void {
  apply(state, { v: entryVersion(cmds), t: t++, node: "n1", epoch: state.epoch, cmds });
}

/** One holder of 32 locks with 128-character names, and 50 acquireAll waiters for all of them. */
function crowded(): State {
  const state = createState(DEFAULT_LIMITS);
  entry(state, [{ type: "leader", node: "n1", epoch: 1, limits: DEFAULT_LIMITS }]);
  const client = (i: number) => `client-${String(i).padStart(8, "0")}`;
  entry(state, Array.from({ length: WAITERS + 1 }, (_, i): Command => ({ type: "hello", client: client(i), seq: 1, ack: 0 })));
  const locks = Array.from({ length: LOCKS }, (_, i) => ({ lock: lockName(i), mode: "exclusive" as const }));
  entry(
    state,
    Array.from({ length: WAITERS + 1 }, (_, i): Command => ({ type: "acquireAll", client: client(i), seq: 2, ack: 1, locks, leaseMs: 10_000, waitMs: null })),
  );
  return state;
}

test("a crowded status fits the budget, listing fewer waiters first, and its counts still cover everything", () => {
  const state = crowded();
  const full = JSON.stringify(statusView(state, 5, caps));
  expect(full.length).toBeGreaterThan(1_048_576);
  const budget = 600_000;
  const reply = fittedStatusReply(state, 5, caps, budget);
  expect(Buffer.byteLength(JSON.stringify(reply))).toBeLessThanOrEqual(budget);
  const view = reply.view!;
  expect(view.lockCount).toBe(LOCKS);
  expect(view.locks.length).toBe(LOCKS);
  for (const lock of view.locks) {
    expect(lock.queueLength).toBe(WAITERS);
    expect(lock.queue.length).toBeLessThan(WAITERS);
    expect(lock.holderCount).toBe(1);
  }
  // The caps were halved only as far as needed: twice the waiters would not fit.
  const listed = view.locks[0]!.queue.length;
  expect(listed).toBeGreaterThan(0);
  const more = fittedStatusReply(state, 5, { maxLocks: 100, maxWaiters: listed * 2 }, Infinity);
  expect(Buffer.byteLength(JSON.stringify(more))).toBeGreaterThan(budget);
});

test("when even no waiters do not fit, fewer locks are listed", () => {
  const state = crowded();
  const reply = fittedStatusReply(state, 5, caps, 5_000);
  expect(Buffer.byteLength(JSON.stringify(reply))).toBeLessThanOrEqual(5_000);
  expect(reply.view!.locks.length).toBeLessThan(LOCKS);
  expect(reply.view!.locks.every((l) => l.queue.length === 0)).toBe(true);
  expect(reply.view!.lockCount).toBe(LOCKS);
});

test("an answer within the budget is the view under the configured caps, unchanged", () => {
  const state = crowded();
  const reply = fittedStatusReply(state, 5, { maxLocks: 3, maxWaiters: 2 }, 1_048_576);
  expect(reply.view).toEqual(statusView(state, 5, { maxLocks: 3, maxWaiters: 2 }));
});
