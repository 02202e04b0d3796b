/**
 * dlm side by side with the locks people build instead, on this machine, in
 * one run (`npm run bench:compare`):
 *
 *   dlm        3 dlm nodes on one nats-server (fsync on every write):
 *              acquire -> append 16 B -> release, and client.commit([16 B]).
 *   etcd       etcd 3.4, one member, its WAL fsynced as by default, with the
 *              Go client's mutex recipe (concurrency.Mutex): a session lease,
 *              a key per waiter under the lock's prefix, the lowest create
 *              revision holds, each waiter watches the one before it (FIFO).
 *              The write is a put guarded by "my key still has my revision"
 *              (the recipe's IsOwner), the closest etcd has to a fence.
 *   NATS KV    a hand-made lock on a NATS KV bucket (file storage on its own
 *              nats-server, fsync on every write): create = acquire (fails
 *              while the key exists; each client keeps a watch on the key
 *              and retries on its delete), put = the 16 B write, delete =
 *              release. No fencing, no FIFO.
 *
 * The etcd clients are the etcd3 npm package (gRPC in Node); the CPU line
 * shows when this process, not etcd, is what bounds a number (a Go client
 * spends less per request).
 *
 * Workloads, each for --seconds (closed loop, every client waits for its
 * previous cycle): one client's lock -> write 16 B -> unlock (p50, p99);
 * 32 clients on one lock (handoffs per second); 256 clients on 256 locks
 * over 32 connections, lock -> unlock (ops per second). The systems run one
 * after the other, each alone on the machine. etcd is skipped, with a line
 * saying so, when no etcd binary is found (--etcd PATH, or `etcd` on PATH;
 * Debian: apt-get install etcd-server). Prints a table; asserts nothing.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { spawnSync } from "child_process";
import { connect as natsConnect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { Kvm, KvWatchInclude, type KV } from "@nats-io/kv";
import { Etcd3, type Lease as EtcdLease } from "etcd3";
import { connect, type DlmClient } from "../src/client";
import { startNatsServer } from "../src/local/natsServer";
import { freePort } from "../src/local/ports";
import { spawnManaged } from "../src/local/processes";
import { helpText, parseArgs, UsageError, type CommandSpec } from "../src/cli/args";
import { CpuMeter, exitOnInterrupt, measure, PAYLOAD, sleep, startDeployment, type Result } from "./benchKit";

const spec: CommandSpec = {
  usage: "npm run bench:compare -- [flags]",
  summary:
    "dlm, etcd's mutex recipe and a NATS KV lock, one after the other on this machine: a lone client's lock -> write -> unlock, " +
    "32 clients on one lock, 256 clients on 256 locks. Prints a table; asserts nothing.",
  flags: [
    { name: "seconds", kind: "int", help: "seconds per workload (default 5)" },
    { name: "etcd", kind: "string", help: "the etcd binary (default: etcd on PATH; skipped if none)" },
    { name: "keep", kind: "bool", help: "keep the temporary directory (logs, data)" },
  ],
};

/** One system under test: how to open a client, and its lock primitives. */
interface LockSystem<C> {
  name: string;
  /** `count` clients sharing `connections` connections. */
  open(count: number, connections: number): Promise<C[]>;
  /** lock -> write 16 B -> unlock. */
  cycle(client: C, lock: string): Promise<void>;
  /** lock -> unlock. */
  lockUnlock(client: C, lock: string): Promise<void>;
}

type Row = { system: string; lone?: Result; handoff?: Result; many?: Result };

/** The three workloads against one system; `cpu` makes a meter of the processes that serve it. */
async function runSystem<C>(sys: LockSystem<C>, seconds: number, cpu: () => CpuMeter): Promise<Row> {
  const [solo] = await sys.open(1, 1);
  const lone = await measure(`${sys.name}: lone`, undefined, cpu(), 1, seconds, () => sys.cycle(solo, "bench-lone"));
  const contenders = await sys.open(32, 32);
  const handoff = await measure(`${sys.name}: 32 on one`, undefined, cpu(), 32, seconds, (i) => sys.cycle(contenders[i], "bench-one"));
  const many = await sys.open(256, 32);
  const manyResult = await measure(`${sys.name}: 256 on 256`, undefined, cpu(), 256, seconds, (i) => sys.lockUnlock(many[i], `bench-${i}`));
  return { system: sys.name, lone, handoff, many: manyResult };
}

