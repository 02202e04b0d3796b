/**
 * `dlm client`: an interactive prompt over the client library, for people
 * poking at a cluster. Reads commands line by line (a terminal or a pipe),
 * runs them one at a time, and prints one result line each.
 *
 * Ctrl-C while a command runs aborts it: a waiting acquire is cancelled on
 * the server (it leaves the queue at once instead of holding it until the
 * session times out) and the prompt stays usable. Ctrl-C at an idle prompt,
 * or a second one while the first is still being handled, leaves like
 * `quit`: held leases end without a commit and the session says goodbye.
 * In a terminal readline turns Ctrl-C into its "SIGINT" event; with a pipe
 * on stdin the process gets the real signal; both go to the same handler.
 */
import * as readline from "readline";
import { connect, inboxPrefixFor, isDlmError, type DlmClient, type Lease, type LockMode, type LockRequest, type StatusView } from "../client";
import { DEFAULT_PREFIX } from "../protocol/subjects";
import { CLIENT_NAMESPACE } from "../protocol/limits";
import { int, parseArgs, str, UsageError, type CommandSpec } from "./args";
import { connectNats, natsConnectionFromFlags, NATS_FLAGS } from "./natsFlags";

export const clientSpec: CommandSpec = {
  usage: "dlm client [flags]",
  summary:
    "An interactive client. Commands:\n" +
    "  acquire [LOCK] [LEASE_MS] [shared]\n" +
    "                              wait for LOCK (default global) and hold it, exclusively or shared (a read\n" +
    "                              grant held with other readers); the lease is renewed in the background;\n" +
    "                              Ctrl-C cancels the wait on the server (so it does for sem and all)\n" +
    "  try [LOCK] [WAIT_MS] [shared]\n" +
    "                              acquire if granted within WAIT_MS (default 0: only if free now)\n" +
    "  sem NAME LIMIT [PERMITS]    wait for PERMITS (default 1) permits of the semaphore NAME, which lets at\n" +
    "                              most LIMIT out at once (every caller must name the same LIMIT)\n" +
    "  all LOCK[:shared] ...       wait for all the locks at once (all or none, no deadlock whatever the order)\n" +
    "  append FILE TEXT            stage TEXT (plus a newline) for FILE under the global lock\n" +
    "  release [LOCK ...]          commit the staged appends and pass the lock (each lock, permit) on\n" +
    "  abandon [LOCK]              end the grant without committing: the staged appends are dropped\n" +
    "  commit FILE TEXT            one critical section: acquire global, append TEXT, release\n" +
    "  leases                      the leases this prompt holds\n" +
    "  read FILE                   print FILE's committed content\n" +
    "  status                      show locks, queues and the leader\n" +
    "  help, quit (or Ctrl-C at an idle prompt)",
  flags: [
    ...NATS_FLAGS,
    { name: "namespace", kind: "string", help: "client namespace: session ids <namespace>.<id>, notifications and inbox scoped to it (least privilege)" },
    { name: "prefix", kind: "string", default: DEFAULT_PREFIX, help: "subject prefix of the dlm cluster" },
    { name: "timeout-ms", kind: "int", default: 2000, min: 1, help: "per-attempt request timeout" },
  ],
};

export async function runClient(argv: string[]): Promise<void> {
  const { flags } = parseArgs(clientSpec, argv);
  const out = (line: string) => process.stdout.write(`${line}\n`);
  const namespace = typeof flags.namespace === "string" ? flags.namespace : undefined;
  if (namespace !== undefined && !CLIENT_NAMESPACE.test(namespace)) throw new UsageError("--namespace takes 1-32 of [A-Za-z0-9_-]");
  // The command opens NATS itself so that a refused password or a TLS
  // problem is reported as such (exit code 4), not as "no dlm node answered".
  const nc = await connectNats(natsConnectionFromFlags(flags), {
    name: "dlm-cli",
    ...(namespace !== undefined ? { inboxPrefix: inboxPrefixFor(namespace) } : {}),
  });
  let client: DlmClient;
  try {
    client = await connect({
      nc,
      namespace,
      prefix: str(flags, "prefix"),
      requestTimeoutMs: int(flags, "timeout-ms"),
      name: "dlm-cli",
    });
  } catch (err) {
    await nc.close();
    throw err;
  }
  out(`Connected! (session ${client.clientId})`);
  client.on("leaseLost", (lease: Lease, err: Error) => out(`! lease on ${lease.lock} (token ${lease.token}) lost: ${err.message}`));
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY === true });
  const prompt = () => {
    if (process.stdin.isTTY) rl.prompt();
  };
  // The command running now, if any, and whether Ctrl-C already asked it to stop.
  let running: AbortController | undefined;
  let leaving = false;
  const leave = (): void => {
    leaving = true;
    rl.close();
  };
  const onInterrupt = (): void => {
    if (running && !running.signal.aborted) {
      running.abort();
      return;
    }
    if (!leaving) out("(Ctrl-C: leaving)");
    leave();
  };
  rl.on("SIGINT", onInterrupt);
  process.on("SIGINT", onInterrupt);
  rl.setPrompt("dlm> ");
  prompt();
  try {
    for await (const line of rl) {
      const words = line.trim().split(/\s+/).filter(Boolean);
      if (words.length === 0) {
        prompt();
        continue;
      }
      if (words[0] === "quit" || words[0] === "exit") break;
      running = new AbortController();
      try {
        out(await execute(client, words, running.signal, out));
      } catch (err) {
        out(isDlmError(err) ? `error ${err.codeName} (code ${err.code}): ${err.message}` : `error: ${(err as Error).message}`);
      } finally {
        running = undefined;
      }
      if (leaving) break;
      prompt();
    }
  } finally {
    process.off("SIGINT", onInterrupt);
    rl.close();
  }
  out(String((await client.close()) ?? "Disconnected!"));
  await nc.close();
}

