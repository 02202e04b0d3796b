import { allAttemptsTimeoutMs, attemptTimeoutMs, Backoff, retry, sleep, raceSignal, type AttemptOutcome, type RetryPolicy } from "../../src/client/retry";
import { SeqTracker } from "../../src/client/session";
import { resolveOptions, DEFAULTS } from "../../src/client/options";
import { BadRequestError } from "../../src/client/errors";

const policy = (p: Partial<RetryPolicy> = {}): RetryPolicy => ({
  requestTimeoutMs: 10,
  maxAttempts: 3,
  backoff: { initialMs: 1, maxMs: 4, multiplier: 2, jitter: 0 },
  unavailableTimeoutMs: 50,
  ...p,
});

const hooks = {
  timeoutExhausted: (n: number) => new Error(`timeout after ${n}`),
  unavailableExhausted: () => new Error("unavailable"),
};

describe("Backoff", () => {
  test("grows by the multiplier and is capped", () => {
    const b = new Backoff({ initialMs: 50, maxMs: 1000, multiplier: 2, jitter: 0 });
    expect([1, 2, 3, 4, 5, 6, 7].map(() => b.next())).toEqual([50, 100, 200, 400, 800, 1000, 1000]);
    b.reset();
    expect(b.next()).toBe(50);
  });

  test("jitter only shortens, within the fraction", () => {
    const b = new Backoff({ initialMs: 100, maxMs: 100, multiplier: 2, jitter: 0.5 }, () => 0.999);
    const d = b.next();
    expect(d).toBeGreaterThanOrEqual(50);
    expect(d).toBeLessThanOrEqual(100);
  });
});

describe("retry", () => {
  test("timeouts count as attempts, up to maxAttempts", async () => {
    const seen: number[] = [];
    await expect(
      retry(policy(), async (n): Promise<AttemptOutcome<string>> => {
        seen.push(n);
        return { kind: "timeout", error: new Error("t") };
      }, hooks),
    ).rejects.toThrow("timeout after 3");
    expect(seen).toEqual([1, 2, 3]);
  });

  test("unavailable answers do not count as attempts but are bounded in time", async () => {
    let calls = 0;
    const started = performance.now();
    await expect(
      retry(policy({ maxAttempts: 1 }), async (): Promise<AttemptOutcome<string>> => {
        calls++;
        return { kind: "unavailable", error: new Error("nr") };
      }, hooks),
    ).rejects.toThrow("unavailable");
    expect(calls).toBeGreaterThan(3);
    expect(performance.now() - started).toBeGreaterThanOrEqual(45);
  });

  test("mixed: succeeds once a real answer comes", async () => {
    const script: Array<AttemptOutcome<string>> = [
      { kind: "unavailable", error: 1 },
      { kind: "timeout", error: 2 },
      { kind: "unavailable", error: 3 },
      { kind: "timeout", error: 4 },
      { kind: "done", value: "ok" },
    ];
    await expect(retry(policy(), async (n) => script[n - 1]!, hooks)).resolves.toBe("ok");
  });

  test("an abort signal stops the loop during backoff", async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error("stop")), 5);
    await expect(
      retry(
        policy({ backoff: { initialMs: 1000, maxMs: 1000, multiplier: 1, jitter: 0 }, unavailableTimeoutMs: 10_000 }),
        async (): Promise<AttemptOutcome<string>> => ({ kind: "unavailable", error: 0 }),
        { ...hooks, signal: ac.signal },
      ),
    ).rejects.toThrow("stop");
  });

  test("sleep and raceSignal honour aborts", async () => {
    const ac = new AbortController();
    const p = sleep(1000, ac.signal);
    ac.abort(new Error("x"));
    await expect(p).rejects.toThrow("x");
    const ac2 = new AbortController();
    const never = new Promise<void>(() => {});
    const r = raceSignal(never, ac2.signal);
    ac2.abort(new Error("y"));
    await expect(r).rejects.toThrow("y");
  });
});

describe("SeqTracker (ack computation)", () => {
  test("ack is lowest outstanding - 1, or the highest issued when idle", () => {
    const t = new SeqTracker();
    expect(t.ack()).toBe(0);
    const a = t.issue(); // 1
    expect(t.ack()).toBe(0);
    const b = t.issue(); // 2
    const c = t.issue(); // 3
    t.done(b);
    expect(t.ack()).toBe(0); // 1 still outstanding
    t.done(a);
    expect(t.ack()).toBe(2); // 3 outstanding
    t.done(c);
    expect(t.ack()).toBe(3);
    const d = t.issue(); // 4
    expect(t.ack()).toBe(3);
    expect(t.ack()).toBeLessThan(d);
  });

  test("ack never decreases and stays below every outstanding seq", () => {
    const t = new SeqTracker();
    const outstanding: number[] = [];
    let last = 0;
    let x = 12345;
    for (let i = 0; i < 500; i++) {
      x = (x * 1103515245 + 12345) % 2 ** 31;
      if (x % 3 !== 0 || outstanding.length === 0) outstanding.push(t.issue());
      else t.done(outstanding.splice(x % outstanding.length, 1)[0]!);
      const ack = t.ack();
      expect(ack).toBeGreaterThanOrEqual(last);
      for (const s of outstanding) expect(ack).toBeLessThan(s);
      last = ack;
    }
  });
});

describe("attempt timeouts", () => {
  test("start at firstAttemptTimeoutMs and double up to requestTimeoutMs", () => {
    const p = policy({ requestTimeoutMs: 2000, firstAttemptTimeoutMs: 500, maxAttempts: 5 });
    expect([1, 2, 3, 4, 5].map((n) => attemptTimeoutMs(p, n))).toEqual([500, 1000, 2000, 2000, 2000]);
    expect(allAttemptsTimeoutMs(p)).toBe(7500);
  });

  test("without a first attempt timeout every attempt waits requestTimeoutMs", () => {
    const p = policy({ requestTimeoutMs: 300, maxAttempts: 3 });
    expect([1, 2, 3].map((n) => attemptTimeoutMs(p, n))).toEqual([300, 300, 300]);
  });

  test("the first attempt never waits longer than requestTimeoutMs", () => {
    expect(attemptTimeoutMs(policy({ requestTimeoutMs: 100, firstAttemptTimeoutMs: 500 }), 1)).toBe(100);
    expect(resolveOptions({ requestTimeoutMs: 100 }).firstAttemptTimeoutMs).toBe(100);
  });
});

describe("options", () => {
  test("defaults", () => {
    const o = resolveOptions({});
    expect(o.requestTimeoutMs).toBe(2000);
    expect(o.firstAttemptTimeoutMs).toBe(500);
    expect(o.maxAttempts).toBe(5);
    expect(o.unavailableTimeoutMs).toBe(30_000);
    expect(o.backoff).toEqual({ ...DEFAULTS.backoff });
    expect(o.renewFraction).toBeCloseTo(1 / 3);
    expect(o.servers).toBe("nats://127.0.0.1:4222");
    expect(o.prefix).toBe("dlm");
  });

  test("invalid values are refused", () => {
    expect(() => resolveOptions({ requestTimeoutMs: 0 })).toThrow(BadRequestError);
    expect(() => resolveOptions({ renewFraction: 1 })).toThrow(BadRequestError);
    expect(() => resolveOptions({ clientId: "bad id!" })).toThrow(BadRequestError);
    expect(() => resolveOptions({ backoff: { jitter: 2 } })).toThrow(BadRequestError);
  });
});
