/**
 * Client options, their defaults and their validation.
 */
import type { ConnectionOptions, NatsConnection } from "@nats-io/nats-core";
import { DEFAULT_PREFIX } from "../protocol/subjects";
import { CLIENT_ID, CLIENT_NAMESPACE } from "../protocol/limits";
import { BadRequestError } from "./errors";
import type { FaultInjector } from "./faults";
import type { Transport } from "./transport";

/**
 * The logging surface the client uses. A pino logger satisfies it (pass
 * `pino()` or a child of yours); the default logs nothing. The client never
 * writes to the console on its own.
 */
export interface Logger {
  trace?(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child?(bindings: Record<string, unknown>): Logger;
}

const noop = (): void => {};
export const silentLogger: Logger = { trace: noop, debug: noop, info: noop, warn: noop, error: noop };

export interface BackoffOptions {
  /** First delay after a "no responders" / NOT_LEADER answer. */
  initialMs: number;
  /** Largest delay. */
  maxMs: number;
  multiplier: number;
  /**
   * Randomisation, a fraction in [0, 1]: each delay is drawn uniformly from
   * [d * (1 - jitter), d]. 0 = deterministic delays.
   */
  jitter: number;
}

/**
 * The NATS connection options `connect()` passes through, unchanged, when it
 * opens the connection itself (see `ConnectionOptions` in
 * `@nats-io/nats-core`): credentials (`user`/`pass`, `token`, or an
 * `authenticator` such as `credsAuthenticator(bytes)` or
 * `nkeyAuthenticator(seed)`), `tls` (`caFile`, `certFile`, `keyFile`,
 * `handshakeFirst`), reconnect settings, pings, the connect `timeout` and
 * `inboxPrefix`. They are ignored when `nc` or `transport` is given.
 */
export type NatsPassThroughOptions = Pick<
  ConnectionOptions,
  | "authenticator"
  | "user"
  | "pass"
  | "token"
  | "tls"
  | "maxReconnectAttempts"
  | "reconnectTimeWait"
  | "reconnectJitter"
  | "reconnectJitterTLS"
  | "reconnectDelayHandler"
  | "waitOnFirstConnect"
  | "noRandomize"
  | "pingInterval"
  | "maxPingOut"
  | "timeout"
  | "inboxPrefix"
  | "ignoreClusterUpdates"
  | "debug"
>;

/** The keys of `NatsPassThroughOptions`, to pick them out of `ClientOptions`. */
export const NATS_PASS_THROUGH_KEYS = [
  "authenticator",
  "user",
  "pass",
  "token",
  "tls",
  "maxReconnectAttempts",
  "reconnectTimeWait",
  "reconnectJitter",
  "reconnectJitterTLS",
  "reconnectDelayHandler",
  "waitOnFirstConnect",
  "noRandomize",
  "pingInterval",
  "maxPingOut",
  "timeout",
  "inboxPrefix",
  "ignoreClusterUpdates",
  "debug",
] as const satisfies readonly (keyof NatsPassThroughOptions)[];

export interface ClientOptions extends NatsPassThroughOptions {
  /** NATS server URL(s). Default "nats://127.0.0.1:4222". Ignored when `nc` or `transport` is given. */
  servers?: string | string[];
  /**
   * Use this NATS connection instead of opening one (you chose its
   * credentials, TLS and reconnect settings); `close()` leaves it open. It
   * may come from another copy of the `@nats-io` packages than dlm's own:
   * the client recognises NATS errors by name, not by class. With a
   * `namespace`, open it with `inboxPrefix: inboxPrefixFor(namespace)` so
   * that replies arrive where the namespace's permissions allow.
   */
  nc?: NatsConnection;
  /**
   * Least privilege: a name (1-32 of [A-Za-z0-9_-]) that scopes this
   * client's NATS subjects, so that a NATS user can be allowed exactly its
   * own. Session ids become `<namespace>.<nanoid>`, notifications arrive on
   * `<prefix>.notify.<namespace>.<nanoid>`, and request replies on
   * `_INBOX_<namespace>.>` (the connection's `inboxPrefix`, unless you set
   * one). The NATS user then needs only: publish `<prefix>.req`, subscribe
   * `<prefix>.notify.<namespace>.>` and `_INBOX_<namespace>.>`
   * (docs/operations.md, "Security").
   */
  namespace?: string;
  /**
   * Use this transport (tests, or custom networking). Takes precedence over
   * `nc` and `servers`; `close()` calls its `close()`.
   */
  transport?: Transport;
  /** Subject prefix of the dlm cluster. Default "dlm". */
  prefix?: string;
  /**
   * Session id. Default a fresh nanoid. A session renewed after expiry
   * always gets a fresh nanoid. A fixed id is for one process's life: the
   * cluster remembers ended sessions' ids (maxEndedSessions), and a hello
   * under one of them is refused SESSION_EXPIRED.
   */
  clientId?: string;
  /**
   * The longest one request attempt waits for its answer. Default 2000.
   * Attempts start shorter (`firstAttemptTimeoutMs`) and double up to this.
   */
  requestTimeoutMs?: number;
  /**
   * How long the first attempt of a request waits before it is sent again
   * (same seq, so it still takes effect at most once). Default 500, at most
   * `requestTimeoutMs`. Short, because the usual reason for no answer is a
   * request that reached a leader as it died: the next attempt finds the new
   * one.
   */
  firstAttemptTimeoutMs?: number;
  /** Attempts per request when attempts time out (same seq each time). Default 5. */
  maxAttempts?: number;
  /** Backoff between retries after "no responders" / NOT_LEADER. */
  backoff?: Partial<BackoffOptions>;
  /** How long one request keeps retrying through "no responders" / NOT_LEADER. Default 30000. */
  unavailableTimeoutMs?: number;
  /** Lease asked for when `acquire` does not say; default the server's. */
  defaultLeaseMs?: number;
  /** Renew held leases every `leaseMs * renewFraction`. Default 1/3. */
  renewFraction?: number;
  /** pino-compatible logger; default silent. */
  logger?: Logger;
  /** Fault injection for tests (see faults.ts). */
  faults?: FaultInjector;
  /** A name for logs and for the NATS connection. */
  name?: string;
  /** Bound on the goodbye sent by `close()`. Default 2 * requestTimeoutMs. */
  closeTimeoutMs?: number;
  /**
   * Send every `append` to the server when it is made (one request and one
   * log entry each) instead of staging it in the client until the release.
   * Slower, but an append under a grant that ended is refused at the append
   * (LOCK_EXPIRED) rather than at the release. Default false.
   */
  logEachAppend?: boolean;
}

export interface ResolvedOptions {
  servers: string | string[];
  namespace: string | undefined;
  prefix: string;
  clientId: string | undefined;
  requestTimeoutMs: number;
  firstAttemptTimeoutMs: number;
  maxAttempts: number;
  backoff: BackoffOptions;
  unavailableTimeoutMs: number;
  defaultLeaseMs: number | undefined;
  renewFraction: number;
  logger: Logger;
  faults: FaultInjector | undefined;
  name: string | undefined;
  closeTimeoutMs: number;
  logEachAppend: boolean;
}

export const DEFAULTS = Object.freeze({
  servers: "nats://127.0.0.1:4222",
  prefix: DEFAULT_PREFIX,
  requestTimeoutMs: 2000,
  firstAttemptTimeoutMs: 500,
  maxAttempts: 5,
  // Capped at 250 ms: while no leader answers, a client looks again at
  // least four times a second, so it reaches a new leader within a quarter
  // second of the takeover (the old 1 s cap cost up to a second per failover).
  backoff: Object.freeze({ initialMs: 25, maxMs: 250, multiplier: 2, jitter: 0.2 }) as Readonly<BackoffOptions>,
  unavailableTimeoutMs: 30_000,
  renewFraction: 1 / 3,
});

function positive(name: string, value: number | undefined, fallback: number, allowZero = false): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) {
    throw new BadRequestError(`invalid option ${name}: ${String(value)} (want a ${allowZero ? "non-negative" : "positive"} number)`);
  }
  return value;
}