// ---- dlm -------------------------------------------------------------------

function dlmSystem(urls: string[], closers: Array<() => Promise<unknown>>, viaCommit: boolean): LockSystem<DlmClient> {
  return {
    name: viaCommit ? "dlm commit()" : "dlm",
    async open(count, connections) {
      const conns: NatsConnection[] = [];
      for (let i = 0; i < connections; i++) conns.push(await natsConnect({ servers: urls, noAsyncTraces: true }));
      const clients: DlmClient[] = [];
      for (let i = 0; i < count; i++) clients.push(await connect({ nc: conns[i % connections], name: `c${i}` }));
      closers.push(async () => {
        await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
        await Promise.all(conns.map((c) => c.close().catch(() => undefined)));
      });
      return clients;
    },
    async cycle(client) {
      // dlm guards its own files, under the lock "global".
      if (viaCommit) {
        await client.commit([{ file: "file_7", data: PAYLOAD }]);
        return;
      }
      const lease = await client.acquire("global");
      await client.append("file_7", PAYLOAD, { lease });
      await lease.release();
    },
    async lockUnlock(client, lock) {
      const lease = await client.acquire(lock);
      await lease.release();
    },
  };
}

// ---- NATS KV ------------------------------------------------------------------

interface KvClient {
  kv: KV;
  id: string;
  /** Per lock name: deletes seen by this client's standing watch on it, and who waits for the next. */
  watches: Map<string, { deletes: number; wake: Array<() => void> }>;
}

function natsKvSystem(url: string, closers: Array<() => Promise<unknown>>): LockSystem<KvClient> {
  let seq = 0;
  /** A standing watch per client and lock, so a waiter hears the delete instead of polling for it. */
  const watchFor = async (c: KvClient, name: string): Promise<{ deletes: number; wake: Array<() => void> }> => {
    let w = c.watches.get(name);
    if (w) return w;
    const state = { deletes: 0, wake: [] as Array<() => void> };
    c.watches.set(name, state);
    const iter = await c.kv.watch({ key: name, include: KvWatchInclude.UpdatesOnly });
    closers.push(async () => iter.stop());
    void (async () => {
      for await (const e of iter) {
        if (e.operation === "DEL" || e.operation === "PURGE") {
          state.deletes++;
          for (const f of state.wake.splice(0)) f();
        }
      }
    })();
    w = state;
    return w;
  };
  const lock = async (c: KvClient, name: string): Promise<void> => {
    const w = await watchFor(c, name);
    for (;;) {
      const seen = w.deletes;
      try {
        await c.kv.create(name, c.id);
        return;
      } catch {
        // Held: wait for a delete after the failed create, then try again (everyone waiting does: no FIFO).
      }
      if (w.deletes === seen) await new Promise<void>((resolve) => w.wake.push(resolve));
    }
  };
  return {
    name: "NATS KV lock",
    async open(count, connections) {
      const conns: NatsConnection[] = [];
      for (let i = 0; i < connections; i++) conns.push(await natsConnect({ servers: url, noAsyncTraces: true }));
      closers.push(() => Promise.all(conns.map((c) => c.close().catch(() => undefined))));
      const kvs = await Promise.all(conns.map((nc) => new Kvm(nc).create("locks", { history: 1 })));
      return Array.from({ length: count }, (_, i) => ({ kv: kvs[i % connections], id: `c${seq++}`, watches: new Map() }));
    },
    async cycle(c, name) {
      await lock(c, name);
      await c.kv.put(`data_${name}`, PAYLOAD);
      await c.kv.delete(name);
    },
    async lockUnlock(c, name) {
      await lock(c, name);
      await c.kv.delete(name);
    },
  };
}

// ---- etcd -----------------------------------------------------------------------

interface EtcdSession {
  client: Etcd3;
  lease: EtcdLease;
  leaseId: string;
}

