/**
 * The logging surface the storage, log and lease modules need. A pino logger
 * satisfies it; so does `silentLogger`. Kept structural so these modules do
 * not depend on how the node builds its logger.
 */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

const noop = (): void => {};

export const silentLogger: Logger = { debug: noop, info: noop, warn: noop, error: noop };
