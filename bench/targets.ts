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
  if (m.sectionP50Ms !== undefined) {
    const ratio = m.sectionP50Ms / m.floorMs;
    out.push({ what: "lone section p50", target: `<= ${TARGETS.sectionFloorRatio}x floor`, measured: `${ratio.toFixed(2)}x`, met: ratio <= TARGETS.sectionFloorRatio });
  }
  if (m.commitP50Ms !== undefined) {
    const ratio = m.commitP50Ms / m.floorMs;
    out.push({ what: "lone commit() p50", target: `<= ${TARGETS.commitFloorRatio}x floor`, measured: `${ratio.toFixed(2)}x`, met: ratio <= TARGETS.commitFloorRatio });
  }
  if (m.handoffsPerSecond !== undefined) {
    out.push({
      what: "32 clients on one lock",
      target: `>= ${TARGETS.handoffsPerSecond.toLocaleString("en-US")} handoffs/s`,
      measured: `${Math.round(m.handoffsPerSecond).toLocaleString("en-US")}/s`,
      met: m.handoffsPerSecond >= TARGETS.handoffsPerSecond,
    });
  }
  if (m.locksPerSecond !== undefined) {
    out.push({
      what: "256 clients on 256 locks",
      target: `>= ${TARGETS.locksPerSecond.toLocaleString("en-US")} ops/s`,
      measured: `${Math.round(m.locksPerSecond).toLocaleString("en-US")}/s`,
      met: m.locksPerSecond >= TARGETS.locksPerSecond,
    });
  }
  return out;
}

/** The verdicts as lines for the bench's output. */
export function formatTargets(verdicts: TargetVerdict[]): string[] {
  return verdicts.map((v) => `  ${v.what.padEnd(24)} target ${v.target.padEnd(26)} measured ${v.measured.padEnd(12)} ${v.met ? "met" : "NOT MET"}`);
}
