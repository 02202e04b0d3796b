/**
 * The lock service end to end on one node: one nats-server, one dlm node
 * process, real clients. Scenarios share the deployment and use distinct
 * files so they do not interfere.
 */
import { NotHolderError, isDlmError } from "../../src/client";
import { startDlmCluster, sleep, type DlmTestCluster } from "../kit/dlmCluster";

let cluster: DlmTestCluster;

beforeAll(async () => {
  cluster = await startDlmCluster({ nodes: 1, leaseMs: 5000, sessionTimeoutMs: 10_000 });
  await cluster.waitForLeader();
});

afterAll(async () => {
  await cluster?.close();
});

test("the original spec's basic workflow leaves file_1 exactly AB", async () => {
  const c1 = await cluster.client({ name: "C1" });
  const c2 = await cluster.client({ name: "C2" });
  const lease1 = await c1.acquire();
  let c2Granted = false;
  const waiting = c2.acquire().then((lease) => {
    c2Granted = true;
    return lease;
  });
  await sleep(300);
  expect(c2Granted).toBe(false);
  await c1.append("file_1", "A");
  await c1.release(lease1);
  const lease2 = await waiting;
  expect(lease2.token).toBeGreaterThan(lease1.token);
  await c2.append("file_1", "B");
  await c2.release(lease2);
  expect((await c1.read("file_1")).toString()).toBe("AB");
  expect(cluster.fileOn(0, 1).toString()).toBe("AB");
});

test("20 clients x 10 cycles: every line once, sections never interleaved, tokens in file order", async () => {
  const clients = await Promise.all(Array.from({ length: 20 }, (_, i) => cluster.client({ name: `W${i}` })));
  await Promise.all(
    clients.map(async (client, c) => {
      for (let i = 0; i < 10; i++) {
        const lease = await client.acquire();
        await client.append("file_2", `c${c} i${i} t${lease.token} begin\n`);
        await client.append("file_2", `c${c} i${i} t${lease.token} end\n`);
        await client.release(lease);
      }
    }),
  );
  const lines = (await clients[0].read("file_2")).toString().trimEnd().split("\n");
  expect(lines).toHaveLength(400);
  expect(new Set(lines).size).toBe(400);
  let lastToken = 0;
  for (let k = 0; k < lines.length; k += 2) {
    const begin = /^c(\d+) i(\d+) t(\d+) begin$/.exec(lines[k]);
    expect(begin).not.toBeNull();
    // The section's two appends are adjacent: nothing interleaves.
    expect(lines[k + 1]).toBe(lines[k].replace(/ begin$/, " end"));
    const token = Number(begin![3]);
    expect(token).toBeGreaterThan(lastToken);
    lastToken = token;
  }
  for (let c = 0; c < 20; c++) {
    const mine = lines.filter((l) => l.startsWith(`c${c} `) && l.endsWith("begin")).map((l) => Number(/ i(\d+) /.exec(l)![1]));
    expect(mine).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  }
  expect(cluster.fileOn(0, 2).toString()).toBe(lines.join("\n") + "\n");
});

test("waiters are granted in the order they asked (FIFO)", async () => {
  const holder = await cluster.client({ name: "holder" });
  const lease = await holder.acquire("fifo");
  const waiters = await Promise.all(Array.from({ length: 8 }, (_, i) => cluster.client({ name: `F${i}` })));
  const order: number[] = [];
  const done: Promise<void>[] = [];
  for (let i = 0; i < waiters.length; i++) {
    done.push(
      waiters[i].acquire("fifo").then(async (l) => {
        order.push(i);
        await waiters[i].release(l);
      }),
    );
    // Wait until the server has queued this one before the next asks.
    await waitFor(async () => (await cluster.status()).locks.find((l) => l.name === "fifo")?.queue.length === i + 1);
  }
  await holder.release(lease);
  await Promise.all(done);
  expect(order).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
});

