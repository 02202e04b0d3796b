/**
 * A cuttable TCP proxy for tests: a net.Server on a free local port that
 * forwards every connection to one target. `cut()` cuts the link: every
 * forwarded connection is reset and new ones are closed as soon as they
 * are accepted (the port stays bound, so the client keeps trying the same
 * address and gets through again after `heal()`). `stall()` is the quiet
 * failure: connections stay open but nothing moves either way until
 * `heal()`, so the peers notice only through their own timeouts.
 *
 * Put a process's NATS connection through one of these to cut that one
 * process off while everything else keeps running. Note that a NATS client
 * learns the other servers of a NATS cluster from the server it talks to
 * and may reconnect to them directly; with one nats-server there is
 * nothing to learn.
 */
import * as net from "net";

export interface TcpProxy {
  /** The address to give the client instead of the target's. */
  readonly host: string;
  readonly port: number;
  /** Connections being forwarded right now. */
  readonly connections: number;
  readonly isCut: boolean;
  readonly isStalled: boolean;
  /** Resets every forwarded connection and refuses new ones until heal(). */
  cut(): void;
  /** Holds every byte in both directions (connections stay open) until heal(). */
  stall(): void;
  /** Forwards again: new connections after a cut, held bytes after a stall. */
  heal(): void;
  /** Stops listening and drops every connection. */
  close(): Promise<void>;
}

export interface ProxyTarget {
  host: string;
  port: number;
}

export async function startTcpProxy(target: ProxyTarget): Promise<TcpProxy> {
  const host = "127.0.0.1";
  const pairs = new Set<{ client: net.Socket; upstream: net.Socket }>();
  let isCut = false;
  let isStalled = false;
  const flow = (pair: { client: net.Socket; upstream: net.Socket }) => {
    pair.client.pipe(pair.upstream);
    pair.upstream.pipe(pair.client);
  };
  const hold = (pair: { client: net.Socket; upstream: net.Socket }) => {
    // Unpipe before pausing: a pipe resumes its source on the next drain.
    pair.client.unpipe(pair.upstream);
    pair.upstream.unpipe(pair.client);
    pair.client.pause();
    pair.upstream.pause();
  };
  const drop = (pair: { client: net.Socket; upstream: net.Socket }) => {
    pairs.delete(pair);
    pair.client.destroy();
    pair.upstream.destroy();
  };
  const server = net.createServer((client) => {
    if (isCut) {
      client.destroy();
      return;
    }
    const upstream = net.connect({ host: target.host, port: target.port });
    const pair = { client, upstream };
    pairs.add(pair);
    if (isStalled) hold(pair);
    else flow(pair);
    for (const socket of [client, upstream]) {
      socket.on("error", () => drop(pair));
      socket.on("close", () => drop(pair));
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    host,
    port,
    get connections() {
      return pairs.size;
    },
    get isCut() {
      return isCut;
    },
    get isStalled() {
      return isStalled;
    },
    cut() {
      isCut = true;
      for (const pair of [...pairs]) {
        pair.client.resetAndDestroy();
        drop(pair);
      }
    },
    stall() {
      if (isStalled) return;
      isStalled = true;
      for (const pair of pairs) hold(pair);
    },
    heal() {
      isCut = false;
      if (!isStalled) return;
      isStalled = false;
      for (const pair of pairs) flow(pair);
    },
    close() {
      for (const pair of [...pairs]) drop(pair);
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** Several proxies cut and healed together: one process's links to every server of a NATS cluster. */
export class ProxyGroup {
  constructor(readonly proxies: TcpProxy[]) {}

  /** nats:// URLs of the proxies, in the order of their targets. */
  get urls(): string[] {
    return this.proxies.map((p) => `nats://${p.host}:${p.port}`);
  }

  cut(): void {
    for (const p of this.proxies) p.cut();
  }

  stall(): void {
    for (const p of this.proxies) p.stall();
  }

  heal(): void {
    for (const p of this.proxies) p.heal();
  }

  async close(): Promise<void> {
    await Promise.all(this.proxies.map((p) => p.close()));
  }

  /** One proxy per NATS URL ("nats://host:port"). */
  static async forUrls(urls: string[]): Promise<ProxyGroup> {
    const proxies = await Promise.all(
      urls.map((url) => {
        const { hostname, port } = new URL(url);
        return startTcpProxy({ host: hostname, port: Number(port) });
      }),
    );
    return new ProxyGroup(proxies);
  }
}
