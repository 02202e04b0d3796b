/**
 * Limits, version and status on real processes: a two-node cluster whose
 * limits come from a config file, the version wherever it is shown, and
 * `dlm status` noticing a node that stopped answering.
 */
import * as fs from "fs";
import * as path from "path";
import { startDlmCluster, type DlmTestCluster } from "../kit/dlmCluster";
import { runDlm } from "../kit/cli";
import { readLogEntries } from "../kit/logEntries";
import { RawSession } from "../kit/rawSession";
import { makeTempDir, removeTempDir } from "../kit/tmp";
import { until } from "../kit/wait";
import { encodeEntry } from "../../src/coordinator/entries";
import { MESSAGE_HEADROOM_BYTES } from "../../src/protocol/limits";

const packageVersion = (JSON.parse(fs.readFileSync(path.join(__dirname, "../../package.json"), "utf8")) as { version: string }).version;

describe("dlm node refuses bad limits before it starts", () => {
  let dir: string;
  beforeAll(() => {
    dir = makeTempDir("dlm-limits-cli-");
  });
  afterAll(async () => {
    await removeTempDir(dir);
  });

  test("a config file with a misspelt key or a bad value: exit 2, the key named", async () => {
    const misspelt = path.join(dir, "misspelt.json");
    fs.writeFileSync(misspelt, JSON.stringify({ maxQueueLenght: 3 }));
    const first = await runDlm(["node", "--config", misspelt, "--data", path.join(dir, "d1")]);
    expect(first.code).toBe(2);
    expect(first.stderr).toMatch(/unknown key "maxQueueLenght"/);
    const inverted = path.join(dir, "inverted.json");
    fs.writeFileSync(inverted, JSON.stringify({ minLeaseMs: 5000, defaultLeaseMs: 1000 }));
    const second = await runDlm(["node", "--config", inverted, "--data", path.join(dir, "d2")]);
    expect(second.code).toBe(2);
    expect(second.stderr).toMatch(/defaultLeaseMs \(--default-lease-ms\) must lie between minLeaseMs/);
    const flag = await runDlm(["node", "--max-queue-length", "0", "--data", path.join(dir, "d3")]);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toMatch(/maxQueueLength \(--max-queue-length\) must be an integer of at least 1, got 0/);
    // Nothing was started: no data directory was made.
    expect(fs.existsSync(path.join(dir, "d1"))).toBe(false);
  });

  test("dlm --version and -V print the package version", async () => {
    for (const arg of ["--version", "-V"]) {
      const result = await runDlm([arg]);
      expect(result.code).toBe(0);
      expect(result.stdout).toBe(`dlm ${packageVersion}\n`);
    }
  });
});

