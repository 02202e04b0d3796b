/**
 * The one registry of dlm's error codes. Codes are stable: they are part of
 * the wire protocol, so a code is never renumbered or reused. Code 0 is
 * success and code 1 is FILE_NOT_FOUND, as the original lock server returned.
 *
 * `docs/errors.md` documents every code; a unit test checks that the docs
 * and this table list the same codes.
 */
export const ErrorCodes = {
  OK: 0,
  FILE_NOT_FOUND: 1,
  BAD_REQUEST: 2,
  UNKNOWN_OP: 3,
  TOO_LARGE: 4,
  NOT_HOLDER: 5,
  LOCK_EXPIRED: 6,
  SESSION_EXPIRED: 7,
  ALREADY_HELD: 8,
  WAIT_TIMEOUT: 9,
  CANCELLED: 10,
  LIMIT_EXCEEDED: 11,
  NOT_LEADER: 12,
  TIMEOUT: 13,
  UNAVAILABLE: 14,
  STALE_REQUEST: 15,
  INTERNAL: 16,
  CLOSED: 17,
  SECTION_MISMATCH: 18,
  LOCK_KIND_MISMATCH: 19,
} as const;

export type ErrorName = Exclude<keyof typeof ErrorCodes, "OK">;
export type ErrorCode = (typeof ErrorCodes)[ErrorName];

/** One sentence per code: what happened, and what the caller should do. */
export const ErrorDescriptions: Record<ErrorName, string> = {
  FILE_NOT_FOUND: "The file is not one of file_0 … file_99. Nothing was changed.",
  BAD_REQUEST:
    "The request is malformed: not JSON, a field missing or of the wrong type, or a value out of range. Nothing was changed.",
  UNKNOWN_OP: "The request names an operation the server does not know. Nothing was changed.",
  TOO_LARGE:
    "The payload, or the critical section it would grow, is larger than the configured limit or the NATS server's max_payload; or a request does not fit one log entry, or a `read` without an offset asked for a file larger than one answer carries (read it in pages). Nothing was changed.",
  NOT_HOLDER:
    "The fencing token is not the lock's current one (the lock was released or passed on, or was never held under that token). Nothing was changed.",
  LOCK_EXPIRED:
    "The grant under this token ended (its lease ran out, or its holder gave it up with abandon, or the client library declared it lost because no renewal was confirmed in time); its staged appends were discarded. Acquire again: the client library has already ended the grant on the server.",
  SESSION_EXPIRED:
    "The client's session is unknown or was expired after going silent; its grants ended and its waits were cancelled. Connect again.",
  ALREADY_HELD:
    "The client already holds, or is already waiting for, this lock. Use the lease it has, or release it first.",
  WAIT_TIMEOUT: "The acquire waited longer than its waitMs without being granted; it has left the queue.",
  CANCELLED: "The wait was cancelled by the client (AbortSignal) or by closing the client.",
  LIMIT_EXCEEDED:
    "A server limit was reached (sessions, locks, queue length, requests in flight). Nothing was changed; retry later.",
  NOT_LEADER:
    "The node that answered is not (or no longer) the leader. Nothing was changed; the client library retries this by itself.",
  TIMEOUT:
    "Client side: no reply arrived within the retry budget. The request may or may not have taken effect; a retry with the same sequence number is safe.",
  UNAVAILABLE:
    "Client side: no dlm node served the request subject within the retry budget (no leader, or NATS down).",
  STALE_REQUEST:
    "The request's sequence number is at or below what the client already acknowledged; it is an old duplicate and was ignored.",
  INTERNAL: "The server hit an unexpected condition. Nothing was changed. Please report it with the node's log.",
  CLOSED: "Client side: the client was closed while the operation was outstanding.",
  SECTION_MISMATCH:
    "The release names a different number of separately logged appends than the grant staged (one was lost or its outcome is unknown). Nothing was committed and the grant is unchanged.",
  LOCK_KIND_MISMATCH:
    "The lock exists with another kind or semaphore limit than the request names (a semaphore with limit N, or a lock). Nothing was changed; use the same limit everywhere, or another name.",
};

export function isErrorName(name: string): name is ErrorName {
  return name !== "OK" && Object.prototype.hasOwnProperty.call(ErrorCodes, name);
}

export function errorNameOf(code: number): ErrorName | undefined {
  for (const [name, value] of Object.entries(ErrorCodes)) {
    if (value === code && name !== "OK") return name as ErrorName;
  }
  return undefined;
}
