/**
 * A dlm client in a process of its own, driven over stdin/stdout, so a test
 * can freeze it for real (SIGSTOP, or a busy loop that blocks its event
 * loop) or SIGKILL it without freezing or killing the test process and the
 * clients that live there.
 *
 * Compiled by tsc to dist/test/support/stallClient.js (run `npm run build`).
 * Tests spawn it with `StallClient.start()` (below), which is all they
 * import from this file; the process part runs only when this is the main
 * module.
 *
 * Protocol. The process prints `{"event":"ready"}` first. Then it reads one
 * JSON command per line on stdin, `{ "id": n, "cmd": ..., ...args }`, runs
 * them one at a time in order, and answers each with one line on stdout:
 * `{ "id": n, "ok": true, ...result }` or
 * `{ "id": n, "ok": false, "error": { name, codeName, message, fromServer } }`
 * (`fromServer`: the error is the server's reply, not a local decision).
 * Lines without an id are events: `{"event":"lost", token, codeName, message, fromServer}`
 * when a lease is lost.
 *
 * Commands:
 * - connect {servers, requestTimeoutMs?, name?}  -> {clientId}
 * - acquire {lock?, leaseMs?}                    -> {lock, token, leaseMs}
 * - append {file, data, stallBeforeSendMs?}      -> {staged, sent}
 *     Under the lease from the last acquire. With stallBeforeSendMs the
 *     client passes its own checks (the lease is held), and then the event
 *     loop is blocked that long *inside the send*, before the request
 *     reaches NATS: a pause at the worst moment. `sent` is how many append
 *     requests went out during the call (0: refused locally).
 * - release {}                                   -> {committed}
 * - stall {ms}        busy-loops, blocking the event loop -> {stalledMs}
 * - close {}                                     -> {message}
 */
import { spawn, type ChildProcess } from "child_process";
import * as path from "path";
import * as readline from "readline";
import { connect as natsConnect } from "@nats-io/transport-node";
import { connect, isDlmError, type DlmClient, type Lease, type Transport, type TransportSubscription } from "../../src/client";
import { NatsTransport } from "../../src/client/transport";

const decoder = new TextDecoder();

function busyLoop(ms: number): number {
  const start = Date.now();
  const end = start + ms;
  // A real stall: nothing else in this process runs meanwhile (no timers, no I/O callbacks).
  while (Date.now() < end) {
    /* spin */
  }
  return Date.now() - start;
}

/** Counts append requests and, when armed, blocks the event loop before the next append is handed to NATS. */
class StallingTransport implements Transport {
  appendSends = 0;
  stallNextAppendMs = 0;

  constructor(private readonly inner: Transport) {}

  request(subject: string, payload: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    let op: unknown;
    try {
      op = (JSON.parse(decoder.decode(payload)) as { op?: unknown }).op;
    } catch {
      op = undefined;
    }
    if (op === "append") {
      if (this.stallNextAppendMs > 0) {
        const ms = this.stallNextAppendMs;
        this.stallNextAppendMs = 0;
        busyLoop(ms);
      }
      this.appendSends++;
    }
    return this.inner.request(subject, payload, timeoutMs);
  }

  publish(subject: string, payload: Uint8Array): void {
    this.inner.publish(subject, payload);
  }

  subscribe(subject: string, handler: (payload: Uint8Array) => void): Promise<TransportSubscription> {
    return this.inner.subscribe(subject, handler);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

interface Command {
  id: number;
  cmd: string;
  [key: string]: unknown;
}

let client: DlmClient | undefined;
let transport: StallingTransport | undefined;
let lease: Lease | undefined;

function out(obj: object): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function describeError(e: unknown): object {
  if (isDlmError(e)) return { name: e.name, codeName: e.codeName, message: e.message, fromServer: e.reply !== undefined };
  return { name: e instanceof Error ? e.name : "Error", codeName: undefined, message: e instanceof Error ? e.message : String(e), fromServer: false };
}

function need<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`no ${what} yet`);
  return value;
}

async function run(c: Command): Promise<object> {
  switch (c.cmd) {
    case "connect": {
      const nc = await natsConnect({ servers: c.servers as string[], maxReconnectAttempts: -1, reconnectTimeWait: 250 });
      transport = new StallingTransport(new NatsTransport(nc, true));
      client = await connect({
        transport,
        unavailableTimeoutMs: 60_000,
        ...(typeof c.requestTimeoutMs === "number" ? { requestTimeoutMs: c.requestTimeoutMs } : {}),
        ...(typeof c.name === "string" ? { name: c.name } : {}),
        ...(c.logEachAppend === true ? { logEachAppend: true } : {}),
      });
      return { clientId: client.clientId };
    }
    case "acquire": {
      const l = await need(client, "client").acquire(typeof c.lock === "string" ? c.lock : undefined, {
        ...(typeof c.leaseMs === "number" ? { leaseMs: c.leaseMs } : {}),
      });
      lease = l;
      l.on("lost", (error) => out({ event: "lost", token: l.token, ...describeError(error) }));
      return { lock: l.lock, token: l.token, leaseMs: l.leaseMs };
    }
    case "append": {
      const t = need(transport, "transport");
      const before = t.appendSends;
      if (typeof c.stallBeforeSendMs === "number") t.stallNextAppendMs = c.stallBeforeSendMs;
      try {
        const r = await need(client, "client").append(String(c.file), String(c.data), { lease: need(lease, "lease") });
        return { staged: r.staged, sent: t.appendSends - before };
      } catch (e) {
        throw Object.assign(e as object, { sent: t.appendSends - before });
      } finally {
        t.stallNextAppendMs = 0;
      }
    }
    case "release":
      return { committed: await need(lease, "lease").release() };
    case "stall":
      return { stalledMs: busyLoop(Number(c.ms)) };
    case "close":
      return { message: await need(client, "client").close() };
    default:
      throw new Error(`unknown command ${JSON.stringify(c.cmd)}`);
  }
}

