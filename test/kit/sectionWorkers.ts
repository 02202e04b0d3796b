/**
 * Background workers for fault scenarios and the soak: each loops critical
 * sections on the lock "global" (acquire, a few journal lines, release)
 * through its own client, while the test injects faults, and records what
 * the checks need:
 *
 * - every section's outcome: committed (release answered ok), refused
 *   (the server said the grant had ended: LOCK_EXPIRED, NOT_HOLDER; nothing
 *   of it may appear), abandoned (an append failed, the section was given
 *   up; nothing may appear), unknown (the release got no definite answer:
 *   all of it or nothing may appear);
 * - the fence: when each token was first seen granted, and when each
 *   append or release that the server acknowledged was sent.
 *
 * `check(journalText)` then requires of the journal file: whole sections
 * only, one per token, in increasing token order; every committed section
 * present exactly; no refused or abandoned section; nothing else. And of
 * the fence: no operation sent under token t after a greater token had
 * been seen granted was acknowledged (the resource refused every stale
 * token; mutual exclusion held where it matters).
 */
import { isDlmError, type DlmClient, type Lease } from "../../src/client";
import { JOURNAL, journalTokens } from "./journal";
import { sleep } from "./dlmCluster";

export type SectionOutcome = "committed" | "refused" | "abandoned" | "unknown";

export interface WorkerSection {
  worker: number;
  token: number;
  text: string;
  outcome: SectionOutcome;
  /** performance.now() when the outcome was known. */
  endedAt: number;
}

export interface SectionWorkersOptions {
  /** Journal lines per section (default 2). */
  lines?: number;
  /** Lease asked for (default: the client's). */
  leaseMs?: number;
  /** How long one acquire may wait before it is cancelled and tried again (default 15 s). */
  acquireWaitMs?: number;
  /** Pause between sections, ms (default 0). */
  pauseMs?: number;
  /** Tag written in every line (default "w"). */
  tag?: string;
}

interface WorkerState {
  client: DlmClient;
  sections: number;
  next: number;
}

export class SectionWorkers {
  readonly sections: WorkerSection[] = [];
  /** Errors seen, by "op:CODE". */
  readonly errors = new Map<string, number>();
  private readonly grantSeenAt = new Map<number, number>();
  private readonly acked: Array<{ token: number; sentAt: number; op: string }> = [];
  private readonly workers: WorkerState[];
  private stopped = false;
  private loops: Array<Promise<void>>;
  private readonly opts: Required<SectionWorkersOptions>;

  constructor(clients: DlmClient[], opts: SectionWorkersOptions = {}) {
    this.opts = { lines: 2, leaseMs: 0, acquireWaitMs: 15_000, pauseMs: 0, tag: "w", ...opts };
    this.workers = clients.map((client) => ({ client, sections: 0, next: 0 }));
    this.loops = this.workers.map((w, i) => this.loop(w, i));
  }

  /** Committed sections so far, by worker or in all. */
  committed(worker?: number): number {
    return this.sections.filter((s) => s.outcome === "committed" && (worker === undefined || s.worker === worker)).length;
  }

  /** Committed sections whose release was answered after `since` (performance.now()). */
  committedSince(since: number, workers?: number[]): number {
    return this.sections.filter((s) => s.outcome === "committed" && s.endedAt >= since && (!workers || workers.includes(s.worker))).length;
  }

  /** Starts the loops again after stop(); what was recorded is kept. */
  resume(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.loops = this.workers.map((w, i) => this.loop(w, i));
  }

