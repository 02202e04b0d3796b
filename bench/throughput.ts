/**
 * Throughput and latency of acquire/release cycles at several levels of
 * concurrency, against one nats-server (sync_interval: always) and one dlm
 * node. Each worker uses its own lock, so the numbers measure the log path
 * (validation, group commit, JetStream round trip, apply, reply), not
 * contention. Prints a table; asserts nothing.
 *
 *   npm run bench:throughput -- [--seconds 5] [--levels 1,8,32,128] [--no-sync] [--metrics]
 *                               [--user U --password P | --token T]  (the local nats-server requires them)
 *
 * --metrics runs the node with its metrics port on, scrapes it once a
 * second during the run (a demanding Prometheus), and at the end prints the
 * size of one scrape and how long it took; run with and without it to see
 * what metrics cost.
 */
import * as os from "os";
import * as path from "path";
import * as fs from "fs";
import { connect, type DlmClient } from "../src/client";
import { startNatsServer } from "../src/local/natsServer";
import { httpGet } from "../src/local/natsServer";
import { freePort } from "../src/local/ports";
import { spawnManaged } from "../src/local/processes";
import { clusterStatus } from "../src/cli/statusCommand";
import { connect as natsConnect } from "@nats-io/transport-node";
import { helpText, int, parseArgs, splitList, str, UsageError, type CommandSpec } from "../src/cli/args";
import { LOCAL_AUTH_FLAGS, localServerAuth } from "../src/cli/natsFlags";
import { exitOnInterrupt } from "./benchKit";

const spec: CommandSpec = {
  usage: "npm run bench:throughput -- [flags]",
  summary: "Acquire/release throughput and latency at several levels of concurrency against a local nats-server and one node.",
  flags: [
    { name: "seconds", kind: "int", default: 5, help: "seconds per level" },
    { name: "levels", kind: "string", default: "1,8,32,128", help: "worker counts, comma-separated" },
    { name: "no-sync", kind: "bool", help: "let nats-server batch fsyncs" },
    { name: "metrics", kind: "bool", help: "run the node with its metrics port on and scrape it every second" },
    ...LOCAL_AUTH_FLAGS,
  ],
};

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function main(): Promise<void> {
  const { flags, help } = parseArgs(spec, process.argv.slice(2));
  if (help) return void console.log(helpText(spec));
  const seconds = int(flags, "seconds");
  const levels = splitList(str(flags, "levels")).map(Number);
  if (seconds < 1 || levels.some((n) => !Number.isInteger(n) || n < 1)) throw new UsageError("--seconds and --levels need positive integers");
  const sync = flags["no-sync"] !== true;
  const auth = localServerAuth(flags);
  const metricsPort = flags.metrics === true ? await freePort() : 0;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dlm-bench-"));
  exitOnInterrupt(dir, false);
  const nats = await startNatsServer({ storeDir: path.join(dir, "nats"), syncAlways: sync, authorization: auth.server });
  const node = spawnManaged(
    process.execPath,
    [path.join(__dirname, "../src/cli/main.js"), "node", "--nats", nats.url, "--id", "b1", "--data", path.join(dir, "b1"), "--log-level", "info", "--metrics-port", String(metricsPort)],
    { name: "b1", logFile: path.join(dir, "b1.log"), env: auth.env },
  );
  const nc = await natsConnect({ ...auth.client, servers: nats.url });
  const clients: DlmClient[] = [];
  const scraper = metricsPort
    ? setInterval(() => void httpGet("127.0.0.1", metricsPort, "/metrics", 5000).catch(() => undefined), 1000)
    : undefined;
  try {
    await node.waitForLine(/node ready/, 30_000);
    console.log(
      `dlm throughput: 1 nats-server (sync_interval: ${sync ? "always" : "default"}), 1 node, metrics ${metricsPort ? "on" : "off"}, ${seconds}s per level, ${os.cpus().length} cores`,
    );
    console.log("one op = acquire + release on the worker's own lock (2 log commands)");
    console.log("");
    console.log("workers   ops/s   p50 ms   p99 ms   max ms   commands/entry");
    for (const level of levels) {
      while (clients.length < level) clients.push(await connect({ ...auth.client, servers: nats.url, name: `w${clients.length}` }));
      const before = (await clusterStatus(nc, "dlm")).nodes[0].metrics;
      const latencies: number[] = [];
      const deadline = Date.now() + seconds * 1000;
      await Promise.all(
        clients.slice(0, level).map(async (client, i) => {
          while (Date.now() < deadline) {
            const started = performance.now();
            const lease = await client.acquire(`bench-${i}`);
            await client.release(lease);
            latencies.push(performance.now() - started);
          }
        }),
      );
      const after = (await clusterStatus(nc, "dlm")).nodes[0].metrics;
      latencies.sort((a, b) => a - b);
      const perEntry = (after.commandsLogged - before.commandsLogged) / Math.max(1, after.entriesAppended - before.entriesAppended);
      console.log(
        `${String(level).padStart(7)} ${String(Math.round(latencies.length / seconds)).padStart(7)} ${percentile(latencies, 50).toFixed(1).padStart(8)} ${percentile(latencies, 99).toFixed(1).padStart(8)} ${latencies[latencies.length - 1].toFixed(1).padStart(8)} ${perEntry.toFixed(1).padStart(16)}`,
      );
    }
    if (metricsPort) {
      const started = performance.now();
      const scrape = await httpGet("127.0.0.1", metricsPort, "/metrics", 5000);
      const ms = performance.now() - started;
      console.log("");
      console.log(`one /metrics scrape of the leader: ${Buffer.byteLength(scrape.body)} bytes, ${scrape.body.split("\n").filter((l) => l && !l.startsWith("#")).length} samples, ${ms.toFixed(1)} ms`);
    }
  } finally {
    clearInterval(scraper);
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    await nc.close();
    await node.stop();
    await nats.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof UsageError ? `usage: ${err.message}` : err);
  process.exit(err instanceof UsageError ? 2 : 1);
});
