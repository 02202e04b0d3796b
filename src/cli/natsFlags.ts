/**
 * The NATS connection flags every dlm command that talks to NATS shares,
 * named as in the official `nats` CLI, and their translation into
 * `@nats-io/transport-node` connection options.
 *
 * Precedence: a flag beats its environment variable, which beats the
 * default. Credentials are chosen as a whole, never mixed: if any
 * credential flag is given (--user, --password, --token, --creds, --nkey)
 * only those count; otherwise the credential variables (NATS_USER,
 * NATS_PASSWORD, NATS_TOKEN, NATS_CREDS, NATS_NKEY); otherwise credentials
 * embedded in the server URL (`nats://user:pass@host:4222`,
 * `nats://token@host:4222`). Two kinds of credentials from the same source
 * (say --token with --user) are a usage error, as is a file that cannot be
 * read or does not hold what it should.
 */
import * as fs from "fs";
import {
  credsAuthenticator,
  nkeyAuthenticator,
  type Authenticator,
  type ConnectionOptions,
  type NatsConnection,
  type TlsOptions,
} from "@nats-io/nats-core";
import { connect as natsConnect } from "@nats-io/transport-node";
import type { NatsAuthorizationConfig } from "../local/natsServer";
import { splitList, UsageError, type FlagSpec, type ParsedFlags } from "./args";

export const DEFAULT_NATS_URL = "nats://127.0.0.1:4222";

/** The shared flags; each command spreads them into its spec. */
export const NATS_FLAGS: FlagSpec[] = [
  {
    name: "server",
    aliases: ["nats"],
    kind: "string",
    env: "NATS_URL",
    default: DEFAULT_NATS_URL,
    help: "NATS server URLs, comma-separated; nats://user:pass@host or nats://token@host authenticates, tls:// requires TLS",
  },
  { name: "user", kind: "string", help: "NATS user; alone (without --password) it is sent as a token, as in the nats CLI [env NATS_USER]" },
  { name: "password", kind: "string", help: "NATS password for --user [env NATS_PASSWORD]" },
  { name: "token", kind: "string", help: "NATS authentication token [env NATS_TOKEN]" },
  { name: "creds", kind: "string", help: "NATS user credentials file (JWT and nkey seed, operator mode) [env NATS_CREDS]" },
  { name: "nkey", kind: "string", help: "file holding a NATS user nkey seed (SU...) [env NATS_NKEY]" },
  { name: "tlscert", kind: "string", env: "NATS_CERT", help: "TLS client certificate file (PEM)" },
  { name: "tlskey", kind: "string", env: "NATS_KEY", help: "TLS client private key file (PEM)" },
  { name: "tlsca", kind: "string", env: "NATS_CA", help: "CA certificate file (PEM) to verify the server with" },
  { name: "tlsfirst", kind: "bool", env: "NATS_TLSFIRST", help: "TLS handshake before the NATS protocol (server option handshake_first)" },
];

/** The connection options dlm takes from flags: where to connect, who to be, and TLS. */
export interface NatsConnectionSettings {
  servers: string[];
  options: Pick<ConnectionOptions, "user" | "pass" | "token" | "authenticator" | "tls">;
  /** How it authenticates, for messages: "user node", "token", "creds file /x", "no credentials". */
  auth: string;
  /**
   * Where the credentials come from, for the advice when they are refused
   * (default: every credentials flag and variable of NATS_FLAGS).
   */
  credentialSources?: string;
}

type Env = Record<string, string | undefined>;

interface Credentials {
  user?: string;
  password?: string;
  token?: string;
  creds?: string;
  nkey?: string;
}

const CREDENTIAL_FLAGS = ["user", "password", "token", "creds", "nkey"] as const;
const CREDENTIAL_ENV: Record<(typeof CREDENTIAL_FLAGS)[number], string> = {
  user: "NATS_USER",
  password: "NATS_PASSWORD",
  token: "NATS_TOKEN",
  creds: "NATS_CREDS",
  nkey: "NATS_NKEY",
};

