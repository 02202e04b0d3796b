/**
 * The leader's entry budget (src/coordinator/entryBudget.ts): an entry
 * takes the longest run of queued commands that encodes within the byte
 * budget, and the budget never exceeds what the server accepts in one
 * message. The integration side (a leader that stays leader when queued
 * commits add up to more than max_payload) is in test/integration/limits.test.ts.
 */
import { decodeEntry, encodeEntry } from "../../src/coordinator/entries";
import { DEFAULT_MAX_ENTRY_BYTES, fitEntry, maxEntryBytesFor, trimDigestToFit } from "../../src/coordinator/entryBudget";
import { MESSAGE_HEADROOM_BYTES } from "../../src/protocol/limits";
import type { SessionDigestCommand } from "../../src/state/sessionLiveness";
import type { Command } from "../../src/state";
import { mulberry32 } from "../support/random";

const header = { t: 1_796_000_000_000, node: "n1", epoch: 3 };

function append(seq: number, dataLength: number, client = "c1"): Command {
  return { type: "append", client, seq, ack: 0, token: 7, file: seq % 100, data: "A".repeat(dataLength) };
}

/** The longest prefix whose whole entry encodes within maxBytes, found the slow way. */
function longestFittingPrefix(commands: Command[], maxBytes: number): number {
  for (let k = commands.length; k > 0; k--) {
    const bytes = encodeEntry({ v: 1, ...header, cmds: commands.slice(0, k) });
    if (bytes.length <= maxBytes) return k;
  }
  return 0;
}

describe("maxEntryBytesFor", () => {
  test("the default is a whole message of a server with NATS's default max_payload, less the headroom", () => {
    expect(DEFAULT_MAX_ENTRY_BYTES).toBe(1_048_576 - MESSAGE_HEADROOM_BYTES);
    expect(maxEntryBytesFor(DEFAULT_MAX_ENTRY_BYTES, 1_048_576)).toBe(DEFAULT_MAX_ENTRY_BYTES);
  });

  test("a setting below the server's limit is used; one above it, or a server with a smaller max_payload, caps it", () => {
    expect(maxEntryBytesFor(500_000, 1_048_576)).toBe(500_000);
    expect(maxEntryBytesFor(8_000_000, 1_048_576)).toBe(1_048_576 - MESSAGE_HEADROOM_BYTES);
    expect(maxEntryBytesFor(DEFAULT_MAX_ENTRY_BYTES, 300_000)).toBe(300_000 - MESSAGE_HEADROOM_BYTES);
  });

  test("a server that did not say: NATS's default of 1 MiB", () => {
    expect(maxEntryBytesFor(DEFAULT_MAX_ENTRY_BYTES, undefined)).toBe(DEFAULT_MAX_ENTRY_BYTES);
    expect(maxEntryBytesFor(8_000_000, 0)).toBe(DEFAULT_MAX_ENTRY_BYTES);
  });
});

