/**
 * `dlm up`: a whole local deployment in one command: nats-server (one, or a
 * three-server JetStream cluster) and dlm nodes as child processes, data
 * under one directory, logs in files. Ctrl-C stops everything cleanly
 * (nodes first, so the leader hands over and flushes, then NATS), at any
 * point: during start-up and the demo as well as after.
 */
import * as fs from "fs";
import * as path from "path";
import type { NatsConnection } from "@nats-io/nats-core";
import { startNatsCluster, startNatsServer } from "../local/natsServer";
import { emptyDirectoryExcept, lockDirectory } from "../local/dirLock";
import { freePort } from "../local/ports";
import { killAllTrackedChildren, spawnManaged, type ManagedProcess } from "../local/processes";
import { DEFAULT_LIMITS } from "../protocol/limits";
import { DEFAULT_PREFIX } from "../protocol/subjects";
import { int, MAX_PORT, parseArgs, str, UsageError, type CommandSpec } from "./args";
import { runDemo } from "./demo";
import { connectNats, LOCAL_AUTH_FLAGS, localServerAuth, localServerConnection } from "./natsFlags";
import { clusterStatus, formatStatus } from "./statusCommand";
import { sleep } from "../client/retry";
import { untilAborted, whenAborted } from "../util/untilAborted";

/** First metrics port of `dlm up`: clear of NATS (4222, 6222, 8222) and of common exporters (9090, 9100). */
export const UP_METRICS_PORT = 9470;

export const upSpec: CommandSpec = {
  usage: "dlm up [flags]",
  summary:
    "Starts a local deployment: nats-server with JetStream (fsync on every write) and dlm nodes, data\n" +
    "and logs under --dir. With --demo it runs a short workload against it, prints what happened, and\n" +
    "stops; otherwise it runs until Ctrl-C.",
  flags: [
    { name: "nats", kind: "int", default: 1, help: "nats-servers: 1, or 3 for a JetStream cluster" },
    { name: "nodes", kind: "int", default: 1, min: 1, max: 9, help: "dlm nodes (one leads, the others stand by)" },
    { name: "port", kind: "int", default: 4222, max: MAX_PORT, help: "client port of the first nats-server (the next ones use +1, +2); 0 picks free ports" },
    { name: "dir", kind: "string", default: ".dlm/local", help: "directory for NATS storage, node data and logs" },
    { name: "fresh", kind: "bool", help: "delete --dir first (start from an empty log)" },
    // The nodes refuse a default lease outside the limits' bounds; dlm up does not set those.
    { name: "lease-ms", kind: "int", default: 10_000, min: DEFAULT_LIMITS.minLeaseMs, max: DEFAULT_LIMITS.maxLeaseMs, help: "default lock lease of the nodes" },
    { name: "no-sync", kind: "bool", help: "let nats-server batch fsyncs (faster, may lose acknowledged writes on power loss)" },
    { name: "prefix", kind: "string", default: DEFAULT_PREFIX, help: "subject prefix" },
    { name: "demo", kind: "bool", help: "run the demo workload, then stop" },
    {
      name: "metrics-port",
      kind: "int",
      default: UP_METRICS_PORT,
      max: MAX_PORT,
      help: "HTTP port of n1's /metrics, /healthz, /readyz (n2 the next one…); 0, or --port 0, picks free ports",
    },
    ...LOCAL_AUTH_FLAGS,
  ],
};

const mainJs = path.resolve(__dirname, "main.js");


