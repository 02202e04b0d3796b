/**
 * Reading a file in pages.
 *
 * A `read` answer is one NATS message, and files only grow: once a file
 * passed about 780 KB its base64 no longer fitted NATS's default 1 MB
 * max_payload. The leader's reply then threw inside nats.js's subscription
 * callback, which stopped that connection's reader for good: the node
 * neither answered nor renewed its leader lease, and the client's retry did
 * the same to the next leader. So a `read` that names an `offset` is
 * answered with a page that fits one message, and the reader asks for the
 * rest page by page; a `read` without one (a client from before pages) gets
 * the whole file when it fits and TOO_LARGE when it does not.
 *
 * A file is append-only, so every page of the first answer's `length`
 * bytes is the same whenever it is read: the pages together are the file as
 * it was at the first answer, even while others append.
 */
import type { Reply } from "./messages";
import { errorReply, okReply } from "./replies";
import { messageBudgetBytes } from "./limits";

/**
 * Bytes of file one answer carries to a server with this max_payload: the
 * message less the headroom, in base64 (4 characters per 3 bytes).
 */
export function readPageBytes(serverMaxPayloadBytes: number | undefined): number {
  return Math.max(3, Math.floor(messageBudgetBytes(serverMaxPayloadBytes) / 4) * 3);
}

/** One page of a file as a `read` answer carries it. */
export type ReadPage = Pick<Extract<Reply, { ok: true }>, "data" | "length" | "offset">;

/**
 * The file from `fromOffset` (0: all of it) to its end as the first page
 * found it, fetched page by page. `fetchPage` asks the leader for the page
 * at an offset (and throws on an error answer). An answer without `offset`
 * comes from a server from before pages and holds the whole file. `fail`
 * makes the error for a page that does not follow on (a broken server).
 */
export async function readFileFrom(fetchPage: (offset: number) => Promise<ReadPage>, fail: (message: string) => Error, fromOffset = 0): Promise<Buffer> {
  const first = await fetchPage(fromOffset);
  const firstBytes = Buffer.from(first.data ?? "", "base64");
  if (first.offset === undefined) return firstBytes.subarray(Math.min(fromOffset, firstBytes.length));
  const total = first.length ?? firstBytes.length;
  const pages = [firstBytes];
  // Past the end, the answer is an empty page at the end.
  let got = first.offset + firstBytes.length;
  while (got < total) {
    const page = await fetchPage(got);
    const bytes = Buffer.from(page.data ?? "", "base64");
    // Files never shrink, so a leader (even a new one, which caught up with
    // the log before it served) has at least `total` bytes.
    if (page.offset !== got || bytes.length === 0) {
      throw fail(`asked for the page at ${got} of a ${total}-byte file, got ${bytes.length} bytes at ${String(page.offset)}`);
    }
    pages.push(bytes);
    got += bytes.length;
  }
  return Buffer.concat(pages).subarray(0, total - first.offset);
}

/**
 * The leader's answer to a `read` of a file of `length` committed bytes;
 * `read(start, maxBytes)` reads them, and is asked for one page at most, so
 * a large file is never read whole for one answer. With an offset: the
 * page there, at most `pageBytes` long (empty at or past the end). Without
 * one: the whole file, or TOO_LARGE if it does not fit.
 */
export function readReply(file: string, length: number, offset: number | undefined, pageBytes: number, read: (start: number, maxBytes: number) => Buffer): Reply {
  if (offset === undefined) {
    if (length > pageBytes) {
      return errorReply(
        "TOO_LARGE",
        `${file} holds ${length} bytes, more than one answer carries (${pageBytes}): read it in pages, with "offset" (the dlm client and \`dlm read\` do; upgrade an older client)`,
      );
    }
    return okReply("Read", { data: read(0, length).toString("base64"), length });
  }
  const start = Math.min(offset, length);
  return okReply("Read", { data: read(start, Math.min(pageBytes, length - start)).toString("base64"), length, offset: start });
}
