/**
 * Leader churn must not keep a dead holder's lock alive. A holder takes
 * `global` and stops renewing (its session stays alive: it pings); then the
 * leader is replaced six times in a row, SIGKILL and SIGTERM in turn, each
 * time while the grant is still valid. Every takeover may extend the grant
 * only by the time nobody led, so the waiter behind it is granted within
 * the holder's lease plus the leaderless time the test measured (plus a
 * slack for the expiry tick and the grant's delivery). The grace period of
 * old (a fresh lease per takeover) fails this by several seconds.
 *
 * Sessions too: a second raw session says hello, queues for `global` ahead
 * of the waiter and goes silent 1.5 s in, before the takeovers. It must be
 * expired (its wait gone, never granted) within the session timeout plus
 * the leaderless time, although leaders change faster than the timeout.
 * Crediting every session with the takeover time (the old rule) keeps it
 * alive until after the holder's lease, so it would be granted the lock.
 */
import { startDlmCluster, sleep, type DlmTestCluster } from "../kit/dlmCluster";
import { RawSession } from "../kit/rawSession";
import { scenarioWithTails } from "../kit/scenario";

const HOLDER_LEASE_MS = 10_000;
const TAKEOVERS = 6;
/** Expiry tick (50 ms), the log append of the expiry, the grant notification and the client's poll, on a loaded machine. */
const SLACK_MS = 2000;
const SESSION_TIMEOUT_MS = 6000;
/** Per takeover, the old leader's last key write may precede its death by a renew interval (docs/design.md §6). */
const RENEW_SLACK_MS = 150;
/** When the dead session stops pinging, counted from the holder's grant. */
const DEAD_SILENT_AFTER_MS = 1500;

let c: DlmTestCluster;
/** The dead session's watcher runs while this is true; afterAll ends it even if the test failed. */
let watching = false;
const scenario = scenarioWithTails(() => c);

beforeAll(async () => {
  c = await startDlmCluster({ nodes: 3, leaseMs: 2000, sessionTimeoutMs: SESSION_TIMEOUT_MS });
  await c.waitForLeader();
  await c.waitCaughtUp();
});

afterAll(async () => {
  watching = false;
  await c?.close();
});

