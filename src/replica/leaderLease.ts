/**
 * The leader lease: one key in a KV bucket whose TTL is the lease.
 *
 * A candidate `create`s the key (fails if it exists), the leader refreshes it
 * with `update(key, value, revision)` well inside the TTL, and the key
 * vanishes `ttlMs` after its last write if the leader stops. The lease only
 * decides who *tries* to lead; safety comes from the log's expected-last-
 * sequence check, so a lease that two nodes briefly both believe they hold
 * is harmless.
 *
 * The value is JSON `{ nodeId, acquiredAt, term }`, where `term` is random per
 * acquisition. It lets a node recognise its own write when an acquire or
 * renew timed out (the write may have landed) and lets `release()` delete the
 * key only if it is still ours.
 *
 * TTL expiry and watches: nats-server 2.10 removes an expired KV entry
 * silently (per-message delete markers, which would make expiry visible to
 * a watcher, need server 2.11+ and a bucket created with `markerTTL`). A
 * watcher therefore sees puts and explicit deletes, never an expiry. `watch()`
 * makes up for it by also polling the key every `ttlMs / 4` and reporting
 * `null` when it is gone, so callers get one notification stream either way.
 */
import { randomUUID } from "crypto";
import type { NatsConnection } from "@nats-io/nats-core";
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import { Kvm, type KV, type KvEntry } from "@nats-io/kv";
import { type Logger, silentLogger } from "../log/logger";
import { errorMessage } from "../util/errorMessage";

export interface LeaderLeaseOptions {
  bucket: string;
  key: string;
  /** Lease length: the bucket's TTL (max age of the key after its last write). */
  ttlMs: number;
  replicas: number;
  nodeId: string;
  logger?: Logger;
  /** How long open() keeps retrying while JetStream is not ready. Default 30 s. */
  readyTimeoutMs?: number;
  /** Timeout of one KV operation. Default min(2 s, ttlMs / 2). */
  opTimeoutMs?: number;
}

/**
 * How a renewal ended: "renewed"; "lost" (refused, expired, timed out, or
 * released meanwhile); "notWritten" (no server took it, see renewOutcome);
 * "superseded" when, by the time it settled, the lease had been given up
 * and acquired anew: its outcome says nothing about the new acquisition.
 */
export type RenewOutcome = "renewed" | "lost" | "notWritten" | "superseded";

export interface LeaseHolder {
  nodeId: string;
  revision: number;
  acquiredAt?: number;
}

export interface LeaseWatchOptions {
  /** Poll period that catches silent TTL expiry; 0 disables polling. Default ttlMs / 4. */
  pollMs?: number;
  /**
   * Called for every write of the key seen (watch or poll), repeats
   * included, so a follower can tell a leader that keeps renewing from one
   * that stopped, without waiting for the TTL.
   */
  onWrite?: (write: LeaseWrite) => void;
  /** How long the first watch request keeps being retried while JetStream does not answer. Default 30 s. */
  readyTimeoutMs?: number;
}

/** One write of the leader key: who wrote it, at which revision, and when (the server's clock). */
export interface LeaseWrite {
  nodeId: string;
  revision: number;
  writtenAt: number;
}

