/**
 * deploy/ without a Docker engine: check what can be checked statically.
 * nats-server accepts the cluster config; the compose file runs three dlm
 * nodes against three NATS servers with replicas 3, with healthchecks that
 * mean ready; the runtime image carries the service only. Bringing it up
 * for real needs a Docker engine and is done by hand.
 */
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";

const deploy = path.join(__dirname, "../../deploy");

test("nats-server accepts deploy/nats.conf", () => {
  const out = execFileSync("nats-server", ["-c", path.join(deploy, "nats.conf"), "-t"], {
    env: { ...process.env, SERVER_NAME: "nats1" },
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
  expect(out + "").toBeDefined();
});

test("compose runs dlm1..3 with replicas 3 against nats1..3, and the Dockerfile builds the CLI", () => {
  const compose = fs.readFileSync(path.join(deploy, "compose.yaml"), "utf8");
  for (const name of ["nats1", "nats2", "nats3", "dlm1", "dlm2", "dlm3"]) expect(compose).toMatch(new RegExp(`^  ${name}:$`, "m"));
  expect(compose.match(/"--replicas", "3"/g)).toHaveLength(3);
  expect(fs.readFileSync(path.join(deploy, "nats.conf"), "utf8")).toMatch(/sync_interval: always/);
  expect(fs.readFileSync(path.join(deploy, "Dockerfile"), "utf8")).toMatch(/ENTRYPOINT \["node", "dist\/src\/cli\/main.js"\]/);
});

test("compose: NATS is healthy only with a current JetStream meta leader, and dlm waits for it and reports /readyz", () => {
  const compose = fs.readFileSync(path.join(deploy, "compose.yaml"), "utf8");
  const anchor = (name: string) => {
    const start = compose.indexOf(`x-${name}: &${name}`);
    expect(start).toBeGreaterThanOrEqual(0);
    const end = compose.indexOf("\n\n", start);
    return compose.slice(start, end === -1 ? undefined : end);
  };
  // Plain /healthz: js-enabled-only (or js-server-only) passes before the
  // meta leader or the streams are ready.
  const nats = anchor("nats");
  expect(nats).toMatch(/healthcheck:\n\s+test: \["CMD", "wget", "-q", "-O", "-", "http:\/\/127\.0\.0\.1:8222\/healthz"\]/);
  expect(fs.readFileSync(path.join(deploy, "nats.conf"), "utf8")).toMatch(/^http: 0\.0\.0\.0:8222$/m);
  const dlm = anchor("dlm");
  for (const server of ["nats1", "nats2", "nats3"]) expect(dlm).toContain(`${server}: { condition: service_healthy }`);
  const probe = /healthcheck:\n\s+test: \["CMD", "node", "-e", "fetch\('http:\/\/127\.0\.0\.1:(\d+)\/readyz'\)/.exec(dlm);
  expect(probe).not.toBeNull();
  // Each node serves its metrics port on every interface of its container, on the port the probe asks.
  const commands = compose.match(/^ {4}command: \["node", .*$/gm) ?? [];
  expect(commands).toHaveLength(3);
  for (const command of commands) {
    expect(command).toContain(`"--metrics-port", "${probe![1]}"`);
    expect(command).toContain(`"--metrics-host", "0.0.0.0"`);
  }
});

test("the runtime image ships the service only: no tests, no benches", () => {
  const dockerfile = fs.readFileSync(path.join(deploy, "Dockerfile"), "utf8");
  expect(dockerfile).not.toMatch(/^COPY (test|bench)\b/m);
  const runtime = dockerfile.slice(dockerfile.lastIndexOf("\nFROM "));
  const fromBuild = runtime.match(/^COPY --from=build .*$/gm) ?? [];
  expect(fromBuild).toEqual(["COPY --from=build /app/dist/src ./dist/src"]);
});
