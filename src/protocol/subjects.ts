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
  /**
   * Requests of the clients of one namespace: `<requestSubject>.<namespace>`.
   * A client user may publish only on its namespace's subject, and the
   * leader acts on a request only for a session of the namespace its
   * subject names, so no client user can act under another namespace's
   * session (docs/operations.md, "Security").
   */
  namespaceRequestSubject(namespace: string): string;
  /** What a leader subscribes to besides `requestSubject`: every namespace's subject. */
  namespaceRequestWildcard: string;
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
    namespaceRequestSubject: (namespace: string) => `${prefix}.req.${namespace}`,
    namespaceRequestWildcard: `${prefix}.req.*`,
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

/** The namespace of a client id (`orders.V1StGXR8_Z5jdHi6B-myT` is in "orders"), or undefined for an id without one. */
export function clientNamespace(clientId: string): string | undefined {
  const dot = clientId.indexOf(".");
  return dot < 0 ? undefined : clientId.slice(0, dot);
}

/** The subject a request of `clientId` (none: status, read) goes to: its namespace's, or the plain request subject. */
export function requestSubjectFor(names: Names, clientId: string | undefined): string {
  const namespace = clientId === undefined ? undefined : clientNamespace(clientId);
  return namespace === undefined ? names.requestSubject : names.namespaceRequestSubject(namespace);
}

/**
 * Why a leader must not act on a request for `clientId` that arrived on
 * `subject`, or undefined when it may: the client id's namespace must be
 * the one the subject names (none on the plain request subject). Requests
 * that name no client (status, read) may come on either.
 */
export function namespaceMismatch(names: Names, subject: string, clientId: string | undefined): string | undefined {
  if (clientId === undefined) return undefined;
  const own = clientNamespace(clientId);
  const fromSubject = subject === names.requestSubject ? undefined : subject.slice(names.requestSubject.length + 1);
  if (own === fromSubject) return undefined;
  if (fromSubject === undefined) {
    return `client ${clientId} is in namespace ${own}: its requests go to ${names.namespaceRequestSubject(own!)}, not ${subject} (a client that sends them here predates per-namespace request subjects: upgrade it)`;
  }
  return `a request on ${subject} may only name a session of namespace ${fromSubject}, not ${clientId}`;
}
