/**
 * The sizes the default limits promise, on real processes: one nats-server
 * (sync_interval: always) and one dlm node.
 *
 * 1. Log growth: bytes the stream grows by for one acquire, one 100-byte
 *    append and one release, each alone in its entry.
 * 2. 10,000 waiters on one lock: their sessions say hello, queue behind a
 *    holder (the `position` in each "queued" answer is the enqueue order),
 *    then each releases as soon as it is granted. Prints the leader's RSS
 *    idle, with the sessions, with every waiter queued and at the end, the
 *    time to serve them all and the throughput, and checks that the grant
 *    order is the enqueue order (FIFO).
 * 3. 100,000 sessions: how long their hellos take, the leader's RSS with
 *    them idle, the leader's CPU while they sit idle (its 50 ms tick must
 *    not visit them all), and how fast it answers one heartbeat (ping) from
 *    each, which is the load 100,000 live clients put on it.
 *
 * Sessions speak the raw wire protocol over a few NATS connections (no
 * client library: 100,000 library clients would measure the bench, not the
 * node). The node runs with a one-hour session timeout so that sessions that
 * send no heartbeats stay for the whole run. Asserts nothing but FIFO order.
 *
 *   npm run bench:waiters -- [--waiters 10000] [--sessions 100000]
 *                            [--connections 4] [--window 256] [--no-sync] [--keep]
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { connect as natsConnect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { jetstreamManager } from "@nats-io/jetstream";
import { startNatsServer } from "../src/local/natsServer";
import { spawnManaged } from "../src/local/processes";
import type { Notification, Reply } from "../src/protocol/messages";
import { names } from "../src/protocol/subjects";
import { exitOnInterrupt } from "./benchKit";

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

const WAITERS = Number(flag("waiters", "10000"));
const SESSIONS = Number(flag("sessions", "100000"));
const CONNECTIONS = Number(flag("connections", "4"));
/** Requests in flight at once. */
const WINDOW = Number(flag("window", "256"));
const LOCK = "bench";
const subjects = names();
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Resident memory of a process, in bytes (VmRSS of /proc/<pid>/status). */
function rssBytes(pid: number): number {
  const line = fs.readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:"));
  if (!line) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(line.split(/\s+/)[1]) * 1024;
}

/** CPU time a process has used (user + system), in ms. */
function cpuMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the command name.
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

class Wire {
  private next = 0;
  constructor(readonly conns: NatsConnection[]) {}

  /** One request, retried with the same body through timeouts, no responders, NOT_LEADER and back-pressure. */
  async call(body: object): Promise<Reply> {
    const data = encoder.encode(JSON.stringify(body));
    for (let attempt = 1; ; attempt++) {
      const nc = this.conns[this.next++ % this.conns.length];
      try {
        const msg = await nc.request(subjects.requestSubject, data, { timeout: 10_000 });
        const reply = JSON.parse(decoder.decode(msg.data)) as Reply;
        if (reply.ok || (reply.error !== "NOT_LEADER" && reply.error !== "LIMIT_EXCEEDED") || attempt > 50) return reply;
        if (reply.error === "LIMIT_EXCEEDED" && !reply.message.includes("requests queued")) return reply;
      } catch (err) {
        if (attempt > 20) throw err;
      }
      await sleep(Math.min(1000, 20 * attempt));
    }
  }

  /** Runs `job(i)` for i in [0, count) with at most WINDOW in flight. */
  async many(count: number, job: (i: number) => Promise<void>): Promise<void> {
    let nextIndex = 0;
    const worker = async () => {
      while (nextIndex < count) await job(nextIndex++);
    };
    await Promise.all(Array.from({ length: Math.min(WINDOW, count) }, worker));
  }
}

function expectOk(reply: Reply, what: string): Extract<Reply, { ok: true }> {
  if (!reply.ok) throw new Error(`${what}: ${reply.error} ${reply.message}`);
  return reply;
}

async function logGrowth(wire: Wire, nc: NatsConnection): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const bytes = async () => (await jsm.streams.info(subjects.streamName)).state.bytes;
  const client = "bench-log-growth";
  let seq = 1;
  expectOk(await wire.call({ op: "hello", client, seq, ack: 0 }), "hello");
  const growth = { acquire: 0, append: 0, release: 0 };
  const rounds = 50;
  const data = Buffer.alloc(100, "x").toString("base64");
  for (let r = 0; r < rounds; r++) {
    let before = await bytes();
    const granted = expectOk(await wire.call({ op: "acquire", client, seq: ++seq, ack: seq - 1, lock: "global" }), "acquire");
    growth.acquire += (await bytes()) - before;
    before = await bytes();
    expectOk(await wire.call({ op: "append", client, seq: ++seq, ack: seq - 1, file: "file_0", data, token: granted.lease!.token }), "append");
    growth.append += (await bytes()) - before;
    before = await bytes();
    expectOk(await wire.call({ op: "release", client, seq: ++seq, ack: seq - 1, lock: "global", token: granted.lease!.token }), "release");
    growth.release += (await bytes()) - before;
  }
  expectOk(await wire.call({ op: "goodbye", client, seq: ++seq, ack: seq - 1 }), "goodbye");
  console.log("log growth (stream bytes, each command alone in its entry, file storage):");
  console.log(`  acquire ${Math.round(growth.acquire / rounds)} B, append of 100 B ${Math.round(growth.append / rounds)} B, release ${Math.round(growth.release / rounds)} B`);
}

