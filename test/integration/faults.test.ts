/**
 * Issue #3: the classic failure scenarios of a lock service, against real
 * processes: one nats-server, three dlm nodes, clients in this process (with
 * the seeded FaultInjector on their traffic) and, for real stalls, a client
 * in a child process (test/support/stallClient.ts) that is SIGSTOPped or
 * whose event loop is blocked by a busy loop.
 *
 * Leases are 2 s. The session timeout is 10 s here (the design's default is
 * 15 s, always longer than a lease) so that a client stalled for ~3.5 s
 * loses its lease, not its session: these scenarios are about leases.
 *
 * Every scenario uses its own file and ends by checking that file's exact
 * content through the client (`read`, served by the leader) and on the disk
 * of every node.
 */
import { FaultInjector, type DlmError, type Lease } from "../../src/client";
import { names } from "../../src/protocol/subjects";
import { ClientScenarios } from "../kit/clientScenarios";
import { sleep } from "../kit/dlmCluster";
import type { StallClient } from "../support/stallClient";

jest.setTimeout(90_000);

const LEASE_MS = 2000;
const SESSION_TIMEOUT_MS = 10_000;
const decoder = new TextDecoder();

const kit = new ClientScenarios({ leaseMs: LEASE_MS, sessionTimeoutMs: SESSION_TIMEOUT_MS });
const { client, childClient, until, globalLock, expectFile } = kit;

beforeAll(() => kit.start(), 60_000);
afterAll(() => kit.close());
// A scenario starts with "global" free (a failed one must not cascade).
beforeEach(() => kit.lockFree());
afterEach(() => kit.closeOpened());

type Settled<T> = { ok: true; value: T } | { ok: false; error: DlmError };
function settle<T>(p: Promise<T>): Promise<Settled<T>> {
  return p.then(
    (value) => ({ ok: true as const, value }),
    (error: DlmError) => ({ ok: false as const, error }),
  );
}

/** Resolves once `clientId` waits in the queue of "global". */
function queued(clientId: string | undefined): Promise<number> {
  return until(async () => (await globalLock())?.queue.some((w) => w.client === clientId) ?? false, 10_000, `${clientId} to be queued`);
}

/** Every request that reaches the request subject (a plain subscriber sees them all; it never answers). */
async function spyRequests() {
  const seen: Array<{ at: number; op: string; client?: string; seq?: number }> = [];
  const sub = kit.cluster.nc.subscribe(names().requestSubject, {
    callback: (err, msg) => {
      if (err) return;
      try {
        seen.push({ at: Date.now(), ...(JSON.parse(decoder.decode(msg.data)) as { op: string; client?: string; seq?: number }) });
      } catch {
        // not JSON: not ours
      }
    },
  });
  await kit.cluster.nc.flush();
  return { seen, stop: () => sub.unsubscribe() };
}

async function crashAllNodes(): Promise<void> {
  await Promise.all(kit.cluster.nodes.map((n) => (n.running ? n.kill("SIGKILL") : Promise.resolve())));
}

async function restartAllNodes(): Promise<void> {
  await Promise.all(kit.cluster.nodes.map((n) => n.restart()));
}

test("1. packet delay: an append delayed past the lease is refused with LOCK_EXPIRED and never reaches the file", async () => {
  const F = 1;
  const faults = new FaultInjector({ seed: 1 });
  // C1 waits long for answers, so the delayed append is answered, not retried.
  // Its appends go to the server one by one (this scenario is about such an append).
  const c1 = await client("s1-c1", { requestTimeoutMs: 6000, firstAttemptTimeoutMs: 6000, faults, logEachAppend: true });
  const c2 = await client("s1-c2", { logEachAppend: true });
  const lease1 = await c1.acquire();
  // C1's renewals are lost from now on (else the background renewal would keep the lease alive) ...
  faults.add({ op: "renew", action: { kind: "dropRequest" } });
  // ... and its append reaches the server 3.5 s after it was sent: well past the 2 s lease.
  faults.add({ op: "append", attempt: 1, action: { kind: "delayRequest", ms: 3500 } });
  const c2Acquire = c2.acquire();
  await queued(c2.clientId);

  const late = settle(c1.append(`file_${F}`, "A"));
  const lease2 = await c2Acquire; // granted once C1's lease ran out on the server
  expect(lease2.token).toBeGreaterThan(lease1.token);
  await c2.append(`file_${F}`, "B");

  const r = await late;
  expect(r.ok).toBe(false);
  if (r.ok) return;
  expect(r.error.codeName).toBe("LOCK_EXPIRED");
  expect(r.error.reply).toBeDefined(); // the server refused it (the token check at the resource), not the client
  expect(faults.events.some((e) => e.op === "append" && e.action === "delayRequest")).toBe(true);
  expect(faults.events.some((e) => e.op === "renew" && e.action === "dropRequest")).toBe(true);
  expect(lease1.lost).toBe(true);
  expect(lease1.lostReason?.codeName).toBe("LOCK_EXPIRED");
  // The late append did not slip into C2's section either.
  expect((await globalLock())?.holder).toMatchObject({ client: c2.clientId, token: lease2.token, stagedAppends: 1, stagedBytes: 1 });

  await c2.append(`file_${F}`, "B");
  expect(await lease2.release()).toEqual({ appends: 2, bytes: 2 });
  faults.clear();
  await expectFile(F, "BB");
});

