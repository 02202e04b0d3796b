/**
 * Network partitions on real processes: three nats-servers whose routes
 * each go through a TCP proxy, three dlm nodes each pinned to one server
 * through proxies of their own, and three worker clients, worker k pinned
 * to server k through its own proxy, looping critical sections on "global"
 * (test/kit/sectionWorkers.ts). Lock lease 2 s, leader lease 2 s. The
 * scenarios run in sequence on the one cluster:
 *
 * 1. the leader cut off from NATS;
 * 2. a nats-server in the minority (its routes cut), the leader elsewhere;
 * 3. the leader's nats-server cut off from its peers while its clients and
 *    the leader stay connected to it;
 * 4. a holder cut off past its lease, then healed;
 * 5. asymmetric cuts: a holder that hears nothing back, a leader that hears
 *    nothing back, and one route that carries bytes one way only.
 *
 * Each ends, once healed, with the usual checks: every node running and
 * caught up, all 100 files identical on every node, the journal holding
 * exactly the sections whose release was acknowledged (plus, whole or not
 * at all, those whose release outcome is unknown), tokens increasing, and
 * the fence: no append or release under a token was acknowledged after a
 * greater token had been seen granted.
 *
 * Liveness: while the fault lasts, the workers that still reach a majority
 * must commit once a new leader exists. How long the first commit took is
 * printed; the bound asserted is generous (see FIRST_COMMIT_MS) because a
 * deaf or frozen leader is only stopped from swallowing requests by the
 * server-side work on that (issue 9), not by anything this test controls.
 */
import type { DlmClient } from "../../src/client";
import { sleep, startDlmCluster, type DlmTestCluster } from "../kit/dlmCluster";
import { JOURNAL_INDEX } from "../kit/journal";
import { readLogEntries } from "../kit/logEntries";
import { scenarioWithTails } from "../kit/scenario";
import { SectionWorkers } from "../kit/sectionWorkers";
import { until } from "../kit/wait";

jest.setTimeout(120_000);

const LEASE_MS = 2000;
/** How long each fault is held. */
const FAULT_MS = 8000;
/** The longest the surviving workers may go without a commit once a fault starts. */
const FIRST_COMMIT_MS = 20_000;
/** The holder's file: workers write only to the journal (file_0). */
const HOLDER_FILE = "file_1";

let c: DlmTestCluster;
let workers: SectionWorkers;
const scenario = scenarioWithTails(() => c);

beforeAll(async () => {
  c = await startDlmCluster({ nodes: 3, nats: 3, proxied: true, pinNodes: true, routeProxies: true, leaseMs: LEASE_MS });
  await c.waitForLeader(60_000);
  const clients: DlmClient[] = [];
  for (let k = 0; k < 3; k++) clients.push((await c.proxiedClient({}, [k])).client);
  workers = new SectionWorkers(clients, { lines: 2 });
  await workers.stop();
}, 120_000);

afterAll(async () => {
  c?.routes?.heal();
  for (const l of c?.links ?? []) l.heal();
  await workers?.stop();
  await c?.close();
});

function indexOfNode(id: string): number {
  const i = c.nodes.findIndex((n) => n.name === `dlm-${id}`);
  if (i < 0) throw new Error(`no node ${id}`);
  return i;
}

async function leader(notId?: string): Promise<{ id: string; index: number; server: number }> {
  const l = await c.waitForLeader(30_000, notId);
  const index = indexOfNode(l.id);
  return { id: l.id, index, server: c.serverOf(index)! };
}

/** The nats-server the test's own connection is on (its status requests go there). */
function testServer(): number | undefined {
  const name = c.nc.info?.server_name;
  return name ? c.natsServers.findIndex((s) => s.name === name) : undefined;
}

/**
 * Starts the workers and waits for them to commit, on a cluster whose
 * JetStream is ready on every server, so a fault starts under load and
 * after the one before it has healed.
 */
async function underLoad(): Promise<void> {
  await Promise.all(c.natsServers.filter((s) => s.running).map((s) => s.waitJetStreamReady(60_000)));
  workers.resume();
  const before = workers.committed();
  await until(() => workers.committed() >= before + 3, 30_000, "the workers to commit before the fault");
}

