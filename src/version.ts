/**
 * The version of dlm, read from package.json at run time. The file is found
 * by walking up from this module's directory, so it works from the sources
 * (ts-jest: src/), from the build (dist/src/) and from an installed package
 * (node_modules/dlm/dist/src/), without copying package.json into dist/.
 */
import * as fs from "fs";
import * as path from "path";

let cached: string | undefined;

export function version(): string {
  cached ??= readVersion();
  return cached;
}

function readVersion(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const file = path.join(dir, "package.json");
    if (fs.existsSync(file)) {
      const pkg = JSON.parse(fs.readFileSync(file, "utf8")) as { name?: string; version?: string };
      // Another package.json on the way up (a workspace, the user's project)
      // is not ours; keep looking.
      if (pkg.name === "dlm" && typeof pkg.version === "string") return pkg.version;
    }
    if (path.dirname(dir) === dir) return "unknown";
  }
}
