/**
 * The flag parser every command uses (src/cli/args.ts): values, defaults,
 * aliases, environment variables, and a UsageError for every mistake.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { helpText, int, parseArgs, splitList, str, UsageError, type CommandSpec } from "../../src/cli/args";
import { clientSpec } from "../../src/cli/clientCommand";
import { parseArgsWithConfig } from "../../src/cli/configFile";
import { leaderTimings, nodeSpec } from "../../src/cli/nodeCommand";
import { readSpec, statusSpec } from "../../src/cli/statusCommand";
import { upSpec } from "../../src/cli/upCommand";

const spec: CommandSpec = {
  usage: "dlm test [flags]",
  summary: "A command for tests.",
  flags: [
    { name: "server", aliases: ["nats"], kind: "string", env: "TEST_URL", default: "nats://127.0.0.1:4222", help: "servers" },
    { name: "lease-ms", kind: "int", env: "TEST_LEASE_MS", default: 10_000, help: "lease" },
    { name: "replicas", kind: "int", help: "replicas" },
    { name: "json", kind: "bool", env: "TEST_JSON", help: "print JSON" },
    { name: "no-sync", kind: "bool", help: "no fsync" },
  ],
};

const parse = (argv: string[], env: Record<string, string> = {}) => parseArgs(spec, argv, env);

function usageError(argv: string[], env: Record<string, string> = {}): string {
  try {
    parse(argv, env);
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    return (e as Error).message;
  }
  throw new Error(`${JSON.stringify(argv)} was accepted`);
}

describe("parseArgs", () => {
  test("defaults fill every flag the command line leaves out", () => {
    const { flags, positionals, help } = parse([]);
    expect(flags).toEqual({ server: "nats://127.0.0.1:4222", "lease-ms": 10_000, replicas: undefined, json: undefined, "no-sync": undefined });
    expect(positionals).toEqual([]);
    expect(help).toBe(false);
  });

  test("--name value, --name=value, booleans, positionals anywhere", () => {
    const { flags, positionals } = parseArgs({ ...spec, positionals: 2 }, ["file_1", "--server", "nats://a:1", "--lease-ms=500", "--json", "--no-sync", "more"], {});
    expect(flags).toMatchObject({ server: "nats://a:1", "lease-ms": 500, json: true, "no-sync": true });
    expect(positionals).toEqual(["file_1", "more"]);
  });

  test("an alias stores its value under the flag's name", () => {
    expect(parse(["--nats", "nats://b:2"]).flags.server).toBe("nats://b:2");
  });

  test("the environment fills a flag that is not given; the flag beats it", () => {
    const env = { TEST_URL: "nats://env:3", TEST_LEASE_MS: "750", TEST_JSON: "true" };
    expect(parse([], env).flags).toMatchObject({ server: "nats://env:3", "lease-ms": 750, json: true });
    expect(parse(["--server", "nats://flag:4", "--lease-ms", "900"], env).flags).toMatchObject({ server: "nats://flag:4", "lease-ms": 900 });
    expect(parse([], { TEST_URL: "" }).flags.server).toBe("nats://127.0.0.1:4222");
  });

  test("-h and --help are recognised", () => {
    expect(parse(["--help"]).help).toBe(true);
    expect(parse(["-h"]).help).toBe(true);
  });

  test("a boolean flag given a value is a usage error (--json=no used to print JSON)", () => {
    expect(usageError(["--json=no"])).toMatch(/flag --json takes no value/);
    expect(usageError(["--json=false"])).toMatch(/--json/);
  });

  test.each([["abc"], ["1.5"], ["1e3"], ["0x10"], [""], [" "], ["-1"], ["99999999999999999999"]])("an int flag rejects %j", (value) => {
    expect(usageError([`--lease-ms=${value}`])).toMatch(/--lease-ms needs a non-negative integer/);
  });

  test("an int from the environment is checked as strictly, naming the variable", () => {
    expect(usageError([], { TEST_LEASE_MS: "soon" })).toMatch(/environment variable TEST_LEASE_MS needs a non-negative integer/);
    expect(usageError([], { TEST_JSON: "maybe" })).toMatch(/TEST_JSON must be true or false/);
  });

  test("unknown flags, missing values and repeated flags are usage errors", () => {
    expect(usageError(["--colour"])).toMatch(/unknown flag --colour/);
    expect(usageError(["--server"])).toMatch(/flag --server needs a value/);
    expect(usageError(["--lease-ms", "-5"])).toMatch(/--lease-ms needs a value; to pass one that starts with "-"/);
    expect(usageError(["--server", "a", "--server", "b"])).toMatch(/--server given more than once/);
    expect(usageError(["--server", "a", "--nats", "b"])).toMatch(/--server given more than once \(--server and --nats\)/);
  });

  test("str and int require a value; splitList trims and drops empties", () => {
    const { flags } = parse([]);
    expect(str(flags, "server")).toBe("nats://127.0.0.1:4222");
    expect(int(flags, "lease-ms")).toBe(10_000);
    expect(() => int(flags, "replicas")).toThrow(UsageError);
    expect(() => str(flags, "replicas")).toThrow(/--replicas is required/);
    expect(splitList(" a, b,,c ")).toEqual(["a", "b", "c"]);
  });

  test("a spec that defines a flag twice is a programming error", () => {
    const bad: CommandSpec = { ...spec, flags: [...spec.flags, { name: "nats", kind: "string", help: "again" }] };
    expect(() => parseArgs(bad, [], {})).toThrow(/defined twice/);
  });
});

describe("helpText", () => {
  test("lists every flag with its aliases, default and environment variable", () => {
    const text = helpText(spec);
    expect(text).toMatch(/^usage: dlm test \[flags\]/);
    expect(text).toMatch(/--server, --nats <value> +servers \(default: nats:\/\/127\.0\.0\.1:4222\) \[env TEST_URL\]/);
    expect(text).toMatch(/--lease-ms <n> +lease \(default: 10000\)/);
    expect(text).toMatch(/--json +print JSON \[env TEST_JSON\]/);
    expect(text).toMatch(/--help, -h +show this help/);
  });
});

describe("bare arguments", () => {
  test("a value after a yes/no flag is refused, not left over while the flag turns on", () => {
    expect(usageError(["--json", "false"])).toMatch(/unexpected argument "false" after --json: a yes\/no flag takes no value/);
  });

  test("a bare argument a command does not take is refused (a path whose --data was forgotten)", () => {
    expect(usageError(["--replicas", "3", "/var/lib/dlm"])).toMatch(/unexpected argument "\/var\/lib\/dlm": "dlm test \[flags\]" takes only flags/);
  });

  test("a command that takes one gets it, and a second is refused", () => {
    const one: CommandSpec = { ...spec, usage: "dlm one FILE [flags]", positionals: 1 };
    expect(parseArgs(one, ["file_1", "--json"], {}).positionals).toEqual(["file_1"]);
    expect(() => parseArgs(one, ["file_1", "file_2"], {})).toThrow(/unexpected argument "file_2": "dlm one FILE \[flags\]" takes 1 bare argument/);
  });

  test("--help still shows the help", () => {
    expect(parse(["--help", "extra"]).help).toBe(true);
  });
});

describe("ranges of int flags", () => {
  const ranged: CommandSpec = {
    usage: "dlm ranged [flags]",
    summary: "A command whose int flags have ranges.",
    flags: [
      { name: "nodes", kind: "int", default: 1, min: 1, max: 9, env: "TEST_NODES", help: "nodes" },
      { name: "check-ms", kind: "int", default: 5000, min: 100, help: "check interval" },
      { name: "port", kind: "int", max: 65_535, help: "port" },
    ],
  };
  const refused = (argv: string[], env: Record<string, string> = {}): string => {
    try {
      parseArgs(ranged, argv, env);
    } catch (e) {
      expect(e).toBeInstanceOf(UsageError);
      return (e as Error).message;
    }
    throw new Error(`${JSON.stringify(argv)} was accepted`);
  };

  test("a value outside the range is a usage error naming the flag, the value and the range, not clamped", () => {
    expect(refused(["--nodes", "0"])).toBe("flag --nodes must be between 1 and 9, got 0");
    expect(refused(["--nodes=12"])).toBe("flag --nodes must be between 1 and 9, got 12");
    expect(refused(["--check-ms", "50"])).toBe("flag --check-ms must be at least 100, got 50");
    expect(refused(["--port", "70000"])).toBe("flag --port must be at most 65535, got 70000");
  });

  test("the bounds themselves and the values between are taken as given", () => {
    expect(parseArgs(ranged, ["--nodes", "1", "--check-ms", "100", "--port", "0"], {}).flags).toEqual({ nodes: 1, "check-ms": 100, port: 0 });
    expect(parseArgs(ranged, ["--nodes", "9", "--check-ms", "123456", "--port", "65535"], {}).flags).toEqual({ nodes: 9, "check-ms": 123_456, port: 65_535 });
  });

  test("a value from the environment is held to the same range, naming the variable and the flag", () => {
    expect(refused([], { TEST_NODES: "10" })).toBe("environment variable TEST_NODES (--nodes) must be between 1 and 9, got 10");
    expect(parseArgs(ranged, [], { TEST_NODES: "4" }).flags.nodes).toBe(4);
  });

  test("the help shows the range next to the default", () => {
    const text = helpText(ranged);
    expect(text).toMatch(/--nodes <n> +nodes \(default: 1, between 1 and 9\) \[env TEST_NODES\]/);
    expect(text).toMatch(/--check-ms <n> +check interval \(default: 5000, at least 100\)/);
    expect(text).toMatch(/--port <n> +port \(at most 65535\)$/m);
  });

  test("a default outside its own range is a programming error", () => {
    const bad: CommandSpec = { ...ranged, flags: [{ name: "nodes", kind: "int", default: 0, min: 1, help: "nodes" }] };
    expect(() => parseArgs(bad, [], {})).toThrow(/--nodes of "dlm ranged \[flags\]" defaults to 0, outside its range \(at least 1\)/);
  });

  test.each([
    ["node", nodeSpec],
    ["up", upSpec],
    ["client", clientSpec],
    ["status", statusSpec],
    ["read", readSpec],
  ])("every default of dlm %s lies in its flag's range", (_name, commandSpec) => {
    expect(() => parseArgs(commandSpec, [], {})).not.toThrow();
  });
});

describe("dlm node's flags that used to be clamped", () => {
  // Each was raised to its minimum without a word (Math.max in nodeCommand):
  // --log-timeout-ms 50 ran with 100, --snapshot-every 0 with 1.
  test.each([
    [["--log-timeout-ms", "50"], "flag --log-timeout-ms must be at least 100, got 50"],
    [["--snapshot-every", "0"], "flag --snapshot-every must be at least 1, got 0"],
    [["--keep-snapshots", "0"], "flag --keep-snapshots must be at least 1, got 0"],
    [["--compact-check-ms", "99"], "flag --compact-check-ms must be at least 100, got 99"],
    [["--metrics-port", "65536"], "flag --metrics-port must be at most 65535, got 65536"],
    [["--replicas", "0"], "flag --replicas must be between 1 and 5, got 0"],
  ])("dlm node %j is a usage error", (argv, message) => {
    expect(() => parseArgsWithConfig(nodeSpec, argv)).toThrow(new UsageError(message));
  });

  test("the leader lease's timings are checked against each other before anything starts (exit 2, not a node that fails once connected)", () => {
    const timings = (...argv: string[]) => leaderTimings(parseArgsWithConfig(nodeSpec, argv).flags);
    expect(timings()).toEqual({ leaderTtlMs: 2000, leaderRenewMs: 150, leaderTimeoutMs: 500 });
    expect(() => timings("--leader-renew-ms", "1001")).toThrow(new UsageError("--leader-renew-ms (1001) must be at most half of --leader-ttl-ms (2000)"));
    expect(() => timings("--leader-timeout-ms", "449")).toThrow(UsageError);
    expect(() => timings("--leader-timeout-ms", "2001")).toThrow(UsageError);
    expect(() => timings("--leader-renew-ms", "0")).toThrow(new UsageError("flag --leader-renew-ms must be at least 10, got 0"));
    expect(() => timings("--leader-ttl-ms", "99")).toThrow(UsageError);
  });

  test("the smallest valid values are kept as given", () => {
    const { flags } = parseArgsWithConfig(nodeSpec, ["--log-timeout-ms", "100", "--snapshot-every", "1", "--keep-snapshots", "1", "--compact-check-ms", "100", "--follow-poll-ms", "0"]);
    expect(flags).toMatchObject({ "log-timeout-ms": 100, "snapshot-every": 1, "keep-snapshots": 1, "compact-check-ms": 100, "follow-poll-ms": 0 });
  });

  test("a config file is held to the same ranges, naming the file, the key and the flag", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dlm-ranges-"));
    try {
      const file = path.join(dir, "node.json");
      fs.writeFileSync(file, JSON.stringify({ keepSnapshots: 0 }));
      expect(() => parseArgsWithConfig(nodeSpec, ["--config", file])).toThrow(
        new UsageError(`config file ${file}: key "keepSnapshots" (--keep-snapshots) must be at least 1, got 0`),
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("dlm up and dlm client refuse out-of-range values the same way", () => {
    expect(() => parseArgs(upSpec, ["--nodes", "10"], {})).toThrow(new UsageError("flag --nodes must be between 1 and 9, got 10"));
    expect(() => parseArgs(upSpec, ["--lease-ms", "100"], {})).toThrow(/flag --lease-ms must be between 500 and 600000, got 100/);
    expect(() => parseArgs(clientSpec, ["--timeout-ms", "0"], {})).toThrow(new UsageError("flag --timeout-ms must be at least 1, got 0"));
  });
});
