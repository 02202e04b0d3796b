/** What was thrown, as a message for a log line or an error text (an Error's message, anything else as a string). */
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
