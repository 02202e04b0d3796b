/**
 * Soak: a mixed workload under the whole fault schedule, for a chosen time,
 * with a per-minute report and a verdict.
 *
 * Starts three nats-servers (every route through a TCP proxy), three dlm
 * nodes (each reaching NATS through proxies of its own, metrics on), and:
 *
 * - section workers (test/kit/sectionWorkers.ts): clients looping critical
 *   sections on "global" with journal lines, two of them through a fault
 *   injector that drops and duplicates ~20% of their requests and replies;
 * - a lock worker: acquire / renew / release on other lock names, and
 *   tryAcquire, through its own client;
 * - commit workers (test/kit/commitWorkers.ts): two clients looping
 *   one-request commits of 24 KiB sections into file_51, whose data rides
 *   in the log (large entries, paged reads).
 *
 * A seeded schedule injects one fault at a time, each healed before the
 * next: SIGKILL of a dlm node (restarted), SIGSTOP of the leader, SIGKILL of
 * a nats-server (restarted), a node's link cut, one direction of a node's
 * link blocked, a nats-server in the minority, the leader's nats-server
 * isolated, a route blocked one way, latency on a node's link, a section
 * worker's link cut.
 *
 * Every minute it prints, per node: RSS, V8 heap used, event-loop delay
 * p99, the log stream's messages and bytes, open sessions; and the
 * operations done so far. At the end it heals everything and checks: all
 * files identical on every node, the journal holds exactly what the
 * section outcomes allow, file_51 holds every acknowledged commit once
 * (read back through the client, in pages) and nothing torn, tokens increase, the fence held (no operation
 * under an older token acknowledged after a newer grant was seen), no node
 * exited on its own; and memory: for each node, a least-squares line
 * through its heap and RSS samples of the second half of the run (its last
 * incarnation only) must not rise by more than max(16 MiB, 20% of the mean)
 * over that half. Exits 1 on any violation, 0 otherwise.
 *
 *   npm run soak -- [--minutes 30] [--seed N] [--fault-every-s 20]
 *   (DLM_SOAK_MINUTES, DLM_SOAK_SEED also work)
 */
import { FaultInjector, type DlmClient, type FaultRule } from "../src/client";
import { mulberry32 } from "../src/client/faults";
import { helpText, int, parseArgs, UsageError, type CommandSpec } from "../src/cli/args";
import { sleep, startDlmCluster, type DlmTestCluster } from "../test/kit/dlmCluster";
import { JOURNAL_INDEX } from "../test/kit/journal";
import { scrape } from "../test/kit/metrics";
import { SectionWorkers } from "../test/kit/sectionWorkers";
import { CommitWorkers } from "../test/kit/commitWorkers";
import { growthProblems, slope, type MemorySample } from "./memoryGrowth";
import { exitOnInterrupt } from "./benchKit";

const spec: CommandSpec = {
  usage: "npm run soak -- [flags]",
  summary: "Mixed workload under kills, pauses, partitions, drops and duplicates; per-minute resource report; fails on any violation or growing memory.",
  flags: [
    { name: "minutes", kind: "int", default: Number(process.env.DLM_SOAK_MINUTES ?? 30), help: "how long to run (DLM_SOAK_MINUTES)" },
    { name: "seed", kind: "int", default: Number(process.env.DLM_SOAK_SEED ?? ((Date.now() ^ (process.pid << 8)) >>> 0)), help: "fault schedule seed (DLM_SOAK_SEED)" },
    { name: "fault-every-s", kind: "int", default: 20, help: "seconds from one fault's start to the next" },
  ],
};

const LEASE_MS = 2000;
/** How often memory and the other gauges are sampled (the report prints once a minute). */
const SAMPLE_MS = 10_000;
/** The drop/duplicate mix of the chaos test: about 20% of requests get a fault. */
const P = 1 - Math.cbrt(0.8);
const CHAOS_RULES: FaultRule[] = [
  { probability: P, action: { kind: "dropRequest" } },
  { probability: P, action: { kind: "dropReply" } },
  { probability: P / 2, action: { kind: "duplicateRequest", copies: 1, delayMs: 0 } },
  { probability: P / 2, action: { kind: "duplicateRequest", copies: 1, delayMs: 400 } },
  { probability: 0.1, action: { kind: "dropNotification" } },
];

