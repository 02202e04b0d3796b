/**
 * The leader's side of session liveness across takeovers (the pure side is
 * src/state/sessionLiveness.ts): when to log a silence digest, which
 * sessions are being expired, and the pings held until the log records
 * that their client was heard.
 */
import type { Msg } from "@nats-io/nats-core";
import type { Command, State } from "../state";
import { buildSessionDigest, loggedAsQuiet, sessionDigestSettings, type SessionDigestSettings } from "../state/sessionLiveness";

export interface SessionClockOptions {
  /** How often a digest is logged; 0: a twentieth of the session timeout. */
  sessionDigestEveryMs: number;
  /** Sessions silent this long are listed; 0: 0.35 of the session timeout. */
  sessionQuietAfterMs: number;
  /** Most sessions one digest lists. */
  maxDigestSessions: number;
}

export class SessionClock {
  /** When the last digest went into an entry; the first entry of a leadership carries one. */
  private lastDigestAt = -Infinity;
  /**
   * Sessions whose expiry is logged but not applied, with when they were
   * last heard. They have left the coordinator's last-heard map; digests
   * still list them, or a lost expiry would leave them looking recently heard.
   */
  readonly expiring = new Map<string, number>();
  /** Clients whose `sessionHeard` is queued or in flight, with the pings that wait for it. */
  private readonly heard = new Map<string, Msg[]>();

  constructor(private readonly opts: SessionClockOptions) {}

  settings(state: State): SessionDigestSettings {
    return sessionDigestSettings(state.limits.sessionTimeoutMs, {
      everyMs: this.opts.sessionDigestEveryMs,
      quietAfterMs: this.opts.sessionQuietAfterMs,
      maxSessions: this.opts.maxDigestSessions,
    });
  }

  digestDue(state: State, nowMs: number): boolean {
    return state.sessions.size > 0 && nowMs - this.lastDigestAt >= this.settings(state).everyMs;
  }

  /**
   * The digest to put in the entry being built at `nowMs`, if one is due.
   * It is built with the entry, not when the tick noticed it was due, so
   * its times are those of the entry, and every entry built an interval
   * after the last digest carries a fresh one.
   */
  takeDigest(state: State, lastHeard: Map<string, number>, nowMs: number): Command | undefined {
    if (!this.digestDue(state, nowMs)) return undefined;
    this.lastDigestAt = nowMs;
    return buildSessionDigest(state, lastHeard, this.expiring, nowMs, this.settings(state));
  }

  /**
   * The leader just heard `client`. If the log still counts it as quiet, the
   * `sessionHeard` to log (once while one is in flight); else undefined.
   */
  heardCommand(state: State, client: string, nowMs: number): Command | undefined {
    if (this.heard.has(client) || !loggedAsQuiet(state, client, nowMs)) return undefined;
    this.heard.set(client, []);
    return { type: "sessionHeard", client };
  }

  /**
   * Holds a ping while its client's `sessionHeard` is on its way: the pong
   * then means the log knows, so a client whose ping the leader heard and
   * then died with is not told it was heard and retries soon.
   */
  holdPing(client: string, msg: Msg): boolean {
    const held = this.heard.get(client);
    if (!held) return false;
    held.push(msg);
    return true;
  }

  /** After an entry's commands are applied: the pings to answer now. */
  applied(command: Command): Msg[] {
    if (command.type === "expireSession") this.expiring.delete(command.client);
    if (command.type !== "sessionHeard") return [];
    const held = this.heard.get(command.client) ?? [];
    this.heard.delete(command.client);
    return held;
  }

  /** Stopping: every ping still held, to be refused. */
  drainHeld(): Msg[] {
    const held = [...this.heard.values()].flat();
    this.heard.clear();
    return held;
  }
}
