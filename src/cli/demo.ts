/**
 * The demo `dlm up --demo` runs: two clients contend for the `global` lock
 * and append to file_1, showing FIFO hand-over, atomic sections, fencing
 * and, with standby nodes, a leader killed mid-section.
 */
import type { ManagedProcess } from "../local/processes";
import { connect, isDlmError, type DlmClient, type NatsPassThroughOptions } from "../client";

export interface DemoOptions {
  servers: string[];
  /** Credentials for the demo's clients (those of the local nats-server). */
  nats?: NatsPassThroughOptions;
  prefix: string;
  nodes: ManagedProcess[];
  say(line: string): void;
  /** Resolves once the node answers on the nodes' info subject. */
  waitNodeVisible(nodeId: string): Promise<void>;
}

const FILE = "file_1";

export async function runDemo({ servers, nats, prefix, nodes, say, waitNodeVisible }: DemoOptions): Promise<void> {
  const open = (name: string): Promise<DlmClient> => connect({ ...nats, servers, prefix, name, unavailableTimeoutMs: 60_000 });
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

    if (nodes.length > 1) await failover(a, nodes, say, waitNodeVisible);

    say(`${FILE} now holds:`);
    for (const line of (await b.read(FILE)).toString().split("\n").filter(Boolean)) say(`   ${line}`);
  } finally {
    say(`A: close -> ${(await a.close()) ?? "closed"}`);
    say(`B: close -> ${(await b.close()) ?? "closed"}`);
  }
}

/** Kills the leader in the middle of A's critical section and shows nothing is lost. */
async function failover(
  a: DlmClient,
  nodes: ManagedProcess[],
  say: (line: string) => void,
  waitNodeVisible: (nodeId: string) => Promise<void>,
): Promise<void> {
  const lease = await a.acquire("global", { leaseMs: 10_000 });
  await a.append(FILE, "A: before failover\n");
  const leaderId = (await a.status()).leader;
  const leader = nodes.find((n) => n.name === leaderId);
  if (!leader) throw new Error(`leader ${String(leaderId)} is not one of this deployment's nodes`);
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
  await leader.restart();
  await waitNodeVisible(leaderId!);
  say(`   ${leaderId} restarted, replayed the log and follows the new leader`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
