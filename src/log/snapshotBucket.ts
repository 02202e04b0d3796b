/**
 * Snapshots where every node can reach them: a JetStream object store
 * beside the log, one object per snapshot (see storage/snapshotFormat.ts
 * for the bytes and the checks).
 *
 * - `write()` hashes the header and the files' prefixes once, then streams
 *   the same bytes into the store with the size and digest in the object's
 *   metadata. The object store publishes an object's metadata only after
 *   all its chunks, so a writer that dies mid-way leaves no object, only
 *   orphan chunks (the store cleans up only in a put() that fails while its
 *   process lives). The leader's compactor purges them: chunkSets(),
 *   namedChunkSets() and purgeChunkSet() serve its sweep
 *   (replica/orphanChunkSweep.ts), which takes a set only once it has been
 *   unnamed and unchanged for minutes, so never an upload still writing.
 * - `read()` streams an object, hands the file bytes to a sink as they come,
 *   and throws SnapshotCorruptError unless the size, the digest, the header
 *   and the metadata all agree. A stalled read (chunks missing) times out.
 *
 * Files are append-only, so the bytes [0, length-at-seq) of each file never
 * change after `seq`: reading them while the node keeps applying entries
 * still gives exactly the files at `seq`. That is what lets the leader
 * stream a snapshot asynchronously instead of pausing to copy 100 MB.
 */
import * as fs from "fs";
import type { NatsConnection } from "@nats-io/nats-core";
import { jetstreamManager } from "@nats-io/jetstream";
import { Objm, StorageType, type ObjectInfo, type ObjectStore } from "@nats-io/obj";
import { FILE_COUNT } from "../protocol/files";
import {
  DigestCheck,
  decodeHeader,
  encodeHeader,
  HEADER_PREFIX_BYTES,
  metaFromRecord,
  metaToRecord,
  objectSize,
  snapshotObjectName,
  SnapshotCorruptError,
  type SnapshotHeader,
  type SnapshotMeta,
} from "../storage/snapshotFormat";
import { createHash } from "crypto";
import { type Logger, silentLogger } from "./logger";

export interface SnapshotBucketOptions {
  bucket: string;
  replicas: number;
  logger?: Logger;
  /** Bytes per object-store chunk (one JetStream message each). Default 512 KiB, below NATS's 1 MiB max payload. */
  chunkBytes?: number;
  /** A read that receives nothing for this long is abandoned as partial. Default 10 s. */
  readIdleTimeoutMs?: number;
  /** Largest snapshot header accepted on read (the state JSON). Default 256 MiB. */
  maxHeaderBytes?: number;
}

/** A complete snapshot object as listed: its name, what its metadata promises, when it was written. */
export interface StoredSnapshotInfo {
  name: string;
  meta: SnapshotMeta;
  mtime: Date;
}

/** Where read() puts the files' bytes: `write(index, chunk)` in order, file by file. */
export interface SnapshotFileSink {
  write(index: number, chunk: Uint8Array): void;
}

/** How write() gets the bytes of file `index` in [offset, offset + length). */
export type FileRangeReader = (index: number, offset: number, length: number) => Promise<Uint8Array>;

const READ_SLICE_BYTES = 1 << 20;

export class SnapshotBucket {
  private constructor(
    private readonly nc: NatsConnection,
    private readonly store: ObjectStore,
    private readonly opts: Required<Omit<SnapshotBucketOptions, "logger">> & { logger: Logger },
  ) {}