describe("a two-node cluster configured by file", () => {
  let cluster: DlmTestCluster;
  let dir: string;
  let stateHome: string;
  beforeAll(async () => {
    dir = makeTempDir("dlm-limits-");
    stateHome = path.join(dir, "state");
    const config = path.join(dir, "dlm.json");
    fs.writeFileSync(config, JSON.stringify({ maxQueueLength: 3, maxSessions: 40, statusMaxWaiters: 2 }));
    cluster = await startDlmCluster({ nodes: 2, extraArgs: ["--config", config] });
    await cluster.waitForLeader();
  });
  afterAll(async () => {
    await cluster?.close();
    await removeTempDir(dir);
  });

  const status = (...args: string[]) => runDlm(["status", "--nats", cluster.urls.join(","), "--wait-ms", "1000", ...args], { env: { XDG_STATE_HOME: stateHome } });

  test("the queue limit from the file holds: the 4th waiter gets LIMIT_EXCEEDED with a clear message", async () => {
    const holder = new RawSession(cluster);
    expect(await holder.call("hello")).toMatchObject({ ok: true, version: packageVersion });
    expect(await holder.call("acquire", { lock: "q" })).toMatchObject({ ok: true, status: "granted" });
    const waiters = [new RawSession(cluster), new RawSession(cluster), new RawSession(cluster), new RawSession(cluster)];
    for (const [i, w] of waiters.entries()) {
      await w.call("hello");
      const answer = await w.call("acquire", { lock: "q" });
      if (i < 3) expect(answer).toMatchObject({ ok: true, status: "queued", position: i + 1 });
      else expect(answer).toMatchObject({ ok: false, error: "LIMIT_EXCEEDED", message: "queue for q is full (3)" });
    }
    // The status answer lists the head of the queue and counts the rest.
    const view = await cluster.status();
    const q = view.locks.find((l) => l.name === "q");
    expect(q?.queue.map((w) => w.client)).toEqual([waiters[0].id, waiters[1].id]);
    expect(q?.queueLength).toBe(3);
    for (const s of [holder, ...waiters]) await s.call("goodbye");
  });

  test("a node's first log line says it is starting, with its version, id, pid and limits", () => {
    const firstLine = cluster.nodes[0].tail(1000).split("\n").find((line) => line.startsWith("{"));
    const first = JSON.parse(firstLine ?? "{}") as { msg?: string; version?: string; nodeId?: string; pid?: number; limits?: { maxQueueLength?: number } };
    expect(first).toMatchObject({ msg: "dlm node starting", version: packageVersion, nodeId: "n1", pid: cluster.nodes[0].pid, limits: { maxQueueLength: 3 } });
  });

  test("the client library learns the server's version", async () => {
    const client = await cluster.client();
    expect(client.serverVersion).toBe(packageVersion);
  });

  test("dlm status shows each node's version, and lists a node that stopped answering as missing (exit 5)", async () => {
    const first = await status();
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(new RegExp(`n1 .* version ${packageVersion.replace(/\./g, "\\.")}`));
    expect(first.stdout).toMatch(/n2 .* version/);
    expect(first.stdout).not.toMatch(/MISSING/);

    const leader = await cluster.waitForLeader();
    const followerIndex = leader.id === "n1" ? 1 : 0;
    const followerId = `n${followerIndex + 1}`;
    await cluster.nodes[followerIndex].kill("SIGKILL");

    const second = await status();
    if (second.code !== 5) throw new Error(`status after killing ${followerId}:\n${second.stdout}`);
    expect(second.stdout).toMatch(new RegExp(`${followerId} +MISSING +last answered \\d{4}-`));
    const json = JSON.parse((await status("--json")).stdout) as { missing: Array<{ nodeId: string; lastSeenAt: number | null }> };
    expect(json.missing).toEqual([{ nodeId: followerId, lastSeenAt: expect.any(Number) }]);

    // A node never seen but expected is missing too; a forgotten one is not.
    const expectNew = await status("--expect", `${leader.id},n9`, "--forget", followerId);
    expect(expectNew.code).toBe(5);
    expect(expectNew.stdout).toMatch(/n9 +MISSING +never answered/);
    expect(expectNew.stdout).not.toMatch(new RegExp(`${followerId} +MISSING`));
    const afterForget = await status();
    expect(afterForget.code).toBe(0);
    expect(afterForget.stdout).not.toMatch(/MISSING/);
  });
});

