/**
 * Following the log by polling: a standby's way to keep up without being
 * woken for every entry.
 *
 * Why: the push follower (an ordered consumer, logStream.ts) receives each
 * entry the moment it is stored, so every entry the leader appends wakes
 * every standby, on the same cores the leader, nats-server and the clients
 * need. On the 2-core bench machine, freezing the two standbys made a lone
 * client's acquire 20-25% faster. A poller asks for everything new every
 * `minPollMs` (more often while it is behind, less when idle): the entries
 * come in one burst, one wake-up per poll instead of one per entry.
 *
 * How: an ephemeral pull consumer (no acks, in memory, one replica,
 * removed by the server after `inactiveMs` without polls) and "no wait"
 * pull requests, which the server answers at once with what it has (up to
 * `batch` entries or `maxBytes`) and a 404/408 status at the end. The same
 * guarantees as the push follower: every entry exactly once, in order, each
 * handed over after the previous handler resolved; a sequence that skips
 * recreates the consumer from the next expected entry, a hole that stays
 * fails loudly, and entries compacted away raise LogPurgedError.
 */
import { createInbox, nanos, type Msg, type NatsConnection, type Subscription } from "@nats-io/nats-core";
import { AckPolicy, DeliverPolicy, type JetStreamManager } from "@nats-io/jetstream";
import { connectionInboxPrefix } from "../protocol/subjects";
import { errorMessage } from "../util/errorMessage";
import type { Logger } from "./logger";
import { checkGap, LogGapError, purgedPast, type EntryHandler, type Follower, type LogStream } from "./logStream";

export interface PollOptions {
  /** Wait between polls while entries keep coming (ms). */
  minPollMs: number;
  /** Longest wait between polls when the log is idle (ms). */
  maxPollMs: number;
  /** Entries per poll at most. Default 256. */
  batch?: number;
  /** Bytes per poll at most. Default 8 MiB. */
  maxBytes?: number;
  /** A poll that gets no end-of-batch status within this is given up and the consumer recreated (ms). Default 2000. */
  pollTimeoutMs?: number;
  /** The server removes the consumer after this long without a poll (a poller that died). Default 60 s. */
  inactiveMs?: number;
  /**
   * Every this many ms of empty polls, the poller checks the stream's last
   * sequence; entries it has not received for two checks in a row make it
   * recreate its consumer. Default 5000; 0 turns it off.
   */
  stallCheckMs?: number;
  onError?: (err: Error) => void;
}


/**
 * The stream sequence and the count still pending, from a delivered
 * message's reply subject: `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>`,
 * or with domain and account hash after `ACK` (and a random token at the end) in the newer form.
 */
export function deliveryInfo(reply: string): { streamSeq: number; pending: number } {
  const t = reply.split(".");
  if (t[0] !== "$JS" || t[1] !== "ACK" || (t.length !== 9 && t.length < 11)) throw new Error(`not a JetStream delivery: ${JSON.stringify(reply)}`);
  const at = t.length === 9 ? 5 : 7;
  const streamSeq = Number(t[at]);
  const pending = Number(t[at + 3]);
  if (!Number.isSafeInteger(streamSeq) || streamSeq < 1 || !Number.isSafeInteger(pending)) throw new Error(`bad JetStream delivery info: ${JSON.stringify(reply)}`);
  return { streamSeq, pending };
}

/** What one poll brought. */
interface PollResult {
  /** Entries handed over. */
  count: number;
  /** The server has more right now (a full batch, or pending > 0 after the last). */
  more: boolean;
  /** Set when the consumer must be recreated, with why. */
  restart?: string;
  /** Set when the server delivered `to` where `at` was expected. */
  gap?: { at: number; to: number };
}

export class LogPoller implements Follower {
  readonly done: Promise<void>;

  private next: number;
  private stopping = false;
  private handlerFailed = false;
  private consumerName: string | undefined;
  private sub: Subscription | undefined;
  private inboxPrefix = "";
  private pollNo = 0;
  /** The poll in progress: its reply subject and where its messages go. */
  private current: { subject: string; onMsg: (msg: Msg) => void } | undefined;
  private wake: (() => void) | undefined;
  private readonly batch: number;
  private maxBytes: number;
  private readonly pollTimeoutMs: number;
  private readonly inactiveMs: number;
  private readonly stallCheckMs: number;

