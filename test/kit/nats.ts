import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import {
  NatsServerProcess,
  type NatsAuthorizationConfig,
  type NatsTlsConfig,
  pollHealthz,
  renderNatsConfig,
  startNatsCluster as startBinaryCluster,
  startNatsServer,
  waitForTcp,
} from "../../src/local/natsServer";
import { freePort } from "../../src/local/ports";
import { RouteLinks } from "./routes";
import { makeTempDir, removeTempDir } from "./tmp";

/**
 * The one place tests get NATS from.
 *
 * Every call gets fresh storage and random ports. With a reachable Docker
 * engine that has (or can pull) the NATS image, the servers run in
 * containers (testcontainers); otherwise they are local nats-server
 * processes (src/local/natsServer.ts). DLM_TEST_NATS=binary or
 * DLM_TEST_NATS=docker forces one.
 */

export type NatsBackend = "binary" | "docker";

export interface TestNatsServer {
  readonly name: string;
  /** Client URL; stable across kill/restart. */
  readonly url: string;
  readonly running: boolean;
  /** The server's last output lines (binary backend; "" with Docker). */
  logTail(lines?: number): string;
  /** Crash: SIGKILL (docker: container kill), wait until gone. */
  kill(): Promise<void>;
  /** Graceful stop. */
  stop(): Promise<void>;
  /** Start again on the same ports and storage (stops first if running); waits until it serves clients. */
  restart(): Promise<void>;
  /** Freeze (SIGSTOP / docker pause). */
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Until JetStream on this server is usable (in a cluster: meta leader known and current). */
  waitJetStreamReady(timeoutMs?: number): Promise<void>;
}

export interface TestNats extends TestNatsServer {
  readonly backend: NatsBackend;
  /** [url] */
  readonly urls: string[];
  /** Stops the server and removes its storage. Idempotent. */
  close(): Promise<void>;
}

export interface TestNatsCluster {
  readonly backend: NatsBackend;
  readonly servers: TestNatsServer[];
  readonly urls: string[];
  /** With `routeProxies`: the proxied routes between the servers, to cut and heal. */
  readonly routes: RouteLinks | undefined;
  /** Every running server reports JetStream ready. */
  waitJetStreamReady(timeoutMs?: number): Promise<void>;
  /** Stops every server and removes all storage. Idempotent. */
  close(): Promise<void>;
}

export interface StartNatsOptions {
  /** `sync_interval: always` (default true). */
  syncAlways?: boolean;
  /** Missed pings before nats-server drops a frozen client (binary path; default 4). */
  pingMax?: number;
  /** Override the automatic backend choice for this call. */
  backend?: NatsBackend;
  /** Echo server output on stderr (or DLM_TEST_ECHO=1); binary path only. */
  echo?: boolean;
  /**
   * Client authentication and permissions (users with permissions, one
   * user, or a token). Binary backend only: a call with `authorization` or
   * `tls` always runs the nats-server binary.
   */
  authorization?: NatsAuthorizationConfig;
  /** Client TLS (certificates from ./certs.ts). Binary backend only. */
  tls?: NatsTlsConfig;
  /** Configuration appended verbatim (operator mode from ./jwt.ts). Binary backend only. */
  extraConfig?: string;
  /** Cluster: every route between servers goes through a TCP proxy (`routes`). Binary backend only. */
  routeProxies?: boolean;
  /**
   * Cluster: `no_advertise`, so clients never learn the servers' real
   * addresses and a client given proxy URLs stays behind its proxies.
   * Binary backend only.
   */
  noAdvertise?: boolean;
}

/** Security settings need files and config the Docker path does not provide. */
function backendFor(opts: StartNatsOptions): Promise<NatsBackend> {
  if (opts.authorization || opts.tls || opts.extraConfig || opts.routeProxies || opts.noAdvertise) return Promise.resolve("binary");
  return opts.backend ? Promise.resolve(opts.backend) : natsBackend();
}

