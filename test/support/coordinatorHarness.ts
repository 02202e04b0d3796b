/**
 * A real Coordinator over an in-memory log, for the leader's failure paths
 * that need an exact interleaving: two leaders sharing one log, a link to
 * JetStream that stalls and delivers what it held later, a stream with no
 * leader for a while.
 *
 * MemoryLog keeps JetStream's append rules in the order nats-server 2.10
 * checks them (server/stream.go, processJetStreamMsg): a message id seen
 * before is answered with its original sequence, then the expected last
 * sequence and the expected last message id must match the tail, else
 * nothing is written and the writer is refused as LogStream.append refuses
 * it (WrongLastSequenceError). With `sequenceFirst` it checks the expected
 * last sequence before the message id, as nats-server 2.12 and later do for
 * a stream on a single server.
 */
import type { Msg, NatsConnection, SubscriptionOptions } from "@nats-io/nats-core";
import { Coordinator, DEFAULT_COORDINATOR_OPTIONS, type CoordinatorHost, type CoordinatorOptions } from "../../src/coordinator/coordinator";
import { decodeEntry, encodeEntry } from "../../src/coordinator/entries";
import { silentLogger } from "../../src/log/logger";
import { WrongLastSequenceError, type AppendOptions, type LogStream } from "../../src/log/logStream";
import { NodeMetrics } from "../../src/metrics/nodeMetrics";
import { DEFAULT_LIMITS } from "../../src/protocol/limits";
import type { Reply } from "../../src/protocol/messages";
import { names as subjectNames } from "../../src/protocol/subjects";
import { apply, createState, type Effect, type LogEntry, type State } from "../../src/state";

export interface StoredEntry {
  data: Uint8Array;
  msgId?: string;
}

/** The shared JetStream log: compare-and-swap on the tail, dedupe by message id. */
export class MemoryLog {
  readonly entries: StoredEntry[] = [];
  /** Check the expected last sequence before the message id (nats-server 2.12+, one server). */
  sequenceFirst = false;

  lastSeq(): number {
    return this.entries.length;
  }

  /** The message id of the last entry, "" when it had none (as the server's lmsgId). */
  lastMsgId(): string {
    return this.entries[this.entries.length - 1]?.msgId ?? "";
  }

  store(data: Uint8Array, expectedLastSeq: number, opts: AppendOptions): number {
    if (this.sequenceFirst && expectedLastSeq !== this.lastSeq()) throw new WrongLastSequenceError(expectedLastSeq);
    if (opts.msgId !== undefined) {
      const i = this.entries.findIndex((e) => e.msgId === opts.msgId);
      if (i >= 0) return i + 1;
    }
    if (expectedLastSeq !== this.lastSeq()) throw new WrongLastSequenceError(expectedLastSeq);
    if (opts.expectedLastMsgId !== undefined && opts.expectedLastMsgId !== this.lastMsgId()) {
      throw new WrongLastSequenceError(expectedLastSeq, { expectedLastMsgId: opts.expectedLastMsgId });
    }
    this.entries.push({ data, ...(opts.msgId !== undefined ? { msgId: opts.msgId } : {}) });
    return this.entries.length;
  }
}

/** One node's link to the log; it can hold (stall) the node's appends and deliver them later, in order. */
export class Link {
  held = false;
  /** The next append is stored but its acknowledgement is lost: the writer sees a timeout. */
  loseNextAck = false;
  private queue: Array<() => void> = [];

  constructor(readonly log: MemoryLog) {}

  append(data: Uint8Array, expectedLastSeq: number, opts: AppendOptions = {}): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const deliver = (): void => {
        try {
          const seq = this.log.store(data, expectedLastSeq, opts);
          if (this.loseNextAck) {
            this.loseNextAck = false;
            reject(new Error("TIMEOUT: the acknowledgement was lost"));
          } else resolve(seq);
        } catch (e) {
          reject(e);
        }
      };
      if (this.held) this.queue.push(deliver);
      else setImmediate(deliver);
    });
  }

  /** The stall ends: what was held reaches the log in the order it was sent. */
  heal(): void {
    this.held = false;
    const queue = this.queue;
    this.queue = [];
    for (const deliver of queue) deliver();
  }
}

/** A request message as the coordinator sees it; its answers are kept. */
export class RequestMsg {
  readonly replies: Reply[] = [];
  constructor(
    readonly subject: string,
    readonly data: Uint8Array,
    readonly reply = "_INBOX.test",
  ) {}
  respond(bytes: Uint8Array): boolean {
    this.replies.push(JSON.parse(Buffer.from(bytes).toString()) as Reply);
    return true;
  }
}

