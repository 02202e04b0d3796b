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
import { randomBytes } from "crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import type { DlmClient } from "../../src/client";
import { FILE_COUNT } from "../../src/protocol/files";
import type { Reply, StatusView } from "../../src/protocol/messages";
import { names } from "../../src/protocol/subjects";
import { sleep, startDlmCluster, tails, type DlmTestCluster } from "../kit/dlmCluster";

jest.setTimeout(120_000);

const JOURNAL = "file_0";
const JOURNAL_INDEX = 0;

interface CommittedSection {
  token: number;
  text: string;
}

let c: DlmTestCluster;
const committed: CommittedSection[] = [];

function expectedJournal(): string {
  return [...committed]
    .sort((a, b) => a.token - b.token)
    .map((s) => s.text)
    .join("");
}

/** One critical section: acquire global, `n` appends to the journal (and one to `file`), release; recorded in the model. */
async function section(client: DlmClient, tag: string, n: number, file = JOURNAL): Promise<CommittedSection> {
  const lease = await client.acquire("global");
  let text = "";
  for (let i = 0; i < n; i++) {
    const line = `${tag} t=${lease.token} i=${i}\n`;
    await client.append(JOURNAL, line);
    text += line;
  }
  let extra = 0;
  if (file !== JOURNAL) {
    await client.append(file, `${tag} t=${lease.token}\n`);
    extra = 1;
  }
  const result = await lease.release();
  expect(result.appends).toBe(n + extra);
  const s = { token: lease.token, text };
  committed.push(s);
  return s;
}

/** The leader's status view; retried through NOT_LEADER, timeouts and no responders. */
async function status(timeoutMs = 30_000): Promise<StatusView> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    try {
      const reply = await c.rawRequest({ op: "status" }, 1000);
      if (reply.ok && reply.view) return reply.view;
      last = JSON.stringify(reply);
    } catch (e) {
      last = (e as Error).message;
    }
    await sleep(100);
  }
  throw new Error(`no status within ${timeoutMs} ms: ${last}`);
}

/** Every NATS server and dlm node running, JetStream ready, nodes caught up. */
async function allRunning(): Promise<void> {
  await Promise.all(c.natsServers.map((s) => (s.running ? Promise.resolve() : s.restart())));
  await Promise.all(c.natsServers.map((s) => s.waitJetStreamReady(60_000)));
  await Promise.all(c.nodes.map((n) => (n.running ? Promise.resolve() : n.restart())));
  await c.waitCaughtUp(60_000);
}

/** The end of every scenario: everything up and caught up, files identical, the journal as the model says. */
async function checkEverything(): Promise<void> {
  await allRunning();
  await c.expectFilesIdentical(60_000);
  expect(c.fileOn(0, JOURNAL_INDEX).toString("utf8")).toBe(expectedJournal());
  const view = await status();
  for (let f = 0; f < FILE_COUNT; f++) expect(view.fileLengths[f]).toBe(c.fileOn(0, f).length);
}

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

/** A session spoken in the raw wire protocol: no renewals, no heartbeats, full control. */
class RawSession {
  readonly id = `raw${randomBytes(8).toString("hex")}`;
  private seq = 0;
  private keepalive: NodeJS.Timeout | undefined;
  constructor(private readonly cluster: DlmTestCluster) {}

  /** Pings every second so the session does not expire. */
  keepAlive(): void {
    this.keepalive ??= setInterval(() => {
      this.cluster.rawRequest({ op: "ping", client: this.id }, 900).catch(() => undefined);
    }, 1000);
  }

  stopKeepAlive(): void {
    if (this.keepalive) clearInterval(this.keepalive);
    this.keepalive = undefined;
  }

  /** Sends one logged request, retrying it (same seq) through timeouts, no responders and NOT_LEADER. */
  async call(op: string, extra: object = {}, timeoutMs = 60_000): Promise<Reply> {
    const seq = ++this.seq;
    const deadline = Date.now() + timeoutMs;
    let last = "";
    while (Date.now() < deadline) {
      try {
        const reply = await this.cluster.rawRequest({ op, client: this.id, seq, ack: 0, ...extra }, 1000);
        if (reply.ok || reply.error !== "NOT_LEADER") return reply;
        last = JSON.stringify(reply);
      } catch (e) {
        last = (e as Error).message;
      }
      await sleep(100);
    }
    throw new Error(`${op} (seq ${seq}) got no answer within ${timeoutMs} ms: ${last}`);
  }
}

