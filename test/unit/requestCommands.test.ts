/**
 * toCommand: what the leader logs for a validated request. The log must say
 * everything the state machine needs, so that replay does not depend on the
 * configuration of whoever replays it.
 */
import { toCommand } from "../../src/coordinator/requestCommands";
import { DEFAULT_LIMITS } from "../../src/protocol/limits";

const limits = { ...DEFAULT_LIMITS, defaultLeaseMs: 7_000 };
const session = { client: "orders.abcdefgh", seq: 5, ack: 4 };

describe("toCommand", () => {
  test("an acquire logs the node's default lease, 'wait forever' as null, and its mode (exclusive unless asked)", () => {
    expect(toCommand({ op: "acquire", ...session, lock: "a" }, limits)).toEqual({
      type: "acquire", ...session, lock: "a", leaseMs: 7_000, waitMs: null, mode: "exclusive",
    });
    expect(toCommand({ op: "acquire", ...session, lock: "a", leaseMs: 500, waitMs: 0, mode: "shared" }, limits)).toEqual({
      type: "acquire", ...session, lock: "a", leaseMs: 500, waitMs: 0, mode: "shared",
    });
  });

  test("a semaphore acquire logs its limit and permits (one unless asked), not a mode", () => {
    expect(toCommand({ op: "acquire", ...session, lock: "pool", limit: 3 }, limits)).toEqual({
      type: "acquire", ...session, lock: "pool", leaseMs: 7_000, waitMs: null, limit: 3, permits: 1,
    });
  });

  test("appends are logged by file index, in a release, a commit and a spilled append", () => {
    const appends = [{ file: "file_0", data: "YQ==" }, { file: "file_99", data: "Yg==" }];
    expect(toCommand({ op: "release", ...session, lock: "global", token: 9, staged: 1, appends }, limits)).toEqual({
      type: "release", ...session, lock: "global", token: 9, staged: 1, appends: [{ file: 0, data: "YQ==" }, { file: 99, data: "Yg==" }],
    });
    expect(toCommand({ op: "commit", ...session, lock: "global", appends }, limits)).toMatchObject({
      type: "commit", leaseMs: 7_000, waitMs: null, appends: [{ file: 0 }, { file: 99 }],
    });
    expect(toCommand({ op: "append", ...session, token: 9, file: "file_42", data: "YQ==" }, limits)).toEqual({
      type: "append", ...session, token: 9, file: 42, data: "YQ==",
    });
  });

  test("a release without a section logs neither a count nor appends (a client from before sections)", () => {
    expect(toCommand({ op: "release", ...session, lock: "global", token: 9 }, limits)).toEqual({ type: "release", ...session, lock: "global", token: 9 });
  });

  test("a renew without a lease logs null (keep the grant's own), an acquireAll logs each lock's mode", () => {
    expect(toCommand({ op: "renew", ...session, lock: "a", token: 3 }, limits)).toEqual({ type: "renew", ...session, lock: "a", token: 3, leaseMs: null });
    expect(toCommand({ op: "acquireAll", ...session, locks: [{ lock: "a" }, { lock: "b", mode: "shared" }] }, limits)).toEqual({
      type: "acquireAll", ...session, locks: [{ lock: "a", mode: "exclusive" }, { lock: "b", mode: "shared" }], leaseMs: 7_000, waitMs: null,
    });
  });
});
