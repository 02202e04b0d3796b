/**
 * Assertions are for programmer errors and broken invariants, never for bad
 * input. A failed assertion means the process can no longer trust its own
 * state, so it must crash rather than carry on (the node's entry point exits
 * on an uncaught InvariantError; a restart rebuilds state from the log).
 */
export class InvariantError extends Error {
  override name = "InvariantError";
}

export function assert(condition: unknown, message: string | (() => string)): asserts condition {
  if (!condition) {
    throw new InvariantError(typeof message === "function" ? message() : message);
  }
}

export function unreachable(value: never, what: string): never {
  throw new InvariantError(`unreachable: unexpected ${what} ${JSON.stringify(value)}`);
}
