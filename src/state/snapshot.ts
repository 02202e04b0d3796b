/**
 * The whole state as plain JSON, and back. A node writes one beside its file
 * checkpoint so that a restart replays only the log after it, not the whole
 * log. Maps are stored as entry arrays in insertion order: iteration order
 * decides the order of effects, so it is part of the state replicas agree on.
 *
 * Version 2 stores every lock's holders (shared locks and semaphores have
 * several) and, per waiting request, every lock it waits for (acquireAll).
 * Version 1 snapshots (one `holder` per lock, one lock per wait) are still
 * restored: deployed clusters keep them in their object store and
 * checkpoints, and a state restored from one equals the state a replay of
 * the same log gives.
 *
 * Version 3 is version 2 plus the ended sessions' ids. It is written only
 * for a state whose leader keeps them (limits.maxEndedSessions), so a node
 * from before it refuses the snapshot instead of loading a state without
 * them; any other state is still written as version 2.
 */
import type { Limits } from "../protocol/limits";
import type { Reply } from "../protocol/messages";
import { FILE_COUNT } from "../protocol/files";
import { assert } from "../util/assert";
import { sectionBytes } from "./sectionBytes";
import type { EndReason, Grant, LockKind, LockState, Session, State, Waiter } from "./types";

export const SNAPSHOT_VERSION = 2;
/** Version 2 plus `endedSessions`. */
export const SNAPSHOT_VERSION_ENDED_SESSIONS = 3;

/** A lock as stored: its holders in grant order. */
export interface LockSnapshot {
  name: string;
  kind: LockKind;
  limit?: number;
  holders: Grant[];
  queue: Waiter[];
}

interface SessionSnapshot<Pending> {
  id: string;
  createdAt: number;
  acked: number;
  replies: Array<[number, Reply]>;
  pending: Array<[number, Pending]>;
  held: Array<[string, number]>;
  ended: Array<[number, EndReason]>;
}

