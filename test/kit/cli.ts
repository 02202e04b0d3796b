/** Runs the compiled `dlm` command as a user would, for CLI tests. */
import { spawn } from "child_process";
import { cliMain, repoRoot } from "./dlmNode";

export interface DlmRunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface DlmRunOptions {
  /** Fed to stdin, which is then closed. */
  input?: string;
  /** Extra environment, merged over this process's (undefined removes a variable). */
  env?: Record<string, string | undefined>;
  timeoutMs?: number;
}

/** `node dist/src/cli/main.js ...args`; resolves with the exit code and output, rejects on timeout. */
export function runDlm(args: string[], opts: DlmRunOptions = {}): Promise<DlmRunResult> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliMain, ...args], { cwd: repoRoot, env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`dlm ${args.join(" ")} timed out\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    }, opts.timeoutMs ?? 90_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(opts.input ?? "");
  });
}
