/**
 * dlm client: named, leased, fenced locks over NATS, and appends to the
 * files they guard.
 *
 * ```ts
 * import { connect, isDlmError } from "dlm";
 *
 * const client = await connect({ servers: "nats://127.0.0.1:4222" });
 * const lease = await client.acquire("global", { signal: AbortSignal.timeout(10_000) });
 * try {
 *   await client.append("file_0", "one line\n");
 *   await lease.release(); // commits the appends atomically
 * } catch (e) {
 *   if (isDlmError(e, "LOCK_EXPIRED")) ... // the section was discarded
 * }
 * await client.close();
 * ```
 */
export { connect, init, DlmClient, natsConnectionOptions } from "./client";
export type { AcquireOptions, AppendOptions, AppendResult, Committed, SessionInfo } from "./client";
export { Lease } from "./lease";
export type { LeaseState, LeaseOwner } from "./lease";
export * from "./errors";
export { FaultInjector, mulberry32 } from "./faults";
export type { FaultAction, FaultEvent, FaultInjectorOptions, FaultPlan, FaultRule } from "./faults";
export {
  NatsTransport,
  TransportError,
  TransportTimeoutError,
  TransportUnavailableError,
  NoRespondersError,
  DisconnectedError,
  TransportClosedError,
  TransportPermissionError,
  mapNatsError,
  classifyNatsError,
} from "./transport";
export type { NatsErrorKind, Transport, TransportSubscription } from "./transport";
export { Backoff, retry } from "./retry";
export type { RetryPolicy, AttemptOutcome, RetryHooks } from "./retry";
export { DEFAULTS, inboxPrefixFor, NATS_PASS_THROUGH_KEYS, resolveOptions, silentLogger } from "./options";
export type { BackoffOptions, ClientOptions, Logger, NatsPassThroughOptions, ResolvedOptions } from "./options";
export { ErrorCodes, ErrorDescriptions } from "../protocol/errors";
export type { ErrorName, ErrorCode } from "../protocol/errors";
export { DEFAULT_LOCK } from "../protocol/messages";
export type { LeaseInfo, Notification, StatusView, Op } from "../protocol/messages";
export { DEFAULT_PREFIX } from "../protocol/subjects";
