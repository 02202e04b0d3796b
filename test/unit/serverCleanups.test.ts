/**
 * ServerCleanups: what the next acquire of a lock waits for. The client's
 * behaviour tests cover it end to end (a lease lost by the local clock, a
 * cancelled or timed-out wait); these pin its own rules.
 */
import { MAX_TRACKED_LOCKS, ServerCleanups } from "../../src/client/serverCleanups";

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** True if `p` settles before the event loop's next macrotask. */
async function settlesSoon(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(() => (done = true));
  await new Promise((r) => setImmediate(r));
  return done;
}

describe("ServerCleanups", () => {
  test("a lock with nothing owed settles at once", async () => {
    const cleanups = new ServerCleanups();
    await expect(cleanups.settle("a", undefined)).resolves.toBe(true);
  });

  test("settle waits for the abandon of a given-up grant, and only on its own lock", async () => {
    const cleanups = new ServerCleanups();
    const abandon = deferred<boolean>();
    cleanups.trackAbandon("a", abandon.promise);
    const waiting = cleanups.settle("a", undefined);
    expect(await settlesSoon(waiting)).toBe(false);
    expect(await settlesSoon(cleanups.settle("b", undefined))).toBe(true);
    abandon.resolve(true);
    await expect(waiting).resolves.toBe(true);
  });

  test("a later abandon of the same lock (the next try after one that failed) replaces the earlier one", async () => {
    const cleanups = new ServerCleanups();
    cleanups.trackAbandon("a", Promise.resolve(false));
    await cleanups.settle("a", undefined);
    const retry = deferred<boolean>();
    cleanups.trackAbandon("a", retry.promise);
    expect(await settlesSoon(cleanups.settle("a", undefined))).toBe(false);
    retry.resolve(true);
    await expect(cleanups.settle("a", undefined)).resolves.toBe(true);
  });

  test("a given-up wait is waited for after the cleanup before it, on every lock it named; its failure does not block", async () => {
    const cleanups = new ServerCleanups();
    const abandon = deferred<boolean>();
    cleanups.trackAbandon("a", abandon.promise);
    let failCancel!: (e: Error) => void;
    const cancel = new Promise<void>((_r, reject) => (failCancel = reject));
    cleanups.trackWait(["a", "b"], cancel);
    const onA = cleanups.settle("a", undefined);
    const onB = cleanups.settle("b", undefined);
    failCancel(new Error("the cancel did not get through"));
    expect(await settlesSoon(onB)).toBe(true);
    // "a" still waits for the abandon that came first.
    expect(await settlesSoon(onA)).toBe(false);
    abandon.resolve(true);
    await expect(onA).resolves.toBe(true);
  });

  test("settle returns false when the caller's signal aborts first, and true when the cleanup wins", async () => {
    const cleanups = new ServerCleanups();
    cleanups.trackAbandon("a", new Promise<boolean>(() => {}));
    const controller = new AbortController();
    const waiting = cleanups.settle("a", controller.signal);
    controller.abort(new Error("caller gave up"));
    await expect(waiting).resolves.toBe(false);
    await expect(cleanups.settle("b", controller.signal)).resolves.toBe(true);
  });

  test("the table is bounded: past MAX_TRACKED_LOCKS the oldest lock is forgotten", async () => {
    const cleanups = new ServerCleanups();
    const never = new Promise<boolean>(() => {});
    for (let i = 0; i <= MAX_TRACKED_LOCKS; i++) cleanups.trackAbandon(`lock-${i}`, never);
    expect(await settlesSoon(cleanups.settle("lock-0", undefined))).toBe(true);
    expect(await settlesSoon(cleanups.settle("lock-1", undefined))).toBe(false);
    expect(await settlesSoon(cleanups.settle(`lock-${MAX_TRACKED_LOCKS}`, undefined))).toBe(false);
  });
});
