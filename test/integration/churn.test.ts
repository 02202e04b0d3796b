/**
 * Leader churn must not keep a dead holder's lock alive. A holder takes
 * `global` and stops renewing (its session stays alive: it pings); then the
 * leader is replaced six times in a row, SIGKILL and SIGTERM in turn, each
 * time while the grant is still valid. Every takeover may extend the grant
 * only by the time nobody led, so the waiter behind it is granted within
 * the holder's lease plus the leaderless time the test measured (plus a
 * slack for the expiry tick and the grant's delivery). The grace period of
 * old (a fresh lease per takeover) fails this by several seconds.
 */
import { startDlmCluster, sleep, type DlmTestCluster } from "../kit/dlmCluster";
import { RawSession } from "../kit/rawSession";
import { scenarioWithTails } from "../kit/scenario";

const HOLDER_LEASE_MS = 10_000;
const TAKEOVERS = 6;
/** Expiry tick (50 ms), the log append of the expiry, the grant notification and the client's poll, on a loaded machine. */
const SLACK_MS = 2000;

let c: DlmTestCluster;
const scenario = scenarioWithTails(() => c);

beforeAll(async () => {
  c = await startDlmCluster({ nodes: 3, leaseMs: 2000, sessionTimeoutMs: 4000 });
  await c.waitForLeader();
  await c.waitCaughtUp();
});

afterAll(async () => {
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

    const waiterClient = await c.client({ name: "waiter" });
    let waiterGrantedAt: number | undefined;
    const waiting = waiterClient.acquire("global").then((l) => {
      waiterGrantedAt = Date.now();
      return l;
    });
    waiting.catch(() => undefined);
    // Half-way into the lease, so a fresh lease at the last takeover would
    // end seconds past the bound.
    await sleep(HOLDER_LEASE_MS / 2);

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
    expect(granted.token).toBeGreaterThan(lease.token);
    const boundAt = grantedAt + HOLDER_LEASE_MS + leaderlessMs + SLACK_MS;
    process.stderr.write(
      `churn: holder granted at 0, waiter at +${waiterGrantedAt! - grantedAt} ms; bound +${boundAt - grantedAt} ms ` +
        `(lease ${HOLDER_LEASE_MS} + leaderless ${leaderlessMs} + slack ${SLACK_MS})\n`,
    );
    expect(waiterGrantedAt!).toBeLessThanOrEqual(boundAt);

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