// ---------------------------------------------------------------------------
// Backend choice

let backendChoice: Promise<NatsBackend> | undefined;

/** The image of the Docker backend (DLM_TEST_NATS_IMAGE overrides). */
const NATS_IMAGE = process.env.DLM_TEST_NATS_IMAGE ?? "nats:2.10";
/** How long the automatic choice lets a missing image take to pull before it runs the binary instead. */
const IMAGE_PULL_TIMEOUT_MS = 120_000;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Is there any hint of a Docker engine? Avoids loading testcontainers when there is none. */
function dockerHinted(): boolean {
  if (process.env.DOCKER_HOST || process.env.TESTCONTAINERS_HOST_OVERRIDE) return true;
  const home = os.homedir();
  const candidates = [
    "/var/run/docker.sock",
    path.join(home, ".testcontainers.properties"),
    path.join(home, ".docker", "run", "docker.sock"),
    path.join(home, ".docker", "desktop", "docker.sock"),
  ];
  if (process.env.XDG_RUNTIME_DIR) candidates.push(path.join(process.env.XDG_RUNTIME_DIR, "docker.sock"));
  return candidates.some((p) => fs.existsSync(p));
}

/** Which backend tests use here (cached for the process). */
export function natsBackend(): Promise<NatsBackend> {
  if (!backendChoice) {
    backendChoice = (async (): Promise<NatsBackend> => {
      const forced = process.env.DLM_TEST_NATS;
      if (forced === "binary" || forced === "docker") return forced;
      if (forced) throw new Error(`DLM_TEST_NATS must be "binary" or "docker", got "${forced}"`);
      if (!dockerHinted()) return "binary";
      let client: Awaited<ReturnType<typeof import("testcontainers").getContainerRuntimeClient>>;
      let ImageName: typeof import("testcontainers").ImageName;
      try {
        const tc = await import("testcontainers");
        ImageName = tc.ImageName;
        client = await withTimeout(tc.getContainerRuntimeClient(), 5000, "looking for a container runtime");
      } catch {
        return "binary";
      }
      // An engine that answers is not enough: without the image (no registry
      // in reach, a typo in DLM_TEST_NATS_IMAGE) every test would fail on its
      // first container. Pull it once here, and run the binary if that fails.
      const image = ImageName.fromString(NATS_IMAGE);
      try {
        if (!(await withTimeout(client.image.exists(image), 10_000, `looking for image ${NATS_IMAGE}`))) {
          await withTimeout(client.image.pull(image), IMAGE_PULL_TIMEOUT_MS, `pulling image ${NATS_IMAGE}`);
        }
        return "docker";
      } catch (e) {
        process.stderr.write(
          `dlm test kit: a container engine answers but image ${NATS_IMAGE} is not available (${e instanceof Error ? e.message : String(e)}); ` +
            `using the nats-server binary (DLM_TEST_NATS=docker forces containers)\n`,
        );
        return "binary";
      }
    })();
  }
  return backendChoice;
}

const echoDefault = () => process.env.DLM_TEST_ECHO === "1";

// ---------------------------------------------------------------------------
// Binary backend

function wrapProcess(s: NatsServerProcess): TestNatsServer {
  return {
    get name() {
      return s.serverName;
    },
    get url() {
      return s.url;
    },
    get running() {
      return s.running;
    },
    logTail: (lines?: number) => s.tail(lines),
    kill: () => s.kill(),
    stop: () => s.stop(),
    restart: () => s.restart(),
    pause: () => s.pause(),
    resume: async () => s.resume(),
    waitJetStreamReady: (timeoutMs?: number) => s.waitJetStreamReady(timeoutMs),
  };
}

function once(fn: () => Promise<void>): () => Promise<void> {
  let p: Promise<void> | undefined;
  return () => (p ??= fn());
}

