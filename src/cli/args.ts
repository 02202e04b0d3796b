/**
 * A small flag parser: `--name value`, `--name=value`, boolean `--flag`,
 * positionals, and `--help` text built from the same table, so the help
 * never lists a flag the command does not take.
 */
export interface FlagSpec {
  name: string;
  help: string;
  kind: "string" | "int" | "bool";
  default?: string | number | boolean;
}

export interface CommandSpec {
  usage: string;
  summary: string;
  flags: FlagSpec[];
}

export type ParsedFlags = Record<string, string | number | boolean | undefined>;

export class UsageError extends Error {
  override name = "UsageError";
}

export function parseArgs(spec: CommandSpec, argv: string[]): { flags: ParsedFlags; positionals: string[]; help: boolean } {
  const flags: ParsedFlags = {};
  for (const f of spec.flags) flags[f.name] = f.default;
  const positionals: string[] = [];
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--help" || arg === "-h") {
      help = true;
      continue;
    }
    if (!arg.startsWith("--")) {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    const flag = spec.flags.find((f) => f.name === name);
    if (!flag) throw new UsageError(`unknown flag --${name} (see --help)`);
    if (flag.kind === "bool") {
      flags[name] = eq === -1 ? true : arg.slice(eq + 1) !== "false";
      continue;
    }
    const value = eq === -1 ? argv[++i] : arg.slice(eq + 1);
    if (value === undefined) throw new UsageError(`flag --${name} needs a value`);
    if (flag.kind === "int") {
      const n = Number(value);
      if (!Number.isSafeInteger(n) || n < 0) throw new UsageError(`flag --${name} needs a non-negative integer, got ${JSON.stringify(value)}`);
      flags[name] = n;
    } else {
      flags[name] = value;
    }
  }
  return { flags, positionals, help };
}

export function helpText(spec: CommandSpec): string {
  const width = Math.max(...spec.flags.map((f) => f.name.length + (f.kind === "bool" ? 0 : 8)), 10);
  const lines = [`usage: ${spec.usage}`, "", spec.summary, ""];
  if (spec.flags.length > 0) lines.push("flags:");
  for (const f of spec.flags) {
    const left = `--${f.name}${f.kind === "bool" ? "" : f.kind === "int" ? " <n>" : " <value>"}`;
    const def = f.default === undefined || f.default === false ? "" : ` (default: ${String(f.default)})`;
    lines.push(`  ${left.padEnd(width + 4)}${f.help}${def}`);
  }
  lines.push(`  ${"--help".padEnd(width + 4)}show this help`);
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
