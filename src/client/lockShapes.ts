/**
 * The shapes a grant can take besides the plain exclusive lock: a shared
 * (read) grant, a permit of a counting semaphore, and a set of locks taken
 * all at once. This file holds the client-side checks of the options that
 * ask for them and turns them into the fields the wire protocol carries
 * (docs/design.md, "Shared locks, semaphores, acquireAll").
 *
 * The checks mirror the server's stateless validation so that a mistake is
 * reported before anything is sent, with a message that names the option;
 * the server still checks everything (and what depends on the lock's
 * current state, such as a semaphore's limit, only the server can know).
 */
import { DEFAULT_LOCK, type LockMode } from "../protocol/messages";
import { LOCK_NAME } from "../protocol/limits";
import { BadRequestError } from "./errors";

/** How a lock is held: by one holder ("exclusive", the default) or by any number of readers at once ("shared"). */
export type { LockMode };

/** One lock of an `acquireAll`: its name and, optionally, the mode to hold it in (default exclusive). */
export interface LockRequest {
  lock: string;
  mode?: LockMode;
}

/** A lock of an `acquireAll`: a name (held exclusively) or a `LockRequest`. */
export type LockSpec = string | LockRequest;

/** The options that choose a grant's shape (part of `AcquireOptions`). */
export interface ShapeOptions {
  mode?: LockMode;
  limit?: number;
  permits?: number;
}

/** What an `acquire` request carries besides its lock, lease and wait. */
export interface ShapeFields {
  mode?: LockMode;
  limit?: number;
  permits?: number;
}

const MODES: readonly string[] = ["exclusive", "shared"];

/** Throws BadRequestError unless `lock` is a valid lock name. */
export function checkLockName(lock: unknown): asserts lock is string {
  if (typeof lock !== "string" || !LOCK_NAME.test(lock)) {
    throw new BadRequestError(`invalid lock name ${JSON.stringify(lock)}: 1-128 of [A-Za-z0-9_.:-], starting with a letter or digit`);
  }
}

/** Throws BadRequestError unless each given duration is a finite number ≥ 0. */
export function checkDurations(opts: { leaseMs?: number; waitMs?: number }): void {
  for (const [field, value] of [
    ["leaseMs", opts.leaseMs],
    ["waitMs", opts.waitMs],
  ] as const) {
    if (value !== undefined && (typeof value !== "number" || !Number.isFinite(value) || value < 0)) {
      throw new BadRequestError(`invalid ${field}: ${String(value)}`);
    }
  }
}

function checkMode(mode: unknown, where: string): asserts mode is LockMode | undefined {
  if (mode !== undefined && (typeof mode !== "string" || !MODES.includes(mode))) {
    throw new BadRequestError(`invalid mode ${JSON.stringify(mode)}${where}: "exclusive" or "shared"`);
  }
}

/** Throws BadRequestError unless `limit` is a whole number of permits ≥ 1. */
export function checkSemaphoreLimit(limit: unknown): asserts limit is number {
  if (typeof limit !== "number" || !Number.isSafeInteger(limit) || limit < 1) {
    throw new BadRequestError(`invalid semaphore limit ${String(limit)}: a whole number ≥ 1`);
  }
}

/**
 * Checks the shape options of an acquire of `lock` and returns the fields
 * to send: nothing at all for a plain exclusive lock (so the request is the
 * one older servers know), `mode: "shared"` for a read grant, `limit` and
 * `permits` for a semaphore.
 */
export function shapeFields(lock: string, opts: ShapeOptions): ShapeFields {
  checkMode(opts.mode, "");
  const { mode, limit, permits } = opts;
  if (limit === undefined) {
    if (permits !== undefined) throw new BadRequestError(`permits needs the semaphore's limit: acquire(${JSON.stringify(lock)}, { limit, permits })`);
    if (mode === "shared" && lock === DEFAULT_LOCK) {
      throw new BadRequestError(`"${DEFAULT_LOCK}" guards the files and is exclusive only: the files are written only under the exclusive files lock`);
    }
    return mode === "shared" ? { mode } : {};
  }
  checkSemaphoreLimit(limit);
  if (mode === "shared") throw new BadRequestError("a semaphore has no shared mode: give either mode: \"shared\" or limit, not both");
  if (lock === DEFAULT_LOCK) throw new BadRequestError(`"${DEFAULT_LOCK}" guards the files and cannot be a semaphore`);
  const wanted = permits ?? 1;
  if (!Number.isSafeInteger(wanted) || wanted < 1 || wanted > limit) {
    throw new BadRequestError(`invalid permits ${String(permits)}: a whole number from 1 to the limit (${limit})`);
  }
  return { limit, permits: wanted };
}

/**
 * Checks the lock list of an `acquireAll` (at least one lock, valid and
 * distinct names, valid modes, the files lock exclusive only) and returns it
 * in the wire's form, in the order given.
 */
export function lockList(locks: readonly LockSpec[]): Array<{ lock: string; mode: LockMode }> {
  if (!Array.isArray(locks) || locks.length === 0) {
    throw new BadRequestError("acquireAll takes a non-empty array of lock names or { lock, mode }");
  }
  const seen = new Set<string>();
  return locks.map((spec, i) => {
    const entry = typeof spec === "string" ? { lock: spec } : spec;
    if (typeof entry !== "object" || entry === null) throw new BadRequestError(`lock ${i} of acquireAll is neither a name nor { lock, mode }`);
    checkLockName(entry.lock);
    checkMode(entry.mode, ` for ${entry.lock}`);
    const mode = entry.mode ?? "exclusive";
    if (seen.has(entry.lock)) throw new BadRequestError(`acquireAll lists ${JSON.stringify(entry.lock)} twice`);
    seen.add(entry.lock);
    if (entry.lock === DEFAULT_LOCK && mode === "shared") {
      throw new BadRequestError(`"${DEFAULT_LOCK}" guards the files and is exclusive only`);
    }
    return { lock: entry.lock, mode };
  });
}
