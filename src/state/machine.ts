/**
 * The lock state machine. Pure: no I/O, no timers, no clock. `apply` takes
 * one acknowledged log entry, updates the state in place and returns the
 * effects the caller must carry out (see `Effect` for their order). Applying
 * the same log to a fresh state on any node yields the same state and the
 * same effects; replicas and crash recovery rely on that.
 *
 * Outcomes that depend on state (granted or queued, NOT_HOLDER, TOO_LARGE
 * for a section) are decided here, at apply time, never by the coordinator
 * beforehand. That is what lets several requests share one log entry (group
 * commit) without the coordinator predicting their results.
 */
import { DEFAULT_LIMITS, type Limits } from "../protocol/limits";
import { DEFAULT_LOCK, type LeaseInfo, type Reply } from "../protocol/messages";
import { FILE_COUNT } from "../protocol/files";
import { assert, InvariantError, unreachable } from "../util/assert";
import { errorReply, okReply } from "../protocol/replies";
import type { ClientCommand, Command, Effect, EndReason, EntryVersion, Grant, LockMode, LockRequest, LockState, LogEntry, SectionAppend, Session, State, Waiter } from "./types";
import { sectionBytes } from "./sectionBytes";
import { applySessionDigest, noteSessionCreated, noteSessionEnded, noteSessionHeard, shiftSessionDigest } from "./sessionLiveness";

export function createState(limits: Limits = DEFAULT_LIMITS): State {
  return {
    now: 0,
    nextToken: 1,
    epoch: 0,
    leader: null,
    leaderVersion: null,
    limits: { ...limits },
    locks: new Map(),
    sessions: new Map(),
    endedSessions: new Map(),
    fileLengths: new Array<number>(FILE_COUNT).fill(0),
    sessionDigest: null,
    queuedCommitBytes: 0,
  };
}


/** The answer to a hello under the id of an ended session (the machine's, and the leader's without logging). */
export function endedSessionReply(): Reply {
  return errorReply("SESSION_EXPIRED", "this session has ended; a new session needs a new client id");
}

/** Whether `v` is a log entry version this build reads (the one list, for decoding and applying alike). */
export function isEntryVersion(v: unknown): v is EntryVersion {
  return v === 1 || v === 2 || v === 3 || v === 4;
}

/**
 * The log entry version `cmds` need: 4 for a leader command whose limits
 * name maxEndedSessions (a node from before it would let a dead session's
 * old hello revive it where the others refuse it); 3 if any of them lists
 * `waits` or is a hello that will (a node from before them would forget
 * answers the others keep, or answer the hello differently); 2 if any of them
 * is one a node from before shared locks would misread (it ignores `mode`
 * and `limit`, and knows no acquireAll); else 1.
 */
export function entryVersion(cmds: readonly Command[]): EntryVersion {
  if (cmds.some((c) => c.type === "leader" && c.limits.maxEndedSessions !== undefined)) return 4;
  if (cmds.some((c) => ("waits" in c && c.waits !== undefined) || (c.type === "hello" && c.listsWaits !== undefined))) return 3;
  const newShape = cmds.some((c) => c.type === "acquireAll" || (c.type === "acquire" && (c.mode === "shared" || c.limit !== undefined)));
  return newShape ? 2 : 1;
}

export function apply(state: State, entry: LogEntry): Effect[] {
  assert(isEntryVersion(entry.v), () => `unknown log entry version ${String(entry.v)}`);
  assert(entryVersion(entry.cmds) <= entry.v, () => `a version-${entry.v} log entry holds a command of version ${entryVersion(entry.cmds)}`);
  assert(Array.isArray(entry.cmds) && entry.cmds.length > 0, "log entry without commands");
  const leaderCommand = entry.cmds.find((c) => c.type === "leader");
  if (leaderCommand) {
    assert(entry.cmds.length === 1, "a leader command must be alone in its entry");
  } else {
    // A leader keeps several entries in flight, each appended behind the one
    // before it. When one is refused because a new leader wrote first, a
    // later one can still land behind the new leader's entries. Its leader
    // never applied or answered it (it stops at the first refusal), so it is
    // void: it changes nothing, on every node alike.
    if (entry.epoch < state.epoch) return [];
    // Only a leader entry can start an epoch, so a later one means the log
    // itself is inconsistent.
    assert(entry.epoch === state.epoch, () => `entry from epoch ${entry.epoch} while epoch ${state.epoch} leads`);
  }
  if (leaderCommand) {
    // Before `now` moves: the extension at a takeover is measured from the
    // log's last entry (the old leadership was alive then) to this one.
    shiftSessionDigest(state, leaderCommand, entry.t);
    becomeLeader(state, leaderCommand, entry.t);
    state.now = Math.max(state.now, entry.t);
    return [];
  }
  state.now = Math.max(state.now, entry.t);
  const effects: Effect[] = [];
  for (const command of entry.cmds) applyCommand(state, command, effects);
  return effects;
}

function applyCommand(state: State, command: Command, fx: Effect[]): void {
  switch (command.type) {
    case "hello":
    case "goodbye":
    case "acquire":
    case "acquireAll":
    case "release":
    case "abandon":
    case "append":
    case "renew":
    case "cancel":
    case "commit":
      return applyClientCommand(state, command, fx);
    case "expireLease":
      return expireLease(state, command.lock, command.token, fx);
    case "expireWait":
      return expireWait(state, command.client, command.seq, fx);
    case "expireSession": {
      const session = state.sessions.get(command.client);
      if (session) endSession(state, session, "sessionExpired", fx);
      return;
    }
    case "sessionDigest":
      return applySessionDigest(state, command);
    case "sessionHeard":
      return noteSessionHeard(state, command.client);
    case "leader":
      // apply() takes a leader command itself (it is alone in its entry).
      throw new InvariantError("a leader command reached applyCommand");
    default:
      return unreachable(command, "command");
  }
}

