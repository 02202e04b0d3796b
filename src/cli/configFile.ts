/**
 * `--config FILE` for any command: a JSON object whose keys are the
 * command's flags in camelCase (`--max-queue-length` is `maxQueueLength`).
 * Values on the command line win over the file, the file wins over the
 * defaults. An unknown key or a value of the wrong type is a usage error
 * that names the file and the key: a typo in a config file must not
 * silently leave a limit at its default.
 */
import * as fs from "fs";
import { checkRange, parseArgs, UsageError, type CommandSpec, type ParsedFlags } from "./args";

export const CONFIG_FLAG = "config";

/** Parses argv like `parseArgs`, with the values of `--config FILE` between the defaults and the command line. */
export function parseArgsWithConfig(spec: CommandSpec, argv: string[]): { flags: ParsedFlags; positionals: string[] } {
  // Parse once without defaults to learn which flags the command line set.
  const bare: CommandSpec = { ...spec, flags: spec.flags.map((f) => ({ ...f, default: undefined })) };
  const given = parseArgs(bare, argv);
  const flags: ParsedFlags = {};
  for (const f of spec.flags) flags[f.name] = f.default;
  const file = given.flags[CONFIG_FLAG];
  if (typeof file === "string") Object.assign(flags, readConfigFile(spec, file));
  for (const [name, value] of Object.entries(given.flags)) if (value !== undefined) flags[name] = value;
  return { flags, positionals: given.positionals };
}

export function camelName(flag: string): string {
  return flag.replace(/-([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

/** The file's settings as flag values (kebab-case names), checked against the command's flags. */
export function readConfigFile(spec: CommandSpec, file: string): ParsedFlags {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new UsageError(`cannot read config file ${file}: ${(err as Error).message}`);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`config file ${file} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new UsageError(`config file ${file} must hold a JSON object of settings`);
  }
  const byKey = new Map(spec.flags.filter((f) => f.name !== CONFIG_FLAG).map((f) => [camelName(f.name), f]));
  const flags: ParsedFlags = {};
  for (const [key, value] of Object.entries(body as Record<string, unknown>)) {
    const flag = byKey.get(key);
    if (!flag) {
      throw new UsageError(`config file ${file}: unknown key ${JSON.stringify(key)} (keys are the flags in camelCase: ${[...byKey.keys()].join(", ")})`);
    }
    const bad = (what: string) => new UsageError(`config file ${file}: key ${JSON.stringify(key)} must be ${what}, got ${JSON.stringify(value)}`);
    if (flag.kind === "int" && (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0)) throw bad("a non-negative integer");
    if (flag.kind === "string" && typeof value !== "string") throw bad("a string");
    if (flag.kind === "bool" && typeof value !== "boolean") throw bad("true or false");
    // The same range as on the command line: a value out of range in the file is refused, not clamped.
    if (flag.kind === "int") checkRange(flag, value as number, `config file ${file}: key ${JSON.stringify(key)} (--${flag.name})`);
    flags[flag.name] = value as string | number | boolean;
  }
  return flags;
}
