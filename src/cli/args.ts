/**
 * Command-line flags, on top of `node:util` `parseArgs` (strict mode): each
 * command describes its flags in one table (`CommandSpec`), and the same
 * table drives parsing, validation and the `--help` text, so the help never
 * lists a flag the command does not take.
 *
 * What the table adds to `parseArgs`: integer flags that reject anything but
 * a non-negative integer, and anything outside the flag's range (`min`,
 * `max`: the range lives in the table, so the check, its message and the
 * help cannot disagree), long aliases (`--nats` for `--server`), a value
 * from an environment variable when the flag is not given (flag > env >
 * default), and a `UsageError` (exit code 2) with a plain message for every
 * mistake: an unknown flag, a missing value, a value given to a boolean flag
 * (`--json=no`, and `--json no`, whose "no" is a bare argument the command
 * does not take), a flag given twice.
 */
import { parseArgs as parseArgv } from "node:util";

export interface FlagSpec {
  name: string;
  help: string;
  kind: "string" | "int" | "bool";
  default?: string | number | boolean;
  /** Other long names for the same flag (e.g. "nats" for "server"); the value is stored under `name`. */
  aliases?: string[];
  /** Environment variable read when the flag is not given (before the default). */
  env?: string;
  /**
   * The smallest and largest value an int flag takes. A value outside is a
   * usage error naming the flag, the value and the range, never clamped:
   * a value silently changed is a setting the operator did not choose.
   */
  min?: number;
  max?: number;
}

export interface CommandSpec {
  usage: string;
  summary: string;
  flags: FlagSpec[];
  /**
   * How many bare arguments the command takes (`dlm read FILE`: 1); none
   * when absent. One more is a usage error, not something to ignore: a
   * forgotten `--data` before a path, or `--pretty false` (a boolean flag
   * takes no value, so "false" was left over and the flag turned on).
   */
  positionals?: number;
}

/** The largest TCP port: the `max` of every port flag. */
export const MAX_PORT = 65_535;

export type ParsedFlags = Record<string, string | number | boolean | undefined>;

export class UsageError extends Error {
  override name = "UsageError";
}

type Env = Record<string, string | undefined>;

/** Parses a non-negative integer the way a user types it: digits only, no "1e3", no "0x10", no "". */
function parseNonNegativeInt(flag: string, raw: string, from: string): number {
  const n = /^\d+$/.test(raw.trim()) ? Number(raw.trim()) : NaN;
  if (!Number.isSafeInteger(n)) throw new UsageError(`${from} ${flag} needs a non-negative integer, got ${JSON.stringify(raw)}`);
  return n;
}

/** The range of an int flag in words ("between 1 and 9", "at least 100"); undefined when it has none. */
export function rangeText(f: Pick<FlagSpec, "min" | "max">): string | undefined {
  if (f.min !== undefined && f.max !== undefined) return `between ${f.min} and ${f.max}`;
  if (f.min !== undefined) return `at least ${f.min}`;
  if (f.max !== undefined) return `at most ${f.max}`;
  return undefined;
}

function inRange(f: Pick<FlagSpec, "min" | "max">, value: number): boolean {
  return (f.min === undefined || value >= f.min) && (f.max === undefined || value <= f.max);
}

/**
 * Refuses a value outside the flag's range. `from` says where the value
 * came from, as the message should name it: "flag --nodes", "environment
 * variable X", "config file F: key \"k\"".
 */
export function checkRange(f: FlagSpec, value: number, from: string): number {
  if (!inRange(f, value)) {
    throw new UsageError(`${from} must be ${rangeText(f)}, got ${value}`);
  }
  return value;
}

/** A boolean from the environment: 1/true/yes or 0/false/no (anything else is a usage error). */
function parseEnvBool(variable: string, raw: string): boolean {
  const v = raw.trim().toLowerCase();
  if (["1", "true", "yes"].includes(v)) return true;
  if (["0", "false", "no", ""].includes(v)) return false;
  throw new UsageError(`environment variable ${variable} must be true or false, got ${JSON.stringify(raw)}`);
}

/** Turns a `parseArgs` error into a message that names the flag the way the user typed it. */
function usageErrorFrom(err: unknown): UsageError {
  const e = err as NodeJS.ErrnoException;
  const flag = /'(-[-\w]*)/.exec(e.message ?? "")?.[1];
  switch (e.code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return new UsageError(`unknown flag ${flag ?? e.message} (see --help)`);
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      if (/does not take an argument/.test(e.message)) return new UsageError(`flag ${flag} takes no value (give it alone to turn it on)`);
      if (/ambiguous/.test(e.message)) return new UsageError(`flag ${flag} needs a value; to pass one that starts with "-", write ${flag}=VALUE`);
      return new UsageError(`flag ${flag} needs a value`);
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return new UsageError(`unexpected argument: ${e.message}`);
    default:
      return new UsageError(e.message ?? String(err));
  }
}

/**
 * Parses `argv` against `spec`. Every flag of the spec is present in the
 * result: its value from the command line, else from its environment
 * variable, else its default (undefined when it has none).
 */