function etcdSystem(endpoint: string, closers: Array<() => Promise<unknown>>): LockSystem<EtcdSession> {
  /** concurrency.Mutex.Lock: returns my key and its create revision once I hold the lock. */
  const lock = async (s: EtcdSession, name: string): Promise<{ key: string; rev: string }> => {
    const prefix = `locks/${name}/`;
    const key = `${prefix}${s.leaseId}`;
    const c = s.client;
    const res = await c
      .if(key, "Create", "==", 0)
      .then(c.put(key).value("").lease(s.leaseId), c.getAll().prefix(prefix).sort("Create", "Ascend").limit(1))
      .else(c.get(key), c.getAll().prefix(prefix).sort("Create", "Ascend").limit(1))
      .commit();
    const rev = res.succeeded ? String(res.header!.revision) : String(res.responses![0].response_range!.kvs![0].create_revision);
    const owner = res.responses![1].response_range!.kvs![0];
    if (owner && String(owner.create_revision) === rev) return { key, rev };
    // waitDeletes: wait for every waiter before me, the newest first.
    for (;;) {
      const before = await c
        .getAll()
        .prefix(prefix)
        .maxCreateRevision(String(BigInt(rev) - 1n))
        .sort("Create", "Descend")
        .limit(1)
        .exec();
      const last = before.kvs?.[0];
      if (!last) return { key, rev };
      const watcher = await c
        .watch()
        .key(last.key!.toString())
        .startRevision(String(BigInt(before.header!.revision!) + 1n))
        .create();
      await new Promise<void>((resolve) => watcher.on("delete", () => resolve()));
      await watcher.cancel();
    }
  };
  return {
    name: "etcd mutex",
    async open(count, connections) {
      const clients = Array.from({ length: connections }, () => new Etcd3({ hosts: endpoint }));
      const sessions: EtcdSession[] = [];
      for (let i = 0; i < count; i++) {
        const client = clients[i % connections];
        const lease = client.lease(10, { autoKeepAlive: true });
        sessions.push({ client, lease, leaseId: await lease.grant() });
      }
      closers.push(async () => {
        await Promise.all(sessions.map((s) => s.lease.revoke().catch(() => undefined)));
        for (const c of clients) c.close();
      });
      return sessions;
    },
    async cycle(s, name) {
      const held = await lock(s, name);
      // The recipe's fenced write: only while my key still has my revision.
      const put = await s.client.if(held.key, "Create", "==", held.rev).then(s.client.put(`data/${name}`).value(PAYLOAD)).commit();
      if (!put.succeeded) throw new Error("etcd: lost the lock before the write");
      await s.client.delete().key(held.key).exec();
    },
    async lockUnlock(s, name) {
      const held = await lock(s, name);
      await s.client.delete().key(held.key).exec();
    },
  };
}

function findEtcd(flag: string | undefined): string | undefined {
  if (flag) return flag;
  const found = spawnSync("sh", ["-c", "command -v etcd"], { encoding: "utf8" });
  const p = found.stdout.trim();
  return found.status === 0 && p ? p : undefined;
}

async function startEtcd(binary: string, dir: string, closers: Array<() => Promise<unknown>>): Promise<{ endpoint: string; pid: () => number | undefined }> {
  const [client, peer] = [await freePort(), await freePort()];
  const endpoint = `http://127.0.0.1:${client}`;
  const peerUrl = `http://127.0.0.1:${peer}`;
  const proc = spawnManaged(
    binary,
    [
      "--name", "bench",
      "--data-dir", path.join(dir, "etcd"),
      "--listen-client-urls", endpoint,
      "--advertise-client-urls", endpoint,
      "--listen-peer-urls", peerUrl,
      "--initial-advertise-peer-urls", peerUrl,
      "--initial-cluster", `bench=${peerUrl}`,
    ],
    { name: "etcd", logFile: path.join(dir, "etcd.log") },
  );
  closers.push(() => proc.stop());
  const probe = new Etcd3({ hosts: endpoint });
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await probe.put("bench/ready").value("1");
      break;
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`etcd did not start: ${String(e)}`);
      await sleep(200);
    }
  }
  probe.close();
  return { endpoint, pid: () => proc.pid };
}

async function closeAll(closers: Array<() => Promise<unknown>>): Promise<void> {
  for (const fn of closers.splice(0).reverse()) await fn().catch(() => undefined);
}

