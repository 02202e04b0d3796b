/** Limits as configuration: flags, the config file, their precedence, and every check. */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { UsageError } from "../../src/cli/args";
import { parseArgsWithConfig } from "../../src/cli/configFile";
import { coordinatorOptionsOf, DEFAULT_LIMIT_SETTINGS, flagName, limitSettingsFromFlags, limitsOf } from "../../src/cli/limitsConfig";
import { nodeSpec } from "../../src/cli/nodeCommand";
import { DEFAULT_LIMITS } from "../../src/protocol/limits";
import { parseRequest } from "../../src/protocol/validate";

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "dlm-limits-"));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function configFile(body: unknown): string {
  const file = path.join(dir, `c${Math.random().toString(36).slice(2)}.json`);
  fs.writeFileSync(file, typeof body === "string" ? body : JSON.stringify(body));
  return file;
}

/** What `dlm node ARGV` would run with. */
function settings(argv: string[]) {
  return limitSettingsFromFlags(parseArgsWithConfig(nodeSpec, (argv)).flags);
}

function usageError(argv: string[]): string {
  try {
    settings(argv);
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error(`dlm node ${argv.join(" ")} was accepted`);
}

describe("defaults", () => {
  test("accept 10,000 waiters on one lock and 100,000 sessions, with locks in proportion", () => {
    expect(DEFAULT_LIMITS.maxQueueLength).toBeGreaterThanOrEqual(10_000);
    expect(DEFAULT_LIMITS.maxSessions).toBeGreaterThanOrEqual(100_000);
    expect(DEFAULT_LIMITS.maxLocks).toBeGreaterThanOrEqual(DEFAULT_LIMITS.maxSessions);
  });

  test("no flags and no file give the defaults", () => {
    expect(settings([])).toEqual(DEFAULT_LIMIT_SETTINGS);
  });
});

describe("flags", () => {
  test("every limit has a kebab-case flag that sets it", () => {
    const keys = Object.keys(DEFAULT_LIMIT_SETTINGS) as Array<keyof typeof DEFAULT_LIMIT_SETTINGS>;
    for (const key of keys) {
      const flag = `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
      // One more than the default keeps every cross-field rule.
      const value = DEFAULT_LIMIT_SETTINGS[key] + 1;
      expect(settings([flag, String(value)])[key]).toBe(value);
    }
  });

  test("limits and leader bounds go where they belong", () => {
    const s = settings(["--max-queue-length", "3", "--max-batch-commands", "7", "--max-request-bytes", "100000", "--status-max-waiters", "5"]);
    expect(limitsOf(s)).toEqual({ ...DEFAULT_LIMITS, maxQueueLength: 3 });
    // Exactly the Limits fields: they are written into the leader's log entry.
    expect(Object.keys(limitsOf(s)).sort()).toEqual(Object.keys(DEFAULT_LIMITS).sort());
    expect(coordinatorOptionsOf(s)).toMatchObject({ maxBatchCommands: 7, maxRequestBytes: 100_000, statusMaxWaiters: 5 });
  });

  test("the acquireAll and semaphore limits are flags and config keys, and reach validation", () => {
    expect([DEFAULT_LIMIT_SETTINGS.maxLocksPerRequest, DEFAULT_LIMIT_SETTINGS.maxSemaphoreLimit]).toEqual([32, 1_000_000]);
    const s = settings(["--config", configFile({ maxSemaphoreLimit: 10 }), "--max-locks-per-request", "2"]);
    expect(limitsOf(s)).toMatchObject({ maxLocksPerRequest: 2, maxSemaphoreLimit: 10 });
    const parse = (body: unknown) => parseRequest(Buffer.from(JSON.stringify({ client: "abcdefgh12345678", seq: 2, ack: 1, ...(body as object) })), limitsOf(s));
    expect(parse({ op: "acquireAll", locks: [{ lock: "a" }, { lock: "b" }, { lock: "c" }] })).toMatchObject({ ok: false, reply: { error: "BAD_REQUEST" } });
    expect(parse({ op: "acquireAll", locks: [{ lock: "a" }, { lock: "b" }] })).toMatchObject({ ok: true });
    expect(parse({ op: "acquire", lock: "pool", limit: 11 })).toMatchObject({ ok: false, reply: { error: "BAD_REQUEST" } });
    expect(parse({ op: "acquire", lock: "pool", limit: 10 })).toMatchObject({ ok: true });
    expect(usageError(["--max-locks-per-request", "0"])).toMatch(/maxLocksPerRequest \(--max-locks-per-request\) must be an integer of at least 1/);
  });

  test("docs/operations.md lists every limit with its flag, config key and default", () => {
    const docs = fs.readFileSync(path.join(__dirname, "../../docs/operations.md"), "utf8");
    for (const [key, value] of Object.entries(DEFAULT_LIMIT_SETTINGS)) {
      expect(docs).toMatch(new RegExp(`\\| \`--${flagName(key)}\`[^|]*\\| \`${key}\` \\| ${value} \\|`));
    }
  });

  test("--lease-ms is --default-lease-ms under its old name, and wins over the file like any flag", () => {
    expect(settings(["--lease-ms", "2000"]).defaultLeaseMs).toBe(2000);
    expect(settings(["--lease-ms=2500"]).defaultLeaseMs).toBe(2500);
    expect(usageError(["--lease-ms", "2000", "--default-lease-ms", "3000"])).toMatch(/given more than once/);
    expect(settings(["--config", configFile({ defaultLeaseMs: 4000 }), "--lease-ms", "2000"]).defaultLeaseMs).toBe(2000);
    expect(usageError(["--config", configFile({ leaseMs: 4000 })])).toMatch(/unknown key "leaseMs"/);
  });
});