async function startBinaryNats(opts: StartNatsOptions): Promise<TestNats> {
  const dir = makeTempDir("dlm-nats-");
  let server: NatsServerProcess;
  try {
    server = await startNatsServer({
      storeDir: path.join(dir, "n1"),
      logFile: path.join(dir, "n1.log"),
      serverName: "n1",
      syncAlways: opts.syncAlways ?? true,
      pingMax: opts.pingMax,
      echo: opts.echo ?? echoDefault(),
      authorization: opts.authorization,
      tls: opts.tls,
      extraConfig: opts.extraConfig,
    });
  } catch (e) {
    await removeTempDir(dir);
    throw e;
  }
  const w = wrapProcess(server);
  const close = once(async () => {
    if (server.paused) server.resume();
    await server.stop();
    await removeTempDir(dir);
  });
  return Object.assign(w, { backend: "binary" as const, urls: [server.url], close });
}

async function startBinaryNatsCluster(size: number, opts: StartNatsOptions): Promise<TestNatsCluster> {
  const dir = makeTempDir("dlm-natsc-");
  const routes = opts.routeProxies ? new RouteLinks() : undefined;
  let cluster: Awaited<ReturnType<typeof startBinaryCluster>>;
  try {
    cluster = await startBinaryCluster({
      size,
      baseDir: dir,
      syncAlways: opts.syncAlways ?? true,
      echo: opts.echo ?? echoDefault(),
      authorization: opts.authorization,
      tls: opts.tls,
      noAdvertise: opts.noAdvertise,
      routeUrl: routes ? (from, to, url) => routes.route(from, to, url) : undefined,
    });
  } catch (e) {
    await routes?.close();
    await removeTempDir(dir);
    throw e;
  }
  const close = once(async () => {
    for (const s of cluster.servers) if (s.paused) s.resume();
    await cluster.stop();
    await routes?.close();
    await removeTempDir(dir);
  });
  return {
    backend: "binary",
    servers: cluster.servers.map(wrapProcess),
    urls: cluster.urls,
    routes,
    waitJetStreamReady: (timeoutMs?: number) => cluster.waitJetStreamReady(timeoutMs),
    close,
  };
}

// ---------------------------------------------------------------------------
// Docker backend (testcontainers). Not exercised on machines without Docker.
//
// GenericContainer rather than @testcontainers/nats' NatsContainer (not a
// dependency): that one always adds `--user test --pass test`, and dlm nodes and tests connect with
// plain URLs. The official image's entrypoint is nats-server, so the command
// is just its arguments. Host ports are bound explicitly so URLs survive a
// container stop/start.


const CONF_IN_CONTAINER = "/etc/dlm/nats.conf";

interface DockerServer extends TestNatsServer {
  removeContainer(): Promise<void>;
}

