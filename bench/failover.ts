/**
 * Failover time as a client sees it: how long after the leader is SIGKILLed
 * does a client that was waiting for the lock get it?
 *
 * Starts nats-server (one, or a three-server cluster) and three dlm node
 * processes, then, per run:
 *
 *   1. the holder acquires `global` (with a lease that rides out a failover)
 *      and the waiter queues behind it (checked in the leader's status);
 *   2. t0: the leader is SIGKILLed; once it is gone the holder releases, so the
 *      release has to go through whichever node takes over;
 *   3. t1: the waiter's acquire resolves (its first successful acquire);
 *      the sample is t1 - t0;
 *   4. the waiter releases, the killed node is restarted and the next run
 *      waits until all three nodes are caught up again.
 *
 * So a sample is: leader lease running out (TTL after the last refresh) +
 * a follower noticing and winning the lease + catching up and logging its
 * `leader` entry + the holder's release getting through (client backoff) +
 * the grant reaching the waiter (notification, or its next poll).
 * Prints every sample, p50, p99 and max. Asserts nothing.
 *
 * With no --nats/--runs/--victim it runs the three measurements that
 * docs/design.md §12 quotes: 20 leader kills on 1 nats-server, 20 on 3, and
 * 10 kills of the nats-server that leads the log stream (3 servers).
 *
 *   npm run bench:failover -- [--runs 20] [--nats 1|3] [--victim leader|stream-leader]
 *                             [--leader-ttl-ms 2000] [--leader-renew-ms 150] [--leader-timeout-ms 600] [--keep]
 *                             [--user U --password P | --token T]  (the local nats-server requires them)
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { connect as natsConnect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect, type DlmClient } from "../src/client";
import { DEFAULTS } from "../src/client/options";
import { clusterStatus } from "../src/cli/statusCommand";
import { jetstreamManager } from "@nats-io/jetstream";
import { startNatsCluster, startNatsServer, type NatsServerProcess } from "../src/local/natsServer";
import { spawnManaged, type ManagedProcess } from "../src/local/processes";
import type { Reply, StatusView } from "../src/protocol/messages";
import { names } from "../src/protocol/subjects";
import { NODE_DEFAULTS } from "../src/replica/node";
import { helpText, int, parseArgs, UsageError, type CommandSpec, type ParsedFlags } from "../src/cli/args";
import { LOCAL_AUTH_FLAGS, localServerAuth } from "../src/cli/natsFlags";

const NODES = 3;
/** The holder's lease: long enough that it is still held when the new leader is up (design default). */
const HOLDER_LEASE_MS = 10_000;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

const spec: CommandSpec = {
  usage: "npm run bench:failover -- [flags]",
  summary: "Leader SIGKILLs against three local nodes: how long until a waiting client's acquire succeeds.",
  flags: [
    { name: "runs", kind: "int", help: "kills (with --nats or --victim: one measurement only; default 20)" },
    { name: "nats", kind: "int", help: "nats-servers: 1, or 3 for a cluster (one measurement only)" },
    { name: "victim", kind: "string", help: "leader (default) or stream-leader: the nats-server leading the log stream (needs --nats 3)" },
    { name: "leader-ttl-ms", kind: "int", default: NODE_DEFAULTS.leaderTtlMs, help: "leader lease (KV key TTL)" },
    { name: "leader-renew-ms", kind: "int", default: NODE_DEFAULTS.leaderRenewMs, help: "leader lease refresh interval" },
    { name: "leader-timeout-ms", kind: "int", default: NODE_DEFAULTS.leaderTimeoutMs, help: "followers take over after this long without a lease refresh" },
    { name: "keep", kind: "bool", help: "keep the temporary directory (logs, data)" },
    ...LOCAL_AUTH_FLAGS,
  ],
};

function intFlag(flags: ParsedFlags, name: string, ok: (n: number) => boolean): number {
  const n = int(flags, name);
  if (!ok(n)) throw new UsageError(`bad --${name} ${n}`);
  return n;
}

/** Nearest-rank percentile of sorted samples. */
function percentile(sorted: number[], p: number): number {
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)];
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

