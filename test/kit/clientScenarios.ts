/**
 * The harness of the client-failure tests (faults, clientCrash): one cluster
 * of three dlm nodes on one nats-server, a reader client, and per scenario
 * clients in this process and client processes (test/support/stallClient.ts)
 * that are closed / killed after it.
 *
 * The test file wires the hooks itself:
 *
 *   const kit = new ClientScenarios({ leaseMs, sessionTimeoutMs });
 *   const { client, childClient, until, globalLock, expectFile } = kit;
 *   beforeAll(() => kit.start(), 60_000);
 *   afterAll(() => kit.close());
 *   beforeEach(() => kit.lockFree());
 *   afterEach(() => kit.closeOpened());
 *
 * The helpers are arrow functions, hence the destructuring; the cluster and
 * the reader are `kit.cluster` and `kit.reader` once start() has run.
 */
import type { ClientOptions, DlmClient } from "../../src/client";
import { StallClient } from "../support/stallClient";
import { startDlmCluster, tails, type DlmTestCluster } from "./dlmCluster";
import { until as untilWith } from "./wait";

export interface ClientScenariosOptions {
  leaseMs: number;
  sessionTimeoutMs: number;
}

export class ClientScenarios {
  private started: DlmTestCluster | undefined;
  private readerClient: DlmClient | undefined;
  /** Clients and processes opened by the current scenario; closed after it. */
  private opened: DlmClient[] = [];
  private processes: StallClient[] = [];

  constructor(private readonly opts: ClientScenariosOptions) {}

  get cluster(): DlmTestCluster {
    if (!this.started) throw new Error("the cluster is not started (call start() in beforeAll)");
    return this.started;
  }

  /** A client opened in start(), for reading files. */
  get reader(): DlmClient {
    if (!this.readerClient) throw new Error("the cluster is not started (call start() in beforeAll)");
    return this.readerClient;
  }

  /** Three nodes on one nats-server with the given lease and session timeout; waits for a leader; opens the reader. */
  async start(): Promise<DlmTestCluster> {
    this.started = await startDlmCluster({ nodes: 3, leaseMs: this.opts.leaseMs, sessionTimeoutMs: this.opts.sessionTimeoutMs });
    await this.started.waitForLeader();
    this.readerClient = await this.started.client({ name: "reader" });
    return this.started;
  }

  async close(): Promise<void> {
    await Promise.all(this.processes.map((p) => p.kill()));
    await this.started?.close();
  }

  /** Waits until `lock` is free: a scenario starts with it free (a failed one must not cascade). */
  lockFree = async (lock = "global"): Promise<void> => {
    await this.until(async () => !(await this.cluster.status()).locks.some((l) => l.name === lock), 15_000, `lock ${lock} to be free`);
  };

  /** Kills the scenario's client processes and closes its clients. */
  closeOpened = async (): Promise<void> => {
    await Promise.all(this.processes.map((p) => p.kill()));
    await Promise.all(this.opened.map((c) => c.close().catch(() => undefined)));
    this.processes = [];
    this.opened = [];
  };

  /** A client in this process, closed after the scenario. */
  client = async (name: string, opts: ClientOptions = {}): Promise<DlmClient> => {
    const c = await this.cluster.client({ name, ...opts });
    this.opened.push(c);
    return c;
  };

  /** A connected client in a child process (it can be frozen or SIGKILLed), killed after the scenario. */
  childClient = async (name: string, requestTimeoutMs = 1000, logEachAppend = false): Promise<{ p: StallClient; clientId: string }> => {
    const p = await StallClient.start(name);
    this.processes.push(p);
    const r = await p.ok("connect", { servers: this.cluster.urls, requestTimeoutMs, name, logEachAppend });
    return { p, clientId: r.clientId as string };
  };

  /** until() from ./wait, with the last lines of every node's output on a timeout. */
  until = (cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<number> =>
    untilWith(cond, timeoutMs, what, () => tails(this.cluster.nodes));

  /** Lock "global" as the leader's status shows it (undefined: free, nobody waiting). */
  globalLock = async () => (await this.cluster.status()).locks.find((l) => l.name === "global");

  /** The file's exact content, as the leader serves it and on every running node's disk. */
  expectFile = async (n: number, expected: string): Promise<void> => {
    const cluster = this.cluster;
    expect((await this.reader.read(`file_${n}`)).toString()).toBe(expected);
    await cluster.waitCaughtUp();
    cluster.nodes.forEach((node, i) => {
      if (node.running) expect({ node: node.name, content: cluster.fileOn(i, n).toString() }).toEqual({ node: node.name, content: expected });
    });
  };
}
