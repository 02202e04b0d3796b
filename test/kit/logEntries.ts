/**
 * The log as the nodes read it: every entry from `fromSeq` to the stream's
 * last sequence, decoded, straight from the JetStream stream. `nc` needs
 * the right to read the log (a node user, or no authorization).
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { decodeEntry } from "../../src/coordinator/entries";
import { LogStream } from "../../src/log/logStream";
import { names } from "../../src/protocol/subjects";
import type { LogEntry } from "../../src/state";

export async function readLogEntries(nc: NatsConnection, replicas: number, fromSeq = 1): Promise<Array<{ seq: number; entry: LogEntry }>> {
  const n = names();
  const log = await LogStream.open(nc, { streamName: n.streamName, subject: n.logSubject, replicas });
  const last = await log.lastSeq();
  const out: Array<{ seq: number; entry: LogEntry }> = [];
  await log.read(fromSeq, last, (seq, data) => {
    out.push({ seq, entry: decodeEntry(seq, data) });
  });
  return out;
}
