/**
 * A node's copies of `file_0` … `file_99` and the durable record of which log
 * sequence they reflect.
 *
 * Layout under the data directory:
 *
 *   files/file_0 … files/file_99   the guarded files (append-only)
 *   checkpoint.json                { version, logId, seq, lengths[100] }
 *
 * The checkpoint says: "the files, cut to `lengths`, are exactly the result
 * of applying log entries 1..seq of log `logId`". It is the only durable
 * claim; bytes past a file's checkpoint length were written after the last
 * checkpoint by a process that may have crashed mid-way, so `open()` cuts
 * them off and the caller replays the log from `seq + 1`. That is what makes
 * a crash in the middle of an append neither lose nor double bytes.
 *
 * Ordering that keeps the claim true (`flush()`): fsync every touched file
 * first, then write the checkpoint to a temporary file, fsync it, rename it
 * over the old one and fsync the directory. The checkpoint therefore never
 * claims bytes that are not on disk.
 *
 * The lengths recorded are those at the last `markApplied(seq)`, not the
 * current ones, so that a flush between the appends of one entry and its
 * `markApplied` cannot record half an entry under the previous sequence.
 *
 * Paths are built from an index only (`fileName`), never from user input.
 */
import * as fs from "fs";
import * as path from "path";
import { FILE_COUNT, fileName } from "../protocol/files";
import { assert, InvariantError } from "../util/assert";
import { type Logger, silentLogger } from "../log/logger";
import { processAlive } from "../util/processAlive";
import { INCOMING_DIR } from "./incomingFiles";

export const CHECKPOINT_VERSION = 1;
const CHECKPOINT_FILE = "checkpoint.json";
const CHECKPOINT_TMP = "checkpoint.json.tmp";
const FILES_DIR = "files";

export interface Checkpoint {
  version: typeof CHECKPOINT_VERSION;
  /** Id of the log (JetStream stream instance) these files were built from; null before the first one is known. */
  logId: string | null;
  /** Last log sequence applied to the files. */
  seq: number;
  /** Length of each file at `seq`. */
  lengths: number[];
}

export interface FileStoreOptions {
  logger?: Logger;
}

function emptyCheckpoint(): Checkpoint {
  return { version: CHECKPOINT_VERSION, logId: null, seq: 0, lengths: new Array<number>(FILE_COUNT).fill(0) };
}

function isLength(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function parseCheckpoint(text: string, where: string): Checkpoint {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new InvariantError(`checkpoint ${where} is not valid JSON: ${(err as Error).message}`);
  }
  const c = raw as Partial<Checkpoint> | null;
  if (c === null || typeof c !== "object") throw new InvariantError(`checkpoint ${where} is not an object`);
  if (c.version !== CHECKPOINT_VERSION) {
    throw new InvariantError(`checkpoint ${where} has unsupported version ${JSON.stringify(c.version)}`);
  }
  if (c.logId !== null && typeof c.logId !== "string") throw new InvariantError(`checkpoint ${where} has a bad logId`);
  if (!isLength(c.seq)) throw new InvariantError(`checkpoint ${where} has a bad seq ${JSON.stringify(c.seq)}`);
  if (!Array.isArray(c.lengths) || c.lengths.length !== FILE_COUNT || !c.lengths.every(isLength)) {
    throw new InvariantError(`checkpoint ${where} must hold ${FILE_COUNT} non-negative lengths`);
  }
  return { version: CHECKPOINT_VERSION, logId: c.logId, seq: c.seq, lengths: [...c.lengths] };
}

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function sameLengths(a: readonly number[], b: readonly number[]): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return a.length === b.length;
}

const LOCK_FILE = "LOCK";

/**
 * Two processes writing one data directory would corrupt it, so a node
 * claims it with a pid file. A lock left by a process that no longer runs
 * (a crash) is taken over; one held by a live process is refused. The same
 * process may reopen (tests simulate a crash that way). Best effort against
 * misconfiguration, not a defence against a determined race.
 */
function lockDataDir(dataDir: string, log: Logger): void {
  const lockPath = path.join(dataDir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(lockPath, `${process.pid}\n`, { flag: "wx" });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const holder = Number(fs.readFileSync(lockPath, "utf8").trim());
    if (holder === process.pid) return;
    if (Number.isInteger(holder) && holder > 0 && processAlive(holder)) {
      throw new Error(`data directory ${dataDir} is in use by process ${holder}: two nodes must never share a data directory`);
    }
    log.warn({ dataDir, stalePid: holder }, "taking over the data directory lock of a process that is gone");
    fs.rmSync(lockPath, { force: true });
  }
  throw new Error(`could not lock data directory ${dataDir}`);
}

