import type { SectionAppend } from "./types";

/** Decoded bytes of a section's appends (they travel, and are logged, as base64). */
export function sectionBytes(appends: readonly SectionAppend[]): number {
  let total = 0;
  for (const { data } of appends) total += Buffer.byteLength(data, "base64");
  return total;
}