  constructor(
    private readonly stream: LogStream,
    private readonly jsm: JetStreamManager,
    private readonly nc: NatsConnection,
    private readonly log: Logger,
    fromSeq: number,
    private readonly onEntry: EntryHandler,
    private readonly opts: PollOptions,
  ) {
    if (!(opts.minPollMs > 0) || !(opts.maxPollMs >= opts.minPollMs)) {
      throw new RangeError(`poll intervals must satisfy 0 < minPollMs <= maxPollMs, got ${opts.minPollMs}, ${opts.maxPollMs}`);
    }
    this.next = fromSeq;
    this.batch = Math.max(1, opts.batch ?? 256);
    this.maxBytes = Math.max(1024, opts.maxBytes ?? 8 * 1024 * 1024);
    this.pollTimeoutMs = opts.pollTimeoutMs ?? 2000;
    this.inactiveMs = Math.max(opts.inactiveMs ?? 60_000, 10 * opts.maxPollMs);
    this.stallCheckMs = opts.stallCheckMs ?? 5000;
    this.done = this.run().finally(() => this.cleanup());
    this.done.catch((err: Error) => {
      this.log.error({ err: { name: err.name, message: err.message }, stream: stream.streamName, next: this.next }, "log poller failed");
      opts.onError?.(err);
    });
  }

  get nextSeq(): number {
    return this.next;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    try {
      await this.done;
    } catch {
      // already reported through onError
    }
  }

  private async run(): Promise<void> {
    let waitMs = this.opts.minPollMs;
    let attempt = 0;
    let gap: { at: number; to: number; count: number } | undefined;
    let emptySinceMs: number | undefined;
    let stalls = 0;
    while (!this.stopping) {
      if (this.nc.isClosed()) throw new Error("log poller: NATS connection closed");
      let restart: string | undefined;
      try {
        if (this.consumerName === undefined) await this.createConsumer();
        if (this.stopping) break;
        const result = await this.poll();
        restart = result.restart;
        if (result.gap) {
          const { at, to } = result.gap;
          gap = gap && gap.at === at && gap.to === to ? { at, to, count: gap.count + 1 } : { at, to, count: 1 };
          await checkGap(this.stream, this.log, gap.at, gap.to, gap.count);
          restart = `gap: expected ${at}, got ${to}`;
        }
        if (result.count > 0 && !result.gap) {
          attempt = 0;
          gap = undefined;
          emptySinceMs = undefined;
          stalls = 0;
        }
        if (restart === undefined) {
          // Catch up at once while behind; while entries trickle in, poll
          // every minPollMs; when idle, back off towards maxPollMs.
          waitMs = result.more ? 0 : result.count > 0 ? this.opts.minPollMs : Math.min(this.opts.maxPollMs, Math.max(this.opts.minPollMs, waitMs * 2));
          if (result.count === 0 && !result.more && this.stallCheckMs > 0) {
            const now = Date.now();
            emptySinceMs ??= now;
            if (now - emptySinceMs >= this.stallCheckMs) {
              emptySinceMs = now;
              const extent = await this.stream.extent().catch(() => undefined);
              // Purged up to the very end: no entry is left to show it as a gap.
              const purged = extent && purgedPast(extent, this.next);
              if (purged) throw purged;
              stalls = (extent?.lastSeq ?? 0) >= this.next ? stalls + 1 : 0;
              if (stalls >= 2) {
                stalls = 0;
                restart = `stalled below the log's last sequence (next ${this.next})`;
              }
            }
          }
        }
      } catch (err) {
        if (err instanceof LogGapError || this.handlerFailed) throw err;
        if (this.nc.isClosed()) throw new Error("log poller: NATS connection closed", { cause: err });
        restart = `error: ${errorMessage(err)}`;
      }
      if (this.stopping) break;
      if (restart !== undefined) {
        this.log.warn({ stream: this.stream.streamName, next: this.next, reason: restart, attempt }, "log poller recreating its consumer");
        this.dropConsumer();
        waitMs = Math.min(100 * 2 ** Math.min(attempt, 5), 2000);
        attempt++;
      }
      if (waitMs > 0) await this.sleep(waitMs);
    }
  }