function unlockDataDir(dataDir: string): void {
  const lockPath = path.join(dataDir, LOCK_FILE);
  try {
    if (Number(fs.readFileSync(lockPath, "utf8").trim()) === process.pid) fs.rmSync(lockPath, { force: true });
  } catch {
    // Already gone: nothing to release.
  }
}

export class FileStore {
  /** What was loaded from disk at open (a copy; never changes). */
  readonly checkpoint: Readonly<Checkpoint>;
  readonly dataDir: string;

  private readonly log: Logger;
  private readonly fds: number[];
  /** Current in-memory lengths (include bytes of entries not yet marked applied). */
  private readonly current: number[];
  /** Lengths at the last markApplied: what the next checkpoint records. */
  private applied: number[];
  private seq: number;
  private id: string | null;
  /** Files written since the last fsync. */
  private readonly dirty = new Set<number>();
  /** What the checkpoint on disk says now. */
  private durable: Checkpoint;
  private closed = false;

  private constructor(dataDir: string, loaded: Checkpoint, fds: number[], log: Logger) {
    this.dataDir = dataDir;
    this.log = log;
    this.fds = fds;
    this.checkpoint = Object.freeze({ ...loaded, lengths: Object.freeze([...loaded.lengths]) as number[] });
    this.current = [...loaded.lengths];
    this.applied = [...loaded.lengths];
    this.seq = loaded.seq;
    this.id = loaded.logId;
    this.durable = { ...loaded, lengths: [...loaded.lengths] };
  }

