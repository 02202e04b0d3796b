/**
 * A cuttable TCP proxy for tests: a net.Server on a free local port that
 * forwards every connection to one target. The faults it injects, each
 * until `heal()`:
 *
 * - `cut()` cuts the link: every forwarded connection is reset and new ones
 *   are closed as soon as they are accepted (the port stays bound, so the
 *   client keeps trying the same address and gets through again after
 *   `heal()`).
 * - `stall()` is the quiet failure: connections stay open but nothing moves
 *   either way, so the peers notice only through their own timeouts.
 * - `block(direction)` is the one-way cut: bytes going one way ("toTarget":
 *   from the connecting side to the target; "toClient": back) are held
 *   while the other way flows, as when a network drops packets one way and
 *   TCP keeps retransmitting them. Held bytes are delivered on `heal()`.
 * - `delay(ms, direction?)` adds latency to every chunk (both ways unless a
 *   direction is given), keeping the byte order.
 *
 * Bytes are never dropped from the middle of a stream: NATS speaks a
 * framed protocol over TCP, and a real network loses packets, not bytes
 * inside a delivered stream. Holding a direction pauses reading from its
 * source, so TCP flow control pushes back on the sender as a real stalled
 * link would.
 *
 * Put a process's NATS connection through one of these to cut that one
 * process off while everything else keeps running. A NATS client learns
 * the other servers of a NATS cluster from the server it talks to and may
 * reconnect to them directly: the test kit renders `no_advertise` into the
 * cluster's configuration when links are proxied (test/kit/nats.ts).
 */
import * as net from "net";

export type ProxyDirection = "toTarget" | "toClient";

export interface TcpProxy {
  /** The address to give the client instead of the target's. */
  readonly host: string;
  readonly port: number;
  /** Connections being forwarded right now. */
  readonly connections: number;
  readonly isCut: boolean;
  /** Both directions held. */
  readonly isStalled: boolean;
  /** Directions currently held. */
  readonly blocked: readonly ProxyDirection[];
  /** Added latency per direction, ms. */
  readonly delayMs: Readonly<Record<ProxyDirection, number>>;
  /** Resets every forwarded connection and refuses new ones until heal(). */
  cut(): void;
  /** Holds every byte in both directions (connections stay open) until heal(). */
  stall(): void;
  /** Holds the bytes going one way (connections stay open) until heal(). */
  block(direction: ProxyDirection): void;
  /** Adds `ms` of latency to each chunk, one direction or both; 0 removes it. */
  delay(ms: number, direction?: ProxyDirection): void;
  /** Removes every fault: accepts again after a cut, delivers held bytes, no added latency. */
  heal(): void;
  /** Stops listening and drops every connection. */
  close(): Promise<void>;
}

export interface ProxyTarget {
  host: string;
  port: number;
}

/** Upper bound on bytes one direction of one connection may hold before it stops reading its source. */
const MAX_HELD_BYTES = 4 * 1024 * 1024;

/**
 * One direction of one forwarded connection: reads `source`, writes
 * `sink`, in order, after the direction's delay, unless held.
 */
class Flow {
  private readonly queue: Array<{ chunk: Buffer; dueAt: number }> = [];
  private queuedBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private sinkFull = false;

  constructor(
    private readonly source: net.Socket,
    private readonly sink: net.Socket,
    private readonly held: () => boolean,
    private readonly delayMs: () => number,
  ) {
    source.on("data", (chunk: Buffer) => {
      const last = this.queue[this.queue.length - 1]?.dueAt ?? 0;
      this.queue.push({ chunk, dueAt: Math.max(last, Date.now() + this.delayMs()) });
      this.queuedBytes += chunk.length;
      this.pump();
    });
    sink.on("drain", () => {
      this.sinkFull = false;
      this.pump();
    });
  }

  /** Delivers what is due, unless held; reads from the source only while there is room. */
  pump(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.sink.destroyed) return;
    while (!this.held() && !this.sinkFull && this.queue.length > 0) {
      const next = this.queue[0]!;
      const wait = next.dueAt - Date.now();
      if (wait > 0) {
        this.timer = setTimeout(() => this.pump(), wait);
        break;
      }
      this.queue.shift();
      this.queuedBytes -= next.chunk.length;
      if (!this.sink.write(next.chunk)) this.sinkFull = true;
    }
    const room = !this.held() && !this.sinkFull && this.queuedBytes < MAX_HELD_BYTES;
    if (room) this.source.resume();
    else this.source.pause();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
  flows: Flow[];
}

export async function startTcpProxy(target: ProxyTarget): Promise<TcpProxy> {
  const host = "127.0.0.1";
  const pairs = new Set<Pair>();
  let isCut = false;
  const held: Record<ProxyDirection, boolean> = { toTarget: false, toClient: false };
  const delayMs: Record<ProxyDirection, number> = { toTarget: 0, toClient: 0 };
  const pumpAll = () => {
    for (const pair of pairs) for (const flow of pair.flows) flow.pump();
  };
  const drop = (pair: Pair) => {
    pairs.delete(pair);
    for (const flow of pair.flows) flow.stop();
    pair.client.destroy();
    pair.upstream.destroy();
  };
  const server = net.createServer((client) => {
    if (isCut) {
      client.destroy();
      return;
    }
    const upstream = net.connect({ host: target.host, port: target.port });
    const pair: Pair = { client, upstream, flows: [] };
    pair.flows.push(
      new Flow(client, upstream, () => held.toTarget, () => delayMs.toTarget),
      new Flow(upstream, client, () => held.toClient, () => delayMs.toClient),
    );
    pairs.add(pair);
    for (const socket of [client, upstream]) {
      socket.on("error", () => drop(pair));
      socket.on("close", () => drop(pair));
    }
    pumpAll();
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
      return held.toTarget && held.toClient;
    },
    get blocked() {
      return (Object.keys(held) as ProxyDirection[]).filter((d) => held[d]);
    },
    get delayMs() {
      return { ...delayMs };
    },
    cut() {
      isCut = true;
      for (const pair of [...pairs]) {
        pair.client.resetAndDestroy();
        drop(pair);
      }
    },
    stall() {
      held.toTarget = true;
      held.toClient = true;
      pumpAll();
    },
    block(direction: ProxyDirection) {
      held[direction] = true;
      pumpAll();
    },
    delay(ms: number, direction?: ProxyDirection) {
      if (!Number.isFinite(ms) || ms < 0) throw new Error(`delay must be a non-negative number of ms, got ${ms}`);
      if (direction) delayMs[direction] = ms;
      else delayMs.toTarget = delayMs.toClient = ms;
    },
    heal() {
      isCut = false;
      held.toTarget = held.toClient = false;
      delayMs.toTarget = delayMs.toClient = 0;
      pumpAll();
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

  block(direction: ProxyDirection): void {
    for (const p of this.proxies) p.block(direction);
  }

  delay(ms: number, direction?: ProxyDirection): void {
    for (const p of this.proxies) p.delay(ms, direction);
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