  /** Opens the bucket, creating it if missing; retries for up to `readyTimeoutMs` (default 30 s) while JetStream is not ready. */
  static async open(nc: NatsConnection, opts: SnapshotBucketOptions & { readyTimeoutMs?: number }): Promise<SnapshotBucket> {
    const objm = new Objm(nc);
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
    let store: ObjectStore | undefined;
    for (let attempt = 0; store === undefined; attempt++) {
      try {
        store = await objm.create(opts.bucket, { storage: StorageType.File, replicas: opts.replicas });
      } catch (err) {
        // Another node may have created it at the same moment: open theirs.
        store = await objm.open(opts.bucket).catch(() => undefined);
        if (store === undefined && (nc.isClosed() || Date.now() >= deadline)) throw err;
        if (store === undefined) {
          (opts.logger ?? silentLogger).warn({ err: (err as Error).message, attempt }, "JetStream not ready for the snapshot bucket; retrying");
          await new Promise((r) => setTimeout(r, Math.min(250 * 2 ** Math.min(attempt, 3), 2000)));
        }
      }
    }
    return new SnapshotBucket(nc, store, {
      bucket: opts.bucket,
      replicas: opts.replicas,
      logger: opts.logger ?? silentLogger,
      chunkBytes: opts.chunkBytes ?? 512 * 1024,
      readIdleTimeoutMs: opts.readIdleTimeoutMs ?? 10_000,
      maxHeaderBytes: opts.maxHeaderBytes ?? 256 * 1024 * 1024,
    });
  }

  /** The complete snapshots of log `logId`, newest (highest sequence) first. Objects without valid metadata are not snapshots. */
  async list(logId: string): Promise<StoredSnapshotInfo[]> {
    const infos = await this.store.list();
    const found: StoredSnapshotInfo[] = [];
    for (const info of infos) {
      if (info.deleted) continue;
      const meta = metaFromRecord(info.metadata);
      if (!meta || meta.logId !== logId || info.name !== snapshotObjectName(meta.seq)) continue;
      found.push({ name: info.name, meta, mtime: new Date(info.mtime) });
    }
    return found.sort((a, b) => b.meta.seq - a.meta.seq);
  }

  /**
   * Stores a snapshot of `header.state` and the files' first
   * `header.lengths[i]` bytes. Returns what its metadata says.
   */
  async write(header: SnapshotHeader, readRange: FileRangeReader): Promise<SnapshotMeta> {
    const head = encodeHeader(header);
    const sizeBytes = objectSize(head.length, header.lengths);
    const hash = createHash("sha256").update(head);
    for await (const chunk of fileChunks(header.lengths, readRange)) hash.update(chunk);
    const meta: SnapshotMeta = { logId: header.logId, seq: header.seq, sizeBytes, sha256: hash.digest("hex") };

    const source = (async function* () {
      yield head;
      yield* fileChunks(header.lengths, readRange);
    })();
    const rs = new ReadableStream<Uint8Array>({
      async pull(controller) {
        const next = await source.next();
        if (next.done) controller.close();
        else controller.enqueue(next.value);
      },
    });
    const info = await this.store.put(
      { name: snapshotObjectName(header.seq), metadata: metaToRecord(meta), options: { max_chunk_size: this.opts.chunkBytes } },
      rs,
    );
    if (info.size !== sizeBytes) throw new Error(`snapshot ${header.seq}: stored ${info.size} bytes, expected ${sizeBytes}`);
    return meta;
  }

  /**
   * Reads and verifies one snapshot. File bytes go to `sink` (or nowhere)
   * as they arrive; the caller must not use them unless this resolves.
   * Throws SnapshotCorruptError for anything that does not add up.
   */
  async read(snap: StoredSnapshotInfo, sink?: SnapshotFileSink): Promise<SnapshotHeader> {
    const result = await this.store.get(snap.name);
    if (result === null) throw new SnapshotCorruptError(`snapshot ${snap.name} is gone`);
    const meta = metaFromRecord(result.info.metadata);
    if (!meta || meta.sha256 !== snap.meta.sha256 || meta.seq !== snap.meta.seq) {
      await result.data.cancel().catch(() => undefined);
      throw new SnapshotCorruptError(`snapshot ${snap.name} changed since it was listed`);
    }
    if (result.info.size !== meta.sizeBytes) {
      await result.data.cancel().catch(() => undefined);
      throw new SnapshotCorruptError(`snapshot ${snap.name}: the store holds ${result.info.size} bytes, its metadata says ${meta.sizeBytes}`);
    }
    const check = new DigestCheck(meta);
    const parser = new ObjectParser(meta, this.opts.maxHeaderBytes, sink);
    const reader = result.data.getReader();
    try {
      for (;;) {
        const next = await withIdleTimeout(reader.read(), this.opts.readIdleTimeoutMs, snap.name);
        if (next.done) break;
        check.update(next.value);
        parser.push(next.value);
      }
      check.finish();
    } catch (err) {
      await reader.cancel().catch(() => undefined);
      if (err instanceof SnapshotCorruptError) throw err;
      throw new SnapshotCorruptError(`snapshot ${snap.name} could not be read: ${(err as Error).message}`, { cause: err });
    }
    const storeError = await result.error;
    if (storeError) throw new SnapshotCorruptError(`snapshot ${snap.name}: ${storeError.message}`);
    return parser.finish();
  }