/** A test whose failure message ends with the last lines of every node's output. */
function scenario(name: string, fn: () => Promise<void>, timeoutMs?: number): void {
  test(
    name,
    async () => {
      try {
        await fn();
      } catch (e) {
        if (e instanceof Error && c) e.message += `\n${tails(c.nodes, 40)}`;
        throw e;
      }
    },
    timeoutMs,
  );
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
    await section(client, "N-before", 3);
    // Start with the server that leads the log stream: the hardest one to lose.
    const first = await streamLeader();
    const order = [...c.natsServers].sort((a, b) => Number(b.name === first) - Number(a.name === first));
    expect(order[0].name).toBe(first);
    for (const server of order) {
      await server.kill();
      // Service continues on the other two: full critical sections, reads, status.
      for (let i = 0; i < 3; i++) await section(client, `N-${server.name}-down-${i}`, 3, `file_${1 + (i % 3)}`);
      const read = await client.read(JOURNAL);
      expect(read.toString("utf8")).toBe(expectedJournal());
      const view = await status();
      expect(view.leader).not.toBeNull();
      // The log's raft group lives on without the dead server.
      expect(await streamLeader()).not.toBe(server.name);
      await server.restart();
      await server.waitJetStreamReady(60_000);
      await section(client, `N-${server.name}-back`, 2);
      await checkEverything();
    }
    await client.close();
  });

  scenario("everything SIGKILLed (all nodes and all NATS servers) and restarted: committed bytes and the lock table come back", async () => {
    const client = await c.client();
    await section(client, "X-before", 3, "file_7");
    await client.close();

    // The holder speaks the wire protocol and never renews: its lease runs
    // out during the outage, and only the new leader's grace period keeps it.
    const holder = new RawSession(c);
    expect((await holder.call("hello")).ok).toBe(true);
    const acq = await holder.call("acquire", { lock: "global", leaseMs: 3000 });
    expect(acq.ok && acq.status).toBe("granted");
    const token = acq.ok ? acq.lease!.token : -1;
    let text = "";
    for (let i = 0; i < 4; i++) {
      const line = `X-holder t=${token} i=${i}\n`;
      const r = await holder.call("append", { file: JOURNAL, data: Buffer.from(line).toString("base64"), token });
      expect(r.ok).toBe(true);
      text += line;
    }
    await c.waitCaughtUp(30_000);
    const filesBefore = Array.from({ length: FILE_COUNT }, (_, f) => c.fileOn(0, f));
    const viewBefore = await status();

    await Promise.all([...c.nodes.map((n) => n.kill("SIGKILL")), ...c.natsServers.map((s) => s.kill())]);
    holder.keepAlive(); // pings fail during the outage; after it they keep the session alive
    await sleep(3500); // longer than the holder's lease
    await Promise.all(c.natsServers.map((s) => s.restart()));
    await Promise.all(c.natsServers.map((s) => s.waitJetStreamReady(60_000)));
    await Promise.all(c.nodes.map((n) => n.restart()));
    const fresh = await c.waitForLeader(90_000);
    expect(fresh.epoch).toBeGreaterThan(viewBefore.epoch);

    const view = await status();
    const before = viewBefore.locks.find((l) => l.name === "global")!;
    const after = view.locks.find((l) => l.name === "global")!;
    expect(after.holder?.client).toBe(holder.id);
    expect(after.holder?.token).toBe(token);
    expect(after.holder?.stagedAppends).toBe(4);
    expect(after.queue).toEqual(before.queue);
    // Grace period: the lease elapsed during the outage, yet runs from the takeover.
    expect(before.holder!.expiresAt).toBeLessThan(view.now);
    expect(after.holder!.expiresAt).toBeGreaterThan(view.now);
    expect(view.nextToken).toBe(viewBefore.nextToken);
    expect(view.fileLengths).toEqual(viewBefore.fileLengths);

    await c.waitCaughtUp(60_000);
    for (let i = 0; i < c.nodes.length; i++) {
      for (let f = 0; f < FILE_COUNT; f++) expect(c.fileOn(i, f).equals(filesBefore[f])).toBe(true);
    }

    const rel = await holder.call("release", { lock: "global", token });
    expect(rel.ok && rel.committed).toEqual({ appends: 4, bytes: Buffer.byteLength(text) });
    committed.push({ token, text });
    holder.stopKeepAlive();
    expect((await holder.call("goodbye")).ok).toBe(true);

    const again = await c.client();
    const s = await section(again, "X-after", 2);
    expect(s.token).toBeGreaterThan(token);
    await checkEverything();
    await again.close();
  });

  scenario("fencing tokens strictly increase across every failure", async () => {
    await checkEverything();
    const tokens: number[] = [];
    for (const line of c.fileOn(0, JOURNAL_INDEX).toString("utf8").split("\n")) {
      if (!line) continue;
      const m = / t=(\d+) /.exec(line);
      if (!m) throw new Error(`journal line without a token: ${JSON.stringify(line)}`);
      const t = Number(m[1]);
      if (tokens[tokens.length - 1] !== t) tokens.push(t);
    }
    expect(tokens.length).toBeGreaterThan(10);
    for (let i = 1; i < tokens.length; i++) expect(tokens[i]).toBeGreaterThan(tokens[i - 1]);
    expect(tokens).toEqual(committed.map((s) => s.token).sort((a, b) => a - b));
  });
});