async function waiters(wire: Wire, pid: number): Promise<void> {
  const id = (i: number) => `bench-w-${String(i).padStart(6, "0")}`;
  const holder = "bench-holder";
  const rssIdle = rssBytes(pid);
  let started = performance.now();
  expectOk(await wire.call({ op: "hello", client: holder, seq: 1, ack: 0 }), "hello");
  await wire.many(WAITERS, async (i) => void expectOk(await wire.call({ op: "hello", client: id(i), seq: 1, ack: 0 }), "hello"));
  const helloMs = performance.now() - started;
  const rssSessions = rssBytes(pid);
  const first = expectOk(await wire.call({ op: "acquire", client: holder, seq: 2, ack: 1, lock: LOCK }), "holder acquire");
  if (first.status !== "granted") throw new Error("the holder was not granted at once");

  // Enqueue: the position in each answer is the order the leader queued it.
  const enqueueOrder: string[] = new Array<string>(WAITERS);
  started = performance.now();
  await wire.many(WAITERS, async (i) => {
    const reply = expectOk(await wire.call({ op: "acquire", client: id(i), seq: 2, ack: 1, lock: LOCK }), `acquire ${id(i)}`);
    if (reply.status !== "queued" || !reply.position) throw new Error(`${id(i)} was not queued: ${JSON.stringify(reply)}`);
    if (enqueueOrder[reply.position - 1] !== undefined) throw new Error(`two waiters at position ${reply.position}`);
    enqueueOrder[reply.position - 1] = id(i);
  });
  const enqueueMs = performance.now() - started;
  await sleep(1000);
  const rssQueued = rssBytes(pid);

  // Serve: every waiter releases as soon as its grant is pushed to it.
  const grantOrder: string[] = [];
  let released = 0;
  let failed: Error | undefined;
  let done: () => void = () => undefined;
  const allReleased = new Promise<void>((resolve) => (done = resolve));
  const sub = wire.conns[0].subscribe(`${subjects.notifySubject("*")}`, {
    callback: (_err, msg) => {
      const client = msg.subject.slice(msg.subject.lastIndexOf(".") + 1);
      const n = JSON.parse(decoder.decode(msg.data)) as Notification;
      if (n.event !== "granted" || client === holder) return;
      grantOrder.push(client);
      wire
        .call({ op: "release", client, seq: 3, ack: 2, lock: LOCK, token: n.lease.token })
        .then((reply) => {
          expectOk(reply, `release ${client}`);
          if (++released === WAITERS) done();
        })
        .catch((err: Error) => {
          failed = err;
          done();
        });
    },
  });
  await wire.conns[0].flush();
  started = performance.now();
  expectOk(await wire.call({ op: "release", client: holder, seq: 3, ack: 2, lock: LOCK, token: first.lease!.token }), "holder release");
  let lastCount = -1;
  const watchdog = setInterval(() => {
    if (released === lastCount && !failed) {
      failed = new Error(`no progress for 30 s: ${released} of ${WAITERS} released`);
      done();
    }
    lastCount = released;
  }, 30_000);
  await allReleased;
  clearInterval(watchdog);
  const serveMs = performance.now() - started;
  sub.unsubscribe();
  if (failed) throw failed;
  const rssEnd = rssBytes(pid);
  const fifo = grantOrder.length === WAITERS && grantOrder.every((c, i) => c === enqueueOrder[i]);
  const firstDiff = grantOrder.findIndex((c, i) => c !== enqueueOrder[i]);

  started = performance.now();
  expectOk(await wire.call({ op: "goodbye", client: holder, seq: 4, ack: 3 }), "goodbye");
  await wire.many(WAITERS, async (i) => void expectOk(await wire.call({ op: "goodbye", client: id(i), seq: 4, ack: 3 }), "goodbye"));
  const goodbyeMs = performance.now() - started;

  console.log(`${WAITERS} waiters on one lock:`);
  console.log(`  hellos ${helloMs.toFixed(0)} ms (${Math.round(WAITERS / (helloMs / 1000))}/s), enqueue ${enqueueMs.toFixed(0)} ms (${Math.round(WAITERS / (enqueueMs / 1000))}/s)`);
  console.log(`  leader RSS: idle ${mb(rssIdle)}, with ${WAITERS} sessions ${mb(rssSessions)}, all queued ${mb(rssQueued)}, all served ${mb(rssEnd)}`);
  console.log(`  per waiter (its session and its place in the queue): ${((rssQueued - rssIdle) / WAITERS).toFixed(0)} B; the queue entry alone: ${((rssQueued - rssSessions) / WAITERS).toFixed(0)} B`);
  console.log(`  served all in FIFO order? ${fifo ? "yes" : `NO (first difference at position ${firstDiff + 1})`}`);
  console.log(`  serve (grant -> release, one after another): ${(serveMs / 1000).toFixed(1)} s, ${Math.round(WAITERS / (serveMs / 1000))} grants/s, ${(serveMs / WAITERS).toFixed(2)} ms per hand-over`);
  console.log(`  goodbyes ${goodbyeMs.toFixed(0)} ms`);
  if (!fifo) process.exitCode = 1;
}