/** How long an acquire may take before the prompt says it is waiting. */
const WAITING_NOTICE_MS = 250;

/** A non-negative integer argument, or undefined when absent; anything else is an error the prompt prints. */
function msArg(raw: string | undefined, what: string): number | undefined {
  if (raw === undefined) return undefined;
  if (!/^\d+$/.test(raw)) throw new Error(`${what} must be a non-negative integer (milliseconds), got ${JSON.stringify(raw)}`);
  return Number(raw);
}

/** A positive integer argument (a semaphore's limit or permits), or undefined when absent. */
function countArg(raw: string | undefined, what: string): number | undefined {
  if (raw === undefined) return undefined;
  if (!/^[1-9]\d*$/.test(raw)) throw new Error(`${what} must be a whole number ≥ 1, got ${JSON.stringify(raw)}`);
  return Number(raw);
}

/**
 * A lock and the words after it: "shared" or "exclusive" is the mode, a
 * number is the command's milliseconds (LEASE_MS or WAIT_MS).
 */
function lockArgs(args: string[], msName: string): { lock: string; mode: LockMode | undefined; ms: number | undefined } {
  const [lock = "global", ...rest] = args;
  let mode: LockMode | undefined;
  let ms: number | undefined;
  for (const word of rest) {
    if (word === "shared" || word === "exclusive") mode = word;
    else ms = msArg(word, msName);
  }
  return { lock, mode, ms };
}

/** How the prompt names a lease: its lock, and its mode or permits unless it is a plain exclusive lock. */
function leaseName(lease: Lease): string {
  if (lease.permits !== undefined) return `${lease.lock} (${lease.permits} of ${lease.limit ?? "?"} permits)`;
  return lease.mode === "shared" ? `${lease.lock} (shared)` : lease.lock;
}

/**
 * Runs a command that may wait in a queue: says so after a moment, and turns
 * the CancelledError of a Ctrl-C into a plain answer (the client has
 * cancelled the wait on the server by then).
 */
async function waiting(what: string, signal: AbortSignal, say: (line: string) => void, run: () => Promise<string>): Promise<string> {
  const notice = setTimeout(() => say(`waiting for ${what} (Ctrl-C cancels the wait)`), WAITING_NOTICE_MS);
  try {
    return await run();
  } catch (err) {
    if (signal.aborted && isDlmError(err, "CANCELLED")) return `cancelled: no longer waiting for ${what}`;
    throw err;
  } finally {
    clearTimeout(notice);
  }
}