async function leaderStatus(nc: NatsConnection): Promise<StatusView | undefined> {
  const msg = await nc.request(names().requestSubject, encoder.encode(JSON.stringify({ op: "status" })), { timeout: 1000 });
  const reply = JSON.parse(decoder.decode(msg.data)) as Reply;
  return reply.ok ? reply.view : undefined;
}

/** All nodes answer, all have applied the whole log, and one of them leads: its id. */
async function waitSettled(nc: NatsConnection, timeoutMs: number): Promise<string> {
  return until("all nodes caught up under one leader", timeoutMs, async () => {
    const s = await clusterStatus(nc, "dlm");
    const leaders = s.nodes.filter((n) => n.role === "leader");
    const caughtUp = s.lastSeq !== null && s.nodes.every((n) => n.appliedSeq === s.lastSeq);
    if (s.nodes.length === NODES && leaders.length === 1 && caughtUp && s.leader?.leader === leaders[0].nodeId) return leaders[0].nodeId;
    return undefined;
  });
}

interface Sample {
  run: number;
  killed: string;
  newLeader: string;
  releaseMs: number;
  grantMs: number;
  /** Stream-leader kills: when the log stream had a new leader (the floor of grantMs). */
  reelectedMs?: number;
}

/** One measurement: which NATS deployment, how many kills, and what is killed. */
interface Measurement {
  natsCount: 1 | 3;
  runs: number;
  /** `leader`: the leading dlm node (SIGKILL). `stream-leader`: the nats-server that leads the log stream (SIGKILL). */
  victim: "leader" | "stream-leader";
}

interface Settings {
  leaderTtlMs: number;
  leaderRenewMs: number;
  leaderTimeoutMs: number;
  keep: boolean;
  auth: ReturnType<typeof localServerAuth>;
}

async function main(): Promise<void> {
  const { flags, help } = parseArgs(spec, process.argv.slice(2));
  if (help) return void console.log(helpText(spec));
  const leaderTtlMs = intFlag(flags, "leader-ttl-ms", (n) => n >= 100);
  const leaderRenewMs = intFlag(flags, "leader-renew-ms", (n) => n > 0 && n * 2 <= leaderTtlMs);
  const leaderTimeoutMs = intFlag(flags, "leader-timeout-ms", (n) => n >= leaderRenewMs * 3 && n <= leaderTtlMs);
  const settings: Settings = { leaderTtlMs, leaderRenewMs, leaderTimeoutMs, keep: flags.keep === true, auth: localServerAuth(flags) };
  const victim = typeof flags.victim === "string" ? flags.victim : undefined;
  if (victim !== undefined && victim !== "leader" && victim !== "stream-leader") throw new UsageError(`bad --victim ${victim}`);
  const only = flags.nats !== undefined || flags.runs !== undefined || victim !== undefined;
  let plan: Measurement[];
  if (only) {
    const natsCount = (flags.nats === undefined ? (victim === "stream-leader" ? 3 : 1) : intFlag(flags, "nats", (n) => n === 1 || n === 3)) as 1 | 3;
    if (victim === "stream-leader" && natsCount !== 3) throw new UsageError("--victim stream-leader needs --nats 3");
    const runs = flags.runs === undefined ? (victim === "stream-leader" ? 10 : 20) : intFlag(flags, "runs", (n) => n >= 1);
    plan = [{ natsCount, runs, victim: victim ?? "leader" }];
  } else {
    // The default: everything docs/design.md §12 quotes.
    plan = [
      { natsCount: 1, runs: 20, victim: "leader" },
      { natsCount: 3, runs: 20, victim: "leader" },
      { natsCount: 3, runs: 10, victim: "stream-leader" },
    ];
  }
  const summaries: string[] = [];
  for (const m of plan) summaries.push(await measure(m, settings));
  console.log("");
  for (const line of summaries) console.log(line);
}

