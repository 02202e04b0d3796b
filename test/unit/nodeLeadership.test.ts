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

  test("a renewal still in flight from the previous term neither blocks the next term's renewals nor deposes it", async () => {
    const { internals: n, lease } = nodeWithFakes();
    leaders.push(n);
    let settleFirst: (outcome: RenewOutcome) => void = () => undefined;
    let sent = 0;
    lease.renewOutcome = () => {
      sent++;
      return sent === 1 ? new Promise<RenewOutcome>((resolve) => (settleFirst = resolve)) : Promise.resolve("renewed");
    };

    // Term 1: its renewal hangs (NATS stalls), and the node steps down.
    await n.becomeLeader(undefined, Date.now());
    expect(n.role).toBe("leader");
    void n.renewLease();
    expect(sent).toBe(1);
    n.stepDown("leader lease is not fresh");
    await n.transition;
    expect(n.role).toBe("follower");

    // Term 2 begins while term 1's renewal is still out.
    await n.becomeLeader(undefined, Date.now());
    expect(n.role).toBe("leader");
    await n.renewLease();
    expect(sent).toBe(2);

    // Term 1's renewal times out ("lost"): that says nothing about term 2.
    settleFirst("lost");
    await settle();
    await n.transition;
    expect(n.role).toBe("leader");
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