/** Waits for `workerIds` to commit once after `since`; returns how long after `since` that was. */
async function firstCommitAfter(since: number, workerIds: number[], what: string): Promise<number> {
  await until(() => workers.committedSince(since, workerIds) > 0, FIRST_COMMIT_MS, `a commit by workers ${workerIds} ${what}`);
  const first = Math.min(
    ...workers.sections.filter((s) => s.outcome === "committed" && s.endedAt >= since && workerIds.includes(s.worker)).map((s) => s.endedAt),
  );
  return Math.round(first - since);
}

/** Heal everything, stop the workers, and run the usual checks. */
async function healAndCheck(label: string): Promise<void> {
  c.routes!.heal();
  for (const l of c.links) l.heal();
  const healedAt = performance.now();
  const settled = await leader();
  console.log(`${label}: leader ${settled.id} answers ${Math.round(performance.now() - healedAt)} ms after the heal`);
  // Every worker commits again, also the ones that were cut off.
  for (let k = 0; k < 3; k++) await firstCommitAfter(healedAt, [k], `(worker ${k}) after the heal`);
  await workers.stop();
  expect(c.nodes.every((n) => n.running)).toBe(true);
  await c.expectFilesIdentical(30_000);
  expect(workers.check(c.fileOn(0, JOURNAL_INDEX).toString("utf8"))).toEqual([]);
  console.log(`${label}: ${workers.summary()}`);
}

/** Every command in the log. */
async function loggedCommands(): Promise<Array<Record<string, unknown>>> {
  return (await readLogEntries(c.nc, 3)).flatMap(({ entry }) => entry.cmds as unknown as Array<Record<string, unknown>>);
}

scenario("the leader cut off from NATS: a new leader serves, the old one rejoins as a follower", async () => {
  await underLoad();
  const old = await leader();
  const t0 = performance.now();
  c.links[old.index]!.cut();
  const firstMs = await firstCommitAfter(t0, [0, 1, 2], "with the leader cut off");
  const next = await leader(old.id);
  console.log(`leader ${old.id} cut off: ${next.id} leads; first commit ${firstMs} ms after the cut`);
  await sleep(Math.max(0, FAULT_MS - (performance.now() - t0)));
  await healAndCheck("leader cut off");
});

scenario("a nats-server in the minority: clients of the other two keep committing", async () => {
  await underLoad();
  const l = await leader();
  const candidates = [0, 1, 2].filter((s) => s !== l.server);
  const k = candidates.find((s) => s !== testServer()) ?? candidates[0]!;
  const t0 = performance.now();
  c.routes!.isolate(k);
  const others = [0, 1, 2].filter((s) => s !== k);
  const firstMs = await firstCommitAfter(t0, others, `with nats-server ${k} in the minority`);
  console.log(`nats-server ${k} in the minority (leader on ${l.server}): first commit by workers ${others} ${firstMs} ms after the cut`);
  await sleep(Math.max(0, FAULT_MS - (performance.now() - t0)));
  // The cut is real: the worker behind server k reaches no leader (a commit
  // in flight at the cut may still land, hence the first 2 s are left out).
  expect(workers.committedSince(t0 + 2000, [k])).toBe(0);
  await healAndCheck("minority server");
});

scenario("the leader's nats-server cut off from its peers while its clients stay connected to it", async () => {
  await underLoad();
  const old = await leader();
  const s = old.server;
  const t0 = performance.now();
  c.routes!.isolate(s);
  const others = [0, 1, 2].filter((x) => x !== s);
  const firstMs = await firstCommitAfter(t0, others, `with the leader's nats-server ${s} isolated`);
  console.log(`leader ${old.id}'s nats-server ${s} isolated: first commit by workers ${others} ${firstMs} ms after the cut`);
  await sleep(Math.max(0, FAULT_MS + 2000 - (performance.now() - t0)));
  // Nothing commits through the isolated server: the old leader on it can
  // no longer append (the log needs a majority), whatever it still receives.
  expect(workers.committedSince(t0 + 2000, [s])).toBe(0);
  await healAndCheck("leader's server isolated");
});

