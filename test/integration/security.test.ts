/**
 * dlm on a secured NATS: real nats-server processes with users and the
 * permissions of docs/operations.md (src/protocol/permissions.ts), with TLS
 * (a CA and certificates made by openssl for this run), and a client whose
 * NATS connection comes from another copy of the @nats-io packages.
 */
import * as fs from "fs";
import * as path from "path";
import { connect as natsConnect } from "@nats-io/transport-node";
import { credsAuthenticator, nkeys, type NatsConnection, type Status } from "@nats-io/nats-core";
import { connect, type DlmClient, type Logger } from "../../src/client";
import { dlmPermissions } from "../../src/protocol/permissions";
import { makeTestCertificates, type TestCertificates } from "../kit/certs";
import { runDlm } from "../kit/cli";
import { startDlmCluster, sleep, type DlmTestCluster } from "../kit/dlmCluster";
import { startDlmNode } from "../kit/dlmNode";
import { readLogEntries } from "../kit/logEntries";
import { loadForeignNats } from "../kit/foreignNats";
import { makeOperatorSetup } from "../kit/jwt";
import { startNats } from "../kit/nats";
import { makeTempDir, removeTempDir } from "../kit/tmp";

const encoder = new TextEncoder();

/** Permission violations the server reports on a connection, as "publish <subject>" / "subscription <subject>". */
function watchViolations(nc: NatsConnection): string[] {
  const seen: string[] = [];
  void (async () => {
    for await (const s of nc.status() as AsyncIterable<Status>) {
      if (s.type !== "error") continue;
      const e = s.error as { name?: string; operation?: string; subject?: string };
      if (e.name === "PermissionViolationError") seen.push(`${e.operation} ${e.subject}`);
    }
  })();
  return seen;
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

describe("least privilege: node, operator and client users with the documented permissions", () => {
  const pw = { node: "node-pw", operator: "operator-pw", orders: "orders-pw", billing: "billing-pw" };
  const operatorKey = nkeys.createUser();
  let cluster: DlmTestCluster;
  let dir: string;
  let nkeyFile: string;

  beforeAll(async () => {
    dir = makeTempDir("dlm-security-");
    nkeyFile = path.join(dir, "operator.nk");
    fs.writeFileSync(nkeyFile, new TextDecoder().decode(operatorKey.getSeed()));
    const perms = dlmPermissions();
    cluster = await startDlmCluster({
      nodes: 2,
      leaseMs: 5000,
      natsAuthorization: {
        users: [
          { user: "dlm-node", password: pw.node, permissions: perms.node },
          { user: "dlm-operator", password: pw.operator, permissions: perms.operator },
          { nkey: operatorKey.getPublicKey(), permissions: perms.operator },
          { user: "orders", password: pw.orders, permissions: perms.client("orders") },
          { user: "billing", password: pw.billing, permissions: perms.client("billing") },
        ],
      },
      nodeNatsArgs: ["--user", "dlm-node", "--password", pw.node],
      natsOptions: { user: "dlm-operator", pass: pw.operator },
    });
    await cluster.waitForLeader();
  });
  afterAll(async () => {
    await cluster?.close();
    await removeTempDir(dir);
  });

  test("client users in their namespaces acquire, wait, append and release; both nodes' files agree", async () => {
    const orders = await cluster.client({ user: "orders", pass: pw.orders, namespace: "orders" });
    const billing = await cluster.client({ user: "billing", pass: pw.billing, namespace: "billing" });
    expect(orders.clientId).toMatch(/^orders\.[A-Za-z0-9_-]{21}$/);
    expect(billing.clientId).toMatch(/^billing\./);
    // Without its namespace the same user is refused its notify subject at
    // once, and told so (not retried as "unavailable" until the budget runs out).
    await expect(connect({ servers: cluster.urls, user: "orders", pass: pw.orders, unavailableTimeoutMs: 60_000 })).rejects.toThrow(
      /NATS refused the subscription to dlm\.notify\.[A-Za-z0-9_-]+: Permissions Violation.*check its permissions and the client's namespace/,
    );

    const lease = await orders.acquire("global");
    await orders.append("file_3", "orders 1\n");
    await orders.append("file_3", "orders 2\n");
    // billing waits in line; its grant arrives on dlm.notify.billing.<id>.
    const waiting = billing.acquire("global");
    await sleep(200);
    await orders.release(lease);
    const billingLease = await waiting;
    await billing.append("file_3", "billing 1\n");
    await billing.release(billingLease);
    expect((await orders.read("file_3")).toString()).toBe("orders 1\norders 2\nbilling 1\n");
    await cluster.expectFilesIdentical();
  });

  test("a client user cannot write the log, use the JetStream API or the leader bucket, or hear or spoof another namespace", async () => {
    const lastSeq = await cluster.waitCaughtUp();
    const before = await cluster.status();
    const nc = await natsConnect({ servers: cluster.urls, user: "orders", pass: pw.orders, inboxPrefix: "_INBOX_orders" });
    const violations = watchViolations(nc);
    try {
      const forbiddenPublish = [
        "dlm.log", // the log stream's subject
        "$JS.API.STREAM.PURGE.DLM_LOG", // the JetStream API
        "$JS.API.STREAM.DELETE.KV_dlm_leader",
        "$KV.dlm_leader.leader", // the leader lease
        "dlm.notify.billing.abcdefgh12345678", // spoofing another namespace's notification
        "dlm.nodes.info",
        "dlm.req.billing", // another namespace's requests
        "dlm.req", // the plain request subject, where any session id would do
      ];
      for (const subject of forbiddenPublish) nc.publish(subject, encoder.encode('{"evil":true}'));
      await expect(nc.request("$JS.API.STREAM.INFO.DLM_LOG", undefined, { timeout: 1000 })).rejects.toThrow();
      const refusedSubs: string[] = [];
      for (const subject of ["dlm.notify.billing.>", "dlm.notify.>", "_INBOX.>", "dlm.req", "dlm.log"]) {
        nc.subscribe(subject, { callback: (err: Error | null) => err && refusedSubs.push(subject) });
      }
      // Its own subjects are allowed: the refusals above are about the subjects, not the user.
      let ownRefused = false;
      nc.subscribe("dlm.notify.orders.>", { callback: (err: Error | null) => (ownRefused ||= err !== null) });
      await nc.flush();
      for (const subject of forbiddenPublish) {
        await waitFor(`a publish violation on ${subject}`, () => violations.includes(`publish ${subject}`));
      }
      expect(violations).toContain("publish $JS.API.STREAM.INFO.DLM_LOG");
      await waitFor("refused subscriptions", () => refusedSubs.length === 5);
      expect(refusedSubs.sort()).toEqual(["_INBOX.>", "dlm.log", "dlm.notify.>", "dlm.notify.billing.>", "dlm.req"]);
      expect(ownRefused).toBe(false);
      expect(violations.filter((v) => v.includes("dlm.notify.orders"))).toEqual([]);
    } finally {
      await nc.close();
    }
    // Nothing of the client's got in: same leader and epoch, and whatever
    // the log gained meanwhile is the leader's own session bookkeeping (the
    // test clients' heartbeats come 1.33 s apart against a quiet mark at
    // 1.4 s, so a late one is logged as a digest and then as heard).
    await cluster.waitCaughtUp();
    const after = await cluster.status();
    expect([after.leader, after.epoch]).toEqual([before.leader, before.epoch]);
    const reader = await natsConnect({ servers: cluster.urls, user: "dlm-node", pass: pw.node });
    try {
      const [atStart, ...since] = await readLogEntries(reader, 1, lastSeq);
      expect(atStart?.seq).toBe(lastSeq); // the reader sees the log, so an empty "since" means nothing came
      expect(since.filter(({ entry }) => entry.node !== before.leader || entry.epoch !== before.epoch)).toEqual([]);
      expect(since.flatMap(({ entry }) => entry.cmds.map((cmd) => cmd.type)).filter((t) => t !== "sessionDigest" && t !== "sessionHeard")).toEqual([]);
    } finally {
      await reader.close();
    }
  });

  test("a client user cannot act under another namespace's session: the leader refuses it on the user's own subject", async () => {
    const billing = await cluster.client({ user: "billing", pass: pw.billing, namespace: "billing" });
    const lease = await billing.acquire("billing-lock");
    const nc = await natsConnect({ servers: cluster.urls, user: "orders", pass: pw.orders, inboxPrefix: "_INBOX_orders" });
    try {
      // The holder's session id and token are no secret (dlm status lists them).
      const spoofed = [
        { op: "release", client: billing.clientId, seq: 1_000_000, ack: 0, lock: "billing-lock", token: lease.token },
        { op: "abandon", client: billing.clientId, seq: 1_000_001, ack: 0, lock: "billing-lock", token: lease.token },
        { op: "goodbye", client: billing.clientId, seq: 1_000_002, ack: 0 },
        { op: "acquire", client: "V1StGXR8_Z5jdHi6B-myT", seq: 1, ack: 0, lock: "billing-lock" }, // no namespace at all
      ];
      for (const request of spoofed) {
        const msg = await nc.request("dlm.req.orders", encoder.encode(JSON.stringify(request)), { timeout: 5000 });
        const reply = JSON.parse(new TextDecoder().decode(msg.data)) as { ok: boolean; error?: string; message?: string };
        expect(reply).toMatchObject({ ok: false, error: "BAD_REQUEST" });
        expect(reply.message).toContain("may only name a session of namespace orders");
      }
      // What needs no session is served on the user's own subject.
      const status = await nc.request("dlm.req.orders", encoder.encode(JSON.stringify({ op: "status" })), { timeout: 5000 });
      expect(JSON.parse(new TextDecoder().decode(status.data))).toMatchObject({ ok: true });
    } finally {
      await nc.close();
    }
    // billing still holds its grant, and its section commits.
    await billing.renew(lease);
    expect(lease.lost).toBe(false);
    await expect(billing.release(lease)).resolves.toEqual({ appends: 0, bytes: 0 });
  });

  test("the nodes never hit a permission they lack (nats-server logs every violation)", async () => {
    // Take the leader down and back so the run covers take-over, hand-over and recovery too.
    const leader = await cluster.waitForLeader();
    await leader.node.stop();
    const next = await cluster.waitForLeader(30_000, leader.id);
    await leader.node.restart();
    await cluster.waitCaughtUp();
    expect(next.id).not.toBe(leader.id);
    const log = cluster.natsServers[0].logTail(2000);
    expect(log).toMatch(/Violation - User "orders"/); // the refusals of the test above are logged
    expect(log.split("\n").filter((l) => /Violation - User "dlm-(node|operator)"/.test(l))).toEqual([]);
  });

  test("the CLI authenticates with flags, the environment, an nkey, or URL credentials; a wrong password exits 4 with a sentence", async () => {
    const server = cluster.urls[0];
    // --expect waits for both nodes (up to 3 s) instead of the 500 ms a
    // first status gives nodes it has never seen, and remembers them for
    // the runs below: on a loaded machine a node can take longer than 500 ms.
    const asOperator = await runDlm(["status", "--server", server, "--user", "dlm-operator", "--password", pw.operator, "--expect", "n1,n2"]);
    expect(asOperator.stderr).toBe("");
    expect(asOperator.code).toBe(0);
    expect(asOperator.stdout).toMatch(/^leader: n\d \(epoch \d+\)/);
    expect(asOperator.stdout).toMatch(/n1 +(leader|follower) +applied/);
    expect(asOperator.stdout).toMatch(/n2 +(leader|follower) +applied/);

    const fromEnv = await runDlm(["status", "--json"], { env: { NATS_URL: server, NATS_USER: "dlm-operator", NATS_PASSWORD: pw.operator } });
    expect(fromEnv.code).toBe(0);
    expect((JSON.parse(fromEnv.stdout) as { nodes: unknown[] }).nodes).toHaveLength(2);

    const withNkey = await runDlm(["status", "--nats", server, "--nkey", nkeyFile]);
    expect(withNkey.code).toBe(0);
    expect(withNkey.stdout).toMatch(/^leader: n\d/);

    const inUrl = await runDlm(["read", "file_3", "--server", server.replace("nats://", `nats://dlm-operator:${pw.operator}@`)]);
    expect(inUrl.code).toBe(0);
    expect(inUrl.stdout).toBe("orders 1\norders 2\nbilling 1\n");

    const wrong = await runDlm(["status", "--server", server, "--user", "dlm-operator", "--password", "nope"]);
    expect(wrong.code).toBe(4);
    expect(wrong.stderr).toMatch(/^dlm: NATS at nats:\/\/127\.0\.0\.1:\d+ refused the credentials \(user "dlm-operator"\): Authorization Violation/);
    expect(wrong.stderr).not.toMatch(/\n\s+at /); // no stack trace
    const nodeWrong = await runDlm(["node", "--server", server, "--user", "dlm-node", "--password", "nope", "--id", "n9", "--data", path.join(dir, "n9")]);
    expect(nodeWrong.code).toBe(4);
    expect(nodeWrong.stderr).toMatch(/refused the credentials/);

    const conflict = await runDlm(["status", "--server", server, "--token", "t", "--user", "u"]);
    expect(conflict.code).toBe(2);
    expect(conflict.stderr).toMatch(/one kind of NATS credentials/);

    const client = await runDlm(["client", "--server", server, "--user", "orders", "--password", pw.orders, "--namespace", "orders"], {
      input: "acquire\nappend file_4 from the cli\nrelease\nread file_4\nquit\n",
    });
    expect(client.code).toBe(0);
    expect(client.stdout).toMatch(/^Connected! \(session orders\.[A-Za-z0-9_-]+\)/);
    expect(client.stdout).toMatch(/released; committed 1 appends/);
    expect(client.stdout).toMatch(/\nfrom the cli\n/);
  });
});

describe("TLS: a server that verifies client certificates, with TLS first", () => {
  let cluster: DlmTestCluster;
  let dir: string;
  let certs: TestCertificates;

  beforeAll(async () => {
    dir = makeTempDir("dlm-tls-");
    certs = makeTestCertificates(dir);
    cluster = await startDlmCluster({
      nodes: 1,
      natsTls: { certFile: certs.serverCert, keyFile: certs.serverKey, caFile: certs.caFile, verify: true, handshakeFirst: true },
      nodeNatsArgs: ["--tlsca", certs.caFile, "--tlscert", certs.clientCert, "--tlskey", certs.clientKey, "--tlsfirst"],
      natsOptions: { tls: { caFile: certs.caFile, certFile: certs.clientCert, keyFile: certs.clientKey, handshakeFirst: true } },
    });
    await cluster.waitForLeader();
  });
  afterAll(async () => {
    await cluster?.close();
    await removeTempDir(dir);
  });

  test("node, client library and CLI work over TLS; without a client certificate the CLI exits 4", async () => {
    const client = await cluster.client();
    const lease = await client.acquire();
    await client.append("file_9", "over tls\n");
    await client.release(lease);
    expect((await client.read("file_9")).toString()).toBe("over tls\n");

    const server = cluster.urls[0];
    const tlsFlags = ["--tlsca", certs.caFile, "--tlscert", certs.clientCert, "--tlskey", certs.clientKey, "--tlsfirst"];
    const status = await runDlm(["status", "--server", server, ...tlsFlags]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/^leader: n1 \(epoch 1\)/);
    const fromEnv = await runDlm(["read", "file_9", "--server", server, "--tlsfirst"], {
      env: { NATS_CA: certs.caFile, NATS_CERT: certs.clientCert, NATS_KEY: certs.clientKey },
    });
    expect(fromEnv.code).toBe(0);
    expect(fromEnv.stdout).toBe("over tls\n");

    const noCert = await runDlm(["status", "--server", server, "--tlsca", certs.caFile, "--tlsfirst"]);
    expect(noCert.code).toBe(4);
    expect(noCert.stderr).toMatch(/^dlm: .*NATS at nats:\/\/127\.0\.0\.1:\d+/);
    expect(noCert.stderr).not.toMatch(/\n\s+at /);
  });
});

describe("operator mode: JWT users with the documented permissions, creds files", () => {
  let cluster: DlmTestCluster;
  let dir: string;
  let creds: { node: string; operator: string; orders: string };

  beforeAll(async () => {
    dir = makeTempDir("dlm-jwt-");
    const setup = makeOperatorSetup(dir);
    const perms = dlmPermissions();
    creds = {
      node: setup.addUser("dlm-node", perms.node),
      operator: setup.addUser("dlm-operator", perms.operator),
      orders: setup.addUser("orders", perms.client("orders")),
    };
    cluster = await startDlmCluster({
      nodes: 1,
      natsExtraConfig: setup.serverConfig,
      nodeNatsArgs: ["--creds", creds.node],
      natsOptions: { authenticator: credsAuthenticator(fs.readFileSync(creds.operator)) },
    });
    await cluster.waitForLeader();
  });
  afterAll(async () => {
    await cluster?.close();
    await removeTempDir(dir);
  });

  test("a node and a client run on creds files; dlm status and read take --creds or NATS_CREDS", async () => {
    const client = await cluster.client({ authenticator: credsAuthenticator(fs.readFileSync(creds.orders)), namespace: "orders" });
    const lease = await client.acquire();
    await client.append("file_8", "with creds\n");
    await client.release(lease);

    const server = cluster.urls[0];
    const status = await runDlm(["status", "--server", server, "--creds", creds.operator]);
    expect(status.stderr).toBe("");
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/^leader: n1 \(epoch 1\)/);
    const read = await runDlm(["read", "file_8", "--server", server], { env: { NATS_CREDS: creds.operator } });
    expect(read.code).toBe(0);
    expect(read.stdout).toBe("with creds\n");
    // The client's creds grant no operator rights: status cannot ask the nodes or the stream.
    const asClient = await runDlm(["status", "--server", server, "--creds", creds.orders, "--json"]);
    expect((JSON.parse(asClient.stdout) as { nodes: unknown[]; lastSeq: unknown }).nodes).toEqual([]);
  });
});

