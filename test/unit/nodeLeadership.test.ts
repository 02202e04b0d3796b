/**
 * DlmNode's leadership terms: take-over, lease renewals and step-down, run
 * against the in-memory stand-ins of test/support/nodeFakes.ts.
 */
import { nodeWithFakes, type NodeInternals, type RenewOutcome } from "../support/nodeFakes";

const settle = async (): Promise<void> => {
  for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
};

describe("DlmNode leadership", () => {
  const leaders: NodeInternals[] = [];
  afterEach(async () => {
    for (const n of leaders.splice(0)) {
      n.stepDown("test over");
      await n.transition;
    }
  });

  test("a renewal still out for a lease given up since neither blocks the new lease's renewals nor, settling 'superseded', deposes it", async () => {
    const { internals: n, lease } = nodeWithFakes();
    leaders.push(n);
    let settleFirst: (outcome: RenewOutcome) => void = () => undefined;
    let sent = 0;
    lease.renewOutcome = () => {
      sent++;
      return sent === 1 ? new Promise<RenewOutcome>((resolve) => (settleFirst = resolve)) : Promise.resolve("renewed");
    };

    // First acquisition: its renewal hangs (NATS stalls) and the node steps down.
    await n.becomeLeader(undefined, Date.now());
    void n.renewLease();
    expect(sent).toBe(1);
    n.stepDown("leader lease is not fresh");
    await n.transition;
    expect(n.role).toBe("follower");

    // The key was given up and won anew: the old renewal no longer counts as
    // in flight (the real lease says so), and the new term renews at once.
    await n.becomeLeader(undefined, Date.now());
    expect(n.role).toBe("leader");
    await n.renewLease();
    expect(sent).toBe(2);

    // The old renewal settles for a lease that is no longer the one held.
    settleFirst("superseded");
    await settle();
    await n.transition;
    expect(n.role).toBe("leader");
  });

  test("while a renewal of the lease as held is out, a tick sends no second one", async () => {
    const { internals: n, lease } = nodeWithFakes();
    leaders.push(n);
    let sent = 0;
    lease.renewOutcome = async () => {
      sent++;
      return "renewed";
    };
    await n.becomeLeader(undefined, Date.now());
    lease.renewalInFlight = true;
    await n.renewLease();
    expect(sent).toBe(0);
    lease.renewalInFlight = false;
    await n.renewLease();
    expect(sent).toBe(1);
  });

  test("a renewal counts freshness from when its write was sent (a joined one went out before the tick that asked)", async () => {
    const { internals: n, lease } = nodeWithFakes();
    leaders.push(n);
    const t0 = Date.now() - 100;
    await n.becomeLeader(undefined, t0);
    expect(n.lastLeaseOkAt).toBe(t0);
    lease.lastWriteSentAt = t0 - 50;
    await n.renewLease();
    expect(n.lastLeaseOkAt).toBe(t0);
    lease.lastWriteSentAt = t0 + 60;
    await n.renewLease();
    expect(n.lastLeaseOkAt).toBe(t0 + 60);
  });

  test("a renewal of the current term that is lost still steps the node down", async () => {
    const { internals: n, lease } = nodeWithFakes();
    leaders.push(n);
    await n.becomeLeader(undefined, Date.now());
    lease.renewOutcome = async () => "lost";
    await n.renewLease();
    await n.transition;
    expect(n.role).toBe("follower");
  });

  describe("an unexpected error in a role change ends the process (exit 70)", () => {
    // The node's fatal path logs and calls process.exit(70); here exit only records.
    let exit: jest.SpyInstance;
    beforeEach(() => {
      exit = jest.spyOn(process, "exit").mockImplementation((() => undefined) as never);
    });
    afterEach(() => exit.mockRestore());

    test("the coordinator's stop() failing while the node steps down (an entry in flight could not be applied)", async () => {
      const { internals: n } = nodeWithFakes();
      await n.becomeLeader(undefined, Date.now());
      const coordinator = n.coordinator;
      if (!coordinator) throw new Error("the node leads without a coordinator");
      const stop = jest.spyOn(coordinator, "stop").mockRejectedValueOnce(Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" }));
      n.stepDown("leader lease could not be renewed");
      await n.transition;
      // It used to be swallowed: the node stayed "candidate", serving nothing and logging nothing.
      expect(exit).toHaveBeenCalledWith(70);
      stop.mockRestore();
      await coordinator.stop("test over");
    });

    test("an entry that cannot be applied while taking over", async () => {
      const { internals: n, log } = nodeWithFakes();
      log.entries.push(new TextEncoder().encode("not a log entry"));
      await n.becomeLeader(undefined, Date.now());
      // It used to count as a failed take-over: the node followed again from a half-applied state.
      expect(exit).toHaveBeenCalledWith(70);
      leaders.push(n);
    });
  });
});
