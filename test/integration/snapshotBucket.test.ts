/**
 * The snapshot bucket against a real nats-server: a snapshot written from
 * file prefixes reads back as exactly those bytes, and every way an object
 * can be damaged (a changed chunk, a missing chunk, no chunks at all,
 * metadata that lies) is reported as SnapshotCorruptError instead of
 * handing over wrong bytes or hanging; and the sweep of orphan chunks
 * purges what a killed uploader leaves (chunks with no metadata) and
 * nothing else: not a stored snapshot, not an upload still being written.
 */
import * as fs from "fs";
import * as path from "path";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Objm } from "@nats-io/obj";
import { nuid } from "@nats-io/nats-core";
import { startNats, type TestNats } from "../kit/nats";
import { makeTempDir, removeTempDir } from "../kit/tmp";
import { fileRangeReader, metaSubject, SnapshotBucket, type FileRangeReader, type StoredSnapshotInfo } from "../../src/log/snapshotBucket";
import { OrphanChunkSweep } from "../../src/replica/orphanChunkSweep";
import { until } from "../kit/wait";
import { FILE_COUNT, fileName } from "../../src/protocol/files";
import { DEFAULT_LIMITS } from "../../src/protocol/limits";
import { createState, snapshot } from "../../src/state";
import { IncomingFiles } from "../../src/storage/incomingFiles";
import { silentLogger } from "../../src/log/logger";
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

