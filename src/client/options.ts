/**
 * Client options, their defaults and their validation.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { DEFAULT_PREFIX } from "../protocol/subjects";
import { CLIENT_ID } from "../protocol/limits";
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

export interface ClientOptions {
  /** NATS server URL(s). Default "nats://127.0.0.1:4222". Ignored when `nc` or `transport` is given. */
  servers?: string | string[];
  /** Use this connection instead of opening one; `close()` leaves it open. */
  nc?: NatsConnection;
  /**
   * Use this transport (tests, or custom networking). Takes precedence over
   * `nc` and `servers`; `close()` calls its `close()`.
   */
  transport?: Transport;
  /** Subject prefix of the dlm cluster. Default "dlm". */
  prefix?: string;
  /** Session id. Default a fresh nanoid. A session renewed after expiry always gets a fresh nanoid. */
  clientId?: string;
  /** Timeout of one request attempt. Default 2000. */
  requestTimeoutMs?: number;
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
  prefix: string;
  clientId: string | undefined;
  requestTimeoutMs: number;
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
  maxAttempts: 5,
  backoff: Object.freeze({ initialMs: 50, maxMs: 1000, multiplier: 2, jitter: 0.2 }) as Readonly<BackoffOptions>,
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
  if (opts.clientId !== undefined && !CLIENT_ID.test(opts.clientId)) {
    throw new BadRequestError(`invalid option clientId ${JSON.stringify(opts.clientId)}: use 8-64 of [A-Za-z0-9_-]`);
  }
  let logger = opts.logger ?? silentLogger;
  if (opts.logger?.child) logger = opts.logger.child({ component: "dlm-client", ...(opts.name ? { name: opts.name } : {}) });
  return {
    servers: opts.servers ?? DEFAULTS.servers,
    prefix: opts.prefix ?? DEFAULTS.prefix,
    clientId: opts.clientId,
    requestTimeoutMs,
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
