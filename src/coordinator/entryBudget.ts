/**
 * How many queued commands one log entry may take, by bytes.
 *
 * Group commit packs up to `maxBatchCommands` commands into one JetStream
 * message, but a command can carry up to a request's worth of appends
 * (about 88 KB by default), so a dozen queued commits made an entry larger
 * than NATS's `max_payload` (1 MB by default). nats.js refuses such a
 * publish, the leader took that for a broken log, retried, and stepped
 * down; the next leader built the same entry from the same retries. So an
 * entry now takes the longest run of queued commands, in order, that
 * encodes within the budget, and the rest wait for the next entry.
 *
 * Pure: the caller passes the budget (see `maxEntryBytesFor`).
 */
import { messageBudgetBytes } from "../protocol/limits";
import type { Command, LogEntry } from "../state";
import type { SessionDigestCommand } from "../state/sessionLiveness";
import { entryVersion } from "../state";
import { assert } from "../util/assert";
import { encodeEntry } from "./entries";

/** A command made from a request is its fields in another envelope: at most this much larger than the request. */
export const COMMAND_OVERHEAD_BYTES = 2048;

/** The default budget: a whole message of a server with NATS's default max_payload, less the headroom. */
export const DEFAULT_MAX_ENTRY_BYTES = messageBudgetBytes(undefined);

/**
 * The byte budget of one entry: what the operator configured, never more
 * than the connected server's max_payload less the headroom, since a
 * larger message cannot be published at all.
 */
export function maxEntryBytesFor(configuredBytes: number, serverMaxPayloadBytes: number | undefined): number {
  return Math.min(configuredBytes, messageBudgetBytes(serverMaxPayloadBytes));
}

export interface FittedEntry {
  /** How many of the commands, from the first, the entry holds; 0 when the first alone does not fit. */
  taken: number;
  entry: LogEntry;
  bytes: Uint8Array;
}

/**
 * The entry of the longest prefix of `commands` that encodes within
 * `maxBytes`. Entries under the budget, nearly all of them, are encoded
 * once; only an entry over it pays for measuring each command.
 */
export function fitEntry(header: Omit<LogEntry, "v" | "cmds">, commands: Command[], maxBytes: number): FittedEntry {
  const whole = build(header, commands);
  const wholeBytes = encodeEntry(whole);
  if (wholeBytes.length <= maxBytes) return { taken: commands.length, entry: whole, bytes: wholeBytes };
  // JSON.stringify writes an array as "[" + items joined by "," + "]", so an
  // entry's size is its envelope's plus each command's plus the commas.
  let total = encodeEntry(build(header, [])).length;
  let taken = 0;
  for (const command of commands) {
    const size = Buffer.byteLength(JSON.stringify(command), "utf8") + (taken > 0 ? 1 : 0);
    if (total + size > maxBytes) break;
    total += size;
    taken++;
  }
  const entry = build(header, commands.slice(0, taken));
  const bytes = encodeEntry(entry);
  assert(bytes.length <= maxBytes, () => `an entry of ${taken} commands measured ${total} bytes but encodes to ${bytes.length}, over ${maxBytes}`);
  return { taken, entry, bytes };
}

/**
 * A session digest cut to as many of its sessions, from the first, as fit
 * an entry of their own; undefined if not even an empty one does. The
 * digest lists the longest-quiet sessions first, and a session it leaves
 * out only counts as heard more recently, so a new leader expires it later,
 * never sooner (design.md §5): the same cut `maxDigestSessions` makes.
 */
export function trimDigestToFit(header: Omit<LogEntry, "v" | "cmds">, digest: SessionDigestCommand, maxBytes: number): SessionDigestCommand | undefined {
  const fits = (count: number): boolean => encodeEntry(build(header, [{ ...digest, quiet: digest.quiet.slice(0, count) }])).length <= maxBytes;
  if (!fits(0)) return undefined;
  // The largest count that fits, by bisection: fits(lo) holds, fits(hi + 1) does not.
  let lo = 0;
  let hi = digest.quiet.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid - 1;
  }
  return { ...digest, quiet: digest.quiet.slice(0, lo) };
}

function build(header: Omit<LogEntry, "v" | "cmds">, cmds: Command[]): LogEntry {
  return { v: entryVersion(cmds), t: header.t, node: header.node, epoch: header.epoch, cmds };
}
