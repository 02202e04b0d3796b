/**
 * The client API people reach for, on real processes (one nats-server, one
 * dlm node): `withLock` commits when its function resolves and discards the
 * section when it throws, `await using` abandons a lease left without
 * `release()`, `tryAcquire(name, { waitMs })` resolves null in time and
 * leaves no waiter behind, and the `dlm client` prompt cancels a waiting
 * acquire (and sem, and all) on Ctrl-C. One deployment for all of them; each scenario uses its
 * own file and lock names.
 *
 * `await using` is really compiled here: tsc type-checks this file in the
 * build, and ts-jest turns it into TypeScript's disposal helpers for Node 20.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "child_process";
import { FaultInjector, LockExpiredError, type DlmClient, type Lease } from "../../src/client";
import { startDlmCluster, sleep, type DlmTestCluster } from "../kit/dlmCluster";
import { cliMain, repoRoot } from "../kit/dlmNode";

let cluster: DlmTestCluster;

beforeAll(async () => {
  cluster = await startDlmCluster({ nodes: 1, leaseMs: 3000, sessionTimeoutMs: 10_000 });
  await cluster.waitForLeader();
});

afterAll(async () => {
  await cluster?.close();
});

/** The lock's holder token and queue length as the leader sees it. */
async function lockView(name: string): Promise<{ holder: number | undefined; waiting: number }> {
  const lock = (await cluster.status()).locks.find((l) => l.name === name);
  return { holder: lock?.holder?.token, waiting: lock?.queue.length ?? 0 };
}