export function resolveOptions(opts: ClientOptions = {}): ResolvedOptions {
  const requestTimeoutMs = positive("requestTimeoutMs", opts.requestTimeoutMs, DEFAULTS.requestTimeoutMs);
  const maxAttempts = positive("maxAttempts", opts.maxAttempts, DEFAULTS.maxAttempts);
  if (!Number.isInteger(maxAttempts)) throw new BadRequestError(`invalid option maxAttempts: ${maxAttempts}`);
  const b = opts.backoff ?? {};
  const backoff: BackoffOptions = {
    initialMs: positive("backoff.initialMs", b.initialMs, DEFAULTS.backoff.initialMs, true),
    maxMs: positive("backoff.maxMs", b.maxMs, DEFAULTS.backoff.maxMs, true),
    multiplier: positive("backoff.multiplier", b.multiplier, DEFAULTS.backoff.multiplier),
    jitter: positive("backoff.jitter", b.jitter, DEFAULTS.backoff.jitter, true),
  };
  if (backoff.jitter > 1) throw new BadRequestError(`invalid option backoff.jitter: ${backoff.jitter} (want 0..1)`);
  const renewFraction = positive("renewFraction", opts.renewFraction, DEFAULTS.renewFraction);
  if (renewFraction >= 1) throw new BadRequestError(`invalid option renewFraction: ${renewFraction} (want 0 < f < 1)`);
  if (opts.namespace !== undefined && (typeof opts.namespace !== "string" || !CLIENT_NAMESPACE.test(opts.namespace))) {
    throw new BadRequestError(`invalid option namespace ${JSON.stringify(opts.namespace)}: use 1-32 of [A-Za-z0-9_-]`);
  }
  if (opts.clientId !== undefined && !CLIENT_ID.test(opts.clientId)) {
    throw new BadRequestError(
      `invalid option clientId ${JSON.stringify(opts.clientId)}: use 8-64 of [A-Za-z0-9_-], optionally after "<namespace>."`,
    );
  }
  if (opts.clientId !== undefined && opts.namespace !== undefined && !opts.clientId.startsWith(`${opts.namespace}.`)) {
    throw new BadRequestError(`invalid option clientId ${JSON.stringify(opts.clientId)}: with namespace ${opts.namespace} it must start with "${opts.namespace}."`);
  }
  let logger = opts.logger ?? silentLogger;
  if (opts.logger?.child) logger = opts.logger.child({ component: "dlm-client", ...(opts.name ? { name: opts.name } : {}) });
  return {
    servers: opts.servers ?? DEFAULTS.servers,
    namespace: opts.namespace,
    prefix: opts.prefix ?? DEFAULTS.prefix,
    clientId: opts.clientId,
    requestTimeoutMs,
    firstAttemptTimeoutMs: Math.min(requestTimeoutMs, positive("firstAttemptTimeoutMs", opts.firstAttemptTimeoutMs, DEFAULTS.firstAttemptTimeoutMs)),
    maxAttempts,
    backoff,
    unavailableTimeoutMs: positive("unavailableTimeoutMs", opts.unavailableTimeoutMs, DEFAULTS.unavailableTimeoutMs, true),
    defaultLeaseMs: opts.defaultLeaseMs === undefined ? undefined : positive("defaultLeaseMs", opts.defaultLeaseMs, 0),
    renewFraction,
    logger,
    faults: opts.faults,
    name: opts.name,
    closeTimeoutMs: positive("closeTimeoutMs", opts.closeTimeoutMs, 2 * requestTimeoutMs),
    logEachAppend: opts.logEachAppend === true,
  };
}

/** The NATS inbox prefix a client in `namespace` uses: `_INBOX_<namespace>`. */
export function inboxPrefixFor(namespace: string): string {
  return `_INBOX_${namespace}`;
}
