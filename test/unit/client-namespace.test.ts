/**
 * Client namespaces and NATS pass-through options: what the client library
 * subscribes to and sends with a namespace, which options reach NATS, and
 * that the server accepts namespaced session ids.
 */
import { connect, type ClientOptions, type Transport } from "../../src/client";
import { natsConnectionOptions } from "../../src/client/client";
import { resolveOptions } from "../../src/client/options";
import { DEFAULT_LIMITS } from "../../src/protocol/limits";
import { parseRequest } from "../../src/protocol/validate";

const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
const dec = (b: Uint8Array) => JSON.parse(new TextDecoder().decode(b)) as Record<string, unknown>;

/** Answers hello and goodbye, and records subjects and requests. */
class RecordingTransport implements Transport {
  readonly subscribed: string[] = [];
  readonly requests: Record<string, unknown>[] = [];
  async request(_subject: string, payload: Uint8Array): Promise<Uint8Array> {
    const req = dec(payload);
    this.requests.push(req);
    return enc({ ok: true, code: 0, message: req.op === "hello" ? "Connected!" : "Disconnected!" });
  }
  publish(): void {}
  async subscribe(subject: string): Promise<{ unsubscribe(): void }> {
    this.subscribed.push(subject);
    return { unsubscribe: () => undefined };
  }
  async close(): Promise<void> {}
}

test("a client in a namespace has a namespaced id, notify subject and hello", async () => {
  const transport = new RecordingTransport();
  const client = await connect({ transport, namespace: "orders" });
  expect(client.clientId).toMatch(/^orders\.[A-Za-z0-9_-]{21}$/);
  expect(transport.subscribed).toEqual([`dlm.notify.${client.clientId}`]);
  expect(transport.requests[0]).toMatchObject({ op: "hello", client: client.clientId });
  await client.close();
});

test("namespace and clientId are validated before anything is opened", () => {
  expect(() => resolveOptions({ namespace: "a.b" })).toThrow(/invalid option namespace/);
  expect(() => resolveOptions({ namespace: "" })).toThrow(/invalid option namespace/);
  expect(() => resolveOptions({ namespace: "orders", clientId: "billing.abcdefgh12" })).toThrow(/must start with "orders\."/);
  expect(resolveOptions({ namespace: "orders", clientId: "orders.abcdefgh12" }).namespace).toBe("orders");
});

test("NATS options pass through; the namespace sets the inbox prefix unless one is given", () => {
  const authenticator = () => ({ auth_token: "t" });
  const opts: ClientOptions = {
    servers: ["nats://a:1"],
    user: "u",
    pass: "p",
    authenticator,
    tls: { caFile: "/ca.pem" },
    maxReconnectAttempts: 3,
    namespace: "orders",
    requestTimeoutMs: 100,
    name: "me",
  };
  const nats = natsConnectionOptions(opts, resolveOptions(opts));
  expect(nats).toEqual({
    servers: ["nats://a:1"],
    user: "u",
    pass: "p",
    authenticator,
    tls: { caFile: "/ca.pem" },
    maxReconnectAttempts: 3,
    inboxPrefix: "_INBOX_orders",
    noAsyncTraces: true,
    name: "me",
  });
  const explicit = { ...opts, inboxPrefix: "_INBOX_mine" };
  expect(natsConnectionOptions(explicit, resolveOptions(explicit)).inboxPrefix).toBe("_INBOX_mine");
  expect(natsConnectionOptions({}, resolveOptions({}))).toEqual({ servers: "nats://127.0.0.1:4222", noAsyncTraces: true });
});

test.each([
  ["orders.abcdefgh12345678", true],
  ["abcdefgh12345678", true],
  ["a.b.abcdefgh12345678", false],
  [".abcdefgh12345678", false],
  ["orders.", false],
  ["orders.short", false],
  ["or*ders.abcdefgh12345678", false],
  ["orders.abcdefgh>2345678", false],
])("the server takes client id %j: %s", (client, ok) => {
  const parsed = parseRequest(new TextEncoder().encode(JSON.stringify({ op: "hello", client, seq: 1, ack: 0 })), DEFAULT_LIMITS);
  expect(parsed.ok).toBe(ok);
});