describe("the orphan chunk sweep", () => {
  /** The sweep's age, on a clock the test moves, so no assertion depends on how fast anything runs. */
  const AGE_MS = 60_000;

  /** Chunks under a fresh nuid and no metadata naming them: exactly what an uploader killed mid-way leaves. */
  async function deadUpload(bucket: SnapshotBucket, chunks: number): Promise<string> {
    const id = nuid.next();
    const js = jetstream(nc);
    for (let i = 0; i < chunks; i++) await js.publish(bucket.chunkSubject(id), Buffer.alloc(16 * 1024, i));
    return id;
  }

  /**
   * A reader that lets the hashing pass of write() through (its first
   * `freeCalls` reads) and then hands out one file slice per permit, so the
   * test decides when the upload writes more chunks.
   */
  function gatedReader(inner: FileRangeReader, freeCalls: number): { read: FileRangeReader; permit(): void; openAll(): void } {
    let calls = 0;
    let permits = 0;
    let open = false;
    const waiting: Array<() => void> = [];
    const wake = () => {
      while (waiting.length > 0 && (open || permits > 0)) {
        if (!open) permits--;
        waiting.shift()!();
      }
    };
    return {
      read: async (index, offset, length) => {
        if (++calls > freeCalls) {
          await new Promise<void>((resolve) => {
            waiting.push(resolve);
            wake();
          });
        }
        return inner(index, offset, length);
      },
      permit: () => {
        permits++;
        wake();
      },
      openAll: () => {
        open = true;
        wake();
      },
    };
  }

  test("a dead upload's chunks go on the first sweep an age after one that saw them; a stored snapshot and an upload still writing stay", async () => {
    const { bucket, snap, header } = await writeOne();
    const jsm = await jetstreamManager(nc);
    const liveInfo = await bucket.objectInfo(snap.name);
    const liveChunks = liveInfo!.chunks;
    const dead = await deadUpload(bucket, 3);

    // An upload in progress: a real write() of another snapshot, held between file slices.
    n++; // source files of their own
    const { lengths, pathOf } = writeSourceFiles();
    const nonEmptyFiles = lengths.filter((l) => l > 0).length;
    const gate = gatedReader(fileRangeReader(pathOf), nonEmptyFiles);
    const uploading = bucket.write({ ...header, seq: 78, lengths }, gate.read);
    const inProgress = async (): Promise<{ id: string; chunks: number } | undefined> => {
      const named = await bucket.namedChunkSets();
      const entry = [...(await bucket.chunkSets())].find(([id]) => id !== dead && !named.has(id));
      return entry && { id: entry[0], chunks: entry[1] };
    };
    /** Lets the upload through, a file slice at a time, until it has written another chunk. */
    const writeMore = async (): Promise<number> => {
      const before = (await inProgress())?.chunks ?? 0;
      let after = before;
      await until(
        async () => {
          gate.permit();
          after = (await inProgress())?.chunks ?? 0;
          return after > before;
        },
        10_000,
        "the upload in progress to write another chunk",
      );
      return after;
    };
    await writeMore();

    let nowMs = 0;
    const purgedCounts: number[] = [];
    const sweep = new OrphanChunkSweep(bucket, { orphanChunkAgeMs: AGE_MS, nowMs: () => nowMs, onPurged: (n) => purgedCounts.push(n) }, silentLogger);
    const chunksOf = async (id: string) => (await bucket.chunkSets()).get(id) ?? 0;

    // The first sweep only notes the unnamed sets, whatever their age.
    expect(await sweep.sweep()).toEqual([]);
    expect(await chunksOf(dead)).toBe(3);
    // Short of the age: still nothing; the upload writes more meanwhile.
    await writeMore();
    nowMs = AGE_MS - 1;
    expect(await sweep.sweep()).toEqual([]);
    expect(await chunksOf(dead)).toBe(3);
    // Past the age: the dead set goes, all of it. The upload wrote a chunk
    // since the last sweep, so its clock started again: it stays.
    await writeMore();
    nowMs = AGE_MS;
    expect(await sweep.sweep()).toEqual([{ nuid: dead, chunks: 3 }]);
    expect(purgedCounts).toEqual([3]);
    expect(await chunksOf(dead)).toBe(0);
    const stillWriting = await inProgress();
    expect(stillWriting?.chunks).toBeGreaterThan(0);
    // Long after, still writing: still there.
    await writeMore();
    nowMs = 10 * AGE_MS;
    expect(await sweep.sweep()).toEqual([]);
    expect(await chunksOf(stillWriting!.id)).toBeGreaterThan(stillWriting!.chunks);

    // The upload finishes whole, and so is the snapshot stored before.
    gate.openAll();
    await uploading;
    const stored = await bucket.list("log-x");
    expect(stored.map((s) => s.meta.seq)).toEqual([78, 77]);
    for (const s of stored) await expect(bucket.checkStored(s)).resolves.toBeUndefined();
    expect((await bucket.objectInfo(snap.name))!.nuid).toBe(liveInfo!.nuid);
    expect(await chunksOf(liveInfo!.nuid)).toBe(liveChunks);
    await expect(bucket.read(stored[1]!)).resolves.toMatchObject({ seq: 77 });
    // Named now: later sweeps leave both alone, and nothing else is left.
    nowMs = 20 * AGE_MS;
    expect(await sweep.sweep()).toEqual([]);
    nowMs = 30 * AGE_MS;
    expect(await sweep.sweep()).toEqual([]);
    const named = await bucket.namedChunkSets();
    expect(new Set((await bucket.chunkSets()).keys())).toEqual(named);
    const stream = await jsm.streams.info(bucket.streamName);
    expect(stream.state.messages).toBe(liveChunks + (await bucket.objectInfo(stored[0]!.name))!.chunks + 2);
  });

  test("chunks an object stopped naming (its deletion died before purging them) are swept too", async () => {
    const { bucket, snap } = await writeOne();
    const info = (await bucket.objectInfo(snap.name))!;
    // What a deleter killed between the object store's two steps leaves:
    // the "deleted" record, the chunks still there.
    const store = await new Objm(nc).open(info.bucket);
    await jetstream(nc).publish(metaSubject(info.bucket, snap.name), JSON.stringify({ ...info, deleted: true, size: 0, chunks: 0, digest: "" }));
    expect(await store.info(snap.name)).toMatchObject({ deleted: true });
    let nowMs = 0;
    const sweep = new OrphanChunkSweep(bucket, { orphanChunkAgeMs: AGE_MS, nowMs: () => nowMs }, silentLogger);
    expect(await sweep.sweep()).toEqual([]);
    nowMs = AGE_MS;
    expect(await sweep.sweep()).toEqual([{ nuid: info.nuid, chunks: info.chunks }]);
    expect((await bucket.chunkSets()).size).toBe(0);
  });
});