  private async createConsumer(): Promise<void> {
    const info = await this.jsm.consumers.add(this.stream.streamName, {
      ack_policy: AckPolicy.None,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: this.next,
      mem_storage: true,
      num_replicas: 1,
      inactive_threshold: nanos(this.inactiveMs),
    });
    this.consumerName = info.name;
    if (this.sub === undefined) {
      this.inboxPrefix = `${createInbox(connectionInboxPrefix(this.nc))}.`;
      this.sub = this.nc.subscribe(`${this.inboxPrefix}*`, {
        callback: (err, msg) => {
          if (err) return;
          this.current?.onMsg(msg);
        },
      });
    }
  }

  /** Best effort: the server removes it anyway after `inactiveMs`. */
  private dropConsumer(): void {
    const name = this.consumerName;
    this.consumerName = undefined;
    if (name !== undefined && !this.nc.isClosed()) this.jsm.consumers.delete(this.stream.streamName, name).catch(() => undefined);
  }

  /**
   * One "no wait" pull: collects what the server sends until the batch is
   * full or its end-of-batch status comes, then hands the entries over in
   * order. Entries arrive under the log's own subject (only statuses carry
   * the poll's inbox), so an entry from an earlier, given-up poll can show
   * up here: the sequence checks below skip or reject it.
   */
  private async poll(): Promise<PollResult> {
    const subject = `${this.inboxPrefix}${(this.pollNo++).toString(36)}`;
    const messages: Msg[] = [];
    // 0: no end within pollTimeoutMs; -1: the batch filled up (the server sends no status then).
    let status = 0;
    let description = "";
    await new Promise<void>((resolve) => {
      const end = (code: number): void => {
        status = code;
        clearTimeout(timer);
        this.current = undefined;
        resolve();
      };
      const timer = setTimeout(() => end(0), this.pollTimeoutMs);
      this.current = {
        subject,
        onMsg: (msg) => {
          const code = msg.headers?.code ?? 0;
          if (code === 0) {
            messages.push(msg);
            if (messages.length >= this.batch) end(-1);
          } else if (code !== 100 && msg.subject === subject) {
            description = msg.headers?.description ?? "";
            end(code);
          }
        },
      };
      this.nc.publish(
        `$JS.API.CONSUMER.MSG.NEXT.${this.stream.streamName}.${this.consumerName}`,
        JSON.stringify({ batch: this.batch, max_bytes: this.maxBytes, no_wait: true }),
        { reply: subject },
      );
    });
    let count = 0;
    let pending = 0;
    for (const msg of messages) {
      if (this.stopping) return { count, more: false };
      const info = deliveryInfo(msg.reply ?? "");
      const seq = info.streamSeq;
      pending = info.pending;
      if (seq < this.next) {
        this.log.warn({ seq, next: this.next }, "log poller: skipping an entry it already handed over");
        continue;
      }
      if (seq > this.next) return { count, more: false, gap: { at: this.next, to: seq } };
      try {
        await this.onEntry(seq, msg.data);
      } catch (err) {
        // Retrying the same entry after a partial apply could apply it twice: following ends here.
        this.handlerFailed = true;
        throw err;
      }
      this.next = seq + 1;
      count++;
    }
    // A full batch, 404 "No Messages", 408 "Request Timeout" (some, then no
    // more) and 409 "Message Size Exceeds MaxBytes" end a pull normally.
    if (status === 409 && /MaxBytes/i.test(description) && messages.length === 0) {
      // One entry is larger than a whole poll may carry (a NATS with a raised
      // max_payload): asking again with the same limit would never get it.
      this.maxBytes *= 2;
      this.log.warn({ next: this.next, maxBytes: this.maxBytes }, "log poller: an entry exceeds the poll's byte limit; doubling it");
      return { count, more: true };
    }
    if (status === -1 || status === 404 || status === 408 || (status === 409 && /MaxBytes/i.test(description))) {
      return { count, more: status === -1 || status === 409 || pending > 0 };
    }
    if (status === 0) return { count, more: false, restart: "no end-of-batch status in time" };
    return { count, more: false, restart: `status ${status}${description ? ` ${description}` : ""}` };
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    }).then(() => {
      this.wake = undefined;
    });
  }

  private cleanup(): void {
    this.dropConsumer();
    if (this.sub && !this.nc.isClosed()) this.sub.unsubscribe();
    this.sub = undefined;
  }
}
