import { connect } from "@nats-io/transport-node";
import type { NatsConnection, Status } from "@nats-io/nats-core";
import { jetstream, jetstreamManager, JetStreamClient, JetStreamManager, StorageType } from "@nats-io/jetstream";
import * as fs from "fs";
import * as path from "path";
import { checkNatsServerBinary } from "../../src/local/natsServer";
import { spawnManaged } from "../../src/local/processes";
import { startNats, startNatsCluster, TestNats, TestNatsCluster } from "../kit/nats";
import { cliMain, repoRoot } from "../kit/dlmNode";

/** Tests of the test kit itself: if these fail, nothing built on it can be trusted. */

jest.setTimeout(60_000);

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Resolves with the first status event of `type`, or rejects after timeoutMs. */
function nextStatus(nc: NatsConnection, type: Status["type"], timeoutMs: number): Promise<Status> {
  const iter = nc.status()[Symbol.asyncIterator]();
  let timer: NodeJS.Timeout | undefined;
  const found = (async () => {
    for (;;) {
      const r = await iter.next();
      if (r.done) throw new Error(`connection closed before a "${type}" status`);
      if (r.value.type === type) return r.value;
    }
  })();
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no "${type}" status within ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([found, timeout]).finally(() => {
    clearTimeout(timer);
    void iter.return?.();
  });
}

/** Runs one step of a scenario; a failure names the step and how long it took. */
async function step<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const t0 = Date.now();
  try {
    return await fn();
  } catch (e) {
    throw new Error(`step "${name}" failed after ${Date.now() - t0} ms: ${(e as Error).message}`);
  }
}

/** Publishes until one attempt is acknowledged (msgID makes retries idempotent). */
async function publishEventually(js: JetStreamClient, subj: string, data: string, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      return await js.publish(subj, data, { msgID: `${subj}:${data}`, timeout: 1000 });
    } catch (e) {
      last = e;
      await sleep(200);
    }
  }
  throw new Error(`publish to ${subj} never acknowledged within ${timeoutMs} ms: ${String(last)}`);
}

describe("local processes", () => {
  test("spawnManaged captures lines, waits for them, reports exit, restarts", async () => {
    const script = "console.log('hello'); console.error('on stderr'); setTimeout(() => console.log('later'), 100); setInterval(() => {}, 1000);";
    const p = spawnManaged(process.execPath, ["-e", script], { name: "echo" });
    try {
      expect(p.pid).toBeGreaterThan(0);
      await expect(p.waitForLine(/later/, 5000)).resolves.toBe("later");
      expect(p.lines).toEqual(expect.arrayContaining(["hello", "on stderr", "later"]));
      const mark = p.lineCount;
      await expect(p.waitForLine(/hello/, 200, mark)).rejects.toThrow(/within 200 ms[\s\S]*later/);
      const info = await p.kill();
      expect(info.signal).toBe("SIGKILL");
      expect(p.running).toBe(false);
      await p.restart();
      expect(p.running).toBe(true);
      await p.waitForLine(/hello/, 5000, mark);
      const waiting = p.waitForLine(/never printed/, 10_000);
      await p.stop();
      await expect(waiting).rejects.toThrow(/exited/);
    } finally {
      await p.kill();
    }
  });

  test("a missing nats-server binary fails with the install hint", async () => {
    await expect(checkNatsServerBinary("/nonexistent/nats-server")).rejects.toThrow(/install-nats-server\.sh/);
  });

  test("dlmNode resolves the repository root", () => {
    expect(fs.existsSync(path.join(repoRoot, "package.json"))).toBe(true);
    expect(cliMain).toBe(path.join(repoRoot, "dist", "src", "cli", "main.js"));
  });
});

