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
import type { ClientCommand, Command, Effect, EndReason, Grant, LockState, LogEntry, SectionAppend, Session, State } from "./types";
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
    fileLengths: new Array<number>(FILE_COUNT).fill(0),
    sessionDigest: null,
  };
}

export function apply(state: State, entry: LogEntry): Effect[] {
  assert(entry.v === 1, () => `unknown log entry version ${String(entry.v)}`);
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
  const aliveAt = Math.max(state.now, prevAliveAt ?? -Infinity);
  const leaderlessMs = Math.max(0, takeoverAt - aliveAt);
  if (leaderlessMs === 0) return;
  for (const lock of state.locks.values()) {
    const grant = lock.holder;
    // Never more than a fresh lease from the takeover either.
    if (grant) grant.expiresAt = Math.max(grant.expiresAt, Math.min(grant.expiresAt + leaderlessMs, takeoverAt + grant.leaseMs));
  }
}

function applyClientCommand(state: State, cmd: ClientCommand, fx: Effect[]): void {
  if (cmd.type === "hello" && !state.sessions.has(cmd.client)) {
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
  if (cmd.seq <= session.acked) return;
  const cached = session.replies.get(cmd.seq);
  if (cached) {
    fx.push(replyEffect(cmd, cached, false));
    return;
  }
  if (session.pending.has(cmd.seq)) {
    fx.push(replyEffect(cmd, queuedReply(state, session, cmd.seq), false));
    return;
  }
  acknowledge(session, Math.min(cmd.ack, cmd.seq - 1));
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

/** An acquire that joined the end of its queue, at this 1-based position. */
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
        },
        ...(state.leaderVersion === null ? {} : { version: state.leaderVersion }),
      });
    case "goodbye":
      endSession(state, session, "goodbye", fx);
      return okReply("Disconnected!");
    case "acquire":
      return acquire(state, session, cmd.seq, cmd.lock, cmd.leaseMs, cmd.waitMs, undefined, fx);
    case "commit": {
      assert(cmd.lock === DEFAULT_LOCK || cmd.appends.length === 0, () => `commit with appends under lock ${cmd.lock}`);
      const tooLarge = sectionTooLarge(state, 0, cmd.appends);
      if (tooLarge) return tooLarge;
      return acquire(state, session, cmd.seq, cmd.lock, cmd.leaseMs, cmd.waitMs, cmd.appends, fx);
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
      return okReply("Renewed", { lease: leaseInfo(cmd.lock, grant) });
    }
    case "cancel":
      return cancel(state, session, cmd.target, fx);
    default:
      return unreachable(cmd, "client command");
  }
}

