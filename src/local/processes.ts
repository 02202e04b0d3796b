import { spawn, ChildProcess } from "child_process";
import * as fs from "fs";
import * as path from "path";

/**
 * A handle on a child process that `dlm up` and the tests start, crash,
 * freeze and restart: nats-server, dlm nodes.
 *
 * Output (stdout and stderr, merged, split into lines) is always read, so a
 * chatty child can never block on a full pipe; the last `maxLines` lines are
 * kept in memory and, optionally, every line is appended to a log file.
 *
 * Every child started here is SIGKILLed when the parent process exits, so a
 * crashed test run or a `dlm up` that is stopped does not leave orphans.
 */

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export type LinePattern = RegExp | ((line: string) => boolean);

export interface SpawnOptions {
  /** Name used in messages and echo prefixes. */
  name: string;
  /** Extra environment, merged over process.env (a value of undefined removes a variable). */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Every output line is appended here (the file is created, parent dirs too). */
  logFile?: string;
  /** Also write every line to the parent's stderr, prefixed by `[name]`. */
  echo?: boolean;
  /** How many lines `lines` keeps (default 5000). */
  maxLines?: number;
}

export interface ManagedProcess {
  readonly name: string;
  readonly cmd: string;
  readonly args: readonly string[];
  /** pid of the current (or last) child; undefined if it could not be spawned. */
  readonly pid: number | undefined;
  /** True from spawn until the child has exited. */
  readonly running: boolean;
  /** True after pause() until resume() or exit. */
  readonly paused: boolean;
  /** Exit code of the last exit, null while running or when killed by a signal. */
  readonly exitCode: number | null;
  /** Resolves when the current incarnation exits (a new promise after restart()). */
  readonly exited: Promise<ExitInfo>;
  /** The last `maxLines` lines of merged stdout+stderr, across restarts. */
  readonly lines: string[];
  /** Number of lines ever captured; use it as `fromIndex` for waitForLine. */
  readonly lineCount: number;
  /** Sends `signal` (default SIGKILL) and resolves when the child has exited. */
  kill(signal?: NodeJS.Signals): Promise<ExitInfo>;
  /** SIGTERM, then SIGKILL after timeoutMs (default 5000); resolves on exit. */
  stop(timeoutMs?: number): Promise<ExitInfo>;
  /**
   * SIGSTOP: the child stays alive but does nothing. The signal is sent at
   * once; the promise resolves when every thread of the child has actually
   * stopped (on Linux, read from /proc). Until then a multi-threaded child
   * whose signalled thread is waiting for a CPU may still be running other
   * threads, e.g. answering a request, so await it.
   */
  pause(): Promise<void>;
  /** SIGCONT. */
  resume(): void;
  /** Stops the child if it is running, then spawns the same command again. */
  restart(): Promise<void>;
  /**
   * Resolves with the first line matching `pattern`, looking first at lines
   * already captured from absolute index `fromIndex` (default 0) on, then at
   * new ones. Rejects on timeout or when the child exits first; the error
   * carries the last 30 lines.
   */
  waitForLine(pattern: LinePattern, timeoutMs: number, fromIndex?: number): Promise<string>;
  /** Called on every exit (also of later incarnations). Returns an unsubscribe function. */
  onExit(cb: (info: ExitInfo) => void): () => void;
  /** The last n lines joined by newlines. */
  tail(n?: number): string;
}

// ---------------------------------------------------------------------------
// Children are killed when the parent exits.

const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

function track(child: ChildProcess): void {
  liveChildren.add(child);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on("exit", killAllTrackedChildren);
  }
}

function untrack(child: ChildProcess): void {
  liveChildren.delete(child);
}

/** SIGKILLs every child still running (synchronous; safe in an 'exit' handler). */
export function killAllTrackedChildren(): void {
  for (const child of liveChildren) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
  liveChildren.clear();
}

// ---------------------------------------------------------------------------
// Waiting for SIGSTOP to take effect.

/** Linux task states from /proc/<pid>/task/<tid>/stat; undefined when unavailable. */
function threadStates(pid: number): string[] | undefined {
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined;
  }
  const states: string[] = [];
  for (const tid of tids) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      // "tid (comm) S ..." — comm may contain spaces and parentheses
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      states.push(state);
    } catch {
      // thread exited meanwhile
    }
  }
  return states;
}

/**
 * Resolves once every thread of `pid` is stopped ('T'/'t'), the process is
 * gone, /proc is not available (not Linux), or `stillWanted()` turns false.
 */