scenario(
  "six takeovers while a holder that stopped renewing holds: the waiter gets the lock within lease + leaderless time",
  async () => {
    const holder = new RawSession(c);
    expect((await holder.call("hello")).ok).toBe(true);
    holder.keepAlive(); // the session stays; only the lease is left to run out
    const held = await holder.call("acquire", { lock: "global", leaseMs: HOLDER_LEASE_MS });
    expect(held).toMatchObject({ ok: true, status: "granted" });
    const lease = held.lease!;
    const grantedAt = lease.expiresAt - lease.leaseMs; // the leader's clock; same host as this test's
    const staged = await holder.call("append", { token: lease.token, file: "file_4", data: Buffer.from("never committed;").toString("base64") });
    expect(staged.ok).toBe(true);

    // The session that dies: queued ahead of the waiter, alive only until DEAD_SILENT_AFTER_MS.
    const dead = new RawSession(c);
    expect((await dead.call("hello")).ok).toBe(true);
    dead.keepAlive();
    expect(await dead.call("acquire", { lock: "global", leaseMs: HOLDER_LEASE_MS })).toMatchObject({ ok: true, status: "queued" });
    // Watch it from outside (status asks nothing of its session): when its
    // wait leaves the queue, and that it never holds the lock.
    let deadSilentAt: number | undefined;
    let deadGoneAt: number | undefined;
    let deadHeld = false;
    watching = true;
    const watcher = (async () => {
      while (watching) {
        const view = await c.status().catch(() => undefined);
        const lock = view?.locks.find((l) => l.name === "global");
        if (view && lock?.holder?.client === dead.id) deadHeld = true;
        if (view && deadSilentAt !== undefined && deadGoneAt === undefined && !lock?.queue.some((w) => w.client === dead.id)) deadGoneAt = Date.now();
        await sleep(100);
      }
    })();

    const waiterClient = await c.client({ name: "waiter" });
    let waiterGrantedAt: number | undefined;
    const waiting = waiterClient.acquire("global").then((l) => {
      waiterGrantedAt = Date.now();
      return l;
    });
    waiting.catch(() => undefined);
    await sleep(Math.max(0, grantedAt + DEAD_SILENT_AFTER_MS - Date.now()));
    dead.stopKeepAlive();
    deadSilentAt = Date.now();
    // Half-way into the lease, so a fresh lease at the last takeover would
    // end seconds past the bound.
    await sleep(Math.max(0, grantedAt + HOLDER_LEASE_MS / 2 - Date.now()));

    // Six leaders replaced back to back, each measured from the kill to the
    // next leader answering: an over-estimate of the time nobody led.
    let leaderlessMs = 0;
    for (let i = 0; i < TAKEOVERS; i++) {
      const old = await c.waitForLeader();
      const killedAt = Date.now();
      if (i % 2 === 0) await old.node.kill("SIGKILL");
      else await old.node.stop(10_000);
      const next = await c.waitForLeader(30_000, old.id);
      leaderlessMs += Date.now() - killedAt;
      expect(next.epoch).toBeGreaterThan(old.epoch);
      await old.node.restart();
    }
    // Every takeover happened while the grant was still valid, or the test proves nothing.
    expect(waiterGrantedAt).toBeUndefined();

    const granted = await waiting;
    // Nobody held the lock between the holder and the waiter: the dead session was never granted it.
    expect(granted.token).toBe(lease.token + 1);
    const boundAt = grantedAt + HOLDER_LEASE_MS + leaderlessMs + SLACK_MS;
    process.stderr.write(
      `churn: holder granted at 0, waiter at +${waiterGrantedAt! - grantedAt} ms; bound +${boundAt - grantedAt} ms ` +
        `(lease ${HOLDER_LEASE_MS} + leaderless ${leaderlessMs} + slack ${SLACK_MS})\n`,
    );
    expect(waiterGrantedAt!).toBeLessThanOrEqual(boundAt);

    // The dead session: expired within the session timeout plus the leaderless time since it went silent.
    const deadBoundAt = deadSilentAt! + SESSION_TIMEOUT_MS + leaderlessMs + TAKEOVERS * RENEW_SLACK_MS + SLACK_MS;
    while (deadGoneAt === undefined && Date.now() < deadBoundAt + 5000) await sleep(100);
    watching = false;
    await watcher;
    process.stderr.write(
      `churn: dead session silent at +${deadSilentAt! - grantedAt} ms, gone at +${deadGoneAt === undefined ? "never" : deadGoneAt - grantedAt} ms; ` +
        `bound +${deadBoundAt - grantedAt} ms (timeout ${SESSION_TIMEOUT_MS} + leaderless ${leaderlessMs} + ${TAKEOVERS} x ${RENEW_SLACK_MS} + slack ${SLACK_MS})\n`,
    );
    expect(deadHeld).toBe(false);
    expect(deadGoneAt).toBeDefined();
    expect(deadGoneAt!).toBeLessThanOrEqual(deadBoundAt);
    expect(await c.rawRequest({ op: "ping", client: dead.id })).toMatchObject({ ok: false, error: "SESSION_EXPIRED" });

    // The dead holder's section never lands; the waiter's does, everywhere.
    const late = await holder.call("release", { lock: "global", token: lease.token });
    expect(late).toMatchObject({ ok: false, error: "LOCK_EXPIRED" });
    await waiterClient.append("file_4", "waiter;");
    await waiterClient.release(granted);
    holder.stopKeepAlive();
    await c.expectFilesIdentical(30_000);
    expect(c.fileOn(0, 4).toString("utf8")).toBe("waiter;");
  },
  180_000,
);
