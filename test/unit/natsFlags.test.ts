/**
 * The shared NATS connection flags (src/cli/natsFlags.ts): servers,
 * credentials from flags, environment or URL (in that order, never mixed),
 * TLS files, and clear usage errors for conflicts and unreadable files;
 * and what a node adds to them (replica/node.ts).
 */
import * as fs from "fs";
import * as path from "path";
import { nkeys } from "@nats-io/nats-core";
import { parseArgs, UsageError, type CommandSpec } from "../../src/cli/args";
import {
  explainConnectError,
  localServerAuth,
  localServerConnection,
  natsConnectionFromFlags,
  NATS_FLAGS,
  splitUrlCredentials,
} from "../../src/cli/natsFlags";
import { nodeConnectionOptions } from "../../src/replica/node";
import { makeTempDir, removeTempDir } from "../kit/tmp";

const spec: CommandSpec = { usage: "dlm test", summary: "", flags: NATS_FLAGS };

function settings(argv: string[], env: Record<string, string> = {}) {
  const { flags } = parseArgs(spec, argv, env);
  return natsConnectionFromFlags(flags, env);
}

function usageError(argv: string[], env: Record<string, string> = {}): string {
  try {
    settings(argv, env);
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    return (e as Error).message;
  }
  throw new Error(`${JSON.stringify(argv)} was accepted`);
}

let dir: string;
let credsFile: string;
let nkeyFile: string;
beforeAll(() => {
  dir = makeTempDir("dlm-natsflags-");
  const user = nkeys.createUser();
  const seed = new TextDecoder().decode(user.getSeed());
  nkeyFile = path.join(dir, "user.nk");
  fs.writeFileSync(nkeyFile, `${seed}\n`);
  credsFile = path.join(dir, "user.creds");
  fs.writeFileSync(
    credsFile,
    `-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.sig\n------END NATS USER JWT------\n\n` +
      `-----BEGIN USER NKEY SEED-----\n${seed}\n------END USER NKEY SEED------\n`,
  );
});
afterAll(async () => {
  await removeTempDir(dir);
});

describe("servers", () => {
  test("default, flag, alias and NATS_URL, flag first", () => {
    expect(settings([]).servers).toEqual(["nats://127.0.0.1:4222"]);
    expect(settings(["--server", "nats://a:1, nats://b:2"]).servers).toEqual(["nats://a:1", "nats://b:2"]);
    expect(settings(["--nats", "nats://c:3"]).servers).toEqual(["nats://c:3"]);
    expect(settings([], { NATS_URL: "nats://env:4" }).servers).toEqual(["nats://env:4"]);
    expect(settings(["--server", "nats://flag:5"], { NATS_URL: "nats://env:4" }).servers).toEqual(["nats://flag:5"]);
    expect(usageError(["--server", " , "])).toMatch(/at least one URL/);
  });

  test("a tls:// URL asks for TLS", () => {
    expect(settings(["--server", "tls://a:1"]).options.tls).toEqual({});
  });
});

describe("credentials", () => {
  test("user and password from flags", () => {
    const s = settings(["--user", "alice", "--password", "secret"]);
    expect(s.options).toEqual({ user: "alice", pass: "secret" });
    expect(s.auth).toBe('user "alice"');
  });

  test("a token; a lone user is a token, as in the nats CLI", () => {
    expect(settings(["--token", "t0k"]).options).toEqual({ token: "t0k" });
    expect(settings(["--user", "t0k"]).options).toEqual({ token: "t0k" });
  });

  test("from the environment when no credential flag is given", () => {
    expect(settings([], { NATS_USER: "bob", NATS_PASSWORD: "pw" }).options).toEqual({ user: "bob", pass: "pw" });
    expect(settings([], { NATS_TOKEN: "tt" }).options).toEqual({ token: "tt" });
    expect(typeof settings([], { NATS_CREDS: credsFile }).options.authenticator).toBe("function");
  });

  test("credential flags replace the environment's credentials as a whole", () => {
    // NATS_PASSWORD must not be paired with --token (or with another --user).
    expect(settings(["--token", "t"], { NATS_USER: "bob", NATS_PASSWORD: "pw" }).options).toEqual({ token: "t" });
    expect(settings(["--user", "carol", "--password", "x"], { NATS_CREDS: credsFile }).options).toEqual({ user: "carol", pass: "x" });
  });

  test("from the URL when neither flags nor environment name any; the URL loses its credentials", () => {
    const s = settings(["--server", "nats://u%40x:p%3Aw@h:4222,nats://u%40x:p%3Aw@h2:4222"]);
    expect(s.servers).toEqual(["nats://h:4222", "nats://h2:4222"]);
    expect(s.options).toEqual({ user: "u@x", pass: "p:w" });
    expect(settings(["--server", "nats://tok@h:4222"]).options).toEqual({ token: "tok" });
    expect(settings(["--server", "nats://u:p@h:4222", "--token", "t"]).options).toEqual({ token: "t" });
    expect(settings(["--server", "nats://u:p@h:4222"]).servers).toEqual(["nats://h:4222"]);
    expect(usageError(["--server", "nats://a:b@h:1,nats://c:d@h:2"])).toMatch(/different credentials/);
  });

  test("splitUrlCredentials leaves a URL without credentials alone", () => {
    expect(splitUrlCredentials("nats://h:4222")).toEqual({ url: "nats://h:4222" });
    expect(splitUrlCredentials("h:4222")).toEqual({ url: "h:4222" });
    expect(splitUrlCredentials("u:p@h")).toEqual({ url: "h", user: "u", password: "p" });
  });

  test("creds and nkey files become authenticators", () => {
    expect(typeof settings(["--creds", credsFile]).options.authenticator).toBe("function");
    const s = settings(["--nkey", nkeyFile]);
    expect(typeof s.options.authenticator).toBe("function");
    expect(s.auth).toBe(`nkey file ${nkeyFile}`);
  });

  test("conflicting credentials are usage errors that name what was given", () => {
    expect(usageError(["--token", "t", "--user", "u"])).toMatch(/one kind of NATS credentials.*--user, --token|--token, --user/);
    expect(usageError(["--creds", credsFile, "--nkey", nkeyFile])).toMatch(/one kind of NATS credentials/);
    expect(usageError(["--password", "p"])).toMatch(/--password needs --user/);
    expect(usageError([], { NATS_TOKEN: "t", NATS_USER: "u" })).toMatch(/NATS_USER, .*NATS_TOKEN|NATS_TOKEN, .*NATS_USER/);
  });

  test("unreadable or wrong files are usage errors naming the flag and the file", () => {
    expect(usageError(["--creds", path.join(dir, "missing.creds")])).toMatch(/cannot read --creds file ".*missing.creds": ENOENT/);
    expect(usageError(["--creds", nkeyFile])).toMatch(/is not a NATS credentials file/);
    expect(usageError(["--nkey", credsFile.replace("creds", "nope")])).toMatch(/cannot read --nkey file/);
    fs.writeFileSync(path.join(dir, "junk"), "not a seed\n");
    expect(usageError(["--nkey", path.join(dir, "junk")])).toMatch(/holds no user nkey seed/);
  });
});

