/**
 * The leader's append pipeline when JetStream misbehaves: a deposed
 * leader's entries delivered late, a stream electing a leader, an apply
 * that fails while the coordinator stops. A real Coordinator over the
 * in-memory log of test/support/coordinatorHarness.ts.
 */
import { HarnessNode, Link, MemoryLog, settle, until } from "../support/coordinatorHarness";
import { NoRespondersError } from "../../src/protocol/transportErrors";
import type { AppendOptions } from "../../src/log/logStream";
import { decodeEntry } from "../../src/coordinator/entries";

const CLIENT = "client-aaaaaaaa";

describe("coordinator pipeline", () => {
  const nodes: HarnessNode[] = [];
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((n) => n.coordinator?.stop("test over")));
  });
  const node = (id: string, log: MemoryLog): HarnessNode => {
    const n = new HarnessNode(id, new Link(log));
    nodes.push(n);
    return n;
  };
  /** The stream is electing a leader: `n`'s appends find no responders until `elect()`; `refused()` counts them. */
  const electing = (n: HarnessNode) => {
    let elected = false;
    let refused = 0;
    const append = n.link.append.bind(n.link);
    n.link.append = (data, expected, opts) => {
      if (elected) return append(data, expected, opts);
      refused++;
      return Promise.reject(new NoRespondersError("dlm.log"));
    };
    return { refused: () => refused, elect: () => void (elected = true) };
  };

  test("a deposed leader's pipelined entries, delivered after a stall, do not land behind the new leader's entry", async () => {
    const log = new MemoryLog();
    const a = node("A", log);
    const b = node("B", log);
    // One command per entry: several entries go out at once, as under load.
    await a.lead({ maxBatchCommands: 1 });
    const hello = a.request({ op: "hello", client: CLIENT, seq: 1 });
    await settle();
    expect(hello.replies[0]).toMatchObject({ ok: true });

    // A's link to JetStream stalls: what A appends is held, not lost.
    a.link.held = true;
    const pending = [2, 3, 4].map((seq) => a.request({ op: "acquire", client: CLIENT, seq, lock: `L${seq}` }));
    await settle(3);
    const tailBefore = log.lastSeq();

    // B sees A silent, takes over and appends its leader entry right after the tail.
    await b.lead();
    expect(b.appliedSeq()).toBe(tailBefore + 1);

    // The stall ends: A's held entries reach JetStream in order, and none lands.
    a.link.heal();
    await settle();
    expect(log.lastSeq()).toBe(tailBefore + 1);
    expect(a.stepDowns).toHaveLength(1);
    for (const msg of pending) expect(msg.replies.map((r) => (r.ok ? "ok" : r.error))).toEqual(["NOT_LEADER"]);

    // B's next append expects its own leader entry at the tail: it lands, and B still leads.
    const hello2 = b.request({ op: "hello", client: "client-bbbbbbbb", seq: 1 });
    await settle();
    expect(hello2.replies[0]).toMatchObject({ ok: true });
    expect(b.stepDowns).toEqual([]);
  });

  test("every pipelined entry after the first names the one before it as the log's last message id", async () => {
    const log = new MemoryLog();
    const a = node("A", log);
    await a.lead({ maxBatchCommands: 1 });
    a.request({ op: "hello", client: CLIENT, seq: 1 });
    await settle();
    const sent: AppendOptions[] = [];
    const append = a.link.append.bind(a.link);
    a.link.append = (data, expected, opts = {}) => {
      sent.push(opts);
      return append(data, expected, opts);
    };
    a.link.held = true;
    const acquires = [2, 3, 4].map((seq) => a.request({ op: "acquire", client: CLIENT, seq, lock: `L${seq}` }));
    await settle(3);
    a.link.heal();
    await settle();
    for (const msg of acquires) expect(msg.replies[0]).toMatchObject({ ok: true });
    expect(sent.length).toBeGreaterThanOrEqual(3);
    expect(sent[0]?.expectedLastMsgId).toBeUndefined();
    for (let i = 1; i < sent.length; i++) expect(sent[i]?.expectedLastMsgId).toBe(sent[i - 1]?.msgId);
    expect(a.stepDowns).toEqual([]);
  });

  test.each([
    ["nats-server 2.10: the message id is checked first", false],
    ["nats-server 2.12+, one server: the expected sequence is checked first", true],
  ])("an append whose acknowledgement was lost is retried and answered once, without a step-down (%s)", async (_server, sequenceFirst) => {
    const log = new MemoryLog();
    log.sequenceFirst = sequenceFirst;
    const a = node("A", log);
    await a.lead();
    a.link.loseNextAck = true;
    const hello = a.request({ op: "hello", client: CLIENT, seq: 1 });
    await until(() => hello.replies.length > 0 || a.stepDowns.length > 0, "the hello answered, or a step-down");
    expect(a.stepDowns).toEqual([]);
    expect(hello.replies).toEqual([expect.objectContaining({ ok: true })]);
    // Logged once, not twice: the retry found its own entry.
    const hellos = log.entries.map((e, i) => decodeEntry(i + 1, e.data)).flatMap((e) => e.cmds).filter((c) => c.type === "hello");
    expect(hellos).toHaveLength(1);
    const next = a.request({ op: "ping", client: CLIENT });
    await settle();
    expect(next.replies[0]).toMatchObject({ ok: true });
  });

  test("an append that finds no stream leader (no responders) is retried after a pause while the lease is fresh", async () => {
    const log = new MemoryLog();
    const a = node("A", log);
    // The election here ends when the test says so, not within the default wait.
    await a.lead({ noStreamLeaderWaitMs: 60_000 });
    // The stream elects a leader: appends find no responders until the test says it has one.
    const election = electing(a);
    const hello = a.request({ op: "hello", client: CLIENT, seq: 1 });
    // More refusals than the attempt cap (3) for a timeout: no-responders is not counted against it.
    await until(() => election.refused() >= 5 || a.stepDowns.length > 0, "five appends refused, or a step-down");
    expect(a.stepDowns).toEqual([]);
    expect(hello.replies).toEqual([]);
    election.elect();
    await until(() => hello.replies.length > 0, "the hello answered");
    expect(hello.replies[0]).toMatchObject({ ok: true });
    expect(a.stepDowns).toEqual([]);
  });

  test("an append that finds no stream leader steps down once the lease is no longer fresh", async () => {
    const log = new MemoryLog();
    const a = node("A", log);
    await a.lead({ noStreamLeaderWaitMs: 60_000 });
    const election = electing(a);
    const hello = a.request({ op: "hello", client: CLIENT, seq: 1 });
    await until(() => election.refused() >= 2 || a.stepDowns.length > 0, "two appends refused, or a step-down");
    expect(a.stepDowns).toEqual([]);
    a.fresh = false;
    await until(() => hello.replies.length > 0, "the hello answered");
    expect(a.stepDowns).toHaveLength(1);
    expect(hello.replies[0]).toMatchObject({ ok: false, error: "NOT_LEADER" });
  });

  test("an append that finds no stream leader for longer than noStreamLeaderWaitMs steps down, so its clients hear NOT_LEADER", async () => {
    const log = new MemoryLog();
    const a = node("A", log);
    await a.lead({ noStreamLeaderWaitMs: 100 });
    // A long election (the stream leader's server died): the lease stays fresh throughout.
    const election = electing(a);
    const hello = a.request({ op: "hello", client: CLIENT, seq: 1 });
    await until(() => hello.replies.length > 0, "the hello answered");
    expect(election.refused()).toBeGreaterThan(1);
    expect(a.stepDowns).toHaveLength(1);
    expect(hello.replies[0]).toMatchObject({ ok: false, error: "NOT_LEADER" });
  });

  test("stop() passes on an apply that fails while the entries in flight settle", async () => {
    const log = new MemoryLog();
    const a = node("A", log);
    await a.lead();
    a.link.held = true;
    a.request({ op: "hello", client: CLIENT, seq: 1 });
    await settle(3);
    const coordinator = a.coordinator;
    a.coordinator = undefined;
    const stopping = coordinator?.stop("leader lease could not be renewed");
    a.applyEntry = () => {
      throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
    };
    a.link.heal();
    // DlmNode.leaveLeadership awaits this; the node's fatal path takes it from there.
    await expect(stopping).rejects.toThrow(/ENOSPC/);
  });

  test("a late copy of an ended session's hello is answered SESSION_EXPIRED without a log entry, and the session stays ended", async () => {
    const log = new MemoryLog();
    const a = node("A", log);
    await a.lead();
    const hello = { op: "hello", client: CLIENT, seq: 1 };
    a.request(hello);
    await settle();
    const bye = a.request({ op: "goodbye", client: CLIENT, seq: 2, ack: 1 });
    await until(() => bye.replies.length > 0, "the goodbye's answer");
    const tail = log.lastSeq();
    const late = a.request(hello);
    await settle();
    expect(late.replies[0]).toMatchObject({ ok: false, error: "SESSION_EXPIRED" });
    expect(log.lastSeq()).toBe(tail);
    expect(a.state().sessions.has(CLIENT)).toBe(false);
  });
});