async function main(): Promise<void> {
  const rl = readline.createInterface({ input: process.stdin });
  const queue: Command[] = [];
  let busy = false;
  const pump = async (): Promise<void> => {
    if (busy) return;
    busy = true;
    while (queue.length > 0) {
      const c = queue.shift()!;
      try {
        out({ id: c.id, ok: true, ...(await run(c)) });
      } catch (e) {
        const sent = (e as { sent?: number }).sent;
        out({ id: c.id, ok: false, error: describeError(e), ...(sent !== undefined ? { sent } : {}) });
      }
    }
    busy = false;
  };
  rl.on("line", (line) => {
    if (!line.trim()) return;
    try {
      queue.push(JSON.parse(line) as Command);
    } catch {
      out({ event: "badCommand", line });
      return;
    }
    void pump();
  });
  rl.on("close", () => {
    void (async () => {
      await client?.close().catch(() => undefined);
      process.exit(0);
    })();
  });
  out({ event: "ready", pid: process.pid });
}

if (require.main === module) void main();

// ---------------------------------------------------------------- the test side

/** The compiled script (this file is run from source by ts-jest, from dist by node). */
export const stallClientScript = path.resolve(__dirname, "..", "..", ...(path.basename(path.resolve(__dirname, "..", "..")) === "dist" ? [] : ["dist"]), "test", "support", "stallClient.js");

export interface StallReply {
  id: number;
  ok: boolean;
  error?: { name: string; codeName?: string; message: string; fromServer: boolean };
  sent?: number;
  [key: string]: unknown;
}

export interface StallEvent {
  event: string;
  [key: string]: unknown;
}

/** A handle on one stall-client process. */
export class StallClient {
  readonly events: StallEvent[] = [];
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (r: StallReply) => void; reject: (e: Error) => void }>();
  private readonly output: string[] = [];
  private exited = false;
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(
    readonly name: string,
    private readonly child: ChildProcess,
  ) {
    this.exit = new Promise((resolve) => {
      child.on("exit", (code, signal) => {
        this.exited = true;
        for (const w of this.waiting.values()) w.reject(new Error(`${name} exited (${code ?? signal}) before answering\n${this.tail()}`));
        this.waiting.clear();
        resolve({ code, signal });
      });
    });
    readline.createInterface({ input: child.stdout! }).on("line", (line) => {
      this.output.push(line);
      let msg: StallReply | StallEvent;
      try {
        msg = JSON.parse(line) as StallReply | StallEvent;
      } catch {
        return;
      }
      if (typeof (msg as StallReply).id === "number") {
        const w = this.waiting.get((msg as StallReply).id);
        this.waiting.delete((msg as StallReply).id);
        w?.resolve(msg as StallReply);
      } else {
        this.events.push(msg as StallEvent);
      }
    });
    readline.createInterface({ input: child.stderr! }).on("line", (line) => this.output.push(`[stderr] ${line}`));
  }

  /** Spawns the process and waits for it to be ready. */
  static async start(name: string): Promise<StallClient> {
    const child = spawn(process.execPath, [stallClientScript], { stdio: ["pipe", "pipe", "pipe"] });
    const handle = new StallClient(name, child);
    const deadline = Date.now() + 15_000;
    while (!handle.events.some((e) => e.event === "ready")) {
      if (handle.exited) throw new Error(`${name} exited at start (is it built? ${stallClientScript})\n${handle.tail()}`);
      if (Date.now() > deadline) throw new Error(`${name} not ready within 15 s\n${handle.tail()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return handle;
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Sends a command; resolves with its reply line (ok or not). */
  send(cmd: string, args: Record<string, unknown> = {}): Promise<StallReply> {
    if (this.exited) return Promise.reject(new Error(`${this.name} has exited`));
    const id = this.nextId++;
    return new Promise<StallReply>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.child.stdin!.write(`${JSON.stringify({ id, cmd, ...args })}\n`);
    });
  }

  /** Like send, but rejects unless the reply is ok. */
  async ok(cmd: string, args: Record<string, unknown> = {}): Promise<StallReply> {
    const reply = await this.send(cmd, args);
    if (!reply.ok) throw new Error(`${this.name} ${cmd} failed: ${JSON.stringify(reply.error)}\n${this.tail()}`);
    return reply;
  }

  /** SIGSTOP: the whole process freezes, timers and sockets included. */
  pause(): void {
    process.kill(this.pid, "SIGSTOP");
  }

  /** SIGCONT. */
  resume(): void {
    process.kill(this.pid, "SIGCONT");
  }

  /** Sends a signal (default SIGKILL) and waits for the exit. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    if (!this.exited) this.child.kill(signal);
    await this.exit;
  }

  tail(n = 20): string {
    return this.output.slice(-n).join("\n");
  }
}
