import * as net from "net";

/**
 * Ports handed out recently by this process. The OS may give the same
 * ephemeral port to two back-to-back `listen(0)` calls once the first probe
 * socket is closed; remembering them avoids giving one port to two servers
 * that are configured before either has bound it.
 */
const recentlyHanded = new Set<number>();
const RECENT_LIMIT = 512;

function probe(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once("error", reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/**
 * A TCP port that is free on 127.0.0.1 right now. There is an unavoidable
 * window between this call and the caller binding it; callers that can
 * retry on "address already in use" should.
 */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const port = await probe(host);
    if (port > 0 && !recentlyHanded.has(port)) {
      recentlyHanded.add(port);
      if (recentlyHanded.size > RECENT_LIMIT) {
        const oldest = recentlyHanded.values().next().value;
        if (oldest !== undefined) recentlyHanded.delete(oldest);
      }
      return port;
    }
  }
  throw new Error("freePort: could not find a free TCP port on " + host);
}

/** Resolves true once a TCP connection to host:port succeeds within timeoutMs per attempt. */
export function canConnect(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    let done = false;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    sock.once("connect", () => finish(true));
    sock.once("error", () => finish(false));
  });
}
