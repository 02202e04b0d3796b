/**
 * The limits of a dlm node as configuration: one table names every limit,
 * its flag, its default and its smallest sane value, and one function turns
 * parsed flags (command line over config file over defaults) into checked
 * settings. The node command spreads `LIMIT_FLAGS` into its flags and
 * calls `limitSettingsFromFlags` on what it parsed.
 *
 * Two kinds of limits live here. Those of `Limits` travel in the leader's
 * `leader` log entry, so every node applies the log with the leader's
 * limits and stays deterministic whatever it was started with. The others
 * (request size, the coordinator's queue and batch, the size of a status
 * answer) only shape what the leader accepts and sends, never the state.
 */
import { DEFAULT_LIMITS, MAX_REQUEST_BYTES, type Limits } from "../protocol/limits";
import { DEFAULT_COORDINATOR_OPTIONS, type CoordinatorOptions } from "../coordinator/coordinator";
import { COMMAND_OVERHEAD_BYTES } from "../coordinator/entryBudget";
import { sessionDigestSettings } from "../state/sessionLiveness";
import { UsageError, type FlagSpec, type ParsedFlags } from "./args";

/** Limits that bound the leader's work but are not part of the replicated state. */
export interface LeaderBounds {
  /** Largest request the leader parses, in bytes; larger ones are TOO_LARGE unread. */
  maxRequestBytes: number;
  /** Requests waiting for the next log entry; past this, LIMIT_EXCEEDED (back-pressure). */
  maxQueuedCommands: number;
  /** Most commands in one log entry. */
  maxBatchCommands: number;
  /** Most bytes in one log entry; the NATS server's max_payload less 4 KiB caps it. */
  maxEntryBytes: number;
  /** Log entries the leader has appended and not yet seen acknowledged (pipelining). */
  maxEntriesInFlight: number;
  /** How long requests that can only join a lock's queue may wait for another to share their log entry; 0: never. */
  holdQueuedMs: number;
  /** Locks listed in a status answer (the rest are counted), so the answer fits in one NATS message. */
  statusMaxLocks: number;
  /** Waiters listed per lock in a status answer (the rest are counted). */
  statusMaxWaiters: number;
  /** How often the leader logs its silence digest of sessions; 0: a twentieth of sessionTimeoutMs. */
  sessionDigestEveryMs: number;
  /** Sessions silent this long are listed in the digest; 0: 0.35 of sessionTimeoutMs. */
  sessionQuietAfterMs: number;
  /** Most sessions one digest lists, the longest-quiet first. */
  maxDigestSessions: number;
}

export type LimitSettings = Limits & LeaderBounds;

interface LimitOption {
  key: keyof LimitSettings;
  help: string;
  /** The smallest value that keeps the node usable. */
  min: number;
}

const OPTIONS: LimitOption[] = [
  { key: "maxSessions", help: "client sessions in the cluster", min: 1 },
  { key: "maxLocks", help: "locks that exist at once (held or waited for)", min: 1 },
  { key: "maxQueueLength", help: "waiters per lock", min: 1 },
  // Two: a client holding one lock may wait for another at the same time.
  { key: "maxCachedReplies", help: "unacknowledged requests per client (answers kept for retries, plus waits)", min: 2 },
  { key: "maxEndedGrants", help: "ended grants remembered per client, to tell LOCK_EXPIRED from NOT_HOLDER", min: 0 },
  { key: "maxEndedSessions", help: "ended sessions remembered, so a late copy of a dead session's hello cannot revive it", min: 0 },
  { key: "maxAppendBytes", help: "largest single append, after base64 decoding", min: 1 },
  { key: "maxSectionBytes", help: "largest critical section (all appends under one grant)", min: 1 },
  { key: "defaultLeaseMs", help: "lease of an acquire that names none", min: 1 },
  { key: "minLeaseMs", help: "shortest lease a client may ask for", min: 1 },
  { key: "maxLeaseMs", help: "longest lease a client may ask for", min: 1 },
  { key: "maxWaitMs", help: "longest wait an acquire may ask for", min: 0 },
  { key: "sessionTimeoutMs", help: "expire sessions silent this long", min: 100 },
  { key: "maxLocksPerRequest", help: "locks one acquireAll may name", min: 1 },
  { key: "maxSemaphoreLimit", help: "largest permit count (limit) a semaphore may be created with", min: 1 },
  { key: "maxQueuedCommitBytes", help: "bytes of sections that queued one-request commits hold while they wait", min: 0 },
  { key: "maxRequestBytes", help: "largest request the leader reads", min: 1024 },
  { key: "maxQueuedCommands", help: "requests waiting for the next log entry before LIMIT_EXCEEDED", min: 1 },
  { key: "maxBatchCommands", help: "most commands in one log entry", min: 1 },
  { key: "maxEntryBytes", help: "most bytes in one log entry (the NATS server's max_payload less 4 KiB caps it)", min: 1 },
  { key: "maxEntriesInFlight", help: "log entries the leader appends before the first is acknowledged (pipelining)", min: 1 },
  { key: "holdQueuedMs", help: "how long requests that can only queue may wait to share a log entry with the next request (0: never)", min: 0 },
  { key: "statusMaxLocks", help: "locks listed in a status answer", min: 0 },
  { key: "statusMaxWaiters", help: "waiters listed per lock in a status answer", min: 0 },
  { key: "sessionDigestEveryMs", help: "how often the leader logs which sessions are silent (0: sessionTimeoutMs / 20)", min: 0 },
  { key: "sessionQuietAfterMs", help: "silence after which a session is listed in that digest (0: 0.35 * sessionTimeoutMs)", min: 0 },
  { key: "maxDigestSessions", help: "most sessions one silence digest lists", min: 1 },
];