async function sessions(wire: Wire, pid: number): Promise<void> {
  const id = (i: number) => `bench-s-${String(i).padStart(7, "0")}`;
  const idleWindowMs = 5000;
  let cpu = cpuMs(pid);
  await sleep(idleWindowMs);
  const cpuIdleEmpty = (cpuMs(pid) - cpu) / idleWindowMs;
  const rssBefore = rssBytes(pid);
  let started = performance.now();
  await wire.many(SESSIONS, async (i) => void expectOk(await wire.call({ op: "hello", client: id(i), seq: 1, ack: 0 }), `hello ${id(i)}`));
  const helloMs = performance.now() - started;
  await sleep(2000);
  const rssAfter = rssBytes(pid);
  cpu = cpuMs(pid);
  await sleep(idleWindowMs);
  const cpuIdleFull = (cpuMs(pid) - cpu) / idleWindowMs;
  const statusStarted = performance.now();
  const status = await wire.call({ op: "status" });
  const statusMs = performance.now() - statusStarted;
  const statusBytes = JSON.stringify(status).length;
  started = performance.now();
  await wire.many(SESSIONS, async (i) => void expectOk(await wire.call({ op: "ping", client: id(i) }), `ping ${id(i)}`));
  const pingMs = performance.now() - started;
  const pingRate = SESSIONS / (pingMs / 1000);

  console.log(`${SESSIONS} sessions:`);
  console.log(`  hellos ${(helloMs / 1000).toFixed(1)} s (${Math.round(SESSIONS / (helloMs / 1000))}/s)`);
  console.log(`  leader RSS: before ${mb(rssBefore)}, with them ${mb(rssAfter)}; per session ${((rssAfter - rssBefore) / SESSIONS).toFixed(0)} B`);
  console.log(`  leader CPU while idle: ${(cpuIdleEmpty * 100).toFixed(1)}% with no sessions, ${(cpuIdleFull * 100).toFixed(1)}% with ${SESSIONS}`);
  console.log(`  status answer: ${statusMs.toFixed(0)} ms, ${statusBytes} B`);
  console.log(`  one ping from each: ${(pingMs / 1000).toFixed(1)} s, ${Math.round(pingRate)} pings/s`);
  // Library clients ping every sessionTimeoutMs / 3 (5 s by default) when otherwise silent.
  console.log(`  heartbeats of ${SESSIONS} idle library clients at the default 15 s session timeout: ${Math.round(SESSIONS / 5)}/s needed`);
}

async function main(): Promise<void> {
  const sync = !process.argv.includes("--no-sync");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dlm-bench-waiters-"));
  exitOnInterrupt(dir, process.argv.includes("--keep"));
  const nats = await startNatsServer({ storeDir: path.join(dir, "nats"), syncAlways: sync });
  const node = spawnManaged(
    process.execPath,
    [path.join(__dirname, "../src/cli/main.js"), "node", "--nats", nats.url, "--id", "b1", "--data", path.join(dir, "b1"), "--session-timeout-ms", "3600000"],
    { name: "b1", logFile: path.join(dir, "b1.log") },
  );
  const conns: NatsConnection[] = [];
  try {
    await node.waitForLine(/node ready/, 30_000);
    for (let i = 0; i < CONNECTIONS; i++) conns.push(await natsConnect({ servers: nats.url, name: `bench-${i}` }));
    const wire = new Wire(conns);
    while (!(await wire.call({ op: "status" })).ok) await sleep(100);
    const pid = node.pid!;
    console.log(`dlm waiters/sessions bench: 1 nats-server (sync_interval: ${sync ? "always" : "default"}), 1 node (default limits), ${CONNECTIONS} connections, ${WINDOW} requests in flight, ${os.cpus().length} cores`);
    await logGrowth(wire, conns[0]);
    await waiters(wire, pid);
    await sessions(wire, pid);
    console.log(`leader RSS at the end: ${mb(rssBytes(pid))}`);
  } finally {
    await Promise.all(conns.map((c) => c.close().catch(() => undefined)));
    await node.stop();
    await nats.stop();
    if (process.argv.includes("--keep")) console.log(`kept ${dir}`);
    else fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
