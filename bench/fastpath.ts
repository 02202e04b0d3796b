/**
 * The bench of record (`npm run bench`): the realistic topology, the floor
 * it stands on, and the workloads users measure, all in one run.
 *
 * For each topology (1 nats-server, then a 3-server cluster with the log and
 * the leader bucket at R3; sync_interval: always everywhere) it starts three
 * dlm nodes and measures, one after the other:
 *
 *   floor     NATS request-reply to a responder in this process (through
 *             the client's own request path, the cheapest here), and a
 *             JetStream publish to a file stream (same replicas) acknowledged
 *             after fsync: what one request plus one log append cost here.
 *   section   one client: acquire "global" -> append 16 B -> release.
 *   commit    one client: client.commit([16 B]) (one request, one log entry).
 *   handoff   32 clients on "global", each looping acquire -> append 16 B ->
 *             release: lock handoffs per second.
 *   handoff-commit  the same 32 clients, each looping client.commit([16 B]):
 *             the lock passes from one queued commit to the next inside the
 *             log, with no client round trip between holders.
 *   locks     256 clients on 256 locks over 32 NATS connections, each
 *             looping acquire -> release on its own lock: ops per second
 *             (one op = one acquire and one release).
 *
 * Latencies are p50/p99 per cycle; "x floor" divides p50 by the floor
 * (request-reply p50 + fsynced publish p50). Throughput lines also show how
 * many floor-times one op took per second of wall clock ("ops x floor"),
 * the log entries and commands per entry at the leader, and the CPU each
 * process used (percent of one core), which says what bounds the number.
 * Prints tables; asserts nothing.
 *
 *   npm run bench -- [--quick] [--seconds 5] [--nats 1,3] [--only W,...] [--entries-in-flight N]
 *                    [--node-args "..."] [--node-main PATH] [--profile DIR] [--keep]
 *
 * --quick: 2 s per workload, 1 nats-server only. --entries-in-flight passes
 * --max-entries-in-flight to the nodes (1 turns pipelining off), to compare.
 * --only picks workloads; --node-args passes flags to every node (A/B runs,
 * e.g. --node-args="--follow-poll-ms 0"); --profile DIR writes each node's
 * V8 CPU profile (run the bench itself under node --cpu-prof for the client's).
 * --node-main PATH runs the nodes from another build's dist/src/cli/main.js
 * (e.g. the previous release, for a before/after in the same conditions;
 * this client then logs each append, and commit() falls back to acquire,
 * append, release, exactly as against an old server).
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { connect as natsConnect } from "@nats-io/transport-node";
import type { Msg, NatsConnection } from "@nats-io/nats-core";
import { jetstream, jetstreamManager, StorageType } from "@nats-io/jetstream";
import { connect, type DlmClient } from "../src/client";
import { RequestMux } from "../src/client/requestMux";
import { clusterStatus } from "../src/cli/statusCommand";
import { startNatsCluster, startNatsServer } from "../src/local/natsServer";
import { spawnManaged, type ManagedProcess } from "../src/local/processes";
import { helpText, parseArgs, splitList, UsageError, type CommandSpec } from "../src/cli/args";

const NODES = 3;
const PAYLOAD = "0123456789abcdef"; // 16 bytes

const spec: CommandSpec = {
  usage: "npm run bench -- [flags]",
  summary:
    "The bench of record: 3 dlm nodes on 1 and on 3 nats-servers (sync_interval: always), the floor measured in the same run, " +
    "then a lone client's section and commit, 32 clients on one lock (sections, then commits) and 256 clients on 256 locks. Prints tables; asserts nothing.",
  flags: [
    { name: "quick", kind: "bool", help: "2 s per workload, 1 nats-server only" },
    { name: "seconds", kind: "int", help: "seconds per workload (default 5, or 2 with --quick)" },
    { name: "nats", kind: "string", help: "topologies to run: 1, 3 or 1,3 (default 1,3, or 1 with --quick)" },
    { name: "entries-in-flight", kind: "int", help: "pass --max-entries-in-flight to the nodes (1 turns pipelining off)" },
    { name: "node-args", kind: "string", help: "more flags for every dlm node, space-separated (e.g. \"--follow-poll-ms 0\")" },
    { name: "node-main", kind: "string", help: "run the nodes from another build's dist/src/cli/main.js (a before/after in the same conditions)" },
    { name: "only", kind: "string", help: "workloads to run, of section,commit,handoff,handoff-commit,locks (default all)" },
    { name: "profile", kind: "string", help: "write a V8 CPU profile of each dlm node into this directory (open in Chrome DevTools)" },
    { name: "keep", kind: "bool", help: "keep the temporary directory (logs, data)" },
  ],
};

/** Nearest-rank percentile of sorted samples. */
function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)];
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** utime + stime of a process, in ms (Linux /proc). */
function cpuMsOf(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]);
    return (ticks * 1000) / 100; // USER_HZ is 100 on Linux
  } catch {
    return 0;
  }
}