export const DEFAULT_LEADER_BOUNDS: LeaderBounds = {
  maxRequestBytes: MAX_REQUEST_BYTES,
  maxQueuedCommands: DEFAULT_COORDINATOR_OPTIONS.maxQueuedCommands,
  maxBatchCommands: DEFAULT_COORDINATOR_OPTIONS.maxBatchCommands,
  maxEntryBytes: DEFAULT_COORDINATOR_OPTIONS.maxEntryBytes,
  maxEntriesInFlight: DEFAULT_COORDINATOR_OPTIONS.maxEntriesInFlight,
  holdQueuedMs: DEFAULT_COORDINATOR_OPTIONS.holdQueuedMs,
  statusMaxLocks: DEFAULT_COORDINATOR_OPTIONS.statusMaxLocks,
  statusMaxWaiters: DEFAULT_COORDINATOR_OPTIONS.statusMaxWaiters,
  sessionDigestEveryMs: DEFAULT_COORDINATOR_OPTIONS.sessionDigestEveryMs,
  sessionQuietAfterMs: DEFAULT_COORDINATOR_OPTIONS.sessionQuietAfterMs,
  maxDigestSessions: DEFAULT_COORDINATOR_OPTIONS.maxDigestSessions,
};

export const DEFAULT_LIMIT_SETTINGS: LimitSettings = { ...DEFAULT_LIMITS, ...DEFAULT_LEADER_BOUNDS };

