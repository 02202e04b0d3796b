/**
 * The CLI as the README uses it: `dlm up --demo` (one node, and the
 * three-server HA version `npm run demo` runs), `status`, `read`, the
 * interactive `client` fed through a pipe, and `--help` everywhere.
 */
import { spawn } from "child_process";
import * as fs from "fs";
import { runDlm } from "../kit/cli";
import { cliMain, repoRoot } from "../kit/dlmNode";
import { get } from "../kit/metrics";
import { startDlmCluster, type DlmTestCluster } from "../kit/dlmCluster";
import { makeTempDir, removeTempDir } from "../kit/tmp";

/** The kit's runner, with this file's argument order (stdin text, then the timeout). */
function dlm(args: string[], input?: string, timeoutMs?: number) {
  return runDlm(args, { input, timeoutMs });
}

describe("help", () => {
  test.each([[[]], [["--help"]], [["up", "--help"]], [["node", "--help"]], [["status", "--help"]], [["read", "--help"]], [["client", "--help"]]])(
    "dlm %j prints usage and exits 0",
    async (args) => {
      const result = await dlm(args);
      expect(result.code).toBe(0);
      expect(result.stdout).toMatch(/usage: dlm/);
    },
  );

  test("an unknown command or flag exits 2 with a clear message", async () => {
    const unknown = await dlm(["frobnicate"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command "frobnicate"/);
    const badFlag = await dlm(["status", "--colour"]);
    expect(badFlag.code).toBe(2);
    expect(badFlag.stderr).toMatch(/unknown flag --colour/);
  });

  test("a value outside a flag's range exits 2 naming the flag, the value and the range, and starts nothing", async () => {
    // NATS_URL points where nothing listens: a value that passed the parser
    // (it used to be raised to 100 in silence) shows as exit 4, not 2.
    const node = await runDlm(["node", "--log-timeout-ms", "50"], { env: { NATS_URL: "nats://127.0.0.1:1" } });
    expect(node).toEqual({ code: 2, stdout: "", stderr: "dlm: flag --log-timeout-ms must be at least 100, got 50\n" });
    const dir = makeTempDir("dlm-up-range-");
    const up = await dlm(["up", "--port", "0", "--dir", `${dir}/d`, "--lease-ms", "100"]);
    expect(up).toEqual({ code: 2, stdout: "", stderr: "dlm: flag --lease-ms must be between 500 and 600000, got 100\n" });
    expect(fs.existsSync(`${dir}/d`)).toBe(false);
    await removeTempDir(dir);
  });

  test("dlm up --fresh with bad credentials flags exits 2 and deletes nothing", async () => {
    const dir = makeTempDir("dlm-up-auth-");
    fs.writeFileSync(`${dir}/keep`, "data from an earlier run");
    const up = await dlm(["up", "--port", "0", "--dir", dir, "--fresh", "--user", "alice"]);
    expect(up).toEqual({ code: 2, stdout: "", stderr: "dlm: --user and --password go together\n" });
    expect(fs.readFileSync(`${dir}/keep`, "utf8")).toBe("data from an earlier run");
    await removeTempDir(dir);
  });
});

describe("dlm up --demo", () => {
  let dir: string;
  beforeAll(() => {
    dir = makeTempDir("dlm-up-");
  });
  afterAll(async () => {
    await removeTempDir(dir);
  });

  test("one nats-server and one node: the demo runs and everything stops", async () => {
    const result = await dlm(["up", "--port", "0", "--dir", `${dir}/single`, "--demo"]);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/leader: n1 \(epoch 1\)/);
    expect(result.stdout).toMatch(/B: acquire global -> waiting in the queue/);
    expect(result.stdout).toMatch(/refused NOT_HOLDER/);
    expect(result.stdout).toMatch(/file_1 now holds:\n {3}A: line 1\n {3}A: line 2\n {3}B: line 1\n/);
    expect(result.stdout).toMatch(/\nstopped\n$/);
  });

  test("the README's HA demo: 3 nats-servers, 3 nodes, the leader killed mid-section", async () => {
    const result = await dlm(["up", "--nats", "3", "--nodes", "3", "--port", "0", "--fresh", "--dir", `${dir}/ha`, "--demo"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/killing the leader n\d \(SIGKILL\)/);
    expect(result.stdout).toMatch(/release -> committed 2 appends: the section survived the failover whole/);
    expect(result.stdout).toMatch(/ {3}A: before failover\n {3}A: after failover\n/);
    // All three nodes are back and caught up when the final status is printed.
    expect(result.stdout.match(/^ {2}n\d +(leader|follower) +applied +\d+ +lag +0/gm)).toHaveLength(3);
  });
});

/**
 * A `dlm up` a test started and has not seen exit. A failed assertion must
 * not leave that deployment running (jest would never exit): a first SIGINT
 * asks for a clean stop, a second one makes dlm up kill every child at once.
 */
let runningUp: import("child_process").ChildProcess | undefined;
afterEach(async () => {
  const child = runningUp;
  runningUp = undefined;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGINT");
  const timer = setTimeout(() => child.kill("SIGINT"), 15_000);
  await exited;
  clearTimeout(timer);
}, 30_000);

describe("dlm up without --demo", () => {
  test("runs until SIGINT (Ctrl-C), then stops the nodes and NATS and exits 0, leaving no process behind", async () => {
    const dir = makeTempDir("dlm-up-int-");
    const child = spawn(process.execPath, [cliMain, "up", "--port", "0", "--nodes", "2", "--dir", dir], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
    runningUp = child;
    let stdout = "";
    let stderr = "";
    let exitCode: number | null | undefined;
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) =>
      child.on("exit", (code) => {
        exitCode = code;
        resolve(code);
      }),
    );
    const deadline = Date.now() + 60_000;
    while (!stdout.includes("Ctrl-C stops everything.")) {
      if (Date.now() > deadline || exitCode !== undefined) {
        throw new Error(`dlm up did not get ready (exit ${String(exitCode)}):\n${stdout}\nstderr:\n${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const pids = [...stdout.matchAll(/pid (\d+)/g)].map((m) => Number(m[1]));
    expect(pids).toHaveLength(2);
    // Every node serves its metrics port, printed by dlm up.
    const metricsUrls = [...stdout.matchAll(/n\d (http:\/\/127\.0\.0\.1:\d+)\/metrics/g)].map((m) => m[1]);
    expect(metricsUrls).toHaveLength(2);
    for (const url of metricsUrls) expect((await get(url, "/healthz")).status).toBe(200);
    // The hints work from an installed package.
    expect(stdout).toMatch(/^ {2}npx dlm status --server nats:\/\/127\.0\.0\.1:\d+$/m);
    expect(stdout).toMatch(/^ {2}npx dlm client --server nats:\/\/127\.0\.0\.1:\d+$/m);
    // A second dlm up on the same directory fails at once (exit 6) and
    // touches nothing: no second nats-server, the config and the lock as they were.
    const conf = `${dir}/nats/s1/nats-server.conf`;
    const before = { conf: fs.readFileSync(conf, "utf8"), mtimeMs: fs.statSync(conf).mtimeMs, lock: fs.readFileSync(`${dir}/dlm-up.pid`, "utf8") };
    expect(before.lock).toBe(`${child.pid}\n`);
    const second = await dlm(["up", "--port", "0", "--dir", dir, "--fresh"], undefined, 20_000);
    expect(second.code).toBe(6);
    expect(second.stderr).toMatch(new RegExp(`dlm: .*${dir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} is in use by another dlm up \\(pid ${child.pid}\\); nothing was started or changed`));
    expect(second.stdout).toBe("");
    expect({ conf: fs.readFileSync(conf, "utf8"), mtimeMs: fs.statSync(conf).mtimeMs, lock: fs.readFileSync(`${dir}/dlm-up.pid`, "utf8") }).toEqual(before);
    // The first deployment is untouched and still serving.
    for (const url of metricsUrls) expect((await get(url, "/healthz")).status).toBe(200);
    child.kill("SIGINT");
    const code = await exited;
    if (code !== 0) throw new Error(`dlm up exited ${String(code)} after SIGINT:\n${stdout}\nstderr:\n${stderr}`);
    // A clean stop gives the directory back.
    expect(fs.existsSync(`${dir}/dlm-up.pid`)).toBe(false);
    expect(stdout).toMatch(/stopping: dlm nodes first \(leader hands over\), then NATS\nstopped\n$/);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
    // The nodes stopped cleanly (SIGTERM from dlm up), not by being killed.
    for (const node of ["n1", "n2"]) {
      const log = require("fs").readFileSync(`${dir}/logs/${node}.log`, "utf8") as string;
      expect(log).toMatch(/"msg":"stopped"/);
    }
    await removeTempDir(dir);
  });
});

describe("dlm up interrupted while starting", () => {
  test("SIGINT before it is ready still ends in a clean stop with no process left behind", async () => {
    const dir = makeTempDir("dlm-up-early-");
    const child = spawn(process.execPath, [cliMain, "up", "--port", "0", "--nodes", "2", "--dir", dir], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
    runningUp = child;
    let stdout = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    // As soon as NATS is up, before the nodes have even started.
    while (!stdout.includes("nats:")) await new Promise((r) => setTimeout(r, 10));
    child.kill("SIGINT");
    expect(await exited).toBe(0);
    expect(stdout).toMatch(/\nstopped\n$/);
    const { execFileSync } = require("child_process") as typeof import("child_process");
    const left = execFileSync("ps", ["-eo", "args"], { encoding: "utf8" }).split("\n").filter((l) => l.includes(dir));
    expect(left).toEqual([]);
    await removeTempDir(dir);
  });

  /**
   * Starts `dlm up ARGS --dir DIR`, sends SIGINT once its output contains
   * `when`, and returns its exit code and output. The 15 s bound is a hang
   * detector, not a speed target: an interrupted start-up must not run on
   * to its end (a leader, the whole demo) before it stops.
   */
  async function interruptUp(args: string[], dir: string, when: string) {
    const child = spawn(process.execPath, [cliMain, "up", ...args, "--dir", dir], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
    runningUp = child;
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    for (const deadline = Date.now() + 60_000; !stdout.includes(when); await new Promise((r) => setTimeout(r, 10))) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`dlm up never printed ${JSON.stringify(when)}:\n${stdout}\nstderr:\n${stderr}`);
    }
    child.kill("SIGINT");
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([exited, new Promise<"hung">((resolve) => (timer = setTimeout(() => resolve("hung"), 15_000)))]);
    clearTimeout(timer);
    if (code === "hung") throw new Error(`dlm up still running 15 s after SIGINT:\n${stdout}\nstderr:\n${stderr}`);
    const { execFileSync } = require("child_process") as typeof import("child_process");
    const left = execFileSync("ps", ["-eo", "pid,args"], { encoding: "utf8" }).split("\n").filter((l) => l.includes(dir));
    const nodePids = [...stdout.matchAll(/pid (\d+)/g)].map((m) => Number(m[1]));
    const alive = nodePids.filter((pid) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    });
    return { code, stdout, stderr, left, alive };
  }

  test("SIGINT during start-up stops at once: no node is started, nothing is left, and it says it was interrupted", async () => {
    const dir = makeTempDir("dlm-up-intr-");
    // A three-server cluster takes seconds to form: the signal lands while
    // dlm up waits for it, before any node exists.
    const result = await interruptUp(["--nats", "3", "--nodes", "3", "--port", "0"], dir, "dlm up:");
    expect(result.left).toEqual([]);
    expect(result.code).toBe(0);
    expect(result.stderr).toBe("");
    expect(result.stdout).toMatch(/^interrupted \(SIGINT\) during the start-up: stopping what was started$/m);
    expect(result.stdout.match(/interrupted/g)).toHaveLength(1);
    // Start-up did not go on: no node was spawned, no leader awaited.
    expect(result.stdout).not.toMatch(/nodes:|leader:/);
    expect(result.stdout).toMatch(/\nstopping: dlm nodes first \(leader hands over\), then NATS\nstopped\n$/);
    expect(fs.existsSync(`${dir}/dlm-up.pid`)).toBe(false);
    await removeTempDir(dir);
  });

  test("SIGINT during --demo stops the demo, the nodes and NATS without waiting for the demo's end", async () => {
    const dir = makeTempDir("dlm-up-demo-intr-");
    const result = await interruptUp(["--nodes", "2", "--port", "0", "--demo"], dir, "A: connected");
    expect(result.left).toEqual([]);
    expect(result.alive).toEqual([]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^interrupted \(SIGINT\) during the demo: stopping what was started$/m);
    // The demo did not run on: no failover, no final file contents.
    expect(result.stdout).not.toMatch(/failover:|now holds/);
    expect(result.stdout).toMatch(/\nstopped\n$/);
    // The nodes were stopped cleanly (SIGTERM from dlm up), not killed.
    for (const node of ["n1", "n2"]) expect(fs.readFileSync(`${dir}/logs/${node}.log`, "utf8")).toMatch(/"msg":"stopped"/);
    await removeTempDir(dir);
  });
});

describe("dlm up and a nats-server it cannot connect to", () => {
  test("a server that refuses dlm up's connection ends it with exit 4, one sentence, and everything stopped", async () => {
    const dir = makeTempDir("dlm-up-refused-");
    // The nats-server on PATH demands a token dlm up was not given, as a
    // server whose packaged config requires credentials would: it starts,
    // then refuses dlm up's own connection (Authorization Violation).
    const { execFileSync } = require("child_process") as typeof import("child_process");
    const real = execFileSync("sh", ["-c", "command -v nats-server"], { encoding: "utf8" }).trim();
    fs.mkdirSync(`${dir}/bin`);
    fs.writeFileSync(
      `${dir}/bin/nats-server`,
      `#!/bin/sh\nif [ "$1" = "-c" ]; then exec ${JSON.stringify(real)} "$@" --auth not-the-token-of-dlm-up; fi\nexec ${JSON.stringify(real)} "$@"\n`,
      { mode: 0o755 },
    );
    const result = await runDlm(["up", "--port", "0", "--dir", `${dir}/up`], { env: { PATH: `${dir}/bin:${process.env.PATH ?? ""}` }, timeoutMs: 60_000 });
    expect(result.code).toBe(4);
    expect(result.stderr).toMatch(
      /^dlm: NATS at nats:\/\/127\.0\.0\.1:\d+ refused the credentials \(no credentials\): .*Authorization Violation.*\. Check --user\/--password or --token\.\n$/,
    );
    // What it had started is stopped, as after Ctrl-C.
    expect(result.stdout).toMatch(/\nstopping: dlm nodes first \(leader hands over\), then NATS\nstopped\n$/);
    const left = execFileSync("ps", ["-eo", "args"], { encoding: "utf8" }).split("\n").filter((l) => l.includes(`${dir}/up`));
    expect(left).toEqual([]);
    expect(fs.existsSync(`${dir}/up/dlm-up.pid`)).toBe(false);
    await removeTempDir(dir);
  });
});

describe("status, read and client against a running node", () => {
  let cluster: DlmTestCluster;
  beforeAll(async () => {
    cluster = await startDlmCluster({ nodes: 1, leaseMs: 5000 });
    await cluster.waitForLeader();
  });
  afterAll(async () => {
    await cluster?.close();
  });

  test("dlm client reads commands from a pipe and answers each", async () => {
    const nats = cluster.urls.join(",");
    const result = await dlm(["client", "--nats", nats], "acquire\nappend file_7 hello world\nstatus\nrelease\nread file_7\nappend ../etc/passwd x\nquit\n");
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^Connected! \(session [A-Za-z0-9_-]+\)/);
    expect(result.stdout).toMatch(/granted global, fencing token \d+/);
    expect(result.stdout).toMatch(/staged \(1 appends, 12 bytes in this section\)/);
    expect(result.stdout).toMatch(/released; committed 1 appends \(12 bytes\)/);
    expect(result.stdout).toMatch(/\nhello world\n/);
    expect(result.stdout).toMatch(/error FILE_NOT_FOUND \(code 1\)/);
    expect(result.stdout).toMatch(/Disconnected!\n$/);
  });

  test("dlm status shows the leader, the log and the node; dlm read prints committed bytes", async () => {
    const nats = cluster.urls.join(",");
    const status = await dlm(["status", "--nats", nats]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/^leader: n1 \(epoch 1\)/);
    expect(status.stdout).toMatch(/log: last sequence \d+/);
    expect(status.stdout).toMatch(/n1 +leader +applied/);
    const json = JSON.parse((await dlm(["status", "--nats", nats, "--json"])).stdout) as { leader: { leader: string } };
    expect(json.leader.leader).toBe("n1");
    const read = await dlm(["read", "file_7", "--nats", nats]);
    expect(read.code).toBe(0);
    expect(read.stdout).toBe("hello world\n");
    const bad = await dlm(["read", "file_100", "--nats", nats]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/FILE_NOT_FOUND \(code 1\)/);
  });
});
