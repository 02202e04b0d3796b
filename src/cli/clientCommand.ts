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
import { connect, inboxPrefixFor, isDlmError, type DlmClient, type Lease } from "../client";
import { DEFAULT_PREFIX } from "../protocol/subjects";
import { CLIENT_NAMESPACE } from "../protocol/limits";
import { int, parseArgs, str, UsageError, type CommandSpec } from "./args";
import { connectNats, natsConnectionFromFlags, NATS_FLAGS } from "./natsFlags";

export const clientSpec: CommandSpec = {
  usage: "dlm client [flags]",
  summary:
    "An interactive client. Commands:\n" +
    "  acquire [LOCK] [LEASE_MS]   wait for LOCK (default global) and hold it; the lease is renewed in the background;\n" +
    "                              Ctrl-C cancels the wait on the server\n" +
    "  try [LOCK] [WAIT_MS]        acquire if granted within WAIT_MS (default 0: only if free now)\n" +
    "  append FILE TEXT            stage TEXT (plus a newline) for FILE under the global lock\n" +
    "  release [LOCK]              commit the staged appends and pass the lock on\n" +
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
    { name: "timeout-ms", kind: "int", default: 2000, help: "per-attempt request timeout" },
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

async function execute(client: DlmClient, words: string[], signal: AbortSignal, say: (line: string) => void): Promise<string> {
  const [command, ...args] = words;
  switch (command) {
    case "acquire": {
      const lock = args[0] ?? "global";
      const leaseMs = msArg(args[1], "LEASE_MS");
      const notice = setTimeout(() => say(`waiting for ${lock} (Ctrl-C cancels the wait)`), WAITING_NOTICE_MS);
      try {
        const lease = await client.acquire(lock, { signal, ...(leaseMs === undefined ? {} : { leaseMs }) });
        return `granted ${lease.lock}, fencing token ${lease.token}, lease ${lease.leaseMs} ms`;
      } catch (err) {
        if (signal.aborted && isDlmError(err, "CANCELLED")) return `cancelled: no longer waiting for ${lock}`;
        throw err;
      } finally {
        clearTimeout(notice);
      }
    }
    case "try": {
      const lock = args[0] ?? "global";
      const waitMs = msArg(args[1], "WAIT_MS") ?? 0;
      const lease = await client.tryAcquire(lock, { waitMs, signal });
      return lease
        ? `granted ${lease.lock}, fencing token ${lease.token}`
        : `${lock} is held by someone else${waitMs > 0 ? ` (not granted within ${waitMs} ms)` : ""}`;
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
      return held.length === 0 ? "no leases held" : held.map((l) => `${l.lock}: fencing token ${l.token}, lease ${l.leaseMs} ms, ${l.state}`).join("\n");
    }
    case "append": {
      if (args.length < 2) return "usage: append FILE TEXT";
      const result = await client.append(args[0], `${args.slice(1).join(" ")}\n`);
      return `staged (${result.staged.appends} appends, ${result.staged.bytes} bytes in this section)`;
    }
    case "release": {
      const committed = await client.release(args[0] ?? "global");
      return `released; committed ${committed.appends} appends (${committed.bytes} bytes)`;
    }
    case "read":
      if (args.length !== 1) return "usage: read FILE";
      return (await client.read(args[0])).toString();
    case "status": {
      const view = await client.status();
      const locks = view.locks.map((l) => `${l.name}: ${l.holder ? `token ${l.holder.token} (${l.holder.client})` : "free"}, ${l.queue.length} waiting`);
      return [`leader ${view.leader} epoch ${view.epoch}, ${view.sessions} sessions`, ...locks].join("\n");
    }
    case "help":
      return clientSpec.summary;
    default:
      return `unknown command ${JSON.stringify(command)} (try help)`;
  }
}
