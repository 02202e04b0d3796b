/**
 * The relay of the bench's floor (benchKit.ts, measureFloor): a responder
 * in a process of its own that, for each request, makes one fsynced
 * JetStream publish and then answers. It is the path a dlm request takes
 * (client -> NATS -> leader -> NATS and fsync -> leader -> NATS -> client)
 * with nothing of dlm in it, so the bench can say how much of a request's
 * time is the path and how much is dlm.
 *
 *   node dist/bench/relayResponder.js <nats urls, comma-separated> <request subject> <stream subject>
 *
 * Prints "ready" once it listens; exits when its stdin closes (the bench
 * ended, however it ended).
 */
import { connect } from "@nats-io/transport-node";
import type { Msg } from "@nats-io/nats-core";
import { jetstream } from "@nats-io/jetstream";
import { errorMessage } from "../src/util/errorMessage";

async function main(): Promise<void> {
  const [urls, requestSubject, streamSubject] = process.argv.slice(2);
  if (!urls || !requestSubject || !streamSubject) throw new Error("usage: relayResponder <urls> <request subject> <stream subject>");
  const nc = await connect({ servers: urls.split(","), noAsyncTraces: true });
  const js = jetstream(nc, { timeout: 5000 });
  nc.subscribe(requestSubject, {
    callback: (_err: Error | null, msg: Msg) => {
      js.publish(streamSubject, msg.data).then(
        () => msg.respond(msg.data),
        () => undefined, // no answer: the bench's request times out and says so
      );
    },
  });
  await nc.flush();
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
  process.stdout.write("ready\n");
}

main().catch((e: unknown) => {
  process.stderr.write(`relayResponder: ${errorMessage(e)}\n`);
  process.exit(1);
});
