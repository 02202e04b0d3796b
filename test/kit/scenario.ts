import { tails, type DlmTestCluster } from "./dlmCluster";

export type Scenario = (name: string, fn: () => Promise<void>, timeoutMs?: number) => void;

/**
 * `test()` for scenarios on a shared cluster: a failure message ends with the
 * last `lines` lines of every node's output. `cluster` is read when a test
 * fails (the cluster is usually started in beforeAll, after tests are declared).
 */
export function scenarioWithTails(cluster: () => DlmTestCluster | undefined, lines = 40): Scenario {
  return (name, fn, timeoutMs) => {
    test(
      name,
      async () => {
        try {
          await fn();
        } catch (e) {
          const c = cluster();
          if (e instanceof Error && c) e.message += `\n${tails(c.nodes, lines)}`;
          throw e;
        }
      },
      timeoutMs,
    );
  };
}