interface Proc {
  name: string;
  pid: () => number | undefined;
}

/** CPU use of each process over a measured interval, as percent of one core. */
class CpuMeter {
  private start = new Map<string, number>();
  private startedAt = 0;
  private selfStart = process.cpuUsage();

  constructor(private readonly procs: Proc[]) {}

  begin(): void {
    this.startedAt = performance.now();
    this.selfStart = process.cpuUsage();
    for (const p of this.procs) this.start.set(p.name, cpuMsOf(p.pid()));
  }

  end(): string {
    const wallMs = performance.now() - this.startedAt;
    const parts: string[] = [];
    for (const p of this.procs) parts.push(`${p.name} ${Math.round((100 * (cpuMsOf(p.pid()) - (this.start.get(p.name) ?? 0))) / wallMs)}%`);
    const self = process.cpuUsage(this.selfStart);
    parts.push(`bench ${Math.round((100 * (self.user + self.system)) / 1000 / wallMs)}%`);
    return parts.join(", ");
  }
}

interface Result {
  name: string;
  cycles: number;
  seconds: number;
  p50: number;
  p99: number;
  entries: number;
  commands: number;
  cpu: string;
}

/** The leader's log counters (entries appended, commands logged). */
async function leaderCounters(nc: NatsConnection): Promise<{ entries: number; commands: number }> {
  const s = await clusterStatus(nc, "dlm");
  const leader = s.nodes.find((n) => n.role === "leader");
  return { entries: leader?.metrics.entriesAppended ?? 0, commands: leader?.metrics.commandsLogged ?? 0 };
}

