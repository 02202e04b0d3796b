/**
 * Node 20.4 and later define Symbol.asyncDispose; older Node 20 releases do
 * not (nor does a jest sandbox on them). Defining it the way Node itself
 * does (a registered symbol) makes `await using` work there too, with
 * TypeScript's helpers and with a later native implementation alike.
 *
 * Imported for its effect by every module whose classes have a
 * `[Symbol.asyncDispose]` method, before the class is defined: the key is
 * read when the class is, so whichever of them loads first must find it.
 */
if (typeof (Symbol as { asyncDispose?: symbol }).asyncDispose !== "symbol") {
  Object.defineProperty(Symbol, "asyncDispose", { value: Symbol.for("nodejs.asyncDispose") });
}

export {};
