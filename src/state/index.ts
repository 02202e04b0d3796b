/** The pure lock state machine: see machine.ts for the contract. */
export { apply, createState } from "./machine";
export { classify, dueCommands, nextDeadline, snapshot, statusView, type RequestClass } from "./queries";
export { errorReply, okReply } from "./replies";
export type { ClientCommand, Command, Effect, Grant, LockState, LogEntry, Session, State, Waiter } from "./types";
