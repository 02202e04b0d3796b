/**
 * A whole dlm deployment for integration tests: NATS (one server or a
 * three-server cluster, from ./nats.ts) and N real dlm node processes, plus
 * clients that are closed with it, and the checks every scenario ends with
 * (all live nodes caught up, all 100 files identical byte for byte).
 */
import * as fs from "fs";
import * as path from "path";
import { connect as natsConnect } from "@nats-io/transport-node";
import type { ConnectionOptions, NatsConnection } from "@nats-io/nats-core";
import type { NatsAuthorizationConfig, NatsTlsConfig } from "../../src/local/natsServer";
import { connect, type ClientOptions, type DlmClient } from "../../src/client";
import type { ManagedProcess } from "../../src/local/processes";
import { FILE_COUNT, fileName } from "../../src/protocol/files";
import type { Reply, StatusView } from "../../src/protocol/messages";
import { names } from "../../src/protocol/subjects";
import type { NodeInfo } from "../../src/replica/node";
import { clusterStatus } from "../../src/cli/statusCommand";
import { startDlmNode } from "./dlmNode";
import { startNats, startNatsCluster, type TestNatsServer } from "./nats";
import { ProxyGroup } from "./proxy";
import type { RouteLinks } from "./routes";
import { freePort } from "../../src/local/ports";
import { makeTempDir, removeTempDir } from "./tmp";

export interface DlmClusterOptions {
  nodes: number;
  /** nats-servers: 1 (default) or 3. */
  nats?: 1 | 3;
  leaseMs?: number;
  sessionTimeoutMs?: number;
  extraArgs?: string[];
  /** Missed pings before nats-server drops a frozen client (single server only; default 4). */
  natsPingMax?: number;
  /** Each node reaches NATS through TCP proxies of its own (see `links`), so one node can be cut off. */
  proxied?: boolean;
  /** Node i connects to nats-server i (mod the count) only, so a test knows which server each node is on. */
  pinNodes?: boolean;
  /**
   * Three nats-servers only: every route between them goes through a TCP
   * proxy (see `routes`), so a server can be put in the minority while its
   * clients stay connected to it.
   */
  routeProxies?: boolean;
  /** Each node serves /metrics, /healthz and /readyz on a free port (see `metricsUrls`). */
  metrics?: { readyMaxLag?: number };
  /** nats-server client authentication and permissions (see test/kit/nats.ts). */
  natsAuthorization?: NatsAuthorizationConfig;
  /** nats-server client TLS (certificates from test/kit/certs.ts). */
  natsTls?: NatsTlsConfig;
  /** nats-server configuration appended verbatim (operator mode from test/kit/jwt.ts; single server only). */
  natsExtraConfig?: string;
  /** Connection flags every node gets (credentials, TLS). */
  nodeNatsArgs?: string[];
  /** Environment every node gets (e.g. NATS_USER, NATS_PASSWORD). */
  nodeEnv?: Record<string, string>;
  /**
   * NATS options of the test's own connection (`nc`, used for status and
   * raw requests: give it operator rights) and the defaults of `client()`.
   */
  natsOptions?: Partial<ConnectionOptions>;
}

export interface DlmTestCluster {
  readonly urls: string[];
  readonly natsServers: TestNatsServer[];
  readonly nodes: ManagedProcess[];
  readonly dataDirs: string[];
  /** With `proxied`: node i's links to NATS, to cut() and heal(); empty otherwise. */
  readonly links: ProxyGroup[];
  /** With `routeProxies`: the links between the nats-servers. */
  readonly routes: RouteLinks | undefined;
  /** nats-server i's index for node i (with `pinNodes`), else undefined. */
  serverOf(nodeIndex: number): number | undefined;
  /** With `metrics`: node i's http://127.0.0.1:port; empty otherwise. */
  readonly metricsUrls: string[];
  /** A raw NATS connection for tests that speak the wire protocol. */
  readonly nc: NatsConnection;
  /** A client library instance, closed by close(). */
  client(opts?: ClientOptions): Promise<DlmClient>;
  /**
   * A client whose NATS connection goes through proxies of its own (to the
   * servers at `servers`, default all), to cut or block; it ignores the
   * cluster's gossip so it stays behind them. Closed by close().
   */
  proxiedClient(opts?: ClientOptions, servers?: number[]): Promise<{ client: DlmClient; link: ProxyGroup }>;
  /** The node id that answers status as leader, waiting up to timeoutMs for one. */
  waitForLeader(timeoutMs?: number, notId?: string): Promise<{ id: string; epoch: number; node: ManagedProcess }>;
  nodeInfos(): Promise<NodeInfo[]>;
  /** Status as the leader sees it. */
  status(): Promise<StatusView>;
  /** Sends one raw request on the request subject and returns the parsed reply. */
  rawRequest(body: string | Uint8Array | object, timeoutMs?: number): Promise<Reply>;
  /** Waits until every running node has applied the whole log. */
  waitCaughtUp(timeoutMs?: number): Promise<number>;
  /** Waits until caught up, then checks all 100 files are identical on every running node. */
  expectFilesIdentical(timeoutMs?: number): Promise<void>;
  /** A file's bytes in a node's data directory. */
  fileOn(nodeIndex: number, file: number): Buffer;
  close(): Promise<void>;
}

