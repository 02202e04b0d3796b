import { sleep } from "./dlmCluster";

/**
 * Polls `cond` every 25 ms until it holds; resolves with how long that took.
 * After `timeoutMs` it throws "timed out after … waiting for <what>", followed
 * by `context()` (e.g. the last lines of every node's output) when given.
 */
export async function until(
  cond: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
  context?: () => string,
): Promise<number> {
  const start = Date.now();
  while (!(await cond())) {
    if (Date.now() - start > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${context ? `\n${context()}` : ""}`);
    }
    await sleep(25);
  }
  return Date.now() - start;
}

/**
 * Calls `attempt` until `accept` takes its answer, 100 ms apart; an attempt
 * that throws counts as not accepted. After `timeoutMs` it throws
 * "<failure> within <timeoutMs> ms: <the last answer or error>".
 */
export async function retry<T>(attempt: () => Promise<T>, accept: (answer: T) => boolean, timeoutMs: number, failure: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    try {
      const answer = await attempt();
      if (accept(answer)) return answer;
      last = JSON.stringify(answer);
    } catch (e) {
      last = (e as Error).message;
    }
    await sleep(100);
  }
  throw new Error(`${failure} within ${timeoutMs} ms: ${last}`);
}
