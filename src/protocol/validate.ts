/**
 * Turns raw request bytes into a typed request, or into the error reply that
 * explains what is wrong with them. This is the only place that trusts
 * nothing: after it, every field has the right type and is within limits.
 * It never throws on input.
 */
import type { ErrorName } from "./errors";
import { fileIndex } from "./files";
import { CLIENT_ID, LOCK_NAME, MAX_LISTED_WAITS, MAX_REQUEST_BYTES, type Limits } from "./limits";
import { DEFAULT_LOCK, LOGGED_OPS, UNLOGGED_OPS, type ErrorReply, type LockMode, type Request, type WireAppend } from "./messages";
import { errorReply } from "./replies";

export type Parsed = { ok: true; request: Request } | { ok: false; reply: ErrorReply };

class Invalid extends Error {
  constructor(
    readonly errorName: ErrorName,
    message: string,
  ) {
    super(message);
  }
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const KNOWN_OPS: readonly string[] = [...LOGGED_OPS, ...UNLOGGED_OPS];

export function parseRequest(bytes: Uint8Array, limits: Limits, maxRequestBytes = MAX_REQUEST_BYTES): Parsed {
  try {
    return { ok: true, request: parseOrThrow(bytes, limits, maxRequestBytes) };
  } catch (err) {
    if (err instanceof Invalid) return { ok: false, reply: errorReply(err.errorName, err.message) };
    throw err;
  }
}

function parseOrThrow(bytes: Uint8Array, limits: Limits, maxRequestBytes: number): Request {
  if (bytes.length > maxRequestBytes) {
    throw new Invalid("TOO_LARGE", `request of ${bytes.length} bytes exceeds maxRequestBytes ${maxRequestBytes}`);
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch {
    throw new Invalid("BAD_REQUEST", "request is not valid JSON");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new Invalid("BAD_REQUEST", "request must be a JSON object");
  }
  const raw = body as Record<string, unknown>;
  if (typeof raw.op !== "string") throw new Invalid("BAD_REQUEST", "field 'op' must be a string");
  const op = raw.op;
  if (!KNOWN_OPS.includes(op)) {
    throw new Invalid("UNKNOWN_OP", `unknown op ${JSON.stringify(op.slice(0, 40))}; known: ${KNOWN_OPS.join(", ")}`);
  }
  switch (op) {
    case "status":
      return { op };
    case "read":
      return { op, file: fileName(raw), ...optionalInt(raw, "offset", 0, Number.MAX_SAFE_INTEGER) };
    case "ping":
      return { op, client: clientId(raw) };
    case "hello":
      if (raw.listsWaits !== undefined && typeof raw.listsWaits !== "boolean") throw new Invalid("BAD_REQUEST", "field 'listsWaits' must be a boolean");
      return raw.listsWaits === true ? { op, ...session(raw), listsWaits: true } : { op, ...session(raw) };
    case "goodbye":
      return { op, ...session(raw) };
    case "acquire": {
      const fields = session(raw);
      const lock = lockName(raw);
      return {
        op,
        ...fields,
        lock,
        ...waitFields(raw, limits),
        ...lockShape(raw, lock, limits.maxSemaphoreLimit),
      };
    }
    case "acquireAll":
      return {
        op,
        ...session(raw),
        locks: lockList(raw, limits.maxLocksPerRequest),
        ...waitFields(raw, limits),
      };
    case "release": {
      const fields = session(raw);
      const lock = lockName(raw);
      const appends = raw.appends === undefined ? [] : sectionAppends(raw, lock, limits.maxAppendBytes);
      return {
        op,
        ...fields,
        lock,
        token: token(raw),
        ...optionalInt(raw, "staged", 0, Number.MAX_SAFE_INTEGER),
        ...(appends.length > 0 ? { appends } : {}),
      };
    }
    case "abandon":
      return { op, ...session(raw), lock: lockName(raw), token: token(raw) };
    case "commit": {
      const fields = session(raw);
      const lock = lockName(raw);
      return {
        op,
        ...fields,
        lock,
        ...waitFields(raw, limits),
        appends: sectionAppends(raw, lock, limits.maxAppendBytes),
      };
    }
    case "renew":
      return {
        op,
        ...session(raw),
        lock: lockName(raw),
        token: token(raw),
        ...optionalInt(raw, "leaseMs", limits.minLeaseMs, limits.maxLeaseMs),
      };
    case "append": {
      const fields = session(raw);
      const file = fileName(raw);
      const data = base64(raw, limits.maxAppendBytes);
      return { op, ...fields, file, data, token: token(raw) };
    }
    case "cancel": {
      const fields = session(raw);
      const target = integer(raw, "target", 1, fields.seq - 1);
      return { op, ...fields, target };
    }
    default:
      // KNOWN_OPS and this switch list the same ops; a gap is a programming error.
      throw new Error(`op ${op} is known but not parsed`);
  }
}

/**
 * The `appends` of a release or commit: an array of { file, data }. Files
 * are guarded by the default lock, so appends under any other lock are
 * refused. The section's total size is checked by the state machine (it
 * depends on what the grant already staged).
 */
function sectionAppends(raw: Record<string, unknown>, lock: string, maxAppendBytes: number): WireAppend[] {
  const list = raw.appends;
  if (!Array.isArray(list)) throw new Invalid("BAD_REQUEST", "field 'appends' must be an array of { file, data }");
  if (list.length > 0 && lock !== DEFAULT_LOCK) {
    throw new Invalid("BAD_REQUEST", `files are guarded by lock "${DEFAULT_LOCK}"; appends under "${lock.slice(0, 40)}" are refused`);
  }
  return list.map((item: unknown, i): WireAppend => {
    if (typeof item !== "object" || item === null || Array.isArray(item)) {
      throw new Invalid("BAD_REQUEST", `appends[${i}] must be an object { file, data }`);
    }
    const fields = item as Record<string, unknown>;
    return { file: fileName(fields), data: base64(fields, maxAppendBytes) };
  });
}

/**
 * How an acquire wants its lock: a mode, or a semaphore's limit and permits.
 * The files lock is exclusive only, so that appends can never happen under
 * a shared grant or a permit. Whether the lock already exists as another
 * kind is the state machine's question (LOCK_KIND_MISMATCH).
 */
function lockShape(raw: Record<string, unknown>, lock: string, maxSemaphoreLimit: number): { mode?: LockMode; limit?: number; permits?: number } {
  const mode = optionalMode(raw.mode, "mode");
  if (raw.limit === undefined) {
    if (raw.permits !== undefined) throw new Invalid("BAD_REQUEST", "field 'permits' needs 'limit': permits are taken from a semaphore");
    if (mode === "shared" && lock === DEFAULT_LOCK) throw new Invalid("BAD_REQUEST", FILES_LOCK_EXCLUSIVE);
    return mode === undefined ? {} : { mode };
  }
  if (mode === "shared") throw new Invalid("BAD_REQUEST", "a semaphore ('limit') has permits, not a mode: 'mode' \"shared\" with 'limit' is refused");
  if (lock === DEFAULT_LOCK) throw new Invalid("BAD_REQUEST", FILES_LOCK_EXCLUSIVE);
  const limit = integer(raw, "limit", 1, maxSemaphoreLimit);
  // An explicit "exclusive" beside a limit asks for nothing a semaphore has; it is dropped.
  return { limit, ...optionalInt(raw, "permits", 1, limit) };
}

const FILES_LOCK_EXCLUSIVE = `the files lock "${DEFAULT_LOCK}" is exclusive only: the files are written only under it; shared grants and permits guard your own resources`;

function optionalMode(value: unknown, field: string): LockMode | undefined {
  if (value === undefined) return undefined;
  if (value !== "exclusive" && value !== "shared") throw new Invalid("BAD_REQUEST", `field '${field}' must be "exclusive" or "shared"`);
  return value;
}

/** The `locks` of an acquireAll: 1..maxLocksPerRequest distinct names, each with an optional mode, no semaphores. */
function lockList(raw: Record<string, unknown>, maxLocksPerRequest: number): Array<{ lock: string; mode?: LockMode }> {
  const list = raw.locks;
  if (!Array.isArray(list) || list.length === 0) throw new Invalid("BAD_REQUEST", "field 'locks' must be a non-empty array of { lock, mode? }");
  if (list.length > maxLocksPerRequest) {
    throw new Invalid("BAD_REQUEST", `field 'locks' names ${list.length} locks, over maxLocksPerRequest ${maxLocksPerRequest}`);
  }
  const seen = new Set<string>();
  return list.map((item: unknown, i) => {
    if (typeof item !== "object" || item === null || Array.isArray(item)) throw new Invalid("BAD_REQUEST", `locks[${i}] must be an object { lock, mode? }`);
    const fields = item as Record<string, unknown>;
    if (fields.lock === undefined) throw new Invalid("BAD_REQUEST", `locks[${i}] has no 'lock'`);
    const lock = lockName(fields);
    if (seen.has(lock)) throw new Invalid("BAD_REQUEST", `locks[${i}] names ${lock} again: each lock once`);
    seen.add(lock);
    if (fields.limit !== undefined || fields.permits !== undefined) {
      throw new Invalid("BAD_REQUEST", `locks[${i}]: semaphores ('limit', 'permits') cannot be taken with acquireAll`);
    }
    const mode = optionalMode(fields.mode, `locks[${i}].mode`);
    if (mode === "shared" && lock === DEFAULT_LOCK) throw new Invalid("BAD_REQUEST", FILES_LOCK_EXCLUSIVE);
    return mode === undefined ? { lock } : { lock, mode };
  });
}

function session(raw: Record<string, unknown>): { client: string; seq: number; ack: number; waits?: number[] } {
  const client = clientId(raw);
  const seq = integer(raw, "seq", 1, Number.MAX_SAFE_INTEGER);
  const ack = raw.ack === undefined ? 0 : integer(raw, "ack", 0, seq - 1);
  if (raw.waits === undefined) return { client, seq, ack };
  return { client, seq, ack, waits: waits(raw.waits, ack) };
}

/** `waits`: the queued seqs at or below `ack` the client still waits on (messages.ts). */
function waits(value: unknown, ack: number): number[] {
  const rule = `field 'waits' must be a list of at most ${MAX_LISTED_WAITS} strictly increasing integers between 1 and ack (${ack})`;
  if (!Array.isArray(value) || value.length > MAX_LISTED_WAITS) throw new Invalid("BAD_REQUEST", rule);
  let previous = 0;
  for (const seq of value) {
    if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq <= previous || seq > ack) throw new Invalid("BAD_REQUEST", rule);
    previous = seq;
  }
  return value as number[];
}

function clientId(raw: Record<string, unknown>): string {
  if (typeof raw.client !== "string" || !CLIENT_ID.test(raw.client)) {
    throw new Invalid("BAD_REQUEST", "field 'client' must be a client id of 8-64 characters from [A-Za-z0-9_-], optionally after '<namespace>.'");
  }
  return raw.client;
}

function lockName(raw: Record<string, unknown>): string {
  if (raw.lock === undefined) return DEFAULT_LOCK;
  if (typeof raw.lock !== "string" || !LOCK_NAME.test(raw.lock)) {
    throw new Invalid(
      "BAD_REQUEST",
      "field 'lock' must be 1-128 characters of [A-Za-z0-9_.:-], starting with a letter or digit",
    );
  }
  return raw.lock;
}

function fileName(raw: Record<string, unknown>): string {
  if (typeof raw.file !== "string") throw new Invalid("BAD_REQUEST", "field 'file' must be a string");
  if (fileIndex(raw.file) === undefined) {
    throw new Invalid("FILE_NOT_FOUND", `no file ${JSON.stringify(raw.file.slice(0, 64))}: files are file_0 … file_99`);
  }
  return raw.file;
}

function token(raw: Record<string, unknown>): number {
  return integer(raw, "token", 1, Number.MAX_SAFE_INTEGER);
}

function base64(raw: Record<string, unknown>, maxBytes: number): string {
  const data = raw.data;
  if (typeof data !== "string") throw new Invalid("BAD_REQUEST", "field 'data' must be a base64 string");
  // Check the size before the pattern: the pattern is linear, but there is
  // no reason to scan a payload we refuse anyway.
  const bytes = Math.floor((data.length * 3) / 4);
  if (bytes > maxBytes + 2) throw new Invalid("TOO_LARGE", `append of ~${bytes} bytes exceeds maxAppendBytes ${maxBytes}`);
  if (!BASE64.test(data)) throw new Invalid("BAD_REQUEST", "field 'data' is not valid base64");
  const exact = Buffer.byteLength(data, "base64");
  if (exact > maxBytes) throw new Invalid("TOO_LARGE", `append of ${exact} bytes exceeds maxAppendBytes ${maxBytes}`);
  // An empty append changes no file, and only bytes count against a
  // section's limit: without this a grant could stage any number of them.
  if (exact === 0) throw new Invalid("BAD_REQUEST", "an append needs at least one byte of data");
  return data;
}

function integer(raw: Record<string, unknown>, field: string, min: number, max: number): number {
  const value = raw[field];
  if (typeof value !== "number" || !Number.isSafeInteger(value)) {
    throw new Invalid("BAD_REQUEST", `field '${field}' must be an integer`);
  }
  if (value < min || value > max) {
    throw new Invalid("BAD_REQUEST", `field '${field}' must be between ${min} and ${max}, got ${value}`);
  }
  return value;
}

/** The optional lease and wait of a request that waits for a lock (acquire, acquireAll, commit). */
function waitFields(raw: Record<string, unknown>, limits: Limits): { leaseMs?: number; waitMs?: number } {
  return { ...optionalInt(raw, "leaseMs", limits.minLeaseMs, limits.maxLeaseMs), ...optionalInt(raw, "waitMs", 0, limits.maxWaitMs) };
}

function optionalInt<K extends string>(
  raw: Record<string, unknown>,
  field: K,
  min: number,
  max: number,
): Partial<Record<K, number>> {
  if (raw[field] === undefined) return {};
  return { [field]: integer(raw, field, min, max) } as Partial<Record<K, number>>;
}
