/**
 * A second, separate copy of the @nats-io client packages, as an
 * application that brings its own (another version, or the same one
 * installed twice) would hand dlm: its classes are not dlm's, so
 * `instanceof` against dlm's copy fails for its errors.
 *
 * The packages are copied from dlm's node_modules into a temporary
 * directory's node_modules and loaded from there.
 */
import * as fs from "fs";
import { createRequire } from "module";
import * as path from "path";
import { repoRoot } from "./dlmNode";
import { makeTempDir } from "./tmp";

export type ForeignTransportNode = typeof import("@nats-io/transport-node");
export type ForeignNatsCore = typeof import("@nats-io/nats-core");

/** Packages transport-node needs at run time. */
const PACKAGES = ["@nats-io/transport-node", "@nats-io/nats-core", "@nats-io/nkeys", "@nats-io/nuid", "tweetnacl"];

/** Loads a fresh copy of @nats-io/transport-node (and what it requires) from a temporary directory. */
export function loadForeignNats(): { nats: ForeignTransportNode; core: ForeignNatsCore; dir: string } {
  const dir = makeTempDir("dlm-foreign-nats-");
  for (const pkg of PACKAGES) {
    fs.cpSync(path.join(repoRoot, "node_modules", pkg), path.join(dir, "node_modules", pkg), { recursive: true, dereference: true });
  }
  // Node's own resolution from inside the temporary directory (package
  // "exports" included), outside jest's module registry.
  const requireThere = createRequire(path.join(dir, "node_modules", "loader.js"));
  const nats = requireThere("@nats-io/transport-node") as ForeignTransportNode;
  // The copy transport-node itself resolves (the temporary one), for its error classes.
  const core = requireThere("@nats-io/nats-core") as ForeignNatsCore;
  return { nats, core, dir };
}
