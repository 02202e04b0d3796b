/**
 * The transport recognises NATS errors by name, not class: errors built by a
 * second copy of the @nats-io packages (test/kit/foreignNats.ts) map to the
 * same transport errors as dlm's own, so the client retries them.
 */
import { errors as ownErrors } from "@nats-io/nats-core";
import {
  classifyNatsError,
  DisconnectedError,
  mapNatsError,
  NoRespondersError,
  TransportClosedError,
  TransportPermissionError,
  TransportTimeoutError,
  TransportTooLargeError,
  TransportUnavailableError,
} from "../../src/client/transport";
import { loadForeignNats } from "../kit/foreignNats";
import { removeTempDir } from "../kit/tmp";

const { core: foreign, dir } = loadForeignNats();
afterAll(async () => {
  await removeTempDir(dir);
});

const copies = [
  ["dlm's own copy", ownErrors],
  ["a second copy", foreign.errors],
] as const;

test("the second copy really is another copy: its errors are not instances of dlm's classes", () => {
  expect(foreign.errors.TimeoutError).not.toBe(ownErrors.TimeoutError);
  expect(new foreign.errors.TimeoutError()).not.toBeInstanceOf(ownErrors.TimeoutError);
});

describe.each(copies)("errors from %s", (_label, errors) => {
  test("a request timeout is a TransportTimeoutError (retried with the same seq)", () => {
    const e = mapNatsError(new errors.TimeoutError(), "dlm.req", 200);
    expect(e).toBeInstanceOf(TransportTimeoutError);
    expect(mapNatsError(new errors.RequestError("timeout", { cause: new errors.TimeoutError() }), "dlm.req", 200)).toBeInstanceOf(TransportTimeoutError);
  });

  test("no responders, bare or as a RequestError's cause, is a NoRespondersError (retried after a backoff)", () => {
    const bare = new errors.NoRespondersError("dlm.req");
    expect(mapNatsError(bare, "dlm.req", 200)).toBeInstanceOf(NoRespondersError);
    const wrapped = new errors.RequestError(bare.message, { cause: bare });
    expect(mapNatsError(wrapped, "dlm.req", 200)).toBeInstanceOf(NoRespondersError);
  });

  test("a closed or draining connection is a TransportClosedError", () => {
    expect(mapNatsError(new errors.ClosedConnectionError(), "dlm.req", 200)).toBeInstanceOf(TransportClosedError);
    expect(mapNatsError(new errors.DrainingConnectionError(), "dlm.req", 200)).toBeInstanceOf(TransportClosedError);
    expect(mapNatsError(new errors.RequestError("x", { cause: new errors.ClosedConnectionError() }), "dlm.req", 200)).toBeInstanceOf(
      TransportClosedError,
    );
  });

  test("a request cut by a disconnect is a DisconnectedError", () => {
    expect(mapNatsError(new errors.RequestError("connection disconnected"), "dlm.req", 200)).toBeInstanceOf(DisconnectedError);
  });

  test("a permissions violation, bare or as a RequestError's cause, is a TransportPermissionError (not retried)", () => {
    const pv = new errors.PermissionViolationError('Permissions Violation for Publish to "dlm.req"', "publish", "dlm.req");
    expect(mapNatsError(pv, "dlm.req", 200)).toBeInstanceOf(TransportPermissionError);
    expect(mapNatsError(new errors.RequestError(pv.message, { cause: pv }), "dlm.req", 200)).toBeInstanceOf(TransportPermissionError);
  });

  test("a message over the server's max_payload (nats.js refuses it before sending) is a TransportTooLargeError", () => {
    const tooBig = errors.InvalidArgumentError.format("payload", "max_payload size exceeded");
    expect(classifyNatsError(tooBig)).toBe("tooLarge");
    const mapped = mapNatsError(tooBig, "dlm.req", 200);
    expect(mapped).toBeInstanceOf(TransportTooLargeError);
    expect((mapped as Error).message).toMatch(/a message on dlm\.req is larger than the NATS server's max_payload/);
  });

  test("anything else passes through unchanged", () => {
    const other = new errors.InvalidArgumentError("bad");
    expect(mapNatsError(other, "dlm.req", 200)).toBe(other);
    expect(classifyNatsError(new Error("boom"))).toBe("other");
    expect(classifyNatsError(undefined)).toBe("other");
  });
});

test("every transport error is named after its class (what callers with another copy of dlm compare)", () => {
  const made = [
    new TransportTimeoutError("dlm.req", 200),
    new NoRespondersError("dlm.req"),
    new DisconnectedError(),
    new TransportClosedError(),
    new TransportPermissionError("refused"),
    new TransportUnavailableError("down"),
    new TransportTooLargeError("too large"),
  ];
  expect(made.map((e) => e.name)).toEqual([
    "TransportTimeoutError",
    "NoRespondersError",
    "DisconnectedError",
    "TransportClosedError",
    "TransportPermissionError",
    "TransportUnavailableError",
    "TransportTooLargeError",
  ]);
  expect(made.map((e) => e.message)).toEqual([
    "no reply on dlm.req within 200ms",
    "no responders on dlm.req",
    "NATS connection is disconnected",
    "NATS connection is closed",
    "refused",
    "down",
    "too large",
  ]);
});