/**
 * Bounded extension. The old leader may have died just before renewing a
 * holder's lease, and while nobody led the holder could not renew; so every
 * current holder's deadline moves by the time the cluster provably had no
 * leader: from the later of the log's last entry and the last write of the
 * leader key the new leader saw (`prevAliveAt`), to this entry's time. It
 * is never a fresh lease: however many takeovers happen, a holder that
 * stopped renewing keeps its grant at most its lease plus the leaderless
 * time since its last renewal (plus, per takeover, the gap between the old
 * leader's last key write and its death: one renew interval). The times
 * come from different nodes' clocks; leases assume those clocks agree to
 * well within a lease (docs/design.md §6). A takeover time behind the proof
 * of life (skew) extends nothing.
 */
function becomeLeader(state: State, command: Extract<Command, { type: "leader" }>, takeoverAt: number): void {
  const { node, epoch, limits, version, prevAliveAt } = command;
  assert(epoch > state.epoch, () => `leader epoch ${epoch} does not advance past ${state.epoch}`);
  state.epoch = epoch;
  state.leader = node;
  state.leaderVersion = version ?? null;
  state.limits = { ...limits };
  // A leader with a smaller table (or none: an older leader's entry) keeps only the newest.
  forgetEndedSessionsBeyond(state, Math.max(0, limits.maxEndedSessions ?? 0));
  const aliveAt = Math.max(state.now, prevAliveAt ?? -Infinity);
  const leaderlessMs = Math.max(0, takeoverAt - aliveAt);
  if (leaderlessMs === 0) return;
  for (const lock of state.locks.values()) {
    // Never more than a fresh lease from the takeover either.
    for (const grant of lock.holders.values()) {
      grant.expiresAt = Math.max(grant.expiresAt, Math.min(grant.expiresAt + leaderlessMs, takeoverAt + grant.leaseMs));
    }
  }
}

function applyClientCommand(state: State, cmd: ClientCommand, fx: Effect[]): void {
  if (cmd.type === "hello" && !state.sessions.has(cmd.client)) {
    if (state.endedSessions.has(cmd.client)) {
      // A late copy of a dead session's hello (a client's new session has a
      // new id): reviving the id with an empty reply cache would let late
      // copies of its old requests run again.
      fx.push(replyEffect(cmd, endedSessionReply(), false));
      return;
    }
    if (state.sessions.size >= state.limits.maxSessions) {
      fx.push(replyEffect(cmd, errorReply("LIMIT_EXCEEDED", `session limit ${state.limits.maxSessions} reached`), false));
      return;
    }
    state.sessions.set(cmd.client, newSession(cmd.client, state.now));
    noteSessionCreated(state, cmd.client);
  }
  const session = state.sessions.get(cmd.client);
  if (!session) {
    const answer = cmd.type === "goodbye" ? okReply("Disconnected!") : errorReply("SESSION_EXPIRED");
    fx.push(replyEffect(cmd, answer, false));
    return;
  }
  // A logged request shows the client alive (a duplicate too).
  noteSessionHeard(state, session.id);
  // At-most-once: a request already answered gets its cached answer, a
  // waiting acquire is still waiting, an acknowledged one is gone for good.
  // The first two come first: a wait the client listed in `waits` stays
  // known below the floor.
  const cached = session.replies.get(cmd.seq);
  if (cached) {
    fx.push(replyEffect(cmd, cached, false));
    return;
  }
  if (session.pending.has(cmd.seq)) {
    fx.push(replyEffect(cmd, queuedReply(state, session, cmd.seq), false));
    return;
  }
  if (cmd.seq <= session.acked) return;
  acknowledge(session, Math.min(cmd.ack, cmd.seq - 1), cmd.waits);
  if (session.replies.size + session.pending.size >= state.limits.maxCachedReplies) {
    fx.push(replyEffect(cmd, errorReply("LIMIT_EXCEEDED", "too many unacknowledged requests for this client"), false));
    return;
  }
  const answer = execute(state, session, cmd, fx);
  if ("queuedAt" in answer) {
    fx.push(replyEffect(cmd, okReply("Queued", { status: "queued", position: answer.queuedAt }), false));
    return;
  }
  if (cmd.type === "goodbye") {
    // The session no longer exists, so there is nowhere to cache this.
    fx.push(replyEffect(cmd, answer, false));
    return;
  }
  session.replies.set(cmd.seq, answer);
  fx.push(replyEffect(cmd, answer, true));
}

/** A request that joined the end of its queue (of an acquireAll: of each), at this 1-based position in the first. */
interface Queued {
  queuedAt: number;
}

