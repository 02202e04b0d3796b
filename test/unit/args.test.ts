/**
 * The flag parser every command uses (src/cli/args.ts): values, defaults,
 * aliases, environment variables, and a UsageError for every mistake.
 */
import { helpText, int, parseArgs, splitList, str, UsageError, type CommandSpec } from "../../src/cli/args";

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
