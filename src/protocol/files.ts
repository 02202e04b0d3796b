/**
 * The guarded files. Only `file_0` … `file_99` exist; a name is mapped to an
 * index by this one function and paths are built from the index alone, never
 * from user input, so `../x` or `file_01` can never reach the file system.
 */
export const FILE_COUNT = 100;

const FILE_NAME = /^file_(0|[1-9][0-9]?)$/;

/** The index of a valid file name, or undefined for any other string. */
export function fileIndex(name: unknown): number | undefined {
  if (typeof name !== "string") return undefined;
  const match = FILE_NAME.exec(name);
  if (!match) return undefined;
  const index = Number(match[1]);
  return index < FILE_COUNT ? index : undefined;
}

export function fileName(index: number): string {
  if (!Number.isInteger(index) || index < 0 || index >= FILE_COUNT) {
    throw new Error(`file index out of range: ${index}`);
  }
  return `file_${index}`;
}
