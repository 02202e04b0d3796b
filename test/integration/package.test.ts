/**
 * The package as a user gets it: `npm pack` of the built repository, the
 * tarball installed with npm into a fresh directory, then an ESM TypeScript
 * project (`"type": "module"`, `import { connect } from "dlm"`) and a
 * CommonJS one (`import dlm = require("dlm")`, compiled to `require`) that
 * both type-check with the repository's tsc and take a lock, append and
 * read against a real dlm node. Also: the tarball holds no tests, test
 * sources or benches; the node's modules are not importable
 * (ERR_PACKAGE_PATH_NOT_EXPORTED at run time, an error for tsc); the `dlm`
 * bin runs from the installed package.
 *
 * Needs `npx tsc -p tsconfig.json` first (it packs dist/) and the npm
 * registry (or a warm npm cache) for the package's dependencies.
 */
import { execFile } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { promisify } from "util";
import { startDlmCluster, type DlmTestCluster } from "../kit/dlmCluster";
import { repoRoot } from "../kit/dlmNode";
import { makeTempDir, removeTempDir } from "../kit/tmp";

const run = promisify(execFile);
const tsc = path.join(repoRoot, "node_modules", "typescript", "bin", "tsc");

let cluster: DlmTestCluster;
let dir: string;
let tarball: string;
let packed: string[];