test("2. request lost: C1's lost acquire lets C2 go first; C1's retry is granted after: BA", async () => {
  const F = 2;
  const faults = new FaultInjector();
  faults.add({ op: "acquire", attempt: 1, action: { kind: "dropRequest" } });
  const c1 = await client("s2-c1", { requestTimeoutMs: 1500, faults });
  const c2 = await client("s2-c2");

  const c1Acquire = c1.acquire();
  let c1GrantedAt: number | undefined;
  void c1Acquire.then(() => (c1GrantedAt = Date.now()), () => undefined);
  await until(() => faults.events.some((e) => e.op === "acquire" && e.action === "dropRequest"), 5000, "C1's first acquire to be dropped");
  // C2 asks while C1's first attempt is lost: the server has never heard of C1's acquire.
  const lease2 = await c2.acquire();
  await c2.append(`file_${F}`, "B");
  expect(await lease2.release()).toEqual({ appends: 1, bytes: 1 });
  const releasedAt = Date.now();

  const lease1 = await c1Acquire; // the retry (same seq, attempt 2)
  expect(c1GrantedAt).toBeGreaterThanOrEqual(releasedAt);
  expect(lease1.token).toBeGreaterThan(lease2.token);
  expect(faults.events.filter((e) => e.op === "acquire").map((e) => [e.attempt, e.action])).toEqual([[1, "dropRequest"]]);
  await c1.append(`file_${F}`, "A");
  expect(await lease1.release()).toEqual({ appends: 1, bytes: 1 });
  await expectFile(F, "BA");
});

test("3. reply lost: C1's grant reply is lost; its retry learns from the reply cache that it holds the lock: AB", async () => {
  const F = 3;
  const faults = new FaultInjector();
  faults.add({ op: "acquire", attempt: 1, action: { kind: "dropReply" } });
  const c1 = await client("s3-c1", { requestTimeoutMs: 800, faults });
  const c2 = await client("s3-c2");

  const c1Acquire = c1.acquire();
  // The server granted C1 (its reply is being dropped); C2 must queue behind.
  await until(async () => (await globalLock())?.holder?.client === c1.clientId, 5000, "C1 to hold global on the server");
  const granted = (await globalLock())!.holder!;
  const c2Acquire = c2.acquire();
  await queued(c2.clientId);

  const lease1 = await c1Acquire;
  expect(lease1.token).toBe(granted.token); // the same grant, answered from the cache, not a second one
  expect(faults.events.filter((e) => e.op === "acquire").map((e) => [e.attempt, e.action])).toEqual([[1, "dropReply"]]);
  await c1.append(`file_${F}`, "A");
  expect(await lease1.release()).toEqual({ appends: 1, bytes: 1 });

  const lease2 = await c2Acquire;
  expect(lease2.token).toBeGreaterThan(lease1.token);
  await c2.append(`file_${F}`, "B");
  expect(await lease2.release()).toEqual({ appends: 1, bytes: 1 });
  await expectFile(F, "AB");
});