describe("a NATS server with a small max_payload: log entries and answers stay within it", () => {
  // A server that takes at most 300,000 bytes per message, and a leader that
  // holds queued commands long enough for all of the test's commits to meet
  // in its queue: without a byte budget they would make one entry of about
  // 660 KB, which NATS refuses, and the leader stepped down over it.
  const MAX_PAYLOAD = 300_000;
  let cluster: DlmTestCluster;
  beforeAll(async () => {
    cluster = await startDlmCluster({ nodes: 2, natsExtraConfig: `max_payload: ${MAX_PAYLOAD}`, extraArgs: ["--hold-queued-ms", "300"] });
    await cluster.waitForLeader();
    await cluster.waitCaughtUp();
  });
  afterAll(async () => {
    await cluster?.close();
  });

  test("eight queued 60 KiB commits go out as entries under max_payload, the leader stays, each section lands once", async () => {
    const leader = await cluster.waitForLeader();
    const firstSeq = (await readLogEntries(cluster.nc, 1)).length + 1;
    const holder = await cluster.client();
    const lease = await holder.acquire("global");
    const committers = await Promise.all(Array.from({ length: 8 }, () => cluster.client()));
    // Each section is one 60 KiB line, about 82 KB in base64: three fit one entry, four do not.
    const sections = committers.map((_, i) => `${String(i).padStart(2, "0")} ${"x".repeat(60 * 1024 - 4)}\n`);
    const commits = committers.map((client, i) => client.commit([{ file: "file_42", data: sections[i]! }]));
    await until(async () => (await cluster.status().catch(() => undefined))?.locks.find((l) => l.name === "global")?.queueLength === 8, 20_000, "all eight commits queued", () => cluster.nodes.map((n) => n.tail(3000)).join("\n"));
    await lease.release();
    const results = await Promise.all(commits);
    expect(new Set(results.map((r) => r.token)).size).toBe(8);

    // The same leader throughout: no append was refused.
    expect(await cluster.waitForLeader()).toMatchObject({ id: leader.id, epoch: leader.epoch });
    const entries = (await readLogEntries(cluster.nc, 1)).filter((e) => e.seq >= firstSeq);
    const withCommits = entries.filter((e) => e.entry.cmds.some((c) => c.type === "commit"));
    for (const { entry } of entries) expect(encodeEntry(entry).length).toBeLessThanOrEqual(MAX_PAYLOAD - MESSAGE_HEADROOM_BYTES);
    // Filled to the budget, not one commit an entry: 3 + 3 + 2.
    expect(withCommits.map((e) => e.entry.cmds.filter((c) => c.type === "commit").length)).toEqual([3, 3, 2]);

    // Every section once and whole, the same on both nodes.
    await cluster.expectFilesIdentical(30_000);
    const text = cluster.fileOn(0, 42).toString();
    expect(text.length).toBe(8 * 60 * 1024);
    for (const section of sections) expect(text.split(section).length - 1).toBe(1);
  });

  test("a file larger than one message reads in pages through the client and dlm read; a read without pages gets TOO_LARGE and the leader goes on", async () => {
    const leader = await cluster.waitForLeader();
    const client = await cluster.client();
    // 300 KiB: its base64 alone (400 KiB) is over max_payload, and it takes two pages.
    for (let i = 0; i < 5; i++) await client.commit([{ file: "file_43", data: `${i} ${"y".repeat(60 * 1024 - 3)}\n` }]);
    await cluster.expectFilesIdentical(30_000);
    const onDisk = cluster.fileOn(0, 43);
    expect(onDisk.length).toBe(5 * 60 * 1024);

    expect((await client.read("file_43")).equals(onDisk)).toBe(true);
    const cli = await runDlm(["read", "--nats", cluster.urls.join(","), "file_43"]);
    expect(cli.code).toBe(0);
    expect(cli.stdout).toBe(onDisk.toString());
    // From an offset, across the page boundary: the rest of the file.
    const from = 100_000;
    expect((await client.read("file_43", { offset: from })).equals(onDisk.subarray(from))).toBe(true);
    const tail = await runDlm(["read", "--nats", cluster.urls.join(","), "--offset", String(from), "file_43"]);
    expect(tail.code).toBe(0);
    expect(tail.stdout).toBe(onDisk.subarray(from).toString());
    await expect(client.read("file_43", { offset: -1 })).rejects.toMatchObject({ codeName: "BAD_REQUEST" });

    // A client from before pages asks for the whole file: a clear refusal,
    // where the answer used to stop the leader's connection for good.
    const whole = await cluster.rawRequest({ op: "read", file: "file_43" });
    expect(whole).toMatchObject({ ok: false, error: "TOO_LARGE" });
    expect((whole as { message: string }).message).toMatch(/file_43 holds 307200 bytes, more than one answer carries \(\d+\): read it in pages/);
    // The same leader still answers, and still logs.
    await client.commit([{ file: "file_43", data: "after\n" }]);
    expect(await cluster.waitForLeader()).toMatchObject({ id: leader.id, epoch: leader.epoch });
    expect((await client.read("file_43")).subarray(onDisk.length).toString()).toBe("after\n");
  });

  test("a status of queues far larger than one message lists what fits, counts everything, and dlm status prints it", async () => {
    // One holder of 32 locks with 128-character names and 19 acquireAll
    // waiters for all of them: listed whole, about 2.6 MB.
    const locks = Array.from({ length: 32 }, (_, i) => ({ lock: `wide-${String(i).padStart(2, "0")}-${"w".repeat(119)}` }));
    const sessions = Array.from({ length: 20 }, () => new RawSession(cluster));
    for (const session of sessions) await session.call("hello");
    expect(await sessions[0]!.call("acquireAll", { locks })).toMatchObject({ ok: true, status: "granted" });
    for (const session of sessions.slice(1)) expect(await session.call("acquireAll", { locks })).toMatchObject({ ok: true, status: "queued" });

    const view = await cluster.status();
    const wide = view.locks.filter((l) => l.name.startsWith("wide-"));
    expect(wide.length).toBeGreaterThan(0);
    for (const lock of wide) {
      expect(lock.queueLength).toBe(19);
      expect(lock.queue.length).toBeLessThan(19);
    }
    expect(JSON.stringify(view).length).toBeLessThan(MAX_PAYLOAD);
    const cli = await runDlm(["status", "--nats", cluster.urls.join(","), "--wait-ms", "1000"]);
    expect(cli.code).toBe(0);
    expect(cli.stdout).toMatch(/wide-00-w+/);
    for (const session of sessions) await session.call("goodbye");
  });
});