async function waitStopped(pid: number, timeoutMs: number, stillWanted: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!stillWanted()) return;
    const states = threadStates(pid);
    if (states === undefined) return;
    if (states.every((st) => st === "T" || st === "t" || st === "Z" || st === "X")) return;
    if (Date.now() > deadline) throw new Error(`pid ${pid} did not stop within ${timeoutMs} ms (threads: ${states.join("")})`);
    await new Promise<void>((r) => setTimeout(r, 2));
  }
}

// ---------------------------------------------------------------------------

interface Waiter {
  test: (line: string) => boolean;
  resolve: (line: string) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

function toTest(p: LinePattern): (line: string) => boolean {
  if (typeof p === "function") return p;
  return (line) => {
    p.lastIndex = 0;
    return p.test(line);
  };
}

function describePattern(p: LinePattern): string {
  return typeof p === "function" ? "predicate" : String(p);
}

class ManagedProcessImpl implements ManagedProcess {
  readonly lines: string[] = [];
  private count = 0;
  private child: ChildProcess | undefined;
  private childPid: number | undefined;
  private isRunning = false;
  private isPaused = false;
  private lastExit: ExitInfo | undefined;
  private exitPromise!: Promise<ExitInfo>;
  private resolveExit!: (info: ExitInfo) => void;
  private waiters = new Set<Waiter>();
  private exitListeners = new Set<(info: ExitInfo) => void>();
  private log: fs.WriteStream | undefined;
  private readonly maxLines: number;

  constructor(
    readonly cmd: string,
    readonly args: readonly string[],
    private readonly opts: SpawnOptions,
  ) {
    this.maxLines = opts.maxLines ?? 5000;
    this.spawnChild();
  }

  get name(): string {
    return this.opts.name;
  }
  get pid(): number | undefined {
    return this.childPid;
  }
  get running(): boolean {
    return this.isRunning;
  }
  get paused(): boolean {
    return this.isPaused;
  }
  get exitCode(): number | null {
    return this.isRunning ? null : (this.lastExit?.code ?? null);
  }
  get exited(): Promise<ExitInfo> {
    return this.exitPromise;
  }
  get lineCount(): number {
    return this.count;
  }

  private spawnChild(): void {
    this.exitPromise = new Promise<ExitInfo>((resolve) => (this.resolveExit = resolve));
    this.isPaused = false;
    if (this.opts.logFile && !this.log) {
      fs.mkdirSync(path.dirname(this.opts.logFile), { recursive: true });
      this.log = fs.createWriteStream(this.opts.logFile, { flags: "a" });
      this.log.on("error", () => {
        // a broken log file must not crash the parent
        this.log = undefined;
      });
    }
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const [k, v] of Object.entries(this.opts.env ?? {})) {
      if (v === undefined) delete env[k];
      else env[k] = v;
    }
    const child = spawn(this.cmd, [...this.args], {
      cwd: this.opts.cwd,
      env,
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group: a terminal's Ctrl-C reaches only the parent,
      // which stops children in order (dlm nodes hand over before NATS
      // goes). Every signal here is sent to the child's pid explicitly.
      detached: true,
    });
    this.child = child;
    this.childPid = child.pid;
    this.isRunning = true;
    track(child);

    const partial = { out: "", err: "" };
    const onData = (which: "out" | "err") => (chunk: Buffer) => {
      const text = partial[which] + chunk.toString("utf8");
      const parts = text.split(/\r?\n/);
      partial[which] = parts.pop() ?? "";
      for (const line of parts) this.addLine(line);
    };
    child.stdout?.on("data", onData("out"));
    child.stderr?.on("data", onData("err"));