async function startDockerServers(
  names: string[],
  opts: StartNatsOptions,
): Promise<{ servers: DockerServer[]; cleanup: () => Promise<void> }> {
  const tc = await import("testcontainers");
  const client = await tc.getContainerRuntimeClient();
  const clustered = names.length > 1;
  const network = clustered ? await new tc.Network().start() : undefined;
  type Started = Awaited<ReturnType<InstanceType<typeof tc.GenericContainer>["start"]>>;

  const startOne = async (name: string): Promise<DockerServer> => {
    const clientPort = await freePort();
    const monitorPort = await freePort();
    const conf = renderNatsConfig({
      serverName: name,
      host: "0.0.0.0",
      port: 4222,
      monitorPort: 8222,
      storeDir: "/data",
      syncAlways: opts.syncAlways ?? true,
      cluster: clustered
        ? {
            name: "dlm",
            host: "0.0.0.0",
            port: 6222,
            routes: names.filter((n) => n !== name).map((n) => `nats-route://${n}:6222`),
          }
        : undefined,
    });
    let gc = new tc.GenericContainer(NATS_IMAGE)
      .withCopyContentToContainer([{ content: conf, target: CONF_IN_CONTAINER }])
      .withCommand(["-c", CONF_IN_CONTAINER])
      .withExposedPorts({ container: 4222, host: clientPort }, { container: 8222, host: monitorPort })
      .withWaitStrategy(tc.Wait.forLogMessage(/Server is ready/))
      .withStartupTimeout(120_000);
    if (network) gc = gc.withNetwork(network).withNetworkAliases(name);
    const started: Started = await gc.start();
    const host = started.getHost();
    const url = `nats://${host}:${started.getMappedPort(4222)}`;
    const dc = client.container.getById(started.getId());
    let running = true;
    let paused = false;
    const waitServing = async (timeoutMs: number) => {
      const deadline = Date.now() + timeoutMs;
      await waitForTcp(host, clientPort, timeoutMs);
      await pollHealthz(host, monitorPort, "js-enabled-only=true", Math.max(1000, deadline - Date.now()));
    };
    const server: DockerServer = {
      name,
      url,
      get running() {
        return running;
      },
      logTail: () => "",
      async kill() {
        if (!running) return;
        if (paused) await server.resume();
        await dc.kill();
        await dc.wait();
        running = false;
      },
      async stop() {
        if (!running) return;
        if (paused) await server.resume();
        await dc.stop({ t: 5 });
        running = false;
      },
      async restart() {
        await server.stop();
        await dc.start();
        running = true;
        await waitServing(60_000);
      },
      async pause() {
        if (!running) throw new Error(`nats container ${name} is not running; cannot pause`);
        await dc.pause();
        paused = true;
      },
      async resume() {
        if (!paused) return;
        await dc.unpause();
        paused = false;
      },
      waitJetStreamReady: (timeoutMs = 60_000) => pollHealthz(host, monitorPort, "js-server-only=true", timeoutMs),
      async removeContainer() {
        if (paused) await dc.unpause().catch(() => undefined);
        await started.stop().catch(() => dc.remove({ force: true }));
        running = false;
      },
    };
    return server;
  };

  const results = await Promise.allSettled(names.map(startOne));
  const servers = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const cleanup = async () => {
    await Promise.all(servers.map((s) => s.removeContainer().catch(() => undefined)));
    if (network) await network.stop().catch(() => undefined);
  };
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) {
    await cleanup();
    throw failed.reason;
  }
  return { servers, cleanup };
}

async function startDockerNats(opts: StartNatsOptions): Promise<TestNats> {
  const { servers, cleanup } = await startDockerServers(["n1"], opts);
  const s = servers[0]!;
  return Object.assign(s, { backend: "docker" as const, urls: [s.url], close: once(cleanup) });
}

async function startDockerNatsCluster(size: number, opts: StartNatsOptions): Promise<TestNatsCluster> {
  const names = Array.from({ length: size }, (_, i) => `n${i + 1}`);
  const { servers, cleanup } = await startDockerServers(names, opts);
  const waitJetStreamReady = async (timeoutMs = 60_000) => {
    await Promise.all(servers.filter((s) => s.running).map((s) => s.waitJetStreamReady(timeoutMs)));
  };
  try {
    await waitJetStreamReady();
  } catch (e) {
    await cleanup();
    throw e;
  }
  return { backend: "docker", servers, urls: servers.map((s) => s.url), routes: undefined, waitJetStreamReady, close: once(cleanup) };
}

// ---------------------------------------------------------------------------

/** One JetStream server with fresh storage. */
export async function startNats(opts: StartNatsOptions = {}): Promise<TestNats> {
  const backend = await backendFor(opts);
  return backend === "docker" ? startDockerNats(opts) : startBinaryNats(opts);
}

/** A full-mesh JetStream cluster (default 3 servers), ready for replicated streams. */
export async function startNatsCluster(size = 3, opts: StartNatsOptions = {}): Promise<TestNatsCluster> {
  const backend = await backendFor(opts);
  return backend === "docker" ? startDockerNatsCluster(size, opts) : startBinaryNatsCluster(size, opts);
}
