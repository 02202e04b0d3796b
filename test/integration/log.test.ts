import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { jetstreamManager } from "@nats-io/jetstream";
import { startNats, startNatsCluster, type TestNats, type TestNatsCluster } from "../kit/nats";
import { isWrongLastSequence, LogGapError, LogPurgedError, LogStream, WrongLastSequenceError, type Follower, type FollowOptions } from "../../src/log/logStream";

const enc = (s: string) => new TextEncoder().encode(s);

/** Both ways a follower gets entries: pushed by an ordered consumer, or polled (what standbys use). */
const FOLLOW_MODES: Array<[string, FollowOptions]> = [
  ["pushed", {}],
  ["polled", { poll: { minPollMs: 5, maxPollMs: 50 } }],
];
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("LogStream", () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let n = 0;
  const followers: Follower[] = [];

  // A fresh stream per test on one server.
  const openLog = async (conn: NatsConnection = nc) => {
    n++;
    return LogStream.open(conn, { streamName: `LOG_${n}`, subject: `dlm.test${n}.log`, replicas: 1 });
  };

  beforeAll(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  });
  afterEach(async () => {
    await Promise.all(followers.splice(0).map((f) => f.stop()));
  });
  afterAll(async () => {
    await nc?.close();
    await nats?.close();
  });

  test("appends with the right expected sequence get 1, 2, 3 (0 works on an empty stream)", async () => {
    const log = await openLog();
    expect(await log.lastSeq()).toBe(0);
    expect(await log.firstSeq()).toBe(0);
    expect(await log.append(enc("a"), 0)).toBe(1);
    expect(await log.append(enc("b"), 1)).toBe(2);
    expect(await log.append(enc("c"), 2)).toBe(3);
    expect(await log.lastSeq()).toBe(3);
    expect(await log.firstSeq()).toBe(1);
  });

  test("a wrong expected sequence throws WrongLastSequenceError and appends nothing", async () => {
    const log = await openLog();
    // Empty stream, writer thinks there is one entry.
    await expect(log.append(enc("x"), 1)).rejects.toBeInstanceOf(WrongLastSequenceError);
    expect(await log.lastSeq()).toBe(0);
    await log.append(enc("a"), 0);
    await log.append(enc("b"), 1);
    // Stale writers: behind and ahead of the tail, and "empty" on a non-empty log.
    for (const stale of [0, 1, 3, 7]) {
      const err = await log.append(enc("x"), stale).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WrongLastSequenceError);
      expect(isWrongLastSequence(err)).toBe(true);
      expect((err as WrongLastSequenceError).name).toBe("WrongLastSequenceError");
      expect((err as WrongLastSequenceError).cause).toBeDefined();
    }
    expect(await log.lastSeq()).toBe(2);
    expect(isWrongLastSequence(new Error("timeout"))).toBe(false);
  });

  test("two writers racing with the same expected sequence: exactly one wins", async () => {
    const log = await openLog();
    const nc2 = await connect({ servers: nats.url });
    try {
      const other = await LogStream.open(nc2, { streamName: log.streamName, subject: log.subject, replicas: 1 });
      expect(other.logId).toBe(log.logId);
      for (let round = 0; round < 20; round++) {
        const results = await Promise.allSettled([log.append(enc(`a${round}`), round), other.append(enc(`b${round}`), round)]);
        const won = results.filter((r) => r.status === "fulfilled");
        const lost = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
        expect(won).toHaveLength(1);
        expect((won[0] as PromiseFulfilledResult<number>).value).toBe(round + 1);
        expect(lost).toHaveLength(1);
        expect(lost[0]!.reason).toBeInstanceOf(WrongLastSequenceError);
      }
      expect(await log.lastSeq()).toBe(20);
    } finally {
      await nc2.close();
    }
  });

  test("a retried append with the same msgId is not doubled", async () => {
    const log = await openLog();
    expect(await log.append(enc("a"), 0, { msgId: "m1" })).toBe(1);
    expect(await log.append(enc("a"), 0, { msgId: "m1" })).toBe(1);
    expect(await log.lastSeq()).toBe(1);
  });

  test("msgIdAt(seq) reads back the message id an entry was appended with, so a leader can recognise its own entry behind a refusal", async () => {
    const log = await openLog();
    await log.append(enc("a"), 0, { msgId: "n1:1:1" });
    await log.append(enc("b"), 1);
    expect(await log.msgIdAt(1)).toBe("n1:1:1");
    expect(await log.msgIdAt(2)).toBeUndefined();
    expect(await log.msgIdAt(3)).toBeUndefined();
  });

  test("an entry chained to its writer's previous message id is refused when another writer's entry sits at its expected sequence", async () => {
    // Leader A had its entry at S and two more in flight on a stalled
    // link; leader B appended its leader entry at S + 1 meanwhile.
    const log = await openLog();
    const S = await log.append(enc("a-applied"), 0, { msgId: "A:1:1" });
    expect(await log.append(enc("b-leader"), S)).toBe(S + 1);
    // The stall heals. A's first entry expects S: refused.
    await expect(log.append(enc("a-1"), S, { msgId: "A:1:2" })).rejects.toBeInstanceOf(WrongLastSequenceError);
    // A's second expects S + 1, which matches B's entry; only its
    // predecessor's id tells it apart. It used to land at S + 2.
    const err = await log.append(enc("a-2"), S + 1, { msgId: "A:1:3", expectedLastMsgId: "A:1:2" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WrongLastSequenceError);
    expect(isWrongLastSequence(err)).toBe(true);
    expect(await log.lastSeq()).toBe(S + 1);
    // B's own pipeline: its second entry names its first and lands.
    expect(await log.append(enc("b-1"), S + 1, { msgId: "B:2:3" })).toBe(S + 2);
    expect(await log.append(enc("b-2"), S + 2, { msgId: "B:2:4", expectedLastMsgId: "B:2:3" })).toBe(S + 3);
    // A retry of B's second entry after a lost ack, once the tail moved on:
    // the server answers the duplicate with its sequence before it checks
    // either expectation.
    expect(await log.append(enc("b-3"), S + 3, { msgId: "B:2:5", expectedLastMsgId: "B:2:4" })).toBe(S + 4);
    expect(await log.append(enc("b-2"), S + 2, { msgId: "B:2:4", expectedLastMsgId: "B:2:3" })).toBe(S + 3);
    expect(await log.lastSeq()).toBe(S + 4);
  });

  test("a pushed follower stopped while it creates its consumer stops, even on an idle log", async () => {
    const log = await openLog();
    await log.append(enc("e1"), 0);
    // Hold the consumer's creation until stop() was called: the window
    // between consumers.get() and the first message read.
    const js = (log as unknown as { js: { consumers: { get: (...a: unknown[]) => Promise<{ consume: (...a: unknown[]) => Promise<unknown> }> } } }).js;
    const get = js.consumers.get.bind(js.consumers);
    let stopCalled!: () => void;
    const stopping = new Promise<void>((r) => (stopCalled = r));
    let wrapped = false;
    js.consumers.get = async (...args: unknown[]) => {
      const consumer = await get(...args);
      const consume = consumer.consume.bind(consumer);
      wrapped = true;
      consumer.consume = async (...a: unknown[]) => {
        await stopping;
        return consume(...a);
      };
      return consumer;
    };
    const f = log.follow(2, () => undefined, { stallCheckMs: 200 });
    await until(() => wrapped, 5000, "the consumer to be fetched");
    const stopped = f.stop();
    stopCalled();
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("stop() still waiting after 5 s")), 5000));
    await expect(Promise.race([stopped, timeout])).resolves.toBeUndefined();
    js.consumers.get = get;
  });

  test("read(from, to) hands over the range in order, each after the previous resolved", async () => {
    const log = await openLog();
    const total = 300; // more than one pull batch
    for (let i = 0; i < total; i++) await log.append(enc(`e${i + 1}`), i);
    const seen: number[] = [];
    let inHandler = false;
    await log.read(1, total, async (seq, data) => {
      expect(inHandler).toBe(false);
      inHandler = true;
      expect(dec(data)).toBe(`e${seq}`);
      seen.push(seq);
      if (seq % 50 === 0) await new Promise((r) => setTimeout(r, 5));
      inHandler = false;
    });
    expect(seen).toEqual(Array.from({ length: total }, (_, i) => i + 1));

    const middle: number[] = [];
    await log.read(120, 130, (seq) => void middle.push(seq));
    expect(middle).toEqual(Array.from({ length: 11 }, (_, i) => 120 + i));

    await log.read(5, 4, () => {
      throw new Error("empty range must not call the handler");
    });
    await expect(log.read(1, total + 1, () => undefined)).rejects.toBeInstanceOf(RangeError);
  });

  test("a poller with a small batch and byte limit still gets every entry, one larger than the limit included", async () => {
    const log = await openLog();
    const big = "x".repeat(5000);
    const bodies = [...Array.from({ length: 10 }, (_, i) => `e${i + 1}`), big, ...Array.from({ length: 5 }, (_, i) => `e${i + 12}`)];
    for (let i = 0; i < bodies.length; i++) await log.append(enc(bodies[i]), i);
    const seen: string[] = [];
    const f = log.follow(1, (_seq, data) => void seen.push(dec(data)), { poll: { minPollMs: 5, maxPollMs: 20, batch: 3, maxBytes: 1024 } });
    followers.push(f);
    await until(() => seen.length === bodies.length, 10_000, "every entry");
    expect(seen).toEqual(bodies);
    expect(f.nextSeq).toBe(bodies.length + 1);
  });

  test("a stream created before compaction (deny_purge) is never purged", async () => {
    n++;
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: `LOG_${n}`, subjects: [`dlm.test${n}.log`], deny_purge: true });
    const log = await LogStream.open(nc, { streamName: `LOG_${n}`, subject: `dlm.test${n}.log`, replicas: 1 });
    expect(log.canPurge).toBe(false);
    await log.append(enc("e1"), 0);
    await expect(log.purgeBelow(2)).rejects.toThrow(/denies purges/);
  });

  test("the log id is stable across reopen and differs for a recreated stream", async () => {
    const log = await openLog();
    const again = await LogStream.open(nc, { streamName: log.streamName, subject: log.subject, replicas: 1 });
    expect(again.logId).toBe(log.logId);
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete(log.streamName);
    const recreated = await LogStream.open(nc, { streamName: log.streamName, subject: log.subject, replicas: 1 });
    expect(recreated.logId).not.toBe(log.logId);
  });

  test("opening a stream with other subjects fails clearly", async () => {
    const log = await openLog();
    await expect(LogStream.open(nc, { streamName: log.streamName, subject: "other.subject", replicas: 1 })).rejects.toThrow(
      /exists with subjects/,
    );
  });

  describe.each(FOLLOW_MODES)("following, entries %s", (_how, mode) => {
    test("follow(k) gets k..n, then new entries live", async () => {
      const log = await openLog();
      for (let i = 0; i < 10; i++) await log.append(enc(`e${i + 1}`), i);
      const seen: number[] = [];
      const f = log.follow(
        4,
        async (seq, data) => {
          expect(dec(data)).toBe(`e${seq}`);
          seen.push(seq);
        },
        mode,
      );
      followers.push(f);
      await until(() => seen.length === 7, 10_000, "catch-up");
      expect(seen).toEqual([4, 5, 6, 7, 8, 9, 10]);
      for (let i = 10; i < 15; i++) await log.append(enc(`e${i + 1}`), i);
      await until(() => seen.length === 12, 10_000, "live entries");
      expect(seen).toEqual(Array.from({ length: 12 }, (_, i) => i + 4));
      expect(f.nextSeq).toBe(16);
      await f.stop();
      await log.append(enc("e16"), 15);
      await new Promise((r) => setTimeout(r, 200));
      expect(seen).toHaveLength(12); // nothing after stop
    });

    test("a follower whose handler throws stops and reports the error", async () => {
      const log = await openLog();
      for (let i = 0; i < 3; i++) await log.append(enc(`e${i + 1}`), i);
      const seen: number[] = [];
      const errors: Error[] = [];
      const f = log.follow(
        1,
        (seq) => {
          if (seq === 2) throw new Error("apply failed");
          seen.push(seq);
        },
        { ...mode, onError: (e) => errors.push(e) },
      );
      await expect(f.done).rejects.toThrow("apply failed");
      expect(seen).toEqual([1]);
      expect(errors).toHaveLength(1);
      expect(f.nextSeq).toBe(2);
    });

    test("a follower meeting a hole in the log fails instead of skipping it", async () => {
      // Our streams deny deletes; make one by hand that allows them, to punch a hole.
      n++;
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: `LOG_${n}`, subjects: [`dlm.test${n}.log`] });
      const log = await LogStream.open(nc, { streamName: `LOG_${n}`, subject: `dlm.test${n}.log`, replicas: 1 });
      for (let i = 0; i < 5; i++) await log.append(enc(`e${i + 1}`), i);
      await jsm.streams.deleteMessage(log.streamName, 3);
      const seen: number[] = [];
      const f = log.follow(1, (seq) => void seen.push(seq), { ...mode, onError: () => undefined });
      await expect(f.done).rejects.toBeInstanceOf(LogGapError);
      expect(seen).toEqual([1, 2]);
      await expect(log.read(4, 5, () => undefined)).resolves.toBeUndefined();
      await expect(log.read(1, 5, () => undefined)).rejects.toThrow(/hole: entries 3\.\.3/);
    });

    test("after a purge, reading or following from below the first sequence says so instead of skipping", async () => {
      const log = await openLog();
      expect(log.canPurge).toBe(true);
      for (let i = 0; i < 10; i++) await log.append(enc(`e${i + 1}`), i);
      expect(await log.purgeBelow(6)).toBe(5);
      expect(await log.extent()).toMatchObject({ firstSeq: 6, lastSeq: 10, messages: 5 });
      await expect(log.read(3, 10, () => undefined)).rejects.toBeInstanceOf(LogPurgedError);
      const f = log.follow(4, () => undefined, { ...mode, onError: () => undefined });
      await expect(f.done).rejects.toMatchObject({ name: "LogPurgedError", wantedSeq: 4, firstSeq: 6 });
      const seen: number[] = [];
      await log.read(6, 10, (seq) => void seen.push(seq));
      expect(seen).toEqual([6, 7, 8, 9, 10]);
      // Appends go on from the tail as before.
      expect(await log.append(enc("e11"), 10)).toBe(11);
    });

    test("a follower behind a log purged to its very end says so instead of waiting for an entry forever", async () => {
      // retainEntries 0 on an idle log purges everything: no entry is left
      // to arrive past the follower's next and reveal the purge as a gap.
      const log = await openLog();
      for (let i = 0; i < 5; i++) await log.append(enc(`e${i + 1}`), i);
      expect(await log.purgeBelow(6)).toBe(5);
      expect(await log.extent()).toMatchObject({ firstSeq: 6, lastSeq: 5, messages: 0 });
      const seen: number[] = [];
      const f = log.follow(3, (seq) => void seen.push(seq), { ...mode, stallCheckMs: 200, onError: () => undefined });
      followers.push(f);
      const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("follower still waiting after 5 s")), 5000));
      await expect(Promise.race([f.done, timeout])).rejects.toMatchObject({ name: "LogPurgedError", wantedSeq: 3, firstSeq: 6 });
      expect(seen).toEqual([]);
    });

    test("follow survives a server crash mid-catch-up and misses nothing", async () => {
      const log = await openLog();
      const logIdBefore = log.logId;
      const before = 400;
      for (let i = 0; i < before; i++) await log.append(enc(`e${i + 1}`), i);
      const seen: number[] = [];
      const f = log.follow(
        1,
        async (seq, data) => {
          expect(dec(data)).toBe(`e${seq}`);
          seen.push(seq);
          if (seq % 10 === 0) await new Promise((r) => setTimeout(r, 2)); // a slowish applier
        },
        mode,
      );
      followers.push(f);
      await until(() => seen.length >= 50, 10_000, "some catch-up");
      expect(seen.length).toBeLessThan(before); // the crash lands mid-catch-up

      await nats.kill(); // SIGKILL; the ordered consumer (R1, in memory) dies with it
      await nats.restart();

      // Appends after the restart, through the same (reconnected) connection.
      let last = before;
      const deadline = Date.now() + 30_000;
      while (last < before + 10) {
        try {
          // msgId: a retry of an append that did land is not refused or doubled.
          last = await log.append(enc(`e${last + 1}`), last, { msgId: `e${last + 1}`, timeoutMs: 1000 });
        } catch (err) {
          if (Date.now() > deadline) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      await until(() => seen.length >= before + 10, 30_000, "entries after the restart");
      await new Promise((r) => setTimeout(r, 100));
      expect(seen).toEqual(Array.from({ length: before + 10 }, (_, i) => i + 1));
      const reopened = await LogStream.open(nc, { streamName: log.streamName, subject: log.subject, replicas: 1 });
      expect(reopened.logId).toBe(logIdBefore);
    });
  });
});