test("4. duplicated release: a late copy of C1's release is ignored while C2 holds the lock: ABBA", async () => {
  const F = 4;
  const faults = new FaultInjector();
  // Attempt 1 of the release reaches the server 1.5 s late; C1 gives up on it after 0.7 s and retries.
  faults.add({ op: "release", attempt: 1, times: 1, action: { kind: "delayRequest", ms: 1500 } });
  const c1 = await client("s4-c1", { requestTimeoutMs: 700, firstAttemptTimeoutMs: 700, faults });
  const c2 = await client("s4-c2");
  const spy = await spyRequests();
  try {
    const lease1 = await c1.acquire();
    await c1.append(`file_${F}`, "A");
    const c2Acquire = c2.acquire();
    await queued(c2.clientId);
    // A fresh lease on the server, so the retry (at 0.7 s) lands well inside it.
    await lease1.renew();

    const started = Date.now();
    expect(await lease1.release()).toEqual({ appends: 1, bytes: 1 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(600); // answered by the retry, not attempt 1
    const lease2 = await c2Acquire;
    expect(lease2.token).toBeGreaterThan(lease1.token);

    // Wait for the late copy to reach the server while C2 holds the lock.
    const releases = () => spy.seen.filter((r) => r.op === "release" && r.client === c1.clientId);
    await until(() => releases().length >= 2, 5000, "the late release to arrive");
    expect(new Set(releases().map((r) => r.seq)).size).toBe(1); // the same request (same seq) twice
    await sleep(200); // let the leader handle it
    expect((await globalLock())?.holder).toMatchObject({ client: c2.clientId, token: lease2.token });
    expect((await kit.reader.read(`file_${F}`)).toString()).toBe("A"); // not committed twice

    await c2.append(`file_${F}`, "B");
    await c2.append(`file_${F}`, "B");
    expect(await lease2.release()).toEqual({ appends: 2, bytes: 2 });

    const again = await c1.acquire();
    await c1.append(`file_${F}`, "A");
    expect(await again.release()).toEqual({ appends: 1, bytes: 1 });
    expect(faults.events.map((e) => [e.op, e.attempt, e.action])).toEqual([["release", 1, "delayRequest"]]);
    await expectFile(F, "ABBA");
  } finally {
    spy.stop();
  }
});

test("5. lost request, then lost reply, of one append: applied exactly once: 1AB", async () => {
  const F = 5;
  const faults = new FaultInjector();
  // C1's second distinct append: attempt 1 never arrives; attempt 2 is applied but its reply is lost; attempt 3 is answered from the cache.
  faults.add({ op: "append", nth: 2, attempt: 1, action: { kind: "dropRequest" } });
  faults.add({ op: "append", nth: 2, attempt: 2, action: { kind: "dropReply" } });
  // Appends sent one by one: this scenario is about one append request.
  const c1 = await client("s5-c1", { requestTimeoutMs: 600, faults, logEachAppend: true });
  const c2 = await client("s5-c2");
  const spy = await spyRequests();
  try {
    const lease1 = await c1.acquire();
    const c2Acquire = c2.acquire();
    await queued(c2.clientId);
    expect(await c1.append(`file_${F}`, "1")).toEqual({ staged: { appends: 1, bytes: 1 } });
    expect(await c1.append(`file_${F}`, "A")).toEqual({ staged: { appends: 2, bytes: 2 } });
    expect(faults.events.filter((e) => e.op === "append").map((e) => [e.nth, e.attempt, e.action])).toEqual([
      [2, 1, "dropRequest"],
      [2, 2, "dropReply"],
    ]);
    const c1Appends = spy.seen.filter((r) => r.op === "append" && r.client === c1.clientId).map((r) => r.seq);
    // "1" arrived once; "A" (one seq) twice: attempts 2 and 3. Only one of them took effect:
    expect(c1Appends).toEqual([c1Appends[0], c1Appends[1], c1Appends[1]]);
    expect(c1Appends[1]).not.toBe(c1Appends[0]);
    expect((await globalLock())?.holder).toMatchObject({ client: c1.clientId, stagedAppends: 2, stagedBytes: 2 });
    expect(await lease1.release()).toEqual({ appends: 2, bytes: 2 });

    const lease2 = await c2Acquire;
    await c2.append(`file_${F}`, "B");
    expect(await lease2.release()).toEqual({ appends: 1, bytes: 1 });
    await expectFile(F, "1AB");
  } finally {
    spy.stop();
  }
});

/** The end of scenarios 6, 6b and 7 ("the rest as in 6"): C1 reacquires, appends "A" twice, releases; the file is BBAA. */
async function reacquireAndAppendAA(p: StallClient, F: number): Promise<void> {
  await p.ok("acquire");
  await p.ok("append", { file: `file_${F}`, data: "A" });
  await p.ok("append", { file: `file_${F}`, data: "A" });
  expect((await p.ok("release")).committed).toEqual({ appends: 2, bytes: 2 });
  await expectFile(F, "BBAA");
}

test("6. client stalls (SIGSTOP) before editing: its append gets LOCK_EXPIRED: BBAA", async () => {
  const F = 6;
  const { p } = await childClient("s6-c1");
  const c2 = await client("s6-c2");
  const g = await p.ok("acquire");
  const c2Acquire = c2.acquire();
  await queued(c2.clientId);

  p.pause(); // C1 freezes: no renewals, nothing
  const stoppedAt = Date.now();
  let lease2: Lease;
  try {
    lease2 = await c2Acquire; // granted once C1's lease ran out on the server
    const waited = Date.now() - stoppedAt;
    expect(waited).toBeLessThan(LEASE_MS + 2000);
    expect(lease2.token).toBeGreaterThan(g.token as number);
    await c2.append(`file_${F}`, "B");
  } finally {
    p.resume();
  }

  const r = await p.send("append", { file: `file_${F}`, data: "A" });
  expect(r.ok).toBe(false);
  expect(r.error?.codeName).toBe("LOCK_EXPIRED");
  // Whichever noticed first (the client's own deadline or the server's token check), it is LOCK_EXPIRED.
  await c2.append(`file_${F}`, "B");
  expect(await lease2.release()).toEqual({ appends: 2, bytes: 2 });

  await reacquireAndAppendAA(p, F);
});

test("6b. client stalls (busy loop) between its lease check and the send: the server refuses the late append: BBAA", async () => {
  const F = 10;
  // C1's appends go to the server one by one: this scenario is about such an append.
  const { p } = await childClient("s6b-c1", 1000, true);
  const c2 = await client("s6b-c2", { logEachAppend: true });
  const g = await p.ok("acquire");
  const c2Acquire = c2.acquire();
  await queued(c2.clientId);

  // C1 decides to append while its lease is valid; then its event loop is blocked for 3.5 s before the request leaves.
  const late = p.send("append", { file: `file_${F}`, data: "A", stallBeforeSendMs: 3500 });
  const lease2 = await c2Acquire;
  expect(lease2.token).toBeGreaterThan(g.token as number);
  await c2.append(`file_${F}`, "B");

  const r = await late;
  expect(r.ok).toBe(false);
  expect(r.sent).toBe(1); // it did go out ...
  expect(r.error).toMatchObject({ codeName: "LOCK_EXPIRED", fromServer: true }); // ... and the token check refused it
  expect((await globalLock())?.holder).toMatchObject({ client: c2.clientId, token: lease2.token, stagedAppends: 1 });

  await c2.append(`file_${F}`, "B");
  expect(await lease2.release()).toEqual({ appends: 2, bytes: 2 });
  await reacquireAndAppendAA(p, F);
});

test("7. client stalls (busy loop) after editing: its staged append is discarded: BBAA", async () => {
  const F = 7;
  const { p } = await childClient("s7-c1");
  const c2 = await client("s7-c2");
  await p.ok("acquire");
  expect((await p.ok("append", { file: `file_${F}`, data: "A" })).staged).toEqual({ appends: 1, bytes: 1 });
  const c2Acquire = c2.acquire();
  await queued(c2.clientId);

  const stall = p.ok("stall", { ms: 3500 }); // C1's event loop is blocked: no renewals
  const stalledAt = Date.now();
  const lease2 = await c2Acquire;
  expect(Date.now() - stalledAt).toBeLessThan(3500); // granted while C1 was still frozen
  await c2.append(`file_${F}`, "B");
  expect((await stall).stalledMs).toBeGreaterThanOrEqual(3500);

  // C1 wakes up: its section is gone. Committing it is refused, and so is appending more.
  const rel = await p.send("release");
  expect(rel.ok).toBe(false);
  expect(rel.error?.codeName).toBe("LOCK_EXPIRED");
  const app = await p.send("append", { file: `file_${F}`, data: "A" });
  expect(app.ok).toBe(false);
  expect(app.error?.codeName).toBe("LOCK_EXPIRED");
  expect(p.events.filter((e) => e.event === "lost").map((e) => e.codeName)).toEqual(["LOCK_EXPIRED"]);

  await c2.append(`file_${F}`, "B");
  expect(await lease2.release()).toEqual({ appends: 2, bytes: 2 });
  await reacquireAndAppendAA(p, F);
});

test("8. server crash with the lock free: C1's acquire retries until the nodes are back: AA1", async () => {
  const F = 8;
  const c1 = await client("s8-c1");
  const lease = await c1.acquire();
  await c1.append(`file_${F}`, "A");
  await c1.append(`file_${F}`, "A");
  expect(await lease.release()).toEqual({ appends: 2, bytes: 2 });

  await crashAllNodes();
  const started = Date.now();
  const acquiring = c1.acquire();
  let grantedEarly = false;
  void acquiring.then(() => (grantedEarly = true), () => undefined);
  await sleep(1000);
  expect(grantedEarly).toBe(false); // nobody to grant it
  await restartAllNodes();

  const again = await acquiring;
  const waited = Date.now() - started;
  expect(waited).toBeGreaterThanOrEqual(1000);
  expect(again.token).toBeGreaterThan(lease.token);
  await c1.append(`file_${F}`, "1");
  expect(await again.release()).toEqual({ appends: 1, bytes: 1 });
  await expectFile(F, "AA1");
});

test("9. server crash with the lock held: C2's append is retried across the crash and applied once: ABBA", async () => {
  const F = 9;
  const faults = new FaultInjector();
  const c1 = await client("s9-c1");
  // C2's appends go to the server one by one: this scenario is about a retried append.
  const c2 = await client("s9-c2", { requestTimeoutMs: 3000, faults, logEachAppend: true });
  const lease1 = await c1.acquire();
  await c1.append(`file_${F}`, "A");
  expect(await lease1.release()).toEqual({ appends: 1, bytes: 1 });

  // With a 2 s lease no holder survives an outage of 2+ s: the client cannot
  // confirm a renewal in time and declares the lease lost (see 9b). C2 asks
  // for the production default of 10 s, which is sized to ride out a
  // failover (design.md §10).
  const lease2 = await c2.acquire(undefined, { leaseMs: 10_000 });
  await c2.append(`file_${F}`, "B");
  // The next append is applied by the leader, but its reply is lost; then every node dies.
  faults.add({ op: "append", nth: 2, attempt: 1, action: { kind: "dropReply" } });
  const appending = c2.append(`file_${F}`, "B");
  await until(async () => (await globalLock())?.holder?.stagedAppends === 2, 5000, "the second B to be staged");
  await crashAllNodes();
  await sleep(1000);
  await restartAllNodes();

  // C2 retries (same seq) until a new leader answers from the replicated reply cache.
  expect(await appending).toEqual({ staged: { appends: 2, bytes: 2 } });
  expect((await globalLock())?.holder).toMatchObject({ client: c2.clientId, token: lease2.token, stagedAppends: 2, stagedBytes: 2 });
  expect(lease2.state).toBe("held");
  expect(await lease2.release()).toEqual({ appends: 2, bytes: 2 });

  const again = await c1.acquire();
  await c1.append(`file_${F}`, "A");
  expect(await again.release()).toEqual({ appends: 1, bytes: 1 });
  await expectFile(F, "ABBA");
});

test("9b. server crash longer than a 2 s lease: the holder's whole section is discarded, never half of it: AA", async () => {
  const F = 11;
  const c1 = await client("s9b-c1");
  const c2 = await client("s9b-c2", { requestTimeoutMs: 1000 });
  const lease1 = await c1.acquire();
  await c1.append(`file_${F}`, "A");
  expect(await lease1.release()).toEqual({ appends: 1, bytes: 1 });

  const lease2 = await c2.acquire();
  await c2.append(`file_${F}`, "B");
  await crashAllNodes();
  const crashedAt = Date.now();
  const appending = settle(c2.append(`file_${F}`, "B")); // retried through the outage
  await until(() => lease2.lost, LEASE_MS + 2000, "C2's lease to run out locally");
  expect(lease2.lostReason?.codeName).toBe("LOCK_EXPIRED");
  expect(Date.now() - crashedAt).toBeLessThan(LEASE_MS + 500);
  await sleep(3000 - (Date.now() - crashedAt)); // an outage longer than the lease
  await restartAllNodes();

  await appending; // whatever it came to, the section cannot be committed:
  const rel = await settle(lease2.release());
  expect(rel.ok).toBe(false);
  if (!rel.ok) expect(rel.error.codeName).toBe("LOCK_EXPIRED");

  const again = await c1.acquire(); // once the new leader expires C2's grant
  await c1.append(`file_${F}`, "A");
  expect(await again.release()).toEqual({ appends: 1, bytes: 1 });
  await expectFile(F, "AA");
});

test("all nodes agree on all files", async () => {
  await kit.cluster.expectFilesIdentical();
});