describe("a session digest larger than a log entry", () => {
  // Entries of at most 4 KiB (requests of 2 KiB, appends of 512 bytes), and
  // a digest of quiet sessions that soon outgrows that.
  let cluster: DlmTestCluster;
  beforeAll(async () => {
    const args = ["--max-entry-bytes", "4096", "--max-request-bytes", "2048", "--max-append-bytes", "512"];
    cluster = await startDlmCluster({ nodes: 1, sessionTimeoutMs: 4000, extraArgs: args });
    await cluster.waitForLeader();
  });
  afterAll(async () => {
    await cluster?.close();
  });

  test("is logged cut to the longest-quiet sessions that fit, with one warning, and the leader goes on", async () => {
    const firstSeq = (await readLogEntries(cluster.nc, 1)).length + 1;
    const sessions = Array.from({ length: 200 }, () => new RawSession(cluster));
    await Promise.all(sessions.map((s) => s.call("hello")));
    // Quiet after 0.35 of the timeout (1.4 s): 200 sessions listed would take about 7 KB.
    await until(
      async () => (await readLogEntries(cluster.nc, 1, firstSeq)).some((e) => e.entry.cmds.some((c) => c.type === "sessionDigest" && c.quiet.length > 0)),
      10_000,
      "a digest listing quiet sessions",
    );
    const digests = (await readLogEntries(cluster.nc, 1, firstSeq)).filter((e) => e.entry.cmds.some((c) => c.type === "sessionDigest"));
    for (const { entry } of digests) expect(encodeEntry(entry).length).toBeLessThanOrEqual(4096);
    const listed = Math.max(...digests.map((e) => e.entry.cmds.map((c) => (c.type === "sessionDigest" ? c.quiet.length : 0)).reduce((a, b) => a + b)));
    expect(listed).toBeGreaterThan(50);
    expect(listed).toBeLessThan(200);
    expect(cluster.nodes[0]!.tail(20_000).match(/session digest cut to fit one log entry/g)).toHaveLength(1);
    // The same leader still logs requests.
    const leader = await cluster.waitForLeader();
    const late = new RawSession(cluster);
    expect(await late.call("hello")).toMatchObject({ ok: true });
    expect(await cluster.waitForLeader()).toMatchObject({ id: leader.id, epoch: leader.epoch });
  });
});