describe("TLS", () => {
  test("CA, client certificate and key, handshake first", () => {
    const file = (n: string) => {
      const p = path.join(dir, n);
      fs.writeFileSync(p, "pem");
      return p;
    };
    const [ca, cert, key] = [file("ca.pem"), file("c.pem"), file("k.pem")];
    expect(settings(["--tlsca", ca]).options.tls).toEqual({ caFile: ca });
    expect(settings(["--tlsca", ca, "--tlscert", cert, "--tlskey", key, "--tlsfirst"]).options.tls).toEqual({
      caFile: ca,
      certFile: cert,
      keyFile: key,
      handshakeFirst: true,
    });
    expect(settings([], { NATS_CA: ca, NATS_CERT: cert, NATS_KEY: key }).options.tls).toEqual({ caFile: ca, certFile: cert, keyFile: key });
    expect(settings([]).options.tls).toBeUndefined();
    expect(usageError(["--tlscert", cert])).toMatch(/--tlscert and --tlskey go together/);
    expect(usageError(["--tlsca", path.join(dir, "none.pem")])).toMatch(/cannot read --tlsca/);
  });
});

describe("connect errors", () => {
  test("refused credentials and unreachable servers are explained, with exit code 4", () => {
    const auth = Object.assign(new Error("Authorization Violation"), { name: "AuthorizationError" });
    const refused = explainConnectError(auth, { servers: ["nats://h:1"], auth: 'user "x"' });
    expect(refused.message).toMatch(/NATS at nats:\/\/h:1 refused the credentials \(user "x"\): Authorization Violation/);
    expect(refused.exitCode).toBe(4);
    const down = explainConnectError(Object.assign(new Error("connection refused"), { name: "ConnectionError" }), { servers: ["nats://h:1"], auth: "" });
    expect(down.message).toMatch(/cannot connect to NATS at nats:\/\/h:1: connection refused/);
  });

  test("dlm up's connection to its own servers names what it used and the flags that set it, not flags dlm up lacks", () => {
    const refusal = Object.assign(new Error("Authorization Violation"), { name: "AuthorizationError" });
    const explain = (flags: Record<string, string>) =>
      explainConnectError(refusal, localServerConnection(localServerAuth(flags), ["nats://127.0.0.1:4222"])).message;
    expect(explain({})).toBe("NATS at nats://127.0.0.1:4222 refused the credentials (no credentials): Authorization Violation. Check --user/--password or --token.");
    expect(explain({ token: "t0k" })).toMatch(/\(token\): .* Check --user\/--password or --token\.$/);
    expect(explain({ user: "alice", password: "pw" })).toMatch(/\(user "alice"\)/);
    expect(localServerConnection(localServerAuth({ user: "alice", password: "pw" }), ["nats://h:1"]).options).toEqual({ user: "alice", pass: "pw" });
  });
});

describe("a node's NATS connection options", () => {
  test("keep the operator's credentials and inbox prefix, and always reconnect forever without async traces", () => {
    const options = nodeConnectionOptions({
      nodeId: "n2",
      servers: ["nats://a:4222", "nats://b:4222"],
      nats: { user: "dlm", pass: "pw", inboxPrefix: "_INBOX_dlm", noAsyncTraces: false, maxReconnectAttempts: 3 },
    });
    expect(options).toEqual({
      user: "dlm",
      pass: "pw",
      inboxPrefix: "_INBOX_dlm",
      servers: ["nats://a:4222", "nats://b:4222"],
      name: "dlm-node-n2",
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      noAsyncTraces: true,
    });
  });
});
