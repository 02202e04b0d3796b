/**
 * The bytes of a stored snapshot (one object in the snapshot bucket), and
 * the checks a reader makes before it trusts one. Pure: no I/O.
 *
 * Layout of the object:
 *
 *   [4 bytes: header length H, big-endian]
 *   [H bytes: header JSON {format, logId, seq, lengths[100], state}]
 *   [file_0 bytes (lengths[0])] [file_1 bytes] … [file_99 bytes]
 *
 * The object's metadata repeats the log id and sequence and adds the total
 * size and the SHA-256 of the whole object, computed by the writer before it
 * uploads. A reader counts the bytes and hashes them as they arrive and
 * trusts the snapshot only if size, digest, header and metadata all agree;
 * the files it wrote from the object are installed only after that.
 */
import { createHash, type Hash } from "crypto";
import { FILE_COUNT } from "../protocol/files";
import type { StateSnapshot } from "../state";

export const SNAPSHOT_FORMAT = 1;
/** Bytes of the length prefix in front of the header. */
export const HEADER_PREFIX_BYTES = 4;

export interface SnapshotHeader {
  format: typeof SNAPSHOT_FORMAT;
  logId: string;
  /** The log sequence the state and the files reflect. */
  seq: number;
  /** Each file's length at `seq`: how many of the object's bytes belong to it. */
  lengths: number[];
  state: StateSnapshot;
}

/** What the object's metadata says about it (strings on the wire). */
export interface SnapshotMeta {
  logId: string;
  seq: number;
  /** Total object bytes. */
  sizeBytes: number;
  /** SHA-256 of the whole object, hex. */
  sha256: string;
}

export const META_KEYS = {
  format: "dlm-format",
  logId: "dlm-log-id",
  seq: "dlm-seq",
  sizeBytes: "dlm-size",
  sha256: "dlm-sha256",
} as const;

/** Thrown for a snapshot object that must not be trusted; the reader skips it. */
export class SnapshotCorruptError extends Error {
  override readonly name = "SnapshotCorruptError";
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** The object name for a snapshot at `seq`: zero-padded so names sort like sequences. */
export function snapshotObjectName(seq: number): string {
  return `seq-${String(seq).padStart(16, "0")}`;
}

export function metaToRecord(meta: SnapshotMeta): Record<string, string> {
  return {
    [META_KEYS.format]: String(SNAPSHOT_FORMAT),
    [META_KEYS.logId]: meta.logId,
    [META_KEYS.seq]: String(meta.seq),
    [META_KEYS.sizeBytes]: String(meta.sizeBytes),
    [META_KEYS.sha256]: meta.sha256,
  };
}

/** The snapshot metadata of an object, or undefined when it has none or it is malformed (not a complete dlm snapshot). */
export function metaFromRecord(record: Record<string, string> | undefined): SnapshotMeta | undefined {
  if (!record || record[META_KEYS.format] !== String(SNAPSHOT_FORMAT)) return undefined;
  const logId = record[META_KEYS.logId];
  const seq = Number(record[META_KEYS.seq]);
  const sizeBytes = Number(record[META_KEYS.sizeBytes]);
  const sha256 = record[META_KEYS.sha256];
  if (typeof logId !== "string" || logId.length === 0) return undefined;
  if (!isCount(seq) || seq < 1 || !isCount(sizeBytes)) return undefined;
  if (typeof sha256 !== "string" || !/^[0-9a-f]{64}$/.test(sha256)) return undefined;
  return { logId, seq, sizeBytes, sha256 };
}

/** The length prefix and header that open the object. */
export function encodeHeader(header: SnapshotHeader): Buffer {
  const json = Buffer.from(JSON.stringify(header), "utf8");
  const prefix = Buffer.alloc(HEADER_PREFIX_BYTES);
  prefix.writeUInt32BE(json.length, 0);
  return Buffer.concat([prefix, json]);
}

/** Total object size for a header of `headerBytes` (prefix included) and these file lengths. */
export function objectSize(headerBytes: number, lengths: readonly number[]): number {
  return lengths.reduce((sum, n) => sum + n, headerBytes);
}

/**
 * Parses the header JSON (without the prefix) and checks it against the
 * metadata and the limits. Throws SnapshotCorruptError.
 */
export function decodeHeader(json: Uint8Array, meta: SnapshotMeta): SnapshotHeader {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(json).toString("utf8"));
  } catch (err) {
    throw new SnapshotCorruptError(`snapshot header is not JSON: ${(err as Error).message}`);
  }
  const h = raw as Partial<SnapshotHeader> | null;
  if (h === null || typeof h !== "object") throw new SnapshotCorruptError("snapshot header is not an object");
  if (h.format !== SNAPSHOT_FORMAT) throw new SnapshotCorruptError(`unknown snapshot format ${JSON.stringify(h.format)}`);
  if (h.logId !== meta.logId) throw new SnapshotCorruptError(`snapshot header names log ${String(h.logId)}, its metadata ${meta.logId}`);
  if (h.seq !== meta.seq) throw new SnapshotCorruptError(`snapshot header says seq ${String(h.seq)}, its metadata ${meta.seq}`);
  if (!Array.isArray(h.lengths) || h.lengths.length !== FILE_COUNT || !h.lengths.every(isCount)) {
    throw new SnapshotCorruptError(`snapshot header must list ${FILE_COUNT} file lengths`);
  }
  if (h.state === null || typeof h.state !== "object" || !Array.isArray(h.state.fileLengths)) {
    throw new SnapshotCorruptError("snapshot header has no state");
  }
  for (let i = 0; i < FILE_COUNT; i++) {
    if (h.state.fileLengths[i] !== h.lengths[i]) {
      throw new SnapshotCorruptError(`file_${i}: the snapshot's state says ${String(h.state.fileLengths[i])} bytes, its files ${h.lengths[i]}`);
    }
  }
  const expected = objectSize(HEADER_PREFIX_BYTES + json.length, h.lengths);
  if (expected !== meta.sizeBytes) throw new SnapshotCorruptError(`snapshot header and files make ${expected} bytes, its metadata says ${meta.sizeBytes}`);
  return h as SnapshotHeader;
}

/**
 * Counts and hashes an object's bytes as they stream by; `finish()` throws
 * SnapshotCorruptError unless the total and the digest are what the
 * metadata promised.
 */
export class DigestCheck {
  private readonly hash: Hash = createHash("sha256");
  private bytes = 0;

  constructor(private readonly meta: SnapshotMeta) {}

  get received(): number {
    return this.bytes;
  }

  update(chunk: Uint8Array): void {
    this.bytes += chunk.length;
    if (this.bytes > this.meta.sizeBytes) {
      throw new SnapshotCorruptError(`snapshot ${this.meta.seq} is longer than its ${this.meta.sizeBytes} bytes`);
    }
    this.hash.update(chunk);
  }

  finish(): void {
    if (this.bytes !== this.meta.sizeBytes) {
      throw new SnapshotCorruptError(`snapshot ${this.meta.seq} has ${this.bytes} bytes, its metadata says ${this.meta.sizeBytes}`);
    }
    const digest = this.hash.digest("hex");
    if (digest !== this.meta.sha256) {
      throw new SnapshotCorruptError(`snapshot ${this.meta.seq} digest ${digest} does not match its metadata ${this.meta.sha256}`);
    }
  }
}
