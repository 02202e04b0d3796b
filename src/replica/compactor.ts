/**
 * The leader's background job that keeps the log bounded: on a schedule of
 * entries and bytes it stores a snapshot (state + files at one sequence) in
 * the snapshot bucket, checks it is stored whole, deletes snapshots
 * beyond the number kept, and purges the log below the point every live
 * node has applied and the oldest kept verified snapshot covers, minus a
 * margin (replica/compactionPolicy.ts).
 *
 * Why the leader: it is the one node that is certainly at the log's tail,
 * and one writer means one snapshot per interval instead of one per node.
 * It does not pause serving to do it: the state is copied at an entry
 * boundary (a synchronous deep copy), and the files' bytes are streamed
 * afterwards from their append-only prefixes, a slice at a time between
 * requests. A deposed leader whose job is still running is harmless: a
 * snapshot of sequence s is the same bytes whoever writes it, and a purge
 * is bounded by what live nodes have applied and what verified snapshots
 * cover, which no change of leader makes untrue.
 *
 * Between passes it also sweeps the bucket for the chunks of uploads that
 * never finished (a leader killed mid-upload leaves them, and nothing else
 * purges them): replica/orphanChunkSweep.ts. A sweep that fails is logged
 * and tried again later; it never stops compaction.
 */
import { createInbox, type NatsConnection } from "@nats-io/nats-core";
import type { Logger } from "../log/logger";
import type { LogStream } from "../log/logStream";
import type { FileRangeReader, SnapshotBucket, StoredSnapshotInfo } from "../log/snapshotBucket";
import { SnapshotCorruptError, type SnapshotHeader } from "../storage/snapshotFormat";
import { compactionPoint, snapshotDue, type CompactionSettings } from "./compactionPolicy";
import { OrphanChunkSweep } from "./orphanChunkSweep";

export interface CompactorOptions extends CompactionSettings {
  /** How often the compactor looks at the log. */
  checkIntervalMs: number;
  /** How long it collects the nodes' applied sequences each time; a node that does not answer by then is not live. */
  gatherMs: number;
  /**
   * Chunks in the snapshot bucket that no object names, whose count has not
   * changed for this long, are a dead upload's and are purged. Must be well
   * above the longest pause between two chunks of a live upload.
   */
  orphanChunkAgeMs: number;
}

