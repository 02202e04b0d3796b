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
//
// This is the package's only entry point ("exports" in package.json): what
// a user of the library needs, and nothing of the node, the CLI or the
// client's internal helpers (retry, transport mapping, option resolution),
// so that those can change without breaking anyone. test/unit/public-api
// lists it; a change here is a change of the public API.

export { connect, init, DlmClient } from "./client";
export type {
  AcquireOptions,
  AcquireAllOptions,
  AppendOptions,
  AppendResult,
  CommitAppend,
  CommitOptions,
  CommitResult,
  Committed,
  ReadOptions,
  Discarded,
  SessionInfo,
} from "./client";
export { Lease } from "./lease";
export type { LeaseState } from "./lease";
export { LeaseSet } from "./leaseSet";
export { Semaphore } from "./semaphore";
export type { PermitOptions } from "./semaphore";
export type { LockMode, LockRequest, LockSpec } from "./lockShapes";
export {
  DlmError,
  FileNotFoundError,
  BadRequestError,
  UnknownOpError,
  TooLargeError,
  NotHolderError,
  LockExpiredError,
  SessionExpiredError,
  AlreadyHeldError,
  WaitTimeoutError,
  CancelledError,
  LimitExceededError,
  NotLeaderError,
  TimeoutError,
  UnavailableError,
  StaleRequestError,
  InternalError,
  ClosedError,
  SectionMismatchError,
  LockKindMismatchError,
  isDlmError,
} from "./errors";
export type { DlmErrorOptions } from "./errors";
export { FaultInjector } from "./faults";
export type { FaultAction, FaultEvent, FaultInjectorOptions, FaultPlan, FaultRule } from "./faults";
export type { Transport, TransportSubscription } from "./transport";
export { inboxPrefixFor } from "./options";
export type { BackoffOptions, ClientOptions, Logger, NatsPassThroughOptions } from "./options";
export { ErrorCodes } from "../protocol/errors";
export type { ErrorName, ErrorCode } from "../protocol/errors";
export { DEFAULT_LOCK } from "../protocol/messages";
export type { LeaseInfo, StatusView, Op } from "../protocol/messages";
