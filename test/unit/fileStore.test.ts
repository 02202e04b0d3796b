import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { FileStore } from "../../src/storage/fileStore";
import { FILE_COUNT } from "../../src/protocol/files";
import { IncomingFiles } from "../../src/storage/incomingFiles";

const enc = (s: string) => Buffer.from(s, "utf8");

describe("FileStore", () => {
  let dir: string;
  const open: FileStore[] = [];
  const openStore = () => {
    const s = FileStore.open(dir);
    open.push(s);
    return s;
  };

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dlm-filestore-"));
  });
  afterEach(() => {
    for (const s of open.splice(0)) {
      try {
        s.close();
      } catch {
        // already closed, or a deliberately broken directory
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test("a fresh directory gets 100 empty files and an empty checkpoint", () => {
    const s = openStore();
    const files = fs.readdirSync(path.join(dir, "files")).sort();
    expect(files).toHaveLength(FILE_COUNT);
    for (let i = 0; i < FILE_COUNT; i++) {
      expect(fs.statSync(path.join(dir, "files", `file_${i}`)).size).toBe(0);
    }
    expect(s.checkpoint).toEqual({ version: 1, logId: null, seq: 0, lengths: new Array(FILE_COUNT).fill(0) });
    expect(s.appliedSeq).toBe(0);
    expect(s.lengths()).toEqual(new Array(FILE_COUNT).fill(0));
  });

  test("append + markApplied + flush survive a reopen", () => {
    const s = openStore();
    s.setLogId("log-a");
    s.append(3, enc("hello "));
    s.append(3, enc("world"));
    s.append(99, enc("x"));
    s.markApplied(7);
    s.flush();
    s.close();

    const t = openStore();
    expect(t.checkpoint.logId).toBe("log-a");
    expect(t.checkpoint.seq).toBe(7);
    expect(t.appliedSeq).toBe(7);
    expect(t.lengths()[3]).toBe(11);
    expect(t.lengths()[99]).toBe(1);
    expect(t.read(3).toString()).toBe("hello world");
    expect(t.read(99).toString()).toBe("x");
    expect(t.read(0)).toHaveLength(0);
  });

  test("read takes a range: from an offset, at most so many bytes, never past the current length", () => {
    const s = openStore();
    s.setLogId("log-r");
    s.append(4, enc("0123456789"));
    expect(s.read(4, 2, 3).toString()).toBe("234");
    expect(s.read(4, 8, 100).toString()).toBe("89");
    expect(s.read(4, 10, 5)).toHaveLength(0);
    expect(s.read(4, 50, 5)).toHaveLength(0);
    expect(s.read(4).toString()).toBe("0123456789");
    expect(s.length(4)).toBe(10);
  });

  test("bytes appended after the last flush are cut off on reopen (crash)", () => {
    const s = openStore();
    s.append(5, enc("kept"));
    s.markApplied(1);
    s.flush();
    // Entry 2 is applied in memory but the process "dies" before flushing.
    s.append(5, enc("-lost"));
    s.append(6, enc("lost too"));
    s.markApplied(2);
    expect(fs.statSync(path.join(dir, "files", "file_5")).size).toBe(9);

    const t = openStore(); // no flush/close of s: a crash
    s.abort(); // release its fds without writing anything
    expect(t.checkpoint.seq).toBe(1);
    expect(t.read(5).toString()).toBe("kept");
    expect(t.read(6)).toHaveLength(0);
    expect(fs.statSync(path.join(dir, "files", "file_5")).size).toBe(4);
    expect(fs.statSync(path.join(dir, "files", "file_6")).size).toBe(0);
  });

  test("a flush between an entry's appends and its markApplied records only the previous entry", () => {
    const s = openStore();
    s.append(1, enc("a"));
    s.markApplied(1);
    s.append(1, enc("b")); // entry 2, half applied
    s.flush();
    s.abort(); // crash before entry 2 is marked applied
    const t = openStore();
    expect(t.checkpoint.seq).toBe(1);
    expect(t.read(1).toString()).toBe("a");
  });

  test("a file shorter than the checkpoint makes open() throw", () => {
    const s = openStore();
    s.append(10, enc("0123456789"));
    s.markApplied(4);
    s.close();
    fs.truncateSync(path.join(dir, "files", "file_10"), 3);
    expect(() => FileStore.open(dir)).toThrow(/lost bytes.*file_10/);
  });

  test("a missing file that should hold bytes makes open() throw", () => {
    const s = openStore();
    s.append(2, enc("abc"));
    s.markApplied(1);
    s.close();
    fs.rmSync(path.join(dir, "files", "file_2"));
    expect(() => FileStore.open(dir)).toThrow(/lost bytes.*file_2/);
  });

  test("read returns exact bytes, including binary", () => {
    const s = openStore();
    const bin = Buffer.from([0, 255, 10, 13, 0, 128, 7]);
    s.append(0, bin);
    s.append(0, enc("é✓"));
    expect(s.read(0)).toEqual(Buffer.concat([bin, enc("é✓")]));
    expect(s.lengths()[0]).toBe(bin.length + enc("é✓").length);
  });

  test("the checkpoint is written atomically: no tmp file is left behind", () => {
    const s = openStore();
    s.append(4, enc("data"));
    s.markApplied(3);
    s.flush();
    expect(fs.readdirSync(dir).sort()).toEqual(["LOCK", "checkpoint.json", "files"]);
    const cp = JSON.parse(fs.readFileSync(path.join(dir, "checkpoint.json"), "utf8"));
    expect(cp.version).toBe(1);
    expect(cp.seq).toBe(3);
    expect(cp.lengths[4]).toBe(4);
    expect(cp.lengths).toHaveLength(FILE_COUNT);
  });

  test("a stale tmp checkpoint from a crashed write is ignored", () => {
    const s = openStore();
    s.append(4, enc("data"));
    s.markApplied(3);
    s.close();
    fs.writeFileSync(path.join(dir, "checkpoint.json.tmp"), "{ half");
    const t = openStore();
    expect(t.checkpoint.seq).toBe(3);
    expect(fs.existsSync(path.join(dir, "checkpoint.json.tmp"))).toBe(false);
  });

  test("invariants: index range, monotonic seq, closed store", () => {
    const s = openStore();
    expect(() => s.append(100, enc("x"))).toThrow(/out of range/);
    expect(() => s.append(-1, enc("x"))).toThrow(/out of range/);
    expect(() => s.read(1.5)).toThrow(/out of range/);
    s.markApplied(5);
    expect(() => s.markApplied(4)).toThrow(/backwards/);
    s.markApplied(5); // nothing appended: a harmless repeat
    s.append(0, enc("x"));
    expect(() => s.markApplied(5)).toThrow(/seq must increase/);
    s.close();
    expect(() => s.append(0, enc("y"))).toThrow(/closed/);
  });

  test("a corrupt checkpoint makes open() throw", () => {
    openStore().close();
    fs.writeFileSync(path.join(dir, "checkpoint.json"), JSON.stringify({ version: 1, logId: null, seq: -1, lengths: [] }));
    expect(() => FileStore.open(dir)).toThrow(/bad seq/);
  });

  test("a data directory locked by another live process is refused; a dead one's lock is taken over", () => {
    const { spawnSync } = require("child_process") as typeof import("child_process");
    fs.mkdirSync(dir, { recursive: true });
    // The parent of this test process is alive and is not us.
    fs.writeFileSync(path.join(dir, "LOCK"), `${process.ppid}\n`);
    expect(() => FileStore.open(dir)).toThrow(/in use by process \d+/);
    // A process that has exited leaves a stale lock behind.
    const gone = spawnSync(process.execPath, ["-e", "0"]).pid!;
    fs.writeFileSync(path.join(dir, "LOCK"), `${gone}\n`);
    const store = openStore();
    expect(fs.readFileSync(path.join(dir, "LOCK"), "utf8").trim()).toBe(String(process.pid));
    store.close();
    expect(fs.existsSync(path.join(dir, "LOCK"))).toBe(false);
  });

  test("resetForNewLog wipes the files and survives a reopen", () => {
    const s = openStore();
    s.setLogId("old");
    s.append(7, enc("old data"));
    s.markApplied(9);
    s.flush();
    s.resetForNewLog("new");
    expect(s.appliedSeq).toBe(0);
    expect(s.logId).toBe("new");
    expect(s.read(7)).toHaveLength(0);
    s.append(7, enc("fresh"));
    s.markApplied(1);
    s.close();
    const t = openStore();
    expect(t.checkpoint).toMatchObject({ logId: "new", seq: 1 });
    expect(t.read(7).toString()).toBe("fresh");
  });

  describe("installing a snapshot's files", () => {
    /** A store at seq 5 with "old" in file_3, and a staged snapshot at seq 9 with "old" + "new" in file_3 and "x" in file_8. */
    const prepare = () => {
      const s = openStore();
      s.setLogId("log-1");
      s.append(3, enc("old"));
      s.markApplied(5);
      s.flush();
      const incoming = new IncomingFiles(dir);
      incoming.write(3, enc("old"));
      incoming.write(3, enc("new"));
      incoming.write(8, enc("x"));
      const lengths = incoming.finish();
      return { s, incoming, lengths };
    };

    test("replaces the files and the checkpoint, and survives a reopen", () => {
      const { s, incoming, lengths } = prepare();
      s.installFiles(incoming, "log-1", 9, lengths);
      expect(s.appliedSeq).toBe(9);
      expect(s.read(3).toString()).toBe("oldnew");
      s.append(3, enc("!"));
      s.markApplied(10);
      s.close();
      const again = openStore();
      expect(again.checkpoint).toMatchObject({ logId: "log-1", seq: 10 });
      expect(again.read(3).toString()).toBe("oldnew!");
      expect(again.read(8).toString()).toBe("x");
    });

    test("a crash after the files moved but before the checkpoint leaves the old state", () => {
      const { s, incoming } = prepare();
      // What installFiles does first, without the checkpoint that ends it.
      for (let i = 0; i < FILE_COUNT; i++) fs.renameSync(incoming.pathOf(i), path.join(dir, "files", `file_${i}`));
      s.abort();
      const again = openStore();
      expect(again.checkpoint).toMatchObject({ logId: "log-1", seq: 5 });
      expect(again.read(3).toString()).toBe("old");
      expect(again.read(8).length).toBe(0);
    });

    test("a download that crashed leaves no staged files behind once the store reopens", () => {
      const s = openStore();
      const incoming = new IncomingFiles(dir);
      incoming.write(3, Buffer.alloc(64 * 1024, 1));
      // SIGKILL mid-download: nothing finished, discarded or installed.
      s.abort();
      expect(fs.readdirSync(path.join(dir, "incoming"))).toHaveLength(FILE_COUNT);
      openStore();
      expect(fs.existsSync(path.join(dir, "incoming"))).toBe(false);
      incoming.discard(); // the dead process's descriptors
    });

    test("refuses a snapshot that is not past the files or of another log", () => {
      const { s, incoming, lengths } = prepare();
      expect(() => s.installFiles(incoming, "log-1", 5, lengths)).toThrow(/not past/);
      expect(() => s.installFiles(incoming, "log-2", 9, lengths)).toThrow(/log-2/);
    });
  });
});