export function parseArgs(
  spec: CommandSpec,
  argv: string[],
  env: Env = process.env,
): { flags: ParsedFlags; positionals: string[]; help: boolean } {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = { help: { type: "boolean", short: "h" } };
  const owner = new Map<string, FlagSpec>();
  for (const f of spec.flags) {
    for (const n of [f.name, ...(f.aliases ?? [])]) {
      if (owner.has(n) || n === "help") throw new Error(`flag --${n} is defined twice in the spec of "${spec.usage}"`);
      owner.set(n, f);
      options[n] = { type: f.kind === "bool" ? "boolean" : "string" };
    }
    if (typeof f.default === "number") checkSpecDefault(spec, f);
  }
  let parsed: ReturnType<typeof parseArgv>;
  try {
    parsed = parseArgv({ args: argv, options, strict: true, allowPositionals: true, tokens: true });
  } catch (err) {
    throw usageErrorFrom(err);
  }
  // A flag given twice (or under two of its names) is a mistake, not "the
  // last one wins": the user meant one of them and we cannot tell which.
  const seen = new Map<string, string>();
  for (const token of parsed.tokens ?? []) {
    if (token.kind !== "option" || token.name === "help") continue;
    const f = owner.get(token.name)!;
    const before = seen.get(f.name);
    if (before !== undefined) throw new UsageError(`flag --${f.name} given more than once (${before} and ${token.rawName})`);
    seen.set(f.name, token.rawName);
  }
  const extra = parsed.positionals.slice(spec.positionals ?? 0);
  if (extra.length > 0 && (parsed.values as Record<string, unknown>).help !== true) {
    const tokens = parsed.tokens ?? [];
    const at = tokens.findIndex((t) => t.kind === "positional" && t.value === extra[0]);
    const before = at > 0 ? tokens[at - 1] : undefined;
    const afterBool = before?.kind === "option" && before.value === undefined && before.name !== "help";
    throw new UsageError(
      afterBool
        ? `unexpected argument ${JSON.stringify(extra[0])} after ${before.rawName}: a yes/no flag takes no value (give ${before.rawName} to turn it on, leave it out for off)`
        : `unexpected argument ${JSON.stringify(extra[0])}: "${spec.usage}" takes ${spec.positionals ? `${spec.positionals} bare argument(s)` : "only flags"}`,
    );
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  const flags: ParsedFlags = {};
  for (const f of spec.flags) {
    const given = [f.name, ...(f.aliases ?? [])].find((n) => values[n] !== undefined);
    const fromEnv = given === undefined && f.env !== undefined ? env[f.env] : undefined;
    if (given !== undefined) {
      const raw = values[given]!;
      flags[f.name] = f.kind === "int" ? checkRange(f, parseNonNegativeInt(`--${given}`, raw as string, "flag"), `flag --${given}`) : raw;
    } else if (fromEnv !== undefined && fromEnv !== "") {
      flags[f.name] =
        f.kind === "int"
          ? checkRange(f, parseNonNegativeInt(f.env!, fromEnv, "environment variable"), `environment variable ${f.env!} (--${f.name})`)
          : f.kind === "bool"
            ? parseEnvBool(f.env!, fromEnv)
            : fromEnv;
    } else {
      flags[f.name] = f.default;
    }
  }
  return { flags, positionals: parsed.positionals, help: values.help === true };
}

/** A default outside its own flag's range is a mistake in the spec, caught the first time the command parses. */
function checkSpecDefault(spec: CommandSpec, f: FlagSpec): void {
  if (!inRange(f, f.default as number)) {
    throw new Error(`flag --${f.name} of "${spec.usage}" defaults to ${String(f.default)}, outside its range (${rangeText(f)})`);
  }
}

export function helpText(spec: CommandSpec): string {
  const left = (f: FlagSpec) =>
    [f.name, ...(f.aliases ?? [])].map((n) => `--${n}`).join(", ") + (f.kind === "bool" ? "" : f.kind === "int" ? " <n>" : " <value>");
  const width = Math.max(...spec.flags.map((f) => left(f).length), 10);
  const lines = [`usage: ${spec.usage}`, "", spec.summary, ""];
  if (spec.flags.length > 0) lines.push("flags:");
  for (const f of spec.flags) {
    const range = rangeText(f);
    const notes = [f.default === undefined || f.default === false ? undefined : `default: ${String(f.default)}`, range].filter((n) => n !== undefined);
    const def = notes.length > 0 ? ` (${notes.join(", ")})` : "";
    const env = f.env ? ` [env ${f.env}]` : "";
    lines.push(`  ${left(f).padEnd(width + 2)}${f.help}${def}${env}`);
  }
  lines.push(`  ${"--help, -h".padEnd(width + 2)}show this help`);
  return lines.join("\n");
}

export function str(flags: ParsedFlags, name: string): string {
  const v = flags[name];
  if (typeof v !== "string") throw new UsageError(`flag --${name} is required`);
  return v;
}

export function int(flags: ParsedFlags, name: string): number {
  const v = flags[name];
  if (typeof v !== "number") throw new UsageError(`flag --${name} is required`);
  return v;
}

export function splitList(value: string): string[] {
  return value.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
}
