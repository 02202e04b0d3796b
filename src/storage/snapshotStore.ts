/**
 * A node's state snapshot: the state machine at log sequence `seq`, written
 * beside the file checkpoint so a restart replays only the log after it.
 * Written atomically (temporary file, fsync, rename, fsync of the
 * directory). It is an optimisation: a missing, unreadable or mismatched
 * snapshot only means replaying the whole log.
 */
import * as fs from "fs";
import * as path from "path";
import type { StateSnapshot } from "../state";

const SNAPSHOT_FILE = "state-snapshot.json";
const SNAPSHOT_TMP = "state-snapshot.json.tmp";

export interface StoredSnapshot {
  logId: string;
  seq: number;
  state: StateSnapshot;
}

export function writeSnapshot(dataDir: string, snapshot: StoredSnapshot): void {
  const tmp = path.join(dataDir, SNAPSHOT_TMP);
  const fd = fs.openSync(tmp, "w", 0o644);
  try {
    // writeSync may write less than asked (a disk near full): loop, so a
    // short write is never renamed into place as a truncated snapshot.
    const data = Buffer.from(JSON.stringify(snapshot), "utf8");
    for (let done = 0; done < data.length; ) done += fs.writeSync(fd, data, done, data.length - done);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, path.join(dataDir, SNAPSHOT_FILE));
  const dirFd = fs.openSync(dataDir, "r");
  try {
    fs.fsyncSync(dirFd);
  } finally {
    fs.closeSync(dirFd);
  }
}

/** The stored snapshot, or undefined if there is none or it cannot be read. */
export function readSnapshot(dataDir: string): StoredSnapshot | undefined {
  const file = path.join(dataDir, SNAPSHOT_FILE);
  if (!fs.existsSync(file)) return undefined;
  try {
    const parsed = JSON.parse(fs.readFileSync(file, "utf8")) as Partial<StoredSnapshot>;
    if (typeof parsed.logId !== "string" || typeof parsed.seq !== "number" || typeof parsed.state !== "object" || parsed.state === null) {
      return undefined;
    }
    return parsed as StoredSnapshot;
  } catch {
    return undefined;
  }
}