  /**
   * Opens (creating when missing) the data directory, loads the checkpoint
   * and cuts every file back to its checkpoint length. Throws if a file is
   * shorter than the checkpoint says: bytes the node acknowledged as applied
   * are gone, and carrying on would silently diverge from the log.
   */
  static open(dataDir: string, opts: FileStoreOptions = {}): FileStore {
    const log = opts.logger ?? silentLogger;
    const filesDir = path.join(dataDir, FILES_DIR);
    fs.mkdirSync(filesDir, { recursive: true });
    lockDataDir(dataDir, log);

    // A snapshot download or install that never finished: its staged files
    // are not part of the state (the checkpoint rules), only disk space, as
    // much as a whole snapshot, that nothing else would ever free.
    fs.rmSync(path.join(dataDir, INCOMING_DIR), { recursive: true, force: true });

    // A tmp checkpoint is a write that never got renamed: the old one rules.
    const tmp = path.join(dataDir, CHECKPOINT_TMP);
    if (fs.existsSync(tmp)) {
      log.warn({ tmp }, "removing unfinished checkpoint write");
      fs.rmSync(tmp, { force: true });
    }

    const cpPath = path.join(dataDir, CHECKPOINT_FILE);
    let loaded: Checkpoint;
    if (fs.existsSync(cpPath)) {
      loaded = parseCheckpoint(fs.readFileSync(cpPath, "utf8"), cpPath);
    } else {
      loaded = emptyCheckpoint();
    }

    const fds: number[] = [];
    let created = false;
    let truncated = false;
    try {
      for (let i = 0; i < FILE_COUNT; i++) {
        const p = path.join(filesDir, fileName(i));
        const want = loaded.lengths[i] as number;
        let st = fs.statSync(p, { throwIfNoEntry: false });
        if (st === undefined) {
          if (want > 0) {
            throw new InvariantError(
              `data directory ${dataDir} lost bytes: ${fileName(i)} is missing but checkpoint (seq ${loaded.seq}) says it has ${want} bytes`,
            );
          }
          created = true;
        } else if (!st.isFile()) {
          throw new InvariantError(`${p} is not a regular file`);
        }
        // O_RDWR without O_APPEND: on Linux pwrite ignores the position under O_APPEND.
        const fd = fs.openSync(p, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
        fds.push(fd);
        st = fs.fstatSync(fd);
        if (st.size < want) {
          throw new InvariantError(
            `data directory ${dataDir} lost bytes: ${fileName(i)} has ${st.size} bytes but checkpoint (seq ${loaded.seq}) says ${want}`,
          );
        }
        if (st.size > want) {
          log.warn(
            { file: fileName(i), size: st.size, checkpointLength: want, seq: loaded.seq },
            "truncating bytes written after the last checkpoint",
          );
          fs.ftruncateSync(fd, want);
          fs.fsyncSync(fd);
          truncated = true;
          const after = fs.fstatSync(fd).size;
          if (after !== want) {
            throw new InvariantError(`${fileName(i)}: size ${after} after truncation to ${want}`);
          }
        }
      }
      if (created) fsyncDir(filesDir);
      if (created || truncated) fsyncDir(dataDir);
    } catch (err) {
      for (const fd of fds) fs.closeSync(fd);
      unlockDataDir(dataDir);
      throw err;
    }
    log.info({ dataDir, logId: loaded.logId, seq: loaded.seq }, "file store opened");
    return new FileStore(dataDir, loaded, fds, log);
  }

  /** The log sequence the in-memory files reflect. */
  get appliedSeq(): number {
    return this.seq;
  }

  get logId(): string | null {
    return this.id;
  }

  /** Current lengths, including bytes appended since the last markApplied. */
  lengths(): number[] {
    return [...this.current];
  }

  length(index: number): number {
    this.checkIndex(index);
    return this.current[index] as number;
  }

  /** Writes `data` at the current end of file `index`, synchronously. */
  append(index: number, data: Uint8Array): void {
    this.checkOpen();
    this.checkIndex(index);
    if (data.length === 0) return;
    const fd = this.fds[index] as number;
    const start = this.current[index] as number;
    let done = 0;
    try {
      while (done < data.length) {
        const n = fs.writeSync(fd, data, done, data.length - done, start + done);
        assert(n > 0, () => `${fileName(index)}: write made no progress`);
        done += n;
      }
    } catch (err) {
      // Leave no partial bytes behind the in-memory length (best effort; open() would cut them anyway).
      try {
        fs.ftruncateSync(fd, start);
      } catch (truncErr) {
        this.log.error({ err: truncErr, file: fileName(index) }, "could not undo a failed append");
      }
      throw err;
    }
    this.current[index] = start + data.length;
    this.dirty.add(index);
  }

  /**
   * The in-memory files now reflect log sequence `seq` (all appends of the
   * entries up to `seq` are done). Sequences only move forward; marking the
   * same sequence again is allowed only if nothing was appended in between.
   */
  markApplied(seq: number): void {
    this.checkOpen();
    assert(Number.isSafeInteger(seq) && seq >= 0, () => `markApplied: bad seq ${seq}`);
    if (seq === this.seq) {
      assert(sameLengths(this.current, this.applied), () => `markApplied(${seq}) again after appending: seq must increase`);
      return;
    }
    assert(seq > this.seq, () => `markApplied: seq went backwards from ${this.seq} to ${seq}`);
    this.seq = seq;
    this.applied = [...this.current];
  }

  /** Records the log id; it reaches disk with the next checkpoint. */
  setLogId(id: string): void {
    this.checkOpen();
    assert(typeof id === "string" && id.length > 0, "setLogId: empty id");
    this.id = id;
  }

  /**
   * Makes the applied state durable: fsyncs every file touched since the last
   * flush, then writes the checkpoint atomically. A no-op when nothing changed.
   */
  flush(): void {
    this.checkOpen();
    for (const index of this.dirty) fs.fsyncSync(this.fds[index] as number);
    this.dirty.clear();
    const next: Checkpoint = { version: CHECKPOINT_VERSION, logId: this.id, seq: this.seq, lengths: [...this.applied] };
    if (next.seq === this.durable.seq && next.logId === this.durable.logId && sameLengths(next.lengths, this.durable.lengths)) {
      return;
    }
    for (let i = 0; i < FILE_COUNT; i++) {
      assert((next.lengths[i] as number) <= (this.current[i] as number), () => `checkpoint would claim more than ${fileName(i)} holds`);
    }
    assert(next.seq >= this.durable.seq || next.logId !== this.durable.logId, () => `checkpoint seq would go backwards`);
    this.writeCheckpoint(next);
  }

  /** Current content of file `index` (up to its in-memory length): from `offset`, at most `maxBytes`. */
  read(index: number, offset = 0, maxBytes = Infinity): Buffer {
    this.checkOpen();
    this.checkIndex(index);
    const end = this.current[index] as number;
    const start = Math.min(Math.max(0, offset), end);
    const len = Math.min(end - start, maxBytes);
    const buf = Buffer.alloc(len);
    let done = 0;
    while (done < len) {
      const n = fs.readSync(this.fds[index] as number, buf, done, len - done, start + done);
      if (n === 0) throw new InvariantError(`${fileName(index)}: EOF at ${start + done}, expected ${end} bytes`);
      done += n;
    }
    return buf;
  }


  /**
   * Wipes the files for a different log: the data directory belonged to a log
   * that no longer exists (its id differs from the live stream's). The
   * checkpoint is written first ({logId, seq 0, lengths 0}), then the files
   * are truncated, so a crash in between leaves files longer than the
   * checkpoint, which open() cuts back: never a "lost bytes" state.
   */
  resetForNewLog(logId: string | null): void {
    this.checkOpen();
    this.log.warn({ from: this.id, to: logId, seq: this.seq }, "wiping files for a new log");
    const zero = new Array<number>(FILE_COUNT).fill(0);
    this.writeCheckpoint({ version: CHECKPOINT_VERSION, logId, seq: 0, lengths: zero });
    for (let i = 0; i < FILE_COUNT; i++) {
      const fd = this.fds[i] as number;
      fs.ftruncateSync(fd, 0);
      fs.fsyncSync(fd);
      this.current[i] = 0;
    }
    this.dirty.clear();
    this.applied = [...zero];
    this.seq = 0;
    this.id = logId;
  }

  /** The path of file `index` (readers of a file's prefix open it themselves). */
  pathOf(index: number): string {
    this.checkIndex(index);
    return path.join(this.dataDir, FILES_DIR, fileName(index));
  }

  /**
   * Replaces every file with the verified, fsynced copy staged at
   * `incoming.pathOf(i)` (a snapshot's files at log sequence `seq`), then
   * writes the checkpoint. Safe against a crash at any step: until the new
   * checkpoint is on disk the old one rules, and its lengths are a prefix
   * of the new files (the files of one log only ever grow, and `seq` is past
   * the old checkpoint), so open() cuts the new files back to exactly the
   * old state.
   */
  installFiles(incoming: { pathOf(index: number): string }, logId: string, seq: number, lengths: readonly number[]): void {
    this.checkOpen();
    assert(seq > this.seq, () => `installFiles: snapshot ${seq} is not past the files' ${this.seq}`);
    assert(this.id === null || this.id === logId, () => `installFiles: snapshot of log ${logId}, files of ${String(this.id)}`);
    assert(lengths.length === FILE_COUNT, "installFiles: need 100 lengths");
    for (let i = 0; i < FILE_COUNT; i++) {
      const size = fs.statSync(incoming.pathOf(i)).size;
      assert(size === lengths[i], () => `installFiles: staged ${fileName(i)} has ${size} bytes, the snapshot ${String(lengths[i])}`);
      assert((lengths[i] as number) >= (this.applied[i] as number), () => `installFiles: ${fileName(i)} would shrink below the checkpoint`);
    }
    this.flush();
    const filesDir = path.join(this.dataDir, FILES_DIR);
    for (let i = 0; i < FILE_COUNT; i++) fs.renameSync(incoming.pathOf(i), path.join(filesDir, fileName(i)));
    fsyncDir(filesDir);
    for (let i = 0; i < FILE_COUNT; i++) {
      fs.closeSync(this.fds[i] as number);
      this.fds[i] = fs.openSync(path.join(filesDir, fileName(i)), fs.constants.O_RDWR);
      this.current[i] = lengths[i] as number;
    }
    this.dirty.clear();
    this.applied = [...lengths];
    this.seq = seq;
    this.id = logId;
    this.writeCheckpoint({ version: CHECKPOINT_VERSION, logId, seq, lengths: [...lengths] });
    this.log.info({ seq, logId }, "installed the files of a snapshot");
  }

  /** Flushes and closes the files. Further calls throw. */
  close(): void {
    if (this.closed) return;
    try {
      this.flush();
    } finally {
      this.closed = true;
      for (const fd of this.fds) fs.closeSync(fd);
      unlockDataDir(this.dataDir);
    }
  }

  /**
   * Closes the files without writing a checkpoint: for a process that can no
   * longer trust its state (an invariant broke) and for tests simulating a
   * crash. The next open() cuts the files back to the last checkpoint.
   */
  abort(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of this.fds) fs.closeSync(fd);
    unlockDataDir(this.dataDir);
  }

  private writeCheckpoint(cp: Checkpoint): void {
    const tmp = path.join(this.dataDir, CHECKPOINT_TMP);
    const fd = fs.openSync(tmp, "w", 0o644);
    try {
      const buf = Buffer.from(JSON.stringify(cp) + "\n", "utf8");
      let done = 0;
      while (done < buf.length) done += fs.writeSync(fd, buf, done, buf.length - done, done);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, path.join(this.dataDir, CHECKPOINT_FILE));
    fsyncDir(this.dataDir);
    this.durable = { ...cp, lengths: [...cp.lengths] };
  }

  private checkIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= FILE_COUNT) {
      throw new InvariantError(`file index out of range: ${index}`);
    }
  }

  private checkOpen(): void {
    if (this.closed) throw new InvariantError("file store is closed");
  }
}
