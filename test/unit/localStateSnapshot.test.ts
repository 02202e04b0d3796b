/**
 * The node's local state snapshot (storage/snapshotStore.ts): a shortcut
 * past the replay, so a damaged one must cost a replay, never a truncated
 * file in place or a node that cannot start.
 */
import * as fs from "fs";

/** When set, the next fs.writeSync takes at most this many bytes, as a disk near full may. */
let shortNextWriteBytes: number | undefined;
jest.mock("fs", () => {
  const actual = jest.requireActual<typeof import("fs")>("fs");
  return {
    ...actual,
    writeSync: (fd: number, buffer: Uint8Array, offset?: number, length?: number, position?: number | null) => {
      const short = shortNextWriteBytes;
      shortNextWriteBytes = undefined;
      if (short === undefined) return (actual.writeSync as (...a: unknown[]) => number)(fd, buffer, offset, length, position);
      // A string write (fd, text) is cut the same way: only its first bytes reach the file.
      if (typeof buffer === "string") return actual.writeSync(fd, Buffer.from(buffer as string).subarray(0, short));
      return actual.writeSync(fd, buffer, offset ?? 0, Math.min(short, length ?? buffer.length - (offset ?? 0)), position);
    },
  };
});
import * as os from "os";
import * as path from "path";
import { DEFAULT_LIMITS } from "../../src/protocol/limits";
import { createState, snapshot } from "../../src/state";
import { readSnapshot, writeSnapshot } from "../../src/storage/snapshotStore";
import { nodeWithFakes } from "../support/nodeFakes";

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "dlm-local-snapshot-"));
});
afterEach(() => {
  shortNextWriteBytes = undefined;
  fs.rmSync(dir, { recursive: true, force: true });
});

test("a write that the disk takes in pieces still stores the whole snapshot", () => {
  const stored = { logId: "log-1", seq: 42, state: snapshot(createState(DEFAULT_LIMITS)) };
  shortNextWriteBytes = 10;
  writeSnapshot(dir, stored);
  expect(shortNextWriteBytes).toBeUndefined();
  expect(readSnapshot(dir)).toEqual(stored);
});

test("a stored state that parses but does not restore is ignored with a warning: the node replays instead of failing to start", () => {
  const { node, log } = nodeWithFakes();
  const internals = node as unknown as { opts: { dataDir: string }; applied: number; restoreSnapshot(checkpointSeq: number, lastSeq: number): void };
  internals.opts.dataDir = dir;
  fs.writeFileSync(path.join(dir, "state-snapshot.json"), JSON.stringify({ logId: log.logId, seq: 0, state: { locks: "not a table" } }));
  expect(() => internals.restoreSnapshot(0, 0)).not.toThrow();
  expect(internals.applied).toBe(0);
});
