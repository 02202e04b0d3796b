/**
 * The log-first probe of the bench's floor (benchKit.ts, measureLogFirst):
 * a process that follows a stream with an ordered consumer and, for each
 * message, answers the subject named in its `Bench-Reply` header.
 *
 * It is the path of a design dlm does not take: the client publishes its
 * request straight into the log (client -> NATS and fsync -> follower ->
 * NATS -> client), and a leader reading the log answers. DESIGN.md's
 * coordinator validates a request and appends it itself, with the log
 * tail's compare-and-swap that fences a stale leader off, so a request
 * crosses NATS twice more than this. The bench prints the probe to show
 * what that choice costs in latency on this machine, and what the latency
 * targets would need.
 *
 *   node dist/bench/logFollower.js <nats urls, comma-separated> <stream>
 *
 * Prints "ready" once it follows; exits when its stdin closes.
 */
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { errorMessage } from "../src/util/errorMessage";

async function main(): Promise<void> {
  const [urls, stream] = process.argv.slice(2);
  if (!urls || !stream) throw new Error("usage: logFollower <urls> <stream>");
  const nc = await connect({ servers: urls.split(","), noAsyncTraces: true });
  const js = jetstream(nc);
  const consumer = await js.consumers.get(stream);
  const messages = await consumer.consume();
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
  process.stdout.write("ready\n");
  for await (const m of messages) {
    const reply = m.headers?.get("Bench-Reply");
    if (reply) nc.publish(reply, m.data);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`logFollower: ${errorMessage(e)}\n`);
  process.exit(1);
});
