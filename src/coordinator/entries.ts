/**
 * Log entries on the wire: one JSON object per JetStream message. Decoding
 * checks the envelope; the commands inside were validated by the leader
 * that wrote them, and the state machine asserts what it relies on.
 */
import { isEntryVersion, type LogEntry } from "../state";
import { InvariantError } from "../util/assert";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeEntry(entry: LogEntry): Uint8Array {
  return encoder.encode(JSON.stringify(entry));
}

export function decodeEntry(seq: number, data: Uint8Array): LogEntry {
  let entry: unknown;
  try {
    entry = JSON.parse(decoder.decode(data));
  } catch (err) {
    // Only leaders write to the log, so garbage there is a broken invariant.
    throw new InvariantError(`log entry ${seq} is not JSON: ${(err as Error).message}`);
  }
  const e = entry as Partial<LogEntry> | null;
  if (!e || !isEntryVersion(e.v) || typeof e.t !== "number" || typeof e.epoch !== "number" || typeof e.node !== "string" || !Array.isArray(e.cmds)) {
    throw new InvariantError(`log entry ${seq} has an unknown shape`);
  }
  return e as LogEntry;
}