function acquire(
  state: State,
  session: Session,
  seq: number,
  name: string,
  leaseMs: number,
  waitMs: number | null,
  /** Present for a one-request commit: the section to commit once granted. */
  commit: SectionAppend[] | undefined,
  fx: Effect[],
): Reply | Queued {
  let lock = state.locks.get(name);
  if (!lock) {
    if (state.locks.size >= state.limits.maxLocks) {
      return errorReply("LIMIT_EXCEEDED", `lock limit ${state.limits.maxLocks} reached`);
    }
    lock = { name, holder: null, queue: [] };
    state.locks.set(name, lock);
  }
  if (lock.holder?.client === session.id) {
    return errorReply("ALREADY_HELD", `this client already holds ${name}`, { lease: leaseInfo(name, lock.holder) });
  }
  // The session's own pending table names every queue it waits in
  // (invariant 4), so this is a scan of a few entries, not of a queue that
  // may hold thousands of waiters.
  for (const waitingFor of session.pending.values()) {
    if (waitingFor === name) return errorReply("ALREADY_HELD", `this client is already waiting for ${name}`);
  }
  if (!lock.holder) {
    assert(lock.queue.length === 0, () => `lock ${name} has waiters but no holder`);
    const grant = grantTo(state, lock, session, seq, leaseMs);
    if (!commit) return grantedReply(name, grant);
    // Granted at once: the section lands and the grant ends in this same
    // entry, so the lock is free again when the entry's apply returns.
    const committed = commitSection(state, grant, commit, fx);
    endGrant(state, session, name, grant, "released", fx);
    return committedReply(name, grant, committed);
  }
  if (waitMs === 0) return errorReply("WAIT_TIMEOUT", `${name} is held (try-acquire does not wait)`);
  if (lock.queue.length >= state.limits.maxQueueLength) {
    return errorReply("LIMIT_EXCEEDED", `queue for ${name} is full (${state.limits.maxQueueLength})`);
  }
  lock.queue.push({
    client: session.id,
    seq,
    leaseMs,
    enqueuedAt: state.now,
    deadline: waitMs === null ? null : state.now + waitMs,
    ...(commit ? { commit } : {}),
  });
  session.pending.set(seq, name);
  return { queuedAt: lock.queue.length };
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
  // the release, reach the files now, together and in order.
  const committed = commitSection(state, grant, inline, fx);
  endGrant(state, session, name, grant, "released", fx);
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
  endGrant(state, session, name, grant, "abandoned", fx);
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

function cancel(state: State, session: Session, target: number, fx: Effect[]): Reply {
  const name = session.pending.get(target);
  if (name === undefined) return okReply("Not waiting", { cancelled: false });
  removeWaiter(state, session, name, target, "CANCELLED", fx);
  return okReply("Cancelled", { cancelled: true });
}

function expireLease(state: State, name: string, token: number, fx: Effect[]): void {
  const lock = state.locks.get(name);
  const grant = lock?.holder;
  // A renewal or release may have been logged after the leader's timer
  // fired; then this expiry no longer applies.
  if (!grant || grant.token !== token || grant.expiresAt > state.now) return;
  const session = state.sessions.get(grant.client);
  assert(session, () => `holder ${grant.client} of ${name} has no session`);
  fx.push({ type: "notify", client: session.id, notification: { event: "lost", lock: name, token, error: "LOCK_EXPIRED" } });
  endGrant(state, session, name, grant, "expired", fx);
}

function expireWait(state: State, client: string, seq: number, fx: Effect[]): void {
  const session = state.sessions.get(client);
  const name = session?.pending.get(seq);
  if (!session || name === undefined) return;
  const waiter = state.locks.get(name)?.queue.find((w) => w.client === client && w.seq === seq);
  assert(waiter, () => `pending acquire ${client}/${seq} is not queued on ${name}`);
  if (waiter.deadline === null || waiter.deadline > state.now) return;
  removeWaiter(state, session, name, seq, "WAIT_TIMEOUT", fx);
}

/** Ends a session: its waits are cancelled first, then its grants end without committing. */
function endSession(state: State, session: Session, why: "goodbye" | "sessionExpired", fx: Effect[]): void {
  const waitError = why === "goodbye" ? "CANCELLED" : "SESSION_EXPIRED";
  for (const [seq, name] of [...session.pending]) removeWaiter(state, session, name, seq, waitError, fx);
  for (const [name, token] of [...session.held]) {
    const grant = state.locks.get(name)?.holder;
    assert(grant && grant.token === token, () => `session ${session.id} thinks it holds ${name}/${token}`);
    if (why === "sessionExpired") {
      fx.push({ type: "notify", client: session.id, notification: { event: "lost", lock: name, token, error: "SESSION_EXPIRED" } });
    }
    endGrant(state, session, name, grant, "sessionExpired", fx);
  }
  state.sessions.delete(session.id);
  noteSessionEnded(state, session.id);
}

function removeWaiter(
  state: State,
  session: Session,
  name: string,
  seq: number,
  error: "CANCELLED" | "WAIT_TIMEOUT" | "SESSION_EXPIRED",
  fx: Effect[],
): void {
  const lock = state.locks.get(name);
  assert(lock, () => `pending acquire on unknown lock ${name}`);
  const index = lock.queue.findIndex((w) => w.client === session.id && w.seq === seq);
  assert(index >= 0, () => `pending acquire ${session.id}/${seq} missing from ${name}'s queue`);
  lock.queue.splice(index, 1);
  session.pending.delete(seq);
  const answer = errorReply(error);
  if (error !== "SESSION_EXPIRED") session.replies.set(seq, answer);
  fx.push({ type: "reply", client: session.id, seq, reply: answer, final: true });
  fx.push({ type: "notify", client: session.id, notification: { event: "waitEnded", seq, lock: name, error } });
  dropIfIdle(state, lock);
}

/** Ends the current grant of `name` and passes the lock to the next waiter. */
function endGrant(state: State, session: Session, name: string, grant: Grant, reason: EndReason, fx: Effect[]): void {
  const lock = state.locks.get(name);
  assert(lock && lock.holder === grant, () => `ending a grant of ${name} that is not current`);
  vacate(state, session, lock, grant, reason);
  grantNext(state, lock, fx);
}

/** Ends the current grant of `lock` without passing the lock on. */
function vacate(state: State, session: Session, lock: LockState, grant: Grant, reason: EndReason): void {
  assert(lock.holder === grant, () => `vacating a grant of ${lock.name} that is not current`);
  lock.holder = null;
  const name = lock.name;
  session.held.delete(name);
  if (reason !== "sessionExpired") {
    session.ended.set(grant.token, reason);
    while (session.ended.size > state.limits.maxEndedGrants) {
      session.ended.delete(session.ended.keys().next().value as number);
    }
  }
}

/**
 * Grants the lock to the head of its queue. A queued one-request commit
 * runs whole when its turn comes (grant, section, release), and the lock
 * passes on at once; that is a loop, not recursion, so a long queue of
 * commits cannot overflow the stack.
 */
function grantNext(state: State, lock: LockState, fx: Effect[]): void {
  assert(lock.holder === null, () => `grantNext on held lock ${lock.name}`);
  for (;;) {
    const waiter = lock.queue.shift();
    if (!waiter) {
      dropIfIdle(state, lock);
      return;
    }
    const session = state.sessions.get(waiter.client);
    // Waits are removed when their session ends, so every waiter is live.
    assert(session && session.pending.get(waiter.seq) === lock.name, () => `waiter ${waiter.client}/${waiter.seq} is stale`);
    session.pending.delete(waiter.seq);
    const grant = grantTo(state, lock, session, waiter.seq, waiter.leaseMs);
    let answer: Reply;
    if (waiter.commit) {
      const committed = commitSection(state, grant, waiter.commit, fx);
      vacate(state, session, lock, grant, "released");
      answer = committedReply(lock.name, grant, committed);
    } else {
      answer = grantedReply(lock.name, grant);
    }
    session.replies.set(waiter.seq, answer);
    fx.push({ type: "reply", client: session.id, seq: waiter.seq, reply: answer, final: true });
    fx.push({ type: "notify", client: session.id, notification: { event: "granted", seq: waiter.seq, lease: leaseInfo(lock.name, grant) } });
    if (!waiter.commit) return;
  }
}

function grantTo(state: State, lock: LockState, session: Session, seq: number, leaseMs: number): Grant {
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
  };
  lock.holder = grant;
  session.held.set(lock.name, token);
  return grant;
}

