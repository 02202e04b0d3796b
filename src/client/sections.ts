/**
 * A critical section as the client stages it: `append` keeps the bytes in
 * the client and sends nothing, and the release carries them (see
 * leaseKeeper.ts). A section larger than one request may carry spills its
 * earliest appends as logged `append` requests, awaited by the append that
 * overflowed; the release then names how many were spilled, and the server
 * refuses it with SECTION_MISMATCH (nothing committed) if it staged another
 * number.
 */
import { DEFAULT_LIMITS } from "../protocol/limits";
import type { WireAppend } from "../protocol/messages";
import { TooLargeError } from "./errors";
import type { LeaseKeeper, LeaseRecord } from "./leaseKeeper";
import type { ResolvedOptions } from "./options";
import type { Requests } from "./requests";
import type { SessionInfo } from "./session";

export interface AppendResult {
  /** The critical section staged so far under this grant. */
  staged: { appends: number; bytes: number };
}

/**
 * The part of a critical section the server has not logged yet: appends
 * staged in the client, sent with the release. `spilled` counts those
 * already logged on their own (a section too big for one request); the
 * release names that count.
 */
export interface LocalSection {
  inline: WireAppend[];
  inlineBytes: number;
  /** Size of `inline` as it travels in the release request (base64 and JSON). */
  inlineWireBytes: number;
  spilled: number;
  spilledBytes: number;
}

/** Room a release or commit request needs besides its appends (op, ids, seq, ack, lock, token, staged). */
export const RELEASE_FIELDS_WIRE_BYTES = 256;
/** Room one append needs inside the `appends` array besides its base64 data. */
const APPEND_ITEM_WIRE_BYTES = 40;

/** What an append of `size` bytes takes in a release or commit request. */
export function wireBytesOf(size: number): number {
  return Math.ceil(size / 3) * 4 + APPEND_ITEM_WIRE_BYTES;
}

/**
 * The most bytes a release or commit request may carry: what one append of
 * the server's maxAppendBytes takes on the wire, which the server's
 * maxRequestBytes is configured to admit.
 */
export function requestBudget(info: SessionInfo | undefined): number {
  const maxAppend = info?.maxAppendBytes ?? DEFAULT_LIMITS.maxAppendBytes;
  return Math.ceil(maxAppend / 3) * 4 + 512;
}

export function emptySection(): LocalSection {
  return { inline: [], inlineBytes: 0, inlineWireBytes: 0, spilled: 0, spilledBytes: 0 };
}

export class SectionStager {
  constructor(
    private readonly requests: Requests,
    private readonly leases: LeaseKeeper,
    private readonly options: ResolvedOptions,
  ) {}

  /**
   * Stages `data` (base64 of `size` bytes) for `file` under the lease of
   * `rec`, after the appends before it: each waits for the one before, so
   * the section keeps the callers' order.
   */
  append(rec: LeaseRecord, file: string, data: string, size: number): Promise<AppendResult> {
    const run = rec.appending.then(() => this.stage(rec, file, data, size));
    rec.appending = run.catch(() => undefined);
    return run;
  }

  /** Adds one append to the lease's local section, spilling the earlier ones first if it would not fit one request. */
  private async stage(rec: LeaseRecord, file: string, data: string, size: number): Promise<AppendResult> {
    // The deadline timer may not have had its turn yet (a busy event loop
    // runs promise continuations first, and a section's appends are all
    // continuations), so the deadline itself is checked here: an append is
    // never accepted under a lease past its safe local bound.
    if (rec.lease.state === "held" && rec.confirmedAt + rec.lease.leaseMs <= performance.now()) this.leases.expireLocally(rec);
    // A lease lost while an earlier append spilled is never written to again.
    if (rec.lease.lost && rec.lease.lostReason) throw rec.lease.lostReason;
    const section = rec.section;
    const info = rec.session.info;
    const maxSection = info?.maxSectionBytes;
    if (maxSection !== undefined && section.spilledBytes + section.inlineBytes + size > maxSection) {
      throw new TooLargeError(`the critical section would grow to ${section.spilledBytes + section.inlineBytes + size} bytes, over the server's limit of ${maxSection}`);
    }
    const item: WireAppend = { file, data };
    section.inline.push(item);
    section.inlineBytes += size;
    section.inlineWireBytes += wireBytesOf(size);
    // A server that does not take appends inside the release gets each one
    // logged at once (and so does a client that asked for it); otherwise
    // only what no longer fits one request spills.
    const keep = maxSection === undefined || this.options.logEachAppend ? 0 : 1;
    if (keep === 0 || section.inlineWireBytes + RELEASE_FIELDS_WIRE_BYTES > requestBudget(rec.session.info)) {
      try {
        await this.spill(rec, keep);
      } catch (e) {
        // This append failed, so it is not part of the section. (If its own
        // request's outcome is unknown and it did land, the release's count
        // no longer matches the server's and the release is refused.)
        if (section.inline[section.inline.length - 1] === item) {
          section.inline.pop();
          section.inlineBytes -= size;
          section.inlineWireBytes -= wireBytesOf(size);
        }
        throw e;
      }
    }
    return { staged: { appends: section.spilled + section.inline.length, bytes: section.spilledBytes + section.inlineBytes } };
  }

  /**
   * Logs the oldest staged appends on their own, one request each, until
   * `keep` are left. On a failure the append that failed stays staged; if
   * its outcome is unknown (TIMEOUT), the count the release names may not
   * match the server's, which then refuses the release (SECTION_MISMATCH)
   * rather than commit a section the client did not mean.
   */
  private async spill(rec: LeaseRecord, keep: number): Promise<void> {
    const section = rec.section;
    const { lease, session } = rec;
    while (section.inline.length > keep) {
      const next = section.inline[0];
      try {
        // Once the lease is declared lost its section can never commit: the
        // attempt in flight may still bring the server's answer (its refusal
        // at the token check), but no retry is sent for it.
        await this.requests.logged(
          session,
          (seq, ack) => ({ op: "append", client: session.id, seq, ack, file: next.file, data: next.data, token: lease.token }),
          { noRetryAfter: lease.signal },
        );
      } catch (e) {
        this.leases.loseIfEnded(rec, e);
        throw e;
      }
      // The loss was declared as the reply arrived: the append that
      // overflowed must not report success for a section that never commits.
      if (lease.lost && lease.lostReason) throw lease.lostReason;
      const size = Buffer.byteLength(next.data, "base64");
      section.inline.shift();
      section.inlineBytes -= size;
      section.inlineWireBytes -= wireBytesOf(size);
      section.spilled++;
      section.spilledBytes += size;
    }
  }
}
