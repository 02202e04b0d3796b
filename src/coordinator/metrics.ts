/**
 * Counters a node keeps about itself. They answer "what happened" questions
 * from `dlm status` and from the periodic stats log line, without a metrics
 * server to run.
 */
import type { Notification } from "../protocol/messages";

export class NodeMetrics {
  requests = 0;
  badRequests = 0;
  duplicates = 0;
  entriesAppended = 0;
  commandsLogged = 0;
  largestBatch = 0;
  appendMsTotal = 0;
  appendMsMax = 0;
  grantsNotified = 0;
  leasesLost = 0;
  waitsEnded = 0;
  entriesApplied = 0;
  stepDowns = 0;
  leaderTerms = 0;

  recordAppend(commands: number, elapsedMs: number): void {
    this.entriesAppended++;
    this.commandsLogged += commands;
    this.largestBatch = Math.max(this.largestBatch, commands);
    this.appendMsTotal += elapsedMs;
    this.appendMsMax = Math.max(this.appendMsMax, elapsedMs);
  }

  countNotification(notification: Notification): void {
    if (notification.event === "granted") this.grantsNotified++;
    else if (notification.event === "lost") this.leasesLost++;
    else this.waitsEnded++;
  }

  snapshot(): Record<string, number> {
    const { appendMsTotal, entriesAppended, ...counters } = this;
    return {
      ...counters,
      entriesAppended,
      appendMsAvg: entriesAppended === 0 ? 0 : Math.round((appendMsTotal / entriesAppended) * 100) / 100,
    };
  }
}
