/**
 * The demo `dlm up --demo` runs: two clients contend for the `global` lock
 * and append to file_1, showing FIFO hand-over, atomic sections, fencing
 * and, with standby nodes, a leader killed mid-section.
 *
 * It can be interrupted (Ctrl-C in `dlm up`): the signal closes both
 * clients, which rejects whatever they wait for, and no node is killed or
 * restarted after it, so the demo settles within moments and `dlm up` can
 * stop the nodes knowing the demo will not start one again.
 */
import type { ManagedProcess } from "../local/processes";
import { connect, isDlmError, type DlmClient, type NatsPassThroughOptions } from "../client";
import { untilAborted } from "../util/untilAborted";

export interface DemoOptions {
  servers: string[];
  /** Credentials for the demo's clients (those of the local nats-server). */
  nats?: NatsPassThroughOptions;
  prefix: string;
  nodes: ManagedProcess[];
  say(line: string): void;
  /** Resolves once the node answers on the nodes' info subject. */
  waitNodeVisible(nodeId: string): Promise<void>;
  /** Stops the demo (see the file's comment); it then rejects. */
  signal?: AbortSignal;
}

const FILE = "file_1";

export async function runDemo({ servers, nats, prefix, nodes, say, waitNodeVisible, signal }: DemoOptions): Promise<void> {
  const clients: DlmClient[] = [];
  const closeAll = (): void => {
    for (const c of clients) void c.close().catch(() => undefined);
  };
  const open = async (name: string): Promise<DlmClient> => {
    // A client that connects after the abort is closed as it arrives.
    const client = await untilAborted(connect({ ...nats, servers, prefix, name, unavailableTimeoutMs: 60_000 }), signal, (late) => void late.close().catch(() => undefined));
    clients.push(client);
    return client;
  };
  signal?.addEventListener("abort", closeAll, { once: true });
  // Past an interrupt the demo's story is over: a step that was under way
  // must not report as if it went on.
  const tell = (line: string): void => {
    if (!signal?.aborted) say(line);
  };
  try {
    await demo(open, nodes, tell, waitNodeVisible, signal);
  } finally {
    signal?.removeEventListener("abort", closeAll);
    closeAll();
  }
}

async function demo(
  open: (name: string) => Promise<DlmClient>,
  nodes: ManagedProcess[],
  say: (line: string) => void,
  waitNodeVisible: (nodeId: string) => Promise<void>,
  signal: AbortSignal | undefined,
): Promise<void> {
  say(`demo: clients A and B contend for the lock "global" and append to ${FILE}`);
  const a = await open("demo-A");
  const b = await open("demo-B");
  say(`A: connected (session ${a.clientId})`);
  say(`B: connected (session ${b.clientId})`);
  try {
    const leaseA = await a.acquire("global", { leaseMs: 5000 });
    say(`A: acquire global -> granted, fencing token ${leaseA.token}`);
    const started = Date.now();
    const waitingB = b.acquire("global", { leaseMs: 5000 });
    // Awaited below; should A's steps fail (or Ctrl-C close the clients)
    // first, its rejection must not go unhandled, which ends the process.
    waitingB.catch(() => undefined);
    await sleep(100);
    say("B: acquire global -> waiting in the queue (A holds it)");
    await a.append(FILE, "A: line 1\n");
    await a.append(FILE, "A: line 2\n");
    say(`A: appended 2 lines to ${FILE} (staged: they reach the file together, on release)`);
    say(`   ${FILE} before A releases: ${JSON.stringify((await a.read(FILE)).toString())}`);
    const committedA = await a.release(leaseA);
    say(`A: release -> committed ${committedA.appends} appends (${committedA.bytes} bytes)`);
    const leaseB = await waitingB;
    say(`B: granted after ${Date.now() - started} ms, fencing token ${leaseB.token}`);
    await b.append(FILE, "B: line 1\n");
    try {
      await a.append(FILE, "A: stale write\n", { lease: leaseA });
      say("A: stale append was accepted (this must never happen)");
      throw new Error("fencing failed: an append under an old token was accepted");
    } catch (err) {
      if (!isDlmError(err)) throw err;
      say(`A: append with its old token ${leaseA.token} -> refused ${err.codeName} (fencing at the resource)`);
    }
    const committedB = await b.release(leaseB);
    say(`B: release -> committed ${committedB.appends} append`);

    if (nodes.length > 1) await failover(a, nodes, say, waitNodeVisible, signal);

    say(`${FILE} now holds:`);
    for (const line of (await b.read(FILE)).toString().split("\n").filter(Boolean)) say(`   ${line}`);
  } finally {
    // Interrupted, the clients are already closing; there is nothing to report.
    if (!signal?.aborted) {
      say(`A: close -> ${(await a.close()) ?? "closed"}`);
      say(`B: close -> ${(await b.close()) ?? "closed"}`);
    }
  }
}

/** Kills the leader in the middle of A's critical section and shows nothing is lost. */
async function failover(
  a: DlmClient,
  nodes: ManagedProcess[],
  say: (line: string) => void,
  waitNodeVisible: (nodeId: string) => Promise<void>,
  signal: AbortSignal | undefined,
): Promise<void> {
  const lease = await a.acquire("global", { leaseMs: 10_000 });
  await a.append(FILE, "A: before failover\n");
  const leaderId = (await a.status()).leader;
  const leader = nodes.find((n) => n.name === leaderId);
  if (!leader) throw new Error(`leader ${String(leaderId)} is not one of this deployment's nodes`);
  // Past an interrupt no node is killed or restarted: dlm up is stopping them.
  signal?.throwIfAborted();
  say(`failover: A holds token ${lease.token} with 1 staged append; killing the leader ${leaderId} (SIGKILL)`);
  const killedAt = Date.now();
  await leader.kill("SIGKILL");
  // The append stays in the client until the release; asking for the
  // status shows when a new leader answers.
  await a.append(FILE, "A: after failover\n");
  const status = await a.status();
  const pauseMs = Date.now() - killedAt;
  say(`   new leader ${status.leader} (epoch ${status.epoch}) answered ${pauseMs} ms after the kill`);
  const committed = await a.release(lease);
  say(`   A: release -> committed ${committed.appends} appends: the section survived the failover whole`);
  signal?.throwIfAborted();
  await leader.restart();
  await waitNodeVisible(leaderId!);
  say(`   ${leaderId} restarted, replayed the log and follows the new leader`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
