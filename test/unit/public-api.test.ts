/**
 * The package's public surface (src/client/index.ts, the only entry point
 * package.json exports), and what leaving an `await using` scope does to a
 * lease, against a stand-in for the client.
 */
import * as publicApi from "../../src/client";
import { Lease, type Committed, type Discarded, type LeaseOwner } from "../../src/client/lease";

describe("the public API", () => {
  test("exports exactly what a user needs at run time, and no internal helper", () => {
    expect(Object.keys(publicApi).sort()).toEqual(
      [
        "AlreadyHeldError",
        "BadRequestError",
        "CancelledError",
        "ClosedError",
        "DEFAULT_LOCK",
        "DlmClient",
        "DlmError",
        "ErrorCodes",
        "FaultInjector",
        "FileNotFoundError",
        "InternalError",
        "Lease",
        "LimitExceededError",
        "LockExpiredError",
        "LockKindMismatchError",
        "NotHolderError",
        "NotLeaderError",
        "SectionMismatchError",
        "SessionExpiredError",
        "StaleRequestError",
        "TimeoutError",
        "TooLargeError",
        "UnavailableError",
        "UnknownOpError",
        "WaitTimeoutError",
        "connect",
        "inboxPrefixFor",
        "init",
        "isDlmError",
      ].sort(),
    );
    for (const internal of ["mulberry32", "resolveOptions", "mapNatsError", "Backoff", "retry", "NatsTransport", "natsConnectionOptions"]) {
      expect(publicApi).not.toHaveProperty(internal);
    }
  });
});

/** A LeaseOwner that records what the lease asked of it. */
class RecordingOwner implements LeaseOwner {
  readonly calls: string[] = [];
  async release(lease: Lease): Promise<Committed> {
    this.calls.push("release");
    lease._setState("released");
    return { appends: 0, bytes: 0 };
  }
  async abandon(): Promise<Discarded> {
    this.calls.push("abandon");
    return { appends: 0, bytes: 0 };
  }
  async renew(lease: Lease): Promise<Lease> {
    return lease;
  }
  async endUncommitted(lease: Lease): Promise<void> {
    this.calls.push(`endUncommitted:${lease.state}`);
  }
}

const info = { lock: "global", token: 7, leaseMs: 1000, expiresAt: 0 };

describe("Lease and await using", () => {
  test("Symbol.asyncDispose is the one Node 20 defines", () => {
    expect(typeof Symbol.asyncDispose).toBe("symbol");
    expect(Symbol.asyncDispose).toBe(Symbol.for("nodejs.asyncDispose"));
  });

  test("leaving the scope asks the client to end the grant without committing", async () => {
    const owner = new RecordingOwner();
    {
      await using lease = new Lease(owner, info, "c1");
      expect(lease.token).toBe(7);
    }
    expect(owner.calls).toEqual(["endUncommitted:held"]);
  });

  test("an exception leaves the scope unchanged after the disposal ran", async () => {
    const owner = new RecordingOwner();
    const boom = new Error("boom");
    const run = async (): Promise<void> => {
      await using _lease = new Lease(owner, info, "c1");
      throw boom;
    };
    await expect(run()).rejects.toBe(boom);
    expect(owner.calls).toEqual(["endUncommitted:held"]);
  });
});
