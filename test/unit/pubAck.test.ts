import { JetStreamApiError } from "@nats-io/jetstream";
import { isWrongLastSequence, parsePubAck } from "../../src/log/logStream";

const bytes = (v: unknown): Uint8Array => new TextEncoder().encode(typeof v === "string" ? v : JSON.stringify(v));

/** What parsePubAck throws for `ack`, or undefined if it does not throw. */
function refusalOf(ack: unknown): unknown {
  try {
    parsePubAck(bytes(ack));
  } catch (e) {
    return e;
  }
  return undefined;
}

describe("parsePubAck (the log's append acknowledgement)", () => {
  test("an acknowledgement gives the stream, the sequence and whether it was a duplicate", () => {
    expect(parsePubAck(bytes({ stream: "DLM", seq: 7 }))).toEqual({ stream: "DLM", seq: 7, duplicate: false });
    expect(parsePubAck(bytes({ stream: "DLM", seq: 7, duplicate: true }))).toEqual({ stream: "DLM", seq: 7, duplicate: true });
  });

  test("a refused expected last sequence is the JetStreamApiError isWrongLastSequence knows", () => {
    const thrown = refusalOf({ error: { code: 400, err_code: 10071, description: "wrong last sequence: 5" } });
    expect(thrown).toBeInstanceOf(JetStreamApiError);
    expect((thrown as JetStreamApiError).code).toBe(10071);
    expect((thrown as JetStreamApiError).message).toBe("wrong last sequence: 5");
    expect(isWrongLastSequence(thrown)).toBe(true);
  });

  test("a refused expected last message id is a wrong last sequence too (nothing was written)", () => {
    const thrown = refusalOf({ error: { code: 400, err_code: 10070, description: "wrong last msg ID: B:2:3" } });
    expect(thrown).toBeInstanceOf(JetStreamApiError);
    expect(isWrongLastSequence(thrown)).toBe(true);
  });

  test("another API error is not taken for a wrong sequence", () => {
    const thrown = refusalOf({ error: { code: 503, err_code: 10077, description: "maximum messages exceeded" } });
    expect(thrown).toBeInstanceOf(JetStreamApiError);
    expect(isWrongLastSequence(thrown)).toBe(false);
  });

  test("an unreadable or incomplete acknowledgement is an error, never a sequence", () => {
    expect(() => parsePubAck(bytes("not json"))).toThrow(/unreadable publish acknowledgement/);
    expect(() => parsePubAck(bytes({ seq: 3 }))).toThrow(/invalid publish acknowledgement/);
    expect(() => parsePubAck(bytes({ stream: "DLM" }))).toThrow(/invalid publish acknowledgement/);
    expect(() => parsePubAck(bytes({ stream: "", seq: 1 }))).toThrow(/invalid publish acknowledgement/);
  });
});