function readFile(what: string, file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new UsageError(`cannot read ${what} ${JSON.stringify(file)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** Splits `nats://user:pass@host:4222` into the URL without credentials and the credentials. */
export function splitUrlCredentials(url: string): { url: string; user?: string; password?: string; token?: string } {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)?([^@/]*)@(.*)$/i.exec(url.trim());
  if (!m) return { url: url.trim() };
  const scheme = m[1] ?? "";
  const userinfo = m[2];
  const rest = m[3];
  const colon = userinfo.indexOf(":");
  const dec = (s: string) => {
    try {
      return decodeURIComponent(s);
    } catch {
      throw new UsageError(`bad percent-encoding in the credentials of a server URL`);
    }
  };
  if (colon === -1) return { url: scheme + rest, token: dec(userinfo) };
  return { url: scheme + rest, user: dec(userinfo.slice(0, colon)), password: dec(userinfo.slice(colon + 1)) };
}

/** Which source names credentials (flags first, then the environment), and what it names. */
function chooseCredentials(flags: ParsedFlags, env: Env): { creds: Credentials; source: "flags" | "environment" | "none" } {
  const fromFlags: Credentials = {};
  for (const k of CREDENTIAL_FLAGS) if (typeof flags[k] === "string") fromFlags[k] = flags[k] as string;
  if (Object.keys(fromFlags).length > 0) return { creds: fromFlags, source: "flags" };
  const fromEnv: Credentials = {};
  for (const k of CREDENTIAL_FLAGS) {
    const v = env[CREDENTIAL_ENV[k]];
    if (v !== undefined && v !== "") fromEnv[k] = v;
  }
  if (Object.keys(fromEnv).length > 0) return { creds: fromEnv, source: "environment" };
  return { creds: {}, source: "none" };
}

function authenticate(c: Credentials, name: (k: keyof Credentials) => string): Pick<NatsConnectionSettings, "options" | "auth"> {
  const kinds = [
    c.user !== undefined || c.password !== undefined ? "user" : undefined,
    c.token !== undefined ? "token" : undefined,
    c.creds !== undefined ? "creds" : undefined,
    c.nkey !== undefined ? "nkey" : undefined,
  ].filter((k): k is string => k !== undefined);
  if (kinds.length > 1) {
    const given = (Object.keys(c) as (keyof Credentials)[]).map(name).join(", ");
    throw new UsageError(`give one kind of NATS credentials (user and password, token, creds or nkey), not several: ${given}`);
  }
  if (c.password !== undefined && c.user === undefined) throw new UsageError(`${name("password")} needs ${name("user")}`);
  if (c.user !== undefined && c.password === undefined) {
    // The nats CLI sends a lone user name as a token ("Username or Token").
    return { options: { token: c.user }, auth: "token" };
  }
  if (c.user !== undefined) return { options: { user: c.user, pass: c.password }, auth: `user ${JSON.stringify(c.user)}` };
  if (c.token !== undefined) return { options: { token: c.token }, auth: "token" };
  if (c.creds !== undefined) {
    const text = readFile(`${name("creds")} file`, c.creds);
    const s = text.toString("utf8");
    if (!/BEGIN NATS USER JWT/.test(s) || !/BEGIN USER NKEY SEED/.test(s)) {
      throw new UsageError(`${name("creds")} file ${JSON.stringify(c.creds)} is not a NATS credentials file (no user JWT and nkey seed)`);
    }
    const authenticator: Authenticator = credsAuthenticator(new Uint8Array(text));
    return { options: { authenticator }, auth: `creds file ${c.creds}` };
  }
  if (c.nkey !== undefined) {
    const text = readFile(`${name("nkey")} file`, c.nkey).toString("utf8");
    const seed = text.split(/\s+/).find((w) => /^SU[A-Z2-7]{50,}$/.test(w));
    if (!seed) throw new UsageError(`${name("nkey")} file ${JSON.stringify(c.nkey)} holds no user nkey seed (a word starting with SU)`);
    const authenticator: Authenticator = nkeyAuthenticator(new TextEncoder().encode(seed));
    return { options: { authenticator }, auth: `nkey file ${c.nkey}` };
  }
  return { options: {}, auth: "no credentials" };
}

function tlsOptions(flags: ParsedFlags, anyTlsUrl: boolean): TlsOptions | undefined {
  const cert = typeof flags.tlscert === "string" ? flags.tlscert : undefined;
  const key = typeof flags.tlskey === "string" ? flags.tlskey : undefined;
  const ca = typeof flags.tlsca === "string" ? flags.tlsca : undefined;
  const first = flags.tlsfirst === true;
  if ((cert === undefined) !== (key === undefined)) throw new UsageError("--tlscert and --tlskey go together (a client certificate needs its key)");
  if (cert === undefined && ca === undefined && !first && !anyTlsUrl) return undefined;
  // Read them now so that a wrong path is a usage error naming the flag, not
  // a TLS failure at connect time.
  for (const [flag, file] of [
    ["--tlscert", cert],
    ["--tlskey", key],
    ["--tlsca", ca],
  ] as const) {
    if (file !== undefined) readFile(flag, file);
  }
  const tls: TlsOptions = {};
  if (cert !== undefined) tls.certFile = cert;
  if (key !== undefined) tls.keyFile = key;
  if (ca !== undefined) tls.caFile = ca;
  if (first) tls.handshakeFirst = true;
  return tls;
}

/**
 * The connection settings named by the shared flags (parsed with
 * `NATS_FLAGS` in the spec) and the environment.
 */
export function natsConnectionFromFlags(flags: ParsedFlags, env: Env = process.env): NatsConnectionSettings {
  const raw = typeof flags.server === "string" ? splitList(flags.server) : [DEFAULT_NATS_URL];
  if (raw.length === 0) throw new UsageError("--server needs at least one URL");
  const urls = raw.map(splitUrlCredentials);
  const servers = urls.map((u) => u.url);
  const { creds, source } = chooseCredentials(flags, env);
  let auth: Pick<NatsConnectionSettings, "options" | "auth">;
  if (source === "flags") {
    auth = authenticate(creds, (k) => `--${k}`);
  } else if (source === "environment") {
    auth = authenticate(creds, (k) => CREDENTIAL_ENV[k]);
  } else {
    const inUrl = urls.filter((u) => u.user !== undefined || u.token !== undefined);
    const distinct = new Set(inUrl.map((u) => JSON.stringify([u.user, u.password, u.token])));
    if (distinct.size > 1) throw new UsageError("the server URLs carry different credentials; NATS uses one set per connection");
    const u = inUrl[0];
    auth = u ? authenticate({ user: u.user, password: u.password, token: u.token }, (k) => `the URL's ${k}`) : { options: {}, auth: "no credentials" };
  }
  const tls = tlsOptions(flags, servers.some((s) => /^tls:\/\//i.test(s)));
  return { servers, options: { ...auth.options, ...(tls ? { tls } : {}) }, auth: auth.auth };
}

const ALL_CREDENTIAL_SOURCES = "--user/--password, --token, --creds or --nkey (or NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_CREDS, NATS_NKEY)";

/** A NATS connection could not be opened: unreachable, refused credentials, TLS. Exit code 4. */
export class NatsConnectError extends Error {
  override name = "NatsConnectError";
  /** The `dlm` command exits with this code (documented in docs/operations.md). */
  readonly exitCode = 4;
}

/**
 * Why a connect failed, in words an operator can act on. NATS errors are
 * recognised by name and message, not by class, so this also explains
 * errors from another copy of the @nats-io packages.
 */
export function explainConnectError(err: unknown, settings: Pick<NatsConnectionSettings, "servers" | "auth" | "credentialSources">): NatsConnectError {
  const e = err as { name?: string; message?: string; code?: string };
  const where = settings.servers.join(",");
  const message = e?.message ?? String(err);
  if (e?.name === "AuthorizationError" || e?.name === "UserAuthenticationExpiredError" || /authorization violation|authentication/i.test(message)) {
    return new NatsConnectError(
      `NATS at ${where} refused the credentials (${settings.auth}): ${message}. Check ${settings.credentialSources ?? ALL_CREDENTIAL_SOURCES}.`,
      { cause: err },
    );
  }
  if (/tls|certificate|ssl|self.signed/i.test(`${message} ${e?.code ?? ""}`)) {
    return new NatsConnectError(`TLS with NATS at ${where} failed: ${message}. Check --tlsca, --tlscert, --tlskey and --tlsfirst.`, { cause: err });
  }
  return new NatsConnectError(`cannot connect to NATS at ${where}: ${message}`, { cause: err });
}

/** Is this the failure of opening a NATS connection (unreachable, credentials refused, TLS), judged by name and message? */
export function isConnectFailure(err: unknown): boolean {
  const e = err as { name?: string; message?: string } | null;
  return (
    ["AuthorizationError", "UserAuthenticationExpiredError", "ConnectionError"].includes(e?.name ?? "") ||
    /ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|certificate|SSL|TLS/.test(e?.message ?? "")
  );
}

/** Opens a NATS connection with these settings plus `extra` (name, reconnect settings, inboxPrefix). */
export async function connectNats(settings: NatsConnectionSettings, extra: ConnectionOptions = {}): Promise<NatsConnection> {
  try {
    return await natsConnect({ ...extra, ...settings.options, servers: settings.servers });
  } catch (err) {
    throw explainConnectError(err, settings);
  }
}

// ---------------------------------------------------------------------------
// Servers dlm starts itself (dlm up, the benches)

/** Credentials for a nats-server dlm starts itself: it will require them, and everything dlm runs against it uses them. */
export const LOCAL_AUTH_FLAGS: FlagSpec[] = [
  { name: "user", kind: "string", help: "make the local nats-server require this user (with --password); nodes and clients use it" },
  { name: "password", kind: "string", help: "the password for --user" },
  { name: "token", kind: "string", help: "make the local nats-server require this token instead" },
];

/** NATS_* variables child nodes must not inherit: they are told how to reach the server dlm started. */
const INHERITED_NATS_ENV = ["NATS_URL", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CREDS", "NATS_NKEY", "NATS_CERT", "NATS_KEY", "NATS_CA", "NATS_TLSFIRST"];

export interface LocalServerAuth {
  /** The server's authorization block, or undefined (anyone may connect). */
  server?: NatsAuthorizationConfig;
  /** Connection options for clients and the command's own connection. */
  client: { user?: string; pass?: string; token?: string };
  /** Environment for child nodes: the credentials (not argv, which `ps` shows), and no other NATS_* variable. */
  env: Record<string, string | undefined>;
  /** What to append to a printed command line. */
  hint: string;
}

/**
 * Credentials for a local nats-server from LOCAL_AUTH_FLAGS: one user with
 * a password, or a token, or none. One identity with every right, since all
 * of it runs on this machine; production deployments give nodes and clients
 * their own users (docs/operations.md, "Security").
 */
export function localServerAuth(flags: ParsedFlags): LocalServerAuth {
  const user = typeof flags.user === "string" ? flags.user : undefined;
  const password = typeof flags.password === "string" ? flags.password : undefined;
  const token = typeof flags.token === "string" ? flags.token : undefined;
  const env: Record<string, string | undefined> = Object.fromEntries(INHERITED_NATS_ENV.map((k) => [k, undefined]));
  if (token !== undefined && (user !== undefined || password !== undefined)) throw new UsageError("give --token or --user/--password, not both");
  if ((user === undefined) !== (password === undefined)) throw new UsageError("--user and --password go together");
  if (token !== undefined) {
    if (token === "") throw new UsageError("--token must not be empty");
    return { server: { token }, client: { token }, env: { ...env, NATS_TOKEN: token }, hint: " --token <token>" };
  }
  if (user !== undefined && password !== undefined) {
    if (user === "" || password === "") throw new UsageError("--user and --password must not be empty");
    return {
      server: { user, password },
      client: { user, pass: password },
      env: { ...env, NATS_USER: user, NATS_PASSWORD: password },
      hint: ` --user ${user} --password <password>`,
    };
  }
  return { client: {}, env, hint: "" };
}

/**
 * How `dlm up` connects to the servers it started, as connectNats takes it:
 * so that a server that cannot be reached or refuses the credentials ends
 * `dlm up` with exit code 4 and one sentence, as it ends the other commands.
 */
export function localServerConnection(auth: LocalServerAuth, servers: string[]): NatsConnectionSettings {
  const { user, pass, token } = auth.client;
  return {
    servers,
    options: auth.client,
    auth: token !== undefined ? "token" : user !== undefined && pass !== undefined ? `user ${JSON.stringify(user)}` : "no credentials",
    credentialSources: "--user/--password or --token",
  };
}