test("an append without the lock, or with an old token, is refused and changes nothing", async () => {
  const c1 = await cluster.client({ name: "fence-1" });
  const c2 = await cluster.client({ name: "fence-2" });
  const old = await c1.acquire();
  await c1.release(old);
  const current = await c2.acquire();
  await expect(c1.append("file_3", "stale", { lease: old })).rejects.toBeInstanceOf(NotHolderError);
  await c2.append("file_3", "fresh");
  await c2.release(current);
  expect((await c2.read("file_3")).toString()).toBe("fresh");
});

test("abandon ends a grant without committing: the half section never lands and the next waiter goes on", async () => {
  const c1 = await cluster.client({ name: "A1" });
  const c2 = await cluster.client({ name: "A2" });
  const lease1 = await c1.acquire();
  await c1.append("file_8", "half of a section that failed\n");
  const waiting = c2.acquire();
  expect(await lease1.abandon()).toEqual({ appends: 1, bytes: 30 });
  const lease2 = await waiting;
  expect(lease2.token).toBeGreaterThan(lease1.token);
  await c2.append("file_8", "whole\n");
  await lease2.release();
  expect((await c2.read("file_8")).toString()).toBe("whole\n");
  // The abandoned token is fenced off like an expired one.
  const late = await cluster.rawRequest({ op: "append", client: c1.clientId, seq: 999, file: "file_8", data: "eA==", token: lease1.token });
  expect(late).toMatchObject({ ok: false, error: "LOCK_EXPIRED" });
  expect(cluster.fileOn(0, 8).toString()).toBe("whole\n");
});

describe("bad input gets a coded error, changes nothing and never crashes the node", () => {
  const client = "badinput-client-0001";
  const raw: Array<[string, string, string | object]> = [
    ["malformed JSON", "BAD_REQUEST", "{not json"],
    ["a JSON array", "BAD_REQUEST", "[1,2,3]"],
    ["empty body", "BAD_REQUEST", ""],
    ["unknown op", "UNKNOWN_OP", { op: "format-disk" }],
    ["op of the wrong type", "BAD_REQUEST", { op: 42 }],
    ["missing client", "BAD_REQUEST", { op: "acquire", seq: 1 }],
    ["seq as a string", "BAD_REQUEST", { op: "acquire", client, seq: "1" }],
    ["file ../x", "FILE_NOT_FOUND", { op: "append", client, seq: 2, ack: 1, file: "../x", data: "QQ==", token: 1 }],
    ["file_100", "FILE_NOT_FOUND", { op: "append", client, seq: 2, ack: 1, file: "file_100", data: "QQ==", token: 1 }],
    ["file_01", "FILE_NOT_FOUND", { op: "append", client, seq: 2, ack: 1, file: "file_01", data: "QQ==", token: 1 }],
    ["read ../../etc/passwd", "FILE_NOT_FOUND", { op: "read", file: "../../etc/passwd" }],
    ["data not base64", "BAD_REQUEST", { op: "append", client, seq: 2, ack: 1, file: "file_4", data: "***", token: 1 }],
    ["oversize append", "TOO_LARGE", { op: "append", client, seq: 2, ack: 1, file: "file_4", data: Buffer.alloc(70 * 1024).toString("base64"), token: 1 }],
    ["over-long lock name", "BAD_REQUEST", { op: "acquire", client, seq: 2, ack: 1, lock: "x".repeat(200) }],
    ["odd lock name", "BAD_REQUEST", { op: "acquire", client, seq: 2, ack: 1, lock: "a lock/../b" }],
    ["negative lease", "BAD_REQUEST", { op: "acquire", client, seq: 2, ack: 1, leaseMs: -5 }],
    ["token of the wrong type", "BAD_REQUEST", { op: "release", client, seq: 2, ack: 1, token: "7" }],
  ];

  test.each(raw)("raw over NATS: %s -> %s", async (_what, code, body) => {
    const before = await cluster.status();
    const reply = await cluster.rawRequest(body);
    expect(reply.ok).toBe(false);
    expect(reply).toMatchObject({ error: code });
    expect(typeof reply.message).toBe("string");
    const after = await cluster.status();
    expect(after.fileLengths).toEqual(before.fileLengths);
    expect(after.sessions).toBe(before.sessions);
    expect(after.nextToken).toBe(before.nextToken);
  });

  test("a request over NATS's size that JSON.parse would choke on is TOO_LARGE", async () => {
    const reply = await cluster.rawRequest("x".repeat(300 * 1024));
    expect(reply).toMatchObject({ ok: false, error: "TOO_LARGE" });
  });

  test("through the client library: typed errors, and the node still serves", async () => {
    const c = await cluster.client({ name: "bad" });
    const lease = await c.acquire();
    for (const file of ["../x", "file_100", "file_01", "", "FILE_1"]) {
      await expect(c.append(file, "x")).rejects.toMatchObject({ codeName: "FILE_NOT_FOUND", code: 1 });
    }
    await expect(c.append("file_4", Buffer.alloc(65 * 1024))).rejects.toMatchObject({ codeName: "TOO_LARGE" });
    await expect(c.acquire("no spaces allowed")).rejects.toMatchObject({ codeName: "BAD_REQUEST" });
    await expect(c.read("file_-1")).rejects.toMatchObject({ codeName: "FILE_NOT_FOUND" });
    await c.append("file_4", "ok");
    await c.release(lease);
    expect((await c.read("file_4")).toString()).toBe("ok");
    expect(cluster.nodes[0].running).toBe(true);
  });
});