/** Runs `worker(i)` for each of `workers` in parallel until `seconds` pass; every resolved call is one cycle. */
async function measure(
  name: string,
  nc: NatsConnection,
  cpu: CpuMeter,
  workers: number,
  seconds: number,
  cycle: (i: number) => Promise<void>,
): Promise<Result> {
  // Warm up: JIT, connections, the lock table.
  const warmDeadline = Date.now() + Math.min(1000, seconds * 200);
  await Promise.all(Array.from({ length: workers }, async (_, i) => {
    while (Date.now() < warmDeadline) await cycle(i);
  }));
  const before = await leaderCounters(nc);
  const latencies: number[] = [];
  cpu.begin();
  const started = performance.now();
  const deadline = Date.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: workers }, async (_, i) => {
      while (Date.now() < deadline) {
        const t = performance.now();
        await cycle(i);
        latencies.push(performance.now() - t);
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const usage = cpu.end();
  const after = await leaderCounters(nc);
  latencies.sort((a, b) => a - b);
  return {
    name,
    cycles: latencies.length,
    seconds: elapsed,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    entries: after.entries - before.entries,
    commands: after.commands - before.commands,
    cpu: usage,
  };
}

/** Floor: request-reply to a responder on another connection, and an fsynced JetStream publish. */
async function measureFloor(urls: string[], replicas: number, seconds: number): Promise<{ rr: number[]; pub: number[] }> {
  const server = await natsConnect({ servers: urls, noAsyncTraces: true });
  const client = await natsConnect({ servers: urls, noAsyncTraces: true });
  const sub = server.subscribe("bench.floor.echo", { callback: (_err: Error | null, msg: Msg) => msg.respond(msg.data) });
  await server.flush();
  const data = new TextEncoder().encode(JSON.stringify({ op: "append", data: PAYLOAD }));
  // Through the client's own request path (the cheapest this process has), so the floor is not padded by nats.js's per-request costs.
  const mux = new RequestMux(client, undefined);
  const rr: number[] = [];
  let deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    const t = performance.now();
    await mux.request("bench.floor.echo", data, 5000);
    rr.push(performance.now() - t);
  }
  mux.close();
  sub.unsubscribe();
  const jsm = await jetstreamManager(client);
  await jsm.streams.add({ name: "BENCH_FLOOR", subjects: ["bench.floor.log"], storage: StorageType.File, num_replicas: replicas });
  // A fresh R3 stream needs its leader before the first publish.
  for (let i = 0; i < 100; i++) {
    const info = await jsm.streams.info("BENCH_FLOOR");
    if (replicas === 1 || info.cluster?.leader) break;
    await sleep(100);
  }
  const js = jetstream(client, { timeout: 5000 });
  const pub: number[] = [];
  let last = 0;
  deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    const t = performance.now();
    const ack = await js.publish("bench.floor.log", data, { expect: { lastSequence: last } });
    last = ack.seq;
    pub.push(performance.now() - t);
  }
  await jsm.streams.delete("BENCH_FLOOR");
  await server.close();
  await client.close();
  rr.sort((a, b) => a - b);
  pub.sort((a, b) => a - b);
  return { rr, pub };
}

async function waitSettled(nc: NatsConnection, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const s = await clusterStatus(nc, "dlm");
      const leaders = s.nodes.filter((n) => n.role === "leader");
      if (s.nodes.length === NODES && leaders.length === 1 && s.nodes.every((n) => n.appliedSeq === s.lastSeq)) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error("the dlm nodes did not settle under one leader");
    await sleep(200);
  }
}

interface RunOptions {
  seconds: number;
  dir: string;
  keep: boolean;
  nodeArgs: string[];
  nodeMain: string | undefined;
  /** Workload keys to run; all when undefined. */
  only: Set<string> | undefined;
  /** Directory for the nodes' --cpu-prof output. */
  profileDir: string | undefined;
}

const WORKLOADS = ["section", "commit", "handoff", "handoff-commit", "locks"];

