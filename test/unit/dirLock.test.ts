/** The pid-file lock `dlm up` takes on its --dir (src/local/dirLock.ts). */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { DirInUseError, emptyDirectoryExcept, lockDirectory, UP_LOCK_FILE } from "../../src/local/dirLock";
import { makeTempDir, removeTempDir } from "../kit/tmp";

let dir: string;
beforeEach(() => {
  dir = makeTempDir("dlm-dirlock-");
});
afterEach(async () => {
  await removeTempDir(dir);
});

test("claims a new directory with this process's pid and gives it back on release", () => {
  const target = path.join(dir, "up");
  const lock = lockDirectory(target);
  expect(fs.readFileSync(path.join(target, UP_LOCK_FILE), "utf8")).toBe(`${process.pid}\n`);
  lock.release();
  lock.release();
  expect(fs.existsSync(path.join(target, UP_LOCK_FILE))).toBe(false);
});

test("a directory held by a live process is refused, and its lock file is left alone", () => {
  // pid 1 is always alive.
  fs.writeFileSync(path.join(dir, UP_LOCK_FILE), "1\n");
  expect(() => lockDirectory(dir)).toThrow(DirInUseError);
  try {
    lockDirectory(dir);
  } catch (e) {
    expect((e as DirInUseError).exitCode).toBe(6);
    expect((e as Error).message).toMatch(/is in use by another dlm up \(pid 1\); nothing was started or changed/);
  }
  expect(fs.readFileSync(path.join(dir, UP_LOCK_FILE), "utf8")).toBe("1\n");
});

test("the lock of a process that is gone is taken over", () => {
  const gone = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" });
  fs.writeFileSync(path.join(dir, UP_LOCK_FILE), `${gone.stdout}\n`);
  const lock = lockDirectory(dir);
  expect(fs.readFileSync(lock.path, "utf8")).toBe(`${process.pid}\n`);
  lock.release();
});

test("--fresh empties the directory but keeps the lock", () => {
  const lock = lockDirectory(dir);
  fs.mkdirSync(path.join(dir, "nats", "s1"), { recursive: true });
  fs.writeFileSync(path.join(dir, "nats", "s1", "x"), "x");
  emptyDirectoryExcept(dir, path.basename(lock.path));
  expect(fs.readdirSync(dir)).toEqual([UP_LOCK_FILE]);
  lock.release();
});
