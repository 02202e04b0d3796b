/**
 * The node's HTTP port: Prometheus text on /metrics, liveness on /healthz,
 * readiness on /readyz. GET and HEAD only; everything else is 404 or 405.
 * The server is small and bounded: few connections, short timeouts, no
 * request bodies read, so a misbehaving scraper cannot hurt the node.
 */
import * as http from "http";
import type { AddressInfo } from "net";
import type { Logger } from "../log/logger";
import type { NodeMetrics } from "./nodeMetrics";
import type { Readiness } from "./readiness";

export interface HealthSource {
  /** Liveness: the process runs (it answers) and its NATS connection is connected. */
  natsConnected(): boolean;
  readiness(): Promise<Readiness>;
}

export interface MetricsServerOptions {
  host: string;
  port: number;
  /** Concurrent connections; more are refused by the kernel backlog, not queued here. */
  maxConnections: number;
  /** A request (headers and the response being written) must finish within this. */
  requestTimeoutMs: number;
  logger: Logger;
}

export class MetricsServer {
  private constructor(
    private readonly server: http.Server,
    /** http://host:port, as a scraper on this machine would reach it. */
    readonly url: string,
  ) {}

  static async start(opts: MetricsServerOptions, metrics: NodeMetrics, health: HealthSource): Promise<MetricsServer> {
    const server = http.createServer((req, res) => void handle(req, res, metrics, health, opts.logger));
    server.maxConnections = opts.maxConnections;
    server.requestTimeout = opts.requestTimeoutMs;
    server.headersTimeout = opts.requestTimeoutMs;
    await new Promise<void>((resolve, reject) => {
      server.once("error", (err) => reject(new Error(`metrics server cannot listen on ${opts.host}:${opts.port}: ${err.message}`)));
      server.listen(opts.port, opts.host, () => resolve());
    });
    server.on("error", (err) => opts.logger.warn({ err: err.message }, "metrics server error"));
    const port = (server.address() as AddressInfo).port;
    const host = opts.host === "0.0.0.0" || opts.host === "::" ? "127.0.0.1" : opts.host;
    return new MetricsServer(server, `http://${host.includes(":") ? `[${host}]` : host}:${port}`);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

async function handle(req: http.IncomingMessage, res: http.ServerResponse, metrics: NodeMetrics, health: HealthSource, logger: Logger): Promise<void> {
  const path = (req.url ?? "/").split("?")[0];
  const headOnly = req.method === "HEAD";
  if (path !== "/metrics" && path !== "/healthz" && path !== "/readyz") return send(res, 404, "text/plain", "not found: try /metrics, /healthz or /readyz\n");
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("Allow", "GET, HEAD");
    return send(res, 405, "text/plain", "only GET and HEAD\n");
  }
  try {
    if (path === "/metrics") return send(res, 200, metrics.contentType, await metrics.text(), headOnly);
    if (path === "/healthz") {
      const up = health.natsConnected();
      return send(res, up ? 200 : 503, "text/plain", up ? "ok\n" : "NATS connection is not connected\n", headOnly);
    }
    const ready = await health.readiness();
    return send(res, ready.ready ? 200 : 503, "text/plain", `${ready.ready ? "ready" : "not ready"}: ${ready.reason}\n`, headOnly);
  } catch (err) {
    logger.warn({ err: (err as Error).message, path }, "metrics endpoint failed");
    return send(res, 500, "text/plain", `error: ${(err as Error).message}\n`);
  }
}

function send(res: http.ServerResponse, status: number, contentType: string, body: string, headOnly = false): void {
  res.statusCode = status;
  res.setHeader("Content-Type", contentType);
  res.setHeader("Cache-Control", "no-store");
  res.setHeader("Content-Length", Buffer.byteLength(body));
  res.end(headOnly ? undefined : body);
}
