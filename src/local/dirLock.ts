/**
 * The lock `dlm up` takes on its `--dir` before it starts anything.
 *
 * Two `dlm up` on one directory would start a second nats-server on the
 * live JetStream store and rewrite its configuration before failing, so the
 * first claims the directory with a pid file created exclusively (`wx`),
 * and a second one fails before it touches anything. A lock left by a
 * process that no longer runs (a crash, SIGKILL) is taken over. Like the
 * node's data-directory lock (src/storage/fileStore.ts), it guards against
 * a mistake, not against a determined race between two processes started
 * in the same millisecond on a stale lock.
 */
import * as fs from "fs";
import * as path from "path";
import { processAlive } from "../util/processAlive";

/** The lock file's name inside the directory. */
export const UP_LOCK_FILE = "dlm-up.pid";

/** Exit code of `dlm up` when its --dir is in use (docs/operations.md §8). */
export const DIR_IN_USE_EXIT_CODE = 6;

export class DirInUseError extends Error {
  override name = "DirInUseError";
  /** Read by the CLI's entry point (src/cli/main.ts). */
  readonly exitCode = DIR_IN_USE_EXIT_CODE;
  constructor(
    readonly dir: string,
    readonly pid: number,
  ) {
    super(
      `${dir} is in use by another dlm up (pid ${pid}); nothing was started or changed. ` +
        `Stop that one (Ctrl-C) or choose another --dir.`,
    );
  }
}

export interface DirLock {
  readonly path: string;
  /** Removes the lock file if it is still this process's. Idempotent. */
  release(): void;
}

function readPid(lockPath: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(lockPath, "utf8").trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/**
 * Creates `dir` if needed and claims it for this process. Throws
 * DirInUseError if a live process holds it. The lock is also removed when
 * the process exits normally; after a crash the next claim takes it over.
 */
export function lockDirectory(dir: string, file = UP_LOCK_FILE): DirLock {
  fs.mkdirSync(dir, { recursive: true });
  const lockPath = path.join(dir, file);
  // Two rounds: the second one after removing a stale lock.
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(lockPath, `${process.pid}\n`, { flag: "wx" });
      let released = false;
      const release = (): void => {
        if (released) return;
        released = true;
        process.off("exit", release);
        if (readPid(lockPath) === process.pid) fs.rmSync(lockPath, { force: true });
      };
      process.on("exit", release);
      return { path: lockPath, release };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const holder = readPid(lockPath);
    if (holder !== undefined && holder !== process.pid && processAlive(holder)) throw new DirInUseError(dir, holder);
    // Gone (or unreadable, or our own pid from a reused lock): take it over.
    fs.rmSync(lockPath, { force: true });
  }
  throw new Error(`could not lock ${dir}: ${lockPath} keeps reappearing`);
}

/** Empties `dir` except for the lock file: what `dlm up --fresh` does once it holds the lock. */
export function emptyDirectoryExcept(dir: string, keep: string): void {
  for (const entry of fs.readdirSync(dir)) {
    if (entry !== keep) fs.rmSync(path.join(dir, entry), { recursive: true, force: true });
  }
}
