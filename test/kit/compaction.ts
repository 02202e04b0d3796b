/**
 * What compaction tests look at and break: the log stream's extent, the
 * stored snapshots, and a way to corrupt one stored snapshot object in
 * place (one chunk's bytes changed, same size and chunk count), as a disk
 * or a bug might.
 */
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { LOG_ID_METADATA_KEY, type LogExtent } from "../../src/log/logStream";
import { SnapshotBucket, type StoredSnapshotInfo } from "../../src/log/snapshotBucket";
import { names } from "../../src/protocol/subjects";

/** The log stream's first and last sequence, entries and bytes. */
export async function logExtent(nc: NatsConnection): Promise<LogExtent> {
  const jsm = await jetstreamManager(nc);
  const s = (await jsm.streams.info(names().streamName)).state;
  return { firstSeq: s.first_seq, lastSeq: s.last_seq, messages: s.messages, bytes: s.bytes };
}

/** The complete stored snapshots of the cluster's log, newest first. */
export async function storedSnapshots(nc: NatsConnection): Promise<StoredSnapshotInfo[]> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(names().streamName);
  const logId = info.config.metadata?.[LOG_ID_METADATA_KEY] ?? `created:${info.created}`;
  const bucket = await SnapshotBucket.open(nc, { bucket: names().snapshotBucket, replicas: info.config.num_replicas });
  return bucket.list(logId);
}

/**
 * Replaces the first chunk of a stored snapshot object with the same bytes,
 * one bit flipped: the object keeps its size, chunk count and metadata, but
 * its chunks now arrive in another order with one byte changed, so only a
 * reader that checks the digest notices.
 */
export async function corruptSnapshot(nc: NatsConnection, snap: StoredSnapshotInfo): Promise<void> {
  const bucketName = names().snapshotBucket;
  const bucket = await SnapshotBucket.open(nc, { bucket: bucketName, replicas: 1 });
  const info = await bucket.objectInfo(snap.name);
  if (!info) throw new Error(`no object ${snap.name}`);
  const jsm = await jetstreamManager(nc);
  const subject = `$O.${bucketName}.C.${info.nuid}`;
  const first = await jsm.direct.getMessage(bucket.streamName, { next_by_subj: subject, seq: 1 });
  if (!first) throw new Error(`object ${snap.name} has no chunks`);
  const bytes = Buffer.from(first.data);
  bytes[bytes.length >> 1] ^= 0x40;
  await jsm.streams.deleteMessage(bucket.streamName, first.seq);
  await jetstream(nc).publish(subject, bytes);
}
