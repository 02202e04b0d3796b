import { FaultInjector, mulberry32, type FaultRule } from "../../src/client/faults";
import { TransportClosedError, TransportTimeoutError, type Transport } from "../../src/client/transport";
import type { Notification } from "../../src/protocol/messages";

const enc = (o: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(o));
const dec = (b: Uint8Array): Record<string, unknown> => JSON.parse(new TextDecoder().decode(b)) as Record<string, unknown>;

/** Echoes the request back after `latencyMs`, recording what arrived and when. */
class EchoTransport implements Transport {
  readonly arrived: Array<{ req: Record<string, unknown>; at: number }> = [];
  constructor(private readonly latencyMs = 1) {}
  async request(_subject: string, payload: Uint8Array): Promise<Uint8Array> {
    this.arrived.push({ req: dec(payload), at: performance.now() });
    await new Promise((r) => setTimeout(r, this.latencyMs));
    return payload;
  }
  publish(): void {}
  async subscribe() {
    return { unsubscribe() {} };
  }
  async close(): Promise<void> {}
}

const req = (op: string, seq?: number, client = "client-aaaaaaaa") =>
  enc(seq === undefined ? { op, client } : { op, client, seq, ack: 0 });

describe("FaultInjector", () => {
  test("mulberry32 is deterministic per seed", () => {
    const a = mulberry32(7);
    const b = mulberry32(7);
    const c = mulberry32(8);
    const xs = [a(), a(), a()];
    expect([b(), b(), b()]).toEqual(xs);
    expect([c(), c(), c()]).not.toEqual(xs);
    for (const x of xs) expect(x >= 0 && x < 1).toBe(true);
  });

  test("dropRequest fires only on the selected op and attempt", async () => {
    const inner = new EchoTransport();
    const faults = new FaultInjector({ rules: [{ op: "release", attempt: 1, action: { kind: "dropRequest" } }] });
    const t = faults.wrap(inner);
    const started = performance.now();
    await expect(t.request("s", req("release", 4), 40)).rejects.toBeInstanceOf(TransportTimeoutError);
    expect(performance.now() - started).toBeGreaterThanOrEqual(35);
    expect(inner.arrived).toHaveLength(0);
    // attempt 2 of the same seq goes through
    await expect(t.request("s", req("release", 4), 40)).resolves.toBeDefined();
    // other ops, and attempt 1 of other ops, are untouched
    await expect(t.request("s", req("append", 5), 40)).resolves.toBeDefined();
    // a new seq of release is attempt 1 again
    await expect(t.request("s", req("release", 6), 40)).rejects.toBeInstanceOf(TransportTimeoutError);
    expect(inner.arrived.map((a) => [a.req.op, a.req.seq])).toEqual([
      ["release", 4],
      ["append", 5],
    ]);
    expect(faults.events.map((e) => [e.op, e.seq, e.attempt, e.action])).toEqual([
      ["release", 4, 1, "dropRequest"],
      ["release", 6, 1, "dropRequest"],
    ]);
  });

  test("dropReply: the request reaches the server, the caller times out", async () => {
    const inner = new EchoTransport();
    const faults = new FaultInjector({ rules: [{ op: ["append", "renew"], action: { kind: "dropReply" }, times: 1 }] });
    const t = faults.wrap(inner);
    await expect(t.request("s", req("renew", 1), 30)).rejects.toBeInstanceOf(TransportTimeoutError);
    expect(inner.arrived).toHaveLength(1);
    await expect(t.request("s", req("renew", 1), 30)).resolves.toBeDefined(); // times: 1
    expect(faults.events).toHaveLength(1);
  });

  test("nth selects the nth distinct request of an op, across its attempts", async () => {
    const inner = new EchoTransport();
    const faults = new FaultInjector({ rules: [{ op: "acquire", nth: 2, action: { kind: "dropReply" } }] });
    const t = faults.wrap(inner);
    await t.request("s", req("acquire", 1), 30);
    await expect(t.request("s", req("acquire", 2), 30)).rejects.toBeInstanceOf(TransportTimeoutError);
    await expect(t.request("s", req("acquire", 2), 30)).rejects.toBeInstanceOf(TransportTimeoutError);
    await t.request("s", req("acquire", 3), 30);
    await t.request("s", req("acquire", 1), 30); // still the 1st distinct
    expect(faults.events.map((e) => [e.seq, e.attempt, e.nth])).toEqual([
      [2, 1, 2],
      [2, 2, 2],
    ]);
  });

  test("delayRequest beyond the timeout: caller times out, the late request still arrives", async () => {
    const inner = new EchoTransport();
    const faults = new FaultInjector({ rules: [{ op: "append", action: { kind: "delayRequest", ms: 60 } }] });
    const t = faults.wrap(inner);
    const started = performance.now();
    await expect(t.request("s", req("append", 1), 20)).rejects.toBeInstanceOf(TransportTimeoutError);
    expect(inner.arrived).toHaveLength(0);
    await new Promise((r) => setTimeout(r, 80));
    expect(inner.arrived).toHaveLength(1);
    expect(inner.arrived[0]!.at - started).toBeGreaterThanOrEqual(55);
  });

  test("delayRequest and delayReply within the timeout just slow the answer", async () => {
    const inner = new EchoTransport();
    const faults = new FaultInjector({
      rules: [
        { op: "append", action: { kind: "delayRequest", ms: 15 } },
        { op: "append", action: { kind: "delayReply", ms: 15 } },
      ],
    });
    const t = faults.wrap(inner);
    const started = performance.now();
    const reply = await t.request("s", req("append", 1), 200);
    expect(dec(reply).seq).toBe(1);
    expect(performance.now() - started).toBeGreaterThanOrEqual(28);
  });

  test("delayReply beyond the timeout is a timeout", async () => {
    const inner = new EchoTransport();
    const faults = new FaultInjector({ rules: [{ action: { kind: "delayReply", ms: 100 } }] });
    await expect(faults.wrap(inner).request("s", req("ping"), 20)).rejects.toBeInstanceOf(TransportTimeoutError);
    expect(inner.arrived).toHaveLength(1);
  });

  test("duplicateRequest sends extra copies (not counted as attempts)", async () => {
    const inner = new EchoTransport();
    const faults = new FaultInjector({ rules: [{ op: "append", attempt: 1, action: { kind: "duplicateRequest", copies: 2, delayMs: 5 } }] });
    const t = faults.wrap(inner);
    await t.request("s", req("append", 9), 100);
    await new Promise((r) => setTimeout(r, 30));
    expect(inner.arrived.filter((a) => a.req.seq === 9)).toHaveLength(3);
    // the copies did not advance the attempt counter: the next send is attempt 2, no duplicate
    await t.request("s", req("append", 9), 100);
    await new Promise((r) => setTimeout(r, 20));
    expect(inner.arrived.filter((a) => a.req.seq === 9)).toHaveLength(4);
    expect(faults.events).toHaveLength(1);
  });

  test("probability rules are seeded-deterministic", async () => {
    const run = async (seed: number): Promise<number[]> => {
      const inner = new EchoTransport(0);
      const faults = new FaultInjector({ seed, rules: [{ op: "append", probability: 0.3, action: { kind: "dropReply" } }] });
      const t = faults.wrap(inner);
      await Promise.all(Array.from({ length: 60 }, (_, i) => t.request("s", req("append", i + 1), 15).catch(() => null)));
      return faults.events.map((e) => e.seq!).sort((a, b) => a - b);
    };
    const a = await run(42);
    const b = await run(42);
    const c = await run(43);
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    expect(a.length).toBeGreaterThan(5);
    expect(a.length).toBeLessThan(40);
  });

  test("client and seq filters", async () => {
    const inner = new EchoTransport();
    const faults = new FaultInjector();
    faults.add({ client: "client-bbbbbbbb", seq: 2, action: { kind: "dropReply" } });
    const t = faults.wrap(inner);
    await t.request("s", req("append", 2, "client-aaaaaaaa"), 20);
    await t.request("s", req("append", 3, "client-bbbbbbbb"), 20);
    await expect(t.request("s", req("append", 2, "client-bbbbbbbb"), 20)).rejects.toBeInstanceOf(TransportTimeoutError);
    expect(faults.events.map((e) => e.client)).toEqual(["client-bbbbbbbb"]);
    faults.clear();
    await t.request("s", req("append", 2, "client-bbbbbbbb"), 20);
    expect(faults.events).toHaveLength(1);
  });

  test("dropNotification matches the event (and never requests)", async () => {
    const rules: FaultRule[] = [{ action: { kind: "dropNotification", event: "granted" }, times: 1 }];
    const faults = new FaultInjector({ rules });
    const granted: Notification = { event: "granted", seq: 3, lease: { lock: "a", token: 1, leaseMs: 1000, expiresAt: 0 } };
    const lost: Notification = { event: "lost", lock: "a", token: 1, error: "LOCK_EXPIRED" };
    expect(faults.shouldDropNotification(lost, "c")).toBe(false);
    expect(faults.shouldDropNotification(granted, "c")).toBe(true);
    expect(faults.shouldDropNotification(granted, "c")).toBe(false); // times: 1
    expect(faults.events).toEqual([expect.objectContaining({ op: "notification", event: "granted", seq: 3, action: "dropNotification" })]);
    const inner = new EchoTransport();
    await faults.wrap(inner).request("s", req("acquire", 1), 50);
    expect(faults.events).toHaveLength(1);
  });

  test("close() settles faulted requests still outstanding", async () => {
    const faults = new FaultInjector({ rules: [{ action: { kind: "dropRequest" } }] });
    const t = faults.wrap(new EchoTransport());
    const p = t.request("s", req("acquire", 1), 10_000);
    await t.close();
    await expect(p).rejects.toBeInstanceOf(TransportClosedError);
  });
});
