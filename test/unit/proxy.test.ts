/**
 * The test kit's TCP proxy against a local echo server: it forwards, cut()
 * resets what it forwards and refuses new connections, stall() holds
 * bytes without closing, heal() forwards again. The partition tests to
 * come build on exactly this.
 */
import * as net from "net";
import { startTcpProxy, type TcpProxy } from "../kit/proxy";

let echo: net.Server;
let echoPort: number;
let proxy: TcpProxy;

beforeAll(async () => {
  echo = net.createServer((socket) => socket.pipe(socket));
  await new Promise<void>((resolve) => echo.listen(0, "127.0.0.1", () => resolve()));
  echoPort = (echo.address() as net.AddressInfo).port;
  proxy = await startTcpProxy({ host: "127.0.0.1", port: echoPort });
});

afterAll(async () => {
  await proxy.close();
  await new Promise<void>((resolve) => echo.close(() => resolve()));
});

/** Connects through the proxy; resolves with the socket and a reader of what comes back. */
async function connect(): Promise<{ socket: net.Socket; received: () => string; closed: Promise<void> }> {
  const socket = net.connect({ host: proxy.host, port: proxy.port });
  let data = "";
  socket.on("data", (d: Buffer) => (data += d.toString()));
  socket.on("error", () => undefined);
  const closed = new Promise<void>((resolve) => socket.on("close", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("error", reject);
  });
  return { socket, received: () => data, closed };
}

async function until(cond: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 10));
  }
}

test("forwards both ways; cut() drops and refuses, stall() holds, heal() forwards again", async () => {
  const first = await connect();
  first.socket.write("hello");
  await until(() => first.received() === "hello");
  await until(() => proxy.connections === 1);

  proxy.cut();
  expect(proxy.isCut).toBe(true);
  await first.closed;
  expect(proxy.connections).toBe(0);
  // While cut, a new connection is accepted by the kernel and closed at once, unanswered.
  const refused = await connect();
  refused.socket.write("anyone?");
  await refused.closed;
  expect(refused.received()).toBe("");

  proxy.heal();
  const second = await connect();
  second.socket.write("again");
  await until(() => second.received() === "again");

  // A stall holds bytes without closing anything; heal delivers them.
  proxy.stall();
  second.socket.write(" held");
  await new Promise((r) => setTimeout(r, 200));
  expect(second.received()).toBe("again");
  expect(proxy.connections).toBe(1);
  proxy.heal();
  await until(() => second.received() === "again held");
  second.socket.destroy();
});

test("block() holds one direction while the other flows; delay() adds latency in order; heal() clears both", async () => {
  const c = await connect();
  // Echo: what goes up comes back down. Held on the way back: the echo
  // server gets the bytes (toTarget flows) but the client sees nothing.
  proxy.block("toClient");
  expect(proxy.blocked).toEqual(["toClient"]);
  c.socket.write("up");
  await new Promise((r) => setTimeout(r, 200));
  expect(c.received()).toBe("");
  proxy.heal();
  await until(() => c.received() === "up");

  // Held on the way up: nothing reaches the echo server, so nothing returns.
  proxy.block("toTarget");
  c.socket.write("-held");
  await new Promise((r) => setTimeout(r, 200));
  expect(c.received()).toBe("up");
  proxy.heal();
  await until(() => c.received() === "up-held");

  // 150 ms each way: the echo takes at least 300 ms, and bytes keep their order.
  proxy.delay(150);
  const sent = Date.now();
  c.socket.write("-a");
  c.socket.write("-b");
  await until(() => c.received() === "up-held-a-b", 3000);
  expect(Date.now() - sent).toBeGreaterThanOrEqual(290);
  proxy.heal();
  expect(proxy.delayMs).toEqual({ toTarget: 0, toClient: 0 });
  c.socket.destroy();
});
