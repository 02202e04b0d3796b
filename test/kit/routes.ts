/**
 * The routes between the servers of a test NATS cluster, each through a TCP
 * proxy of its own (test/kit/proxy.ts), so a test can cut one server off
 * from its peers while its clients stay connected to it, or cut one way
 * only. Server i dials server j through proxy (i -> j), and j dials i
 * through (j -> i); NATS keeps route connections both ways, so a fault
 * between two servers is applied to both proxies.
 *
 * Servers are numbered by their index in the cluster (0-based).
 */
import { startTcpProxy, type TcpProxy } from "./proxy";

export class RouteLinks {
  private readonly proxies = new Map<string, TcpProxy>();

  /** For `startNatsCluster`'s `routeUrl` hook: a proxy for the route from `from` to `to`, and its URL. */
  async route(from: number, to: number, url: string): Promise<string> {
    const { hostname, port } = new URL(url);
    const proxy = await startTcpProxy({ host: hostname, port: Number(port) });
    this.proxies.set(key(from, to), proxy);
    return `nats-route://${proxy.host}:${proxy.port}`;
  }

  /** The proxy carrying the route connections server `from` opened to server `to`. */
  proxy(from: number, to: number): TcpProxy {
    const p = this.proxies.get(key(from, to));
    if (!p) throw new Error(`no route proxy from server ${from} to server ${to}`);
    return p;
  }

  /** Cuts the link between servers a and b both ways (connections reset, new ones refused). */
  cut(a: number, b: number): void {
    this.proxy(a, b).cut();
    this.proxy(b, a).cut();
  }

  /** Bytes from server `from` to server `to` are held; the other way flows. */
  block(from: number, to: number): void {
    this.proxy(from, to).block("toTarget");
    this.proxy(to, from).block("toClient");
  }

  /** Adds latency both ways between servers a and b. */
  delay(a: number, b: number, ms: number): void {
    this.proxy(a, b).delay(ms);
    this.proxy(b, a).delay(ms);
  }

  /** Cuts server i off from every peer: it is in the minority, its clients still reach it. */
  isolate(i: number): void {
    for (const [k, p] of this.proxies) {
      const [from, to] = k.split(">").map(Number);
      if (from === i || to === i) p.cut();
    }
  }

  /** Removes every fault on every route. */
  heal(): void {
    for (const p of this.proxies.values()) p.heal();
  }

  async close(): Promise<void> {
    await Promise.all([...this.proxies.values()].map((p) => p.close()));
  }
}

function key(from: number, to: number): string {
  return `${from}>${to}`;
}