export interface CompactorHost {
  readonly nodeId: string;
  appliedSeq(): number;
  /** The state and file lengths at the current applied sequence, and how to read the files' bytes. */
  captureSnapshot(): { header: SnapshotHeader; readRange: FileRangeReader };
  /** Counts chunk messages of unfinished uploads the sweep purged. */
  recordOrphanChunksPurged(chunks: number): void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class Compactor {
  private running = false;
  /** Bumped by every start(): a loop from an earlier term, still asleep, ends instead of running beside the new one. */
  private generation = 0;
  private loop: Promise<void> | undefined;
  /** Names of snapshots this process found stored whole. */
  private readonly verified = new Set<string>();
  private readonly orphans: OrphanChunkSweep;
  /** When the last orphan sweep started (performance.now()); undefined: none yet. */
  private lastSweepAtMs: number | undefined;
  private sweeping = false;

  constructor(
    private readonly host: CompactorHost,
    private readonly nc: NatsConnection,
    private readonly log: LogStream,
    private readonly bucket: SnapshotBucket,
    private readonly nodesInfoSubject: string,
    private readonly opts: CompactorOptions,
    private readonly logger: Logger,
  ) {
    this.orphans = new OrphanChunkSweep(
      bucket,
      { orphanChunkAgeMs: opts.orphanChunkAgeMs, onPurged: (chunks) => host.recordOrphanChunksPurged(chunks) },
      logger,
    );
  }

  start(): void {
    if (this.running || this.opts.snapshotEveryEntries <= 0) return;
    this.running = true;
    this.loop = this.run(++this.generation);
  }

  /** Stops after the step in progress; does not wait for an upload to finish. */
  stop(): void {
    this.running = false;
  }

  /** Resolves when the loop has ended (tests, shutdown). */
  async stopped(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  private async run(generation: number): Promise<void> {
    while (this.running && this.generation === generation) {
      try {
        await this.step();
      } catch (err) {
        this.logger.warn({ err: (err as Error).message }, "compaction step failed; trying again later");
      }
      if (this.running && this.generation === generation) await this.sweepIfDue();
      await sleep(this.opts.checkIntervalMs);
    }
  }

  /** One pass: snapshot if due, verify, prune, purge. */
  async step(): Promise<void> {
    let extent = await this.log.extent();
    let stored = await this.bucket.list(this.log.logId);
    if (snapshotDue(this.opts, extent, this.host.appliedSeq(), stored[0]?.meta.seq ?? 0)) {
      await this.writeSnapshot();
      if (!this.running) return;
      stored = await this.bucket.list(this.log.logId);
    }
    const kept = await this.keepVerified(stored);
    if (!this.running || kept.length === 0 || !this.log.canPurge) return;
    const liveApplied = await this.liveApplied();
    extent = await this.log.extent();
    const keepFrom = compactionPoint({
      log: extent,
      liveApplied,
      keptSnapshotSeqs: kept.map((s) => s.meta.seq),
      retainEntries: this.opts.retainEntries,
    });
    if (keepFrom === undefined || !this.running) return;
    const purged = await this.log.purgeBelow(keepFrom);
    this.logger.info(
      { keepFrom, purged, liveApplied, snapshots: kept.map((s) => s.meta.seq), firstSeq: extent.firstSeq, lastSeq: extent.lastSeq },
      "log compacted",
    );
  }

  /**
   * An orphan sweep every quarter of the orphan age (every pass when that is
   * shorter): a sweep sees an orphan within a quarter age of its upload's
   * death and the first sweep an age later purges it, so it lives at most
   * about one and a half ages (plus a pass or two); and a leader with the
   * default age of minutes does not list the bucket's objects a second
   * time every pass.
   */
  private async sweepIfDue(): Promise<void> {
    const now = performance.now();
    if (this.sweeping) return;
    if (this.lastSweepAtMs !== undefined && now - this.lastSweepAtMs < this.opts.orphanChunkAgeMs / 4) return;
    this.sweeping = true;
    this.lastSweepAtMs = now;
    try {
      await this.orphans.sweep();
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, "orphan snapshot chunk sweep failed; trying again later");
    } finally {
      this.sweeping = false;
    }
  }

  private async writeSnapshot(): Promise<void> {
    const started = Date.now();
    const { header, readRange } = this.host.captureSnapshot();
    const meta = await this.bucket.write(header, readRange);
    const uploadMs = Date.now() - started;
    // Count it only once it is listed and stored whole (size, every chunk).
    const [info] = (await this.bucket.list(this.log.logId)).filter((s) => s.meta.seq === header.seq && s.meta.sha256 === meta.sha256);
    if (!info) throw new Error(`snapshot ${header.seq} is not listed after writing it`);
    await this.bucket.checkStored(info);
    this.verified.add(info.name);
    this.logger.info({ seq: header.seq, sizeBytes: meta.sizeBytes, uploadMs, totalMs: Date.now() - started }, "snapshot stored and verified");
  }

  /**
   * The newest `keepSnapshots` snapshots that are stored whole; broken ones
   * are deleted (nobody can use them), older ones beyond the count too.
   */
  private async keepVerified(newestFirst: StoredSnapshotInfo[]): Promise<StoredSnapshotInfo[]> {
    const good: StoredSnapshotInfo[] = [];
    for (const snap of newestFirst) {
      if (good.length >= Math.max(1, this.opts.keepSnapshots)) break;
      if (!this.verified.has(snap.name)) {
        try {
          await this.bucket.checkStored(snap);
          this.verified.add(snap.name);
        } catch (err) {
          if (!(err instanceof SnapshotCorruptError)) throw err;
          this.logger.warn({ snapshot: snap.name, err: err.message }, "deleting a corrupt snapshot");
          await this.bucket.delete(snap.name);
          continue;
        }
      }
      good.push(snap);
    }
    const oldestKeptSeq = good[good.length - 1]?.meta.seq ?? 0;
    const old = newestFirst.filter((s) => s.meta.seq < oldestKeptSeq);
    for (const snap of old) {
      await this.bucket.delete(snap.name);
      this.verified.delete(snap.name);
      this.logger.info({ snapshot: snap.name }, "deleted an old snapshot");
    }
    return good;
  }

  /** Applied sequences of the nodes that answer within gatherMs, this one included. */
  private async liveApplied(): Promise<number[]> {
    const applied: number[] = [];
    const inbox = createInbox();
    const sub = this.nc.subscribe(inbox, {
      callback: (_err, msg) => {
        try {
          const info = JSON.parse(new TextDecoder().decode(msg.data)) as { nodeId?: unknown; appliedSeq?: unknown };
          if (info.nodeId !== this.host.nodeId && typeof info.appliedSeq === "number") applied.push(info.appliedSeq);
        } catch {
          // An answer that is not JSON is not a live node's.
        }
      },
    });
    this.nc.publish(this.nodesInfoSubject, new TextEncoder().encode("{}"), { reply: inbox });
    await sleep(this.opts.gatherMs);
    sub.unsubscribe();
    applied.push(this.host.appliedSeq());
    return applied;
  }
}
