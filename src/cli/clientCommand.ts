/**
 * `dlm client`: an interactive prompt over the client library, for people
 * poking at a cluster. Reads commands line by line (a terminal or a pipe),
 * runs them one at a time, and prints one result line each.
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
    "  acquire [LOCK] [LEASE_MS]   wait for LOCK (default global) and hold it; the lease is renewed in the background\n" +
    "  try [LOCK]                  acquire only if free\n" +
    "  append FILE TEXT            stage TEXT (plus a newline) for FILE under the global lock\n" +
    "  release [LOCK]              commit the staged appends and pass the lock on\n" +
    "  read FILE                   print FILE's committed content\n" +
    "  status                      show locks, queues and the leader\n" +
    "  help, quit",
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
  rl.setPrompt("dlm> ");
  prompt();
  for await (const line of rl) {
    const words = line.trim().split(/\s+/).filter(Boolean);
    if (words.length === 0) {
      prompt();
      continue;
    }
    if (words[0] === "quit" || words[0] === "exit") break;
    try {
      out(await execute(client, words));
    } catch (err) {
      out(isDlmError(err) ? `error ${err.codeName} (code ${err.code}): ${err.message}` : `error: ${(err as Error).message}`);
    }
    prompt();
  }
  rl.close();
  out(String((await client.close()) ?? "Disconnected!"));
  await nc.close();
}

async function execute(client: DlmClient, words: string[]): Promise<string> {
  const [command, ...args] = words;
  switch (command) {
    case "acquire": {
      const leaseMs = args[1] === undefined ? undefined : Number(args[1]);
      const lease = await client.acquire(args[0] ?? "global", leaseMs === undefined ? {} : { leaseMs });
      return `granted ${lease.lock}, fencing token ${lease.token}, lease ${lease.leaseMs} ms`;
    }
    case "try": {
      const lease = await client.tryAcquire(args[0] ?? "global");
      return lease ? `granted ${lease.lock}, fencing token ${lease.token}` : `${args[0] ?? "global"} is held by someone else`;
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
