/** `dlm status` shows every kind of lock in one line: an exclusive holder, readers, a semaphore's permits. */
import { formatStatus, type ClusterStatus } from "../../src/cli/statusCommand";
import { DEFAULT_LIMITS } from "../../src/protocol/limits";
import { apply, createState, entryVersion, statusView } from "../../src/state";
import type { Command, State } from "../../src/state";

function status(state: State, maxWaiters = 50): ClusterStatus {
  return { lastSeq: 9, leader: statusView(state, 9, { maxLocks: 10, maxWaiters }), nodes: [] };
}

function lockLines(text: string): string[] {
  return text.slice(text.indexOf("locks:\n") + 7).split("\n").filter((l) => l.startsWith("  "));
}

test("status shows exclusive holders as before, readers, and semaphore permits", () => {
  const state = createState(DEFAULT_LIMITS);
  let t = 1000;
  const entry = (cmds: Command[]) => apply(state, { v: entryVersion(cmds), t, node: "n1", epoch: state.epoch, cmds });
  apply(state, { v: 4, t, node: "n1", epoch: 1, cmds: [{ type: "leader", node: "n1", epoch: 1, limits: DEFAULT_LIMITS }] });
  const clients = ["client-aaaaaaaa", "client-bbbbbbbb", "client-cccccccc"];
  entry(clients.map((client) => ({ type: "hello", client, seq: 1, ack: 0 })));
  const acquire = (client: string, lock: string, more: object) => ({ type: "acquire" as const, client, seq: 2, ack: 1, lock, leaseMs: 2000, waitMs: null, ...more });
  entry([acquire(clients[0], "global", {}), acquire(clients[1], "global", {})]);
  entry([acquire(clients[0], "db", { mode: "shared" }), acquire(clients[1], "db", { mode: "shared" }), acquire(clients[2], "db", { mode: "exclusive" })].map((c) => ({ ...c, seq: 3, ack: 2 })));
  entry([acquire(clients[0], "pool", { limit: 5, permits: 2 }), acquire(clients[1], "pool", { limit: 5, permits: 1 })].map((c) => ({ ...c, seq: 4, ack: 2 })));
  t += 500;
  entry([{ type: "hello", client: "client-dddddddd", seq: 1, ack: 0 }]);
  expect(lockLines(formatStatus(status(state)))).toEqual([
    "  global: held by client-aaaaaaaa token 1, expires in 1500 ms, 0 staged appends (0 B); 1 waiting",
    "  db: shared by 2: client-aaaaaaaa token 2 (expires in 1500 ms), client-bbbbbbbb token 3 (expires in 1500 ms); 1 waiting",
    "  pool: semaphore of 5, 3/5 permits out, 2 holders: client-aaaaaaaa 2 permits token 4 (expires in 1500 ms), client-bbbbbbbb 1 permit token 5 (expires in 1500 ms); 0 waiting",
  ]);
  // Holders are capped like the queue; the rest are counted.
  expect(lockLines(formatStatus(status(state, 1))).slice(1)).toEqual([
    "  db: shared by 2: client-aaaaaaaa token 2 (expires in 1500 ms), … and 1 more; 1 waiting",
    "  pool: semaphore of 5, 2 holders: client-aaaaaaaa 2 permits token 4 (expires in 1500 ms), … and 1 more; 0 waiting",
  ]);
});

test("a status from a leader older than shared locks still shows its one holder", () => {
  const old = {
    lastSeq: 1,
    nodes: [],
    leader: {
      leader: "n1", epoch: 1, appliedSeq: 1, now: 1000, nextToken: 2, sessions: 1, lockCount: 1, fileLengths: new Array(100).fill(0),
      locks: [{ name: "global", holder: { client: "client-aaaaaaaa", token: 1, expiresAt: 3000, stagedAppends: 1, stagedBytes: 4 }, queue: [], queueLength: 0 }],
    },
  } as unknown as ClusterStatus;
  expect(lockLines(formatStatus(old))).toEqual(["  global: held by client-aaaaaaaa token 1, expires in 2000 ms, 1 staged appends (4 B); 0 waiting"]);
});
