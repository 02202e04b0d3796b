/**
 * The typed failures of request-reply over NATS, and the mapping from
 * @nats-io v3's errors to them. Shared by the client's transport, the
 * request mux and the log's appends, so every caller sees one set of
 * failures whichever path a request took.
 *
 * A request rejects with exactly one of these:
 *
 * - `TransportTimeoutError`: no reply within the attempt's timeout. The
 *   request may have reached the server; retrying with the same seq is safe.
 * - `TransportUnavailableError` (`NoRespondersError`, `DisconnectedError`):
 *   nobody serves the subject right now, or the NATS connection is down
 *   (it reconnects by itself). Retry after a backoff.
 * - `TransportClosedError`: the connection is closed for good.
 * - `TransportPermissionError`: NATS refused a subject this connection needs.
 *   Not retried.
 * - `TransportTooLargeError`: the message is larger than the server's
 *   max_payload, so it was never sent. Not retried.
 *
 * Anything else is a bug or a misuse and is passed through unchanged.
 */

export class TransportError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    // Every subclass is named after itself: classifyNatsError and callers
    // holding a foreign copy of this module compare names, not classes.
    this.name = new.target.name;
  }
}
export class TransportTimeoutError extends TransportError {
  constructor(
    readonly subject: string,
    readonly timeoutMs: number,
    options?: { cause?: unknown },
  ) {
    super(`no reply on ${subject} within ${timeoutMs}ms`, options);
  }
}
export class TransportUnavailableError extends TransportError {}
export class NoRespondersError extends TransportUnavailableError {
  constructor(
    readonly subject: string,
    options?: { cause?: unknown },
  ) {
    super(`no responders on ${subject}`, options);
  }
}
export class DisconnectedError extends TransportUnavailableError {
  constructor(message = "NATS connection is disconnected", options?: { cause?: unknown }) {
    super(message, options);
  }
}
/**
 * NATS refused this connection a subject it needs (a permissions
 * violation): retrying cannot help, the NATS user's permissions (or the
 * client's namespace) must change.
 */
export class TransportPermissionError extends TransportError {}
/** A message larger than the server's max_payload: nats.js refuses to send it, so nothing reached the server. */
export class TransportTooLargeError extends TransportError {}
export class TransportClosedError extends TransportError {
  constructor(message = "NATS connection is closed", options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** What kind of failure a NATS error is, for the retry policy. */
export type NatsErrorKind = "timeout" | "noResponders" | "closed" | "forbidden" | "disconnected" | "tooLarge" | "other";

interface ErrorLike {
  name?: unknown;
  message?: unknown;
  cause?: unknown;
}

function nameOf(e: unknown): string {
  return typeof (e as ErrorLike | null)?.name === "string" ? ((e as ErrorLike).name as string) : "";
}
export function messageOf(e: unknown): string {
  return typeof (e as ErrorLike | null)?.message === "string" ? ((e as ErrorLike).message as string) : "";
}

/**
 * Classifies an error from @nats-io v3 by its `name` and message, never by
 * `instanceof`: a connection handed to `connect({ nc })` may come from
 * another copy of the @nats-io packages (another version, or the same one
 * installed twice), whose error classes are not dlm's.
 *
 * In v3 a request timeout rejects with a `TimeoutError` ("timeout"); "no
 * responders" rejects with a `RequestError` whose cause is a
 * `NoRespondersError` (its `name` is "NoResponders"; message "no
 * responders: '<subject>'"); a request cut by a disconnect rejects with a
 * plain `RequestError("connection disconnected")`; a closed or draining
 * connection with `ClosedConnectionError` / `DrainingConnectionError`; a
 * subject the user may not use with a `PermissionViolationError` (or a
 * `RequestError` caused by one); a message over the server's max_payload
 * throws an `InvalidArgumentError` ("'payload' max_payload size exceeded")
 * before anything is sent.
 */
export function classifyNatsError(e: unknown): NatsErrorKind {
  const name = nameOf(e);
  const message = messageOf(e);
  if (name === "TimeoutError") return "timeout";
  if (name === "NoResponders" || name === "NoRespondersError" || /^no responders/i.test(message)) return "noResponders";
  if (name === "ClosedConnectionError" || name === "DrainingConnectionError") return "closed";
  if (name === "PermissionViolationError" || /permissions violation/i.test(message)) return "forbidden";
  if (/max_payload/i.test(message)) return "tooLarge";
  if (name === "RequestError") {
    const cause = (e as ErrorLike).cause;
    if (cause !== undefined && cause !== null && cause !== e) {
      const inner = classifyNatsError(cause);
      if (inner !== "other") return inner;
    }
    return "disconnected";
  }
  return "other";
}

/** Map a @nats-io v3 error to a transport error (see `classifyNatsError`); anything else is returned unchanged. */
export function mapNatsError(e: unknown, subject: string, timeoutMs: number): unknown {
  switch (classifyNatsError(e)) {
    case "timeout":
      return new TransportTimeoutError(subject, timeoutMs, { cause: e });
    case "noResponders":
      return new NoRespondersError(subject, { cause: e });
    case "closed":
      return new TransportClosedError(undefined, { cause: e });
    case "forbidden":
      return new TransportPermissionError(`NATS refused ${subject}: ${messageOf(e)}`, { cause: e });
    case "disconnected":
      return new DisconnectedError(`NATS request failed: ${messageOf(e)}`, { cause: e });
    case "tooLarge":
      return new TransportTooLargeError(`a message on ${subject} is larger than the NATS server's max_payload: ${messageOf(e)}`, { cause: e });
    default:
      return e;
  }
}
