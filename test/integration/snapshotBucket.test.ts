/**
 * The snapshot bucket against a real nats-server: a snapshot written from
 * file prefixes reads back as exactly those bytes, and every way an object
 * can be damaged (a changed chunk, a missing chunk, no chunks at all,
 * metadata that lies) is reported as SnapshotCorruptError instead of
 * handing over wrong bytes or hanging.
 */
import * as fs from "fs";
import * as path from "path";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { jetstreamManager } from "@nats-io/jetstream";
import { Objm } from "@nats-io/obj";
import { startNats, type TestNats } from "../kit/nats";
import { makeTempDir, removeTempDir } from "../kit/tmp";
import { fileRangeReader, metaSubject, SnapshotBucket, type StoredSnapshotInfo } from "../../src/log/snapshotBucket";
import { FILE_COUNT, fileName } from "../../src/protocol/files";
import { DEFAULT_LIMITS } from "../../src/protocol/limits";
import { createState, snapshot } from "../../src/state";
import { IncomingFiles } from "../../src/storage/incomingFiles";
import { SNAPSHOT_FORMAT, SnapshotCorruptError, type SnapshotHeader } from "../../src/storage/snapshotFormat";

let nats: TestNats;
let nc: NatsConnection;
let dir: string;
let n = 0;

beforeAll(async () => {
  nats = await startNats();
  nc = await connect({ servers: nats.url });
  dir = makeTempDir("dlm-snapshot-bucket-");
});

afterAll(async () => {
  await nc?.close();
  await nats?.close();
  await removeTempDir(dir);
});

/** Files under `dir/src` whose bytes at `lengths` make the snapshot; more bytes follow (appended after seq). */
function writeSourceFiles(): { lengths: number[]; pathOf: (i: number) => string } {
  const src = path.join(dir, `src${n}`);
  fs.mkdirSync(src, { recursive: true });
  const lengths: number[] = [];
  for (let i = 0; i < FILE_COUNT; i++) {
    const body = i % 3 === 0 ? Buffer.alloc(5000 + i * 997, String.fromCharCode(97 + (i % 26))) : Buffer.alloc(0);
    fs.writeFileSync(path.join(src, fileName(i)), Buffer.concat([body, Buffer.from("appended after the snapshot\n")]));
    lengths.push(body.length);
  }
  return { lengths, pathOf: (i) => path.join(src, fileName(i)) };
}

async function writeOne(): Promise<{ bucket: SnapshotBucket; snap: StoredSnapshotInfo; header: SnapshotHeader; pathOf: (i: number) => string }> {
  n++;
  const bucket = await SnapshotBucket.open(nc, { bucket: `snaps_${n}`, replicas: 1, chunkBytes: 16 * 1024, readIdleTimeoutMs: 1500 });
  const { lengths, pathOf } = writeSourceFiles();
  const state = createState(DEFAULT_LIMITS);
  state.fileLengths = [...lengths];
  const header: SnapshotHeader = { format: SNAPSHOT_FORMAT, logId: "log-x", seq: 77, lengths, state: snapshot(state) };
  await bucket.write(header, fileRangeReader(pathOf));
  const [snap] = await bucket.list("log-x");
  return { bucket, snap: snap!, header, pathOf };
}

async function chunkSeqs(bucket: SnapshotBucket, snap: StoredSnapshotInfo): Promise<number[]> {
  const info = await bucket.objectInfo(snap.name);
  const jsm = await jetstreamManager(nc);
  const seqs: number[] = [];
  let from = 1;
  for (;;) {
    const m = await jsm.direct.getMessage(bucket.streamName, { next_by_subj: `$O.${info!.bucket}.C.${info!.nuid}`, seq: from }).catch(() => null);
    if (!m) return seqs;
    seqs.push(m.seq);
    from = m.seq + 1;
  }
}

test("a snapshot reads back as exactly the files' prefixes, and only for its own log", async () => {
  const { bucket, snap, header, pathOf } = await writeOne();
  expect(snap.meta).toMatchObject({ logId: "log-x", seq: 77 });
  expect(await bucket.list("another-log")).toEqual([]);
  const incoming = new IncomingFiles(path.join(dir, `dst${n}`));
  const read = await bucket.read(snap, incoming);
  expect(read.lengths).toEqual(header.lengths);
  incoming.finish();
  for (let i = 0; i < FILE_COUNT; i++) {
    expect(fs.readFileSync(incoming.pathOf(i)).equals(fs.readFileSync(pathOf(i)).subarray(0, header.lengths[i]))).toBe(true);
  }
});

test("a missing chunk, no chunks at all, or metadata with another digest are all corrupt", async () => {
  const jsm = await jetstreamManager(nc);
  {
    const { bucket, snap } = await writeOne();
    const seqs = await chunkSeqs(bucket, snap);
    expect(seqs.length).toBeGreaterThan(3);
    await expect(bucket.checkStored(snap)).resolves.toBeUndefined();
    await jsm.streams.deleteMessage(bucket.streamName, seqs[1]!);
    await expect(bucket.checkStored(snap)).rejects.toThrow(/chunks stored/);
    await expect(bucket.read(snap)).rejects.toBeInstanceOf(SnapshotCorruptError);
  }
  {
    const { bucket, snap } = await writeOne();
    for (const seq of await chunkSeqs(bucket, snap)) await jsm.streams.deleteMessage(bucket.streamName, seq);
    await expect(bucket.read(snap)).rejects.toThrow(SnapshotCorruptError); // times out instead of hanging
  }
  {
    const { bucket, snap } = await writeOne();
    const store = await new Objm(nc).open(`snaps_${n}`);
    const info = await store.info(snap.name);
    await store.update(snap.name, { metadata: { ...info!.metadata, "dlm-sha256": "0".repeat(64) } });
    const [relisted] = await bucket.list("log-x");
    await expect(bucket.read(relisted!)).rejects.toThrow(/digest/);
  }
});

test("a deleted snapshot leaves nothing in the bucket's stream: no chunks and no 'deleted' record under its name", async () => {
  const { bucket, snap } = await writeOne();
  const info = await bucket.objectInfo(snap.name);
  const jsm = await jetstreamManager(nc);
  // The object store's own name for the record (so a change in nats.js shows here).
  expect(metaSubject(info!.bucket, snap.name)).toBe((await new Objm(nc).open(info!.bucket) as unknown as { _metaSubject(n: string): string })._metaSubject(snap.name));
  await bucket.delete(snap.name);
  const stream = await jsm.streams.info(bucket.streamName);
  expect(stream.state.messages).toBe(0);
  expect(await bucket.list("log-x")).toEqual([]);
});