function execute(state: State, session: Session, cmd: ClientCommand, fx: Effect[]): Reply | Queued {
  switch (cmd.type) {
    case "hello":
      return okReply("Connected!", {
        session: {
          sessionTimeoutMs: state.limits.sessionTimeoutMs,
          defaultLeaseMs: state.limits.defaultLeaseMs,
          maxAppendBytes: state.limits.maxAppendBytes,
          maxSectionBytes: state.limits.maxSectionBytes,
          // Only to a client that asked: an old log replays to the very answers it gave then.
          ...(cmd.listsWaits ? { acceptsWaits: true } : {}),
        },
        ...(state.leaderVersion === null ? {} : { version: state.leaderVersion }),
      });
    case "goodbye":
      endSession(state, session, "goodbye", fx);
      return okReply("Disconnected!");
    case "acquire": {
      // Validation refuses these; a log that holds one was not written by a leader.
      assert(cmd.lock !== DEFAULT_LOCK || (cmd.mode !== "shared" && cmd.limit === undefined), () => `acquire of ${DEFAULT_LOCK} that is not exclusive`);
      assert(cmd.limit === undefined || cmd.mode !== "shared", "a semaphore acquire with a mode");
      const permits = cmd.limit === undefined ? undefined : (cmd.permits ?? 1);
      assert(permits === undefined || (Number.isSafeInteger(permits) && permits >= 1 && permits <= cmd.limit!), () => `permits ${String(permits)} outside 1..${String(cmd.limit)}`);
      assert(cmd.limit !== undefined || cmd.permits === undefined, "permits without a semaphore limit");
      const want: Want = { name: cmd.lock, ...(cmd.limit === undefined ? (cmd.mode ? { mode: cmd.mode } : {}) : { permits }) };
      return acquire(state, session, { seq: cmd.seq, leaseMs: cmd.leaseMs, waitMs: cmd.waitMs, wants: [want], limit: cmd.limit }, fx);
    }
    case "acquireAll": {
      assert(cmd.locks.length > 0, "acquireAll without locks");
      assert(new Set(cmd.locks.map((l) => l.lock)).size === cmd.locks.length, "acquireAll names a lock twice");
      assert(cmd.locks.every((l) => l.lock !== DEFAULT_LOCK || l.mode === "exclusive"), () => `acquireAll of ${DEFAULT_LOCK} that is not exclusive`);
      const wants = cmd.locks.map((l): Want => ({ name: l.lock, mode: l.mode }));
      return acquire(state, session, { seq: cmd.seq, leaseMs: cmd.leaseMs, waitMs: cmd.waitMs, wants, group: cmd.locks }, fx);
    }
    case "commit": {
      assert(cmd.lock === DEFAULT_LOCK || cmd.appends.length === 0, () => `commit with appends under lock ${cmd.lock}`);
      const tooLarge = sectionTooLarge(state, 0, cmd.appends);
      if (tooLarge) return tooLarge;
      return acquire(state, session, { seq: cmd.seq, leaseMs: cmd.leaseMs, waitMs: cmd.waitMs, wants: [{ name: cmd.lock }], commit: cmd.appends }, fx);
    }
    case "release":
      return release(state, session, cmd.lock, cmd.token, cmd.staged, cmd.appends ?? [], fx);
    case "abandon":
      return abandon(state, session, cmd.lock, cmd.token, fx);
    case "append":
      return append(state, session, cmd.token, cmd.file, cmd.data);
    case "renew": {
      const grant = currentGrant(state, session, cmd.lock, cmd.token);
      if (!isGrant(grant)) return grant;
      grant.leaseMs = cmd.leaseMs ?? grant.leaseMs;
      grant.expiresAt = state.now + grant.leaseMs;
      return okReply("Renewed", { lease: leaseInfo(lockOf(state, cmd.lock), grant) });
    }
    case "cancel":
      return cancel(state, session, cmd.target, cmd.seq, fx);
    default:
      return unreachable(cmd, "client command");
  }
}

/** What an acquire, commit or acquireAll asks of one lock. */
interface Want {
  name: string;
  /** Absent: exclusive, as logged before modes existed (and for commits and semaphores). */
  mode?: LockMode;
  /** Semaphores: the permits asked for. */
  permits?: number;
}

/** One request for locks, whichever command it came from. */
interface AcquireSpec {
  seq: number;
  leaseMs: number;
  waitMs: number | null;
  /** One lock, or an acquireAll's list in its order. */
  wants: Want[];
  /** A semaphore acquire: the limit it names (one want only). */
  limit?: number;
  /** A one-request commit: the section to commit once granted (one want only). */
  commit?: SectionAppend[];
  /** An acquireAll: its list, kept on its waiters; answers then list leases. */
  group?: LockRequest[];
}

/**
 * Grants every wanted lock now, all or none, or queues the request on every
 * one of them in this one step, or refuses it with nothing changed. Every
 * refusal is decided before anything is touched.
 *
 * A request is granted at once only when every wanted lock has an empty
 * queue and room for it: strict FIFO, so a request never overtakes one
 * that waits, even where it would fit beside the holders.
 */
