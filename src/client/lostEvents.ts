/**
 * The "lost" event a Lease and a LeaseSet both emit: listeners typed for
 * it, and an emit in which a listener that throws does not keep the other
 * listeners, or the client's own loss handling, from running.
 */
import { EventEmitter } from "node:events";
import type { DlmError } from "./errors";
import type { Lease } from "./lease";

export type LostListener = (error: DlmError, lease: Lease) => void;

export class LostEmitter extends EventEmitter {
  override on(event: "lost", listener: LostListener): this;
  override on(event: string | symbol, listener: (...args: any[]) => void): this;
  override on(event: string | symbol, listener: (...args: any[]) => void): this {
    return super.on(event, listener);
  }

  override once(event: "lost", listener: LostListener): this;
  override once(event: string | symbol, listener: (...args: any[]) => void): this;
  override once(event: string | symbol, listener: (...args: any[]) => void): this {
    return super.once(event, listener);
  }

  /** Calls every "lost" listener with (error, lease); an error one of them throws goes to `onListenerError`. */
  protected emitLost(error: DlmError, lease: Lease, onListenerError: (e: unknown) => void): void {
    for (const listener of this.rawListeners("lost")) {
      try {
        (listener as LostListener).call(this, error, lease);
      } catch (e) {
        onListenerError(e);
      }
    }
  }
}
