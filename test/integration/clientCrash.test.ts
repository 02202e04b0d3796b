/**
 * Client processes that die (SIGKILL: no goodbye, no release) while holding
 * the lock or while waiting for it. The others must not be stuck: a dead
 * holder's lease runs out (one lease), a dead waiter's session expires (one
 * session timeout) or the lock it is handed runs out (one lease). What the
 * dead holder had staged is discarded.
 *
 * The dying clients run in child processes (test/support/stallClient.ts);
 * the survivors run here. Real nats-server, three real dlm nodes, 2 s leases,
 * the kit's 4 s session timeout.
 */
import { ClientScenarios } from "../kit/clientScenarios";

jest.setTimeout(90_000);

const LEASE_MS = 2000;
const SESSION_TIMEOUT_MS = 4000;
/** Generous: the point is that nobody is stuck, not the exact figure (printed). */
const BOUND_MS = LEASE_MS + SESSION_TIMEOUT_MS + 2000;

const kit = new ClientScenarios({ leaseMs: LEASE_MS, sessionTimeoutMs: SESSION_TIMEOUT_MS });
const { client, childClient, until, globalLock, expectFile } = kit;

beforeAll(() => kit.start(), 60_000);
afterAll(() => kit.close());
beforeEach(() => kit.lockFree());
afterEach(() => kit.closeOpened());

/** Resolves once `clientIds` wait in the queue of "global", in this order. */
function queuedInOrder(...clientIds: string[]): Promise<number> {
  return until(
    async () => JSON.stringify((await globalLock())?.queue.map((w) => w.client)) === JSON.stringify(clientIds),
    10_000,
    `queue of global to be ${clientIds.join(", ")}`,
  );
}

test("a holder SIGKILLed mid-section: the waiter is granted within one lease, the dead section is discarded", async () => {
  const F = 20;
  const { p, clientId } = await childClient("holder");
  await p.ok("acquire");
  await p.ok("append", { file: `file_${F}`, data: "dead holder\n" });
  const c2 = await client("survivor");
  const acquiring = c2.acquire();
  await queuedInOrder(c2.clientId!);

  await p.kill("SIGKILL");
  const killedAt = Date.now();
  const lease = await acquiring;
  const waited = Date.now() - killedAt;
  console.log(`holder killed: the waiter was granted ${waited} ms after the kill (lease ${LEASE_MS} ms)`);
  expect(waited).toBeLessThan(BOUND_MS);
  const lock = await globalLock();
  expect(lock?.holder).toMatchObject({ client: c2.clientId, token: lease.token, stagedAppends: 0 });
  expect(lock?.holder?.client).not.toBe(clientId);

  await c2.append(`file_${F}`, "survivor\n");
  expect(await lease.release()).toEqual({ appends: 1, bytes: 9 });
  await expectFile(F, "survivor\n");
});

test("a waiter SIGKILLed in the queue: the one behind it is granted within a lease / session timeout", async () => {
  const F = 21;
  const c1 = await client("holder");
  const c3 = await client("behind");
  const lease1 = await c1.acquire();
  const { p, clientId: deadId } = await childClient("waiter");
  const dead = p.send("acquire"); // never answered: the process dies waiting
  await queuedInOrder(deadId);
  const acquiring = c3.acquire();
  await queuedInOrder(deadId, c3.clientId!);

  await p.kill("SIGKILL");
  await expect(dead).rejects.toThrow(/exited/);
  const killedAt = Date.now();
  await c1.append(`file_${F}`, "1");
  expect(await lease1.release()).toEqual({ appends: 1, bytes: 1 }); // the lock goes to the dead waiter, or past it

  const lease3 = await acquiring;
  const waited = Date.now() - killedAt;
  console.log(`waiter killed: the client behind it was granted ${waited} ms after the kill (lease ${LEASE_MS} ms, session timeout ${SESSION_TIMEOUT_MS} ms)`);
  expect(waited).toBeLessThan(BOUND_MS);
  expect(lease3.token).toBeGreaterThan(lease1.token);
  await c3.append(`file_${F}`, "3");
  expect(await lease3.release()).toEqual({ appends: 1, bytes: 1 });
  await expectFile(F, "13");
  // The dead client's session is gone for good.
  await until(async () => (await kit.cluster.status()).sessions <= 3, SESSION_TIMEOUT_MS + 3000, "the dead session to expire");
});

test("a holder and a waiter SIGKILLed together: the next waiter is granted within the bound", async () => {
  const F = 22;
  const holder = await childClient("holder");
  const waiter = await childClient("waiter");
  const c3 = await client("survivor");
  await holder.p.ok("acquire");
  await holder.p.ok("append", { file: `file_${F}`, data: "H" });
  void waiter.p.send("acquire").catch(() => undefined);
  await queuedInOrder(waiter.clientId);
  const acquiring = c3.acquire();
  await queuedInOrder(waiter.clientId, c3.clientId!);

  await Promise.all([holder.p.kill("SIGKILL"), waiter.p.kill("SIGKILL")]);
  const killedAt = Date.now();
  const lease = await acquiring;
  const waited = Date.now() - killedAt;
  console.log(`holder and waiter killed: the survivor was granted ${waited} ms after the kills`);
  expect(waited).toBeLessThan(BOUND_MS);
  expect((await globalLock())?.holder).toMatchObject({ client: c3.clientId, token: lease.token, stagedAppends: 0 });

  await c3.append(`file_${F}`, "3");
  expect(await lease.release()).toEqual({ appends: 1, bytes: 1 });
  await expectFile(F, "3");
});

test("all nodes agree on all files", async () => {
  await kit.cluster.expectFilesIdentical();
});