interface Sample extends MemorySample {
  loopP99Ms: number;
  streamMessages: number;
  streamBytes: number;
  sessions: number;
  requests: number;
}

type Fault = { name: string; run: (c: DlmTestCluster, rand: () => number) => Promise<void> };

const MiB = 1024 * 1024;
/** The file the commit workers write (the section workers' journal is file_0). */
const COMMIT_FILE_INDEX = 51;

async function leaderIndex(c: DlmTestCluster): Promise<number> {
  const l = await c.waitForLeader(60_000);
  return c.nodes.findIndex((n) => n.name === `dlm-${l.id}`);
}

function pick<T>(rand: () => number, items: T[]): T {
  return items[Math.floor(rand() * items.length)]!;
}

/** Each fault injects, holds, and heals; the schedule waits for a leader afterwards. */
function faults(workerLinks: Array<{ cut(): void; heal(): void }>): Fault[] {
  const hold = (ms: number) => sleep(ms);
  return [
    {
      name: "SIGKILL a dlm node",
      run: async (c, rand) => {
        const n = c.nodes[Math.floor(rand() * c.nodes.length)]!;
        await n.kill("SIGKILL");
        await hold(3000);
        await n.restart();
      },
    },
    {
      name: "SIGSTOP the leader",
      run: async (c) => {
        const n = c.nodes[await leaderIndex(c)]!;
        await n.pause();
        await hold(5000);
        n.resume();
      },
    },
    {
      name: "SIGKILL a nats-server",
      run: async (c, rand) => {
        const s = c.natsServers[Math.floor(rand() * c.natsServers.length)]!;
        await s.kill();
        await hold(5000);
        await s.restart();
      },
    },
    {
      name: "cut a node off from NATS",
      run: async (c, rand) => {
        const i = rand() < 0.5 ? await leaderIndex(c) : Math.floor(rand() * c.nodes.length);
        c.links[i]!.cut();
        await hold(6000);
        c.links[i]!.heal();
      },
    },
    {
      name: "block one direction of the leader's link",
      run: async (c, rand) => {
        const i = await leaderIndex(c);
        c.links[i]!.block(rand() < 0.5 ? "toClient" : "toTarget");
        await hold(6000);
        c.links[i]!.heal();
      },
    },
    {
      name: "a nats-server in the minority",
      run: async (c, rand) => {
        c.routes!.isolate(Math.floor(rand() * 3));
        await hold(6000);
        c.routes!.heal();
      },
    },
    {
      name: "block a route one way",
      run: async (c, rand) => {
        const from = Math.floor(rand() * 3);
        c.routes!.block(from, (from + 1 + Math.floor(rand() * 2)) % 3);
        await hold(6000);
        c.routes!.heal();
      },
    },
    {
      name: "200 ms on a node's link",
      run: async (c, rand) => {
        const i = Math.floor(rand() * c.nodes.length);
        c.links[i]!.delay(200);
        await hold(6000);
        c.links[i]!.heal();
      },
    },
    {
      name: "cut a section worker off",
      run: async (_c, rand) => {
        const link = pick(rand, workerLinks);
        link.cut();
        await hold(LEASE_MS + 2000);
        link.heal();
      },
    },
  ];
}

async function sampleNode(c: DlmTestCluster, node: number, atMs: number): Promise<Sample | undefined> {
  try {
    const m = await scrape(c.metricsUrls[node]!);
    let requests = 0;
    for (const [k, v] of m) if (k.startsWith("dlm_request_duration_seconds_count")) requests += v;
    return {
      atMs,
      node,
      startTime: m.get("process_start_time_seconds") ?? 0,
      rss: m.get("process_resident_memory_bytes") ?? NaN,
      heap: m.get("nodejs_heap_size_used_bytes") ?? NaN,
      loopP99Ms: (m.get("nodejs_eventloop_lag_p99_seconds") ?? NaN) * 1000,
      streamMessages: m.get("dlm_stream_messages") ?? NaN,
      streamBytes: m.get("dlm_stream_bytes") ?? NaN,
      sessions: m.get("dlm_sessions") ?? NaN,
      requests,
    };
  } catch {
    return undefined; // down (killed, paused, restarting)
  }
}