  /**
   * Checks, without downloading it, that a snapshot is stored whole: its
   * object's size is the one its metadata promises, and every chunk that
   * size needs is in the stream. (The digest is checked by every reader;
   * reading 100 MB back on the leader was measured to stall serving for
   * seconds, see docs/design.md §7.1.) Throws SnapshotCorruptError.
   */
  async checkStored(snap: StoredSnapshotInfo): Promise<void> {
    const info = await this.store.info(snap.name);
    if (info === null || info.deleted) throw new SnapshotCorruptError(`snapshot ${snap.name} is gone`);
    const meta = metaFromRecord(info.metadata);
    if (!meta || meta.sha256 !== snap.meta.sha256 || meta.seq !== snap.meta.seq) throw new SnapshotCorruptError(`snapshot ${snap.name} changed since it was listed`);
    if (info.size !== meta.sizeBytes) throw new SnapshotCorruptError(`snapshot ${snap.name}: the store holds ${info.size} bytes, its metadata says ${meta.sizeBytes}`);
    const chunkBytes = info.options?.max_chunk_size ?? 0;
    const need = chunkBytes > 0 ? Math.ceil(info.size / chunkBytes) : info.chunks;
    const subject = this.chunkSubject(info.nuid);
    const jsm = await jetstreamManager(this.nc);
    const stream = await jsm.streams.info(this.streamName, { subjects_filter: subject });
    const stored = stream.state.subjects?.[subject] ?? 0;
    if (info.chunks !== need || stored !== need) {
      throw new SnapshotCorruptError(`snapshot ${snap.name}: ${stored} of ${need} chunks stored (its info says ${info.chunks})`);
    }
  }

  async delete(name: string): Promise<void> {
    await this.store.delete(name);
    // The store's delete purges the chunks but leaves a "deleted" record
    // under the object's name. Snapshot names are unique per sequence, so
    // one record stayed for every snapshot ever taken, and every list()
    // (the compactor's, every --compact-check-ms) read them all.
    const jsm = await jetstreamManager(this.nc);
    await jsm.streams.purge(this.streamName, { filter: metaSubject(this.opts.bucket, name) });
  }

  /**
   * Every chunk set in the bucket's stream: the nuid under
   * `$O.<bucket>.C.<nuid>` and how many chunk messages it holds. One
   * stream-info request (paged by the server for very many subjects).
   */
  async chunkSets(): Promise<Map<string, number>> {
    const prefix = this.chunkSubject("");
    const jsm = await jetstreamManager(this.nc);
    const stream = await jsm.streams.info(this.streamName, { subjects_filter: `${prefix}>` });
    const sets = new Map<string, number>();
    for (const [subject, count] of Object.entries(stream.state.subjects ?? {})) {
      if (subject.startsWith(prefix) && count > 0) sets.set(subject.slice(prefix.length), count);
    }
    return sets;
  }

  /**
   * The chunk sets the bucket's live objects name, whatever log they
   * belong to: a snapshot of another log is still somebody's object. A
   * deleted object's record does not count (its chunks are purged with it).
   */
  async namedChunkSets(): Promise<Set<string>> {
    const named = new Set<string>();
    for (const info of await this.store.list()) {
      if (!info.deleted && typeof info.nuid === "string" && info.nuid !== "") named.add(info.nuid);
    }
    return named;
  }

  /** Purges every chunk of set `nuid`; returns how many messages went. */
  async purgeChunkSet(nuid: string): Promise<number> {
    const jsm = await jetstreamManager(this.nc);
    const { purged } = await jsm.streams.purge(this.streamName, { filter: this.chunkSubject(nuid) });
    return purged;
  }