describe("a connection from another copy of @nats-io passed as nc", () => {
  test("timeouts and no-responders from the foreign copy are retried, then the client works against a real node", async () => {
    const nats = await startNats();
    const dir = makeTempDir("dlm-foreign-");
    const { nats: foreign, dir: foreignDir } = loadForeignNats();
    const foreignNc = await foreign.connect({ servers: nats.urls });
    const plainNc = await natsConnect({ servers: nats.urls });
    let client: DlmClient | undefined;
    const node = { current: undefined as ReturnType<typeof startDlmNode> | undefined };
    try {
      // First nobody answers on dlm.req but a subscriber that swallows
      // requests (attempts time out), then nobody at all (no responders),
      // then a node starts and leads.
      let swallowed = 0;
      const blackHole = plainNc.subscribe("dlm.req", {
        callback: () => {
          swallowed++;
          if (swallowed === 2) blackHole.unsubscribe();
        },
      });
      await plainNc.flush();
      const retries: string[] = [];
      const logger: Logger = {
        debug: (obj: object) => {
          const kind = (obj as { kind?: string }).kind;
          if (kind) retries.push(kind);
          if (kind === "unavailable" && retries.filter((k) => k === "unavailable").length === 3 && !node.current) {
            node.current = startDlmNode({ natsUrls: nats.urls, dataDir: path.join(dir, "n1"), nodeId: "n1", extraArgs: ["--lease-ms", "3000"] });
          }
        },
        info: () => undefined,
        warn: () => undefined,
        error: () => undefined,
      };
      client = await connect({
        nc: foreignNc as unknown as NatsConnection,
        requestTimeoutMs: 300,
        maxAttempts: 5,
        unavailableTimeoutMs: 60_000,
        logger,
      });
      expect(swallowed).toBe(2);
      expect(retries).toContain("timeout");
      expect(retries).toContain("unavailable");
      const lease = await client.acquire("global");
      await client.append("file_5", "foreign nc\n");
      await client.release(lease);
      expect((await client.read("file_5")).toString()).toBe("foreign nc\n");
      await client.close();
      expect(foreignNc.isClosed()).toBe(false); // a connection the caller passed in stays open
    } finally {
      await client?.close().catch(() => undefined);
      await foreignNc.close();
      await plainNc.close();
      if (node.current?.running) await node.current.stop();
      await nats.close();
      await removeTempDir(dir);
      await removeTempDir(foreignDir);
    }
  });
});
