/**
 * A DlmNode built around in-memory stand-ins for its log, lease, files and
 * NATS connection, for unit tests of its role changes (take-over, renewal,
 * step-down) without nats-server. The node's own code runs unchanged; the
 * tests reach its private steps through NodeInternals.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import type { Coordinator } from "../../src/coordinator/coordinator";
import { silentLogger } from "../../src/log/logger";
import { WrongLastSequenceError, type EntryHandler, type Follower } from "../../src/log/logStream";
import { DEFAULT_LIMITS } from "../../src/protocol/limits";
import { DlmNode, NODE_DEFAULTS, type NodeOptions, type Role } from "../../src/replica/node";
import type { RenewOutcome } from "../../src/replica/leaderLease";

/** The private parts of DlmNode these tests drive; the node has no test hooks of its own. */
export interface NodeInternals {
  role: Role;
  /** When the last lease write that succeeded was sent: what the node's freshness counts from. */
  lastLeaseOkAt: number;
  coordinator: Coordinator | undefined;
  transition: Promise<void>;
  becomeLeader(prevAliveAt: number | undefined, leaseSentAt: number): Promise<void>;
  renewLease(): Promise<void>;
  stepDown(reason: string): void;
}

export type { RenewOutcome } from "../../src/replica/leaderLease";

/** The leader lease as the node uses it once it leads: renewals and release. */
export class FakeLease {
  /** What the next renewal answers; a test replaces it to hang one or lose it. */
  renewOutcome: () => Promise<RenewOutcome> = async () => "renewed";
  /** When the last write of the key was sent; undefined: the node counts from its own ask. */
  lastWriteSentAt: number | undefined = undefined;
  /** Whether a renewal of the current acquisition is out; a test sets it to model one that hangs. */
  renewalInFlight = false;
  async release(): Promise<void> {
    // Nothing to delete: no key was written.
  }
}

/** The log as the node's take-over uses it: its tail, a catch-up read, a compare-and-swap append, following. */
export class FakeLog {
  readonly logId = "test-log";
  readonly entries: Uint8Array[] = [];
  async lastSeq(): Promise<number> {
    return this.entries.length;
  }
  async read(fromSeq: number, toSeq: number, onEntry: EntryHandler): Promise<void> {
    for (let seq = fromSeq; seq <= toSeq; seq++) await onEntry(seq, this.entries[seq - 1] as Uint8Array);
  }
  async append(data: Uint8Array, expectedLastSeq: number): Promise<number> {
    if (expectedLastSeq !== this.entries.length) throw new WrongLastSequenceError(expectedLastSeq);
    this.entries.push(data);
    return this.entries.length;
  }
  follow(fromSeq: number): Follower {
    // A follower that is never handed anything: these tests append only as leaders.
    return { nextSeq: fromSeq, done: new Promise<void>(() => undefined), stop: async () => undefined };
  }
}

/** The file store as applyEntry uses it, holding nothing (the tests write no sections). */
class FakeFiles {
  appliedSeq = 0;
  readonly checkpoint = { seq: 0 };
  append(): void {
    throw new Error("these tests write no file sections");
  }
  markApplied(seq: number): void {
    this.appliedSeq = seq;
  }
  lengths(): number[] {
    return [];
  }
}

function fakeConnection(): NatsConnection {
  const subscription = { drain: async () => undefined, unsubscribe: () => undefined };
  const nc = { info: { max_payload: 1024 * 1024 }, subscribe: () => subscription, publish: () => undefined };
  return nc as unknown as NatsConnection;
}

export interface NodeWithFakes {
  node: DlmNode;
  internals: NodeInternals;
  lease: FakeLease;
  log: FakeLog;
}

/**
 * A node that has recovered (nothing applied) and follows. The lease window
 * is an hour and the renew timer fires every half hour, so freshness never
 * runs out and no renewal goes out unless a test calls renewLease(); the
 * compactor is off.
 */
export function nodeWithFakes(): NodeWithFakes {
  const opts: NodeOptions = {
    ...NODE_DEFAULTS,
    nodeId: "A",
    dataDir: "/nonexistent",
    servers: [],
    prefix: "dlm",
    replicas: 1,
    limits: DEFAULT_LIMITS,
    logger: silentLogger,
    leaderTtlMs: 3_600_000,
    leaderTimeoutMs: 3_600_000,
    leaderRenewMs: 1_800_000,
    compaction: { ...NODE_DEFAULTS.compaction, snapshotEveryEntries: 0 },
  };
  const lease = new FakeLease();
  const log = new FakeLog();
  const construct = DlmNode as unknown as new (...args: unknown[]) => DlmNode;
  const node = new construct(opts, fakeConnection(), log, new FakeFiles(), lease, {});
  const internals = node as unknown as NodeInternals;
  internals.role = "follower";
  return { node, internals, lease, log };
}
