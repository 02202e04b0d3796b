/**
 * Certificates for TLS tests, made with the `openssl` binary at test time: a
 * CA, a server certificate for 127.0.0.1/localhost signed by it, and a
 * client certificate signed by it. Nothing is checked in, nothing expires
 * between runs.
 */
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";

export interface TestCertificates {
  dir: string;
  caFile: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

function openssl(args: string[], cwd: string): void {
  try {
    execFileSync("openssl", args, { cwd, stdio: ["ignore", "pipe", "pipe"], timeout: 30_000 });
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string };
    throw new Error(`openssl ${args[0]} failed: ${err.stderr?.toString() ?? err.message}`);
  }
}

/** Writes a CA and server and client certificates signed by it into `dir` (which must exist). */
export function makeTestCertificates(dir: string): TestCertificates {
  const p = (name: string) => path.join(dir, name);
  const days = "2";
  openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", days, "-subj", "/CN=dlm test CA"], dir);
  const sign = (name: string, subject: string, ext: string) => {
    fs.writeFileSync(p(`${name}.ext`), ext);
    openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", `${name}-key.pem`, "-out", `${name}.csr`, "-subj", subject], dir);
    openssl(
      ["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial", "-out", `${name}.pem`, "-days", days, "-extfile", `${name}.ext`],
      dir,
    );
  };
  sign("server", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  sign("client", "/CN=dlm test client", "extendedKeyUsage=clientAuth\n");
  return {
    dir,
    caFile: p("ca.pem"),
    serverCert: p("server.pem"),
    serverKey: p("server-key.pem"),
    clientCert: p("client.pem"),
    clientKey: p("client-key.pem"),
  };
}
