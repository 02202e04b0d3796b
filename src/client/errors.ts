/**
 * Typed errors of the dlm client. Every error the client throws on purpose is
 * a `DlmError`; there is one subclass per protocol error name (see
 * `src/protocol/errors.ts`), so callers can write either
 *
 * ```ts
 * try { await client.acquire("orders") } catch (e) {
 *   if (e instanceof WaitTimeoutError) ...
 *   if (isDlmError(e, "UNAVAILABLE")) ...
 * }
 * ```
 *
 * Errors the server reports map through `errorFromReply`; the client-side
 * ones (TIMEOUT, UNAVAILABLE, CLOSED, and the local checks) use the same
 * classes and codes.
 */
import { ErrorCodes, ErrorDescriptions, isErrorName, type ErrorName } from "../protocol/errors";
import type { ErrorReply, LeaseInfo } from "../protocol/messages";

export interface DlmErrorOptions {
  cause?: unknown;
  /** The server's reply, when the error came from one. */
  reply?: ErrorReply;
}

export class DlmError extends Error {
  /** The stable wire code (see docs/errors.md). */
  readonly code: number;
  readonly codeName: ErrorName;
  /** `cause` comes from Error (ES2022): the transport error or the error this one wraps. */
  readonly reply?: ErrorReply;

