/** The `dlm` command: a thin dispatcher to one module per subcommand. */
import { helpText, UsageError, type CommandSpec } from "./args";
import { nodeSpec, runNode } from "./nodeCommand";
import { version } from "../version";
import { errorMessage } from "../util/errorMessage";

interface Subcommand {
  spec: CommandSpec;
  run(argv: string[]): Promise<void>;
}

// Each subcommand's module is loaded only when it is used, so `dlm node`
// does not load the client library and `dlm status` does not load the node.
const commands: Record<string, () => Subcommand> = {
  node: () => ({ spec: nodeSpec, run: runNode }),
  up: () => {
    const m = require("./upCommand") as typeof import("./upCommand");
    return { spec: m.upSpec, run: m.runUp };
  },
  status: () => {
    const m = require("./statusCommand") as typeof import("./statusCommand");
    return { spec: m.statusSpec, run: m.runStatus };
  },
  read: () => {
    const m = require("./statusCommand") as typeof import("./statusCommand");
    return { spec: m.readSpec, run: m.runRead };
  },
  client: () => {
    const m = require("./clientCommand") as typeof import("./clientCommand");
    return { spec: m.clientSpec, run: m.runClient };
  },
};

const SUMMARY = `usage: dlm <command> [flags]

dlm is a fenced, leased lock service over NATS JetStream that guards the
append-only files file_0 … file_99.

commands:
  up       start a local deployment (nats-server + dlm nodes), optionally run the demo
  node     run one dlm node
  status   show the leader, the log, every node and every lock
  read     print the committed content of a file
  client   an interactive client: acquire, append, release, status

Run 'dlm <command> --help' for its flags; 'dlm --version' (-V) prints the version.`;

async function main(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(SUMMARY + "\n");
    return;
  }
  if (name === "--version" || name === "-V") {
    process.stdout.write(`dlm ${version()}\n`);
    return;
  }
  const make = commands[name];
  if (!make) throw new UsageError(`unknown command ${JSON.stringify(name)}\n\n${SUMMARY}`);
  const command = make();
  if (rest.includes("--help") || rest.includes("-h")) {
    process.stdout.write(helpText(command.spec) + "\n");
    return;
  }
  await command.run(rest);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof UsageError) {
    process.stderr.write(`dlm: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`dlm: ${errorMessage(err)}\n`);
  // Errors that carry their own exit code (NatsConnectError: 4) keep it, so
  // a script can tell "NATS refused us" from other failures.
  const exitCode = (err as { exitCode?: unknown } | null)?.exitCode;
  process.exit(typeof exitCode === "number" ? exitCode : 1);
});