  /** The raw object info (for tests and diagnostics). */
  async objectInfo(name: string): Promise<ObjectInfo | null> {
    return this.store.info(name);
  }

  /** The JetStream stream behind the bucket (tests corrupt objects through it). */
  get streamName(): string {
    return `OBJ_${this.opts.bucket}`;
  }

  /** The subject of chunk set `nuid`, as the object store names it. */
  chunkSubject(nuid: string): string {
    return `$O.${this.opts.bucket}.C.${nuid}`;
  }
}

/** The subject of an object's metadata record: `$O.<bucket>.M.<name in padded base64url>`, as the object store names it. */
export function metaSubject(bucket: string, name: string): string {
  return `$O.${bucket}.M.${Buffer.from(name, "utf8").toString("base64").replace(/\+/g, "-").replace(/\//g, "_")}`;
}

/** Each file's prefix, in index order, in slices of at most 1 MiB. */
async function* fileChunks(lengths: readonly number[], readRange: FileRangeReader): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < FILE_COUNT; i++) {
    const length = lengths[i] as number;
    for (let offset = 0; offset < length; offset += READ_SLICE_BYTES) {
      const n = Math.min(READ_SLICE_BYTES, length - offset);
      const chunk = await readRange(i, offset, n);
      if (chunk.length !== n) throw new Error(`file_${i}: read ${chunk.length} bytes at ${offset}, expected ${n}`);
      yield chunk;
    }
  }
}

/** A FileRangeReader over files in a directory, `pathOf(index)`. */
export function fileRangeReader(pathOf: (index: number) => string): FileRangeReader {
  return async (index, offset, length) => {
    const handle = await fs.promises.open(pathOf(index), "r");
    try {
      const buf = Buffer.alloc(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(buf, done, length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return done === length ? buf : buf.subarray(0, done);
    } finally {
      await handle.close();
    }
  };
}

function withIdleTimeout<T>(p: Promise<T>, ms: number, name: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new SnapshotCorruptError(`snapshot ${name}: no data for ${ms} ms (chunks missing?)`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Splits the object's bytes into the header and each file's bytes as they stream in. */
class ObjectParser {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private headerBytes: number | undefined;
  private header: SnapshotHeader | undefined;
  private file = 0;
  private fileOffset = 0;

  constructor(
    private readonly meta: SnapshotMeta,
    private readonly maxHeaderBytes: number,
    private readonly sink: SnapshotFileSink | undefined,
  ) {}

  push(chunk: Uint8Array): void {
    let data = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (this.header === undefined) {
      this.pending.push(data);
      this.pendingBytes += data.length;
      if (this.headerBytes === undefined) {
        if (this.pendingBytes < HEADER_PREFIX_BYTES) return;
        this.headerBytes = Buffer.concat(this.pending).readUInt32BE(0);
        if (this.headerBytes > this.maxHeaderBytes) {
          throw new SnapshotCorruptError(`snapshot header of ${this.headerBytes} bytes is over the ${this.maxHeaderBytes} limit`);
        }
      }
      const need = HEADER_PREFIX_BYTES + this.headerBytes;
      if (this.pendingBytes < need) return;
      const all = Buffer.concat(this.pending);
      this.pending = [];
      this.header = decodeHeader(all.subarray(HEADER_PREFIX_BYTES, need), this.meta);
      data = all.subarray(need);
    }
    this.files(data);
  }

  private files(data: Buffer): void {
    const lengths = this.header!.lengths;
    let at = 0;
    while (at < data.length) {
      while (this.file < FILE_COUNT && this.fileOffset === lengths[this.file]) {
        this.file++;
        this.fileOffset = 0;
      }
      if (this.file >= FILE_COUNT) throw new SnapshotCorruptError("snapshot has bytes past its last file");
      const n = Math.min(data.length - at, (lengths[this.file] as number) - this.fileOffset);
      this.sink?.write(this.file, data.subarray(at, at + n));
      this.fileOffset += n;
      at += n;
    }
  }

  finish(): SnapshotHeader {
    if (this.header === undefined) throw new SnapshotCorruptError("snapshot ended inside its header");
    return this.header;
  }
}
