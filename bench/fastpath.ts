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
 *   relay     for context: a request to a responder in another process that
 *             makes one such publish before it answers (relayResponder.ts),
 *             the path of a dlm request with nothing of dlm in it; what a
 *             request costs above it is dlm's own.
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
import type { NatsConnection } from "@nats-io/nats-core";
import { connect, type DlmClient } from "../src/client";
import { CpuMeter, exitOnInterrupt, measure, measureFloor, NODES, PAYLOAD, percentile, startDeployment, type Result } from "./benchKit";
import { checkTargets, formatTargets } from "./targets";
import { helpText, parseArgs, splitList, UsageError, type CommandSpec } from "../src/cli/args";


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
    const deployment = await startDeployment({ natsCount, base, nodeArgs, nodeMain, profileDir, cleanups });
    const { urls, nc } = deployment;
    const cpu = new CpuMeter(deployment.procs);

    console.log("");
    console.log(`== ${natsCount} nats-server${natsCount > 1 ? "s (log and leader bucket R3)" : ""}, sync_interval: always; ${NODES} dlm nodes; ${seconds}s per workload; ${os.cpus().length} cores`);
    const floor = await measureFloor(urls, natsCount, Math.max(1, seconds / 2));
    const rr = percentile(floor.rr, 50);
    const pub = percentile(floor.pub, 50);
    const floorMs = rr + pub;
    console.log(
      `floor: request-reply p50 ${rr.toFixed(2)} ms (p99 ${percentile(floor.rr, 99).toFixed(2)}), JetStream fsynced publish p50 ${pub.toFixed(2)} ms (p99 ${percentile(floor.pub, 99).toFixed(2)}); floor = ${floorMs.toFixed(2)} ms`,
    );
    const relay = percentile(floor.relay, 50);
    console.log(
      `relay: request to another process that makes one fsynced publish, then answers (a dlm request's path, no dlm in it): p50 ${relay.toFixed(2)} ms = ${(relay / floorMs).toFixed(2)}x floor`,
    );
    const logFirst = percentile(floor.logFirst, 50);
    console.log(
      `log-first: the client publishes into a stream, another process answers once it reads it (a design dlm does not take, logFollower.ts): p50 ${logFirst.toFixed(2)} ms = ${(logFirst / floorMs).toFixed(2)}x floor`,
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
    /** Each workload's result by its key, for the targets. */
    const byKey = new Map<string, Result>();
    const keep = (key: string, r: Result): Result => {
      byKey.set(key, r);
      return r;
    };
    const [solo] = await open(1, 1);
    if (wanted("section")) {
      results.push(
        keep(
          "section",
          await measure("section: acquire -> append 16 B -> release (1 client)", nc, cpu, 1, seconds, async () => {
            const lease = await solo.acquire("global");
            await solo.append("file_0", PAYLOAD, { lease });
            await lease.release();
          }),
        ),
      );
    }
    if (wanted("commit")) {
      results.push(
        keep(
          "commit",
          await measure("commit: client.commit([16 B]) (1 client)", nc, cpu, 1, seconds, async () => {
            await solo.commit([{ file: "file_1", data: PAYLOAD }]);
          }),
        ),
      );
    }
    if (wanted("handoff")) {
      const contenders = await open(32, 32);
      results.push(
        keep(
          "handoff",
          await measure("handoff: 32 clients on one lock, acquire -> append 16 B -> release", nc, cpu, 32, seconds, async (i) => {
            const c = contenders[i];
            const lease = await c.acquire("global");
            await c.append("file_2", PAYLOAD, { lease });
            await lease.release();
          }),
        ),
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
        keep(
          "locks",
          await measure("locks: 256 clients on 256 locks (32 connections), acquire -> release", nc, cpu, 256, seconds, async (i) => {
            const lease = await many[i].acquire(`bench-${i}`);
            await lease.release();
          }),
        ),
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
    const rate = (key: string): number | undefined => {
      const r = byKey.get(key);
      return r ? r.cycles / r.seconds : undefined;
    };
    const verdicts = checkTargets({
      floorMs,
      relayP50Ms: relay,
      sectionP50Ms: byKey.get("section")?.p50,
      commitP50Ms: byKey.get("commit")?.p50,
      handoffsPerSecond: rate("handoff"),
      locksPerSecond: rate("locks"),
    });
    if (verdicts.length > 0) {
      console.log("");
      console.log(`issue 10's targets${natsCount === 1 ? "" : " (set for 1 nats-server; shown here for comparison)"}:`);
      for (const line of formatTargets(verdicts)) console.log(line);
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
  exitOnInterrupt(dir, keep);
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