interface SnapshotCommon {
  now: number;
  nextToken: number;
  epoch: number;
  leader: string | null;
  /** Absent in snapshots written before versions were logged. */
  leaderVersion?: string | null;
  limits: Limits;
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

export interface StateSnapshot extends SnapshotCommon {
  version: typeof SNAPSHOT_VERSION | typeof SNAPSHOT_VERSION_ENDED_SESSIONS;
  /** Version 3 only: ended sessions' ids, oldest first, with when each ended. */
  endedSessions?: Array<[string, number]>;
  locks: Array<[string, LockSnapshot]>;
  /** Per session, its waits: seq -> every lock the request waits for. */
  sessions: Array<SessionSnapshot<string[]>>;
}

/** What snapshots looked like before shared locks, semaphores and acquireAll: one holder per lock. */
export interface StateSnapshotV1 extends SnapshotCommon {
  version: 1;
  locks: Array<[string, { name: string; holder: Grant | null; queue: Waiter[] }]>;
  sessions: Array<SessionSnapshot<string>>;
}

/**
 * The state as plain data. It must not share anything that later entries
 * mutate (grants, queues, tables), so those are copied; what the machine
 * never changes once made (cached replies, waiters, staged appends) is
 * shared. Copying only that, instead of a JSON round trip of everything,
 * keeps a snapshot of 100,000 sessions from stalling the leader for a second.
 */
export function snapshot(state: State): StateSnapshot {
  const keepsEnded = state.limits.maxEndedSessions !== undefined;
  return {
    version: keepsEnded ? SNAPSHOT_VERSION_ENDED_SESSIONS : SNAPSHOT_VERSION,
    ...(keepsEnded ? { endedSessions: [...state.endedSessions.entries()] } : {}),
    now: state.now,
    nextToken: state.nextToken,
    epoch: state.epoch,
    leader: state.leader,
    leaderVersion: state.leaderVersion,
    limits: { ...state.limits },
    locks: [...state.locks.entries()].map(([name, lock]) => [name, lockSnapshot(lock)]),
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

function lockSnapshot(lock: LockState): LockSnapshot {
  return {
    name: lock.name,
    kind: lock.kind,
    ...(lock.limit !== undefined ? { limit: lock.limit } : {}),
    holders: [...lock.holders.values()].map(copyGrant),
    queue: [...lock.queue],
  };
}

function copyGrant(grant: Grant): Grant {
  return { ...grant, staged: [...grant.staged] };
}

/**
 * Rebuilds a state from a snapshot of either version, checking what later
 * entries rely on. New containers for everything the machine mutates, so
 * applying entries to the restored state never changes the snapshot it came
 * from.
 */
export function restore(snap: StateSnapshot | StateSnapshotV1): State {
  assert(
    snap.version === SNAPSHOT_VERSION || snap.version === SNAPSHOT_VERSION_ENDED_SESSIONS || snap.version === 1,
    () => `unknown state snapshot version ${String((snap as { version: unknown }).version)}`,
  );
  assert(Array.isArray(snap.fileLengths) && snap.fileLengths.length === FILE_COUNT, "snapshot has no file lengths");
  const v2 = snap.version === 1 ? fromVersion1(snap) : snap;
  const sessions = new Map<string, Session>();
  for (const s of v2.sessions) {
    sessions.set(s.id, {
      id: s.id,
      createdAt: s.createdAt,
      acked: s.acked,
      replies: new Map(s.replies),
      pending: new Map(s.pending.map(([seq, names]) => [seq, [...names]])),
      held: new Map(s.held),
      ended: new Map(s.ended),
    });
  }
  const locks = new Map<string, LockState>();
  let queuedCommitBytes = 0;
  for (const [name, stored] of v2.locks) {
    assert(stored.name === name, () => `snapshot lock ${name} is named ${stored.name}`);
    const lock = restoreLock(stored);
    for (const grant of lock.holders.values()) {
      assert(sessions.get(grant.client)?.held.get(name) === grant.token, () => `snapshot holder ${grant.token} of ${name} has no session`);
    }
    for (const w of lock.queue) {
      assert(sessions.get(w.client)?.pending.get(w.seq)?.includes(name) === true, () => `snapshot waiter ${w.client}/${w.seq} has no session`);
      if (w.commit) queuedCommitBytes += sectionBytes(w.commit);
    }
    locks.set(name, lock);
  }
  const endedSessions = new Map(v2.version === SNAPSHOT_VERSION_ENDED_SESSIONS ? (v2.endedSessions ?? []) : []);
  for (const id of endedSessions.keys()) assert(!sessions.has(id), () => `snapshot session ${id} is both live and ended`);
  return {
    now: v2.now,
    nextToken: v2.nextToken,
    epoch: v2.epoch,
    leader: v2.leader,
    leaderVersion: v2.leaderVersion ?? null,
    limits: { ...v2.limits },
    locks,
    sessions,
    endedSessions,
    fileLengths: [...v2.fileLengths],
    sessionDigest: v2.sessionDigest ? { ...v2.sessionDigest, quietSince: new Map(v2.sessionDigest.quietSince) } : null,
    queuedCommitBytes,
  };
}

/** A stored lock as the machine keeps it, with the holders' rules checked. */
function restoreLock(stored: LockSnapshot): LockState {
  const holders = new Map<number, Grant>();
  let permitsOut = 0;
  for (const grant of stored.holders) {
    holders.set(grant.token, copyGrant(grant));
    permitsOut += grant.permits ?? 0;
  }
  const name = stored.name;
  if (stored.kind === "semaphore") {
    const limit = stored.limit;
    assert(limit !== undefined && permitsOut <= limit, () => `snapshot semaphore ${name} has ${permitsOut} permits out of ${String(limit)}`);
    assert(stored.holders.every((g) => g.permits !== undefined), () => `snapshot semaphore ${name} has a grant without permits`);
    return { name, kind: "semaphore", limit, holders, permitsOut, queue: [...stored.queue] };
  }
  assert(stored.kind === "lock" && permitsOut === 0, () => `snapshot lock ${name} has kind ${String(stored.kind)} and permits`);
  const exclusive = stored.holders.filter((g) => g.mode !== "shared").length;
  assert(exclusive === 0 || stored.holders.length === 1, () => `snapshot lock ${name} has an exclusive holder beside others`);
  return { name, kind: "lock", holders, permitsOut: 0, queue: [...stored.queue] };
}

/** A version-1 snapshot in version-2 shape: every lock a lock, its one holder a list, every wait one lock. */
function fromVersion1(snap: StateSnapshotV1): StateSnapshot {
  return {
    ...snap,
    version: SNAPSHOT_VERSION,
    locks: snap.locks.map(([name, lock]) => [name, { name: lock.name, kind: "lock", holders: lock.holder ? [lock.holder] : [], queue: lock.queue }]),
    sessions: snap.sessions.map((s) => ({ ...s, pending: s.pending.map(([seq, name]): [number, string[]] => [seq, [name]]) })),
  };
}
