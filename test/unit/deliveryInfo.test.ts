/**
 * The log poller reads an entry's stream sequence from its JetStream reply
 * subject; a misread would hand entries over under the wrong sequence.
 */
import { deliveryInfo } from "../../src/log/logPoller";

test("the old form: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>", () => {
  expect(deliveryInfo("$JS.ACK.DLM_LOG.abc123.1.4711.17.1796534712026272547.9")).toEqual({ streamSeq: 4711, pending: 9 });
});

test("the new form, with domain and account hash after ACK and a random token at the end", () => {
  expect(deliveryInfo("$JS.ACK.hub.ACCHASH.DLM_LOG.abc123.1.4711.17.1796534712026272547.0.xyz")).toEqual({ streamSeq: 4711, pending: 0 });
  expect(deliveryInfo("$JS.ACK._.ACCHASH.DLM_LOG.abc123.2.5.5.1796534712026272547.3")).toEqual({ streamSeq: 5, pending: 3 });
});

test("anything else is refused rather than guessed", () => {
  expect(() => deliveryInfo("")).toThrow(/not a JetStream delivery/);
  expect(() => deliveryInfo("_INBOX.abc.1")).toThrow(/not a JetStream delivery/);
  expect(() => deliveryInfo("$JS.ACK.S.C.1.2.3")).toThrow(/not a JetStream delivery/);
  expect(() => deliveryInfo("$JS.ACK.S.C.1.x.3.4.5")).toThrow(/bad JetStream delivery info/);
  expect(() => deliveryInfo("$JS.ACK.S.C.1.0.3.4.5")).toThrow(/bad JetStream delivery info/);
});
