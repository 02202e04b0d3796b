/**
 * How long a brand-new node (empty data directory) takes to join a cluster
 * with a long history: 1 million log entries ever written and 100 MB in the
 * files, the log compacted several times.
 *
 *   1. Prefill: one nats-server; the bench writes the history straight into
 *      the log stream, as a leader would (a `leader` entry, a session, then
 *      entries of acquire + append (~100 B to file_(k % 100)) + release),
 *      each entry checked by applying it to the pure state machine first, and
 *      published with many acks in flight (a real leader waits for each).
 *   2. n1 starts on that log: it replays all of it (the old way a new node
 *      joined, timed), leads, stores a snapshot and compacts.
 *   3. A workload (8 workers, acquire/release of their own locks) runs for a
 *      while so the log is compacted several more times.
 *   4. n2 starts with an empty data directory: timed until it serves as a
 *      follower that has applied the whole log.
 *
 * Prints the times, the snapshot sizes and the stream's messages/bytes.
 * Asserts nothing.
 *
 *   npm run bench:bootstrap -- [--entries 1000000] [--file-mb 100] [--workload-seconds 20]
 *                              [--compact-every-entries 5000] [--no-sync] [--keep]
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { connect as natsConnect } from "@nats-io/transport-node";
import { jetstream, type PubAck } from "@nats-io/jetstream";
import { connect, type DlmClient } from "../src/client";
import { addNewestSnapshot, clusterStatus } from "../src/cli/statusCommand";
import { encodeEntry } from "../src/coordinator/entries";
import { startNatsServer } from "../src/local/natsServer";
import { spawnManaged, type ManagedProcess } from "../src/local/processes";
import { LogStream } from "../src/log/logStream";
import { DEFAULT_LIMITS } from "../src/protocol/limits";
import { names } from "../src/protocol/subjects";
import { apply, createState, type Command, type LogEntry } from "../src/state";
import { exitOnInterrupt } from "./benchKit";

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

function intFlag(name: string, fallback: number): number {
  const n = Number(flag(name, String(fallback)));
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`bad --${name}`);
  return n;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

/** Writes `entries` entries (the first two: leader, hello) carrying `fileBytes` bytes of appends in all. */
async function prefill(url: string, entries: number, fileBytes: number): Promise<void> {
  const nc = await natsConnect({ servers: url });
  const n = names();
  await LogStream.open(nc, { streamName: n.streamName, subject: n.logSubject, replicas: 1 });
  const js = jetstream(nc);
  const state = createState(DEFAULT_LIMITS);
  const client = "benchprefill01";
  const perEntry = Math.max(1, Math.ceil(fileBytes / Math.max(1, entries - 2)));
  const line = Buffer.alloc(perEntry, "a");
  line[perEntry - 1] = 0x0a;
  const data = line.toString("base64");
  let seq = 0;
  const inFlight: Array<Promise<PubAck>> = [];
  // A publish whose ack timed out is retried with the same message id: the
  // stream's duplicate window makes it land once.
  const publish = async (data: Uint8Array, msgID: string): Promise<PubAck> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await js.publish(n.logSubject, data, { msgID, timeout: 30_000 });
      } catch (err) {
        if (attempt >= 5) throw err;
      }
    }
  };
  const started = Date.now();
  for (let k = 0; k < entries; k++) {
    let cmds: Command[];
    if (k === 0) cmds = [{ type: "leader", node: "prefill", epoch: 1, limits: DEFAULT_LIMITS }];
    else if (k === 1) cmds = [{ type: "hello", client, seq: ++seq, ack: 0 }];
    else {
      const token = state.nextToken;
      const s = ++seq;
      cmds = [
        { type: "acquire", client, seq: s, ack: s - 1, lock: "global", leaseMs: 10_000, waitMs: 0 },
        { type: "append", client, seq: ++seq, ack: s, token, file: k % 100, data },
        { type: "release", client, seq: ++seq, ack: s + 1, lock: "global", token },
      ];
    }
    const entry: LogEntry = { v: 1, t: Date.now(), node: "prefill", epoch: 1, cmds };
    for (const effect of apply(state, entry)) {
      if (effect.type === "reply" && !effect.reply.ok) throw new Error(`prefill entry ${k + 1}: ${JSON.stringify(effect.reply)}`);
    }
    inFlight.push(publish(encodeEntry(entry), `prefill-${k}`));
    if (inFlight.length >= 500) await Promise.all(inFlight.splice(0));
    if (k > 0 && k % 200_000 === 0) console.log(`  prefill: ${k} entries, ${Math.round(k / ((Date.now() - started) / 1000))} entries/s`);
  }
  await Promise.all(inFlight);
  const total = state.fileLengths.reduce((a, b) => a + b, 0);
  console.log(`prefill: ${entries} entries, ${mb(total)} in the files, ${((Date.now() - started) / 1000).toFixed(1)} s`);
  await nc.close();
}