describe("config file", () => {
  test("sets limits by camelCase key; flags win over it", () => {
    const file = configFile({ maxQueueLength: 3, maxSessions: 50, sessionTimeoutMs: 4000 });
    expect(settings(["--config", file])).toMatchObject({ maxQueueLength: 3, maxSessions: 50, sessionTimeoutMs: 4000 });
    expect(settings(["--config", file, "--max-queue-length", "9"])).toMatchObject({ maxQueueLength: 9, maxSessions: 50 });
    expect(settings(["--max-queue-length=9", "--config", file])).toMatchObject({ maxQueueLength: 9 });
  });

  test("the example file in docs/operations.md is accepted as written", () => {
    const doc = fs.readFileSync(path.join(__dirname, "../../docs/operations.md"), "utf8");
    const example = /A file for a three-server cluster:\s*```json\n([\s\S]*?)```/.exec(doc)?.[1];
    expect(example).toBeDefined();
    const { flags } = parseArgsWithConfig(nodeSpec, ["--config", configFile(example!)]);
    expect(flags).toMatchObject({ server: "nats://nats1:4222,nats://nats2:4222,nats://nats3:4222", replicas: 3, "default-lease-ms": 10000 });
  });

  test("other node flags may be set too", () => {
    const { flags } = parseArgsWithConfig(nodeSpec, ["--config", configFile({ id: "n7", pretty: true, replicas: 3 })]);
    expect(flags).toMatchObject({ id: "n7", pretty: true, replicas: 3 });
  });

  test.each([
    ["an unknown key", { maxQueueLenght: 3 }, /unknown key "maxQueueLenght"/],
    ["a kebab-case key", { "max-queue-length": 3 }, /unknown key "max-queue-length"/],
    ["a string for a number", { maxQueueLength: "3" }, /key "maxQueueLength" must be a non-negative integer, got "3"/],
    ["a fraction", { maxSessions: 1.5 }, /key "maxSessions" must be a non-negative integer/],
    ["a negative number", { maxLocks: -1 }, /key "maxLocks" must be a non-negative integer/],
    ["a number for a string", { id: 7 }, /key "id" must be a string/],
    ["a string for a boolean", { pretty: "yes" }, /key "pretty" must be true or false/],
    ["an array", [1], /must hold a JSON object/],
    ["not JSON", "{ maxQueueLength: 3 }", /is not valid JSON/],
    ["the config key itself", { config: "other.json" }, /unknown key "config"/],
  ])("%s is a usage error naming the key", (_what, body, message) => {
    const file = configFile(body);
    const text = usageError(["--config", file]);
    expect(text).toMatch(message);
    expect(text).toContain(file);
  });

  test("a missing file is a usage error", () => {
    expect(usageError(["--config", path.join(dir, "nope.json")])).toMatch(/cannot read config file .*nope\.json/);
  });
});

describe("checks", () => {
  test.each([
    [["--max-queue-length", "0"], /maxQueueLength \(--max-queue-length\) must be an integer of at least 1, got 0/],
    [["--max-sessions", "0"], /maxSessions/],
    [["--max-cached-replies", "1"], /maxCachedReplies .* at least 2/],
    [["--session-timeout-ms", "10"], /sessionTimeoutMs .* at least 100/],
    [["--min-lease-ms", "20000"], /defaultLeaseMs .* between minLeaseMs .* and maxLeaseMs/],
    [["--max-lease-ms", "5000"], /20000|5000/],
    [["--default-lease-ms", "100"], /defaultLeaseMs/],
    [["--max-append-bytes", "2000000"], /maxAppendBytes .* larger than maxSectionBytes/],
    [["--max-request-bytes", "50000"], /maxRequestBytes .* 50000 cannot carry an append of maxAppendBytes .* 65536/],
  ])("dlm node %j is refused with a clear message", (argv, message) => {
    expect(usageError(argv)).toMatch(message);
  });

  test("a bad value in the file names the key there", () => {
    const file = configFile({ minLeaseMs: 1000, defaultLeaseMs: 500 });
    expect(usageError(["--config", file])).toMatch(/defaultLeaseMs \(--default-lease-ms\) must lie between minLeaseMs/);
  });

  test("the limits of a large append fit when raised together", () => {
    expect(settings(["--max-append-bytes", "512000", "--max-section-bytes", "4000000", "--max-request-bytes", "700000"]).maxAppendBytes).toBe(512_000);
  });

  test("a log entry must hold the largest request: --max-entry-bytes below --max-request-bytes plus a command's envelope is refused", () => {
    expect(usageError(["--max-entry-bytes", "200000"])).toMatch(
      /maxEntryBytes \(--max-entry-bytes\) 200000 cannot hold a request of maxRequestBytes \(--max-request-bytes\) 262144/,
    );
    expect(usageError(["--max-request-bytes", "1100000"])).toMatch(/maxEntryBytes \(--max-entry-bytes\) 1044480 cannot hold/);
    expect(settings(["--max-entry-bytes", "300000"]).maxEntryBytes).toBe(300_000);
    expect(coordinatorOptionsOf(settings(["--max-entry-bytes", "300000"])).maxEntryBytes).toBe(300_000);
  });
});
