/**
 * Session liveness across takeovers, from the log alone. Pure, like the
 * machine: no clock, no I/O.
 *
 * Heartbeats are not logged, so a new leader cannot know when each client
 * was last heard. It used to credit every session with the takeover time,
 * which let a dead session (and its queued waiters) live for as long as
 * leaders kept changing. Instead the leader logs a silence digest every
 * `everyMs`: the sessions it has not heard from for at least `quietAfterMs`,
 * with how long. From the latest digest the machine knows, per session, a
 * time it was surely heard by: a listed session at `quietSince`, an
 * unlisted one after `at - quietAfterMs`. Later entries keep that fresh
 * (a logged request or `sessionHeard` of a listed session moves its time,
 * a new session is listed at its creation), and every takeover adds the
 * time nobody could hear anyone (`shiftMs`). A new leader credits each
 * session with that time and no more, so a session last heard at L that
 * went silent expires within sessionTimeoutMs plus the leaderless time
 * since L, however many takeovers happen (docs/design.md §5).
 */
import { assert } from "../util/assert";
import type { Command, Session, State } from "./types";

export type SessionDigestCommand = Extract<Command, { type: "sessionDigest" }>;
type LeaderCommand = Extract<Command, { type: "leader" }>;

/** How a leader digests silence: derived from the session timeout unless configured. */
export interface SessionDigestSettings {
  /** How often a digest is logged while sessions exist. */
  everyMs: number;
  /** Sessions not heard from for this long are listed. */
  quietAfterMs: number;
  /** Most sessions listed in one digest (the longest-quiet first). */
  maxSessions: number;
}

/**
 * The defaults: a digest every twentieth of the session timeout, listing
 * sessions quiet for more than 0.35 of it (a live client pings every third,
 * so it is normally not listed). With these, a live client keeps a margin of
 * about 0.18 of the timeout, less 250 ms, at a takeover (docs/design.md §5).
 */
export function sessionDigestSettings(
  sessionTimeoutMs: number,
  configured: { everyMs?: number; quietAfterMs?: number; maxSessions: number },
): SessionDigestSettings {
  return {
    everyMs: configured.everyMs || Math.max(1, Math.round(sessionTimeoutMs / 20)),
    quietAfterMs: configured.quietAfterMs || Math.max(1, Math.round(sessionTimeoutMs * 0.35)),
    maxSessions: configured.maxSessions,
  };
}

/**
 * The leader's digest at `nowMs` (the time of the entry that carries it).
 * `lastHeard` lists when each client was last heard, oldest first (the
 * coordinator keeps its map in that order); the walk stops at the first
 * client heard within `quietAfterMs`, so it costs the quiet ones only.
 * `expiring` (listed first) are sessions whose expiry is logged but not yet
 * applied: they left `lastHeard`, and a digest that left them out would
 * claim they were heard recently if that expiry is lost with its leader.
 */
export function buildSessionDigest(
  state: State,
  lastHeard: Iterable<[string, number]>,
  expiring: Iterable<[string, number]>,
  nowMs: number,
  settings: SessionDigestSettings,
): SessionDigestCommand {
  const quiet: Array<[string, number]> = [];
  const listed = new Set<string>();
  const add = (client: string, heardAt: number): void => {
    if (quiet.length >= settings.maxSessions || listed.has(client) || !state.sessions.has(client)) return;
    listed.add(client);
    quiet.push([client, Math.max(settings.quietAfterMs, nowMs - heardAt)]);
  };
  for (const [client, heardAt] of expiring) add(client, heardAt);
  for (const [client, heardAt] of lastHeard) {
    if (nowMs - heardAt < settings.quietAfterMs || quiet.length >= settings.maxSessions) break;
    add(client, heardAt);
  }
  return { type: "sessionDigest", everyMs: settings.everyMs, quietAfterMs: settings.quietAfterMs, quiet };
}

