/**
 * NATS operator mode (decentralised JWT auth) for tests, without `nsc`: an
 * operator, a system account and one account with JetStream, and users
 * with permissions, their JWTs signed here with nkeys, their creds files
 * written to a directory. The server takes `serverConfig` (operator JWT and
 * a memory resolver preloaded with the accounts).
 */
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { nkeys } from "@nats-io/nats-core";
import type { NatsPermissions } from "../../src/protocol/permissions";

type KeyPair = ReturnType<typeof nkeys.createUser>;

function b64url(data: string | Uint8Array): string {
  return Buffer.from(data).toString("base64url");
}

/** A NATS JWT: header.claims.signature, ed25519 by the issuer's nkey. */
function signJwt(claims: Record<string, unknown>, issuer: KeyPair): string {
  const header = b64url(JSON.stringify({ typ: "JWT", alg: "ed25519-nkey" }));
  const body = { jti: crypto.randomBytes(16).toString("hex").toUpperCase(), iat: Math.floor(Date.now() / 1000), iss: issuer.getPublicKey(), ...claims };
  const payload = b64url(JSON.stringify(body));
  return `${header}.${payload}.${b64url(issuer.sign(new TextEncoder().encode(`${header}.${payload}`)))}`;
}

const UNLIMITED = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };

export interface OperatorSetup {
  /** Lines for the server configuration. */
  serverConfig: string;
  /** Writes a creds file for a new user of the account with these permissions (none: everything). */
  addUser(name: string, permissions?: NatsPermissions): string;
}

export function makeOperatorSetup(dir: string): OperatorSetup {
  const operator = nkeys.createOperator();
  const system = nkeys.createAccount();
  const account = nkeys.createAccount();
  const opJwt = signJwt({ sub: operator.getPublicKey(), name: "test-operator", nats: { type: "operator", version: 2, system_account: system.getPublicKey() } }, operator);
  const sysJwt = signJwt({ sub: system.getPublicKey(), name: "SYS", nats: { type: "account", version: 2, limits: UNLIMITED } }, operator);
  const accJwt = signJwt(
    {
      sub: account.getPublicKey(),
      name: "dlm",
      nats: { type: "account", version: 2, limits: { ...UNLIMITED, mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 } },
    },
    operator,
  );
  const serverConfig = [
    `operator: "${opJwt}"`,
    `system_account: "${system.getPublicKey()}"`,
    "resolver: MEMORY",
    "resolver_preload: {",
    `  ${system.getPublicKey()}: "${sysJwt}"`,
    `  ${account.getPublicKey()}: "${accJwt}"`,
    "}",
  ].join("\n");
  return {
    serverConfig,
    addUser(name: string, permissions?: NatsPermissions): string {
      const user = nkeys.createUser();
      const perms = permissions
        ? {
            pub: { allow: permissions.publish.allow },
            sub: { allow: permissions.subscribe.allow },
            ...(permissions.allow_responses ? { resp: { max: 1, ttl: 0 } } : {}),
          }
        : { pub: {}, sub: {} };
      const userJwt = signJwt({ sub: user.getPublicKey(), name, nats: { type: "user", version: 2, subs: -1, data: -1, payload: -1, ...perms } }, account);
      const file = path.join(dir, `${name}.creds`);
      const seed = new TextDecoder().decode(user.getSeed());
      fs.writeFileSync(
        file,
        `-----BEGIN NATS USER JWT-----\n${userJwt}\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n${seed}\n------END USER NKEY SEED------\n`,
        { mode: 0o600 },
      );
      return file;
    },
  };
}