/** How long one waitCaughtUp() round waits for every running node's info. */
const CAUGHT_UP_POLL_MS = 500;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export async function startDlmCluster(opts: DlmClusterOptions): Promise<DlmTestCluster> {
  const natsCount = opts.nats ?? 1;
  const security = { authorization: opts.natsAuthorization, tls: opts.natsTls };
  const single = natsCount === 1 ? await startNats({ pingMax: opts.natsPingMax, extraConfig: opts.natsExtraConfig, ...security }) : undefined;
  // Behind proxies, nobody may learn the servers' real addresses from the
  // servers themselves, or a proxied link would quietly go around its proxy.
  const noAdvertise = opts.proxied || opts.routeProxies ? true : undefined;
  if (opts.routeProxies && natsCount !== 3) throw new Error("routeProxies needs three nats-servers");
  const cluster = natsCount === 3 ? await startNatsCluster(3, { ...security, routeProxies: opts.routeProxies, noAdvertise }) : undefined;
  const urls = single ? single.urls : cluster!.urls;
  const natsServers = single ? [single] : cluster!.servers;
  const root = makeTempDir("dlm-cluster-");
  const dataDirs: string[] = [];
  const nodes: ManagedProcess[] = [];
  const links: ProxyGroup[] = [];
  const metricsUrls: string[] = [];
  for (let i = 1; i <= opts.nodes; i++) {
    const dataDir = path.join(root, `n${i}`);
    dataDirs.push(dataDir);
    const nodeUrls = opts.pinNodes ? [urls[(i - 1) % urls.length]!] : urls;
    if (opts.proxied) links.push(await ProxyGroup.forUrls(nodeUrls));
    const metricsArgs: string[] = [];
    if (opts.metrics) {
      const port = await freePort();
      metricsUrls.push(`http://127.0.0.1:${port}`);
      metricsArgs.push("--metrics-port", String(port));
      if (opts.metrics.readyMaxLag !== undefined) metricsArgs.push("--ready-max-lag", String(opts.metrics.readyMaxLag));
    }
    nodes.push(
      startDlmNode({
        natsUrls: opts.proxied ? links[i - 1].urls : nodeUrls,
        dataDir,
        nodeId: `n${i}`,
        natsArgs: opts.nodeNatsArgs,
        env: opts.nodeEnv,
        extraArgs: [
          "--replicas",
          String(natsCount),
          "--lease-ms",
          String(opts.leaseMs ?? 2000),
          "--session-timeout-ms",
          String(opts.sessionTimeoutMs ?? 4000),
          "--log-level",
          process.env.DLM_TEST_LOG_LEVEL ?? "info",
          ...metricsArgs,
          ...(opts.extraArgs ?? []),
        ],
        logFile: path.join(root, `n${i}.log`),
      }),
    );
  }
  const nc = await natsConnect({ ...opts.natsOptions, servers: urls, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  const clients: DlmClient[] = [];
  const clientLinks: ProxyGroup[] = [];
  const subjects = names();

  const rawRequest = async (body: string | Uint8Array | object, timeoutMs = 5000): Promise<Reply> => {
    const data = typeof body === "string" ? encoder.encode(body) : body instanceof Uint8Array ? body : encoder.encode(JSON.stringify(body));
    const msg = await nc.request(subjects.requestSubject, data, { timeout: timeoutMs });
    return JSON.parse(decoder.decode(msg.data)) as Reply;
  };

  const self: DlmTestCluster = {
    urls,
    natsServers,
    nodes,
    dataDirs,
    links,
    routes: cluster?.routes,
    serverOf(nodeIndex: number) {
      return opts.pinNodes ? nodeIndex % urls.length : undefined;
    },
    metricsUrls,
    nc,
    async client(clientOpts: ClientOptions = {}) {
      const client = await connect({ ...opts.natsOptions, servers: urls, unavailableTimeoutMs: 60_000, ...clientOpts });
      clients.push(client);
      return client;
    },
    async proxiedClient(clientOpts: ClientOptions = {}, servers?: number[]) {
      const link = await ProxyGroup.forUrls(servers ? servers.map((s) => urls[s]!) : urls);
      clientLinks.push(link);
      const client = await connect({
        ...opts.natsOptions,
        unavailableTimeoutMs: 60_000,
        ignoreClusterUpdates: true,
        ...clientOpts,
        servers: link.urls,
      });
      clients.push(client);
      return { client, link };
    },
    async waitForLeader(timeoutMs = 30_000, notId?: string) {
      const deadline = Date.now() + timeoutMs;
      let last = "";
      while (Date.now() < deadline) {
        try {
          const reply = await rawRequest({ op: "status" }, 1000);
          if (reply.ok && reply.view?.leader && reply.view.leader !== notId) {
            const node = nodes.find((n) => n.name === `dlm-${reply.view!.leader}`);
            if (node) return { id: reply.view.leader, epoch: reply.view.epoch, node };
          }
          last = JSON.stringify(reply);
        } catch (err) {
          last = (err as Error).message;
        }
        await sleep(100);
      }
      throw new Error(`no leader${notId ? ` other than ${notId}` : ""} within ${timeoutMs} ms (last: ${last})\n${tails(nodes)}`);
    },
    async nodeInfos() {
      return (await clusterStatus(nc, "dlm", nodes.filter((n) => n.running).length)).nodes;
    },
    async status() {
      const reply = await rawRequest({ op: "status" });
      if (!reply.ok || !reply.view) throw new Error(`status failed: ${JSON.stringify(reply)}`);
      return reply.view;
    },
    rawRequest,
    async waitCaughtUp(timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      let last = "";
      while (Date.now() < deadline) {
        const running = nodes.filter((n) => n.running).length;
        // A node that was just (re)started counts as running before it
        // subscribes to the info subject; clusterStatus would then wait its
        // default 10 s for an answer that never comes. Ask briefly and ask
        // again instead.
        const status = await clusterStatus(nc, "dlm", running, CAUGHT_UP_POLL_MS);
        if (status.lastSeq !== null && status.nodes.length === running && status.nodes.every((n) => n.appliedSeq === status.lastSeq)) {
          return status.lastSeq;
        }
        last = JSON.stringify({ lastSeq: status.lastSeq, nodes: status.nodes.map((n) => [n.nodeId, n.role, n.appliedSeq]) });
        await sleep(100);
      }
      throw new Error(`nodes did not catch up within ${timeoutMs} ms: ${last}`);
    },
    async expectFilesIdentical(timeoutMs = 20_000) {
      await self.waitCaughtUp(timeoutMs);
      const live = nodes.map((n, i) => ({ n, i })).filter(({ n }) => n.running);
      for (let f = 0; f < FILE_COUNT; f++) {
        const reference = self.fileOn(live[0].i, f);
        for (const { n, i } of live.slice(1)) {
          const other = self.fileOn(i, f);
          if (!reference.equals(other)) {
            throw new Error(`${fileName(f)} differs between ${nodes[live[0].i].name} (${reference.length} B) and ${n.name} (${other.length} B)`);
          }
        }
      }
    },
    fileOn(nodeIndex: number, file: number) {
      return fs.readFileSync(path.join(dataDirs[nodeIndex], "files", fileName(file)));
    },
    async close() {
      await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
      await Promise.all(nodes.map((n) => (n.running ? n.kill("SIGKILL") : Promise.resolve())));
      await nc.close().catch(() => undefined);
      await Promise.all([...links, ...clientLinks].map((l) => l.close()));
      await single?.close();
      await cluster?.close();
      await removeTempDir(root);
    },
  };
  return self;
}

export function tails(nodes: ManagedProcess[], lines = 15): string {
  return nodes.map((n) => `--- ${n.name} ---\n${n.tail(lines)}`).join("\n");
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