async function main(): Promise<void> {
  const { flags, help } = parseArgs(spec, process.argv.slice(2));
  if (help) return void console.log(helpText(spec));
  const minutes = int(flags, "minutes");
  if (minutes < 1) throw new UsageError("--minutes must be at least 1");
  const seed = int(flags, "seed");
  const faultEveryMs = int(flags, "fault-every-s") * 1000;
  if (faultEveryMs < 10_000) throw new UsageError("--fault-every-s must be at least 10");
  const runMs = minutes * 60_000;
  const rand = mulberry32(seed);
  console.log(`soak: ${minutes} min, seed ${seed} (replay the schedule with --seed ${seed}), a fault every ${faultEveryMs / 1000} s`);

  exitOnInterrupt(undefined, false);
  const c = await startDlmCluster({ nodes: 3, nats: 3, proxied: true, routeProxies: true, leaseMs: LEASE_MS, metrics: {} });
  // The schedule only ever kills with SIGKILL; a node that exits with a
  // code of its own (an invariant, a start-up that gave up) is a failure,
  // and is restarted so the run goes on.
  const unexpectedExits: string[] = [];
  let closing = false;
  c.nodes.forEach((n) =>
    n.onExit((info) => {
      if (closing || info.signal !== null) return;
      unexpectedExits.push(`${n.name} exited on its own (code ${info.code}): ${n.tail(5).replace(/\n/g, " | ")}`);
      console.log(`  ${n.name} exited on its own (code ${info.code}); restarting it`);
      setTimeout(() => void n.restart().catch(() => undefined), 1000);
    }),
  );
  const problems: string[] = [];
  try {
    await c.waitForLeader(60_000);
    const sectionClients: DlmClient[] = [];
    const workerLinks: Array<{ cut(): void; heal(): void }> = [];
    for (let i = 0; i < 4; i++) {
      const injector = i < 2 ? new FaultInjector({ seed: (seed + i * 7919) >>> 0, rules: CHAOS_RULES }) : undefined;
      const { client, link } = await c.proxiedClient({ name: `soak-${i}`, requestTimeoutMs: 1000, ...(injector ? { faults: injector } : {}) });
      sectionClients.push(client);
      workerLinks.push(link);
    }
    const workers = new SectionWorkers(sectionClients, { lines: 2, tag: "s" });
    const commitClients = [await c.client({ name: "soak-commit-0" }), await c.client({ name: "soak-commit-1" })];
    const commitWorkers = new CommitWorkers(commitClients, { file: `file_${COMMIT_FILE_INDEX}`, sectionBytes: 24 * 1024, pauseMs: 250, tag: "big" });
    const lockClient = await c.client({ name: "soak-locks" });
    let lockOps = 0;
    let stopLocks = false;
    const lockLoop = (async () => {
      for (let n = 0; !stopLocks; n++) {
        try {
          const lock = `soak.${n % 4}`;
          const lease = await lockClient.acquire(lock, { leaseMs: LEASE_MS, signal: AbortSignal.timeout(15_000) });
          if (n % 3 === 0) await lease.renew();
          await lease.release();
          const other = await lockClient.tryAcquire(`soak.try.${n % 2}`);
          if (other) await other.release();
          lockOps++;
        } catch {
          await sleep(100);
        }
      }
    })();

    const started = performance.now();
    const samples: Sample[] = [];
    const schedule = faults(workerLinks);
    const faultCounts = new Map<string, number>();
    let stopFaults = false;
    const faultLoop = (async () => {
      await sleep(Math.min(faultEveryMs, 15_000));
      while (!stopFaults && performance.now() - started < runMs - faultEveryMs) {
        const fault = pick(rand, schedule);
        const t = performance.now();
        console.log(`  ${((t - started) / 60_000).toFixed(1).padStart(4)} min  fault: ${fault.name}`);
        try {
          await fault.run(c, rand);
        } catch (e) {
          console.log(`  fault "${fault.name}" failed to run: ${(e as Error).message}`);
        }
        faultCounts.set(fault.name, (faultCounts.get(fault.name) ?? 0) + 1);
        await sleep(Math.max(1000, faultEveryMs - (performance.now() - t)));
      }
    })();

    console.log("   min  node  rss MiB  heap MiB  loop p99 ms  stream msgs  stream MiB  sessions  node requests  sections committed  lock ops");
    let nextReport = 60_000;
    while (performance.now() - started < runMs) {
      await sleep(SAMPLE_MS);
      const at = performance.now() - started;
      const round = (await Promise.all(c.nodes.map((_, i) => sampleNode(c, i, at)))).filter((s): s is Sample => s !== undefined);
      samples.push(...round);
      if (at >= nextReport || at >= runMs) {
        nextReport += 60_000;
        for (const s of round) {
          console.log(
            `${(at / 60_000).toFixed(1).padStart(6)}  n${s.node + 1}  ${(s.rss / MiB).toFixed(1).padStart(8)}  ${(s.heap / MiB).toFixed(1).padStart(8)}  ${s.loopP99Ms.toFixed(1).padStart(11)}  ${String(s.streamMessages).padStart(11)}  ${(s.streamBytes / MiB).toFixed(2).padStart(10)}  ${String(s.sessions).padStart(8)}  ${String(s.requests).padStart(13)}  ${String(workers.committed()).padStart(18)}  ${String(lockOps).padStart(8)}`,
          );
        }
        if (round.length < c.nodes.length) console.log(`        (${c.nodes.length - round.length} node(s) did not answer: down for a fault)`);
      }
    }

    stopFaults = true;
    await faultLoop;
    c.routes!.heal();
    for (const l of c.links) l.heal();
    for (const l of workerLinks) l.heal();
    await Promise.all(c.natsServers.map((s) => (s.running ? Promise.resolve() : s.restart())));
    await Promise.all(c.nodes.map((n) => (n.running ? Promise.resolve() : n.restart())));
    await c.waitForLeader(60_000);
    stopLocks = true;
    await workers.stop();
    await commitWorkers.stop();
    await lockLoop;
    await c.expectFilesIdentical(60_000);
    problems.push(...workers.check(c.fileOn(0, JOURNAL_INDEX).toString("utf8")));
    const commitFile = await commitClients[0]!.read(`file_${COMMIT_FILE_INDEX}`);
    if (!commitFile.equals(c.fileOn(0, COMMIT_FILE_INDEX))) problems.push(`file_${COMMIT_FILE_INDEX} read through the client differs from the node's copy`);
    problems.push(...commitWorkers.check(commitFile.toString("latin1")));
    if (commitWorkers.committed() === 0) problems.push("no one-request commit was acknowledged");
    problems.push(...unexpectedExits);
    problems.push(...growthProblems(samples, runMs));
    if (workers.committed() === 0) problems.push("no section was committed");

    console.log("");
    console.log(`faults: ${JSON.stringify(Object.fromEntries(faultCounts))}`);
    console.log(`section workers: ${workers.summary()}`);
    console.log(`lock worker: ${lockOps} acquire/renew/release + tryAcquire rounds`);
    console.log(`commit workers: ${commitWorkers.summary()}, file_${COMMIT_FILE_INDEX} ${(commitFile.length / MiB).toFixed(1)} MiB`);
    for (let i = 0; i < c.nodes.length; i++) {
      const mine = samples.filter((s) => s.node === i && s.atMs >= runMs / 2);
      if (mine.length < 2) continue;
      const heapRate = (slope(mine.map((s) => [s.atMs, s.heap])) * 60_000) / MiB;
      const rssRate = (slope(mine.map((s) => [s.atMs, s.rss])) * 60_000) / MiB;
      console.log(`n${i + 1} second half: heap ${heapRate >= 0 ? "+" : ""}${heapRate.toFixed(2)} MiB/min, rss ${rssRate >= 0 ? "+" : ""}${rssRate.toFixed(2)} MiB/min (all incarnations)`);
    }
  } finally {
    closing = true;
    await c.close();
  }
  if (problems.length > 0) {
    console.log(`\nsoak FAILED (seed ${seed}): ${problems.length} problem(s)\n${problems.slice(0, 50).join("\n")}`);
    process.exitCode = 1;
  } else {
    console.log(`\nsoak passed (seed ${seed})`);
  }
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (err: unknown) => {
    console.error(err instanceof UsageError ? `usage: ${err.message}` : err);
    process.exit(err instanceof UsageError ? 2 : 1);
  },
);