describe("single NATS server", () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let js: JetStreamClient;

  beforeAll(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url, reconnectTimeWait: 200, maxReconnectAttempts: -1 });
    jsm = await jetstreamManager(nc);
    js = jetstream(nc);
  });

  afterAll(async () => {
    await nc?.close();
    await nats?.close();
  });

  test("creates a file-backed stream and acknowledges publishes", async () => {
    await jsm.streams.add({ name: "KIT", subjects: ["kit.>"], storage: StorageType.File });
    for (let i = 1; i <= 3; i++) {
      const ack = await js.publish("kit.a", `m${i}`);
      expect(ack.stream).toBe("KIT");
      expect(ack.seq).toBe(i);
    }
  });

  test("kill() takes the server down; restart() brings it back with its data", async () => {
    // A connection that does not reconnect, so its publish fails instead of buffering.
    const fragile = await connect({ servers: nats.url, reconnect: false });
    const fragileClosed = fragile.closed();
    const disconnected = nextStatus(nc, "disconnect", 10_000);

    await nats.kill();
    expect(nats.running).toBe(false);
    await disconnected;
    await fragileClosed;
    await expect(jetstream(fragile).publish("kit.a", "lost", { timeout: 1000 })).rejects.toThrow();
    await expect(connect({ servers: nats.url, reconnect: false, timeout: 1000 })).rejects.toThrow();

    const reconnected = nextStatus(nc, "reconnect", 20_000);
    await nats.restart();
    expect(nats.running).toBe(true);
    await nats.waitJetStreamReady(10_000);
    await reconnected;

    const info = await jsm.streams.info("KIT");
    expect(info.state.messages).toBe(3);
    const ack = await js.publish("kit.a", "m4");
    expect(ack.seq).toBe(4);
  });

  test("a paused server does not answer; resumed, it does", async () => {
    await nats.pause();
    try {
      await expect(nc.request("$JS.API.INFO", "", { timeout: 750 })).rejects.toThrow();
    } finally {
      await nats.resume();
    }
    const reply = await nc.request("$JS.API.INFO", "", { timeout: 5000 });
    expect(JSON.parse(reply.string())).toHaveProperty("type", "io.nats.jetstream.api.v1.account_info_response");
  });
});

describe("NATS cluster of 3", () => {
  let cluster: TestNatsCluster;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let js: JetStreamClient;

  beforeAll(async () => {
    cluster = await startNatsCluster(3);
    nc = await connect({ servers: cluster.urls, reconnectTimeWait: 200, maxReconnectAttempts: -1 });
    jsm = await jetstreamManager(nc);
    js = jetstream(nc);
  });

  afterAll(async () => {
    await nc?.close();
    await cluster?.close();
  });

  test("replicated stream survives the loss and return of its leader", async () => {
    expect(cluster.servers).toHaveLength(3);
    expect(new Set(cluster.urls).size).toBe(3);
    await step("create R3 stream", () =>
      jsm.streams.add({ name: "KITR3", subjects: ["r3.>"], storage: StorageType.File, num_replicas: 3 }),
    );
    const first = await step("first publish", () => js.publish("r3.a", "one"));
    expect(first.seq).toBe(1);

    const leaderName = (await step("stream info", () => jsm.streams.info("KITR3"))).cluster?.leader;
    const victim = cluster.servers.find((s) => s.name === leaderName);
    expect(victim).toBeDefined();
    await step("kill leader", () => victim!.kill());
    expect(victim!.running).toBe(false);

    const second = await step("publish without the leader", () => publishEventually(js, "r3.a", "two", 25_000));
    expect(second.seq).toBe(2);

    await step("restart", () => victim!.restart());
    await step("cluster ready", () => cluster.waitJetStreamReady(20_000));

    const third = await step("publish after return", () => js.publish("r3.a", "three"));
    expect(third.seq).toBe(3);
    // The returning replica catches up and is reported current. Checked
    // after a publish: waiting on an idle stream, the returned replica was
    // once not reported current within 20 s (seen on a loaded machine).
    await step("catch up", async () => {
      const deadline = Date.now() + 20_000;
      let last = "";
      for (;;) {
        try {
          const info = await jsm.streams.info("KITR3");
          const current = [info.cluster?.leader, ...(info.cluster?.replicas ?? []).filter((r) => r.current).map((r) => r.name)];
          if (current.includes(victim!.name) && info.state.messages === 3) return;
          last = JSON.stringify(info.cluster);
        } catch (e) {
          last = (e as Error).message;
        }
        if (Date.now() > deadline) throw new Error(`${victim!.name} did not catch up: ${last}`);
        await sleep(200);
      }
    });
  });
});
