import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { killAllTrackedChildren } from "../../src/local/processes";

/**
 * Temporary directories for tests. Every directory made here is removed by
 * removeTempDir / cleanupTempDirs, and whatever is left is removed when the
 * test process exits. Set DLM_KEEP_TMP=1 to keep them for a post-mortem (their
 * paths are then printed on exit).
 */

const made = new Set<string>();
let hookInstalled = false;

const keep = () => process.env.DLM_KEEP_TMP === "1";

function installExitHook(): void {
  if (hookInstalled) return;
  hookInstalled = true;
  process.on("exit", () => {
    if (keep()) {
      if (made.size > 0) process.stderr.write(`kept temp dirs:\n  ${[...made].join("\n  ")}\n`);
      return;
    }
    // Servers still running in these dirs would keep writing while they go.
    killAllTrackedChildren();
    for (const dir of made) {
      try {
        fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
      } catch {
        // best effort on the way out
      }
    }
    made.clear();
  });
}

/** Creates a fresh directory under os.tmpdir(), e.g. /tmp/dlm-nats-XXXXXX. */
export function makeTempDir(prefix = "dlm-test-"): string {
  installExitHook();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.add(dir);
  return dir;
}

/** Removes a directory made by makeTempDir (no-op with DLM_KEEP_TMP=1). */
export async function removeTempDir(dir: string): Promise<void> {
  if (keep()) return;
  await fs.promises.rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
  made.delete(dir);
}

/** Removes every directory made by makeTempDir that is still there. */
export async function cleanupTempDirs(): Promise<void> {
  await Promise.all([...made].map((d) => removeTempDir(d)));
}
