/**
 * NATS subjects and JetStream names. Everything hangs off one prefix so that
 * several dlm clusters can share a NATS deployment.
 */
export const DEFAULT_PREFIX = "dlm";

export interface Names {
  /**
   * Requests to the leader; only a node that leads subscribes. No queue
   * group: while a frozen or cut-off old leader still holds a subscription,
   * the new leader gets every request too instead of half of them.
   */
  requestSubject: string;
  /** Grant and lease-lost notifications for one client. */
  notifySubject(client: string): string;
  /** Every node answers here with its own view (role, applied sequence); used by `dlm status`. */
  nodesInfoSubject: string;
  /** The log stream and the subject its entries are published on. */
  streamName: string;
  logSubject: string;
  /** KV bucket holding the leader lease, and the key in it. */
  leaderBucket: string;
  leaderKey: string;
  /** Object store holding the state snapshots that compaction relies on. */
  snapshotBucket: string;
}

export function names(prefix: string = DEFAULT_PREFIX): Names {
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(prefix)) {
    throw new Error(`invalid subject prefix ${JSON.stringify(prefix)}: use 1-32 of [A-Za-z0-9_-]`);
  }
  const upper = prefix.toUpperCase().replace(/-/g, "_");
  return {
    requestSubject: `${prefix}.req`,
    notifySubject: (client: string) => `${prefix}.notify.${client}`,
    nodesInfoSubject: `${prefix}.nodes.info`,
    streamName: `${upper}_LOG`,
    logSubject: `${prefix}.log`,
    leaderBucket: `${prefix}_leader`,
    leaderKey: "leader",
    snapshotBucket: `${prefix}_snapshots`,
  };
}

/**
 * The `inboxPrefix` a NATS connection was opened with, if it says so
 * (nats.js keeps its options on the connection): where replies to this
 * connection may be sent under the NATS user's permissions.
 */
export function connectionInboxPrefix(nc: object): string | undefined {
  const prefix = (nc as { options?: { inboxPrefix?: unknown } }).options?.inboxPrefix;
  return typeof prefix === "string" && prefix !== "" ? prefix : undefined;
}