/** Applies a digest: it replaces the previous one. Sessions that no longer exist are not kept. */
export function applySessionDigest(state: State, cmd: SessionDigestCommand): void {
  assert(Number.isFinite(cmd.everyMs) && cmd.everyMs > 0, () => `session digest every ${cmd.everyMs} ms`);
  assert(Number.isFinite(cmd.quietAfterMs) && cmd.quietAfterMs >= 0, () => `session digest quiet after ${cmd.quietAfterMs} ms`);
  assert(Array.isArray(cmd.quiet), "session digest without a quiet list");
  const at = state.now;
  const quietSince = new Map<string, number>();
  for (const item of cmd.quiet) {
    assert(Array.isArray(item) && typeof item[0] === "string" && Number.isFinite(item[1]) && item[1] >= 0, "malformed session digest item");
    if (state.sessions.has(item[0])) quietSince.set(item[0], at - item[1]);
  }
  state.sessionDigest = { at, everyMs: cmd.everyMs, quietAfterMs: cmd.quietAfterMs, shiftMs: 0, quietSince };
}

/** A session created after the digest was heard at its creation; list it, or it would pass for heard at `at - quietAfterMs` plus every later shift. */
export function noteSessionCreated(state: State, client: string): void {
  const digest = state.sessionDigest;
  if (digest) digest.quietSince.set(client, state.now - digest.shiftMs);
}

/**
 * The log shows the leader heard `client` now (one of its requests, or a
 * `sessionHeard`). Only a listed session's time moves: an unlisted one is
 * already known to be heard after `at - quietAfterMs`.
 */
export function noteSessionHeard(state: State, client: string): void {
  const digest = state.sessionDigest;
  const since = digest?.quietSince.get(client);
  if (digest && since !== undefined) digest.quietSince.set(client, Math.max(since, state.now - digest.shiftMs));
}

export function noteSessionEnded(state: State, client: string): void {
  state.sessionDigest?.quietSince.delete(client);
}

/**
 * At a `leader` entry (before the machine's time moves to it): adds the time
 * nobody could hear anyone. That is the grants' leaderless time (from the
 * later of the log's last entry and the old leadership's last key write)
 * with one difference: the old leader counts as able to hear only until its
 * next digest was due. A leader that kept its key but could not log (a
 * stalled log) heard clients the log never learnt about; crediting that
 * time keeps a live client from being expired for it, at the price of a
 * dead session's bound stretching by such a stall.
 */
export function shiftSessionDigest(state: State, cmd: LeaderCommand, takeoverAt: number): void {
  const digest = state.sessionDigest;
  if (!digest) return;
  const aliveAt = Math.max(state.now, Math.min(cmd.prevAliveAt ?? -Infinity, digest.at + digest.everyMs));
  digest.shiftMs += Math.max(0, takeoverAt - aliveAt);
}

/** The latest time the log shows `session` was heard, plus the leaderless time since; undefined without a digest. */
export function loggedHeardAt(state: State, session: Session): number | undefined {
  const digest = state.sessionDigest;
  if (!digest) return undefined;
  const since = digest.quietSince.get(session.id);
  const base = since ?? Math.max(session.createdAt, digest.at - digest.quietAfterMs);
  return base + digest.shiftMs;
}

/**
 * The credit a new leader gives every session at `nowMs`: when to count it
 * as last heard, oldest first (the coordinator's expiry walk relies on the
 * order). Never later than `nowMs`. Without a digest (a log written before
 * digests), every session is credited with the takeover, as before.
 */
export function takeoverCredits(state: State, nowMs: number): Array<[string, number]> {
  const credits: Array<[string, number]> = [];
  for (const session of state.sessions.values()) {
    credits.push([session.id, Math.min(nowMs, loggedHeardAt(state, session) ?? nowMs)]);
  }
  return credits.sort((a, b) => a[1] - b[1]);
}

/**
 * True when the log counts `client` as quiet although the leader just heard
 * it: the leader should log a `sessionHeard`, or a takeover before its next
 * digest would credit the session with the old time.
 */
export function loggedAsQuiet(state: State, client: string, nowMs: number): boolean {
  const digest = state.sessionDigest;
  const since = digest?.quietSince.get(client);
  return digest !== null && since !== undefined && nowMs - (since + digest.shiftMs) >= digest.quietAfterMs;
}