async function runTopology(natsCount: number, run: RunOptions): Promise<void> {
  const { seconds, dir, keep, nodeArgs, nodeMain, only, profileDir } = run;
  const wanted = (key: string): boolean => only === undefined || only.has(key);
  const cleanups: Array<() => Promise<unknown>> = [];
  const base = path.join(dir, `nats${natsCount}`);
  try {
    let urls: string[];
    const natsPids: Array<() => number | undefined> = [];
    if (natsCount === 1) {
      const server = await startNatsServer({ storeDir: path.join(base, "nats"), logFile: path.join(base, "nats.log"), syncAlways: true });
      cleanups.push(() => server.stop());
      urls = [server.url];
      natsPids.push(() => server.pid);
    } else {
      const cluster = await startNatsCluster({ size: natsCount, baseDir: path.join(base, "nats"), syncAlways: true });
      cleanups.push(() => cluster.stop());
      urls = cluster.urls;
      for (const s of cluster.servers) natsPids.push(() => s.pid);
    }
    const mainJs = nodeMain ?? path.join(__dirname, "../src/cli/main.js");
    const nodes: ManagedProcess[] = [];
    cleanups.push(() => Promise.all(nodes.map((n) => n.stop())));
    for (let i = 1; i <= NODES; i++) {
      const args = [mainJs, "node", "--nats", urls.join(","), "--id", `n${i}`, "--data", path.join(base, `n${i}`), "--replicas", String(natsCount), "--log-level", "warn", ...nodeArgs];
      // A profile is written when the node exits normally, which it does on SIGTERM.
      const v8Args = profileDir ? ["--cpu-prof", "--cpu-prof-dir", profileDir, "--cpu-prof-name", `nats${natsCount}-n${i}.cpuprofile`] : [];
      nodes.push(spawnManaged(process.execPath, [...v8Args, ...args], { name: `n${i}`, logFile: path.join(base, `n${i}.log`) }));
    }
    const nc = await natsConnect({ servers: urls, maxReconnectAttempts: -1, noAsyncTraces: true });
    cleanups.push(() => nc.close());
    await waitSettled(nc, 60_000);
    const leaderId = (await clusterStatus(nc, "dlm")).nodes.find((n) => n.role === "leader")?.nodeId;
    const procs: Proc[] = [
      ...natsPids.map((pid, i) => ({ name: natsCount === 1 ? "nats" : `nats${i + 1}`, pid })),
      ...nodes.map((n, i) => ({ name: `n${i + 1}${`n${i + 1}` === leaderId ? "(leader)" : ""}`, pid: () => n.pid })),
    ];
    const cpu = new CpuMeter(procs);

    console.log("");
    console.log(`== ${natsCount} nats-server${natsCount > 1 ? "s (log and leader bucket R3)" : ""}, sync_interval: always; ${NODES} dlm nodes; ${seconds}s per workload; ${os.cpus().length} cores`);
    const floor = await measureFloor(urls, natsCount, Math.max(1, seconds / 2));
    const rr = percentile(floor.rr, 50);
    const pub = percentile(floor.pub, 50);
    const floorMs = rr + pub;
    console.log(
      `floor: request-reply p50 ${rr.toFixed(2)} ms (p99 ${percentile(floor.rr, 99).toFixed(2)}), JetStream fsynced publish p50 ${pub.toFixed(2)} ms (p99 ${percentile(floor.pub, 99).toFixed(2)}); floor = ${floorMs.toFixed(2)} ms`,
    );

    const clients: DlmClient[] = [];
    const extraConns: NatsConnection[] = [];
    cleanups.push(async () => {
      await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
      await Promise.all(extraConns.map((c) => c.close().catch(() => undefined)));
    });
    const open = async (count: number, connections: number): Promise<DlmClient[]> => {
      const conns: NatsConnection[] = [];
      for (let i = 0; i < connections; i++) conns.push(await natsConnect({ servers: urls, noAsyncTraces: true }));
      extraConns.push(...conns);
      const list: DlmClient[] = [];
      for (let i = 0; i < count; i++) list.push(await connect({ nc: conns[i % connections], name: `b${i}` }));
      clients.push(...list);
      return list;
    };

    const results: Result[] = [];
    const [solo] = await open(1, 1);
    if (wanted("section")) {
      results.push(
        await measure("section: acquire -> append 16 B -> release (1 client)", nc, cpu, 1, seconds, async () => {
          const lease = await solo.acquire("global");
          await solo.append("file_0", PAYLOAD, { lease });
          await lease.release();
        }),
      );
    }
    if (wanted("commit")) {
      results.push(
        await measure("commit: client.commit([16 B]) (1 client)", nc, cpu, 1, seconds, async () => {
          await solo.commit([{ file: "file_1", data: PAYLOAD }]);
        }),
      );
    }
    if (wanted("handoff")) {
      const contenders = await open(32, 32);
      results.push(
        await measure("handoff: 32 clients on one lock, acquire -> append 16 B -> release", nc, cpu, 32, seconds, async (i) => {
          const c = contenders[i];
          const lease = await c.acquire("global");
          await c.append("file_2", PAYLOAD, { lease });
          await lease.release();
        }),
      );
    }
    if (wanted("handoff-commit")) {
      const committers = await open(32, 32);
      results.push(
        await measure("handoff: 32 clients on one lock, client.commit([16 B])", nc, cpu, 32, seconds, async (i) => {
          await committers[i].commit([{ file: "file_3", data: PAYLOAD }]);
        }),
      );
    }
    if (wanted("locks")) {
      const many = await open(256, 32);
      results.push(
        await measure("locks: 256 clients on 256 locks (32 connections), acquire -> release", nc, cpu, 256, seconds, async (i) => {
          const lease = await many[i].acquire(`bench-${i}`);
          await lease.release();
        }),
      );
    }

    console.log("");
    console.log("workload                                                              cycles/s   p50 ms   p99 ms  x floor  ops x floor  entries/cycle  cmds/entry  CPU (% of one core)");
    for (const r of results) {
      const perSecond = r.cycles / r.seconds;
      console.log(
        `${r.name.padEnd(70)} ${perSecond.toFixed(0).padStart(8)} ${r.p50.toFixed(2).padStart(8)} ${r.p99.toFixed(2).padStart(8)} ${(r.p50 / floorMs).toFixed(2).padStart(8)} ${((perSecond * floorMs) / 1000).toFixed(2).padStart(12)} ${(r.entries / Math.max(1, r.cycles)).toFixed(2).padStart(14)} ${(r.commands / Math.max(1, r.entries)).toFixed(1).padStart(11)}  ${r.cpu}`,
      );
    }
  } finally {
    for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
    if (!keep) fs.rmSync(base, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { flags, help } = parseArgs(spec, process.argv.slice(2));
  if (help) return void console.log(helpText(spec));
  const quick = flags.quick === true;
  const seconds = typeof flags.seconds === "number" ? flags.seconds : quick ? 2 : 5;
  const topologies = splitList(typeof flags.nats === "string" ? flags.nats : quick ? "1" : "1,3").map(Number);
  const keep = flags.keep === true;
  const inFlight = typeof flags["entries-in-flight"] === "number" ? String(flags["entries-in-flight"]) : "";
  const nodeMain = typeof flags["node-main"] === "string" ? flags["node-main"] : undefined;
  const extraNodeArgs = typeof flags["node-args"] === "string" ? flags["node-args"].split(/\s+/).filter((a) => a !== "") : [];
  const nodeArgs = [...(inFlight ? ["--max-entries-in-flight", inFlight] : []), ...extraNodeArgs];
  const onlyList = typeof flags.only === "string" ? splitList(flags.only) : undefined;
  for (const key of onlyList ?? []) if (!WORKLOADS.includes(key)) throw new UsageError(`--only takes ${WORKLOADS.join(",")}, got ${key}`);
  const profileDir = typeof flags.profile === "string" ? path.resolve(flags.profile) : undefined;
  if (profileDir) fs.mkdirSync(profileDir, { recursive: true });
  if (!(seconds > 0)) throw new UsageError(`bad --seconds ${seconds}`);
  if (topologies.length === 0 || topologies.some((n) => n !== 1 && n !== 3)) throw new UsageError("--nats takes 1, 3 or 1,3");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dlm-bench-fastpath-"));
  console.log(`dlm bench: ${new Date().toISOString()}, node ${process.version}, ${os.cpus().length} cores (${os.cpus()[0]?.model ?? "?"})`);
  try {
    if (nodeArgs.length > 0) console.log(`nodes run with ${nodeArgs.join(" ")}`);
    if (nodeMain) console.log(`nodes run from ${nodeMain}`);
    const only = onlyList ? new Set(onlyList) : undefined;
    for (const n of topologies) await runTopology(n, { seconds, dir, keep, nodeArgs, nodeMain, only, profileDir });
  } finally {
    if (keep) console.log(`\ndata and logs kept in ${dir}`);
    else fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err instanceof UsageError ? `usage: ${err.message}` : err);
    process.exit(err instanceof UsageError ? 2 : 1);
  },
);