describe("fitEntry", () => {
  test("an entry within the budget takes every command and encodes as before", () => {
    const commands = [append(1, 100), append(2, 200)];
    const fitted = fitEntry(header, commands, 10_000);
    expect(fitted.taken).toBe(2);
    expect(fitted.entry).toEqual({ v: 1, ...header, cmds: commands });
    expect(Buffer.from(fitted.bytes).equals(Buffer.from(encodeEntry(fitted.entry)))).toBe(true);
  });

  test("over the budget: the longest prefix that fits, to the byte", () => {
    const commands = [append(1, 1000), append(2, 1000), append(3, 1000), append(4, 1000)];
    const twoBytes = encodeEntry({ v: 1, ...header, cmds: commands.slice(0, 2) }).length;
    // Exactly two commands' worth fits; one byte less leaves room for one.
    expect(fitEntry(header, commands, twoBytes).taken).toBe(2);
    expect(fitEntry(header, commands, twoBytes - 1).taken).toBe(1);
    const fitted = fitEntry(header, commands, twoBytes);
    expect(fitted.entry.cmds).toEqual(commands.slice(0, 2));
    expect(fitted.bytes.length).toBe(twoBytes);
    expect(decodeEntry(1, fitted.bytes)).toEqual(fitted.entry);
  });

  test("a first command that does not fit alone: nothing is taken", () => {
    const fitted = fitEntry(header, [append(1, 5000), append(2, 10)], 2000);
    expect(fitted.taken).toBe(0);
    expect(fitted.entry.cmds).toEqual([]);
  });

  test("bytes, not characters: multi-byte lock names and ids are counted in UTF-8", () => {
    const lock = "замок-🔒-".repeat(20);
    const commands: Command[] = [1, 2, 3].map((seq) => ({ type: "release", client: "клиент", seq, ack: 0, lock, token: seq }));
    const exact = encodeEntry({ v: 1, ...header, cmds: commands.slice(0, 2) }).length;
    expect(fitEntry(header, commands, exact).taken).toBe(2);
    expect(fitEntry(header, commands, exact - 1).taken).toBe(1);
  });

  test("the version is the prefix's own: a shared acquire left for the next entry does not make this one v2", () => {
    const shared: Command = { type: "acquire", client: "c2", seq: 1, ack: 0, lock: "l", leaseMs: 1000, waitMs: null, mode: "shared" };
    const commands = [append(1, 1000), shared];
    expect(fitEntry(header, commands, 1_000_000).entry.v).toBe(2);
    const oneBytes = encodeEntry({ v: 1, ...header, cmds: commands.slice(0, 1) }).length;
    const fitted = fitEntry(header, commands, oneBytes);
    expect(fitted.taken).toBe(1);
    expect(fitted.entry.v).toBe(1);
  });

  test("random batches: always the longest fitting prefix, never over the budget (seeded)", () => {
    const seed = 20261206;
    const random = mulberry32(seed);
    for (let round = 0; round < 300; round++) {
      const count = 1 + Math.floor(random() * 25);
      const commands = Array.from({ length: count }, (_, i) => append(i + 1, Math.floor(random() * 4000), random() < 0.3 ? "ü-client" : "c1"));
      const whole = encodeEntry({ v: 1, ...header, cmds: commands }).length;
      const maxBytes = 100 + Math.floor(random() * whole * 1.2);
      const fitted = fitEntry(header, commands, maxBytes);
      expect({ round, taken: fitted.taken }).toEqual({ round, taken: longestFittingPrefix(commands, maxBytes) });
      if (fitted.taken > 0) {
        expect(fitted.bytes.length).toBeLessThanOrEqual(maxBytes);
        expect(fitted.entry.cmds).toEqual(commands.slice(0, fitted.taken));
        expect(decodeEntry(1, fitted.bytes)).toEqual(fitted.entry);
      }
    }
  });
});

describe("trimDigestToFit", () => {
  const digest: SessionDigestCommand = {
    type: "sessionDigest",
    everyMs: 750,
    quietAfterMs: 5250,
    quiet: Array.from({ length: 1000 }, (_, i): [string, number] => [`ns.client-${String(i).padStart(6, "0")}`, 100_000 - i]),
  };
  const size = (d: SessionDigestCommand) => encodeEntry({ v: 1, ...header, cmds: [d] }).length;

  test("keeps the longest-quiet sessions, in order, as many as fit alone in an entry", () => {
    const maxBytes = Math.floor(size(digest) / 3);
    const trimmed = trimDigestToFit(header, digest, maxBytes)!;
    expect(size(trimmed)).toBeLessThanOrEqual(maxBytes);
    expect(trimmed.quiet).toEqual(digest.quiet.slice(0, trimmed.quiet.length));
    expect(size({ ...digest, quiet: digest.quiet.slice(0, trimmed.quiet.length + 1) })).toBeGreaterThan(maxBytes);
    expect(trimmed).toMatchObject({ everyMs: 750, quietAfterMs: 5250 });
  });

  test("a digest that fits is kept whole; one that cannot fit even empty is undefined", () => {
    expect(trimDigestToFit(header, digest, size(digest))?.quiet.length).toBe(1000);
    expect(trimDigestToFit(header, digest, 50)).toBeUndefined();
  });
});
