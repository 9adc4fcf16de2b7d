/**
 * Ending the process whatever its file operations do. process.exit() joins every thread of
 * libuv's pool on the way out (uv_library_shutdown): a thread blocked in the open() of a
 * FIFO, or in a read from a disk that stopped answering, keeps the process alive for ever
 * after its last line was logged. A signal's default action ends the process in the
 * kernel instead, threads and all; systemd counts an exit by SIGTERM or SIGINT as clean.
 */

/** Requests of libuv's thread pool, as process.getActiveResourcesInfo() names them. */
const POOL_REQUEST = /^(FSReq|GetAddrInfoReqWrap|GetNameInfoReqWrap)/;
const POLL_MS = 25;

/** How many thread-pool requests (file operations, DNS lookups) are in flight. */
export function poolRequestsInFlight(): number {
  return process.getActiveResourcesInfo().filter((name) => POOL_REQUEST.test(name)).length;
}

/**
 * Exits with `code` once no thread-pool request is in flight, waiting `settleMs` at most
 * for the last ones to end; past that, by `signal`'s default action (the shell then sees
 * 128 + its number: 130 for SIGINT, 143 for SIGTERM), since process.exit() would wait for
 * them for ever.
 */
export async function exitProcess(code: number, signal: NodeJS.Signals, settleMs: number): Promise<void> {
  const deadline = Date.now() + settleMs;
  while (poolRequestsInFlight() > 0 && Date.now() < deadline) {
    await new Promise((done) => setTimeout(done, POLL_MS));
  }
  if (poolRequestsInFlight() === 0) process.exit(code);
  endBySignal(signal);
}

/** Ends the process now by `signal`'s default action, whatever its threads are doing. */
export function endBySignal(signal: NodeJS.Signals): void {
  // With no listener left, Node gives the signal back its default action: termination.
  process.removeAllListeners(signal);
  process.kill(process.pid, signal);
  // Not reached: the kernel ends the process before kill() returns to it.
  process.kill(process.pid, 'SIGKILL');
}
