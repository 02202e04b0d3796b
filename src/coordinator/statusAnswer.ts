/**
 * The status answer, within one NATS message.
 *
 * The configured caps (`statusMaxLocks`, `statusMaxWaiters`) bound how many
 * locks and waiters are listed, not how many bytes: a queue of acquireAll
 * waiters lists up to 32 lock names each, so 100 locks of 50 such waiters
 * made an answer of megabytes, over any server's max_payload, just when an
 * operator asked what was going on. The answer is built with the caps and,
 * if it does not fit, again with fewer waiters and then fewer locks listed
 * until it does. The counts (`lockCount`, `holderCount`, `queueLength`)
 * always cover everything, so a shortened answer says how much it left out.
 */
import type { OkReply } from "../protocol/messages";
import { okReply, statusView, type State } from "../state";
import type { StatusCaps } from "../state/queries";

export function fittedStatusReply(state: State, appliedSeq: number, caps: StatusCaps, maxBytes: number): OkReply {
  let { maxLocks, maxWaiters } = caps;
  for (;;) {
    const reply = okReply("Status", { view: statusView(state, appliedSeq, { maxLocks, maxWaiters }) });
    if ((maxLocks === 0 && maxWaiters === 0) || Buffer.byteLength(JSON.stringify(reply), "utf8") <= maxBytes) return reply;
    // Waiters go first: the locks themselves, with their counts, say more.
    if (maxWaiters > 0) maxWaiters = Math.floor(maxWaiters / 2);
    else maxLocks = Math.floor(maxLocks / 2);
  }
}