/** Runs a command; on failure the error carries its output. */
async function sh(file: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Promise<string> {
  try {
    const { stdout } = await run(file, args, { cwd, env: { ...process.env, ...env }, timeout: 90_000, maxBuffer: 16 << 20 });
    return stdout;
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${file} ${args.join(" ")} failed in ${cwd}: ${err.message}\nstdout:\n${err.stdout ?? ""}\nstderr:\n${err.stderr ?? ""}`);
  }
}

function write(file: string, content: string | object): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, typeof content === "string" ? content : JSON.stringify(content, null, 2));
}

/** The consumer's tsconfig: strict, node's module rules, the repository's @types/node. */
function tsconfig(module: "nodenext"): object {
  return {
    compilerOptions: {
      target: "ES2022",
      module,
      moduleResolution: "nodenext",
      strict: true,
      outDir: "out",
      typeRoots: [path.join(repoRoot, "node_modules", "@types")],
      types: ["node"],
    },
    include: ["*.ts"],
  };
}

beforeAll(async () => {
  if (!fs.existsSync(path.join(repoRoot, "dist", "src", "client", "index.js"))) {
    throw new Error("dist/ is missing: run `npx tsc -p tsconfig.json` before this test");
  }
  dir = makeTempDir("dlm-pack-");
  const [info] = JSON.parse(await sh("npm", ["pack", "--json", "--ignore-scripts", "--pack-destination", dir], repoRoot)) as Array<{
    filename: string;
    files: Array<{ path: string }>;
  }>;
  tarball = path.join(dir, info!.filename);
  packed = info!.files.map((f) => f.path);
  // One install at the top; the ESM and CommonJS projects below it both
  // resolve "dlm" from there, as two apps in a monorepo would.
  write(path.join(dir, "package.json"), { name: "consumers", private: true });
  await sh("npm", ["install", "--no-audit", "--no-fund", "--no-package-lock", "--prefer-offline", tarball], dir);
  cluster = await startDlmCluster({ nodes: 1, leaseMs: 5000 });
  await cluster.waitForLeader();
}, 180_000);

afterAll(async () => {
  await cluster?.close();
  if (dir) await removeTempDir(dir);
});

test("the tarball holds the library, the CLI and the docs, and no tests, test sources or benches", () => {
  expect(packed).toContain("dist/src/client/index.js");
  expect(packed).toContain("dist/src/client/index.d.ts");
  expect(packed).toContain("dist/src/cli/main.js");
  expect(packed).toContain("bin/dlm");
  expect(packed).toContain("README.md");
  expect(packed).toContain("docs/errors.md");
  const outside = packed.filter((p) => !/^(dist\/src\/|bin\/|docs\/|README\.md$|package\.json$|LICENSE)/.test(p));
  expect(outside).toEqual([]);
  expect(packed.filter((p) => /(^|\/)(test|bench)\/|\.test\.|\.map$/.test(p))).toEqual([]);
  expect(packed.filter((p) => p.endsWith(".ts") && !p.endsWith(".d.ts"))).toEqual([]);
});

test("an ESM TypeScript project imports dlm, type-checks, and takes a lock against a real node", async () => {
  const esm = path.join(dir, "esm");
  write(path.join(esm, "package.json"), { name: "esm-consumer", private: true, type: "module" });
  write(path.join(esm, "tsconfig.json"), tsconfig("nodenext"));
  write(
    path.join(esm, "main.ts"),
    `import { connect, isDlmError, LockExpiredError, DlmError, type Lease, type AcquireOptions } from "dlm";

const opts: AcquireOptions = { leaseMs: 5000 };
const client = await connect({ servers: process.env.NATS_URL!, name: "esm" });
const token = await client.withLock("global", async (lease: Lease) => {
  await client.append("file_42", "from esm\\n");
  return lease.token;
}, opts);
const tried = await client.tryAcquire("esm.lock", { waitMs: 10 });
const text = (await client.read("file_42")).toString();
let internal = "importable";
try {
  const hidden: string = "dlm/dist/src/replica/node";
  await import(hidden);
} catch (e) {
  internal = String((e as { code?: string }).code);
}
const e = new LockExpiredError();
console.log(JSON.stringify({ token, text, internal, tried: tried ? tried.lock : null, dlmError: e instanceof DlmError && isDlmError(e, "LOCK_EXPIRED") }));
await tried?.release();
await client.close();
`,
  );
  await sh(process.execPath, [tsc, "-p", "tsconfig.json"], esm);
  const out = JSON.parse(await sh(process.execPath, ["out/main.js"], esm, { NATS_URL: cluster.urls.join(",") })) as Record<string, unknown>;
  expect(out).toEqual({ token: expect.any(Number), text: "from esm\n", internal: "ERR_PACKAGE_PATH_NOT_EXPORTED", tried: "esm.lock", dlmError: true });
});

test("a CommonJS TypeScript project requires dlm, type-checks, and takes a lock; internals are not exported", async () => {
  const cjs = path.join(dir, "cjs");
  write(path.join(cjs, "package.json"), { name: "cjs-consumer", private: true, type: "commonjs" });
  write(path.join(cjs, "tsconfig.json"), tsconfig("nodenext"));
  write(
    path.join(cjs, "main.ts"),
    `import dlm = require("dlm");

async function main(): Promise<void> {
  const client = await dlm.connect({ servers: process.env.NATS_URL!, name: "cjs" });
  const lease = await client.acquire("global");
  await client.append("file_43", "from cjs\\n");
  const committed = await lease.release();
  const text = (await client.read("file_43")).toString();
  let internal = "importable";
  try {
    require("dlm/dist/src/replica/node");
  } catch (e) {
    internal = String((e as { code?: string }).code);
  }
  console.log(JSON.stringify({ committed, text, internal, classes: typeof dlm.NotHolderError === "function" && new dlm.NotHolderError().code === dlm.ErrorCodes.NOT_HOLDER }));
  await client.close();
}
void main();
`,
  );
  await sh(process.execPath, [tsc, "-p", "tsconfig.json"], cjs);
  expect(fs.readFileSync(path.join(cjs, "out", "main.js"), "utf8")).toMatch(/require\("dlm"\)/);
  const out = JSON.parse(await sh(process.execPath, ["out/main.js"], cjs, { NATS_URL: cluster.urls.join(",") })) as Record<string, unknown>;
  expect(out).toEqual({ committed: { appends: 1, bytes: 9 }, text: "from cjs\n", internal: "ERR_PACKAGE_PATH_NOT_EXPORTED", classes: true });

  // tsc refuses a deep import of the node's modules as well.
  write(path.join(cjs, "deep", "tsconfig.json"), { ...tsconfig("nodenext"), include: ["deep.ts"] });
  write(path.join(cjs, "deep", "deep.ts"), `import { DlmNode } from "dlm/dist/src/replica/node";\nexport const n = DlmNode;\n`);
  await expect(sh(process.execPath, [tsc, "-p", "tsconfig.json", "--noEmit"], path.join(cjs, "deep"))).rejects.toThrow(/TS2307|Cannot find module 'dlm\/dist\/src\/replica\/node'/);
});

test("the dlm command runs from the installed package", async () => {
  const out = await sh(path.join(dir, "node_modules", ".bin", "dlm"), ["--version"], dir);
  expect(out).toMatch(/^dlm \d+\.\d+\.\d+/);
  const help = await sh("npx", ["--no-install", "dlm", "status", "--help"], dir);
  expect(help).toMatch(/usage: dlm status/);
});