/** The caller's current grant of `name` under `token`, or the error that explains why not. */
function currentGrant(state: State, session: Session, name: string, token: number): Grant | Reply {
  const grant = state.locks.get(name)?.holder;
  if (grant && grant.token === token && grant.client === session.id) return grant;
  const ended = session.ended.get(token);
  if (ended === "expired") return errorReply("LOCK_EXPIRED", `the lease of ${name} under token ${token} ran out; its appends were discarded`);
  if (ended === "released") return errorReply("NOT_HOLDER", `${name} under token ${token} was already released`);
  if (ended === "abandoned") return errorReply("LOCK_EXPIRED", `${name} under token ${token} was given up without committing; its appends were discarded`);
  return errorReply("NOT_HOLDER", `token ${token} is not this client's current grant of ${name}`);
}

function isGrant(value: Grant | Reply): value is Grant {
  return (value as Grant).token !== undefined && (value as Reply).ok === undefined;
}

function dropIfIdle(state: State, lock: LockState): void {
  if (lock.holder === null && lock.queue.length === 0) state.locks.delete(lock.name);
}

function acknowledge(session: Session, requested: number): void {
  // A client cannot have seen the answer to an acquire that is still
  // waiting, so the floor never passes one (a confused client must not be
  // able to make a later grant look like an old duplicate).
  let ack = requested;
  for (const seq of session.pending.keys()) ack = Math.min(ack, seq - 1);
  if (ack <= session.acked) return;
  for (const seq of session.replies.keys()) {
    if (seq <= ack) session.replies.delete(seq);
  }
  session.acked = ack;
}

function newSession(id: string, now: number): Session {
  return { id, createdAt: now, acked: 0, replies: new Map(), pending: new Map(), held: new Map(), ended: new Map() };
}

function leaseInfo(lock: string, grant: Grant): LeaseInfo {
  return { lock, token: grant.token, leaseMs: grant.leaseMs, expiresAt: grant.expiresAt };
}

/** A one-request commit's answer: the token it ran under and what it wrote. The grant has already ended. */
function committedReply(lock: string, grant: Grant, committed: { appends: number; bytes: number }): Reply {
  return okReply("Committed", { lease: leaseInfo(lock, grant), committed });
}

function grantedReply(lock: string, grant: Grant): Reply {
  return okReply("Granted", { status: "granted", lease: leaseInfo(lock, grant) });
}

function queuedReply(state: State, session: Session, seq: number): Reply {
  const name = session.pending.get(seq);
  assert(name !== undefined, "queued reply for a request that is not pending");
  const position = (state.locks.get(name)?.queue.findIndex((w) => w.client === session.id && w.seq === seq) ?? -1) + 1;
  return okReply("Queued", { status: "queued", position });
}

function replyEffect(cmd: ClientCommand, reply: Reply, final: boolean): Effect {
  return { type: "reply", client: cmd.client, seq: cmd.seq, reply, final };
}
