/**
 * The leader's hold policy (src/coordinator/holdPolicy.ts): a request the
 * policy says "can only queue" must never be granted when it is applied to
 * the state the guess was made on. Checked against the real state machine
 * over seeded random histories of exclusive, shared and semaphore grants,
 * waiters, releases and one-request commits; plus the cases it must not
 * hold (free locks, try-acquires, other commands) and shouldHold's bounds.
 */
import { mulberry32 } from "../../src/client/faults";
import { canOnlyQueue, shouldHold } from "../../src/coordinator/holdPolicy";
import { DEFAULT_LIMITS } from "../../src/protocol/limits";
import { apply, createState, entryVersion, restore, snapshot } from "../../src/state";
import type { Command, Effect, State } from "../../src/state";

const LIMITS = { ...DEFAULT_LIMITS, defaultLeaseMs: 60_000 };
const LOCKS = ["a", "b"];
const SEMAPHORE = "s";
const CLIENTS = ["c0", "c1", "c2", "c3", "c4"];

class World {
  state: State = createState(LIMITS);
  seq = new Map<string, number>();
  now = 1_000;

  constructor() {
    this.run([{ type: "leader", node: "n1", epoch: 1, limits: LIMITS }]);
    for (const client of CLIENTS) this.run([{ type: "hello", client, seq: this.next(client), ack: 0 }]);
  }

  next(client: string): number {
    const n = (this.seq.get(client) ?? 0) + 1;
    this.seq.set(client, n);
    return n;
  }

  run(cmds: Command[], state: State = this.state): Effect[] {
    this.now += 1;
    return apply(state, { v: entryVersion(cmds), t: this.now, node: "n1", epoch: 1, cmds });
  }

  /** Whether `cmd`, applied to a copy of the state, is granted (a lease in its reply, or a grant notification for its seq). */
  grantedOnCopy(cmd: Command & { client: string; seq: number }): boolean {
    const copy = restore(JSON.parse(JSON.stringify(snapshot(this.state))));
    const effects = this.run([cmd], copy);
    return effects.some(
      (e) =>
        (e.type === "reply" && e.client === cmd.client && e.seq === cmd.seq && e.reply.ok && e.reply.lease !== undefined) ||
        (e.type === "notify" && e.client === cmd.client && e.notification.event === "granted" && e.notification.seq === cmd.seq),
    );
  }
}

function randomRequest(w: World, random: () => number): Command & { client: string; seq: number } {
  const client = CLIENTS[Math.floor(random() * CLIENTS.length)]!;
  const seq = w.next(client);
  const base = { client, seq, ack: 0, leaseMs: 60_000, waitMs: random() < 0.15 ? 0 : null };
  const pick = random();
  if (pick < 0.15) return { type: "commit", ...base, lock: "a", appends: [] };
  if (pick < 0.35) {
    const limit = 3;
    return { type: "acquire", ...base, lock: SEMAPHORE, limit, permits: 1 + Math.floor(random() * limit) };
  }
  const lock = LOCKS[Math.floor(random() * LOCKS.length)]!;
  return { type: "acquire", ...base, lock, mode: random() < 0.4 ? "shared" : "exclusive" };
}

/** Releases a random grant, so queues move. */
function releaseSome(w: World, random: () => number): void {
  const grants: Array<{ client: string; lock: string; token: number }> = [];
  for (const [lock, state] of w.state.locks) for (const g of state.holders.values()) grants.push({ client: g.client, lock, token: g.token });
  if (grants.length === 0) return;
  const g = grants[Math.floor(random() * grants.length)]!;
  w.run([{ type: "release", client: g.client, seq: w.next(g.client), ack: 0, lock: g.lock, token: g.token }]);
}

