import { raceSignal, sleep } from "../../src/client/retry";
import { Stopper } from "../../src/client/stopper";

describe("Stopper (the client's internal abort signal)", () => {
  test("aborts once: listeners run once, in order, and see the first reason", () => {
    const stop = new Stopper();
    const seen: string[] = [];
    stop.addEventListener("abort", () => seen.push(`a:${String(stop.reason)}`));
    stop.addEventListener("abort", () => seen.push(`b:${String(stop.reason)}`), { once: true });
    expect(stop.aborted).toBe(false);
    stop.abort("first");
    stop.abort("second");
    expect(stop.aborted).toBe(true);
    expect(stop.reason).toBe("first");
    expect(seen).toEqual(["a:first", "b:first"]);
  });

  test("a removed listener does not run; one added after the abort never runs", () => {
    const stop = new Stopper();
    const removed = jest.fn();
    const kept = jest.fn();
    stop.addEventListener("abort", removed);
    stop.addEventListener("abort", kept);
    stop.removeEventListener("abort", removed);
    stop.removeEventListener("abort", () => undefined); // unknown: nothing happens
    stop.abort(new Error("stop"));
    const late = jest.fn();
    stop.addEventListener("abort", late);
    expect(removed).not.toHaveBeenCalled();
    expect(kept).toHaveBeenCalledTimes(1);
    expect(late).not.toHaveBeenCalled();
  });

  test("a throwing listener does not stop the others; the first error surfaces after all ran", () => {
    const stop = new Stopper();
    const after = jest.fn();
    stop.addEventListener("abort", () => {
      throw new Error("one");
    });
    stop.addEventListener("abort", () => {
      throw new Error("two");
    });
    stop.addEventListener("abort", after);
    expect(() => stop.abort("x")).toThrow("one");
    expect(after).toHaveBeenCalledTimes(1);
  });

  test("sleep and raceSignal stop on it with its reason, and leave no listener behind", async () => {
    const stop = new Stopper();
    const reason = new Error("closed");
    const slept = sleep(60_000, stop);
    const raced = raceSignal(new Promise<never>(() => undefined), stop);
    const done = raceSignal(Promise.resolve(7), stop);
    await expect(done).resolves.toBe(7);
    stop.abort(reason);
    await expect(slept).rejects.toBe(reason);
    await expect(raced).rejects.toBe(reason);
    await expect(sleep(1, stop)).rejects.toBe(reason);
    const listeners = (stop as unknown as { listeners: unknown[] }).listeners;
    expect(listeners).toHaveLength(0);
  });

  test("raceSignal removes its listener once the promise settles", async () => {
    const stop = new Stopper();
    for (let i = 0; i < 100; i++) await raceSignal(Promise.resolve(i), stop);
    await raceSignal(Promise.reject(new Error("no")), stop).catch(() => undefined);
    expect((stop as unknown as { listeners: unknown[] }).listeners).toHaveLength(0);
  });
});
