/** Every kind of bad input gets a coded error; good input parses to typed requests. */
import { DEFAULT_LIMITS } from "../../src/protocol/limits";
import { parseRequest } from "../../src/protocol/validate";

const limits = { ...DEFAULT_LIMITS, maxAppendBytes: 1024 };
const enc = (value: unknown) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value));
const session = { client: "abcdefgh12345678", seq: 2, ack: 1 };

function errorOf(raw: unknown): string {
  const parsed = parseRequest(enc(raw), limits);
  if (parsed.ok) throw new Error(`parsed: ${JSON.stringify(parsed.request)}`);
  return parsed.reply.error;
}

describe("request validation", () => {
  test.each([
    ["not JSON", "{nope", "BAD_REQUEST"],
    ["JSON array", [1, 2], "BAD_REQUEST"],
    ["JSON string", '"acquire"', "BAD_REQUEST"],
    ["no op", { client: "x" }, "BAD_REQUEST"],
    ["op not a string", { op: 7 }, "BAD_REQUEST"],
    ["unknown op", { op: "explode" }, "UNKNOWN_OP"],
    ["missing client", { op: "hello", seq: 1 }, "BAD_REQUEST"],
    ["client too short", { op: "hello", client: "abc", seq: 1 }, "BAD_REQUEST"],
    ["client with a slash", { op: "hello", client: "abcdefgh/../..", seq: 1 }, "BAD_REQUEST"],
    ["seq zero", { op: "hello", client: session.client, seq: 0 }, "BAD_REQUEST"],
    ["seq a string", { op: "hello", client: session.client, seq: "1" }, "BAD_REQUEST"],
    ["seq fractional", { op: "hello", client: session.client, seq: 1.5 }, "BAD_REQUEST"],
    ["ack not below seq", { op: "hello", client: session.client, seq: 3, ack: 3 }, "BAD_REQUEST"],
    ["file ../x", { op: "append", ...session, file: "../x", data: "QQ==", token: 1 }, "FILE_NOT_FOUND"],
    ["file_100", { op: "append", ...session, file: "file_100", data: "QQ==", token: 1 }, "FILE_NOT_FOUND"],
    ["file_01", { op: "append", ...session, file: "file_01", data: "QQ==", token: 1 }, "FILE_NOT_FOUND"],
    ["file_-1", { op: "read", file: "file_-1" }, "FILE_NOT_FOUND"],
    ["read offset negative", { op: "read", file: "file_1", offset: -1 }, "BAD_REQUEST"],
    ["read offset fractional", { op: "read", file: "file_1", offset: 1.5 }, "BAD_REQUEST"],
    ["read offset a string", { op: "read", file: "file_1", offset: "0" }, "BAD_REQUEST"],
    ["file a number", { op: "append", ...session, file: 3, data: "QQ==", token: 1 }, "BAD_REQUEST"],
    ["data not base64", { op: "append", ...session, file: "file_1", data: "%%%", token: 1 }, "BAD_REQUEST"],
    ["data missing", { op: "append", ...session, file: "file_1", token: 1 }, "BAD_REQUEST"],
    ["data too large", { op: "append", ...session, file: "file_1", data: Buffer.alloc(1025).toString("base64"), token: 1 }, "TOO_LARGE"],
    ["token missing", { op: "append", ...session, file: "file_1", data: "QQ==" }, "BAD_REQUEST"],
    ["lock name with spaces", { op: "acquire", ...session, lock: "my lock" }, "BAD_REQUEST"],
    ["lock name too long", { op: "acquire", ...session, lock: "a".repeat(129) }, "BAD_REQUEST"],
    ["lock name starting with a dot", { op: "acquire", ...session, lock: ".hidden" }, "BAD_REQUEST"],
    ["leaseMs too small", { op: "acquire", ...session, leaseMs: 1 }, "BAD_REQUEST"],
    ["waitMs negative", { op: "acquire", ...session, waitMs: -1 }, "BAD_REQUEST"],
    ["cancel target not before seq", { op: "cancel", ...session, target: 2 }, "BAD_REQUEST"],
    ["mode not a mode", { op: "acquire", ...session, lock: "db", mode: "read" }, "BAD_REQUEST"],
    ["mode not a string", { op: "acquire", ...session, lock: "db", mode: 1 }, "BAD_REQUEST"],
    ["shared files lock", { op: "acquire", ...session, mode: "shared" }, "BAD_REQUEST"],
    ["shared files lock by name", { op: "acquire", ...session, lock: "global", mode: "shared" }, "BAD_REQUEST"],
    ["semaphore files lock", { op: "acquire", ...session, lock: "global", limit: 3 }, "BAD_REQUEST"],
    ["limit zero", { op: "acquire", ...session, lock: "pool", limit: 0 }, "BAD_REQUEST"],
    ["limit fractional", { op: "acquire", ...session, lock: "pool", limit: 2.5 }, "BAD_REQUEST"],
    ["limit over maxSemaphoreLimit", { op: "acquire", ...session, lock: "pool", limit: 1_000_001 }, "BAD_REQUEST"],
    ["permits without limit", { op: "acquire", ...session, lock: "pool", permits: 1 }, "BAD_REQUEST"],
    ["permits over limit", { op: "acquire", ...session, lock: "pool", limit: 3, permits: 4 }, "BAD_REQUEST"],
    ["permits zero", { op: "acquire", ...session, lock: "pool", limit: 3, permits: 0 }, "BAD_REQUEST"],
    ["shared semaphore", { op: "acquire", ...session, lock: "pool", limit: 3, mode: "shared" }, "BAD_REQUEST"],
    ["acquireAll without locks", { op: "acquireAll", ...session }, "BAD_REQUEST"],
    ["acquireAll with no locks", { op: "acquireAll", ...session, locks: [] }, "BAD_REQUEST"],
    ["acquireAll locks not an array", { op: "acquireAll", ...session, locks: "a" }, "BAD_REQUEST"],
    ["acquireAll of a bare name", { op: "acquireAll", ...session, locks: ["a"] }, "BAD_REQUEST"],
    ["acquireAll entry without a name", { op: "acquireAll", ...session, locks: [{ mode: "shared" }] }, "BAD_REQUEST"],
    ["acquireAll of a bad name", { op: "acquireAll", ...session, locks: [{ lock: "my lock" }] }, "BAD_REQUEST"],
    ["acquireAll of a name twice", { op: "acquireAll", ...session, locks: [{ lock: "a" }, { lock: "b" }, { lock: "a", mode: "shared" }] }, "BAD_REQUEST"],
    ["acquireAll over maxLocksPerRequest", { op: "acquireAll", ...session, locks: Array.from({ length: 33 }, (_, i) => ({ lock: `l${i}` })) }, "BAD_REQUEST"],
    ["acquireAll of a semaphore", { op: "acquireAll", ...session, locks: [{ lock: "pool", limit: 3 }] }, "BAD_REQUEST"],
    ["acquireAll of permits", { op: "acquireAll", ...session, locks: [{ lock: "pool", permits: 1 }] }, "BAD_REQUEST"],
    ["acquireAll of a bad mode", { op: "acquireAll", ...session, locks: [{ lock: "a", mode: "write" }] }, "BAD_REQUEST"],
    ["acquireAll of the files lock shared", { op: "acquireAll", ...session, locks: [{ lock: "a" }, { lock: "global", mode: "shared" }] }, "BAD_REQUEST"],
    ["acquireAll with a bad waitMs", { op: "acquireAll", ...session, locks: [{ lock: "a" }], waitMs: -1 }, "BAD_REQUEST"],
    // An empty append changes nothing and only bytes count against a section: unrefused, a grant could stage any number.
    ["an empty append", { op: "append", ...session, file: "file_1", data: "", token: 1 }, "BAD_REQUEST"],
    ["a release carrying an empty append", { op: "release", ...session, lock: "global", token: 1, appends: [{ file: "file_1", data: "QQ==" }, { file: "file_2", data: "" }] }, "BAD_REQUEST"],
    ["a commit carrying an empty append", { op: "commit", ...session, appends: [{ file: "file_1", data: "" }] }, "BAD_REQUEST"],
  ])("%s → %s", (_what, raw, code) => {
    expect(errorOf(raw)).toBe(code);
  });

  test("a request over the size limit is TOO_LARGE before it is parsed", () => {
    const parsed = parseRequest(Buffer.alloc(300 * 1024, 0x20), limits);
    expect(parsed).toMatchObject({ ok: false, reply: { error: "TOO_LARGE", code: 4 } });
  });

  test("good requests parse with defaults filled in", () => {
    expect(parseRequest(enc({ op: "acquire", ...session }), limits)).toEqual({
      ok: true,
      request: { op: "acquire", ...session, lock: "global" },
    });
    expect(parseRequest(enc({ op: "append", ...session, file: "file_99", data: "QUI=", token: 4, extra: true }), limits)).toEqual({
      ok: true,
      request: { op: "append", ...session, file: "file_99", data: "QUI=", token: 4 },
    });
    expect(parseRequest(enc({ op: "status" }), limits)).toEqual({ ok: true, request: { op: "status" } });
  });

  test("shared, semaphore and acquireAll requests parse as asked", () => {
    const ok = (raw: unknown) => {
      const parsed = parseRequest(enc(raw), limits);
      if (!parsed.ok) throw new Error(JSON.stringify(parsed.reply));
      return parsed.request;
    };
    expect(ok({ op: "acquire", ...session, lock: "db", mode: "shared" })).toEqual({ op: "acquire", ...session, lock: "db", mode: "shared" });
    expect(ok({ op: "acquire", ...session, mode: "exclusive" })).toEqual({ op: "acquire", ...session, lock: "global", mode: "exclusive" });
    expect(ok({ op: "acquire", ...session, lock: "pool", limit: 5 })).toEqual({ op: "acquire", ...session, lock: "pool", limit: 5 });
    expect(ok({ op: "acquire", ...session, lock: "pool", limit: 5, permits: 5, waitMs: 0 })).toEqual({ op: "acquire", ...session, lock: "pool", limit: 5, permits: 5, waitMs: 0 });
    // An explicit "exclusive" beside a limit means nothing for a semaphore and is dropped.
    expect(ok({ op: "acquire", ...session, lock: "pool", limit: 1_000_000, mode: "exclusive" })).toEqual({ op: "acquire", ...session, lock: "pool", limit: 1_000_000 });
    expect(ok({ op: "acquireAll", ...session, locks: [{ lock: "b", mode: "shared" }, { lock: "global" }, { lock: "a", mode: "exclusive" }], leaseMs: 5000 })).toEqual({
      op: "acquireAll",
      ...session,
      locks: [{ lock: "b", mode: "shared" }, { lock: "global" }, { lock: "a", mode: "exclusive" }],
      leaseMs: 5000,
    });
    expect(ok({ op: "acquireAll", ...session, locks: Array.from({ length: 32 }, (_, i) => ({ lock: `l${i}` })) })).toMatchObject({ op: "acquireAll" });
    // The limits are configurable.
    expect(parseRequest(enc({ op: "acquireAll", ...session, locks: [{ lock: "a" }, { lock: "b" }] }), { ...limits, maxLocksPerRequest: 1 })).toMatchObject({
      ok: false,
      reply: { error: "BAD_REQUEST", message: "field 'locks' names 2 locks, over maxLocksPerRequest 1" },
    });
    expect(parseRequest(enc({ op: "acquire", ...session, lock: "pool", limit: 11 }), { ...limits, maxSemaphoreLimit: 10 })).toMatchObject({ ok: false, reply: { error: "BAD_REQUEST" } });
  });

  test("a read names its page by offset, or none for the whole file", () => {
    expect(parseRequest(enc({ op: "read", file: "file_1" }), limits)).toEqual({ ok: true, request: { op: "read", file: "file_1" } });
    expect(parseRequest(enc({ op: "read", file: "file_1", offset: 0 }), limits)).toEqual({ ok: true, request: { op: "read", file: "file_1", offset: 0 } });
    expect(parseRequest(enc({ op: "read", file: "file_1", offset: 783_360 }), limits)).toEqual({ ok: true, request: { op: "read", file: "file_1", offset: 783_360 } });
  });

  test("error replies carry the numeric code of the registry", () => {
    expect(parseRequest(enc({ op: "read", file: "nope" }), limits)).toMatchObject({ ok: false, reply: { ok: false, code: 1 } });
  });
});