async function measure(m: Measurement, settings: Settings): Promise<string> {
  const { natsCount, runs } = m;
  const { leaderTtlMs, leaderRenewMs, leaderTimeoutMs, keep, auth } = settings;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dlm-bench-failover-"));
  const cleanups: Array<() => Promise<unknown>> = [];
  let cleaning: Promise<void> | undefined;
  const cleanup = () =>
    (cleaning ??= (async () => {
      for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
      if (!keep) fs.rmSync(dir, { recursive: true, force: true });
    })());
  const onSignal = (signal: NodeJS.Signals) => {
    console.error(`\n${signal}: stopping`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  try {
    let urls: string[];
    let natsServers: NatsServerProcess[];
    if (natsCount === 1) {
      const server = await startNatsServer({ storeDir: path.join(dir, "nats"), logFile: path.join(dir, "nats.log"), syncAlways: true, authorization: auth.server });
      cleanups.push(() => server.stop());
      urls = [server.url];
      natsServers = [server];
    } else {
      const cluster = await startNatsCluster({ size: 3, baseDir: path.join(dir, "nats"), syncAlways: true, authorization: auth.server });
      cleanups.push(() => cluster.stop());
      urls = cluster.urls;
      natsServers = cluster.servers;
    }

    const mainJs = path.join(__dirname, "../src/cli/main.js");
    const nodes: ManagedProcess[] = [];
    cleanups.push(async () => {
      await Promise.all(nodes.map((n) => (n.running ? n.kill("SIGKILL") : undefined)));
    });
    for (let i = 1; i <= NODES; i++) {
      const args = [mainJs, "node", "--nats", urls.join(","), "--id", `n${i}`, "--data", path.join(dir, `n${i}`)];
      args.push("--replicas", String(natsCount), "--leader-ttl-ms", String(leaderTtlMs), "--leader-renew-ms", String(leaderRenewMs));
      args.push("--leader-timeout-ms", String(leaderTimeoutMs));
      nodes.push(spawnManaged(process.execPath, args, { name: `n${i}`, logFile: path.join(dir, `n${i}.log`), env: auth.env }));
    }
    const nodeById = (id: string) => nodes[Number(id.slice(1)) - 1];

    const nc = await natsConnect({ ...auth.client, servers: urls, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
    cleanups.push(() => nc.close());
    await waitSettled(nc, 60_000);

    const clients: DlmClient[] = [];
    cleanups.push(() => Promise.all(clients.map((c) => c.close())));
    const holder = await connect({ ...auth.client, servers: urls, name: "holder", unavailableTimeoutMs: 60_000 });
    clients.push(holder);
    const waiter = await connect({ ...auth.client, servers: urls, name: "waiter", unavailableTimeoutMs: 60_000 });
    clients.push(waiter);

    const what = m.victim === "leader" ? "the leading dlm node" : "the nats-server that leads the log stream";
    console.log("");
    console.log(
      `dlm failover: ${NODES} dlm nodes, ${natsCount} nats-server${natsCount > 1 ? "s (R3 log and leader bucket)" : ""} (sync_interval: always), ${runs} runs, SIGKILL ${what}, ${os.cpus().length} cores`,
    );
    console.log(
      `leader lease: TTL ${leaderTtlMs} ms, renewed every ${leaderRenewMs} ms; followers take over after ${leaderTimeoutMs} ms without a renewal ` +
        `(checked every ${NODE_DEFAULTS.campaignIntervalMs} ms); log requests time out after ${NODE_DEFAULTS.logTimeoutMs} ms`,
    );
    console.log(
      `clients: attempts ${DEFAULTS.firstAttemptTimeoutMs} ms doubling to ${DEFAULTS.requestTimeoutMs} ms, backoff ${DEFAULTS.backoff.initialMs}..${DEFAULTS.backoff.maxMs} ms x${DEFAULTS.backoff.multiplier}; holder lease ${HOLDER_LEASE_MS} ms`,
    );
    console.log(`sample = SIGKILL of ${what} -> the waiting client's acquire resolves (the holder releases right after the kill)`);
    console.log("");
    console.log(`run  killed   new leader  release ok ms  waiter granted ms${m.victim === "stream-leader" ? "  stream re-elected ms" : ""}`);

    const samples: Sample[] = [];
    for (let run = 1; run <= runs; run++) {
      const leaderId = await waitSettled(nc, 60_000);
      const lease = await holder.acquire("global", { leaseMs: HOLDER_LEASE_MS });
      const waiting = waiter.acquire("global");
      waiting.catch(() => undefined);
      await until("the waiter to be queued", 10_000, async () => {
        const view = await leaderStatus(nc);
        const global = view?.locks.find((l) => l.name === "global");
        return global?.holder?.token === lease.token && global.queue.length === 1 ? true : undefined;
      });

      let killed: string;
      let restart: () => Promise<void>;
      let t0: number;
      let reelected: Promise<number> | undefined;
      if (m.victim === "leader") {
        const victim = nodeById(leaderId);
        killed = leaderId;
        t0 = performance.now();
        await victim.kill("SIGKILL"); // resolves when the process is gone (a few ms)
        restart = () => victim.restart();
      } else {
        const serverName = await until("the log stream's leader", 10_000, async () => {
          const jsm = await jetstreamManager(nc, { timeout: 1000 });
          return (await jsm.streams.info(names().streamName)).cluster?.leader;
        });
        const server = natsServers.find((s) => s.serverName === serverName);
        if (!server) throw new Error(`the log stream is led by ${serverName}, not one of this bench's servers`);
        killed = serverName;
        t0 = performance.now();
        await server.kill();
        // The floor for this sample: the stream's own re-election.
        const start = t0;
        reelected = until("a new log stream leader", 60_000, async () => {
          const jsm = await jetstreamManager(nc, { timeout: 500 });
          const leader = (await jsm.streams.info(names().streamName)).cluster?.leader;
          return leader && leader !== serverName ? performance.now() - start : undefined;
        });
        reelected.catch(() => undefined);
        restart = async () => {
          await server.restart();
          await server.waitJetStreamReady(60_000);
        };
      }
      const released = holder.release(lease).then(() => performance.now() - t0);
      released.catch(() => undefined); // awaited below; do not let a failing waiter leave it unhandled
      const granted = await waiting;
      const grantMs = performance.now() - t0;
      const releaseMs = await released;
      await waiter.release(granted);
      if (granted.token <= lease.token) throw new Error(`token did not increase: ${granted.token} after ${lease.token}`);

      const view = await until("a leader", 30_000, () => leaderStatus(nc));
      const reelectedMs = reelected ? await reelected.catch(() => undefined) : undefined;
      const sample = { run, killed, newLeader: view.leader ?? "?", releaseMs, grantMs, reelectedMs };
      samples.push(sample);
      console.log(
        `${String(run).padStart(3)}  ${sample.killed.padEnd(7)}  ${sample.newLeader.padEnd(10)}  ${releaseMs.toFixed(0).padStart(12)}  ${grantMs.toFixed(0).padStart(17)}` +
          (reelectedMs === undefined ? "" : `  ${reelectedMs.toFixed(0).padStart(19)}`),
      );
      await restart();
    }
    await waitSettled(nc, 60_000);

    const sorted = samples.map((s) => s.grantMs).sort((a, b) => a - b);
    const fmt = (n: number) => `${n.toFixed(0)} ms`;
    let summary =
      `${natsCount} nats-server${natsCount > 1 ? "s" : ""}, SIGKILL ${m.victim === "leader" ? "dlm leader" : "log stream's nats-server"} -> waiter granted, ` +
      `${sorted.length} samples: p50 ${fmt(percentile(sorted, 50))}, p99 ${fmt(percentile(sorted, 99))}, max ${fmt(sorted[sorted.length - 1])}`;
    const withFloor = samples.filter((x) => x.reelectedMs !== undefined);
    if (withFloor.length > 0) {
      const floor = withFloor.map((x) => x.reelectedMs!).sort((a, b) => a - b);
      const over = withFloor.map((x) => x.grantMs - x.reelectedMs!).sort((a, b) => a - b);
      summary +=
        `\n  of which the stream's own re-election: p50 ${fmt(percentile(floor, 50))}, max ${fmt(floor[floor.length - 1])}; ` +
        `granted after re-election: p50 ${fmt(percentile(over, 50))}, max ${fmt(over[over.length - 1])}`;
    }
    console.log("");
    console.log(summary);
    console.log(`all samples (sorted, ms): ${sorted.map((n) => n.toFixed(0)).join(" ")}`);
    if (keep) console.log(`data and logs kept in ${dir}`);
    return summary;
  } finally {
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
    await cleanup();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err instanceof UsageError ? `usage: ${err.message}` : err);
    process.exit(err instanceof UsageError ? 2 : 1);
  },
);
