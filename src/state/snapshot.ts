/**
 * The whole state as plain JSON, and back. A node writes one beside its file
 * checkpoint so that a restart replays only the log after it, not the whole
 * log. Maps are stored as entry arrays in insertion order: iteration order
 * decides the order of effects, so it is part of the state replicas agree on.
 */
import type { Limits } from "../protocol/limits";
import type { Reply } from "../protocol/messages";
import { FILE_COUNT } from "../protocol/files";
import { assert } from "../util/assert";
import type { EndReason, LockState, Session, State } from "./types";

export const SNAPSHOT_VERSION = 1;

export interface StateSnapshot {
  version: typeof SNAPSHOT_VERSION;
  now: number;
  nextToken: number;
  epoch: number;
  leader: string | null;
  /** Absent in snapshots written before versions were logged. */
  leaderVersion?: string | null;
  limits: Limits;
  locks: Array<[string, LockState]>;
  sessions: Array<{
    id: string;
    createdAt: number;
    acked: number;
    replies: Array<[number, Reply]>;
    pending: Array<[number, string]>;
    held: Array<[string, number]>;
    ended: Array<[number, EndReason]>;
  }>;
  fileLengths: number[];
  /** The latest silence digest (sessionLiveness.ts); absent in snapshots written before digests, which load as none. */
  sessionDigest?: {
    at: number;
    everyMs: number;
    quietAfterMs: number;
    shiftMs: number;
    quietSince: Array<[string, number]>;
  } | null;
}

/**
 * The state as plain data. It must not share anything that later entries
 * mutate (grants, queues, tables), so those are copied; what the machine
 * never changes once made (cached replies, waiters, staged appends) is
 * shared. Copying only that, instead of a JSON round trip of everything,
 * keeps a snapshot of 100,000 sessions from stalling the leader for a second.
 */
export function snapshot(state: State): StateSnapshot {
  return {
    version: SNAPSHOT_VERSION,
    now: state.now,
    nextToken: state.nextToken,
    epoch: state.epoch,
    leader: state.leader,
    leaderVersion: state.leaderVersion,
    limits: { ...state.limits },
    locks: [...state.locks.entries()].map(([name, lock]) => [name, copyLock(lock)]),
    sessions: [...state.sessions.values()].map((s) => ({
      id: s.id,
      createdAt: s.createdAt,
      acked: s.acked,
      replies: [...s.replies.entries()],
      pending: [...s.pending.entries()],
      held: [...s.held.entries()],
      ended: [...s.ended.entries()],
    })),
    fileLengths: [...state.fileLengths],
    sessionDigest: state.sessionDigest && { ...state.sessionDigest, quietSince: [...state.sessionDigest.quietSince.entries()] },
  };
}

function copyLock(lock: LockState): LockState {
  return {
    name: lock.name,
    holder: lock.holder && { ...lock.holder, staged: [...lock.holder.staged] },
    queue: [...lock.queue],
  };
}

/** Rebuilds a state from a snapshot, checking what later entries rely on. */
export function restore(snap: StateSnapshot): State {
  assert(snap.version === SNAPSHOT_VERSION, () => `unknown state snapshot version ${String(snap.version)}`);
  assert(Array.isArray(snap.fileLengths) && snap.fileLengths.length === FILE_COUNT, "snapshot has no file lengths");
  // New containers for everything the machine mutates, so applying entries
  // to the restored state never changes the snapshot it came from.
  const copy: StateSnapshot = { ...snap, limits: { ...snap.limits }, fileLengths: [...snap.fileLengths], locks: snap.locks.map(([name, lock]) => [name, copyLock(lock)]) };
  const sessions = new Map<string, Session>();
  for (const s of copy.sessions) {
    sessions.set(s.id, {
      id: s.id,
      createdAt: s.createdAt,
      acked: s.acked,
      replies: new Map(s.replies),
      pending: new Map(s.pending),
      held: new Map(s.held),
      ended: new Map(s.ended),
    });
  }
  const locks = new Map<string, LockState>(copy.locks);
  for (const [name, lock] of locks) {
    assert(lock.name === name, () => `snapshot lock ${name} is named ${lock.name}`);
    if (lock.holder) assert(sessions.get(lock.holder.client)?.held.get(name) === lock.holder.token, () => `snapshot holder of ${name} has no session`);
    for (const w of lock.queue) assert(sessions.get(w.client)?.pending.get(w.seq) === name, () => `snapshot waiter ${w.client}/${w.seq} has no session`);
  }
  return {
    now: copy.now,
    nextToken: copy.nextToken,
    epoch: copy.epoch,
    leader: copy.leader,
    leaderVersion: copy.leaderVersion ?? null,
    limits: copy.limits,
    locks,
    sessions,
    fileLengths: copy.fileLengths,
    sessionDigest: copy.sessionDigest ? { ...copy.sessionDigest, quietSince: new Map(copy.sessionDigest.quietSince) } : null,
  };
}
