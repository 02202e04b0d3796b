/**
 * The log's footprint over time under a steady workload: one nats-server
 * (sync_interval: always), three dlm nodes, `--workers` clients doing
 * acquire/release cycles on their own locks and one client committing
 * sections of appends to the files. Every `--interval-s` it prints the
 * stream's entries and bytes, its first and last sequence, the newest
 * stored snapshot and the files' size; at the end the largest values seen
 * and whether the three nodes' files are identical. Asserts nothing.
 *
 *   npm run soak:compaction -- [--minutes 30] [--interval-s 60] [--workers 8]
 *                              [--compact-every-entries 50000] [--retain-entries 10000] [--keep]
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { connect as natsConnect } from "@nats-io/transport-node";
import { connect, type DlmClient } from "../src/client";
import { addNewestSnapshot, clusterStatus } from "../src/cli/statusCommand";
import { startNatsServer } from "../src/local/natsServer";
import { spawnManaged, type ManagedProcess } from "../src/local/processes";
import { FILE_COUNT, fileName } from "../src/protocol/files";
import { NODE_DEFAULTS } from "../src/replica/node";
import { exitOnInterrupt } from "./benchKit";

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

function numFlag(name: string, fallback: number): number {
  const n = Number(flag(name, String(fallback)));
  if (!Number.isFinite(n) || n < 0) throw new Error(`bad --${name}`);
  return n;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const mib = (bytes: number) => (bytes / 1024 / 1024).toFixed(2);

async function main(): Promise<void> {
  const minutes = numFlag("minutes", 30);
  const intervalMs = numFlag("interval-s", 60) * 1000;
  const workers = numFlag("workers", 8);
  const compactEvery = numFlag("compact-every-entries", NODE_DEFAULTS.compaction.snapshotEveryEntries);
  const retain = numFlag("retain-entries", NODE_DEFAULTS.compaction.retainEntries);
  const keep = process.argv.includes("--keep");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dlm-soak-compaction-"));
  exitOnInterrupt(dir, keep);
  const nats = await startNatsServer({ storeDir: path.join(dir, "nats"), syncAlways: true });
  const nc = await natsConnect({ servers: nats.url });
  const nodes: ManagedProcess[] = [];
  const clients: DlmClient[] = [];
  for (const id of ["n1", "n2", "n3"]) {
    nodes.push(
      spawnManaged(
        process.execPath,
        [
          path.join(__dirname, "../src/cli/main.js"),
          "node",
          "--nats",
          nats.url,
          "--id",
          id,
          "--data",
          path.join(dir, id),
          "--compact-every-entries",
          String(compactEvery),
          "--retain-entries",
          String(retain),
        ],
        { name: id, logFile: path.join(dir, `${id}.log`) },
      ),
    );
  }
  let stopped = false;
  try {
    await Promise.all(nodes.map((n) => n.waitForLine(/node ready/, 60_000)));
    console.log(
      `compaction soak: ${minutes} min, 1 nats-server (sync always), 3 nodes, ${workers} lock workers + 1 writer, ` +
        `snapshot every ${compactEvery} entries, margin ${retain}, ${os.cpus().length} cores; data in ${dir}`,
    );
    console.log("minute  stream entries  stream MiB  first seq   last seq  snapshot seq (age s, MiB)  files MiB  ops");
    for (let i = 0; i < workers; i++) clients.push(await connect({ servers: nats.url, name: `w${i}` }));
    const writer = await connect({ servers: nats.url, name: "writer" });
    clients.push(writer);
    let ops = 0;
    const loops = clients.slice(0, workers).map(async (client, i) => {
      while (!stopped) {
        await client.release(await client.acquire(`soak-${i}`));
        ops++;
      }
    });
    let section = 0;
    loops.push(
      (async () => {
        while (!stopped) {
          const lease = await writer.acquire("global");
          await writer.append(fileName(section % FILE_COUNT), `section ${section} token ${lease.token} ${"x".repeat(100)}\n`);
          await writer.release(lease);
          section++;
          ops++;
        }
      })(),
    );
    const started = Date.now();
    let maxEntries = 0;
    let maxBytes = 0;
    const report = async () => {
      const s = await clusterStatus(nc, "dlm");
      await addNewestSnapshot(nc, "dlm", s);
      const log = s.log;
      if (!log) return;
      maxEntries = Math.max(maxEntries, log.messages);
      maxBytes = Math.max(maxBytes, log.bytes);
      const files = s.leader ? s.leader.fileLengths.reduce((a, b) => a + b, 0) : 0;
      const snap = log.snapshot ? `${log.snapshot.seq} (${Math.round(log.snapshot.ageMs / 1000)}, ${mib(log.snapshot.sizeBytes)})` : "-";
      console.log(
        `${((Date.now() - started) / 60_000).toFixed(1).padStart(6)}  ${String(log.messages).padStart(14)}  ${mib(log.bytes).padStart(10)}  ` +
          `${String(log.firstSeq).padStart(9)}  ${String(log.lastSeq).padStart(9)}  ${snap.padStart(25)}  ${mib(files).padStart(9)}  ${ops}`,
      );
    };
    await report();
    while (Date.now() - started < minutes * 60_000) {
      await sleep(Math.min(intervalMs, minutes * 60_000 - (Date.now() - started)));
      await report();
    }
    stopped = true;
    await Promise.all(loops);
    await sleep(2000);
    const s = await clusterStatus(nc, "dlm", 3);
    const caughtUp = s.nodes.every((n) => n.appliedSeq === s.lastSeq);
    let identical = true;
    for (let f = 0; f < FILE_COUNT; f++) {
      const [a, ...rest] = ["n1", "n2", "n3"].map((id) => fs.readFileSync(path.join(dir, id, "files", fileName(f))));
      if (!rest.every((b) => b.equals(a!))) identical = false;
    }
    console.log(`largest seen: ${maxEntries} entries, ${mib(maxBytes)} MiB; nodes caught up: ${caughtUp}; files identical on all nodes: ${identical}`);
  } finally {
    stopped = true;
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    await nc.close().catch(() => undefined);
    await Promise.all(nodes.map((n) => n.stop()));
    await nats.stop();
    if (keep) console.log(`kept ${dir}`);
    else fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