  constructor(codeName: ErrorName, message?: string, options: DlmErrorOptions = {}) {
    super(message ?? ErrorDescriptions[codeName], options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "DlmError";
    this.code = ErrorCodes[codeName];
    this.codeName = codeName;
    if (options.reply !== undefined) this.reply = options.reply;
  }
}

export class FileNotFoundError extends DlmError {
  constructor(message?: string, options?: DlmErrorOptions) {
    super("FILE_NOT_FOUND", message, options);
    this.name = "FileNotFoundError";
  }
}
export class BadRequestError extends DlmError {
  constructor(message?: string, options?: DlmErrorOptions) {
    super("BAD_REQUEST", message, options);
    this.name = "BadRequestError";
  }
}
export class UnknownOpError extends DlmError {
  constructor(message?: string, options?: DlmErrorOptions) {
    super("UNKNOWN_OP", message, options);
    this.name = "UnknownOpError";
  }
}
export class TooLargeError extends DlmError {
  constructor(message?: string, options?: DlmErrorOptions) {
    super("TOO_LARGE", message, options);
    this.name = "TooLargeError";
  }
}
export class NotHolderError extends DlmError {
  constructor(message?: string, options?: DlmErrorOptions) {
    super("NOT_HOLDER", message, options);
    this.name = "NotHolderError";
  }
}
export class LockExpiredError extends DlmError {
  constructor(message?: string, options?: DlmErrorOptions) {
    super("LOCK_EXPIRED", message, options);
    this.name = "LockExpiredError";
  }
}
export class SessionExpiredError extends DlmError {
  constructor(message?: string, options?: DlmErrorOptions) {
    super("SESSION_EXPIRED", message, options);
    this.name = "SessionExpiredError";
  }
}
export class AlreadyHeldError extends DlmError {
  /** The lease the client already holds on that lock, when the server sent it. */
  readonly lease?: LeaseInfo;
  constructor(message?: string, options?: DlmErrorOptions) {
    super("ALREADY_HELD", message, options);
    this.name = "AlreadyHeldError";
    if (options?.reply?.lease) this.lease = options.reply.lease;
  }
}
export class WaitTimeoutError extends DlmError {
  constructor(message?: string, options?: DlmErrorOptions) {
    super("WAIT_TIMEOUT", message, options);
    this.name = "WaitTimeoutError";
  }
}
export class CancelledError extends DlmError {
  constructor(message?: string, options?: DlmErrorOptions) {
    super("CANCELLED", message, options);
    this.name = "CancelledError";
  }
}
export class LimitExceededError extends DlmError {
  constructor(message?: string, options?: DlmErrorOptions) {
    super("LIMIT_EXCEEDED", message, options);
    this.name = "LimitExceededError";
  }
}
export class NotLeaderError extends DlmError {
  constructor(message?: string, options?: DlmErrorOptions) {
    super("NOT_LEADER", message, options);
    this.name = "NotLeaderError";
  }
}
/** Client side: no reply within the retry budget. The request may or may not have taken effect. */
export class TimeoutError extends DlmError {
  constructor(message?: string, options?: DlmErrorOptions) {
    super("TIMEOUT", message, options);
    this.name = "TimeoutError";
  }
}
/** Client side: nobody served the request subject (no leader, or NATS down) within the budget. */
export class UnavailableError extends DlmError {
  constructor(message?: string, options?: DlmErrorOptions) {
    super("UNAVAILABLE", message, options);
    this.name = "UnavailableError";
  }
}
export class StaleRequestError extends DlmError {
  constructor(message?: string, options?: DlmErrorOptions) {
    super("STALE_REQUEST", message, options);
    this.name = "StaleRequestError";
  }
}
export class InternalError extends DlmError {
  constructor(message?: string, options?: DlmErrorOptions) {
    super("INTERNAL", message, options);
    this.name = "InternalError";
  }
}
/** Client side: the client was closed while the operation was outstanding. */
export class ClosedError extends DlmError {
  constructor(message?: string, options?: DlmErrorOptions) {
    super("CLOSED", message, options);
    this.name = "ClosedError";
  }
}

/**
 * The release named a different number of separately logged appends than
 * the server staged under the grant: the section cannot commit as the
 * client meant it, so nothing was committed. Let the lease go (close, or
 * let it expire) and run the section again under a new grant.
 */
export class SectionMismatchError extends DlmError {
  constructor(message?: string, options?: DlmErrorOptions) {
    super("SECTION_MISMATCH", message, options);
    this.name = "SectionMismatchError";
  }
}

/**
 * The lock exists as another kind than the request names: a semaphore with
 * another limit, a semaphore where a lock was asked for, or the reverse.
 */
export class LockKindMismatchError extends DlmError {
  constructor(message?: string, options?: DlmErrorOptions) {
    super("LOCK_KIND_MISMATCH", message, options);
    this.name = "LockKindMismatchError";
  }
}

export type DlmErrorClass = new (message?: string, options?: DlmErrorOptions) => DlmError;

/** One class per protocol error name; the compiler checks the table is complete. */
export const ErrorClasses: Readonly<Record<ErrorName, DlmErrorClass>> = Object.freeze({
  FILE_NOT_FOUND: FileNotFoundError,
  BAD_REQUEST: BadRequestError,
  UNKNOWN_OP: UnknownOpError,
  TOO_LARGE: TooLargeError,
  NOT_HOLDER: NotHolderError,
  LOCK_EXPIRED: LockExpiredError,
  SESSION_EXPIRED: SessionExpiredError,
  ALREADY_HELD: AlreadyHeldError,
  WAIT_TIMEOUT: WaitTimeoutError,
  CANCELLED: CancelledError,
  LIMIT_EXCEEDED: LimitExceededError,
  NOT_LEADER: NotLeaderError,
  TIMEOUT: TimeoutError,
  UNAVAILABLE: UnavailableError,
  STALE_REQUEST: StaleRequestError,
  INTERNAL: InternalError,
  CLOSED: ClosedError,
  SECTION_MISMATCH: SectionMismatchError,
  LOCK_KIND_MISMATCH: LockKindMismatchError,
});

/** Build the typed error for a name (used for local checks and notifications). */
export function makeError(name: ErrorName, message?: string, options?: DlmErrorOptions): DlmError {
  return new ErrorClasses[name](message, options);
}

/**
 * The typed error for a server's error reply. An unknown error name (a newer
 * server) becomes an InternalError that keeps the reply.
 */
export function errorFromReply(reply: ErrorReply): DlmError {
  const message = reply.message || undefined;
  if (typeof reply.error === "string" && isErrorName(reply.error)) {
    return makeError(reply.error, message, { reply });
  }
  return new InternalError(
    `server answered with unknown error ${JSON.stringify(reply.error)} (code ${String(reply.code)}): ${reply.message}`,
    { reply },
  );
}

/** True for any dlm error, or for one with the given name. */
export function isDlmError(e: unknown, name?: ErrorName): e is DlmError {
  return e instanceof DlmError && (name === undefined || e.codeName === name);
}
