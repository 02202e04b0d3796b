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

  test("error replies carry the numeric code of the registry", () => {
    expect(parseRequest(enc({ op: "read", file: "nope" }), limits)).toMatchObject({ ok: false, reply: { ok: false, code: 1 } });
  });
});
