/**
 * What the benches share: a dlm deployment to measure (nats-server(s) with
 * fsync on every write and three dlm nodes), the floor under it, a
 * closed-loop workload runner with percentiles, and per-process CPU use.
 */
import { spawn } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { connect as natsConnect } from "@nats-io/transport-node";
import { createInbox, headers, type Msg, type NatsConnection } from "@nats-io/nats-core";
import { jetstream, jetstreamManager, StorageType, type JetStreamManager } from "@nats-io/jetstream";
import { RequestMux } from "../src/protocol/requestMux";
import { clusterStatus } from "../src/cli/statusCommand";
import { startNatsCluster, startNatsServer } from "../src/local/natsServer";
import { killAllTrackedChildren, spawnManaged, type ManagedProcess } from "../src/local/processes";

export const NODES = 3;
export const PAYLOAD = "0123456789abcdef"; // 16 bytes

/** Nearest-rank percentile of sorted samples. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)];
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

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

export interface Proc {
  name: string;
  pid: () => number | undefined;
}

/** CPU use of each process over a measured interval, as percent of one core. */
export class CpuMeter {
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

export interface Result {
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
export async function leaderCounters(nc: NatsConnection): Promise<{ entries: number; commands: number }> {
  const s = await clusterStatus(nc, "dlm");
  const leader = s.nodes.find((n) => n.role === "leader");
  return { entries: leader?.metrics.entriesAppended ?? 0, commands: leader?.metrics.commandsLogged ?? 0 };
}

/** Runs `worker(i)` for each of `workers` in parallel until `seconds` pass; every resolved call is one cycle. */
export async function measure(
  name: string,
  /** dlm's status connection, to count the leader's log entries; undefined for other systems. */
  nc: NatsConnection | undefined,
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
  const before = nc ? await leaderCounters(nc) : { entries: 0, commands: 0 };
  cpu.begin();
  const started = performance.now();
  const latencies = (await Promise.all(Array.from({ length: workers }, (_, i) => timedFor(seconds, () => cycle(i))))).flat();
  const elapsed = (performance.now() - started) / 1000;
  const usage = cpu.end();
  const after = nc ? await leaderCounters(nc) : { entries: 0, commands: 0 };
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

/**
 * Floor: request-reply to a responder on another connection, and an
 * fsynced JetStream publish. Then, for context, the relay: a request to a
 * responder in another process that makes one fsynced publish before it
 * answers (relayResponder.ts), the path of a dlm request with no dlm in it.
 */
export async function measureFloor(urls: string[], replicas: number, seconds: number): Promise<{ rr: number[]; pub: number[]; relay: number[]; logFirst: number[] }> {
  const server = await natsConnect({ servers: urls, noAsyncTraces: true });
  const client = await natsConnect({ servers: urls, noAsyncTraces: true });
  const sub = server.subscribe("bench.floor.echo", { callback: (_err: Error | null, msg: Msg) => msg.respond(msg.data) });
  await server.flush();
  const data = new TextEncoder().encode(JSON.stringify({ op: "append", data: PAYLOAD }));
  // Through the client's own request path (the cheapest this process has), so the floor is not padded by nats.js's per-request costs.
  const mux = new RequestMux(client, undefined);
  const rr = await timedFor(seconds, () => mux.request("bench.floor.echo", data, 5000));
  sub.unsubscribe();
  const jsm = await jetstreamManager(client);
  await addFileStream(jsm, "BENCH_FLOOR", "bench.floor.log", replicas);
  const js = jetstream(client, { timeout: 5000 });
  let last = 0;
  const pub = await timedFor(seconds, async () => {
    last = (await js.publish("bench.floor.log", data, { expect: { lastSequence: last } })).seq;
  });
  const relay = await measureRelay(urls, mux, data, seconds);
  mux.close();
  await jsm.streams.delete("BENCH_FLOOR");
  const logFirst = await measureLogFirst(urls, client, replicas, data, seconds);
  await server.close();
  await client.close();
  rr.sort((a, b) => a - b);
  pub.sort((a, b) => a - b);
  relay.sort((a, b) => a - b);
  logFirst.sort((a, b) => a - b);
  return { rr, pub, relay, logFirst };
}

/**
 * The log-first probe (logFollower.ts), for context: the client publishes
 * straight into a stream and a follower in another process answers once
 * the message is stored, for `seconds`: latencies (ms) of publish-to-answer.
 */
async function measureLogFirst(urls: string[], client: NatsConnection, replicas: number, data: Uint8Array, seconds: number): Promise<number[]> {
  const jsm = await jetstreamManager(client);
  await addFileStream(jsm, "BENCH_LF", "bench.floor.lf", replicas);
  const child = spawn(process.execPath, [path.join(__dirname, "logFollower.js"), urls.join(","), "BENCH_LF"], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  const inbox = createInbox();
  let answered: (() => void) | undefined;
  const sub = client.subscribe(inbox, { callback: () => answered?.() });
  const hdrs = headers();
  hdrs.set("Bench-Reply", inbox);
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.once("data", () => resolve());
      child.once("exit", (code) => reject(new Error(`logFollower exited with ${code} before it was ready`)));
    });
    const roundTrip = (timeoutMs: number) =>
      new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), timeoutMs);
        answered = () => {
          clearTimeout(timer);
          resolve(true);
        };
        client.publish("bench.floor.lf", data, { headers: hdrs });
      });
    // A plain publish is dropped, not refused, until the stream's interest
    // has reached the client's server (a cluster spreads it asynchronously):
    // wait for one that gets through before timing any.
    const readyBy = Date.now() + 10_000;
    while (!(await roundTrip(500))) if (Date.now() > readyBy) throw new Error("log-first probe: no answer in 10 s");
    return await timedFor(seconds, async () => {
      if (!(await roundTrip(5000))) throw new Error("log-first probe: no answer in 5 s");
    });
  } finally {
    child.kill();
    sub.unsubscribe();
    await jsm.streams.delete("BENCH_LF");
  }
}