interface LeaseValue {
  nodeId: string;
  acquiredAt: number;
  term: string;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function errInfo(err: unknown): { message: string; code?: number } {
  if (err instanceof JetStreamApiError) return { message: err.message, code: err.code };
  return { message: errorMessage(err) };
}

function isWrongSeq(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

/**
 * No server took the write: nats.js turns "no responders" on a JetStream
 * publish into JetStreamNotEnabled, which its package does not export, so
 * it is recognised by name.
 */
function isNotWritten(err: unknown): boolean {
  return err instanceof Error && err.name === "JetStreamNotEnabled";
}

function parseValue(entry: KvEntry): Partial<LeaseValue> & { nodeId: string } {
  try {
    const v = entry.json<Partial<LeaseValue>>();
    if (v && typeof v === "object" && typeof v.nodeId === "string") return v as Partial<LeaseValue> & { nodeId: string };
  } catch {
    // not ours: report the raw value as the holder
  }
  return { nodeId: entry.string() };
}

export class LeaderLease {
  readonly nodeId: string;
  readonly key: string;
  /** The bucket's actual TTL (may differ from the configured one if the bucket already existed). */
  readonly ttlMs: number;

  private readonly kv: KV;
  private readonly log: Logger;
  private readonly opTimeoutMs: number;
  /**
   * Our value while we (believe we) hold the key, the revision of our last
   * write, and when that write was sent (this node's clock).
   */
  private mine: { value: LeaseValue; bytes: Uint8Array; revision: number; sentAt: number } | undefined;
  /**
   * The renewal in flight, for the acquisition (value) it renews. A second
   * renewal of the same acquisition joins it instead of sending its own
   * update: both would name the same revision, the second to land would be
   * refused, and the lease, which was renewed, would be reported lost.
   */
  private renewal: { value: LeaseValue; outcome: Promise<RenewOutcome> } | undefined;
  /** Our value whose write outcome is unknown (timed out); release() still cleans it up. */
  private unsure: LeaseValue | undefined;
  /** The write the last successful current() found, for watch()'s onWrite. */
  private lastPolled: LeaseWrite | undefined;

  private constructor(kv: KV, ttlMs: number, opts: LeaderLeaseOptions) {
    this.kv = kv;
    this.nodeId = opts.nodeId;
    this.key = opts.key;
    this.ttlMs = ttlMs;
    this.log = opts.logger ?? silentLogger;
    this.opTimeoutMs = opts.opTimeoutMs ?? Math.max(200, Math.min(2000, Math.floor(ttlMs / 2)));
  }

  /** Creates or opens the bucket (TTL = ttlMs, history 1), retrying while JetStream is not ready. */
  static async open(nc: NatsConnection, opts: LeaderLeaseOptions): Promise<LeaderLease> {
    const log = opts.logger ?? silentLogger;
    if (!(opts.ttlMs >= 100)) throw new Error(`leader lease ttlMs must be at least 100 ms, got ${opts.ttlMs}`);
    if (!opts.nodeId) throw new Error("leader lease needs a nodeId");
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
    for (let attempt = 0; ; attempt++) {
      try {
        const kv = await new Kvm(nc).create(opts.bucket, { ttl: opts.ttlMs, replicas: opts.replicas, history: 1 });
        const status = await kv.status();
        let ttlMs = opts.ttlMs;
        if (status.ttl !== opts.ttlMs) {
          log.warn(
            { bucket: opts.bucket, bucketTtlMs: status.ttl, configuredTtlMs: opts.ttlMs },
            "leader bucket exists with another TTL; using the bucket's",
          );
          if (status.ttl > 0) ttlMs = status.ttl;
        }
        return new LeaderLease(kv, ttlMs, opts);
      } catch (err) {
        if (nc.isClosed() || Date.now() >= deadline) throw err;
        log.warn({ err: errInfo(err), attempt }, "JetStream not ready for the leader bucket; retrying");
        await sleep(Math.min(250 * 2 ** Math.min(attempt, 4), 2000));
      }
    }
  }

  /** Whether the last acquire/renew succeeded and nothing since says we lost it. */
  get held(): boolean {
    return this.mine !== undefined;
  }

  /** Revision of our last successful write of the key, or null. */
  get revision(): number | null {
    return this.mine?.revision ?? null;
  }

  /** Whether a renewal of the key as we hold it now is still out (one for an acquisition given up since does not count). */
  get renewalInFlight(): boolean {
    return this.renewal !== undefined && this.renewal.value === this.mine?.value;
  }

  /**
   * When our last successful write of the key was sent (this node's clock),
   * or undefined if we hold nothing. A caller that joined a renewal already
   * in flight learns here how old the write really is.
   */
  get lastWriteSentAt(): number | undefined {
    return this.mine?.sentAt;
  }

  /**
   * Creates the key with our id. True if we now hold the lease; false if
   * someone holds it, or on any error (after checking whether a timed-out
   * create did land, in which case we hold it after all). If we already
   * hold it, this is a renew.
   */
  async tryAcquire(): Promise<boolean> {
    if (this.mine) return this.renew();
    const { value, bytes, sentAt } = this.newAcquisition();
    try {
      const revision = await this.withTimeout(this.kv.create(this.key, bytes), "create");
      this.mine = { value, bytes, revision, sentAt };
      this.unsure = undefined;
      this.log.info({ nodeId: this.nodeId, revision }, "leader lease acquired");
      return true;
    } catch (err) {
      this.mine = undefined;
      if (isWrongSeq(err)) return false; // the key exists: someone leads
      this.log.warn({ err: errInfo(err) }, "leader lease create failed");
      return this.adoptIfOurs(value, bytes, sentAt);
    }
  }

  /**
   * Rewrites the key at our revision. True (with a new revision) if we still
   * hold it; false on any failure: revision mismatch, key expired, timeout.
   * The caller steps down at the first false.
   */
  async renew(): Promise<boolean> {
    return (await this.renewOutcome()) === "renewed";
  }

  /**
   * renew(), telling a lost lease from a write that surely did not happen:
   * "notWritten" when no server took the update (the bucket's stream has no
   * leader for a moment: nats.js reports "jetstream is not enabled"). Then
   * nobody else can write the key either, and the lease is still ours to
   * renew again while the caller's freshness window lasts.
   */
  async renewOutcome(): Promise<RenewOutcome> {
    const mine = this.mine;
    if (!mine) return "lost";
    if (this.renewal?.value === mine.value) return this.renewal.outcome;
    const renewal = { value: mine.value, outcome: this.sendRenewal(mine) };
    this.renewal = renewal;
    try {
      return await renewal.outcome;
    } finally {
      if (this.renewal === renewal) this.renewal = undefined;
    }
  }

  private async sendRenewal(mine: NonNullable<LeaderLease["mine"]>): Promise<RenewOutcome> {
    // What became of the acquisition this renewal was for, once it settled.
    const since = (): "same" | "released" | "replaced" =>
      this.mine?.value === mine.value ? "same" : this.mine === undefined ? "released" : "replaced";
    const sentAt = Date.now();
    try {
      const revision = await this.withTimeout(this.kv.update(this.key, mine.bytes, mine.revision, this.opTimeoutMs), "update");
      const now = since();
      if (now === "same") this.mine = { ...mine, revision, sentAt };
      return now === "same" ? "renewed" : now === "released" ? "lost" : "superseded";
    } catch (err) {
      if (isNotWritten(err)) {
        this.log.warn({ err: errInfo(err), revision: mine.revision }, "leader lease renew found no stream leader; retrying");
        return "notWritten";
      }
      const now = since();
      if (now === "replaced") return "superseded";
      if (now === "same") this.mine = undefined;
      if (!isWrongSeq(err)) this.unsure = mine.value; // the update may have landed
      this.log.warn({ err: errInfo(err), revision: mine.revision }, "leader lease renew failed");
      return "lost";
    }
  }

  /**
   * Deletes the key if it is still ours (checked by revision on the server),
   * so another node can take over at once. Never throws for "not ours".
   */
  async release(): Promise<void> {
    const mine = this.mine;
    const unsure = this.unsure;
    this.mine = undefined;
    this.unsure = undefined;
    let revision = mine?.revision;
    const term = mine?.value.term ?? unsure?.term;
    if (term === undefined) return;
    try {
      if (revision === undefined) {
        // We do not know our last revision: delete only the entry we wrote.
        const entry = await this.withTimeout(this.kv.get(this.key), "get");
        if (!entry || entry.operation !== "PUT" || parseValue(entry).term !== term) return;
        revision = entry.revision;
      }
      await this.withTimeout(this.kv.delete(this.key, { previousSeq: revision }), "delete");
      this.log.info({ nodeId: this.nodeId, revision }, "leader lease released");
    } catch (err) {
      if (isWrongSeq(err)) return; // someone else wrote it since: not ours any more
      this.log.warn({ err: errInfo(err) }, "leader lease release failed; it will expire");
    }
  }

  /**
   * Takes the key over from a holder that stopped renewing it: rewrites it
   * at the revision last seen, so this fails (false) if the holder renewed
   * since. The deposed holder's next renewal fails the same way, and the
   * log's compare-and-swap fences its appends either way.
   */
  async takeOver(revision: number): Promise<boolean> {
    if (this.mine) return this.renew();
    const { value, bytes, sentAt } = this.newAcquisition();
    try {
      const written = await this.withTimeout(this.kv.update(this.key, bytes, revision, this.opTimeoutMs), "update");
      this.mine = { value, bytes, revision: written, sentAt };
      this.unsure = undefined;
      this.log.info({ nodeId: this.nodeId, revision: written, previousRevision: revision }, "leader lease taken over from a silent leader");
      return true;
    } catch (err) {
      if (isWrongSeq(err)) return false; // the holder renewed, or someone else was faster
      this.log.warn({ err: errInfo(err) }, "leader lease take-over failed");
      return this.adoptIfOurs(value, bytes, sentAt);
    }
  }

  /** Who holds the lease now (null if nobody; the key expired or was released). */
  async current(): Promise<LeaseHolder | null> {
    const entry = await this.withTimeout(this.kv.get(this.key), "get");
    if (!entry || entry.operation !== "PUT") return null;
    const v = parseValue(entry);
    this.lastPolled = { nodeId: v.nodeId, revision: entry.revision, writtenAt: entry.created.getTime() };
    return v.acquiredAt !== undefined
      ? { nodeId: v.nodeId, revision: entry.revision, acquiredAt: v.acquiredAt }
      : { nodeId: v.nodeId, revision: entry.revision };
  }

  /**
   * Calls `onChange(nodeId)` when the holder changes and `onChange(null)`
   * when the key is released or expires. Puts and deletes arrive through a
   * KV watch; expiry (silent on nats-server 2.10) through polling. Repeats
   * of the same observation are suppressed. Returns a function that stops
   * watching.
   */
  async watch(onChange: (leader: string | null) => void, opts: LeaseWatchOptions = {}): Promise<() => void> {
    let stopped = false;
    let last: string | null | undefined;
    const report = (leader: string | null) => {
      if (stopped || leader === last) return;
      last = leader;
      try {
        onChange(leader);
      } catch (err) {
        this.log.error({ err: errInfo(err) }, "leader watch callback threw");
      }
    };

    const wrote = (write: LeaseWrite) => {
      if (stopped || !opts.onWrite) return;
      try {
        opts.onWrite(write);
      } catch (err) {
        this.log.error({ err: errInfo(err) }, "leader watch callback threw");
      }
    };
    // A JetStream request may time out now and then in a degraded cluster
    // (one server of three down): retry within a bound instead of failing
    // the node's start-up.
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
    let iter: Awaited<ReturnType<KV["watch"]>>;
    for (let attempt = 0; ; attempt++) {
      try {
        iter = await this.kv.watch({ key: this.key });
        break;
      } catch (err) {
        if (Date.now() >= deadline) throw err;
        this.log.warn({ err: errInfo(err), attempt }, "leader watch could not start; retrying");
        await sleep(Math.min(100 * 2 ** Math.min(attempt, 4), 1000));
      }
    }
    void (async () => {
      try {
        for await (const e of iter) {
          if (e.operation === "PUT") {
            const nodeId = parseValue(e).nodeId;
            wrote({ nodeId, revision: e.revision, writtenAt: e.created.getTime() });
            report(nodeId);
          } else {
            report(null);
          }
        }
      } catch (err) {
        if (!stopped) this.log.warn({ err: errInfo(err) }, "leader watch ended");
      }
    })();

    const pollMs = opts.pollMs ?? Math.max(50, Math.floor(this.ttlMs / 4));
    let timer: NodeJS.Timeout | undefined;
    let polling = false;
    if (pollMs > 0) {
      timer = setInterval(() => {
        if (polling || stopped) return;
        polling = true;
        this.current()
          .then((h) => {
            if (h && this.lastPolled && this.lastPolled.revision === h.revision) wrote(this.lastPolled);
            report(h ? h.nodeId : null);
          })
          .catch(() => undefined) // unreachable: nothing learned
          .finally(() => {
            polling = false;
          });
      }, pollMs);
      timer.unref();
    }

    return () => {
      stopped = true;
      if (timer) clearInterval(timer);
      iter.stop();
    };
  }

  /**
   * At start-up: if the key was written by an earlier incarnation of this
   * node (same node id; it crashed without deleting it), take it over at its
   * revision instead of waiting out the TTL. A restarted single node is then
   * back in well under the TTL. Safety does not rest on this: should a
   * second live process share the id, its next renew fails, and the log's
   * expected-last-sequence check refuses its appends either way.
   */
  async adoptPrevious(): Promise<boolean> {
    if (this.mine) return true;
    try {
      const entry = await this.withTimeout(this.kv.get(this.key), "get");
      if (!entry || entry.operation !== "PUT" || parseValue(entry).nodeId !== this.nodeId) return false;
      const { value, bytes, sentAt } = this.newAcquisition();
      const revision = await this.withTimeout(this.kv.update(this.key, bytes, entry.revision, this.opTimeoutMs), "update");
      this.mine = { value, bytes, revision, sentAt };
      this.log.info({ nodeId: this.nodeId, revision }, "leader lease adopted from this node's previous run");
      return true;
    } catch (err) {
      this.log.debug({ err: errInfo(err) }, "leader lease not adopted");
      return false;
    }
  }

  /** A value for a new acquisition of the key (a fresh term), its bytes, and the send time of the write about to carry it. */
  private newAcquisition(): { value: LeaseValue; bytes: Uint8Array; sentAt: number } {
    const value: LeaseValue = { nodeId: this.nodeId, acquiredAt: Date.now(), term: randomUUID() };
    return { value, bytes: new TextEncoder().encode(JSON.stringify(value)), sentAt: Date.now() };
  }

  /** After a failed create: if the key holds the value we tried to write, the create landed. */
  private async adoptIfOurs(value: LeaseValue, bytes: Uint8Array, sentAt: number): Promise<boolean> {
    try {
      const entry = await this.withTimeout(this.kv.get(this.key), "get");
      if (entry && entry.operation === "PUT" && parseValue(entry).term === value.term) {
        this.mine = { value, bytes, revision: entry.revision, sentAt };
        this.log.info({ nodeId: this.nodeId, revision: entry.revision }, "leader lease acquired (create outcome confirmed)");
        return true;
      }
      return false;
    } catch {
      this.unsure = value; // may still be ours; release() cleans it up if so
      return false;
    }
  }

  private withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const t = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`leader lease ${what} timed out after ${this.opTimeoutMs} ms`)), this.opTimeoutMs);
    });
    return Promise.race([p, t]).finally(() => clearTimeout(timer));
  }
}
