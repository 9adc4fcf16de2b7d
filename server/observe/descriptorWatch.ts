/**
 * Says in the log when the process runs out of file descriptors. At the limit (EMFILE)
 * libuv accepts each new connection and closes it at once, and Node reports nothing:
 * clients see resets, the log stays silent. Once a second the watch counts the open
 * descriptors (/proc/self/fd) against the soft limit (/proc/self/limits) and logs,
 * at most once a minute (LogThrottle), while the process is at the limit. Linux only;
 * elsewhere it does nothing. The parsing and the verdict are pure; the reads are thin.
 */
import { readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import type { Logger } from './log.js';
import { LogThrottle } from './logThrottle.js';

export const DESCRIPTOR_CHECK_INTERVAL_MS = 1000;
const DESCRIPTOR_LOG_INTERVAL_MS = 60_000;

/** The soft `Max open files` of a /proc/PID/limits text, or null (unlimited or absent). */
export function parseOpenFileLimit(limitsText: string): number | null {
  const match = /^Max open files\s+(\d+|unlimited)\s/m.exec(limitsText);
  if (match === null || match[1] === 'unlimited') return null;
  return Number(match[1]);
}

/**
 * Whether `open` descriptors (null: counting them failed with EMFILE) leave none for a
 * new connection. libuv keeps one descriptor in reserve for its accept-and-close, so one
 * below the limit is already the limit.
 */
export function atDescriptorLimit(open: number | null, limit: number): boolean {
  return open === null || open >= limit - 1;
}

/** The open descriptors of this process, or null when even that needs one too many. */
async function openDescriptors(): Promise<number | null | undefined> {
  try {
    return (await readdir('/proc/self/fd')).length;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // undefined: nothing to say (no /proc); null: at the limit.
    return code === 'EMFILE' || code === 'ENFILE' ? null : undefined;
  }
}

/** Starts the watch; returns its stop. The timer never keeps the process alive. */
export function startDescriptorWatch(logger: Logger, now: () => number = Date.now): () => void {
  let limit: number | null;
  try {
    limit = parseOpenFileLimit(readFileSync('/proc/self/limits', 'utf8'));
  } catch {
    limit = null;
  }
  if (limit === null) return () => undefined;
  const soft = limit;
  const throttle = new LogThrottle(DESCRIPTOR_LOG_INTERVAL_MS, now);
  let checking = false;
  const timer = setInterval(() => {
    if (checking) return;
    checking = true;
    void openDescriptors()
      .then((open) => {
        if (open === undefined || !atDescriptorLimit(open, soft)) return;
        const heldBack = throttle.pass();
        if (heldBack === null) return;
        logger.error(
          { code: 'EMFILE', open: open ?? soft, limit: soft, secondsAtLimitSinceLastLine: heldBack },
          `out of file descriptors (EMFILE): ${open ?? soft} of ${soft} open; new connections are reset until some close. ` +
            'Raise the limit (LimitNOFILE= in the systemd unit, ulimit -n) or lower the load',
        );
      })
      .finally(() => {
        checking = false;
      });
  }, DESCRIPTOR_CHECK_INTERVAL_MS);
  timer.unref();
  return () => clearInterval(timer);
}
