/**
 * The journal model of the failover-style tests. Every critical section a
 * test runs appends lines to the journal file (file_0), each naming the
 * section's fencing token: `<tag> t=<token> i=<i>`. A Journal keeps what the
 * file must hold: the committed sections (release answered ok) in token
 * order. A committed append that is lost or doubled, a discarded section
 * that shows up, or two sections that interleave all make the file differ
 * from expected().
 *
 * A Journal knows nothing of the cluster: the tests compare expected() with
 * the file on whichever node they choose.
 */
import type { DlmClient, Lease } from "../../src/client";
import type { RawSession } from "./rawSession";

export const JOURNAL = "file_0";
export const JOURNAL_INDEX = 0;

export interface CommittedSection {
  token: number;
  text: string;
}

export interface SectionOptions {
  /** Asks for this lease instead of the client's default. */
  leaseMs?: number;
  /** Runs after each journal append has been staged. */
  afterAppend?: (i: number, lease: Lease) => Promise<void> | void;
  /** Also appends one line, `<tag> t=<token>\n`, to this other file after the journal lines, in the same section. */
  alsoTo?: string;
}

/** A section opened through a RawSession: granted, its appends staged, not yet released. */
export interface RawSection {
  token: number;
  text: string;
  appends: number;
}

export class Journal {
  private readonly sections: CommittedSection[] = [];
  private readonly grants: number[] = [];

  /** The committed sections, in the order their releases were answered. */
  get committed(): readonly CommittedSection[] {
    return this.sections;
  }

  /** Every token the tests saw granted, in the order the grants were seen. */
  get granted(): readonly number[] {
    return this.grants;
  }

  /** Records a grant the test saw (section() and rawSection() do it themselves). */
  grant(token: number): void {
    this.grants.push(token);
  }

  /** Records a section whose release was answered ok (section() and commitRaw() do it themselves). */
  commit(section: CommittedSection): void {
    this.sections.push(section);
  }

  /** What the journal file must hold: the committed sections in token order. */
  expected(): string {
    return [...this.sections]
      .sort((a, b) => a.token - b.token)
      .map((s) => s.text)
      .join("");
  }

  /** The committed sections' tokens, ascending. */
  committedTokens(): number[] {
    return this.sections.map((s) => s.token).sort((a, b) => a - b);
  }

  /**
   * One critical section: acquire "global", `n` appends to the journal (each
   * staged count checked), release (the committed count checked); recorded.
   */
  async section(client: DlmClient, tag: string, n: number, opts: SectionOptions = {}): Promise<CommittedSection> {
    const lease = await client.acquire("global", opts.leaseMs !== undefined ? { leaseMs: opts.leaseMs } : {});
    this.grant(lease.token);
    let text = "";
    for (let i = 0; i < n; i++) {
      const line = `${tag} t=${lease.token} i=${i}\n`;
      const r = await client.append(JOURNAL, line);
      text += line;
      expect(r.staged).toEqual({ appends: i + 1, bytes: Buffer.byteLength(text) });
      await opts.afterAppend?.(i, lease);
    }
    let appends = n;
    let bytes = Buffer.byteLength(text);
    if (opts.alsoTo !== undefined) {
      const line = `${tag} t=${lease.token}\n`;
      const r = await client.append(opts.alsoTo, line);
      appends++;
      bytes += Buffer.byteLength(line);
      expect(r.staged).toEqual({ appends, bytes });
    }
    const result = await lease.release();
    expect(result).toEqual({ appends, bytes });
    const s = { token: lease.token, text };
    this.commit(s);
    return s;
  }

  /**
   * Opens a section through a raw session (which must have said hello):
   * acquire "global" with `leaseMs`, then `n` journal appends, each answered
   * ok. The grant is recorded; commitRaw() releases it.
   */
  async rawSection(session: RawSession, tag: string, n: number, leaseMs: number): Promise<RawSection> {
    const acq = await session.call("acquire", { lock: "global", leaseMs });
    expect(acq.ok && acq.status).toBe("granted");
    const token = acq.ok ? acq.lease!.token : -1;
    this.grant(token);
    let text = "";
    for (let i = 0; i < n; i++) {
      const line = `${tag} t=${token} i=${i}\n`;
      const r = await session.call("append", { file: JOURNAL, data: Buffer.from(line).toString("base64"), token });
      expect(r.ok).toBe(true);
      text += line;
    }
    return { token, text, appends: n };
  }

  /** Releases a section opened by rawSection(): it must commit exactly its appends. Recorded. */
  async commitRaw(session: RawSession, section: RawSection): Promise<void> {
    const rel = await session.call("release", { lock: "global", token: section.token });
    expect(rel.ok && rel.committed).toEqual({ appends: section.appends, bytes: Buffer.byteLength(section.text) });
    this.commit({ token: section.token, text: section.text });
  }
}

/** Tokens in journal order, one per section (consecutive repeats collapsed). */
export function journalTokens(text: string): number[] {
  const tokens: number[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const m = / t=(\d+) /.exec(line);
    if (!m) throw new Error(`journal line without a token: ${JSON.stringify(line)}`);
    const t = Number(m[1]);
    if (tokens[tokens.length - 1] !== t) tokens.push(t);
  }
  return tokens;
}
