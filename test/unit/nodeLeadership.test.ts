/**
 * DlmNode's leadership terms: take-over, lease renewals and step-down, run
 * against the in-memory stand-ins of test/support/nodeFakes.ts.
 */
import { nodeWithFakes, type NodeInternals } from "../support/nodeFakes";

describe("DlmNode leadership", () => {
  const leaders: NodeInternals[] = [];
  afterEach(async () => {
    for (const n of leaders.splice(0)) {
      n.stepDown("test over");
      await n.transition;
    }
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
