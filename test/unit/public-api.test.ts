/**
 * The package's public surface (src/client/index.ts, the only entry point
 * package.json exports), and what leaving an `await using` scope does to a
 * lease, against a stand-in for the client.
 */
import * as publicApi from "../../src/client";
import { Lease, type Committed, type Discarded, type LeaseOwner } from "../../src/client/lease";
import { LeaseSet } from "../../src/client/leaseSet";

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
        "LeaseSet",
        "LimitExceededError",
        "LockExpiredError",
        "LockKindMismatchError",
        "NotHolderError",
        "NotLeaderError",
        "SectionMismatchError",
        "Semaphore",
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
    for (const internal of [
      "mulberry32",
      "resolveOptions",
      "mapNatsError",
      "Backoff",
      "retry",
      "NatsTransport",
      "natsConnectionOptions",
      "lockList",
      "shapeFields",
      "runWhileHolding",
    ]) {
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

describe("LeaseSet and await using", () => {
  test("leaving the scope ends every lease of the set without committing", async () => {
    const owner = new RecordingOwner();
    {
      await using set = new LeaseSet([new Lease(owner, info, "c1"), new Lease(owner, { ...info, lock: "other", token: 8 }, "c1")]);
      expect(set.leases.map((l) => l.token)).toEqual([7, 8]);
    }
    expect(owner.calls).toEqual(["endUncommitted:held", "endUncommitted:held"]);
  });
});
