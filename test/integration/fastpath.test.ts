/**
 * Issue 10, the fast path, against real processes (one nats-server, three
 * dlm nodes): a section's appends ride with its release, the one-request
 * commit, and a leader with several log entries in flight. Each scenario
 * ends with the exact content of its own file, read through the leader and
 * checked byte for byte on every node.
 */
import { FaultInjector, isDlmError, type DlmClient } from "../../src/client";
import type { Reply } from "../../src/protocol/messages";
import { sleep, startDlmCluster, type DlmTestCluster } from "../kit/dlmCluster";
import { RawSession } from "../kit/rawSession";
import { scenarioWithTails } from "../kit/scenario";
import { until } from "../kit/wait";

jest.setTimeout(90_000);

let c: DlmTestCluster;
const scenario = scenarioWithTails(() => c);

beforeAll(async () => {
  // natsPingMax 15: the stale-leader scenario needs the frozen node still
  // connected when it wakes with appends and requests in flight.
  c = await startDlmCluster({ nodes: 3, nats: 1, leaseMs: 5000, sessionTimeoutMs: 15_000, natsPingMax: 15 });
  await c.waitForLeader(30_000);
  await c.waitCaughtUp(30_000);
}, 90_000);

afterAll(async () => {
  await c?.close();
});

function indexOf(id: string): number {
  const i = c.nodes.findIndex((n) => n.name === `dlm-${id}`);
  if (i < 0) throw new Error(`no node ${id}`);
  return i;
}

/** The file as the leader serves it and as every node has it on disk. */
async function expectFile(client: DlmClient, file: number, expected: string | Buffer): Promise<void> {
  const want = typeof expected === "string" ? Buffer.from(expected) : expected;
  expect((await client.read(`file_${file}`)).equals(want)).toBe(true);
  await c.expectFilesIdentical(30_000);
  for (let i = 0; i < c.nodes.length; i++) if (c.nodes[i].running) expect(c.fileOn(i, file).equals(want)).toBe(true);
}

/** Lines of a file that a set of writers produced: each (writer, n) pair's lines must be adjacent and appear once. */
function expectSectionsOnce(text: string, sections: Map<string, string>): void {
  let rest = text;
  const seen = new Set<string>();
  while (rest.length > 0) {
    const key = rest.slice(0, rest.indexOf(" ", rest.indexOf(" ") + 1));
    const section = sections.get(key);
    if (section === undefined || !rest.startsWith(section)) throw new Error(`unexpected or torn section at: ${JSON.stringify(rest.slice(0, 80))}`);
    if (seen.has(key)) throw new Error(`section ${key} committed twice`);
    seen.add(key);
    rest = rest.slice(section.length);
  }
  expect([...seen].sort()).toEqual([...sections.keys()].sort());
}

scenario("a section rides with its release: lost, duplicated and unanswered releases and spilled appends commit it exactly once", async () => {
  const F = 60;
  const faults = new FaultInjector({ seed: 10 });
  // The 1st release never arrives, the 2nd arrives twice, the 3rd is applied but its answer is lost.
  faults.add({ op: "release", nth: 1, attempt: 1, action: { kind: "dropRequest" } });
  faults.add({ op: "release", nth: 2, attempt: 1, action: { kind: "duplicateRequest" } });
  faults.add({ op: "release", nth: 3, attempt: 1, action: { kind: "dropReply" } });
  const client = await c.client({ requestTimeoutMs: 700, faults });
  let expected = "";
  for (let i = 1; i <= 3; i++) {
    const lease = await client.acquire("global");
    expect(await client.append(`file_${F}`, `s${i} a\n`)).toEqual({ staged: { appends: 1, bytes: 5 } });
    await client.append(`file_${F}`, `s${i} b\n`);
    // Nothing reached the server before the release: no request and no log entry per append.
    expect((await c.status()).locks.find((l) => l.name === "global")?.holder).toMatchObject({ token: lease.token, stagedAppends: 0 });
    expect(await lease.release()).toEqual({ appends: 2, bytes: 10 });
    expected += `s${i} a\ns${i} b\n`;
  }
  expect(faults.events.filter((e) => e.op === "release").map((e) => e.action)).toEqual(["dropRequest", "duplicateRequest", "dropReply"]);
  await expectFile(client, F, expected);

  // A section larger than one request spills its earlier appends as logged
  // appends; one of those is answered but its answer is lost (retried with
  // the same seq), another arrives twice. The release names how many were
  // logged and commits the whole section once, in order.
  faults.clear();
  faults.add({ op: "append", nth: 1, attempt: 1, action: { kind: "dropReply" } });
  faults.add({ op: "append", nth: 2, attempt: 1, action: { kind: "duplicateRequest" } });
  const big = Array.from({ length: 4 }, (_, i) => Buffer.alloc(50_000, 65 + i));
  const lease = await client.acquire("global");
  for (const chunk of big) await client.append(`file_${F}`, chunk);
  const holder = (await c.status()).locks.find((l) => l.name === "global")?.holder;
  expect(holder?.stagedAppends).toBeGreaterThanOrEqual(2); // spilled, logged on their own
  expect(holder?.stagedAppends).toBeLessThan(4); // the rest rides with the release
  expect(await lease.release()).toEqual({ appends: 4, bytes: 200_000 });
  expect(faults.events.filter((e) => e.op === "append").map((e) => e.action)).toEqual(["dropReply", "duplicateRequest"]);
  await expectFile(client, F, Buffer.concat([Buffer.from(expected), ...big]));

  // On the wire: a release that names the wrong number of logged appends
  // commits nothing and keeps the grant; the right number commits them all.
  const raw = new RawSession(c);
  expect((await raw.call("hello")).ok).toBe(true);
  const granted = await raw.call("acquire", { lock: "global", leaseMs: 10_000 });
  const token = granted.ok ? granted.lease?.token : undefined;
  expect(token).toBeDefined();
  expect((await raw.call("append", { file: `file_${F}`, data: Buffer.from("raw 1\n").toString("base64"), token })).ok).toBe(true);
  const inline = [{ file: `file_${F}`, data: Buffer.from("raw 2\n").toString("base64") }];
  for (const staged of [0, 2]) {
    expect(await raw.call("release", { lock: "global", token, staged, appends: inline })).toMatchObject({ ok: false, error: "SECTION_MISMATCH" });
  }
  expect((await c.status()).locks.find((l) => l.name === "global")?.holder).toMatchObject({ token, stagedAppends: 1 });
  expect(await raw.call("release", { lock: "global", token, staged: 1, appends: inline })).toMatchObject({ ok: true, committed: { appends: 2, bytes: 12 } });
  expect((await raw.call("goodbye")).ok).toBe(true);
  await expectFile(client, F, Buffer.concat([Buffer.from(expected), ...big, Buffer.from("raw 1\nraw 2\n")]));
});

