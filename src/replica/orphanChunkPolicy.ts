/**
 * Which chunk sets of the snapshot bucket are orphans, left by an upload
 * whose writer died before it published the object's metadata: a pure
 * function of what the sweep listed and what it remembers from the sweep
 * before (no I/O, no clock of its own), so the rule can be tested alone.
 *
 * A set is purged only when all of these hold:
 * - no live object names it now;
 * - the previous sweep saw it unnamed too, with the same number of chunks;
 * - its chunk count has not changed for at least `orphanChunkAgeMs`, as
 *   measured by the sweeper's own clock between the sweep that first saw
 *   that count and this one.
 *
 * Why this cannot hit an upload in progress: an upload only ever appends
 * chunks to its set and publishes the metadata right after the last one,
 * so while it runs its count grows, and every change restarts the set's
 * clock. To be purged, a set must have had no chunk written for the whole
 * age, which a live upload does only if its writer is frozen for that long
 * between two chunks (then the object it may still finish is missing
 * chunks, and the compactor's whole-object check deletes it before anyone
 * counts on it). The count, not the newest chunk's timestamp, is what is
 * compared: a timestamp is the NATS server's clock and "now" is the
 * node's, and a server clock behind the node's would make a chunk written
 * a moment ago look old. Requiring two sweeps also means one listing of
 * the objects that came back short cannot get a live object's chunks
 * purged.
 */

/** An unnamed chunk set as a sweep saw it: its chunk count, and since when (the sweeper's clock, ms) it has been unnamed with that count. */
export interface UnnamedChunkSet {
  chunks: number;
  sinceMs: number;
}

export interface OrphanSweepInput {
  /** Every chunk set in the stream: nuid -> chunk messages. */
  chunkSets: ReadonlyMap<string, number>;
  /** The nuids that the bucket's live objects name, listed after `chunkSets`. */
  namedNuids: ReadonlySet<string>;
  /** The `unnamed` of the previous sweep (empty for the first). */
  previous: ReadonlyMap<string, UnnamedChunkSet>;
  nowMs: number;
  orphanChunkAgeMs: number;
  /** At most this many unnamed sets are looked at (remembered or purged) in one sweep. */
  maxSets: number;
}

export interface OrphanSweepDecision {
  /** The orphans to purge now, oldest first. */
  purge: Array<{ nuid: string; chunks: number; unchangedMs: number }>;
  /**
   * What the next sweep compares against: every unnamed set looked at now,
   * the ones to purge included (a purged set is gone from the next listing;
   * one whose purge failed is purged by the next sweep without waiting again).
   */
  unnamed: Map<string, UnnamedChunkSet>;
}

export function orphanChunkSets(input: OrphanSweepInput): OrphanSweepDecision {
  const ageMs = Math.max(0, input.orphanChunkAgeMs);
  const candidates: Array<{ nuid: string; chunks: number; seen: UnnamedChunkSet | undefined }> = [];
  for (const [nuid, chunks] of input.chunkSets) {
    if (chunks <= 0 || input.namedNuids.has(nuid)) continue;
    const seen = input.previous.get(nuid);
    candidates.push({ nuid, chunks, seen: seen !== undefined && seen.chunks === chunks ? seen : undefined });
  }
  // Sets already being timed come first, oldest first, then new ones in a
  // fixed order: with more orphans than the bound, the ones already timed
  // get purged and make room, so every orphan's turn comes.
  candidates.sort((a, b) => {
    if (a.seen && b.seen) return a.seen.sinceMs - b.seen.sinceMs || compare(a.nuid, b.nuid);
    if (a.seen || b.seen) return a.seen ? -1 : 1;
    return compare(a.nuid, b.nuid);
  });
  const purge: OrphanSweepDecision["purge"] = [];
  const unnamed = new Map<string, UnnamedChunkSet>();
  for (const { nuid, chunks, seen } of candidates.slice(0, Math.max(0, input.maxSets))) {
    const record = seen ?? { chunks, sinceMs: input.nowMs };
    unnamed.set(nuid, record);
    const unchangedMs = input.nowMs - record.sinceMs;
    if (seen !== undefined && unchangedMs >= ageMs) purge.push({ nuid, chunks, unchangedMs });
  }
  return { purge, unnamed };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
