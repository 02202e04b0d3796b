/**
 * The NATS permissions each kind of dlm participant needs, derived from the
 * subject names (subjects.ts), and their nats-server configuration text.
 * docs/operations.md ("Security") shows the block `authorizationExample()`
 * renders, a unit test keeps the two equal, and the security integration
 * test runs a nats-server with exactly these permissions.
 *
 * - A **node** runs the log stream and the leader bucket through the
 *   JetStream API, publishes entries and notifications, serves requests and
 *   answers `dlm status` (its replies go to the requesters' inboxes through
 *   `allow_responses`, so it needs no publish right on anyone's inbox).
 * - A **client** in namespace N may only send requests on its namespace's
 *   subject (`<prefix>.req.N`, where the leader acts only on sessions of N)
 *   and hear what is meant for it: its notifications (`<prefix>.notify.N.>`)
 *   and its replies (`_INBOX_N.>`). It cannot touch the log, the leader
 *   bucket, the JetStream API, or another namespace's sessions,
 *   notifications or replies.
 * - An **operator** (`dlm status`, `dlm read`) asks the leader and the nodes
 *   and reads the stream's info; it cannot change anything but may see
 *   replies on `_INBOX.>`.
 */
import { names as subjectNames } from "./subjects";

export interface SubjectPermission {
  allow: string[];
  deny?: string[];
}

export interface NatsPermissions {
  publish: SubjectPermission;
  subscribe: SubjectPermission;
  /** Lets the user answer requests it received (any reply subject, once each). */
  allow_responses?: boolean;
}

export interface DlmPermissions {
  node: NatsPermissions;
  client(namespace: string): NatsPermissions;
  operator: NatsPermissions;
}

export function dlmPermissions(prefix?: string): DlmPermissions {
  const n = subjectNames(prefix);
  const stream = n.streamName;
  const kvStream = `KV_${n.leaderBucket}`;
  // The object store that holds state snapshots is a stream of its own.
  const snapshotStream = `OBJ_${n.snapshotBucket}`;
  const readStreamApi = (s: string): string[] => [
    `$JS.API.STREAM.INFO.${s}`,
    `$JS.API.STREAM.MSG.GET.${s}`,
    `$JS.API.CONSUMER.*.${s}`,
    `$JS.API.CONSUMER.*.${s}.>`,
    `$JS.API.DIRECT.GET.${s}`,
    `$JS.API.DIRECT.GET.${s}.>`,
  ];
  return {
    node: {
      publish: {
        allow: [
          // JetStream API, only for dlm's own stream and bucket: create and
          // info, message get, consumers (ordered consumers pull with
          // CONSUMER.MSG.NEXT), direct get of the KV key.
          "$JS.API.INFO",
          ...[stream, kvStream, snapshotStream].flatMap((s) => [
            `$JS.API.STREAM.*.${s}`,
            `$JS.API.STREAM.MSG.GET.${s}`,
            `$JS.API.CONSUMER.*.${s}`,
            `$JS.API.CONSUMER.*.${s}.>`,
            `$JS.API.CONSUMER.MSG.NEXT.${s}.>`,
            `$JS.API.DIRECT.GET.${s}`,
            `$JS.API.DIRECT.GET.${s}.>`,
          ]),
          n.logSubject,
          `$KV.${n.leaderBucket}.>`,
          `$O.${n.snapshotBucket}.>`,
          n.notifySubject(">"),
          n.nodesInfoSubject,
        ],
      },
      subscribe: { allow: ["_INBOX.>", n.requestSubject, n.namespaceRequestWildcard, n.nodesInfoSubject] },
      allow_responses: true,
    },
    client: (namespace: string) => ({
      publish: { allow: [n.namespaceRequestSubject(namespace)] },
      subscribe: { allow: [n.notifySubject(`${namespace}.>`), `_INBOX_${namespace}.>`] },
    }),
    operator: {
      // dlm status reads the stream's info and lists the stored snapshots.
      publish: { allow: [n.requestSubject, n.nodesInfoSubject, "$JS.API.INFO", `$JS.API.STREAM.INFO.${stream}`, ...readStreamApi(snapshotStream)] },
      subscribe: { allow: ["_INBOX.>"] },
    },
  };
}

/** A user of an authorization block: a user name and password, or an nkey (public key, U...). */
export type NatsUserEntry = ({ user: string; password: string; nkey?: undefined } | { nkey: string; user?: undefined; password?: undefined }) & {
  permissions?: NatsPermissions;
};

const q = (s: string) => JSON.stringify(s);

function renderList(subjects: string[], indent: string): string {
  if (subjects.length <= 3) return `[${subjects.map(q).join(", ")}]`;
  return `[\n${subjects.map((x) => `${indent}  ${q(x)}`).join("\n")}\n${indent}]`;
}

function renderPermission(p: SubjectPermission, indent: string): string {
  const allow = `allow: ${renderList(p.allow, indent)}`;
  return p.deny ? `{ ${allow}, deny: ${renderList(p.deny, indent)} }` : `{ ${allow} }`;
}

/** One `{ user: ..., password: ..., permissions: {...} }` entry of an authorization users list. */
export function renderUserEntry(u: NatsUserEntry, indent = "    "): string {
  const lines = [`${indent}{`];
  if (u.nkey !== undefined) {
    lines.push(`${indent}  nkey: ${q(u.nkey)}`);
  } else {
    // An unquoted $NAME is a variable nats-server takes from its environment.
    const password = /^\$[A-Za-z_][A-Za-z0-9_]*$/.test(u.password) ? u.password : q(u.password);
    lines.push(`${indent}  user: ${q(u.user)}`, `${indent}  password: ${password}`);
  }
  if (u.permissions) {
    lines.push(`${indent}  permissions: {`);
    lines.push(`${indent}    publish: ${renderPermission(u.permissions.publish, `${indent}    `)}`);
    lines.push(`${indent}    subscribe: ${renderPermission(u.permissions.subscribe, `${indent}    `)}`);
    if (u.permissions.allow_responses) lines.push(`${indent}    allow_responses: true`);
    lines.push(`${indent}  }`);
  }
  lines.push(`${indent}}`);
  return lines.join("\n");
}

/** An `authorization { users = [...] }` block. */
export function renderAuthorization(users: NatsUserEntry[]): string {
  return ["authorization {", "  users = [", ...users.map((u) => renderUserEntry(u)), "  ]", "}"].join("\n") + "\n";
}

/**
 * The block docs/operations.md shows: one node user, one operator, and a
 * client user for the namespace "orders". Passwords are placeholders (use
 * bcrypted ones, `nats server passwd`, in a real deployment).
 */
export function authorizationExample(prefix?: string): string {
  const p = dlmPermissions(prefix);
  return renderAuthorization([
    { user: "dlm-node", password: "$DLM_NODE_PASSWORD", permissions: p.node },
    { user: "dlm-operator", password: "$DLM_OPERATOR_PASSWORD", permissions: p.operator },
    { user: "orders", password: "$ORDERS_PASSWORD", permissions: p.client("orders") },
  ]);
}
