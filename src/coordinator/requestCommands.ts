/**
 * What a logged request becomes in the log: the command the state machine
 * applies. Pure: the request was validated (protocol/validate.ts), and the
 * node's limits fill in what the client left to the server (the default
 * lease), so that the log, not the leader's configuration at replay time,
 * says what was asked.
 */
import { fileIndex } from "../protocol/files";
import type { Limits } from "../protocol/limits";
import type { LoggedRequest, WireAppend } from "../protocol/messages";
import type { ClientCommand, Command, SectionAppend } from "../state";
import { assert } from "../util/assert";

/** A waiting request's lease and wait as logged: the node's default lease, null for "wait as long as it takes". */
function logWaitFields(request: { leaseMs?: number; waitMs?: number }, limits: Limits): { leaseMs: number; waitMs: number | null } {
  return { leaseMs: request.leaseMs ?? limits.defaultLeaseMs, waitMs: request.waitMs ?? null };
}

export function toCommand(request: LoggedRequest, limits: Limits): Command {
  const command = commandOf(request, limits);
  // Listed only when there is something to list: a command without waits is
  // logged exactly as before waits existed (and in an entry older nodes read).
  return request.waits && request.waits.length > 0 ? { ...command, waits: request.waits } : command;
}

function commandOf(request: LoggedRequest, limits: Limits): ClientCommand {
  const { client, seq, ack } = request;
  switch (request.op) {
    case "hello":
      return request.listsWaits ? { type: "hello", client, seq, ack, listsWaits: true } : { type: "hello", client, seq, ack };
    case "goodbye":
      return { type: request.op, client, seq, ack };
    case "acquire":
      // A new request always logs how it wants the lock (a semaphore: its
      // limit and permits; a lock: its mode), so its grant and answers carry
      // it; only commands logged before modes existed lack it.
      return {
        type: "acquire",
        client,
        seq,
        ack,
        lock: request.lock,
        ...logWaitFields(request, limits),
        ...(request.limit === undefined ? { mode: request.mode ?? "exclusive" } : { limit: request.limit, permits: request.permits ?? 1 }),
      };
    case "acquireAll":
      return {
        type: "acquireAll",
        client,
        seq,
        ack,
        locks: request.locks.map((l) => ({ lock: l.lock, mode: l.mode ?? "exclusive" })),
        ...logWaitFields(request, limits),
      };
    case "release":
      return {
        type: "release",
        client,
        seq,
        ack,
        lock: request.lock,
        token: request.token,
        ...(request.staged !== undefined ? { staged: request.staged } : {}),
        ...(request.appends ? { appends: request.appends.map(toSectionAppend) } : {}),
      };
    case "abandon":
      return { type: request.op, client, seq, ack, lock: request.lock, token: request.token };
    case "commit":
      return {
        type: "commit",
        client,
        seq,
        ack,
        lock: request.lock,
        ...logWaitFields(request, limits),
        appends: request.appends.map(toSectionAppend),
      };
    case "append": {
      const file = fileIndex(request.file);
      assert(file !== undefined, "validated file name has no index");
      return { type: "append", client, seq, ack, token: request.token, file, data: request.data };
    }
    case "renew":
      return { type: "renew", client, seq, ack, lock: request.lock, token: request.token, leaseMs: request.leaseMs ?? null };
    case "cancel":
      return { type: "cancel", client, seq, ack, target: request.target };
  }
}

function toSectionAppend(append: WireAppend): SectionAppend {
  const file = fileIndex(append.file);
  assert(file !== undefined, "validated file name has no index");
  return { file, data: append.data };
}
