import { ErrorCodes, ErrorDescriptions, type ErrorName } from "../../src/protocol/errors";
import {
  AlreadyHeldError,
  DlmError,
  ErrorClasses,
  InternalError,
  NotHolderError,
  TimeoutError,
  errorFromReply,
  isDlmError,
} from "../../src/client/errors";
import * as publicApi from "../../src/client";

const names = Object.keys(ErrorCodes).filter((n) => n !== "OK") as ErrorName[];

describe("client errors", () => {
  test.each(names)("%s has its own DlmError subclass with the right code", (name) => {
    const Cls = ErrorClasses[name];
    expect(Cls).toBeDefined();
    const e = new Cls();
    expect(e).toBeInstanceOf(DlmError);
    expect(e).toBeInstanceOf(Error);
    expect(e.code).toBe(ErrorCodes[name]);
    expect(e.codeName).toBe(name);
    expect(e.name).toBe(Cls.name);
    expect(e.name).toMatch(/Error$/);
    expect(e.message).toBe(ErrorDescriptions[name]);
    // exported from the package's main entry under its class name
    expect((publicApi as Record<string, unknown>)[Cls.name]).toBe(Cls);
  });

  test("every class is distinct", () => {
    const classes = new Set(names.map((n) => ErrorClasses[n]));
    expect(classes.size).toBe(names.length);
  });

  test.each(names)("errorFromReply maps %s to its class", (name) => {
    const e = errorFromReply({ ok: false, code: ErrorCodes[name], error: name, message: `boom ${name}` });
    expect(e).toBeInstanceOf(ErrorClasses[name]);
    expect(e.message).toBe(`boom ${name}`);
    expect(e.reply?.error).toBe(name);
  });

  test("unknown error names become InternalError that keeps the reply", () => {
    const reply = { ok: false as const, code: 99, error: "FROM_THE_FUTURE" as ErrorName, message: "?" };
    const e = errorFromReply(reply);
    expect(e).toBeInstanceOf(InternalError);
    expect(e.reply).toBe(reply);
  });

  test("ALREADY_HELD carries the lease", () => {
    const lease = { lock: "a", token: 7, leaseMs: 1000, expiresAt: 1 };
    const e = errorFromReply({ ok: false, code: 8, error: "ALREADY_HELD", message: "held", lease });
    expect(e).toBeInstanceOf(AlreadyHeldError);
    expect((e as AlreadyHeldError).lease).toEqual(lease);
  });

  test("isDlmError narrows by name", () => {
    const e = new NotHolderError("x", { cause: new Error("inner") });
    expect(isDlmError(e)).toBe(true);
    expect(isDlmError(e, "NOT_HOLDER")).toBe(true);
    expect(isDlmError(e, "LOCK_EXPIRED")).toBe(false);
    expect(isDlmError(new Error("plain"))).toBe(false);
    expect(isDlmError(undefined)).toBe(false);
    expect((e.cause as Error).message).toBe("inner");
    expect(new TimeoutError().message).toMatch(/may or may not/);
  });
});
