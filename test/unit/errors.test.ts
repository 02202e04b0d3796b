/** The error registry and docs/errors.md list the same codes, each documented once. */
import * as fs from "fs";
import * as path from "path";
import { ErrorCodes, ErrorDescriptions, errorNameOf } from "../../src/protocol/errors";

const doc = fs.readFileSync(path.join(__dirname, "../../docs/errors.md"), "utf8");
const rows = [...doc.matchAll(/^\| (\d+) \| `?([A-Z_]+)`? \|/gm)].map((m) => ({ code: Number(m[1]), name: m[2] }));

describe("error registry", () => {
  test("codes are unique and 0 is success, 1 is FILE_NOT_FOUND", () => {
    const codes = Object.values(ErrorCodes);
    expect(new Set(codes).size).toBe(codes.length);
    expect(ErrorCodes.OK).toBe(0);
    expect(ErrorCodes.FILE_NOT_FOUND).toBe(1);
  });

  test("every code has a description and a row in docs/errors.md, and the docs list nothing stale", () => {
    const registry = Object.entries(ErrorCodes).map(([name, code]) => ({ code, name }));
    expect(rows).toEqual(registry);
    for (const name of Object.keys(ErrorDescriptions)) expect(doc).toContain(ErrorDescriptions[name as keyof typeof ErrorDescriptions]);
  });

  test("errorNameOf maps codes back to names", () => {
    expect(errorNameOf(5)).toBe("NOT_HOLDER");
    expect(errorNameOf(0)).toBeUndefined();
    expect(errorNameOf(999)).toBeUndefined();
  });
});