describe("LogStream on a 3-node cluster", () => {
  let cluster: TestNatsCluster;
  let nc: NatsConnection;

  beforeAll(async () => {
    cluster = await startNatsCluster(3);
    nc = await connect({ servers: cluster.urls, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  });
  afterAll(async () => {
    await nc?.close();
    await cluster?.close();
  });

  test.each(FOLLOW_MODES)("an R3 log keeps its order and a follower (entries %s) misses nothing when the stream leader crashes", async (how, mode) => {
    const log = await LogStream.open(nc, { streamName: `LOG_R3_${how}`, subject: `dlm.r3${how}.log`, replicas: 3 });
    expect((await log.info()).config.num_replicas).toBe(3);
    for (let i = 0; i < 20; i++) await log.append(enc(`e${i + 1}`), i);
    const seen: number[] = [];
    const f = log.follow(
      1,
      (seq, data) => {
        expect(dec(data)).toBe(`e${seq}`);
        seen.push(seq);
      },
      mode,
    );
    try {
      await until(() => seen.length === 20, 10_000, "catch-up");
      const leaderName = (await log.info()).cluster?.leader;
      const leader = cluster.servers.find((s) => s.name === leaderName);
      expect(leader).toBeDefined();
      await leader!.kill();

      let last = 20;
      const deadline = Date.now() + 30_000;
      while (last < 30) {
        try {
          last = await log.append(enc(`e${last + 1}`), last, { msgId: `e${last + 1}`, timeoutMs: 1000 });
        } catch (err) {
          if (Date.now() > deadline) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      await until(() => seen.length >= 30, 30_000, "entries after the leader crash");
      await leader!.restart();
      expect(seen).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    } finally {
      await f.stop();
    }
  });
});
