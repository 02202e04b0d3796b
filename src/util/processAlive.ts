/**
 * Whether a process with this pid runs: signal 0 checks without sending
 * anything. EPERM means it runs under another user, which still counts (a
 * pid lock held by it must not be taken over).
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