/** `maxQueueLength` -> `max-queue-length`: flags are the keys in kebab case, units last like the keys. */
export function flagName(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

export const LIMIT_FLAGS: FlagSpec[] = OPTIONS.map(
  (o): FlagSpec => ({
    name: flagName(o.key),
    kind: "int",
    default: DEFAULT_LIMIT_SETTINGS[o.key],
    help: o.help,
    // The flag's name before every limit had one; still accepted.
    ...(o.key === "defaultLeaseMs" ? { aliases: ["lease-ms"] } : {}),
  }),
);

/**
 * Builds the settings from parsed flags and checks them, each alone and
 * against each other. Bad values are a UsageError that names the flag and
 * the config-file key, so the operator finds it wherever it was set.
 */
export function limitSettingsFromFlags(flags: ParsedFlags): LimitSettings {
  const settings = { ...DEFAULT_LIMIT_SETTINGS };
  for (const o of OPTIONS) {
    const value = flags[flagName(o.key)];
    if (value === undefined) continue;
    if (typeof value !== "number" || !Number.isSafeInteger(value)) throw new UsageError(`${describe(o.key)} must be an integer, got ${JSON.stringify(value)}`);
    settings[o.key] = value;
  }
  const problems = limitProblems(settings);
  if (problems.length > 0) throw new UsageError(`bad limits:\n  ${problems.join("\n  ")}`);
  return settings;
}

/** Everything wrong with a set of limits, one sentence each; empty when they are usable. */
export function limitProblems(s: LimitSettings): string[] {
  const problems: string[] = [];
  for (const o of OPTIONS) {
    const value = s[o.key];
    if (!Number.isSafeInteger(value) || value < o.min) problems.push(`${describe(o.key)} must be an integer of at least ${o.min}, got ${value}`);
  }
  if (problems.length > 0) return problems;
  if (s.minLeaseMs > s.defaultLeaseMs || s.defaultLeaseMs > s.maxLeaseMs) {
    problems.push(
      `${describe("defaultLeaseMs")} must lie between ${describe("minLeaseMs")} and ${describe("maxLeaseMs")}: ` +
        `${s.minLeaseMs} <= ${s.defaultLeaseMs} <= ${s.maxLeaseMs} does not hold`,
    );
  }
  if (s.maxAppendBytes > s.maxSectionBytes) {
    problems.push(`${describe("maxAppendBytes")} ${s.maxAppendBytes} is larger than ${describe("maxSectionBytes")} ${s.maxSectionBytes}`);
  }
  // A live client pings every third of the timeout; a ping attempt gives up
  // within a twelfth and a failed one is retried within another. A new
  // leader may count a client silent since quietAfter + digestEvery before
  // the old leader died (docs/design.md §5). From half the timeout
  // together, a live client could be expired by a takeover.
  const digest = sessionDigestSettings(s.sessionTimeoutMs, {
    everyMs: s.sessionDigestEveryMs,
    quietAfterMs: s.sessionQuietAfterMs,
    maxSessions: s.maxDigestSessions,
  });
  if (digest.quietAfterMs + digest.everyMs >= 0.5 * s.sessionTimeoutMs) {
    problems.push(
      `${describe("sessionQuietAfterMs")} ${digest.quietAfterMs} plus ${describe("sessionDigestEveryMs")} ${digest.everyMs} ` +
        `must be less than half of ${describe("sessionTimeoutMs")} ${s.sessionTimeoutMs}, or a takeover can expire live clients`,
    );
  }
  // The largest append travels base64-encoded inside a JSON request; it must
  // fit, or the limit could never be reached and clients would get TOO_LARGE
  // for appends the limit claims to allow.
  const largestAppendRequest = Math.ceil(s.maxAppendBytes / 3) * 4 + APPEND_REQUEST_OVERHEAD_BYTES;
  if (largestAppendRequest > s.maxRequestBytes) {
    problems.push(
      `${describe("maxRequestBytes")} ${s.maxRequestBytes} cannot carry an append of ${describe("maxAppendBytes")} ${s.maxAppendBytes} ` +
        `(base64 plus the request's fields need ${largestAppendRequest})`,
    );
  }
  // Every request must fit a log entry on its own, or the largest ones
  // could never be logged.
  if (s.maxEntryBytes < s.maxRequestBytes + COMMAND_OVERHEAD_BYTES) {
    problems.push(
      `${describe("maxEntryBytes")} ${s.maxEntryBytes} cannot hold a request of ${describe("maxRequestBytes")} ${s.maxRequestBytes} ` +
        `(a request's command needs up to ${s.maxRequestBytes + COMMAND_OVERHEAD_BYTES})`,
    );
  }
  return problems;
}

/** Room for an append request's fields besides the data: op, client id, seq, ack, file, token. */
const APPEND_REQUEST_OVERHEAD_BYTES = 512;

function describe(key: keyof LimitSettings): string {
  return `${key} (--${flagName(key)})`;
}

export function limitsOf(s: LimitSettings): Limits {
  return {
    maxAppendBytes: s.maxAppendBytes,
    maxSectionBytes: s.maxSectionBytes,
    maxSessions: s.maxSessions,
    maxLocks: s.maxLocks,
    maxQueueLength: s.maxQueueLength,
    maxCachedReplies: s.maxCachedReplies,
    maxEndedGrants: s.maxEndedGrants,
    defaultLeaseMs: s.defaultLeaseMs,
    minLeaseMs: s.minLeaseMs,
    maxLeaseMs: s.maxLeaseMs,
    maxWaitMs: s.maxWaitMs,
    sessionTimeoutMs: s.sessionTimeoutMs,
    maxLocksPerRequest: s.maxLocksPerRequest,
    maxSemaphoreLimit: s.maxSemaphoreLimit,
    maxQueuedCommitBytes: s.maxQueuedCommitBytes,
    maxEndedSessions: s.maxEndedSessions,
  };
}

export function coordinatorOptionsOf(s: LimitSettings): CoordinatorOptions {
  return {
    ...DEFAULT_COORDINATOR_OPTIONS,
    maxRequestBytes: s.maxRequestBytes,
    maxQueuedCommands: s.maxQueuedCommands,
    maxBatchCommands: s.maxBatchCommands,
    maxEntryBytes: s.maxEntryBytes,
    maxEntriesInFlight: s.maxEntriesInFlight,
    holdQueuedMs: s.holdQueuedMs,
    statusMaxLocks: s.statusMaxLocks,
    statusMaxWaiters: s.statusMaxWaiters,
    sessionDigestEveryMs: s.sessionDigestEveryMs,
    sessionQuietAfterMs: s.sessionQuietAfterMs,
    maxDigestSessions: s.maxDigestSessions,
  };
}