export async function runUp(argv: string[]): Promise<void> {
  const { flags } = parseArgs(upSpec, argv);
  const natsCount = int(flags, "nats");
  const nodeCount = int(flags, "nodes");
  if (natsCount !== 1 && natsCount !== 3) throw new UsageError(`flag --nats must be 1 or 3, got ${natsCount}`);
  const basePort = int(flags, "port");
  const metricsBase = int(flags, "metrics-port");
  // The flags' ranges hold each port; the servers and nodes after the first use the next ones.
  if (basePort + natsCount - 1 > MAX_PORT) throw new UsageError(`flag --port must be at most ${MAX_PORT - natsCount + 1} with --nats ${natsCount}, got ${basePort}`);
  if (metricsBase + nodeCount - 1 > MAX_PORT) {
    throw new UsageError(`flag --metrics-port must be at most ${MAX_PORT - nodeCount + 1} with --nodes ${nodeCount}, got ${metricsBase}`);
  }
  // Bad credentials flags are usage errors, found before --fresh deletes anything.
  const auth = localServerAuth(flags);
  const dir = path.resolve(str(flags, "dir"));
  // Claim the directory before anything is started or deleted: a second
  // `dlm up` on a live directory must fail without touching it (exit 6).
  const dirLock = lockDirectory(dir);
  if (flags.fresh) emptyDirectoryExcept(dir, path.basename(dirLock.path));
  const logsDir = path.join(dir, "logs");
  fs.mkdirSync(logsDir, { recursive: true });
  const prefix = str(flags, "prefix");
  const say = (line: string) => process.stdout.write(`${line}\n`);

  // Signals are handled from the very start: the children run in their own
  // process groups, so if Ctrl-C killed this process before its handler was
  // installed they would be orphaned. The first signal aborts `interrupt`:
  // whatever start-up or the demo is waiting for gives up at once, and
  // everything started so far is stopped the way a Ctrl-C after start-up
  // stops it (nodes first, then NATS). A second signal kills every child at
  // once.
  const interrupt = new AbortController();
  let phase: "start-up" | "demo" | "running" | "stopping" = "start-up";
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals === 1) {
      // After start-up a signal is the normal way to stop; before, or
      // during the demo, the user must see that it was cut short.
      if (phase === "start-up" || phase === "demo") say(`interrupted (${signal}) during the ${phase}: stopping what was started`);
      interrupt.abort(new Error(`dlm up was interrupted by ${signal}`));
      return;
    }
    killAllTrackedChildren();
    process.exit(130);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const signal = interrupt.signal;

  // What has been started so far, for stopAll().
  const nodes: ManagedProcess[] = [];
  let stopNats: (() => Promise<void>) | undefined;
  let nc: NatsConnection | undefined;
  let stopped: Promise<void> | undefined;
  const stopAll = (): Promise<void> =>
    (stopped ??= (async () => {
      phase = "stopping";
      say("stopping: dlm nodes first (leader hands over), then NATS");
      await nc?.close().catch(() => undefined);
      await Promise.all(nodes.map((n) => (n.running ? n.stop(5000) : Promise.resolve())));
      await stopNats?.();
      dirLock.release();
      say("stopped");
    })());

  try {
    say(`dlm up: ${natsCount} nats-server${natsCount > 1 ? "s" : ""}, ${nodeCount} dlm node${nodeCount > 1 ? "s" : ""}, data in ${dir}`);
    let urls: string[];
    if (natsCount === 1) {
      const server = await startNatsServer({
        storeDir: path.join(dir, "nats", "s1"),
        port: basePort === 0 ? undefined : basePort,
        serverName: "s1",
        syncAlways: !flags["no-sync"],
        logFile: path.join(logsDir, "nats-s1.log"),
        authorization: auth.server,
        signal,
      });
      urls = [server.url];
      stopNats = () => server.stop();
    } else {
      const cluster = await startNatsCluster({
        size: 3,
        baseDir: path.join(dir, "nats"),
        syncAlways: !flags["no-sync"],
        names: ["s1", "s2", "s3"],
        ports: basePort === 0 ? undefined : [basePort, basePort + 1, basePort + 2],
        authorization: auth.server,
        signal,
      });
      urls = cluster.urls;
      stopNats = () => cluster.stop();
    }
    say(`  nats: ${urls.join(", ")}${flags["no-sync"] ? "" : " (sync_interval: always)"}`);

    const metricsUrls: string[] = [];
    for (let i = 1; i <= nodeCount; i++) {
      signal.throwIfAborted();
      const id = `n${i}`;
      const metricsPort = metricsBase === 0 || basePort === 0 ? await freePort() : metricsBase + i - 1;
      metricsUrls.push(`http://127.0.0.1:${metricsPort}`);
      nodes.push(
        spawnManaged(
          process.execPath,
          [
            mainJs,
            "node",
            "--nats",
            urls.join(","),
            "--id",
            id,
            "--data",
            path.join(dir, "data", id),
            "--replicas",
            String(natsCount),
            "--lease-ms",
            String(int(flags, "lease-ms")),
            "--prefix",
            prefix,
            "--metrics-port",
            String(metricsPort),
          ],
          // Credentials go by environment, not argv, so they do not show in `ps`.
          { name: id, logFile: path.join(logsDir, `${id}.log`), env: auth.env },
        ),
      );
    }
    say(`  nodes: ${nodes.map((n) => `${n.name} (pid ${n.pid})`).join(", ")}; logs in ${logsDir}`);
    say(`  metrics: ${nodes.map((n, i) => `${n.name} ${metricsUrls[i]}/metrics`).join(", ")} (also /healthz, /readyz)`);

    // A connection that opens after an interrupt is closed as it arrives.
    const status = await untilAborted(connectNats(localServerConnection(auth, urls), { name: "dlm-up" }), signal, (late) => void late.close().catch(() => undefined));
    nc = status;
    const leader = await waitForLeader(status, prefix, nodes, 60_000, signal);
    say(`  leader: ${leader}`);
    say("");
    if (flags.demo) {
      phase = "demo";
      const waitNodeVisible = async (nodeId: string): Promise<void> => {
        const deadline = Date.now() + 30_000;
        while (!(await untilAborted(clusterStatus(status, prefix), signal)).nodes.some((n) => n.nodeId === nodeId && n.role !== "starting")) {
          if (Date.now() > deadline) throw new Error(`node ${nodeId} did not come back within 30 s`);
        }
      };
      await runDemo({ servers: urls, nats: auth.client, prefix, nodes, say, waitNodeVisible, signal });
      say("");
      // Standbys poll the log (up to 100 ms apart when it is quiet): give
      // them a moment, so the last status shows the state the demo left.
      const expected = nodes.filter((n) => n.running).length;
      const now = () => untilAborted(clusterStatus(status, prefix, expected), signal);
      let last = await now();
      for (const deadline = Date.now() + 5000; Date.now() < deadline; last = await now()) {
        const caughtUp = last.lastSeq !== null && last.nodes.length === expected && last.nodes.every((n) => n.appliedSeq >= last.lastSeq!);
        if (caughtUp) break;
        await sleep(100, signal);
      }
      say(formatStatus(last));
      await stopAll();
      return;
    }
    // npx finds the dlm command both in a project that installed the
    // package and in a checkout of this repository.
    say("ready. Try, in another terminal:");
    say(`  npx dlm status --server ${urls[0]}${auth.hint}`);
    say(`  npx dlm client --server ${urls[0]}${auth.hint}`);
    say("Ctrl-C stops everything.");
    phase = "running";
    nc = undefined;
    await status.close();
    for (const node of nodes) {
      node.onExit((info) => {
        if (phase === "running") say(`node ${node.name} exited (${info.signal ?? `code ${info.code}`}); see ${path.join(logsDir, `${node.name}.log`)}`);
      });
    }
    await whenAborted(signal);
    await stopAll();
  } catch (err) {
    await stopAll();
    // Interrupted, the error is only how the abort reached this point: the
    // stop was asked for, and done.
    if (!signal.aborted) throw err;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

async function waitForLeader(nc: NatsConnection, prefix: string, nodes: ManagedProcess[], timeoutMs: number, signal: AbortSignal): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const dead = nodes.find((n) => !n.running);
    if (dead) throw new Error(`node ${dead.name} exited during start-up:\n${dead.tail(20)}`);
    const status = await untilAborted(clusterStatus(nc, prefix), signal);
    if (status.leader?.leader) return `${status.leader.leader} (epoch ${status.leader.epoch})`;
    await sleep(250, signal);
  }
  throw new Error(`no dlm node became leader within ${timeoutMs} ms:\n${nodes.map((n) => n.tail(10)).join("\n")}`);
}