  /** Stops the loops after their current section; resolves when all have finished. */
  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
  }

  private count(key: string): void {
    this.errors.set(key, (this.errors.get(key) ?? 0) + 1);
  }

  private async loop(w: WorkerState, index: number): Promise<void> {
    while (!this.stopped && !w.client.closed) {
      // Section numbers go on across stop()/resume().
      await this.section(w, index, w.next++);
      if (this.opts.pauseMs > 0) await sleep(this.opts.pauseMs);
    }
  }

  private async section(w: WorkerState, index: number, n: number): Promise<void> {
    let lease: Lease;
    try {
      lease = await w.client.acquire("global", {
        ...(this.opts.leaseMs > 0 ? { leaseMs: this.opts.leaseMs } : {}),
        signal: AbortSignal.timeout(this.opts.acquireWaitMs),
      });
    } catch (e) {
      this.count(`acquire:${codeOf(e)}`);
      await sleep(100);
      return;
    }
    const token = lease.token;
    const seenAt = performance.now();
    if (!this.grantSeenAt.has(token)) this.grantSeenAt.set(token, seenAt);
    let text = "";
    const record = (outcome: SectionOutcome) =>
      this.sections.push({ worker: index, token, text, outcome, endedAt: performance.now() });
    for (let i = 0; i < this.opts.lines; i++) {
      const line = `${this.opts.tag}${index}-${n} t=${token} i=${i}\n`;
      const sentAt = performance.now();
      try {
        await w.client.append(JOURNAL, line, { lease });
        this.acked.push({ token, sentAt, op: "append" });
        text += line;
      } catch (e) {
        this.count(`append:${codeOf(e)}`);
        // Staged lines of a section given up never commit: end it without a commit.
        await lease.abandon().catch(() => undefined);
        text += line; // the failed line may have been staged: none of it may appear
        record("abandoned");
        return;
      }
    }
    const sentAt = performance.now();
    try {
      await lease.release();
      this.acked.push({ token, sentAt, op: "release" });
      record("committed");
      w.sections++;
    } catch (e) {
      const code = codeOf(e);
      this.count(`release:${code}`);
      if (code === "LOCK_EXPIRED" || code === "NOT_HOLDER") record("refused");
      else {
        record("unknown");
        await lease.abandon().catch(() => undefined);
      }
    }
  }

  /**
   * The journal holds exactly what the outcomes allow, and the fence held.
   * Returns a list of violations (empty when everything holds).
   */
  check(journalText: string): string[] {
    return checkSections(journalText, this.sections, this.grantSeenAt, this.acked);
  }

  /** One line for logs: sections by outcome and errors by kind. */
  summary(): string {
    const outcomes: Record<string, number> = {};
    for (const s of this.sections) outcomes[s.outcome] = (outcomes[s.outcome] ?? 0) + 1;
    return `sections ${JSON.stringify(outcomes)} errors ${JSON.stringify(Object.fromEntries(this.errors))}`;
  }
}

function codeOf(e: unknown): string {
  return isDlmError(e) ? e.codeName : e instanceof Error ? e.name : String(e);
}

/**
 * The checks behind SectionWorkers.check, on plain data: `sections` with
 * their outcomes, when each token was first seen granted, and when each
 * acknowledged append or release was sent (all performance.now()).
 */
export function checkSections(
  journalText: string,
  sections: readonly WorkerSection[],
  grantSeenAt: ReadonlyMap<number, number>,
  acked: ReadonlyArray<{ token: number; sentAt: number; op: string }>,
): string[] {
  const problems: string[] = [];
  const byToken = new Map<number, WorkerSection>();
  for (const s of sections) {
    if (byToken.has(s.token)) problems.push(`token ${s.token} was granted to two sections`);
    byToken.set(s.token, s);
  }
  // Split the file into runs of one token each.
  const runs: Array<{ token: number; text: string }> = [];
  for (const line of journalText.split(/(?<=\n)/)) {
    if (!line) continue;
    const m = / t=(\d+) /.exec(line);
    if (!m) {
      problems.push(`journal line without a token: ${JSON.stringify(line)}`);
      continue;
    }
    const token = Number(m[1]);
    const last = runs[runs.length - 1];
    if (last && last.token === token) last.text += line;
    else runs.push({ token, text: line });
  }
  const tokens = journalTokens(journalText);
  for (let i = 1; i < tokens.length; i++) {
    if (tokens[i]! <= tokens[i - 1]!) problems.push(`journal tokens not increasing: ${tokens[i - 1]} then ${tokens[i]}`);
  }
  const present = new Set<number>();
  for (const run of runs) {
    present.add(run.token);
    const s = byToken.get(run.token);
    if (!s) {
      problems.push(`journal holds token ${run.token}, which no worker was granted`);
      continue;
    }
    if (s.outcome === "refused" || s.outcome === "abandoned") problems.push(`journal holds ${s.outcome} section t=${s.token}`);
    else if (run.text !== s.text) problems.push(`section t=${s.token} (${s.outcome}) is torn or changed: ${JSON.stringify(run.text)} != ${JSON.stringify(s.text)}`);
  }
  for (const s of sections) {
    if (s.outcome === "committed" && !present.has(s.token)) problems.push(`committed section t=${s.token} is missing from the journal`);
  }
  // The fence: an acknowledged operation under token t sent after a
  // greater token had been seen granted means two holders at the resource.
  const grants = [...grantSeenAt.entries()].sort((a, b) => a[1] - b[1]);
  // maxBefore[i]: the greatest token among the first i grants seen.
  const maxBefore = [0];
  for (const [token] of grants) maxBefore.push(Math.max(maxBefore[maxBefore.length - 1]!, token));
  for (const op of acked) {
    let lo = 0;
    let hi = grants.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (grants[mid]![1] < op.sentAt) lo = mid + 1;
      else hi = mid;
    }
    const greatest = maxBefore[lo]!;
    if (greatest > op.token) {
      problems.push(`${op.op} under token ${op.token} was acknowledged although token ${greatest} had been granted before it was sent`);
    }
  }
  return problems;
}
