/**
 * Which subject a request goes to, and which requests a leader may act on
 * from which subject: a session only from its own namespace's subject, so
 * a client user (allowed to publish on that one subject) cannot act under
 * another namespace's session.
 */
import { clientNamespace, namespaceMismatch, names, requestSubjectFor } from "../../src/protocol/subjects";

const n = names();

describe("per-namespace request subjects", () => {
  test("a client id's namespace is what comes before its dot", () => {
    expect(clientNamespace("orders.V1StGXR8_Z5jdHi6B-myT")).toBe("orders");
    expect(clientNamespace("V1StGXR8_Z5jdHi6B-myT")).toBeUndefined();
  });

  test("a session's requests go to its namespace's subject; without a namespace, or without a session, to the plain one", () => {
    expect(requestSubjectFor(n, "orders.V1StGXR8_Z5jdHi6B-myT")).toBe("dlm.req.orders");
    expect(requestSubjectFor(n, "V1StGXR8_Z5jdHi6B-myT")).toBe("dlm.req");
    expect(requestSubjectFor(n, undefined)).toBe("dlm.req");
    expect(requestSubjectFor(names("acme"), "orders.abcdefgh")).toBe("acme.req.orders");
    expect(n.namespaceRequestWildcard).toBe("dlm.req.*");
  });

  test("a leader acts on a session only from its own namespace's subject", () => {
    expect(namespaceMismatch(n, "dlm.req.orders", "orders.abcdefgh")).toBeUndefined();
    expect(namespaceMismatch(n, "dlm.req", "abcdefgh")).toBeUndefined();
    // Another namespace's session, from a namespace's subject: refused.
    expect(namespaceMismatch(n, "dlm.req.orders", "billing.abcdefgh")).toBe(
      "a request on dlm.req.orders may only name a session of namespace orders, not billing.abcdefgh",
    );
    // An un-namespaced session from a namespace's subject: refused too.
    expect(namespaceMismatch(n, "dlm.req.orders", "abcdefgh")).toMatch(/may only name a session of namespace orders/);
    // A namespaced session on the plain subject (an old client, or a user allowed dlm.req): refused, with the subject to use.
    expect(namespaceMismatch(n, "dlm.req", "orders.abcdefgh")).toMatch(/^client orders\.abcdefgh is in namespace orders: its requests go to dlm\.req\.orders, not dlm\.req/);
  });

  test("requests that name no session (status, read) are served on any of the subjects", () => {
    expect(namespaceMismatch(n, "dlm.req", undefined)).toBeUndefined();
    expect(namespaceMismatch(n, "dlm.req.orders", undefined)).toBeUndefined();
  });
});
