/**
 * Issue 10's speed targets, checked against a bench run, so that the bench
 * says itself which are met instead of leaving the arithmetic to the
 * reader. The targets were set for 3 dlm nodes on one nats-server with
 * `sync_interval: always`; the floor is request-reply plus one fsynced
 * JetStream publish, measured in the same run.
 */

export interface TargetInputs {
  /** Request-reply p50 plus fsynced publish p50, in ms. */
  floorMs: number;
  /**
   * p50 of the relay (a request to a process that makes one fsynced
   * publish, then answers), in ms: the path every dlm request takes, with
   * no dlm in it. A lone section is two such requests and commit() one, so
   * no work on dlm's side can bring either under that many relays.
   */
  relayP50Ms?: number;
  /** p50 of the lone client's acquire -> append -> release, in ms. */
  sectionP50Ms?: number;
  /** p50 of the lone client's commit(), in ms. */
  commitP50Ms?: number;
  /** 32 clients on one lock, sections: handoffs per second. */
  handoffsPerSecond?: number;
  /** 256 clients on 256 locks: acquire+release pairs per second. */
  locksPerSecond?: number;
}

export interface TargetVerdict {
  what: string;
  target: string;
  measured: string;
  met: boolean;
  /** For a latency target: the ratio the request path alone reaches (relays x relay p50 / floor). */
  pathBound?: string;
}

/** The numbers: ratios to the floor, and multiples of the throughputs it measured (5,373 ops/s, 639 handoffs/s). */
export const TARGETS = {
  sectionFloorRatio: 2.5,
  commitFloorRatio: 1.5,
  locksPerSecond: 3 * 5373,
  handoffsPerSecond: 2 * 639,
};

/** One verdict per target whose workload ran. */
export function checkTargets(m: TargetInputs): TargetVerdict[] {
  const out: TargetVerdict[] = [];
  const ratio = (what: string, p50Ms: number | undefined, most: number, relays: number): void => {
    if (p50Ms === undefined) return;
    const measured = p50Ms / m.floorMs;
    const verdict: TargetVerdict = { what, target: `<= ${most}x floor`, measured: `${measured.toFixed(2)}x`, met: measured <= most };
    if (m.relayP50Ms !== undefined) verdict.pathBound = `${((relays * m.relayP50Ms) / m.floorMs).toFixed(2)}x`;
    out.push(verdict);
  };
  const rate = (what: string, perSecond: number | undefined, least: number, unit: string): void => {
    if (perSecond === undefined) return;
    const n = (x: number) => Math.round(x).toLocaleString("en-US");
    out.push({ what, target: `>= ${n(least)} ${unit}/s`, measured: `${n(perSecond)}/s`, met: perSecond >= least });
  };
  ratio("lone section p50", m.sectionP50Ms, TARGETS.sectionFloorRatio, 2);
  ratio("lone commit() p50", m.commitP50Ms, TARGETS.commitFloorRatio, 1);
  rate("32 clients on one lock", m.handoffsPerSecond, TARGETS.handoffsPerSecond, "handoffs");
  rate("256 clients on 256 locks", m.locksPerSecond, TARGETS.locksPerSecond, "ops");
  return out;
}

/** The verdicts as lines for the bench's output. */
export function formatTargets(verdicts: TargetVerdict[]): string[] {
  return verdicts.map((v) => {
    const line = `  ${v.what.padEnd(24)} target ${v.target.padEnd(26)} measured ${v.measured.padEnd(12)} ${v.met ? "met" : "NOT MET"}`;
    return v.pathBound === undefined ? line : `${line.padEnd(85)} (the request path alone, no dlm: ${v.pathBound})`;
  });
}
