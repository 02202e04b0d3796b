/**
 * Loggers are pino, JSON lines by default (for machines and `jq`), pretty
 * only when a person asks for it. Components take the structural `Logger`
 * from src/log/logger.ts so they do not depend on how the logger is built.
 */
import pino from "pino";
import type { Logger } from "../log/logger";

export type { Logger } from "../log/logger";
export { silentLogger } from "../log/logger";

export interface LoggerOptions {
  name: string;
  level?: string;
  pretty?: boolean;
  /** Write to this file descriptor (default 2, stderr). */
  fd?: number;
}

export function createLogger(opts: LoggerOptions): pino.Logger {
  const level = opts.level ?? process.env.DLM_LOG_LEVEL ?? "info";
  if (opts.pretty) {
    return pino({
      name: opts.name,
      level,
      transport: { target: "pino-pretty", options: { destination: opts.fd ?? 2, translateTime: "HH:MM:ss.l", ignore: "pid,hostname" } },
    });
  }
  return pino({ name: opts.name, level, base: { node: opts.name } }, pino.destination({ fd: opts.fd ?? 2, sync: true }));
}

export function asLogger(logger: pino.Logger): Logger {
  return logger as unknown as Logger;
}
