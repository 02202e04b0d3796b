/**
 * The log's tail as this node last measured it: one JetStream stream-info
 * request, with a short timeout and a small cache. Metrics scrapes and
 * readiness probes read it; nothing on the request or apply path does.
 *
 * The cache bounds the load probes put on JetStream (many scrapers or a
 * tight readiness loop cost at most one request per `cacheMs`); concurrent
 * callers share the request in flight. A failed or timed-out measurement
 * is not cached, so the next probe tries again.
 */
import type { LogTail } from "./nodeMetrics";

export interface LogTailProbeOptions {
  /** Reuse a measurement this long. */
  cacheMs: number;
  /** Give up on one stream-info request after this long. */
  timeoutMs: number;
}

export const DEFAULT_LOG_TAIL_PROBE: LogTailProbeOptions = { cacheMs: 1000, timeoutMs: 1000 };

/** A tail measurement; `at` is when it was taken. */
export type MeasuredLogTail = LogTail;

export class LogTailProbe {
  private last: MeasuredLogTail | undefined;
  private inFlight: Promise<MeasuredLogTail | undefined> | undefined;
  /** The last failure's message, for readiness reasons. */
  lastError: string | undefined;

  /** The last successful measurement, however old. */
  get lastKnown(): MeasuredLogTail | undefined {
    return this.last;
  }

  constructor(
    private readonly measure: () => Promise<Omit<LogTail, "at">>,
    private readonly opts: LogTailProbeOptions = DEFAULT_LOG_TAIL_PROBE,
    private readonly now: () => number = Date.now,
  ) {}

  /** The cached tail if fresh, else a new measurement; undefined if it cannot be measured now. */
  get(): Promise<MeasuredLogTail | undefined> {
    if (this.last && this.now() - this.last.at < this.opts.cacheMs) return Promise.resolve(this.last);
    if (!this.inFlight) {
      this.inFlight = this.fetch().finally(() => {
        this.inFlight = undefined;
      });
    }
    return this.inFlight;
  }

  private async fetch(): Promise<MeasuredLogTail | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`stream info took longer than ${this.opts.timeoutMs} ms`)), this.opts.timeoutMs);
    });
    try {
      const tail = await Promise.race([this.measure(), timeout]);
      this.last = { ...tail, at: this.now() };
      this.lastError = undefined;
      return this.last;
    } catch (err) {
      this.lastError = (err as Error).message;
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }
}
