/**
 * The client's request-reply (src/protocol/requestMux.ts) against a real
 * nats-server with users and permissions: replies reach their own request,
 * and every failure is the transport error the retry policy expects.
 */
import { connect as natsConnect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { RequestMux } from "../../src/protocol/requestMux";
import {
  NoRespondersError,
  TransportClosedError,
  TransportPermissionError,
  TransportTimeoutError,
} from "../../src/client/transport";
import { startNats, type TestNats } from "../kit/nats";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

describe("RequestMux", () => {
  let nats: TestNats;
  const opened: NatsConnection[] = [];
  const open = async (user: string): Promise<NatsConnection> => {
    const nc = await natsConnect({ servers: nats.urls, user, pass: "pw", noAsyncTraces: true });
    opened.push(nc);
    return nc;
  };

  beforeAll(async () => {
    nats = await startNats({
      authorization: {
        users: [
          { user: "server", password: "pw", permissions: { publish: { allow: [">"] }, subscribe: { allow: ["svc.>"] } } },
          { user: "client", password: "pw", permissions: { publish: { allow: ["svc.>"] }, subscribe: { allow: ["_INBOX_c.>"] } } },
        ],
      },
    });
  });
  afterAll(async () => {
    await Promise.all(opened.map((nc) => nc.close().catch(() => undefined)));
    await nats?.close();
  });

  test("concurrent requests each get their own reply, whatever order the replies come in", async () => {
    const server = await open("server");
    // Answers "echo" requests in reverse order of arrival, once three are in.
    const held: Array<{ reply: string; data: Uint8Array }> = [];
    server.subscribe("svc.echo", {
      callback: (_err, msg) => {
        held.push({ reply: msg.reply!, data: msg.data });
        if (held.length === 3) for (const h of held.reverse()) server.publish(h.reply, h.data);
      },
    });
    await server.flush();
    const mux = new RequestMux(await open("client"), "_INBOX_c");
    const answers = await Promise.all(["a", "b", "c"].map((s) => mux.request("svc.echo", encoder.encode(s), 5000)));
    expect(answers.map((a) => decoder.decode(a))).toEqual(["a", "b", "c"]);
    mux.close();
  });

  test("no reply in time is a TransportTimeoutError, and a late reply is dropped", async () => {
    const server = await open("server");
    const late: string[] = [];
    server.subscribe("svc.slow", { callback: (_err, msg) => void late.push(msg.reply!) });
    await server.flush();
    const mux = new RequestMux(await open("client"), "_INBOX_c");
    const started = Date.now();
    await expect(mux.request("svc.slow", encoder.encode("x"), 200)).rejects.toBeInstanceOf(TransportTimeoutError);
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    server.publish(late[0], encoder.encode("too late"));
    await server.flush();
    // The mux still works after the stray reply.
    server.subscribe("svc.fast", { callback: (_err, msg) => void msg.respond(encoder.encode("ok")) });
    await server.flush();
    expect(decoder.decode(await mux.request("svc.fast", encoder.encode("y"), 2000))).toBe("ok");
    mux.close();
  });

  test("nobody listening is a NoRespondersError at once, not a timeout", async () => {
    const mux = new RequestMux(await open("client"), "_INBOX_c");
    const started = Date.now();
    await expect(mux.request("svc.nobody", encoder.encode("x"), 10_000)).rejects.toBeInstanceOf(NoRespondersError);
    expect(Date.now() - started).toBeLessThan(5000);
    mux.close();
  });

  test("a subject the user may not publish to is a TransportPermissionError at once", async () => {
    const mux = new RequestMux(await open("client"), "_INBOX_c");
    const started = Date.now();
    const refused = mux.request("other.subject", encoder.encode("x"), 10_000);
    await expect(refused).rejects.toBeInstanceOf(TransportPermissionError);
    await expect(refused).rejects.toThrow(/other\.subject/);
    expect(Date.now() - started).toBeLessThan(5000);
    mux.close();
  });

  test("an inbox the user may not subscribe to is a TransportPermissionError at once", async () => {
    const mux = new RequestMux(await open("client"), "_INBOX_forbidden");
    const started = Date.now();
    await expect(mux.request("svc.echo", encoder.encode("x"), 10_000)).rejects.toBeInstanceOf(TransportPermissionError);
    expect(Date.now() - started).toBeLessThan(5000);
    mux.close();
  });

  test("closing the connection fails what is pending and what comes after with TransportClosedError", async () => {
    const server = await open("server");
    server.subscribe("svc.never", { callback: () => undefined });
    await server.flush();
    const nc = await open("client");
    const mux = new RequestMux(nc, "_INBOX_c");
    const pending = mux.request("svc.never", encoder.encode("x"), 10_000);
    await nc.flush();
    await nc.close();
    await expect(pending).rejects.toBeInstanceOf(TransportClosedError);
    await expect(mux.request("svc.never", encoder.encode("x"), 10_000)).rejects.toBeInstanceOf(TransportClosedError);
  });
});
