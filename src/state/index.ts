/** The pure lock state machine: see machine.ts for the contract. */
export { apply, createState, endedSessionReply, entryVersion, isEntryVersion } from "./machine";
export { classify, dueCommands, statusView, type RequestClass } from "./queries";
export { restore, snapshot, SNAPSHOT_VERSION, type LockSnapshot, type StateSnapshot, type StateSnapshotV1 } from "./snapshot";
export { errorReply, okReply } from "../protocol/replies";
export type { ClientCommand, Command, Effect, EntryVersion, Grant, LockKind, LockMode, LockRequest, LockState, LogEntry, SectionAppend, Session, State, Waiter } from "./types";
