/** Waiting for uncancellable work with a way out (src/util/untilAborted.ts), as `dlm up` does on Ctrl-C. */
import { sleep } from "../../src/client/retry";
import { untilAborted, whenAborted } from "../../src/util/untilAborted";

function deferred<T>() {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe("untilAborted", () => {
  test("settles as the work does while the signal stays quiet", async () => {
    const controller = new AbortController();
    await expect(untilAborted(Promise.resolve(7), controller.signal)).resolves.toBe(7);
    await expect(untilAborted(Promise.reject(new Error("broken")), controller.signal)).rejects.toThrow("broken");
  });

  test("rejects with the signal's reason as soon as it aborts, while the work is still under way", async () => {
    const controller = new AbortController();
    const work = deferred<number>();
    const waiting = untilAborted(work.promise, controller.signal);
    const reason = new Error("interrupted by SIGINT");
    controller.abort(reason);
    await expect(waiting).rejects.toBe(reason);
  });

  test("an already aborted signal rejects at once", async () => {
    const controller = new AbortController();
    controller.abort(new Error("too late"));
    await expect(untilAborted(new Promise<never>(() => undefined), controller.signal)).rejects.toThrow("too late");
  });

  test("a result that arrives after the abort is handed to discard, so a late connection can be closed", async () => {
    const controller = new AbortController();
    const work = deferred<string>();
    const discarded: string[] = [];
    const waiting = untilAborted(work.promise, controller.signal, (late) => discarded.push(late));
    controller.abort(new Error("stop"));
    await expect(waiting).rejects.toThrow("stop");
    work.resolve("connection");
    await new Promise((r) => setImmediate(r));
    expect(discarded).toEqual(["connection"]);
  });

  test("a failure that arrives after the abort is not an unhandled rejection", async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", onUnhandled);
    try {
      const controller = new AbortController();
      const work = deferred<number>();
      const waiting = untilAborted(work.promise, controller.signal);
      controller.abort(new Error("stop"));
      await expect(waiting).rejects.toThrow("stop");
      work.reject(new Error("server exited during start-up"));
      await new Promise((r) => setTimeout(r, 10));
      expect(unhandled).toEqual([]);
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
  });

  test("without a signal it is the work itself", () => {
    const work = Promise.resolve(1);
    expect(untilAborted(work, undefined)).toBe(work);
  });
});

describe("the sleep dlm up waits with, and whenAborted", () => {
  test("a sleep ends early on abort, with the reason", async () => {
    const controller = new AbortController();
    const started = Date.now();
    const sleeping = sleep(60_000, controller.signal);
    setTimeout(() => controller.abort(new Error("interrupted")), 10);
    await expect(sleeping).rejects.toThrow("interrupted");
    expect(Date.now() - started).toBeLessThan(5000);
  });

  test("a sleep runs its course when nothing aborts", async () => {
    await expect(sleep(5, new AbortController().signal)).resolves.toBeUndefined();
  });

  test("whenAborted resolves on the abort, or at once when it already happened", async () => {
    const controller = new AbortController();
    let done = false;
    const waiting = whenAborted(controller.signal).then(() => (done = true));
    await new Promise((r) => setImmediate(r));
    expect(done).toBe(false);
    controller.abort();
    await waiting;
    expect(done).toBe(true);
    await expect(whenAborted(controller.signal)).resolves.toBeUndefined();
  });
});