/** Creates a file stream of `replicas` on `subject` and waits for its leader: a fresh R3 stream needs one before the first publish. */
async function addFileStream(jsm: JetStreamManager, name: string, subject: string, replicas: number): Promise<void> {
  await jsm.streams.add({ name, subjects: [subject], storage: StorageType.File, num_replicas: replicas });
  for (let i = 0; i < 100; i++) {
    const info = await jsm.streams.info(name);
    if (replicas === 1 || info.cluster?.leader) break;
    await sleep(100);
  }
}

/** Requests to relayResponder.ts in a child process, for `seconds`: their latencies (ms). */
async function measureRelay(urls: string[], mux: RequestMux, data: Uint8Array, seconds: number): Promise<number[]> {
  const child = spawn(process.execPath, [path.join(__dirname, "relayResponder.js"), urls.join(","), "bench.floor.relay", "bench.floor.log"], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.once("data", () => resolve());
      child.once("exit", (code) => reject(new Error(`relayResponder exited with ${code} before it was ready`)));
    });
    return await timedFor(seconds, () => mux.request("bench.floor.relay", data, 5000));
  } finally {
    child.kill();
  }
}

/** Runs `op` back to back for `seconds`: each run's latency (ms), in order. */
async function timedFor(seconds: number, op: () => Promise<unknown>): Promise<number[]> {
  const latencies: number[] = [];
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    const t = performance.now();
    await op();
    latencies.push(performance.now() - t);
  }
  return latencies;
}

export async function waitSettled(nc: NatsConnection, timeoutMs: number): Promise<void> {
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


export interface Deployment {
  urls: string[];
  /** A connection for the bench's own status queries. */
  nc: NatsConnection;
  /** nats-servers and dlm nodes, for the CPU meter. */
  procs: Proc[];
}

/**
 * Starts nats-server(s) (fsync on every write) and three dlm nodes and
 * waits until one leads and all have applied the log. Stops go into
 * `cleanups` (run them in reverse).
 */
export async function startDeployment(opts: {
  natsCount: number;
  base: string;
  nodeArgs: string[];
  nodeMain?: string | undefined;
  profileDir?: string | undefined;
  cleanups: Array<() => Promise<unknown>>;
}): Promise<Deployment> {
  const { natsCount, base, nodeArgs, nodeMain, profileDir, cleanups } = opts;
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
  return { urls, nc, procs };
}

/**
 * Ctrl-C or SIGTERM ends the bench cleanly: nats-server and the nodes run
 * in their own process groups (so a terminal's Ctrl-C does not reach them)
 * and a signal skips the 'exit' hook that would kill them, so stop them
 * here, remove the temporary directory unless kept, and exit 130.
 */
export function exitOnInterrupt(dir: string | undefined, keep: boolean): void {
  const onSignal = (signal: NodeJS.Signals): void => {
    console.error(`\n${signal}: stopping`);
    killAllTrackedChildren();
    if (dir !== undefined && !keep) {
      try {
        fs.rmSync(dir, { recursive: true, force: true });
      } catch {
        // a child still closing its files; the OS's temp cleaning gets the rest
      }
    }
    process.exit(130);
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
}
