/**
 * What `dlm status` remembers between runs: the nodes of a cluster it saw
 * answer, and when. One small JSON file per cluster (prefix and NATS
 * servers) under `$XDG_STATE_HOME/dlm/` (default `~/.local/state/dlm/`), so
 * a node that answered yesterday and is silent today is reported missing
 * without the operator listing the nodes.
 *
 * Why on the operator's machine and not in the cluster: the question is
 * "did something I saw go away?", and the cluster cannot answer it about a
 * node that is not running. A record in NATS written by the nodes would
 * need every node to keep it fresh and would itself be a table to bound and
 * expire; a local file costs nothing and `--expect` covers the machines
 * that have never run status (monitoring, a fresh laptop).
 */
import { createHash } from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

/** Nodes remembered per cluster; a status from a runaway script cannot grow the file without bound. */
const MAX_REMEMBERED_NODES = 256;

export function stateDir(): string {
  const base = process.env.XDG_STATE_HOME && path.isAbsolute(process.env.XDG_STATE_HOME) ? process.env.XDG_STATE_HOME : path.join(os.homedir(), ".local", "state");
  return path.join(base, "dlm");
}

/** The file for one cluster: the same prefix and servers (in any order) share it. */
export function knownNodesFile(prefix: string, servers: string[]): string {
  const key = createHash("sha256").update(JSON.stringify([prefix, [...servers].sort()])).digest("hex").slice(0, 16);
  return path.join(stateDir(), `status-${key}.json`);
}

interface KnownNodesFile {
  prefix: string;
  servers: string[];
  /** node id -> when it last answered, ms since epoch */
  nodes: Record<string, number>;
}

/** The remembered nodes; an unreadable or missing file remembers nothing (status must work anyway). */
export function readKnownNodes(file: string): Map<string, number> {
  try {
    const body = JSON.parse(fs.readFileSync(file, "utf8")) as Partial<KnownNodesFile>;
    const nodes = new Map<string, number>();
    for (const [id, at] of Object.entries(body.nodes ?? {})) if (typeof at === "number") nodes.set(id, at);
    return nodes;
  } catch {
    return new Map();
  }
}

/** Writes the memory atomically; a failure only costs the memory, so it is a warning, not an error. */
export function writeKnownNodes(file: string, prefix: string, servers: string[], nodes: Map<string, number>): void {
  const newest = [...nodes].sort((a, b) => b[1] - a[1]).slice(0, MAX_REMEMBERED_NODES);
  const body: KnownNodesFile = { prefix, servers, nodes: Object.fromEntries(newest) };
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(body, null, 2) + "\n");
    fs.renameSync(tmp, file);
  } catch (err) {
    process.stderr.write(`dlm: could not remember the nodes seen in ${file}: ${(err as Error).message}\n`);
  }
}
