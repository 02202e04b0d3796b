/**
 * The NATS permissions of src/protocol/permissions.ts: what each role may
 * do, and that docs/operations.md shows exactly the block the code renders
 * (the integration test runs a server with the same permissions).
 */
import * as fs from "fs";
import * as path from "path";
import { authorizationExample, dlmPermissions, renderAuthorization } from "../../src/protocol/permissions";
import { renderNatsConfig } from "../../src/local/natsServer";

/** NATS subject matching: `*` one token, `>` one or more trailing tokens. */
function matches(pattern: string, subject: string): boolean {
  const p = pattern.split(".");
  const s = subject.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return s.length > i;
    if (i >= s.length || (p[i] !== "*" && p[i] !== s[i])) return false;
  }
  return p.length === s.length;
}
const allowed = (list: string[], subject: string) => list.some((p) => matches(p, subject));

describe("dlmPermissions", () => {
  const p = dlmPermissions();
  const client = p.client("orders");

  test("a client may send requests and hear only its own namespace", () => {
    expect(allowed(client.publish.allow, "dlm.req.orders")).toBe(true);
    // Not on another namespace's subject, nor on the plain one, where the leader would take any session id.
    for (const subject of ["dlm.req", "dlm.req.billing", "dlm.req.orders.x", "dlm.req.>"]) expect(allowed(client.publish.allow, subject)).toBe(false);
    expect(allowed(client.subscribe.allow, "dlm.notify.orders.V1StGXR8_Z5jdHi6B-myT")).toBe(true);
    expect(allowed(client.subscribe.allow, "_INBOX_orders.abc.def")).toBe(true);
    for (const subject of ["dlm.log", "$JS.API.STREAM.INFO.DLM_LOG", "$KV.dlm_leader.leader", "dlm.notify.billing.x", "dlm.nodes.info"]) {
      expect(allowed(client.publish.allow, subject)).toBe(false);
    }
    for (const subject of ["dlm.notify.billing.x", "_INBOX.abc", "_INBOX_billing.abc", "dlm.req", "dlm.log"]) {
      expect(allowed(client.subscribe.allow, subject)).toBe(false);
    }
    expect(client.allow_responses).toBeUndefined();
  });

  test("a node may use only its own stream and bucket through the JetStream API", () => {
    expect(allowed(p.node.publish.allow, "$JS.API.STREAM.CREATE.DLM_LOG")).toBe(true);
    expect(allowed(p.node.publish.allow, "$JS.API.CONSUMER.MSG.NEXT.DLM_LOG.abc")).toBe(true);
    expect(allowed(p.node.publish.allow, "$JS.API.DIRECT.GET.KV_dlm_leader.$KV.dlm_leader.leader")).toBe(true);
    expect(allowed(p.node.publish.allow, "$JS.API.STREAM.DELETE.ORDERS")).toBe(false);
    expect(allowed(p.node.publish.allow, "$KV.other.key")).toBe(false);
    expect(p.node.allow_responses).toBe(true);
    // It serves the plain request subject and every namespace's.
    for (const subject of ["dlm.req", "dlm.req.orders"]) expect(allowed(p.node.subscribe.allow, subject)).toBe(true);
  });

  test("an operator can read but not write", () => {
    expect(allowed(p.operator.publish.allow, "$JS.API.STREAM.INFO.DLM_LOG")).toBe(true);
    for (const subject of ["dlm.log", "$JS.API.STREAM.PURGE.DLM_LOG", "$KV.dlm_leader.leader", "dlm.notify.orders.x"]) {
      expect(allowed(p.operator.publish.allow, subject)).toBe(false);
    }
  });

  test("subjects follow the prefix", () => {
    const q = dlmPermissions("acme");
    expect(q.client("orders").subscribe.allow).toContain("acme.notify.orders.>");
    expect(allowed(q.node.publish.allow, "$JS.API.STREAM.INFO.ACME_LOG")).toBe(true);
    expect(allowed(q.node.publish.allow, "$JS.API.STREAM.INFO.DLM_LOG")).toBe(false);
  });
});

describe("rendering", () => {
  test("docs/operations.md shows exactly the block the code renders", () => {
    const docs = fs.readFileSync(path.join(__dirname, "../../docs/operations.md"), "utf8");
    const marker = docs.indexOf("test/unit/permissions.test.ts");
    expect(marker).toBeGreaterThan(0);
    const block = /```\n([\s\S]*?)```/.exec(docs.slice(marker))?.[1];
    expect(block).toBe(authorizationExample());
  });

  test("passwords are quoted unless they name a server variable; nkey users have no password", () => {
    const text = renderAuthorization([
      { user: "a", password: 'p"w' },
      { user: "b", password: "$B_PASSWORD" },
      { nkey: "UABC" },
    ]);
    expect(text).toContain('password: "p\\"w"');
    expect(text).toContain("password: $B_PASSWORD");
    expect(text).toContain('nkey: "UABC"');
  });

  test("the server config carries authorization and tls blocks", () => {
    const conf = renderNatsConfig({
      serverName: "s",
      host: "127.0.0.1",
      port: 4222,
      storeDir: "/tmp/x",
      syncAlways: true,
      authorization: { token: "t" },
      tls: { certFile: "/c.pem", keyFile: "/k.pem", caFile: "/ca.pem", verify: true, handshakeFirst: true },
    });
    expect(conf).toMatch(/authorization \{\n {2}token: "t"\n\}/);
    expect(conf).toMatch(/tls \{\n {2}cert_file: "\/c.pem"\n {2}key_file: "\/k.pem"\n {2}ca_file: "\/ca.pem"\n {2}verify: true\n {2}handshake_first: true/);
    expect(() => renderNatsConfig({ serverName: "s", host: "h", port: 1, storeDir: "/x", syncAlways: true, authorization: {} })).toThrow(
      /exactly one of/,
    );
  });
});