function acquire(state: State, session: Session, spec: AcquireSpec, fx: Effect[]): Reply | Queued {
  const { wants } = spec;
  const existing = wants.map((w) => state.locks.get(w.name));
  for (const lock of existing) {
    const mismatch = lock && kindMismatch(lock, spec.limit);
    if (mismatch) return mismatch;
  }
  for (let i = 0; i < wants.length; i++) {
    const token = session.held.get(wants[i].name);
    if (token === undefined) continue;
    const lock = existing[i];
    const grant = lock?.holders.get(token);
    assert(lock && grant, () => `session ${session.id} thinks it holds ${wants[i].name}/${token}`);
    return errorReply("ALREADY_HELD", `this client already holds ${lock.name}`, { lease: leaseInfo(lock, grant) });
  }
  // The session's own pending table names every queue it waits in
  // (invariant 4), so this is a scan of its few waits, not of a queue that
  // may hold thousands of waiters.
  const wanted = new Set(wants.map((w) => w.name));
  for (const waitingFor of session.pending.values()) {
    for (const name of waitingFor) {
      if (wanted.has(name)) return errorReply("ALREADY_HELD", `this client is already waiting for ${name}`);
    }
  }
  const fresh = existing.filter((lock) => lock === undefined).length;
  if (fresh > 0 && state.locks.size + fresh > state.limits.maxLocks) {
    return errorReply("LIMIT_EXCEEDED", `lock limit ${state.limits.maxLocks} reached`);
  }
  const freeNow = wants.every((w, i) => {
    const lock = existing[i];
    return !lock || (lock.queue.length === 0 && fits(lock, w.mode, w.permits));
  });
  if (freeNow) {
    const locks = wants.map((w) => state.locks.get(w.name) ?? createLock(state, w.name, spec.limit));
    const grants = wants.map((w, i) => grantTo(state, locks[i], session, spec.seq, spec.leaseMs, w.mode, w.permits));
    if (spec.group) return groupGrantedReply(locks, grants);
    if (!spec.commit) return grantedReply(locks[0], grants[0]);
    // Granted at once: the section lands and the grant ends in this same
    // entry, so the lock is free again when the entry's apply returns.
    const committed = commitSection(state, grants[0], spec.commit, fx);
    endGrant(state, session, locks[0], grants[0], "released", fx);
    return committedReply(locks[0], grants[0], committed);
  }
  if (spec.waitMs === 0) {
    const busy = existing.find((lock, i) => lock && !(lock.queue.length === 0 && fits(lock, wants[i].mode, wants[i].permits)));
    assert(busy, "a request that is not free now names no busy lock");
    const what = busy.holders.size > 0 ? "is held" : "has waiters";
    return errorReply("WAIT_TIMEOUT", `${busy.name} ${what} (try-acquire does not wait)`);
  }
  for (const lock of existing) {
    if (lock && lock.queue.length >= state.limits.maxQueueLength) {
      return errorReply("LIMIT_EXCEEDED", `queue for ${lock.name} is full (${state.limits.maxQueueLength})`);
    }
  }
  // A waiting commit holds its whole section on every node until its turn.
  // Leader entries from before this limit carry none: nothing is refused.
  const commitBytes = spec.commit ? sectionBytes(spec.commit) : 0;
  const maxQueuedCommitBytes = state.limits.maxQueuedCommitBytes ?? Infinity;
  if (commitBytes > 0 && state.queuedCommitBytes + commitBytes > maxQueuedCommitBytes) {
    return errorReply(
      "LIMIT_EXCEEDED",
      `queued commits already hold ${state.queuedCommitBytes} bytes; ${commitBytes} more would pass maxQueuedCommitBytes ${maxQueuedCommitBytes} (retry later)`,
    );
  }
  state.queuedCommitBytes += commitBytes;
  const deadline = spec.waitMs === null ? null : state.now + spec.waitMs;
  let position = 0;
  for (let i = 0; i < wants.length; i++) {
    const w = wants[i];
    const lock = existing[i] ?? createLock(state, w.name, spec.limit);
    const waiter: Waiter = {
      client: session.id,
      seq: spec.seq,
      leaseMs: spec.leaseMs,
      enqueuedAt: state.now,
      deadline,
      ...(spec.commit ? { commit: spec.commit } : {}),
      ...(w.mode ? { mode: w.mode } : {}),
      ...(w.permits !== undefined ? { permits: w.permits } : {}),
      ...(spec.group ? { locks: spec.group } : {}),
    };
    lock.queue.push(waiter);
    if (i === 0) position = lock.queue.length;
  }
  session.pending.set(
    spec.seq,
    wants.map((w) => w.name),
  );
  return { queuedAt: position };
}

/** LOCK_KIND_MISMATCH when `lock` is not what a request naming `limit` (or none: a lock) expects. */
function kindMismatch(lock: LockState, limit: number | undefined): Reply | undefined {
  if (lock.kind === "semaphore" && limit === undefined) {
    return errorReply("LOCK_KIND_MISMATCH", `${lock.name} is a semaphore with limit ${lock.limit}; this request asked for a lock`);
  }
  if (lock.kind === "semaphore" && limit !== lock.limit) {
    return errorReply("LOCK_KIND_MISMATCH", `${lock.name} is a semaphore with limit ${lock.limit}; this request asked for limit ${limit}`);
  }
  if (lock.kind === "lock" && limit !== undefined) {
    return errorReply("LOCK_KIND_MISMATCH", `${lock.name} is a lock; this request asked for a semaphore with limit ${limit}`);
  }
  return undefined;
}

function createLock(state: State, name: string, limit: number | undefined): LockState {
  assert(!state.locks.has(name), () => `lock ${name} created twice`);
  const lock: LockState =
    limit === undefined
      ? { name, kind: "lock", holders: new Map(), permitsOut: 0, queue: [] }
      : { name, kind: "semaphore", limit, holders: new Map(), permitsOut: 0, queue: [] };
  state.locks.set(name, lock);
  return lock;
}

/**
 * Whether a grant of `mode` (or of `permits`, on a semaphore) fits beside
 * the lock's current holders; the queue is the caller's business.
 */
