import { spawn } from "child_process";
import { cliMain, repoRoot } from "./dlmNode";

export interface DlmRunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the compiled `dlm` command to completion (killed after timeoutMs) and collects its output. */
export function runDlm(args: string[], opts: { input?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<DlmRunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliMain, ...args], { cwd: repoRoot, stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, ...opts.env } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`dlm ${args.join(" ")} timed out\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    }, opts.timeoutMs ?? 60_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(opts.input ?? "");
  });
}
