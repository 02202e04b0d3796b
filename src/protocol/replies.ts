/** Builders for wire replies, used by validation, the state machine and the coordinator. */
import { ErrorCodes, ErrorDescriptions, type ErrorName } from "./errors";
import type { ErrorReply, LeaseInfo, OkReply } from "./messages";

export function errorReply(name: ErrorName, message?: string, extra?: { lease?: LeaseInfo }): ErrorReply {
  const reply: ErrorReply = { ok: false, code: ErrorCodes[name], error: name, message: message ?? ErrorDescriptions[name] };
  if (extra?.lease) reply.lease = extra.lease;
  return reply;
}

export function okReply(message: string, fields: Omit<OkReply, "ok" | "code" | "message"> = {}): OkReply {
  return { ok: true, code: 0, message, ...fields };
}