function fits(lock: LockState, mode: LockMode | undefined, permits: number | undefined): boolean {
  if (lock.kind === "semaphore") {
    assert(permits !== undefined && lock.limit !== undefined, () => `semaphore ${lock.name} asked without permits`);
    return lock.permitsOut + permits <= lock.limit;
  }
  if (lock.holders.size === 0) return true;
  if ((mode ?? "exclusive") === "exclusive") return false;
  // An exclusive holder is always alone, so the first holder tells.
  return firstHolder(lock).mode === "shared";
}

function firstHolder(lock: LockState): Grant {
  const grant = lock.holders.values().next().value;
  assert(grant, () => `lock ${lock.name} has no holder`);
  return grant;
}

function release(
  state: State,
  session: Session,
  name: string,
  token: number,
  expectedStaged: number | undefined,
  inline: SectionAppend[],
  fx: Effect[],
): Reply {
  const grant = currentGrant(state, session, name, token);
  if (!isGrant(grant)) return grant;
  // The release names how many appends were logged on their own before it.
  // Any other count means one of them was lost or is unknown to the client:
  // committing would land a section the client did not mean, so nothing
  // changes and the grant stays as it was.
  if (expectedStaged !== undefined && expectedStaged !== grant.staged.length) {
    return errorReply(
      "SECTION_MISMATCH",
      `the release names ${expectedStaged} staged appends but the grant under token ${token} staged ${grant.staged.length}; nothing was committed`,
    );
  }
  if (inline.length > 0) {
    assert(name === DEFAULT_LOCK, () => `appends released with lock ${name}, not ${DEFAULT_LOCK}`);
    const tooLarge = sectionTooLarge(state, grant.stagedBytes, inline);
    if (tooLarge) return tooLarge;
  }
  // Commit the critical section: every staged append, then those sent with
  // the release, reach the files now, together and in order. (A shared
  // grant or a permit never staged anything: appends need the files lock,
  // which is exclusive only, so its commit is empty.)
  const committed = commitSection(state, grant, inline, fx);
  endGrant(state, session, lockOf(state, name), grant, "released", fx);
  return okReply("Released", { committed });
}

/**
 * Ends a grant without committing: the holder gave the section up (its
 * code failed, or it declared the lease lost), so nothing it staged may
 * reach the files, and the lock moves on at once instead of after the lease.
 */
function abandon(state: State, session: Session, name: string, token: number, fx: Effect[]): Reply {
  const grant = currentGrant(state, session, name, token);
  if (!isGrant(grant)) return grant;
  const discarded = { appends: grant.staged.length, bytes: grant.stagedBytes };
  endGrant(state, session, lockOf(state, name), grant, "abandoned", fx);
  return okReply("Abandoned", { discarded });
}

/** TOO_LARGE if `appends` would not fit a section that already has `stagedBytes`; undefined when they fit. */
function sectionTooLarge(state: State, stagedBytes: number, appends: SectionAppend[]): Reply | undefined {
  let total = stagedBytes;
  for (const { file, data } of appends) {
    assert(Number.isInteger(file) && file >= 0 && file < FILE_COUNT, () => `file index ${file} out of range`);
    const size = Buffer.byteLength(data, "base64");
    if (size > state.limits.maxAppendBytes) {
      return errorReply("TOO_LARGE", `append of ${size} bytes exceeds maxAppendBytes ${state.limits.maxAppendBytes}`);
    }
    total += size;
  }
  if (total > state.limits.maxSectionBytes) {
    return errorReply("TOO_LARGE", `critical section of ${total} bytes exceeds maxSectionBytes ${state.limits.maxSectionBytes}`);
  }
  return undefined;
}

/** Writes a grant's staged appends and then `inline` to the files (as effects); returns what was written. */
function commitSection(state: State, grant: Grant, inline: SectionAppend[], fx: Effect[]): { appends: number; bytes: number } {
  let bytesTotal = 0;
  for (const { file, data } of [...grant.staged, ...inline]) {
    const bytes = Buffer.from(data, "base64");
    state.fileLengths[file] += bytes.length;
    bytesTotal += bytes.length;
    fx.push({ type: "fileAppend", file, data: bytes });
  }
  return { appends: grant.staged.length + inline.length, bytes: bytesTotal };
}

function append(state: State, session: Session, token: number, file: number, data: string): Reply {
  const grant = currentGrant(state, session, DEFAULT_LOCK, token);
  if (!isGrant(grant)) return grant;
  // The files lock is exclusive only (validation refuses anything else), so
  // whoever holds it here holds it alone.
  assert(grant.mode !== "shared" && grant.permits === undefined, () => `an append under a grant of ${DEFAULT_LOCK} that is not exclusive`);
  assert(Number.isInteger(file) && file >= 0 && file < FILE_COUNT, () => `file index ${file} out of range`);
  const size = Buffer.byteLength(data, "base64");
  if (size > state.limits.maxAppendBytes) {
    return errorReply("TOO_LARGE", `append of ${size} bytes exceeds maxAppendBytes ${state.limits.maxAppendBytes}`);
  }
  if (grant.stagedBytes + size > state.limits.maxSectionBytes) {
    return errorReply(
      "TOO_LARGE",
      `critical section would grow to ${grant.stagedBytes + size} bytes, over maxSectionBytes ${state.limits.maxSectionBytes}`,
    );
  }
  grant.staged.push({ file, data });
  grant.stagedBytes += size;
  return okReply("Staged", { staged: { appends: grant.staged.length, bytes: grant.stagedBytes } });
}