async function main(): Promise<void> {
  const entries = intFlag("entries", 1_000_000);
  const fileBytes = intFlag("file-mb", 100) * 1024 * 1024;
  const workloadSeconds = intFlag("workload-seconds", 20);
  const compactEvery = intFlag("compact-every-entries", 5000);
  const sync = !process.argv.includes("--no-sync");
  const keep = process.argv.includes("--keep");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dlm-bench-bootstrap-"));
  exitOnInterrupt(dir, keep);
  const nats = await startNatsServer({ storeDir: path.join(dir, "nats"), syncAlways: sync });
  const nodes: ManagedProcess[] = [];
  const clients: DlmClient[] = [];
  const nc = await natsConnect({ servers: nats.url });
  const startNode = (id: string) => {
    const node = spawnManaged(
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
        "--compact-check-ms",
        "1000",
      ],
      { name: id, logFile: path.join(dir, `${id}.log`) },
    );
    nodes.push(node);
    return node;
  };
  const extent = async () => {
    const s = await clusterStatus(nc, "dlm");
    await addNewestSnapshot(nc, "dlm", s);
    return s.log!;
  };
  try {
    console.log(`dlm bootstrap bench: 1 nats-server (sync_interval: ${sync ? "always" : "default"}), ${os.cpus().length} cores, data in ${dir}`);
    await prefill(nats.url, entries, fileBytes);
    let e = await extent();
    console.log(`log before any node ran: ${e.messages} entries, ${mb(e.bytes)}`);

    const n1Started = Date.now();
    const n1 = startNode("n1");
    const recovered = JSON.parse(await n1.waitForLine(/"recovered state from the log"/, 30 * 60_000)) as { replayMs: number };
    console.log(`n1 replayed the whole log from seq 1 (how a new node joined before compaction): ${recovered.replayMs} ms (${Date.now() - n1Started} ms from spawn)`);
    const stored = JSON.parse(await n1.waitForLine(/"snapshot stored and verified"/, 10 * 60_000)) as { seq: number; sizeBytes: number; uploadMs: number; totalMs: number };
    console.log(`first snapshot: seq ${stored.seq}, ${mb(stored.sizeBytes)}, upload ${stored.uploadMs} ms, upload + verify ${stored.totalMs} ms`);
    await n1.waitForLine(/"log compacted"/, 60_000);
    e = await extent();
    console.log(`after the first compaction: sequences ${e.firstSeq}..${e.lastSeq}, ${e.messages} entries, ${mb(e.bytes)}`);

    for (let i = 0; i < 8; i++) clients.push(await connect({ servers: nats.url, name: `w${i}` }));
    const deadline = Date.now() + workloadSeconds * 1000;
    let ops = 0;
    const latencies: number[] = [];
    const slow: Array<{ at: number; ms: number }> = [];
    const mark = n1.lineCount;
    const sampler = setInterval(() => {
      void extent().then((x) => console.log(`  workload: stream ${x.messages} entries, ${mb(x.bytes)}, first ${x.firstSeq}, snapshot ${x.snapshot?.seq ?? "-"}`));
    }, 5000);
    await Promise.all(
      clients.map(async (client, i) => {
        while (Date.now() < deadline) {
          const t0 = performance.now();
          await client.release(await client.acquire(`bench-${i}`));
          const ms = performance.now() - t0;
          latencies.push(ms);
          if (ms > 500) slow.push({ at: Date.now(), ms });
          ops++;
        }
      }),
    );
    clearInterval(sampler);
    await sleep(3000); // let the compactor finish its round
    e = await extent();
    console.log(`after ${workloadSeconds} s of workload (${ops} acquire/release): sequences ${e.firstSeq}..${e.lastSeq}, ${e.messages} entries, ${mb(e.bytes)}`);
    latencies.sort((a, b) => a - b);
    const at = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!.toFixed(1);
    const uploads = n1
      .tail(n1.lineCount - mark)
      .split("\n")
      .filter((l) => l.includes('"snapshot stored and verified"')).length;
    console.log(`  acquire+release latency while the leader stored ${uploads} snapshots of the files: p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${at(1)} ms`);
    if (process.env.DLM_BENCH_DEBUG === "1") {
      for (const l of n1.tail(n1.lineCount - mark).split("\n")) if (/snapshot stored|log compacted/.test(l)) console.log(`  ${l.slice(0, 260)}`);
      for (const x of slow) console.log(`  slow cycle ended at ${x.at}: ${x.ms.toFixed(0)} ms`);
    }

    const before = (await clusterStatus(nc, "dlm")).lastSeq ?? 0;
    const n2Started = Date.now();
    const n2 = startNode("n2");
    const loaded = JSON.parse(await n2.waitForLine(/"loaded a stored snapshot"/, 10 * 60_000)) as { seq: number; sizeBytes: number; loadMs: number };
    let ready = 0;
    for (;;) {
      const s = await clusterStatus(nc, "dlm");
      const info = s.nodes.find((x) => x.nodeId === "n2");
      if (info && info.role === "follower" && s.lastSeq !== null && info.appliedSeq >= Math.max(before, s.lastSeq)) {
        ready = Date.now() - n2Started;
        break;
      }
      await sleep(50);
    }
    console.log(
      `n2 (empty data directory) serving as a follower, caught up: ${ready} ms from spawn ` +
        `(snapshot seq ${loaded.seq}, ${mb(loaded.sizeBytes)}, download + verify + install ${loaded.loadMs} ms)`,
    );
    const sizes = fs.readdirSync(path.join(dir, "n2", "files")).reduce((sum, f) => sum + fs.statSync(path.join(dir, "n2", "files", f)).size, 0);
    console.log(`n2's files: ${mb(sizes)}`);
  } finally {
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