test("node SIGKILLed while a holder has staged appends: after restart it still holds, and release commits them", async () => {
  const c = await cluster.client({ name: "survivor" });
  const lease = await c.acquire("global", { leaseMs: 8000 });
  await c.append("file_5", "one,");
  await c.append("file_5", "two");
  const before = await cluster.status();
  // The appends wait in the client and ride with the release: nothing is staged on the server yet.
  expect(before.locks.find((l) => l.name === "global")?.holder).toMatchObject({ token: lease.token, stagedAppends: 0 });
  const filesBefore = Array.from({ length: 100 }, (_, f) => cluster.fileOn(0, f));
  await cluster.nodes[0].kill("SIGKILL");
  await cluster.nodes[0].restart();
  await cluster.waitForLeader();
  const after = await cluster.status();
  expect(after.locks.find((l) => l.name === "global")?.holder).toMatchObject({ token: lease.token, stagedAppends: 0 });
  expect(after.fileLengths).toEqual(before.fileLengths);
  const committed = await c.release(lease);
  expect(committed).toEqual({ appends: 2, bytes: 7 });
  expect((await c.read("file_5")).toString()).toBe("one,two");
  expect(cluster.fileOn(0, 5).toString()).toBe("one,two");
  // Every other file came back exactly as it was before the crash.
  for (let f = 0; f < 100; f++) if (f !== 5) expect(cluster.fileOn(0, f).equals(filesBefore[f])).toBe(true);
});

test("close() says goodbye, releases what the client holds and cancels its waits", async () => {
  const holder = await cluster.client({ name: "closer" });
  const other = await cluster.client({ name: "other" });
  const lease = await holder.acquire("global");
  await holder.append("file_6", "discarded");
  const waiting = holder.acquire("closing-other").catch(() => undefined);
  expect(await holder.close()).toBe("Disconnected!");
  await waiting;
  const next = await other.acquire("global", { waitMs: 2000 });
  expect(next.token).toBeGreaterThan(lease.token);
  await other.release(next);
  expect((await other.read("file_6")).toString()).toBe("");
  expect(isDlmError(new NotHolderError())).toBe(true);
});

async function waitFor(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(25);
  }
  throw new Error("condition not reached in time");
}
