/**
 * The stored snapshot's bytes and the checks a reader makes: a header that
 * round-trips, metadata that parses only when complete, and a digest/size
 * check that rejects any changed, missing or extra byte.
 */
import { createHash } from "crypto";
import { FILE_COUNT } from "../../src/protocol/files";
import { DEFAULT_LIMITS } from "../../src/protocol/limits";
import { createState, snapshot } from "../../src/state";
import {
  DigestCheck,
  decodeHeader,
  encodeHeader,
  HEADER_PREFIX_BYTES,
  metaFromRecord,
  metaToRecord,
  objectSize,
  SNAPSHOT_FORMAT,
  snapshotObjectName,
  SnapshotCorruptError,
  type SnapshotHeader,
  type SnapshotMeta,
} from "../../src/storage/snapshotFormat";

function sample(): { header: SnapshotHeader; files: Buffer[]; object: Buffer; meta: SnapshotMeta } {
  const state = createState(DEFAULT_LIMITS);
  const files = Array.from({ length: FILE_COUNT }, (_, i) => Buffer.from(i % 7 === 0 ? `file ${i} bytes\n`.repeat(i + 1) : ""));
  state.fileLengths = files.map((f) => f.length);
  const header: SnapshotHeader = { format: SNAPSHOT_FORMAT, logId: "log-a", seq: 42, lengths: files.map((f) => f.length), state: snapshot(state) };
  const object = Buffer.concat([encodeHeader(header), ...files]);
  const meta: SnapshotMeta = { logId: "log-a", seq: 42, sizeBytes: object.length, sha256: createHash("sha256").update(object).digest("hex") };
  return { header, files, object, meta };
}

function headerJson(object: Buffer): Buffer {
  const n = object.readUInt32BE(0);
  return object.subarray(HEADER_PREFIX_BYTES, HEADER_PREFIX_BYTES + n);
}

test("header and metadata round-trip, and the size adds up", () => {
  const { header, object, meta } = sample();
  expect(decodeHeader(headerJson(object), meta)).toEqual(header);
  expect(metaFromRecord(metaToRecord(meta))).toEqual(meta);
  expect(objectSize(encodeHeader(header).length, header.lengths)).toBe(object.length);
  expect(snapshotObjectName(42) < snapshotObjectName(1000)).toBe(true);
});

test("metadata without a digest, with a bad sequence or another format is not a snapshot", () => {
  const { meta } = sample();
  const record = metaToRecord(meta);
  expect(metaFromRecord({ ...record, "dlm-sha256": "" })).toBeUndefined();
  expect(metaFromRecord({ ...record, "dlm-seq": "-1" })).toBeUndefined();
  expect(metaFromRecord({ ...record, "dlm-format": "2" })).toBeUndefined();
  expect(metaFromRecord(undefined)).toBeUndefined();
});

test("a header that disagrees with its metadata is corrupt", () => {
  const { object, meta } = sample();
  expect(() => decodeHeader(headerJson(object), { ...meta, seq: 43 })).toThrow(SnapshotCorruptError);
  expect(() => decodeHeader(headerJson(object), { ...meta, logId: "log-b" })).toThrow(SnapshotCorruptError);
  expect(() => decodeHeader(headerJson(object), { ...meta, sizeBytes: meta.sizeBytes + 1 })).toThrow(SnapshotCorruptError);
  expect(() => decodeHeader(Buffer.from("{not json"), meta)).toThrow(SnapshotCorruptError);
});

test("the digest check accepts the exact bytes and nothing else", () => {
  const { object, meta } = sample();
  const feed = (bytes: Buffer) => {
    const check = new DigestCheck(meta);
    for (let at = 0; at < bytes.length; at += 100) check.update(bytes.subarray(at, at + 100));
    check.finish();
  };
  expect(() => feed(object)).not.toThrow();
  const flipped = Buffer.from(object);
  flipped[flipped.length - 3] ^= 0x01;
  expect(() => feed(flipped)).toThrow(/digest/);
  expect(() => feed(object.subarray(0, object.length - 1))).toThrow(/bytes/);
  expect(() => feed(Buffer.concat([object, Buffer.from("x")]))).toThrow(/longer/);
});