async function execute(client: DlmClient, words: string[], signal: AbortSignal, say: (line: string) => void): Promise<string> {
  const [command, ...args] = words;
  switch (command) {
    case "acquire": {
      const { lock, mode, ms: leaseMs } = lockArgs(args, "LEASE_MS");
      return waiting(lock, signal, say, async () => {
        const lease = await client.acquire(lock, { signal, ...(mode === undefined ? {} : { mode }), ...(leaseMs === undefined ? {} : { leaseMs }) });
        return `granted ${leaseName(lease)}, fencing token ${lease.token}, lease ${lease.leaseMs} ms`;
      });
    }
    case "try": {
      const { lock, mode, ms } = lockArgs(args, "WAIT_MS");
      const waitMs = ms ?? 0;
      const lease = await client.tryAcquire(lock, { waitMs, signal, ...(mode === undefined ? {} : { mode }) });
      return lease
        ? `granted ${leaseName(lease)}, fencing token ${lease.token}`
        : `${lock} is held by someone else${waitMs > 0 ? ` (not granted within ${waitMs} ms)` : ""}`;
    }
    case "sem": {
      if (args.length < 2 || args.length > 3) return "usage: sem NAME LIMIT [PERMITS]";
      const limit = countArg(args[1], "LIMIT")!;
      const permits = countArg(args[2], "PERMITS") ?? 1;
      const semaphore = client.semaphore(args[0]!, limit);
      return waiting(`${permits} of ${limit} permits of ${semaphore.name}`, signal, say, async () => {
        const lease = await semaphore.acquire({ permits, signal });
        return `granted ${leaseName(lease)}, fencing token ${lease.token}, lease ${lease.leaseMs} ms`;
      });
    }
    case "all": {
      if (args.length === 0) return "usage: all LOCK[:shared] ...";
      const locks = args.map((word): LockRequest => {
        const [lock = "", mode, ...more] = word.split(":");
        if (more.length > 0 || (mode !== undefined && mode !== "shared" && mode !== "exclusive")) {
          throw new Error(`${JSON.stringify(word)}: write LOCK, LOCK:shared or LOCK:exclusive`);
        }
        return mode === undefined ? { lock } : { lock, mode };
      });
      return waiting(locks.map((l) => l.lock).join(", "), signal, say, async () => {
        const set = await client.acquireAll(locks, { signal });
        return `granted all ${set.size}: ${set.leases.map((l) => `${leaseName(l)} fencing token ${l.token}`).join(", ")}`;
      });
    }
    case "abandon": {
      const lock = args[0] ?? "global";
      const lease = client.leaseFor(lock);
      if (!lease) return `this prompt holds no lease on ${lock}`;
      const discarded = await lease.abandon();
      return `abandoned ${lock}; discarded ${discarded.appends} appends (${discarded.bytes} bytes)`;
    }
    case "commit": {
      if (args.length < 2) return "usage: commit FILE TEXT";
      const text = `${args.slice(1).join(" ")}\n`;
      const token = await client.withLock(
        "global",
        async (lease) => {
          await client.append(args[0], text);
          return lease.token;
        },
        { signal },
      );
      return `committed 1 append to ${args[0]} under fencing token ${token}`;
    }
    case "leases": {
      const held = client.leases;
      return held.length === 0 ? "no leases held" : held.map((l) => `${leaseName(l)}: fencing token ${l.token}, lease ${l.leaseMs} ms, ${l.state}`).join("\n");
    }
    case "append": {
      if (args.length < 2) return "usage: append FILE TEXT";
      const result = await client.append(args[0], `${args.slice(1).join(" ")}\n`);
      return `staged (${result.staged.appends} appends, ${result.staged.bytes} bytes in this section)`;
    }
    case "release": {
      if (args.length <= 1) {
        const committed = await client.release(args[0] ?? "global");
        return `released; committed ${committed.appends} appends (${committed.bytes} bytes)`;
      }
      // Each lock on its own line, so one failure does not hide the others.
      const lines: string[] = [];
      for (const lock of args) {
        try {
          const committed = await client.release(lock);
          lines.push(`released ${lock}; committed ${committed.appends} appends (${committed.bytes} bytes)`);
        } catch (err) {
          lines.push(`${lock}: ${isDlmError(err) ? `error ${err.codeName} (code ${err.code}): ${err.message}` : `error: ${(err as Error).message}`}`);
        }
      }
      return lines.join("\n");
    }
    case "read":
      if (args.length !== 1) return "usage: read FILE";
      return (await client.read(args[0])).toString();
    case "status": {
      const view = await client.status();
      const locks = view.locks.map(describeLock);
      return [`leader ${view.leader} epoch ${view.epoch}, ${view.sessions} sessions`, ...locks].join("\n");
    }
    case "help":
      return clientSpec.summary;
    default:
      return `unknown command ${JSON.stringify(command)} (try help)`;
  }
}

/**
 * One lock of the status view on one line: its holder (or holders, for a
 * shared lock or a semaphore) and how many wait. The view's `kind`,
 * `holders` and `holderCount` are absent from older servers.
 */
function describeLock(l: StatusView["locks"][number]): string {
  type Holder = { client: string; token: number; mode?: LockMode; permits?: number };
  // A view from an older leader lacks kind, holders and holderCount.
  const view = l as Partial<typeof l> & Pick<typeof l, "name" | "holder" | "queue" | "queueLength">;
  const waiting = `${view.queueLength ?? view.queue.length} waiting`;
  const holders: Holder[] = view.holders ?? (view.holder ? [view.holder] : []);
  if (holders.length === 0) return `${view.name}: free, ${waiting}`;
  const count = view.holderCount ?? holders.length;
  const listed = holders.map((h) => `token ${h.token}${h.permits !== undefined ? ` ×${h.permits}` : h.mode === "shared" ? " shared" : ""} (${h.client})`).join(", ");
  const more = count > holders.length ? ` and ${count - holders.length} more` : "";
  const kind = view.kind === "semaphore" ? ` semaphore limit ${view.limit ?? "?"},` : "";
  return `${view.name}:${kind} ${listed}${more}, ${waiting}`;
}
