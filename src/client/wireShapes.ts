/**
 * TEMPORARY: the wire types of issue 11 as the agreed protocol
 * (notes/shapes-protocol.md) describes them, until the core branch's
 * src/protocol/messages.ts is merged; then this file goes away.
 */
import type { LeaseInfo as BaseLeaseInfo, LoggedRequest, Notification as BaseNotification, OkReply as BaseOkReply } from "../protocol/messages";
import type { LockMode } from "./lockShapes";

export type LeaseInfo = BaseLeaseInfo & { mode?: LockMode; permits?: number; limit?: number };

export interface AcquireAllRequest {
  op: "acquireAll";
  client: string;
  seq: number;
  ack: number;
  locks: Array<{ lock: string; mode?: LockMode }>;
  leaseMs?: number;
  waitMs?: number;
}

export type OkReply = BaseOkReply & { lease?: LeaseInfo; leases?: LeaseInfo[] };
export type Notification = BaseNotification | { event: "granted"; seq: number; lease: LeaseInfo; leases?: LeaseInfo[] };

export function asLogged(req: AcquireAllRequest): LoggedRequest {
  return req as unknown as LoggedRequest;
}