describe("withLock", () => {
  test("commits what fn appended when fn resolves, and returns fn's result", async () => {
    const client = await cluster.client();
    let seen: Lease | undefined;
    const result = await client.withLock("global", async (lease) => {
      seen = lease;
      expect(lease.signal.aborted).toBe(false);
      await client.append("file_11", "one\n");
      await client.append("file_11", "two\n");
      return 42;
    });
    expect(result).toBe(42);
    expect(seen?.released).toBe(true);
    expect(client.leases).toEqual([]);
    expect((await client.read("file_11")).toString()).toBe("one\ntwo\n");
  });

  test("discards the whole section when fn throws, rethrows fn's own error, and passes the lock on at once", async () => {
    const a = await cluster.client();
    const b = await cluster.client();
    const boom = new Error("half-way failure");
    let bWaiting: Promise<Lease> | undefined;
    const started = Date.now();
    await expect(
      a.withLock("global", async () => {
        await a.append("file_12", "first half\n");
        bWaiting = b.acquire("global");
        await sleep(200);
        throw boom;
      }),
    ).rejects.toBe(boom);
    // B gets the lock right after the abandon, not after A's 3 s lease.
    const lease = await bWaiting!;
    expect(Date.now() - started).toBeLessThan(2500);
    expect(a.leases).toEqual([]);
    await lease.release();
    expect((await a.read("file_12")).length).toBe(0);
    expect(cluster.fileOn(0, 12).length).toBe(0);
  });

  test("when the abandon after a throw gets no answer, fn's error still surfaces, the failure is logged, and the lease runs out uncommitted", async () => {
    const faults = new FaultInjector();
    faults.add({ op: "abandon", action: { kind: "dropRequest" } });
    const warnings: string[] = [];
    const logger = { debug() {}, info() {}, error() {}, warn: (_o: object, msg?: string) => void warnings.push(msg ?? "") };
    const client = await cluster.client({ faults, logger, requestTimeoutMs: 300, maxAttempts: 2 });
    const boom = new Error("section failed");
    let token = 0;
    await expect(
      client.withLock("global", async (lease) => {
        token = lease.token;
        await client.append("file_17", "must not land\n");
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(warnings).toContain("dlm client: abandoning after a failed section failed; the lease will run out");
    // The client no longer renews it: it is reported lost at once...
    expect(client.leases).toEqual([]);
    // ...and the server ends the grant within the 3 s lease, discarding the section.
    const other = await cluster.client();
    const next = await other.acquire("global", { signal: AbortSignal.timeout(10_000) });
    expect(next.token).toBeGreaterThan(token);
    await next.release();
    expect((await other.read("file_17")).length).toBe(0);
  });

  test("rejects with the lease's error when the lease was lost while fn ran, and commits nothing", async () => {
    // Every renew is lost on the way: the 3 s lease runs out during fn.
    const faults = new FaultInjector();
    faults.add({ op: "renew", action: { kind: "dropRequest" } });
    const client = await cluster.client({ faults, requestTimeoutMs: 500, maxAttempts: 1 });
    await expect(
      client.withLock("global", async (lease) => {
        await client.append("file_13", "never\n");
        await new Promise<void>((resolve) => lease.signal.addEventListener("abort", () => resolve(), { once: true }));
        expect(lease.signal.reason).toBeInstanceOf(LockExpiredError);
        return "too late";
      }),
    ).rejects.toBeInstanceOf(LockExpiredError);
    expect(client.leases).toEqual([]);
    expect((await client.read("file_13")).length).toBe(0);
    await cluster.waitCaughtUp();
    expect(cluster.fileOn(0, 13).length).toBe(0);
  });
});

describe("await using", () => {
  test("leaving the scope without release() abandons: nothing commits, the lock is free at once", async () => {
    const client = await cluster.client();
    let token = 0;
    {
      await using lease = await client.acquire("global");
      token = lease.token;
      await client.append("file_14", "abandoned\n");
      expect((await lockView("global")).holder).toBe(token);
    }
    expect(client.leases).toEqual([]);
    expect((await lockView("global")).holder).toBeUndefined();
    expect((await client.read("file_14")).length).toBe(0);
  });

  test("an exception leaving the scope abandons and surfaces unchanged", async () => {
    const client = await cluster.client();
    const boom = new Error("boom");
    const run = async (): Promise<void> => {
      await using _lease = await client.acquire("global");
      await client.append("file_15", "half\n");
      throw boom;
    };
    await expect(run()).rejects.toBe(boom);
    expect(client.leases).toEqual([]);
    expect((await client.read("file_15")).length).toBe(0);
  });

  test("release() inside the scope commits; leaving the scope then changes nothing", async () => {
    const client = await cluster.client();
    {
      await using lease = await client.acquire("global");
      await client.append("file_16", "kept\n");
      expect(await lease.release()).toEqual({ appends: 1, bytes: 5 });
    }
    expect((await client.read("file_16")).toString()).toBe("kept\n");
  });
});

describe("tryAcquire with waitMs", () => {
  let holder: DlmClient;
  let other: DlmClient;
  beforeAll(async () => {
    holder = await cluster.client();
    other = await cluster.client();
  });

  test("resolves null when not granted within waitMs and leaves no waiter on the server", async () => {
    const lease = await holder.acquire("try.wait");
    const started = Date.now();
    expect(await other.tryAcquire("try.wait", { waitMs: 500 })).toBeNull();
    expect(Date.now() - started).toBeGreaterThanOrEqual(450);
    expect(await lockView("try.wait")).toEqual({ holder: lease.token, waiting: 0 });
    // Nothing of the failed try lingers: the other client is not "already waiting".
    expect(await other.tryAcquire("try.wait")).toBeNull();
    await lease.release();
  });

  test("resolves with the lease when the lock is passed on within waitMs", async () => {
    const lease = await holder.acquire("try.wait");
    setTimeout(() => void lease.release(), 300);
    const got = await other.tryAcquire("try.wait", { waitMs: 5000 });
    expect(got).not.toBeNull();
    expect(got!.token).toBeGreaterThan(lease.token);
    await got!.release();
  });

  test("when the server's WAIT_TIMEOUT never arrives, the client gives up on its own and still resolves null", async () => {
    const lease = await holder.acquire("try.lost");
    // The wait's end is lost both ways: no waitEnded notification, and no
    // answer to the acquire's polls (attempts after the first).
    const faults = new FaultInjector();
    faults.add({ action: { kind: "dropNotification", event: "waitEnded" } });
    faults.add({ op: "acquire", attempt: [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20], action: { kind: "dropReply" } });
    const blind = await cluster.client({ faults, requestTimeoutMs: 300 });
    const started = Date.now();
    expect(await blind.tryAcquire("try.lost", { waitMs: 200 })).toBeNull();
    // Not before the server's deadline plus the client's backstop (5 s).
    expect(Date.now() - started).toBeGreaterThanOrEqual(5000);
    expect(faults.events.some((e) => e.event === "waitEnded" && e.action === "dropNotification")).toBe(true);
    expect(await lockView("try.lost")).toEqual({ holder: lease.token, waiting: 0 });
    await lease.release();
  });

  test("without waitMs it does not wait; a bad waitMs is a clear error", async () => {
    const lease = await holder.acquire("try.wait");
    expect(await other.tryAcquire("try.wait")).toBeNull();
    await expect(other.tryAcquire("try.wait", { waitMs: -1 })).rejects.toThrow(/invalid waitMs/);
    await lease.release();
  });
});

describe("dlm client prompt", () => {
  /** The prompt as a child process with piped stdin, and what it printed so far. */
  function prompt(): { child: ChildProcessWithoutNullStreams; out: () => string; waitFor: (re: RegExp, timeoutMs?: number) => Promise<void> } {
    const child = spawn(process.execPath, [cliMain, "client", "--nats", cluster.urls.join(",")], { cwd: repoRoot, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const waitFor = async (re: RegExp, timeoutMs = 15_000): Promise<void> => {
      const deadline = Date.now() + timeoutMs;
      while (!re.test(stdout)) {
        if (Date.now() > deadline) throw new Error(`the prompt never printed ${re}:\n${stdout}\nstderr:\n${stderr}`);
        await sleep(25);
      }
    };
    return { child, out: () => stdout, waitFor };
  }

  test("Ctrl-C cancels a waiting acquire on the server and the prompt stays usable; Ctrl-C at an idle prompt says goodbye", async () => {
    const holderClient = await cluster.client();
    const held = await holderClient.acquire("prompt.lock");
    const { child, out, waitFor } = prompt();
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    await waitFor(/Connected!/);
    child.stdin.write("acquire prompt.lock\n");
    await waitFor(/waiting for prompt\.lock/);
    // The wait is queued on the server.
    for (let i = 0; (await lockView("prompt.lock")).waiting !== 1; i++) {
      if (i > 100) throw new Error("the prompt's acquire never queued");
      await sleep(50);
    }
    child.kill("SIGINT");
    await waitFor(/cancelled: no longer waiting for prompt\.lock/);
    expect(await lockView("prompt.lock")).toEqual({ holder: held.token, waiting: 0 });
    // Still usable: the lock is passed on later and the prompt can take it.
    await held.release();
    child.stdin.write("acquire prompt.lock\n");
    await waitFor(/granted prompt\.lock, fencing token \d+/);
    child.stdin.write("abandon prompt.lock\n");
    await waitFor(/abandoned prompt\.lock; discarded 0 appends/);
    child.kill("SIGINT");
    expect(await exited).toBe(0);
    expect(out()).toMatch(/Disconnected!\n$/);
    expect(await lockView("prompt.lock")).toEqual({ holder: undefined, waiting: 0 });
  });

  test("shared, sem and all are granted and shown; Ctrl-C cancels a waiting sem or all on the server", async () => {
    const other = await cluster.client();
    const { child, out, waitFor } = prompt();
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    const queued = async (name: string): Promise<void> => {
      for (let i = 0; (await lockView(name)).waiting !== 1; i++) {
        if (i > 100) throw new Error(`the prompt never queued for ${name}`);
        await sleep(50);
      }
    };
    await waitFor(/Connected!/);
    child.stdin.write("help\n");
    await waitFor(/sem NAME LIMIT \[PERMITS\][\s\S]*all LOCK\[:shared\] \.\.\./);
    child.stdin.write("acquire prompt.doc shared\n");
    await waitFor(/granted prompt\.doc \(shared\), fencing token \d+/);
    child.stdin.write("sem prompt.sem 3 2\n");
    await waitFor(/granted prompt\.sem \(2 of 3 permits\), fencing token \d+/);
    child.stdin.write("leases\n");
    await waitFor(/prompt\.sem \(2 of 3 permits\): fencing token \d+/);
    child.stdin.write("status\n");
    await waitFor(/prompt\.sem: semaphore limit 3, token \d+ ×2 \(/);
    child.stdin.write("release prompt.doc prompt.sem\n");
    await waitFor(/released prompt\.sem; committed 0 appends/);
    expect(out()).toMatch(/released prompt\.doc; committed 0 appends/);

    // A wait for a permit, cancelled by Ctrl-C.
    const permits = await other.semaphore("prompt.sem", 3).acquire({ permits: 3 });
    child.stdin.write("sem prompt.sem 3\n");
    await waitFor(/waiting for 1 of 3 permits of prompt\.sem/);
    await queued("prompt.sem");
    child.kill("SIGINT");
    await waitFor(/cancelled: no longer waiting for 1 of 3 permits of prompt\.sem/);
    expect(await lockView("prompt.sem")).toEqual({ holder: permits.token, waiting: 0 });

    // A wait for a set, cancelled by Ctrl-C: it leaves both queues and holds nothing.
    const y = await other.acquire("prompt.y");
    child.stdin.write("all prompt.x prompt.y:shared\n");
    await waitFor(/waiting for prompt\.x, prompt\.y/);
    await queued("prompt.y");
    child.kill("SIGINT");
    await waitFor(/cancelled: no longer waiting for prompt\.x, prompt\.y/);
    expect(await lockView("prompt.x")).toEqual({ holder: undefined, waiting: 0 });
    expect(await lockView("prompt.y")).toEqual({ holder: y.token, waiting: 0 });

    await y.release();
    await permits.release();
    child.stdin.write("all prompt.x prompt.y:shared\n");
    await waitFor(/granted all 2: prompt\.x fencing token \d+, prompt\.y \(shared\) fencing token \d+/);
    child.stdin.write("quit\n");
    expect(await exited).toBe(0);
    expect(await lockView("prompt.x")).toEqual({ holder: undefined, waiting: 0 });
  });
});