function cancel(state: State, session: Session, target: number, cancelSeq: number, fx: Effect[]): Reply {
  if (!session.pending.has(target)) {
    // A request the client sent before this cancel that has not reached the
    // log yet (delayed, or lost and about to be retried): cancel it ahead of
    // its arrival, so whenever a copy does arrive it is answered CANCELLED
    // from the reply cache and never takes effect. Without this a client
    // that gave up cannot know whether its request will still run.
    if (target > session.acked && target < cancelSeq && !session.replies.has(target)) {
      session.replies.set(target, errorReply("CANCELLED", `request ${target} was cancelled before it arrived`));
      return okReply("Cancelled before it arrived", { cancelled: true });
    }
    return okReply("Not waiting", { cancelled: false });
  }
  const names = removeWaiter(state, session, target, "CANCELLED", fx);
  pump(state, names, fx);
  return okReply("Cancelled", { cancelled: true });
}

function expireLease(state: State, name: string, token: number, fx: Effect[]): void {
  const lock = state.locks.get(name);
  const grant = lock?.holders.get(token);
  // A renewal or release may have been logged after the leader's timer
  // fired; then this expiry no longer applies.
  if (!lock || !grant || grant.expiresAt > state.now) return;
  const session = state.sessions.get(grant.client);
  assert(session, () => `holder ${grant.client} of ${name} has no session`);
  fx.push({ type: "notify", client: session.id, notification: { event: "lost", lock: name, token, error: "LOCK_EXPIRED" } });
  endGrant(state, session, lock, grant, "expired", fx);
}

function expireWait(state: State, client: string, seq: number, fx: Effect[]): void {
  const session = state.sessions.get(client);
  const names = session?.pending.get(seq);
  if (!session || names === undefined) return;
  const waiter = state.locks.get(names[0])?.queue.find((w) => w.client === client && w.seq === seq);
  assert(waiter, () => `pending acquire ${client}/${seq} is not queued on ${names[0]}`);
  if (waiter.deadline === null || waiter.deadline > state.now) return;
  pump(state, removeWaiter(state, session, seq, "WAIT_TIMEOUT", fx), fx);
}

/**
 * Ends a session: its waits are cancelled first, then its grants end
 * without committing. The locks its waits left are pumped only once all of
 * them are gone, so nothing is granted to the session while it ends.
 */
function endSession(state: State, session: Session, why: "goodbye" | "sessionExpired", fx: Effect[]): void {
  const waitError = why === "goodbye" ? "CANCELLED" : "SESSION_EXPIRED";
  const left: string[] = [];
  for (const seq of [...session.pending.keys()]) left.push(...removeWaiter(state, session, seq, waitError, fx));
  pump(state, left, fx);
  for (const [name, token] of [...session.held]) {
    const lock = state.locks.get(name);
    const grant = lock?.holders.get(token);
    assert(lock && grant && grant.client === session.id, () => `session ${session.id} thinks it holds ${name}/${token}`);
    if (why === "sessionExpired") {
      fx.push({ type: "notify", client: session.id, notification: { event: "lost", lock: name, token, error: "SESSION_EXPIRED" } });
    }
    endGrant(state, session, lock, grant, "sessionExpired", fx);
  }
  state.sessions.delete(session.id);
  noteSessionEnded(state, session.id);
  rememberEndedSession(state, session.id);
}

/** Keeps an ended session's id (the newest limits.maxEndedSessions of them), so its old hello cannot revive it. */
function rememberEndedSession(state: State, id: string): void {
  const max = state.limits.maxEndedSessions;
  if (max === undefined || max <= 0) return;
  state.endedSessions.delete(id);
  state.endedSessions.set(id, state.now);
  forgetEndedSessionsBeyond(state, max);
}

function forgetEndedSessionsBeyond(state: State, max: number): void {
  for (const id of state.endedSessions.keys()) {
    if (state.endedSessions.size <= max) return;
    state.endedSessions.delete(id);
  }
}

/**
 * Takes a waiting request (one lock, or an acquireAll) out of every queue
 * it stands in and answers it with `error`. Returns those locks' names: the
 * caller must pump them (a waiter that left the head of a queue may have
 * been all that kept the next one waiting).
 */
function removeWaiter(
  state: State,
  session: Session,
  seq: number,
  error: "CANCELLED" | "WAIT_TIMEOUT" | "SESSION_EXPIRED",
  fx: Effect[],
): string[] {
  const names = session.pending.get(seq);
  assert(names && names.length > 0, () => `removing ${session.id}/${seq}, which does not wait`);
  for (const name of names) {
    const lock = state.locks.get(name);
    assert(lock, () => `pending acquire on unknown lock ${name}`);
    const index = lock.queue.findIndex((w) => w.client === session.id && w.seq === seq);
    assert(index >= 0, () => `pending acquire ${session.id}/${seq} missing from ${name}'s queue`);
    const [waiter] = lock.queue.splice(index, 1);
    if (waiter?.commit) dequeueCommit(state, waiter.commit);
  }
  session.pending.delete(seq);
  const answer = errorReply(error);
  if (error !== "SESSION_EXPIRED") session.replies.set(seq, answer);
  fx.push({ type: "reply", client: session.id, seq, reply: answer, final: true });
  fx.push({ type: "notify", client: session.id, notification: { event: "waitEnded", seq, lock: names[0], error } });
  return names;
}