/** What a DlmNode does for its coordinator, in memory: state, applied sequence, step-down. */
export class HarnessNode implements CoordinatorHost {
  readonly names = subjectNames("dlm");
  readonly limits = DEFAULT_LIMITS;
  readonly metrics = new NodeMetrics();
  readonly logger = silentLogger;
  readonly nc: NatsConnection;
  readonly log: LogStream;
  coordinator: Coordinator | undefined;
  /** Why this node was told to stop leading, in order. */
  readonly stepDowns: string[] = [];
  /** The node's own clock of its leader lease (DlmNode.leaseFresh). */
  fresh = true;
  /** What applyEntry does; a test may replace it (a full disk, a broken invariant). */
  applyEntry: (seq: number, entry: LogEntry) => Effect[] = (seq, entry) => this.applyInOrder(seq, entry);

  private current: State = createState(DEFAULT_LIMITS);
  private applied = 0;
  private readonly callbacks = new Map<string, (err: Error | null, msg: Msg) => void>();

  constructor(
    readonly nodeId: string,
    readonly link: Link,
  ) {
    const callbacks = this.callbacks;
    const nc = {
      info: { max_payload: 1024 * 1024 },
      subscribe(subject: string, opts: SubscriptionOptions) {
        callbacks.set(subject, opts.callback as (err: Error | null, msg: Msg) => void);
        return {
          drain: async () => void callbacks.delete(subject),
          unsubscribe: () => void callbacks.delete(subject),
        };
      },
      publish() {
        // Notifications to clients: nobody listens in these tests.
      },
    };
    this.nc = nc as unknown as NatsConnection;
    const log: Pick<LogStream, "append" | "msgIdAt"> = {
      append: (data, expected, opts) => this.link.append(data, expected, opts),
      msgIdAt: async (seq) => this.link.log.entries[seq - 1]?.msgId,
    };
    this.log = log as LogStream;
  }

  state(): State {
    return this.current;
  }
  appliedSeq(): number {
    return this.applied;
  }
  fileLength(): number {
    return 0;
  }
  readFile(): Buffer {
    return Buffer.alloc(0);
  }
  leaseFresh(): boolean {
    return this.fresh;
  }
  stepDown(reason: string): void {
    this.stepDowns.push(reason);
    const coordinator = this.coordinator;
    this.coordinator = undefined;
    void coordinator?.stop(reason);
  }

  /** Catches up with the log, as a follower does: applies whatever it holds past `applied`. */
  catchUp(): void {
    while (this.applied < this.link.log.lastSeq()) {
      const seq = this.applied + 1;
      this.applyEntry(seq, decodeEntry(seq, (this.link.log.entries[seq - 1] as StoredEntry).data));
    }
  }

  /** DlmNode.becomeLeader in short: catch up, append a leader entry (CAS), start a coordinator. */
  async lead(opts: Partial<CoordinatorOptions> = {}): Promise<void> {
    this.catchUp();
    const epoch = this.current.epoch + 1;
    const entry: LogEntry = { v: 4, t: Date.now(), node: this.nodeId, epoch, cmds: [{ type: "leader", node: this.nodeId, epoch, limits: this.limits }] };
    const seq = await this.link.append(encodeEntry(entry), this.applied);
    this.applyEntry(seq, entry);
    this.coordinator = new Coordinator(this, { ...DEFAULT_COORDINATOR_OPTIONS, holdQueuedMs: 0, ...opts });
    this.coordinator.start();
  }

  /** A client request arriving on the request subject. */
  request(body: object): RequestMsg {
    const msg = new RequestMsg(this.names.requestSubject, Buffer.from(JSON.stringify(body)));
    const callback = this.callbacks.get(this.names.requestSubject);
    if (!callback) throw new Error(`${this.nodeId} does not serve requests`);
    callback(null, msg as unknown as Msg);
    return msg;
  }

  private applyInOrder(seq: number, entry: LogEntry): Effect[] {
    if (seq !== this.applied + 1) throw new Error(`entry ${seq} applied after ${this.applied}`);
    const effects = apply(this.current, entry);
    this.applied = seq;
    return effects;
  }
}

export const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Lets the event loop run `n` times, so appends, acks and applies that are ready all happen. */
export async function settle(n = 20): Promise<void> {
  for (let i = 0; i < n; i++) await tick();
}

/**
 * Waits until `cond` holds, checking every few milliseconds. The bound is
 * only there so a test that fails ends instead of polling on after jest
 * gave up on it; nothing here is a claim about speed.
 */
export async function until(cond: () => boolean, what: string, boundMs = 20_000): Promise<void> {
  const deadline = Date.now() + boundMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`never happened: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