describe("the hold policy", () => {
  test("a request it says can only queue is never granted when applied (seeded random histories)", () => {
    const seed = Number(process.env.DLM_HOLD_SEED ?? 20261206);
    const random = mulberry32(seed);
    let held = 0;
    let notHeld = 0;
    for (let history = 0; history < 40; history++) {
      const w = new World();
      for (let step = 0; step < 60; step++) {
        const request = randomRequest(w, random);
        const guess = canOnlyQueue(w.state, request);
        if (guess) {
          held++;
          expect({ seed, history, step, request, granted: w.grantedOnCopy(request) }).toMatchObject({ granted: false });
        } else {
          notHeld++;
        }
        w.run([request]);
        if (random() < 0.35) releaseSome(w, random);
      }
    }
    // Both answers occur often enough for the check above to mean something.
    expect(held).toBeGreaterThan(300);
    expect(notHeld).toBeGreaterThan(300);
  });

  test("never holds a free lock, a try-acquire, a release or an acquireAll", () => {
    const w = new World();
    const acquire = (client: string, lock: string, extra: Partial<Command> = {}): Command & { client: string; seq: number } =>
      ({ type: "acquire", client, seq: w.next(client), ack: 0, lock, leaseMs: 60_000, waitMs: null, mode: "exclusive", ...extra }) as Command & {
        client: string;
        seq: number;
      };
    expect(canOnlyQueue(w.state, acquire("c0", "a"))).toBe(false); // nobody holds it
    w.run([acquire("c0", "a")]);
    expect(canOnlyQueue(w.state, acquire("c1", "a"))).toBe(true);
    expect(canOnlyQueue(w.state, acquire("c1", "a", { waitMs: 0 }))).toBe(false); // wants its answer now
    expect(canOnlyQueue(w.state, { type: "commit", client: "c1", seq: w.next("c1"), ack: 0, lock: "a", leaseMs: 60_000, waitMs: null, appends: [] })).toBe(true);
    const token = w.state.locks.get("a")!.holders.keys().next().value!;
    expect(canOnlyQueue(w.state, { type: "release", client: "c0", seq: w.next("c0"), ack: 0, lock: "a", token })).toBe(false);
    expect(
      canOnlyQueue(w.state, {
        type: "acquireAll",
        client: "c1",
        seq: w.next("c1"),
        ack: 0,
        locks: [{ lock: "a", mode: "exclusive" }],
        leaseMs: 60_000,
        waitMs: null,
      } as Command),
    ).toBe(false);
    // Shared beside shared is granted at once; shared behind an exclusive holder waits.
    w.run([acquire("c2", "b", { mode: "shared" })]);
    expect(canOnlyQueue(w.state, acquire("c3", "b", { mode: "shared" }))).toBe(false);
    expect(canOnlyQueue(w.state, acquire("c3", "b", { mode: "exclusive" }))).toBe(true);
  });

  test("shouldHold: only a short queue of requests that can only queue, and only for holdMs", () => {
    const w = new World();
    const acquire = (client: string): Command => ({ type: "acquire", client, seq: w.next(client), ack: 0, lock: "a", leaseMs: 60_000, waitMs: null, mode: "exclusive" });
    w.run([acquire("c0")]);
    const waiting = [acquire("c1"), acquire("c2")];
    expect(shouldHold(w.state, waiting, 100, 101, 2, 512)).toBe(true);
    expect(shouldHold(w.state, waiting, 100, 102, 2, 512)).toBe(false); // waited its 2 ms
    expect(shouldHold(w.state, waiting, 100, 101, 0, 512)).toBe(false); // holding is off
    expect(shouldHold(w.state, waiting, 100, 101, 2, 2)).toBe(false); // a full batch goes at once
    expect(shouldHold(w.state, [], 100, 101, 2, 512)).toBe(false);
    const token = w.state.locks.get("a")!.holders.keys().next().value!;
    const release: Command = { type: "release", client: "c0", seq: w.next("c0"), ack: 0, lock: "a", token };
    expect(shouldHold(w.state, [...waiting, release], 100, 101, 2, 512)).toBe(false); // the release it waited for came
  });
});
