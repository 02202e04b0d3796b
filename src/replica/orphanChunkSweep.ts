/**
 * Purges the chunks of snapshot uploads that never finished. The object
 * store writes an object's chunks under `$O.<bucket>.C.<nuid>` and then its
 * metadata naming the nuid; a writer killed in between (a leader SIGKILLed
 * mid-upload) leaves chunks that nothing names and nothing else purges, so
 * every failover during an upload would grow the bucket's stream for good.
 *
 * One sweep lists the chunk sets, then the objects (in that order: an
 * upload that finishes between the two listings is then seen as named),
 * and purges what replica/orphanChunkPolicy.ts calls orphans. It remembers
 * the unnamed sets it saw for the next sweep. What it remembers stays true
 * across terms and sweepers: a set's chunks are only ever appended, and a
 * nuid is never reused, so "this count since then" cannot be undone.
 */
import type { Logger } from "../log/logger";
import type { SnapshotBucket } from "../log/snapshotBucket";
import { orphanChunkSets, type UnnamedChunkSet } from "./orphanChunkPolicy";

/**
 * Unnamed chunk sets looked at in one sweep. A set is one subject whatever
 * its size, and orphans come one per interrupted upload, so this is far
 * above what a cluster accumulates; it keeps one sweep's requests bounded
 * (one purge per set) if a stream was left with thousands.
 */
export const ORPHAN_SWEEP_MAX_SETS = 100;

export interface OrphanChunkSweepOptions {
  /** A set unnamed whose chunk count has not changed for this long is an orphan. */
  orphanChunkAgeMs: number;
  /** Default ORPHAN_SWEEP_MAX_SETS. */
  maxSetsPerSweep?: number;
  /** The clock the age is measured on (ms, monotonic). Default performance.now(). */
  nowMs?: () => number;
  /** Told the number of chunk messages each purge removed (the node's metric). */
  onPurged?: (chunks: number) => void;
}

/** One purged orphan set. */
export interface PurgedChunkSet {
  nuid: string;
  chunks: number;
}

export class OrphanChunkSweep {
  private unnamed: ReadonlyMap<string, UnnamedChunkSet> = new Map();
  private readonly nowMs: () => number;

  constructor(
    private readonly bucket: SnapshotBucket,
    private readonly opts: OrphanChunkSweepOptions,
    private readonly logger: Logger,
  ) {
    this.nowMs = opts.nowMs ?? (() => performance.now());
  }

  /**
   * One sweep. Throws when a request fails; what earlier sweeps saw is
   * kept, so the next sweep carries on where this one stopped.
   */
  async sweep(): Promise<PurgedChunkSet[]> {
    const chunkSets = await this.bucket.chunkSets();
    const namedNuids = await this.bucket.namedChunkSets();
    const decision = orphanChunkSets({
      chunkSets,
      namedNuids,
      previous: this.unnamed,
      nowMs: this.nowMs(),
      orphanChunkAgeMs: this.opts.orphanChunkAgeMs,
      maxSets: this.opts.maxSetsPerSweep ?? ORPHAN_SWEEP_MAX_SETS,
    });
    this.unnamed = decision.unnamed;
    const purged: PurgedChunkSet[] = [];
    for (const orphan of decision.purge) {
      const chunks = await this.bucket.purgeChunkSet(orphan.nuid);
      // Another sweeper (a deposed leader's, still finishing) may have
      // purged it first.
      if (chunks === 0) continue;
      purged.push({ nuid: orphan.nuid, chunks });
      this.opts.onPurged?.(chunks);
      this.logger.info(
        { nuid: orphan.nuid, chunks, unchangedMs: Math.round(orphan.unchangedMs), subject: this.bucket.chunkSubject(orphan.nuid) },
        "purged the chunks of an unfinished snapshot upload",
      );
    }
    return purged;
  }
}
