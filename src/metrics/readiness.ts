/**
 * When a node is ready, as a pure function of what it knows, so the rule
 * can be tested without a cluster.
 *
 * A leader is ready while it serves: its role is leader and its lease is
 * fresh by its own clock. A follower is ready while it could take over
 * promptly: connected, and within `maxLagEntries` of the log's tail as
 * measured just now (a tail it cannot measure counts as not ready: a
 * follower cut off from JetStream cannot catch up either). Starting,
 * candidate and stopped nodes are not ready.
 */
import type { MeasuredLogTail } from "./logTailProbe";

export interface ReadinessInput {
  role: "starting" | "follower" | "candidate" | "leader" | "stopped";
  natsConnected: boolean;
  leaseFresh: boolean;
  appliedSeq: number;
  /** undefined: the tail could not be measured. */
  tail: MeasuredLogTail | undefined;
  tailError?: string;
  maxLagEntries: number;
}

export interface Readiness {
  ready: boolean;
  /** One line for the probe's body and for logs. */
  reason: string;
  /** Entries behind the tail, when known. */
  lagEntries?: number;
}

export function readiness(input: ReadinessInput): Readiness {
  if (!input.natsConnected) return { ready: false, reason: "NATS connection is not connected" };
  if (input.role === "leader") {
    return input.leaseFresh ? { ready: true, reason: "leader, serving" } : { ready: false, reason: "leader lease is not fresh" };
  }
  if (input.role !== "follower") return { ready: false, reason: `node is ${input.role}` };
  if (!input.tail) return { ready: false, reason: `log tail unknown: ${input.tailError ?? "not measured"}` };
  const lagEntries = Math.max(0, input.tail.lastSeq - input.appliedSeq);
  if (lagEntries > input.maxLagEntries) {
    return { ready: false, reason: `follower is ${lagEntries} entries behind the log (at most ${input.maxLagEntries})`, lagEntries };
  }
  return { ready: true, reason: `follower, ${lagEntries} entries behind the log`, lagEntries };
}