scenario("a holder cut off past its lease and healed: its section is discarded, later calls say LOCK_EXPIRED, it acquires again", async () => {
  const { client: holder, link } = await c.proxiedClient();
  const lease = await holder.acquire("global", { leaseMs: LEASE_MS });
  await holder.append(HOLDER_FILE, `holder t=${lease.token} cut\n`);
  workers.resume(); // the workers queue behind the holder
  const t0 = performance.now();
  link.cut();
  await until(() => lease.lost, LEASE_MS + 1000, "the holder to declare its lease lost");
  expect(lease.lostReason?.codeName).toBe("LOCK_EXPIRED");
  const firstMs = await firstCommitAfter(t0, [0, 1, 2], "after the cut-off holder's lease ran out");
  console.log(`holder cut off: lost after ${Math.round(performance.now() - t0)} ms; first worker commit ${firstMs} ms after the cut`);
  await sleep(Math.max(0, LEASE_MS + 1000 - (performance.now() - t0)));
  link.heal();
  await expect(holder.append(HOLDER_FILE, "after\n")).rejects.toMatchObject({ codeName: "LOCK_EXPIRED" });
  await expect(holder.release()).rejects.toMatchObject({ codeName: "LOCK_EXPIRED" });
  await expect(lease.release()).rejects.toMatchObject({ codeName: "LOCK_EXPIRED" });
  const again = await holder.acquire("global", { leaseMs: LEASE_MS });
  expect(again.token).toBeGreaterThan(lease.token);
  await holder.append(HOLDER_FILE, `holder t=${again.token} again\n`);
  await again.release();
  await healAndCheck("holder cut off");
  expect(c.fileOn(0, 1).toString("utf8")).toBe(`holder t=${again.token} again\n`);
  await holder.close();
});

scenario("asymmetric cuts: a holder that hears nothing back, a deaf leader, a one-way route", async () => {
  // (a) The holder's requests reach the server, the replies do not: its
  // renewals keep the grant alive on the server until the client declares
  // the lease lost by its own clock and abandons it. Its appends are logged
  // one by one (logEachAppend), so that one is in flight at the loss: a
  // locally staged append sends nothing that could be.
  const { client: holder, link } = await c.proxiedClient({ logEachAppend: true });
  const lease = await holder.acquire("global", { leaseMs: LEASE_MS });
  await holder.append(HOLDER_FILE, `holder t=${lease.token} deafened\n`);
  workers.resume();
  const t0 = performance.now();
  link.block("toClient");
  const inFlight = holder.append(HOLDER_FILE, `holder t=${lease.token} in flight\n`);
  await expect(inFlight).rejects.toMatchObject({ codeName: "LOCK_EXPIRED" });
  expect(lease.lost).toBe(true);
  const firstMs = await firstCommitAfter(t0, [0, 1, 2], "after the deafened holder gave its lease up");
  console.log(`holder deafened: first worker commit ${firstMs} ms after the one-way cut`);
  link.heal();
  // The grant ended by the holder's abandon (the server had renewed it).
  const abandons = (await loggedCommands()).filter((cmd) => cmd.type === "abandon" && cmd.token === lease.token);
  expect(abandons).toHaveLength(1);
  const again = await holder.acquire("global", { leaseMs: LEASE_MS });
  await again.release();
  await holder.close();

  // (b) The leader hears nothing back (its appends and KV renewals get no
  // answer): it must step down, and a new leader must serve.
  const old = await leader();
  const t1 = performance.now();
  c.links[old.index]!.block("toClient");
  const firstAfterDeaf = await firstCommitAfter(t1, [0, 1, 2], "with the leader deafened");
  console.log(`leader ${old.id} deafened: first commit ${firstAfterDeaf} ms after the one-way cut`);
  await sleep(Math.max(0, FAULT_MS - (performance.now() - t1)));
  c.links[old.index]!.heal();

  // (c) One route carries bytes one way only: from the leader's server to
  // another, nothing gets back. It starts, like the faults of the other
  // scenarios, from a recovered cluster under load (underLoad), so the time
  // measured is the one-way route's alone. Once, in a full-suite run, (c)
  // began right after (b) healed and got no commit within 20 s, the nodes'
  // logs showing JetStream itself unavailable ("jetstream is not enabled",
  // appends unanswered).
  await underLoad();
  const l = await leader();
  const other = (l.server + 1) % 3;
  const t2 = performance.now();
  c.routes!.block(other, l.server);
  const firstAfterRoute = await firstCommitAfter(t2, [0, 1, 2].filter((x) => x !== other), "with a one-way route");
  console.log(`route ${other} -> ${l.server} blocked one way: first commit ${firstAfterRoute} ms after the cut`);
  await sleep(Math.max(0, FAULT_MS - (performance.now() - t2)));
  await healAndCheck("asymmetric");
  expect(c.fileOn(0, 1).toString("utf8")).not.toMatch(/deafened|in flight/);
});