    let exitInfo: ExitInfo | undefined;
    let finished = false;
    let graceTimer: NodeJS.Timeout | undefined;
    const finish = () => {
      if (finished) return;
      finished = true;
      if (graceTimer) clearTimeout(graceTimer);
      for (const which of ["out", "err"] as const) {
        if (partial[which]) this.addLine(partial[which]);
        partial[which] = "";
      }
      const info = exitInfo ?? { code: null, signal: null };
      this.onChildGone(child, info);
    };
    child.once("exit", (code, signal) => {
      exitInfo = { code, signal };
      // 'close' follows once stdio is drained; do not wait forever if a
      // grandchild keeps the pipes open.
      graceTimer = setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
        finish();
      }, 2000);
      graceTimer.unref();
    });
    child.once("close", (code, signal) => {
      exitInfo = exitInfo ?? { code, signal };
      finish();
    });
    child.once("error", (err) => {
      // spawn failure (ENOENT, EACCES): there will be no 'exit'
      this.addLine(`[${this.name}] failed to start ${this.cmd}: ${err.message}`);
      if (child.pid === undefined) {
        exitInfo = { code: null, signal: null };
        finish();
      }
    });
  }

  private onChildGone(child: ChildProcess, info: ExitInfo): void {
    untrack(child);
    if (this.child !== child) return;
    this.isRunning = false;
    this.isPaused = false;
    this.lastExit = info;
    const why = `${this.name} exited (code ${info.code}, signal ${info.signal})`;
    for (const w of [...this.waiters]) {
      this.waiters.delete(w);
      clearTimeout(w.timer);
      w.reject(new Error(`${why} before the awaited line appeared; last lines:\n${this.tail(30)}`));
    }
    if (this.log) {
      const log = this.log;
      this.log = undefined;
      log.end();
    }
    this.resolveExit(info);
    for (const cb of [...this.exitListeners]) {
      try {
        cb(info);
      } catch {
        // listeners must not break process bookkeeping
      }
    }
  }

  private addLine(line: string): void {
    this.lines.push(line);
    if (this.lines.length > this.maxLines) this.lines.shift();
    this.count++;
    this.log?.write(line + "\n");
    if (this.opts.echo) process.stderr.write(`[${this.name}] ${line}\n`);
    for (const w of [...this.waiters]) {
      let hit = false;
      try {
        hit = w.test(line);
      } catch {
        hit = false;
      }
      if (hit) {
        this.waiters.delete(w);
        clearTimeout(w.timer);
        w.resolve(line);
      }
    }
  }

  tail(n = 30): string {
    return this.lines.slice(-n).join("\n");
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): Promise<ExitInfo> {
    if (!this.isRunning || !this.child) return Promise.resolve(this.lastExit ?? { code: null, signal: null });
    const exited = this.exitPromise;
    try {
      this.child.kill(signal);
      // a stopped process only acts on a catchable signal once continued
      if (this.isPaused && signal !== "SIGKILL" && signal !== "SIGSTOP") {
        this.child.kill("SIGCONT");
        this.isPaused = false;
      }
    } catch {
      // already gone; 'exit' will settle the promise
    }
    return exited;
  }

  async stop(timeoutMs = 5000): Promise<ExitInfo> {
    if (!this.isRunning) return this.lastExit ?? { code: null, signal: null };
    const exited = this.exitPromise;
    void this.kill("SIGTERM");
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    const first = await Promise.race([exited, timedOut]);
    clearTimeout(timer);
    if (first === "timeout") return this.kill("SIGKILL");
    return first;
  }

  pause(): Promise<void> {
    if (!this.isRunning || !this.child || this.childPid === undefined) {
      return Promise.reject(new Error(`${this.name} is not running; cannot pause`));
    }
    this.child.kill("SIGSTOP");
    this.isPaused = true;
    return waitStopped(this.childPid, 5000, () => this.isPaused && this.isRunning).catch((e: Error) => {
      throw new Error(`${this.name}: ${e.message}`);
    });
  }

  resume(): void {
    if (!this.isRunning || !this.child) throw new Error(`${this.name} is not running; cannot resume`);
    this.child.kill("SIGCONT");
    this.isPaused = false;
  }

  async restart(): Promise<void> {
    if (this.isRunning) await this.stop();
    this.spawnChild();
    if (this.childPid === undefined) {
      // spawn failed synchronously-ish; surface it like the first start would
      await this.exitPromise;
      throw new Error(`${this.name}: could not restart ${this.cmd}; last lines:\n${this.tail(30)}`);
    }
  }

  waitForLine(pattern: LinePattern, timeoutMs: number, fromIndex = 0): Promise<string> {
    const test = toTest(pattern);
    const first = this.count - this.lines.length;
    for (let abs = Math.max(fromIndex, first); abs < this.count; abs++) {
      const line = this.lines[abs - first];
      if (line !== undefined && test(line)) return Promise.resolve(line);
    }
    if (!this.isRunning) {
      return Promise.reject(
        new Error(
          `${this.name} is not running (code ${this.lastExit?.code}, signal ${this.lastExit?.signal}); ` +
            `no line matches ${describePattern(pattern)}; last lines:\n${this.tail(30)}`,
        ),
      );
    }
    return new Promise<string>((resolve, reject) => {
      const waiter: Waiter = {
        test,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(waiter);
          reject(
            new Error(
              `${this.name}: no line matching ${describePattern(pattern)} within ${timeoutMs} ms; ` +
                `last lines:\n${this.tail(30)}`,
            ),
          );
        }, timeoutMs),
      };
      this.waiters.add(waiter);
    });
  }

  onExit(cb: (info: ExitInfo) => void): () => void {
    this.exitListeners.add(cb);
    return () => this.exitListeners.delete(cb);
  }
}

/** Starts `cmd args` as a managed child (see ManagedProcess). */
export function spawnManaged(cmd: string, args: string[], opts: SpawnOptions): ManagedProcess {
  return new ManagedProcessImpl(cmd, args, opts);
}
