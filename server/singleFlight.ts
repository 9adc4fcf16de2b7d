/**
 * Single-flight: one piece of work per stored file, however many requests ask for it.
 * Within a process, concurrent callers share one promise; across processes sharing the
 * tree (workers, machines on a shared filesystem) a lock in the tree (proper-lockfile:
 * an atomic mkdir whose mtime the holder keeps fresh, so a dead holder's lock goes stale
 * and is taken over) lets one process work while the others poll for the result.
 */
import lockfile from 'proper-lockfile';
import { setTimeout as sleep } from 'node:timers/promises';
import { ImageproxyError } from './errors.js';

export class InProcessFlights {
  private readonly running = new Map<string, Promise<unknown>>();

  /** Runs `work` unless a call with the same id is running, whose promise is then shared. */
  run<T>(id: string, work: () => Promise<T>): Promise<T> {
    const existing = this.running.get(id);
    if (existing !== undefined) return existing as Promise<T>;
    const started = work().finally(() => this.running.delete(id));
    this.running.set(id, started);
    return started;
  }

  get size(): number {
    return this.running.size;
  }
}

export interface FileLockOptions {
  /** How long to wait for another holder before answering `busy`. */
  waitMs: number;
  /** A lock not refreshed for this long belongs to a dead process (proper-lockfile minimum 5000). */
  staleMs: number;
  /** Called if the lock is lost while held (e.g. the filesystem stalled); must not throw. */
  onCompromised: (error: Error) => void;
}

/**
 * When a lock no one refreshes belongs to a dead process: its holder refreshes it every
 * half of this, so 10 s survives a busy event loop (proper-lockfile's minimum is 5 s).
 * The single-flight locks and the tree's heal pass both use it.
 */
export const LOCK_STALE_MS = 10_000;

const POLL_MIN_MS = 25;
const POLL_MAX_MS = 200;

/**
 * Returns `existing()` as soon as it finds the result; otherwise takes the lock at
 * `lockPath`, checks `existing()` once more (another process may have just finished) and
 * runs `work`. Waits at most `waitMs` for another holder, then throws `busy`.
 */
export async function withFileLock<T>(
  lockPath: string,
  options: FileLockOptions,
  existing: () => Promise<T | null>,
  work: () => Promise<T>,
): Promise<T> {
  const deadline = Date.now() + options.waitMs;
  let pollMs = POLL_MIN_MS;
  for (;;) {
    const found = await existing();
    if (found !== null) return found;
    let release: (() => Promise<void>) | undefined;
    try {
      release = await lockfile.lock(lockPath, {
        lockfilePath: lockPath,
        realpath: false,
        retries: 0,
        stale: options.staleMs,
        onCompromised: options.onCompromised,
      });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ELOCKED') throw error;
    }
    if (release !== undefined) {
      try {
        return (await existing()) ?? (await work());
      } finally {
        await release().catch(() => undefined);
      }
    }
    const remaining = deadline - Date.now();
    if (remaining <= 0) {
      throw new ImageproxyError('busy', 'image is being fetched, try again', {
        retryAfterSeconds: 5,
        detail: `waited ${options.waitMs} ms for lock ${lockPath}`,
      });
    }
    await sleep(Math.min(pollMs, remaining));
    pollMs = Math.min(pollMs * 2, POLL_MAX_MS);
  }
}