/** A queued commit left its queue (granted, cancelled, timed out, or its session ended). */
function dequeueCommit(state: State, appends: readonly SectionAppend[]): void {
  state.queuedCommitBytes -= sectionBytes(appends);
  assert(state.queuedCommitBytes >= 0, () => `queued commit bytes went negative (${state.queuedCommitBytes})`);
}

/** Ends a grant of `lock` and passes the lock on to whoever now fits. */
function endGrant(state: State, session: Session, lock: LockState, grant: Grant, reason: EndReason, fx: Effect[]): void {
  vacate(state, session, lock, grant, reason);
  pump(state, [lock.name], fx);
}

/** Ends a grant of `lock` without passing the lock on. */
function vacate(state: State, session: Session, lock: LockState, grant: Grant, reason: EndReason): void {
  assert(lock.holders.get(grant.token) === grant, () => `vacating a grant of ${lock.name} that is not current`);
  lock.holders.delete(grant.token);
  lock.permitsOut -= grant.permits ?? 0;
  session.held.delete(lock.name);
  if (reason !== "sessionExpired") {
    session.ended.set(grant.token, reason);
    while (session.ended.size > state.limits.maxEndedGrants) {
      session.ended.delete(session.ended.keys().next().value as number);
    }
  }
}

/**
 * The one place waiters are granted. After anything that may let a queue
 * move (a grant ended, a waiter left), it grants from the head of each
 * named lock's queue for as long as the head is grantable: at the head of
 * every queue it stands in and fitting every lock's holders. A grant to an
 * acquireAll waiter changes the heads of its other queues, so those locks
 * join the worklist. It is a loop over a worklist, not recursion: queues
 * may hold 10,000 waiters, and a chain of queued commits or acquireAlls
 * runs here in one go. Each round either grants a waiter or finishes a
 * lock, so it ends.
 *
 * After it returns, no named lock (and no lock a grant touched) has a
 * grantable head: no waiter is left waiting while it could hold.
 */
function pump(state: State, names: string[], fx: Effect[]): void {
  const work = [...names];
  const queued = new Set(work);
  for (let next = 0; next < work.length; next++) {
    const name = work[next];
    queued.delete(name);
    const lock = state.locks.get(name);
    if (!lock) continue;
    for (;;) {
      const head = lock.queue[0];
      if (!head || !grantable(state, lock, head)) break;
      for (const other of grantWaiter(state, lock, head, fx)) {
        if (other === name || queued.has(other)) continue;
        queued.add(other);
        work.push(other);
      }
    }
    dropIfIdle(state, lock);
  }
}

/** Whether `head`, first in `lock`'s queue, may be granted now. */
function grantable(state: State, lock: LockState, head: Waiter): boolean {
  if (!head.locks) return fits(lock, head.mode, head.permits);
  return head.locks.every(({ lock: name, mode }) => {
    const other = state.locks.get(name);
    assert(other, () => `acquireAll waiter ${head.client}/${head.seq} waits on missing lock ${name}`);
    const first = other.queue[0];
    return first !== undefined && first.client === head.client && first.seq === head.seq && fits(other, mode, undefined);
  });
}

/**
 * Grants `head` (first in `lock`'s queue, grantable) every lock it waits
 * for, answers it, and returns the names of the locks whose queues it left.
 * A queued one-request commit runs whole: grant, section, release.
 */
function grantWaiter(state: State, lock: LockState, head: Waiter, fx: Effect[]): string[] {
  const session = state.sessions.get(head.client);
  const names = session?.pending.get(head.seq);
  // Waits are removed when their session ends, so every waiter is live.
  assert(session && names && names.includes(lock.name), () => `waiter ${head.client}/${head.seq} is stale`);
  session.pending.delete(head.seq);
  if (head.locks) {
    const locks: LockState[] = [];
    const grants: Grant[] = [];
    for (const { lock: name, mode } of head.locks) {
      const each = lockOf(state, name);
      const first = each.queue.shift();
      assert(first && first.client === head.client && first.seq === head.seq, () => `acquireAll ${head.client}/${head.seq} is not first on ${name}`);
      locks.push(each);
      grants.push(grantTo(state, each, session, head.seq, head.leaseMs, mode, undefined));
    }
    const answer = groupGrantedReply(locks, grants);
    const leases = answer.ok ? answer.leases : undefined;
    assert(leases && leases.length > 0, "an acquireAll grant without leases");
    session.replies.set(head.seq, answer);
    fx.push({ type: "reply", client: session.id, seq: head.seq, reply: answer, final: true });
    fx.push({ type: "notify", client: session.id, notification: { event: "granted", seq: head.seq, lease: leases[0], leases } });
    return names;
  }
  const first = lock.queue.shift();
  assert(first === head, () => `waiter ${head.client}/${head.seq} is not first on ${lock.name}`);
  const grant = grantTo(state, lock, session, head.seq, head.leaseMs, head.mode, head.permits);
  let answer: Reply;
  if (head.commit) {
    dequeueCommit(state, head.commit);
    const committed = commitSection(state, grant, head.commit, fx);
    vacate(state, session, lock, grant, "released");
    answer = committedReply(lock, grant, committed);
  } else {
    answer = grantedReply(lock, grant);
  }
  session.replies.set(head.seq, answer);
  fx.push({ type: "reply", client: session.id, seq: head.seq, reply: answer, final: true });
  fx.push({ type: "notify", client: session.id, notification: { event: "granted", seq: head.seq, lease: leaseInfo(lock, grant) } });
  return names;
}

