/**
 * deploy/ cannot be run here (no Docker engine), so check what can be
 * checked: nats-server accepts the cluster config, and the compose file
 * runs three dlm nodes against three NATS servers with replicas 3.
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
