import * as path from "path";
import { ManagedProcess, spawnManaged } from "../../src/local/processes";

/**
 * The repository root: this file is test/kit/dlmNode.ts, run from source by
 * ts-jest, or dist/test/kit/dlmNode.js when a bench program (the soak) uses
 * the kit compiled.
 */
export const repoRoot = path.basename(path.resolve(__dirname, "../..")) === "dist" ? path.resolve(__dirname, "../../..") : path.resolve(__dirname, "../..");

/** The compiled CLI entry point the node processes run. */
export const cliMain = path.join(repoRoot, "dist", "src", "cli", "main.js");

export interface DlmNodeOptions {
  natsUrls: string[];
  dataDir: string;
  nodeId: string;
  /** NATS connection flags (credentials, TLS), e.g. ["--user", "dlm-node", "--password", "..."]. */
  natsArgs?: string[];
  extraArgs?: string[];
  /** Extra environment (e.g. NATS_USER / NATS_PASSWORD instead of flags). */
  env?: Record<string, string>;
  /** Append the node's output here too. */
  logFile?: string;
  /** Echo the node's output on stderr (or set DLM_TEST_ECHO=1). */
  echo?: boolean;
}

/**
 * Spawns `node dist/src/cli/main.js node --nats <urls> --data <dir> --id <id> ...extraArgs`
 * from the repository root. Needs `npm run build` first (npm test does it).
 */
export function startDlmNode(opts: DlmNodeOptions): ManagedProcess {
  const args = [
    cliMain,
    "node",
    "--nats",
    opts.natsUrls.join(","),
    "--data",
    opts.dataDir,
    "--id",
    opts.nodeId,
    ...(opts.natsArgs ?? []),
    ...(opts.extraArgs ?? []),
  ];
  return spawnManaged(process.execPath, args, {
    name: `dlm-${opts.nodeId}`,
    cwd: repoRoot,
    env: opts.env,
    logFile: opts.logFile,
    echo: opts.echo ?? process.env.DLM_TEST_ECHO === "1",
  });
}
