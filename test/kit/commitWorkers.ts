/**
 * Clients that loop one-request commits (`client.commit()`) of large
 * sections into one file, for the soak: queued commits carry their data in
 * the log, so this is the workload that fills log entries to their byte
 * budget and pages large reads, under the same faults as everything else.
 *
 * Each section is one line `<TAG W-N xxxx…>\n` of `sectionBytes` bytes,
 * unique by worker W and number N. What the file may hold afterwards
 * (`checkCommittedSections`): whole sections only, every acknowledged one
 * exactly once, one whose commit failed at most once (a failure after the
 * request went out has an unknown outcome), and nothing that was never
 * sent.
 */
import type { DlmClient } from "../../src/client";
import { sleep } from "./dlmCluster";

export interface CommitWorkerOptions {
  /** The file every section goes to, e.g. "file_51". */
  file: string;
  /** Bytes per section, newline included (at least 32). */
  sectionBytes: number;
  /** Pause after each commit, so the file grows at a bounded rate. */
  pauseMs: number;
  /** Marks this run's sections; letters only. */
  tag: string;
}

export class CommitWorkers {
  private stopped = false;
  private readonly loops: Array<Promise<void>>;
  readonly acknowledged: string[] = [];
  readonly failed: string[] = [];
  private readonly errors = new Map<string, number>();

  constructor(
    clients: DlmClient[],
    private readonly opts: CommitWorkerOptions,
  ) {
    if (opts.sectionBytes < 32) throw new RangeError("sectionBytes must be at least 32");
    if (!/^[A-Za-z]+$/.test(opts.tag)) throw new RangeError("tag must be letters only");
    this.loops = clients.map((client, worker) => this.loop(client, worker));
  }

  committed(): number {
    return this.acknowledged.length;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
  }

  check(fileText: string): string[] {
    return checkCommittedSections(fileText, this.opts.tag, this.acknowledged, this.failed);
  }

  summary(): string {
    return `acknowledged ${this.acknowledged.length}, failed ${this.failed.length} ${JSON.stringify(Object.fromEntries(this.errors))}`;
  }

  private async loop(client: DlmClient, worker: number): Promise<void> {
    for (let n = 0; !this.stopped && !client.closed; n++) {
      const section = sectionText(this.opts.tag, worker, n, this.opts.sectionBytes);
      try {
        await client.commit([{ file: this.opts.file, data: section }], { signal: AbortSignal.timeout(30_000) });
        this.acknowledged.push(section);
      } catch (e) {
        this.failed.push(section);
        const code = (e as { codeName?: string }).codeName ?? "other";
        this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
      }
      await sleep(this.opts.pauseMs);
    }
  }
}

export function sectionText(tag: string, worker: number, n: number, sectionBytes: number): string {
  const head = `<${tag} ${worker}-${n} `;
  return `${head}${"x".repeat(sectionBytes - head.length - 2)}>\n`;
}

/** Everything wrong with `text` as the file of these commits; empty when it is right. */
export function checkCommittedSections(text: string, tag: string, acknowledged: string[], failed: string[]): string[] {
  const problems: string[] = [];
  const section = new RegExp(`<${tag} \\d+-\\d+ x*>\\n`, "g");
  const seen = new Map<string, number>();
  let covered = 0;
  for (const m of text.matchAll(section)) {
    if (m.index !== covered) {
      problems.push(`bytes ${covered}-${m.index} of the file are not a whole section`);
      break;
    }
    covered += m[0].length;
    seen.set(m[0], (seen.get(m[0]) ?? 0) + 1);
  }
  if (problems.length === 0 && covered !== text.length) problems.push(`the file ends with ${text.length - covered} bytes that are not a whole section`);
  const name = (s: string) => s.slice(0, s.indexOf(" x"));
  for (const s of acknowledged) {
    const count = seen.get(s) ?? 0;
    if (count !== 1) problems.push(`acknowledged section ${name(s)} is in the file ${count} times`);
  }
  for (const s of failed) {
    const count = seen.get(s) ?? 0;
    if (count > 1) problems.push(`section ${name(s)}, whose commit failed, is in the file ${count} times`);
  }
  const sent = new Set([...acknowledged, ...failed]);
  for (const s of seen.keys()) if (!sent.has(s)) problems.push(`section ${name(s)} is in the file but was never sent`);
  return problems;
}
