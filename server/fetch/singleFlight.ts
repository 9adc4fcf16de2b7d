/**
 * Single-flight: one piece of work per stored file, however many requests ask for it.
 * Within a process, concurrent callers share one promise. Across processes, a lock lets
 * one process work while the others poll for the result; two kinds (config
 * `singleFlightScope`):
 * - `host` (Linux): a Unix socket in the abstract namespace, named after the tree and the
 *   file. Taking it is one bind, nothing is written to the disk, and the kernel frees it
 *   the moment its holder dies, kill -9 included. It spans the processes of one host
 *   (and network namespace): workers, `populate`, another `serve`.
 * - `tree`: a directory in the tree (proper-lockfile: an atomic mkdir whose mtime the
 *   holder keeps fresh, so a dead holder's lock goes stale and is taken over), for trees
 *   that machines share over a network filesystem. Each miss then makes and removes a
 *   directory.
 */
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import lockfile from 'proper-lockfile';
import { ImageproxyError } from '../errors.js';

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

export interface TreeLockOptions {
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

/** Gives the lock back. */
type ReleaseLock = () => Promise<void>;

/** A cross-process lock, taken without waiting: the single-flight loop polls it. */
export interface SingleFlightLock {
  /** Names the lock in a `busy` refusal's detail (logs). */
  readonly description: string;
  /** The lock, taken now; null if another process holds it. */
  tryTake(): Promise<ReleaseLock | null>;
}

/** The `tree` lock: a directory at `lockPath` (see the top of this file). */
export function treeLock(lockPath: string, options: TreeLockOptions): SingleFlightLock {
  return {
    description: `lock ${lockPath}`,
    async tryTake() {
      try {
        return await lockfile.lock(lockPath, {
          lockfilePath: lockPath,
          realpath: false,
          retries: 0,
          stale: options.staleMs,
          onCompromised: options.onCompromised,
        });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ELOCKED') return null;
        throw error;
      }
    },
  };
}

/**
 * The `host` lock: a listening Unix socket in Linux's abstract namespace (a name with a
 * leading NUL byte, at most 107 bytes after it; see hostLockName in server/contract/layout.ts).
 * A second bind of the name fails with EADDRINUSE while the holder lives.
 */
export function hostLock(name: string): SingleFlightLock {
  return {
    description: `host lock ${name}`,
    tryTake: () =>
      new Promise((resolve, reject) => {
        // Nothing is served: a process that connects by mistake is let go at once.
        const server = createServer((socket) => socket.destroy());
        server.once('error', (error: NodeJS.ErrnoException) => {
          if (error.code === 'EADDRINUSE') {
            resolve(null);
            return;
          }
          // Not a disk fault (an EACCES here is the socket's): said as what it is.
          reject(
            new ImageproxyError('internal', 'internal error', {
              cause: error,
              detail: `single-flight host lock ${name} cannot be taken (${error.code ?? error.message}); singleFlightScope tree does without sockets`,
            }),
          );
        });
        // exclusive: in a cluster worker the socket is its own, not one the primary shares.
        server.listen({ path: `\0${name}`, exclusive: true }, () => {
          server.unref(); // a held lock never keeps a stopping process alive
          resolve(() => new Promise<void>((done) => server.close(() => done())));
        });
      }),
  };
}

/**
 * Returns `existing()` as soon as it finds the result; otherwise takes `lock`, checks
 * `existing()` once more (another process may have just finished) and runs `work`.
 * Waits at most `waitMs` for another holder, then throws `busy`.
 */
export async function withLock<T>(
  lock: SingleFlightLock,
  waitMs: number,
  existing: () => Promise<T | null>,
  work: () => Promise<T>,
): Promise<T> {
  const deadline = Date.now() + waitMs;
  let pollMs = POLL_MIN_MS;
  for (;;) {
    const found = await existing();
    if (found !== null) return found;
    const release = await lock.tryTake();
    if (release !== null) {
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
        detail: `waited ${waitMs} ms for ${lock.description}`,
      });
    }
    await sleep(Math.min(pollMs, remaining));
    pollMs = Math.min(pollMs * 2, POLL_MAX_MS);
  }
}