function grantTo(
  state: State,
  lock: LockState,
  session: Session,
  seq: number,
  leaseMs: number,
  mode: LockMode | undefined,
  permits: number | undefined,
): Grant {
  assert(!session.held.has(lock.name), () => `session ${session.id} would hold ${lock.name} twice`);
  assert((lock.kind === "semaphore") === (permits !== undefined), () => `grant of ${lock.name} with permits ${String(permits)}`);
  assert(fits(lock, mode, permits), () => `grant of ${lock.name} (${mode ?? "exclusive"}, ${String(permits)} permits) beside holders it does not fit`);
  const token = state.nextToken++;
  const grant: Grant = {
    client: session.id,
    token,
    seq,
    grantedAt: state.now,
    leaseMs,
    expiresAt: state.now + leaseMs,
    staged: [],
    stagedBytes: 0,
    ...(mode ? { mode } : {}),
    ...(permits !== undefined ? { permits } : {}),
  };
  lock.holders.set(token, grant);
  lock.permitsOut += permits ?? 0;
  session.held.set(lock.name, token);
  return grant;
}

/** The caller's current grant of `name` under `token`, or the error that explains why not. */
function currentGrant(state: State, session: Session, name: string, token: number): Grant | Reply {
  const grant = state.locks.get(name)?.holders.get(token);
  if (grant && grant.client === session.id) return grant;
  const ended = session.ended.get(token);
  if (ended === "expired") return errorReply("LOCK_EXPIRED", `the lease of ${name} under token ${token} ran out; its appends were discarded`);
  if (ended === "released") return errorReply("NOT_HOLDER", `${name} under token ${token} was already released`);
  if (ended === "abandoned") return errorReply("LOCK_EXPIRED", `${name} under token ${token} was given up without committing; its appends were discarded`);
  return errorReply("NOT_HOLDER", `token ${token} is not this client's current grant of ${name}`);
}

function isGrant(value: Grant | Reply): value is Grant {
  return (value as Grant).token !== undefined && (value as Reply).ok === undefined;
}

function lockOf(state: State, name: string): LockState {
  const lock = state.locks.get(name);
  assert(lock, () => `lock ${name} does not exist`);
  return lock;
}

function dropIfIdle(state: State, lock: LockState): void {
  if (lock.holders.size === 0 && lock.queue.length === 0) state.locks.delete(lock.name);
}

const NONE_LISTED: ReadonlySet<number> = new Set();

function acknowledge(session: Session, requested: number, waits: readonly number[] = []): void {
  // A client cannot have seen the answer to an acquire that is still
  // waiting, so the floor passes one only if the client lists it as a wait
  // (a confused client must not be able to make a later grant look like an
  // old duplicate). A listed one stays in `pending`, and once answered in
  // `replies`, below the floor, until a request no longer lists it.
  const listed: ReadonlySet<number> = waits.length > 0 ? new Set(waits) : NONE_LISTED;
  let ack = requested;
  for (const seq of session.pending.keys()) if (!listed.has(seq)) ack = Math.min(ack, seq - 1);
  const floor = Math.max(ack, session.acked);
  // Also when the floor stays: an answer kept for a wait that is no longer
  // listed has been seen.
  for (const seq of session.replies.keys()) {
    if (seq <= floor && !listed.has(seq)) session.replies.delete(seq);
  }
  session.acked = floor;
}

function newSession(id: string, now: number): Session {
  return { id, createdAt: now, acked: 0, replies: new Map(), pending: new Map(), held: new Map(), ended: new Map() };
}

/**
 * A grant on the wire. `mode` appears on lock grants that have one (not on
 * those of commands logged before modes existed, so an old log replays to
 * the very answers it gave then), `permits` and `limit` on semaphore grants.
 */
function leaseInfo(lock: LockState, grant: Grant): LeaseInfo {
  return {
    lock: lock.name,
    token: grant.token,
    leaseMs: grant.leaseMs,
    expiresAt: grant.expiresAt,
    ...(grant.mode ? { mode: grant.mode } : {}),
    ...(lock.kind === "semaphore" ? { permits: grant.permits, limit: lock.limit } : {}),
  };
}

/** A one-request commit's answer: the token it ran under and what it wrote. The grant has already ended. */
function committedReply(lock: LockState, grant: Grant, committed: { appends: number; bytes: number }): Reply {
  return okReply("Committed", { lease: leaseInfo(lock, grant), committed });
}

function grantedReply(lock: LockState, grant: Grant): Reply {
  return okReply("Granted", { status: "granted", lease: leaseInfo(lock, grant) });
}

/** An acquireAll's answer: one lease per lock, in the request's order. */
function groupGrantedReply(locks: LockState[], grants: Grant[]): Reply {
  return okReply("Granted", { status: "granted", leases: grants.map((grant, i) => leaseInfo(locks[i], grant)) });
}

function queuedReply(state: State, session: Session, seq: number): Reply {
  const names = session.pending.get(seq);
  assert(names !== undefined, "queued reply for a request that is not pending");
  const position = (state.locks.get(names[0])?.queue.findIndex((w) => w.client === session.id && w.seq === seq) ?? -1) + 1;
  return okReply("Queued", { status: "queued", position });
}

function replyEffect(cmd: ClientCommand, reply: Reply, final: boolean): Effect {
  return { type: "reply", client: cmd.client, seq: cmd.seq, reply, final };
}
