/**
 * Reading a file in pages (src/protocol/filePages.ts): the leader's answer
 * always fits one message, and the reader puts the pages back together as
 * the file was at the first page. Against real processes: the max_payload
 * scenario in test/integration/limits.test.ts.
 */
import { readPageBytes, readReply, readFileFrom, type ReadPage } from "../../src/protocol/filePages";
import { MESSAGE_HEADROOM_BYTES } from "../../src/protocol/limits";
import { mulberry32 } from "../support/random";

const fail = (message: string) => new Error(message);

/** A leader serving `file` (which may grow between pages) with pages of `pageBytes`. */
function leader(file: () => Buffer, pageBytes: number) {
  const asked: number[] = [];
  const fetchPage = async (offset: number): Promise<ReadPage> => {
    asked.push(offset);
    const now = file();
    const reply = readReply("file_1", now.length, offset, pageBytes, (start, maxBytes) => now.subarray(start, start + maxBytes));
    if (!reply.ok) throw new Error(reply.message);
    return reply;
  };
  return { asked, fetchPage };
}

describe("readPageBytes", () => {
  test("the base64 of a page and the headroom fit the server's max_payload", () => {
    for (const payload of [1_048_576, 300_000, 8 * 1_048_576, 5000]) {
      const page = readPageBytes(payload);
      expect(page % 3).toBe(0);
      expect((page / 3) * 4 + MESSAGE_HEADROOM_BYTES).toBeLessThanOrEqual(payload);
      expect(((page + 3) / 3) * 4 + MESSAGE_HEADROOM_BYTES).toBeGreaterThan(payload);
    }
  });

  test("a server that did not say: NATS's default of 1 MiB", () => {
    expect(readPageBytes(undefined)).toBe(readPageBytes(1_048_576));
  });
});

describe("readReply", () => {
  const data = Buffer.from("0123456789");
  const reads: Array<[number, number]> = [];
  const reply = (offset: number | undefined, pageBytes: number) =>
    readReply("file_1", data.length, offset, pageBytes, (start, maxBytes) => {
      reads.push([start, maxBytes]);
      return data.subarray(start, start + maxBytes);
    });
  beforeEach(() => {
    reads.length = 0;
  });

  test("without an offset (a client from before pages): the whole file when it fits", () => {
    expect(reply(undefined, 10)).toEqual({ ok: true, code: 0, message: "Read", data: data.toString("base64"), length: 10 });
  });

  test("without an offset, a file larger than one answer is TOO_LARGE, and the message says what to do", () => {
    const refused = reply(undefined, 9);
    expect(refused).toMatchObject({ ok: false, error: "TOO_LARGE" });
    expect(refused.message).toMatch(/file_1 holds 10 bytes, more than one answer carries \(9\): read it in pages, with "offset"/);
    // Refused without reading the file.
    expect(reads).toEqual([]);
  });

  test("with an offset: the page there, the file's length, and where the page starts", () => {
    expect(reply(0, 4)).toMatchObject({ ok: true, data: Buffer.from("0123").toString("base64"), length: 10, offset: 0 });
    expect(reply(8, 4)).toMatchObject({ ok: true, data: Buffer.from("89").toString("base64"), length: 10, offset: 8 });
    // At or past the end: an empty page at the end.
    expect(reply(10, 4)).toMatchObject({ ok: true, data: "", length: 10, offset: 10 });
    expect(reply(99, 4)).toMatchObject({ ok: true, data: "", length: 10, offset: 10 });
    // Only the page is read, never the whole file.
    expect(reads).toEqual([
      [0, 4],
      [8, 2],
      [10, 0],
      [10, 0],
    ]);
  });
});

describe("readFileFrom", () => {
  test("puts the pages back together, asking for each where the last ended", async () => {
    const file = Buffer.from("abcdefghijklmnopqrstuvwxyz");
    const { asked, fetchPage } = leader(() => file, 6);
    expect((await readFileFrom(fetchPage, fail)).toString()).toBe(file.toString());
    expect(asked).toEqual([0, 6, 12, 18, 24]);
  });

  test("from an offset: the rest of the file, the first page asked for there; past the end, nothing", async () => {
    const file = Buffer.from("abcdefghijklmnopqrstuvwxyz");
    const { asked, fetchPage } = leader(() => file, 6);
    expect((await readFileFrom(fetchPage, fail, 10)).toString()).toBe("klmnopqrstuvwxyz");
    expect(asked).toEqual([10, 16, 22]);
    expect((await readFileFrom(fetchPage, fail, 26)).length).toBe(0);
    expect((await readFileFrom(fetchPage, fail, 40)).length).toBe(0);
    // A server from before pages sends the whole file; the reader cuts it.
    const old = async (): Promise<ReadPage> => ({ data: file.toString("base64"), length: file.length });
    expect((await readFileFrom(old, fail, 20)).toString()).toBe("uvwxyz");
  });

  test("an empty file is one page", async () => {
    const { asked, fetchPage } = leader(() => Buffer.alloc(0), 6);
    expect((await readFileFrom(fetchPage, fail)).length).toBe(0);
    expect(asked).toEqual([0]);
  });

  test("appends made while the pages come are not included: the file as it was at the first page", async () => {
    let file = Buffer.from("first section;");
    const { fetchPage } = leader(() => {
      const now = file;
      file = Buffer.concat([file, Buffer.from("more;")]);
      return now;
    }, 4);
    expect((await readFileFrom(fetchPage, fail)).toString()).toBe("first section;");
  });

  test("a server from before pages answers without an offset: its answer is the whole file", async () => {
    const whole = Buffer.from("all of it");
    const old = async (): Promise<ReadPage> => ({ data: whole.toString("base64"), length: whole.length });
    expect((await readFileFrom(old, fail)).toString()).toBe("all of it");
  });

  test("a page that does not follow on is an error, not a torn file", async () => {
    const pages: ReadPage[] = [
      { data: Buffer.from("abc").toString("base64"), length: 9, offset: 0 },
      { data: "", length: 9, offset: 3 },
    ];
    await expect(readFileFrom(async () => pages.shift()!, fail)).rejects.toThrow(/asked for the page at 3 of a 9-byte file, got 0 bytes at 3/);
    const skipped: ReadPage[] = [
      { data: Buffer.from("abc").toString("base64"), length: 9, offset: 0 },
      { data: Buffer.from("ghi").toString("base64"), length: 9, offset: 6 },
    ];
    await expect(readFileFrom(async () => skipped.shift()!, fail)).rejects.toThrow(/got 3 bytes at 6/);
  });

  test("random files and page sizes read back byte for byte (seeded)", async () => {
    const random = mulberry32(61206);
    for (let round = 0; round < 200; round++) {
      const file = Buffer.from(Array.from({ length: Math.floor(random() * 3000) }, () => Math.floor(random() * 256)));
      const pageBytes = 3 * (1 + Math.floor(random() * 400));
      const { asked, fetchPage } = leader(() => file, pageBytes);
      const read = await readFileFrom(fetchPage, fail);
      expect({ round, same: read.equals(file) }).toEqual({ round, same: true });
      expect(asked.length).toBe(Math.max(1, Math.ceil(file.length / pageBytes)));
      const from = Math.floor(random() * (file.length + 10));
      expect({ round, from, same: (await readFileFrom(fetchPage, fail, from)).equals(file.subarray(from)) }).toEqual({ round, from, same: true });
    }
  });
});