describe("a request larger than a log entry can be", () => {
  // max_payload 300,000 caps an entry at 295,904 bytes, while requests of up
  // to 299,000 bytes are read: the leader says so when it starts, and a
  // request whose command does not fit an entry is refused, not logged.
  let cluster: DlmTestCluster;
  beforeAll(async () => {
    cluster = await startDlmCluster({ nodes: 1, natsExtraConfig: "max_payload: 300000", extraArgs: ["--max-request-bytes", "299000"] });
    await cluster.waitForLeader();
  });
  afterAll(async () => {
    await cluster?.close();
  });

  test("is refused TOO_LARGE before it is logged, the leader warned at start, and it goes on", async () => {
    const leader = await cluster.waitForLeader();
    expect(cluster.nodes[0]!.tail(20_000)).toMatch(/a log entry is smaller than the largest request/);
    const session = new RawSession(cluster);
    expect(await session.call("hello")).toMatchObject({ ok: true });
    // Four appends of 55,500 bytes: about 296,250 bytes of request, just over the entry budget.
    const appends = Array.from({ length: 4 }, () => ({ file: "file_44", data: Buffer.alloc(55_500, 0x61).toString("base64") }));
    const refused = await session.call("commit", { lock: "global", appends });
    expect(refused).toMatchObject({ ok: false, error: "TOO_LARGE" });
    expect((refused as { message: string }).message).toMatch(/request does not fit one log entry of 295904 bytes/);
    expect((await cluster.status()).fileLengths[44]).toBe(0);
    // Nothing was logged for it, and the leader goes on.
    expect(await session.call("commit", { lock: "global", appends: [{ file: "file_44", data: Buffer.from("small\n").toString("base64") }] })).toMatchObject({ ok: true });
    expect((await cluster.status()).fileLengths[44]).toBe(6);
    expect(await cluster.waitForLeader()).toMatchObject({ id: leader.id, epoch: leader.epoch });
    await session.call("goodbye");
  });
});

describe("a client that waits long for one lock while it works under others", () => {
  // A reply cache of 8 answers per session. Before `waits`, the wait for x
  // held the session's ack back, every later answer stayed cached, and the
  // eighth request after the wait was refused LIMIT_EXCEEDED.
  let cluster: DlmTestCluster;
  beforeAll(async () => {
    cluster = await startDlmCluster({ nodes: 1, extraArgs: ["--max-cached-replies", "8"] });
    await cluster.waitForLeader();
  });
  afterAll(async () => {
    await cluster?.close();
  });

  test("commits and renews as much as it likes while it waits, and gets the lock after", async () => {
    const holder = await cluster.client({ name: "holder" });
    const held = await holder.acquire("x", { leaseMs: 60_000 });
    const worker = await cluster.client({ name: "worker" });
    const other = await worker.acquire("y", { leaseMs: 900 });
    const waiting = worker.acquire("x", { leaseMs: 10_000 });
    waiting.catch(() => undefined); // awaited below; a failure before then is the test's, not an unhandled rejection
    await until(async () => (await cluster.status()).locks.some((l) => l.name === "x" && l.queueLength === 1), 10_000, "the worker to queue for x");
    for (let i = 0; i < 30; i++) await worker.commit([{ file: "file_45", data: `commit ${i}\n` }]);
    // Renewals every 300 ms for 2 s: more answers the session has seen.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(other.lost).toBe(false);
    await holder.release(held);
    const granted = await waiting;
    expect(granted.lock).toBe("x");
    await worker.release(granted);
    await worker.release(other);
    expect((await cluster.status()).fileLengths[45]).toBe(Array.from({ length: 30 }, (_, i) => `commit ${i}\n`).join("").length);
  });
});