scenario("one-request commits under contention with sections: each once, never interleaved, one token each", async () => {
  const F = 61;
  const sections = new Map<string, string>();
  const committers = await Promise.all(Array.from({ length: 6 }, () => c.client()));
  const holders = await Promise.all(Array.from({ length: 2 }, () => c.client()));
  const tokens: number[] = [];
  await Promise.all([
    ...committers.map(async (client, w) => {
      for (let n = 0; n < 8; n++) {
        const a = `c${w} ${n} a\n`;
        const b = `c${w} ${n} b\n`;
        sections.set(`c${w} ${n}`, a + b);
        const result = await client.commit([
          { file: `file_${F}`, data: a },
          { file: `file_${F}`, data: b },
        ]);
        expect(result.committed).toEqual({ appends: 2, bytes: Buffer.byteLength(a + b) });
        tokens.push(result.token);
      }
    }),
    ...holders.map(async (client, w) => {
      for (let n = 0; n < 4; n++) {
        const a = `h${w} ${n} a\n`;
        const b = `h${w} ${n} b\n`;
        sections.set(`h${w} ${n}`, a + b);
        const lease = await client.acquire("global");
        await client.append(`file_${F}`, a);
        await sleep(5);
        await client.append(`file_${F}`, b);
        await lease.release();
        tokens.push(lease.token);
      }
    }),
  ]);
  expect(new Set(tokens).size).toBe(tokens.length);
  const text = (await committers[0].read(`file_${F}`)).toString();
  expectSectionsOnce(text, sections);
  await expectFile(committers[0], F, text);
  // A commit that may not wait is refused while the lock is held, and writes nothing.
  const lease = await holders[0].acquire("global");
  await expect(committers[0].commit([{ file: `file_${F}`, data: "never\n" }], { waitMs: 0 })).rejects.toMatchObject({ codeName: "WAIT_TIMEOUT" });
  await lease.release();
  await expectFile(committers[0], F, text);
});

scenario("an aborted commit: cancelled while queued, or ahead of its own delayed arrival, it never writes; one that already ran resolves", async () => {
  const F = 64;
  const holder = await c.client();
  const lease = await holder.acquire("global");
  // 1. Queued behind a holder, then aborted: CancelledError, and nothing lands after the holder releases.
  const queuedClient = await c.client();
  const aborter = new AbortController();
  const queued = queuedClient.commit([{ file: `file_${F}`, data: "queued\n" }], { signal: aborter.signal });
  await until(async () => (await holder.status()).locks.some((l) => l.name === "global" && l.queueLength === 1), 10_000, "the commit to queue");
  aborter.abort();
  await expect(queued).rejects.toMatchObject({ codeName: "CANCELLED" });
  // 2. The commit's request reaches the log 1.5 s late; the abort's cancel overtakes it, so the late copy is refused.
  const faults = new FaultInjector();
  faults.add({ op: "commit", attempt: 1, action: { kind: "delayRequest", ms: 1500 } });
  const lateClient = await c.client({ faults, requestTimeoutMs: 5000, firstAttemptTimeoutMs: 5000 });
  const lateAborter = new AbortController();
  const late = lateClient.commit([{ file: `file_${F}`, data: "late\n" }], { signal: lateAborter.signal });
  await sleep(200);
  lateAborter.abort();
  await expect(late).rejects.toMatchObject({ codeName: "CANCELLED" });
  await sleep(2000); // the delayed copy has arrived by now
  expect(faults.events.some((e) => e.op === "commit" && e.action === "delayRequest")).toBe(true);
  await lease.release();
  await expectFile(holder, F, "");
  // 3. Aborted after it ran but before its answer came back (the answer is
  // lost): the section is in the file, so commit() resolves with its token.
  const lostAnswer = new FaultInjector();
  lostAnswer.add({ op: "commit", attempt: 1, action: { kind: "dropReply" } });
  const ranClient = await c.client({ faults: lostAnswer, requestTimeoutMs: 5000, firstAttemptTimeoutMs: 5000 });
  const ranAborter = new AbortController();
  const ran = ranClient.commit([{ file: `file_${F}`, data: "ran\n" }], { signal: ranAborter.signal });
  await until(async () => (await holder.read(`file_${F}`)).toString() === "ran\n", 10_000, "the commit to run");
  ranAborter.abort();
  const result = await ran;
  expect(result.committed).toEqual({ appends: 1, bytes: 4 });
  expect(result.token).toBeGreaterThan(lease.token);
  await expectFile(holder, F, "ran\n");
});

