/**
 * NATS failures with real processes: a three-server JetStream cluster (the
 * log stream and the leader bucket have 3 replicas), three dlm node
 * processes, lock lease 2 s, leader lease 2 s. One cluster for the whole
 * file; every scenario ends with all servers and nodes running, all nodes
 * caught up, and all 100 files identical byte for byte on every node.
 *
 * As in failover.test.ts, every critical section appends lines naming its
 * fencing token to the journal (file_0), and the journal must equal the
 * committed sections in token order exactly.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { names } from "../../src/protocol/subjects";
import { sleep, startDlmCluster, type DlmTestCluster } from "../kit/dlmCluster";
import { JOURNAL, JOURNAL_INDEX, Journal, journalTokens } from "../kit/journal";
import { holdThroughOutage } from "../kit/outage";
import { checkEverything as checkAll, leaderStatus, type RecoveryOptions } from "../kit/recovery";
import { scenarioWithTails } from "../kit/scenario";

jest.setTimeout(120_000);

/** A NATS cluster needs its meta leader again after a restart, and everything comes back more slowly than on one server. */
const recovery: RecoveryOptions = { timeoutMs: 60_000, statusTimeoutMs: 30_000, waitJetStream: true };

let c: DlmTestCluster;
const journal = new Journal();
const status = () => leaderStatus(c, recovery.statusTimeoutMs);
/** The end of every scenario: everything up and caught up, files identical, the journal as the model says. */
const checkEverything = () => checkAll(c, journal, recovery);
const scenario = scenarioWithTails(() => c);

/**
 * The name of the NATS server that leads the log stream's raft group. The
 * JetStream API needs a meta leader; right after a server dies one may
 * still be being elected, so ask until one answers.
 */
async function streamLeader(timeoutMs = 30_000): Promise<string | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const jsm = await jetstreamManager(c.nc, { timeout: 2000 });
      const info = await jsm.streams.info(names().streamName);
      if (info.cluster?.leader) return info.cluster.leader;
    } catch (e) {
      if (Date.now() > deadline) throw e;
    }
    if (Date.now() > deadline) return undefined;
    await sleep(200);
  }
}

beforeAll(async () => {
  c = await startDlmCluster({ nodes: 3, nats: 3, leaseMs: 2000 });
  await c.waitForLeader(60_000);
  await c.waitCaughtUp(60_000);
}, 120_000);

afterAll(async () => {
  await c?.close();
});

describe("NATS failures: 3 dlm nodes on a 3-server JetStream cluster", () => {
  scenario("one of three NATS servers killed, each in turn: acquire/append/release keep working, then it comes back", async () => {
    const client = await c.client();
    await journal.section(client, "N-before", 3);
    // Start with the server that leads the log stream: the hardest one to lose.
    const first = await streamLeader();
    const order = [...c.natsServers].sort((a, b) => Number(b.name === first) - Number(a.name === first));
    expect(order[0].name).toBe(first);
    for (const server of order) {
      await server.kill();
      // Service continues on the other two: full critical sections, reads, status.
      for (let i = 0; i < 3; i++) await journal.section(client, `N-${server.name}-down-${i}`, 3, { alsoTo: `file_${1 + (i % 3)}` });
      const read = await client.read(JOURNAL);
      expect(read.toString("utf8")).toBe(journal.expected());
      const view = await status();
      expect(view.leader).not.toBeNull();
      // The log's raft group lives on without the dead server.
      expect(await streamLeader()).not.toBe(server.name);
      await server.restart();
      await server.waitJetStreamReady(60_000);
      await journal.section(client, `N-${server.name}-back`, 2);
      await checkEverything();
    }
    await client.close();
  });

  scenario("everything SIGKILLed (all nodes and all NATS servers) and restarted: committed bytes and the lock table come back", async () => {
    const client = await c.client();
    await journal.section(client, "X-before", 3, { alsoTo: "file_7" });
    await client.close();

    // A holder that never renews keeps its lock through an outage longer
    // than its lease, by the new leader's extension for the time nobody led.
    const token = await holdThroughOutage(c, journal, recovery, { leaderTimeoutMs: 90_000, callTimeoutMs: 60_000 });

    const again = await c.client();
    const s = await journal.section(again, "X-after", 2);
    expect(s.token).toBeGreaterThan(token);
    await checkEverything();
    await again.close();
  });

  scenario("fencing tokens strictly increase across every failure", async () => {
    await checkEverything();
    const tokens = journalTokens(c.fileOn(0, JOURNAL_INDEX).toString("utf8"));
    expect(tokens.length).toBeGreaterThan(10);
    for (let i = 1; i < tokens.length; i++) expect(tokens[i]).toBeGreaterThan(tokens[i - 1]);
    expect(tokens).toEqual(journal.committedTokens());
  });
});