function printTable(rows: Row[], notes: string[]): void {
  const cols = rows.map((r) => r.system);
  const cell = (s: string): string => s.padStart(16);
  console.log("");
  console.log(`${"".padEnd(52)}${cols.map(cell).join("")}`);
  const line = (label: string, f: (r: Row) => string): void => console.log(`${label.padEnd(52)}${rows.map((r) => cell(f(r))).join("")}`);
  line("one client: lock -> write 16 B -> unlock, p50 ms", (r) => (r.lone ? r.lone.p50.toFixed(2) : "-"));
  line("                                          p99 ms", (r) => (r.lone ? r.lone.p99.toFixed(2) : "-"));
  line("32 clients on one lock, handoffs/s", (r) => (r.handoff ? (r.handoff.cycles / r.handoff.seconds).toFixed(0) : "-"));
  line("256 clients on 256 locks (32 conns), ops/s", (r) => (r.many ? (r.many.cycles / r.many.seconds).toFixed(0) : "-"));
  console.log("");
  console.log("CPU (% of one core) while each ran:");
  for (const r of rows) {
    for (const [what, res] of [["lone", r.lone], ["32 on one", r.handoff], ["256 on 256", r.many]] as const) {
      if (res) console.log(`  ${r.system}, ${what}: ${res.cpu}`);
    }
  }
  for (const n of notes) console.log(n);
}

async function main(): Promise<void> {
  const { flags, help } = parseArgs(spec, process.argv.slice(2));
  if (help) return void console.log(helpText(spec));
  const seconds = typeof flags.seconds === "number" ? flags.seconds : 5;
  if (!(seconds > 0)) throw new UsageError(`bad --seconds ${seconds}`);
  const keep = flags.keep === true;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dlm-bench-compare-"));
  exitOnInterrupt(dir, keep);
  const rows: Row[] = [];
  const notes: string[] = [];
  console.log(`dlm bench:compare: ${new Date().toISOString()}, node ${process.version}, ${os.cpus().length} cores (${os.cpus()[0]?.model ?? "?"}); ${seconds}s per workload`);
  const closers: Array<() => Promise<unknown>> = [];
  try {
    // dlm: three nodes on one nats-server, fsync on every write.
    const deployment = await startDeployment({ natsCount: 1, base: path.join(dir, "dlm"), nodeArgs: [], cleanups: closers });
    const dlmCpu = () => new CpuMeter(deployment.procs);
    rows.push(await runSystem(dlmSystem(deployment.urls, closers, false), seconds, dlmCpu));
    const viaCommit = dlmSystem(deployment.urls, closers, true);
    const [solo] = await viaCommit.open(1, 1);
    const contenders = await viaCommit.open(32, 32);
    rows.push({
      system: viaCommit.name,
      lone: await measure("dlm commit: lone", undefined, dlmCpu(), 1, seconds, () => viaCommit.cycle(solo, "global")),
      handoff: await measure("dlm commit: 32 on one", undefined, dlmCpu(), 32, seconds, (i) => viaCommit.cycle(contenders[i], "global")),
    });
    await closeAll(closers);

    // etcd, alone on the machine.
    const etcdBinary = findEtcd(typeof flags.etcd === "string" ? flags.etcd : undefined);
    if (etcdBinary) {
      const etcd = await startEtcd(etcdBinary, dir, closers);
      const version = spawnSync(etcdBinary, ["--version"], { encoding: "utf8" }).stdout.split("\n")[0] ?? "";
      notes.push(`etcd: ${etcdBinary} (${version.trim()}), one member, default fsync`);
      rows.push(await runSystem(etcdSystem(etcd.endpoint, closers), seconds, () => new CpuMeter([{ name: "etcd", pid: etcd.pid }])));
      await closeAll(closers);
    } else {
      notes.push("etcd: skipped, no etcd binary (apt-get install etcd-server, or --etcd PATH)");
    }

    // NATS KV lock on its own nats-server.
    const server = await startNatsServer({ storeDir: path.join(dir, "kv-nats"), logFile: path.join(dir, "kv-nats.log"), syncAlways: true });
    closers.push(() => server.stop());
    rows.push(await runSystem(natsKvSystem(server.url, closers), seconds, () => new CpuMeter([{ name: "nats", pid: () => server.pid }])));
    await closeAll(closers);
    notes.push("NATS KV: one nats-server, sync_interval: always, bucket history 1");
  } finally {
    await closeAll(closers);
    if (keep) console.log(`\ndata and logs kept in ${dir}`);
    else fs.rmSync(dir, { recursive: true, force: true });
  }
  printTable(rows, notes);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err instanceof UsageError ? `usage: ${err.message}` : err);
    process.exit(err instanceof UsageError ? 2 : 1);
  },
);
