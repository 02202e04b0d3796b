/**
 * A staging area for the files of a snapshot being downloaded:
 * `<data>/incoming/file_0 … file_99`. Bytes land here while the snapshot is
 * still unverified; only once the whole object checked out does
 * `FileStore.installFiles()` move them over the live files. A crash at any
 * point leaves the live files and their checkpoint as they were (an
 * unfinished staging area is wiped by the next start).
 */
import * as fs from "fs";
import * as path from "path";
import { FILE_COUNT, fileName } from "../protocol/files";
import { assert } from "../util/assert";
import type { SnapshotFileSink } from "../log/snapshotBucket";

export const INCOMING_DIR = "incoming";

export class IncomingFiles implements SnapshotFileSink {
  readonly dir: string;
  private readonly fds: number[] = [];
  private readonly lengths = new Array<number>(FILE_COUNT).fill(0);
  private closed = false;

  /** Wipes any earlier staging area under `dataDir` and creates 100 empty files. */
  constructor(dataDir: string) {
    this.dir = path.join(dataDir, INCOMING_DIR);
    fs.rmSync(this.dir, { recursive: true, force: true });
    fs.mkdirSync(this.dir, { recursive: true });
    for (let i = 0; i < FILE_COUNT; i++) this.fds.push(fs.openSync(this.pathOf(i), "w", 0o644));
  }

  pathOf(index: number): string {
    return path.join(this.dir, fileName(index));
  }

  write(index: number, chunk: Uint8Array): void {
    assert(!this.closed, "incoming files written after close");
    const fd = this.fds[index] as number;
    let done = 0;
    while (done < chunk.length) done += fs.writeSync(fd, chunk, done, chunk.length - done, (this.lengths[index] as number) + done);
    this.lengths[index] = (this.lengths[index] as number) + chunk.length;
  }

  /** Makes every staged file durable and closes them; returns their lengths. */
  finish(): number[] {
    for (const fd of this.fds) {
      fs.fsyncSync(fd);
      fs.closeSync(fd);
    }
    this.closed = true;
    return [...this.lengths];
  }

  /** Drops the staging area (after a failed or corrupt download). */
  discard(): void {
    if (!this.closed) for (const fd of this.fds) fs.closeSync(fd);
    this.closed = true;
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