scenario("a commit whose answer is lost is retried across a leader kill; a queued commit survives a leader kill", async () => {
  const F = 62;
  const faults = new FaultInjector();
  faults.add({ op: "commit", nth: 1, attempt: 1, action: { kind: "dropReply" } });
  const client = await c.client({ requestTimeoutMs: 1500, unavailableTimeoutMs: 60_000, faults });
  const old = await c.waitForLeader();
  const committing = client.commit([{ file: `file_${F}`, data: "once\n" }]);
  // The leader committed it (its file has the line) but the answer was lost; the leader dies before the retry.
  await until(() => c.fileOn(indexOf(old.id), F).toString() === "once\n", 10_000, "the commit to land");
  await old.node.kill("SIGKILL");
  const first = await committing;
  expect(faults.events.map((e) => e.action)).toEqual(["dropReply"]);
  await old.node.restart();
  await expectFile(client, F, "once\n");

  // A commit queued behind a holder when the leader dies is granted by the next leader, after the holder's section.
  const holder = await c.client({ unavailableTimeoutMs: 60_000 });
  const leader = await c.waitForLeader();
  const lease = await holder.acquire("global", { leaseMs: 20_000 });
  expect(lease.token).toBeGreaterThan(first.token);
  await holder.append(`file_${F}`, "holder\n");
  const queued = client.commit([{ file: `file_${F}`, data: "queued\n" }]);
  await until(async () => ((await c.status()).locks.find((l) => l.name === "global")?.queue.length ?? 0) === 1, 10_000, "the commit to queue");
  await leader.node.kill("SIGKILL");
  await c.waitForLeader(30_000, leader.id);
  expect(await lease.release()).toEqual({ appends: 1, bytes: 7 });
  const second = await queued;
  expect(second.token).toBeGreaterThan(lease.token);
  await leader.node.restart();
  await expectFile(client, F, "once\nholder\nqueued\n");
});

scenario("a leader frozen under load (entries in flight) is fenced off: every acknowledged commit lands once, replicas agree", async () => {
  const F = 63;
  const clients = await Promise.all(Array.from({ length: 4 }, () => c.client({ requestTimeoutMs: 500, maxAttempts: 200, unavailableTimeoutMs: 60_000 })));
  const old = await c.waitForLeader();
  const sections = new Map<string, string>();
  let stop = false;
  const failures: unknown[] = [];
  const loops = clients.map(async (client, w) => {
    for (let n = 0; !stop; n++) {
      const line = `w${w} ${n} x\n`;
      sections.set(`w${w} ${n}`, line);
      try {
        await client.commit([{ file: `file_${F}`, data: line }]);
      } catch (e) {
        // A commit the client gave up on may still land once; it must never land twice.
        failures.push(e);
        if (!isDlmError(e, "TIMEOUT") && !isDlmError(e, "UNAVAILABLE")) throw e;
        sections.delete(`w${w} ${n}`);
        return;
      }
    }
  });
  // Let the leader run with a full pipeline, then freeze it mid-flight.
  await until(() => sections.size >= 40, 20_000, "commits to flow");
  await old.node.pause();
  const fresh = await c.waitForLeader(30_000, old.id);
  expect(fresh.epoch).toBeGreaterThan(old.epoch);
  await sleep(500);
  const mark = old.node.lineCount;
  old.node.resume();
  await old.node.waitForLine(/stepping down/, 15_000, mark);
  await sleep(500);
  stop = true;
  await Promise.all(loops);
  expect(failures).toEqual([]);
  const infos = await c.nodeInfos();
  expect(infos.filter((i) => i.role === "leader").map((i) => i.nodeId)).toEqual([fresh.id]);
  const text = (await clients[0].read(`file_${F}`)).toString();
  expectSectionsOnce(text, sections);
  await expectFile(clients[0], F, text);
  // Every status answer after the takeover comes from the new leader.
  const view: Reply = await c.rawRequest({ op: "status" });
  expect(view.ok && view.view?.leader).toBe(fresh.id);
});
