/**
 * When to write a snapshot and how far the log may be purged: pure
 * functions of numbers the compactor gathers (no I/O, no clock), so the
 * rules can be tested on their own.
 */

export interface CompactionSettings {
  /** Write a snapshot once this many entries were applied since the latest one (0: never; compaction is off). */
  snapshotEveryEntries: number;
  /** … or once the entries since the latest one hold about this many bytes. */
  snapshotEveryBytes: number;
  /** Verified snapshots kept in the bucket; older ones are deleted. At least 1. */
  keepSnapshots: number;
  /** Entries kept in the stream below the compaction point (the margin). */
  retainEntries: number;
}

/** The stream's shape, from its info. */
export interface LogShape {
  firstSeq: number;
  lastSeq: number;
  messages: number;
  bytes: number;
}

/**
 * True when the node at `appliedSeq` should write a new snapshot, the
 * latest stored one being at `latestSnapshotSeq` (0: none). The bytes since
 * the latest snapshot are estimated from the retained entries' average
 * size: exact byte counts per entry are not kept anywhere.
 */
export function snapshotDue(settings: CompactionSettings, log: LogShape, appliedSeq: number, latestSnapshotSeq: number): boolean {
  if (settings.snapshotEveryEntries <= 0) return false;
  const entriesSince = appliedSeq - latestSnapshotSeq;
  if (entriesSince <= 0) return false;
  if (entriesSince >= settings.snapshotEveryEntries) return true;
  if (settings.snapshotEveryBytes <= 0 || log.messages <= 0) return false;
  return (entriesSince * log.bytes) / log.messages >= settings.snapshotEveryBytes;
}

export interface CompactionInput {
  log: LogShape;
  /** Applied sequence of every node that answered (the live ones, the compactor included). */
  liveApplied: readonly number[];
  /** Sequences of the verified snapshots that are kept, any order. */
  keptSnapshotSeqs: readonly number[];
  retainEntries: number;
}

/**
 * The first sequence to keep (purge everything below it), or undefined when
 * nothing should be purged. Entries at or below the point must be covered
 * twice over: every live node has applied them (so none needs them from the
 * log), and the *oldest* kept snapshot reflects them (so a node that comes
 * back, or one that meets a corrupt latest snapshot, can start from any
 * kept snapshot and find the rest in the log). The margin keeps
 * `retainEntries` more below that, for nodes that are only briefly behind.
 */
export function compactionPoint(input: CompactionInput): number | undefined {
  if (input.liveApplied.length === 0 || input.keptSnapshotSeqs.length === 0) return undefined;
  const covered = Math.min(Math.min(...input.liveApplied), Math.min(...input.keptSnapshotSeqs));
  const keepFrom = covered + 1 - Math.max(0, input.retainEntries);
  if (keepFrom <= Math.max(1, input.log.firstSeq)) return undefined;
  return Math.min(keepFrom, input.log.lastSeq + 1);
}
