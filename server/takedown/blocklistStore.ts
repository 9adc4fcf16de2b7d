/**
 * The blocklist on disk, `{root}/.imageproxy/blocklist.json`: read it, change it under a
 * lock (two admins at once lose nothing) with an atomic rewrite, and watch it from a
 * running server. Thin I/O over server/takedown/blocklist.ts.
 */
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { emptyBlocklist, formatBlocklist, parseBlocklist, withConfigHosts, type Blocklist } from './blocklist.js';
import { ImageproxyError } from '../errors.js';
import { STATE_DIRECTORY } from '../contract/layout.js';
import { readRegularText } from '../tree/regularFile.js';
import { writeFileAtomic } from '../tree/atomicFile.js';

const BLOCKLIST_FILE_NAME = 'blocklist.json';

/**
 * How often a running server looks at the file (one stat, on the next request after the
 * period): a new block is honoured within about this long, at the cost of one stat a
 * period, never one per request. `purge --block` waits a little longer than this before
 * it removes files, so no running server can fetch the image again in between.
 */
export const BLOCKLIST_RECHECK_MS = 1000;

/** The largest blocklist read: hundreds of thousands of entries; past it the file is refused, not loaded whole. */
const BLOCKLIST_READ_CAP = 64 * 1024 * 1024;

export function blocklistPath(root: string): string {
  return join(root, STATE_DIRECTORY, BLOCKLIST_FILE_NAME);
}

/** The blocklist of a tree; empty when there is no file. Throws on a file that does not parse, or that is no regular file (server/tree/regularFile.ts). */
export async function readBlocklist(root: string): Promise<Blocklist> {
  const path = blocklistPath(root);
  let text: string;
  try {
    text = await readRegularText(path, BLOCKLIST_READ_CAP);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return emptyBlocklist();
    throw error;
  }
  try {
    return parseBlocklist(text);
  } catch (error) {
    throw new Error(`${path}: ${(error as Error).message}`, { cause: error });
  }
}

/**
 * Reads the list, applies `change`, and writes the result when it differs, all under the
 * file's lock: concurrent commands run one after the other, each on the other's result.
 */
export async function updateBlocklist<T>(
  root: string,
  change: (list: Blocklist) => { list: Blocklist; result: T },
): Promise<T> {
  const directory = join(root, STATE_DIRECTORY);
  await mkdir(directory, { recursive: true });
  const path = blocklistPath(root);
  const release = await lockfile.lock(path, {
    lockfilePath: `${path}.lock`,
    realpath: false,
    stale: 10_000,
    retries: { retries: 100, minTimeout: 20, maxTimeout: 250 },
  });
  try {
    const before = await readBlocklist(root);
    const { list, result } = change(before);
    const text = formatBlocklist(list);
    if (text !== formatBlocklist(before)) await writeFileAtomic(path, text);
    return result;
  } finally {
    await release();
  }
}

export interface BlocklistWatcher {
  /**
   * The list as the file says now (plus the extra hosts), looked at no more than once a
   * recheck period. Throws `internal` while the file cannot be read or parsed: refusing
   * every miss beats serving what an operator blocked.
   */
  current(): Promise<Blocklist>;
}

export interface WatchOptions {
  /** Hosts blocked by the config (blockedHosts), normalised; merged into every reload. */
  extraHosts?: readonly string[];
  recheckMs?: number;
  now?: () => number;
  onReload?: (list: Blocklist) => void;
}

type WatchState = { signature: string; list: Blocklist } | { signature: string; error: Error };

/**
 * The rhythm both watchers (the tree's file, the bucket's object) keep: `check` runs at
 * most once a recheck period, on the first call after it, and every call waits for a
 * check in flight, so a call that comes after a period has passed sees what the check
 * found.
 */
export function recheckGate(check: () => Promise<void>, options: Pick<WatchOptions, 'recheckMs' | 'now'>): () => Promise<void> {
  const recheckMs = options.recheckMs ?? BLOCKLIST_RECHECK_MS;
  const now = options.now ?? Date.now;
  let checkedAtMs = Number.NEGATIVE_INFINITY;
  let checking: Promise<void> | null = null;
  return async () => {
    if (checking === null && now() - checkedAtMs >= recheckMs) {
      checkedAtMs = now();
      checking = check().finally(() => {
        checking = null;
      });
    }
    if (checking !== null) await checking;
  };
}

const MISSING = 'missing';

export function watchBlocklist(root: string, options: WatchOptions = {}): BlocklistWatcher {
  const path = blocklistPath(root);
  const extraHosts = options.extraHosts ?? [];
  let state: WatchState | null = null;

  async function signatureOfFile(): Promise<string> {
    try {
      const info = await stat(path);
      // The CLI replaces the file by rename: a new inode on every change.
      return `${info.ino}:${info.size}:${info.mtimeMs}`;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return MISSING;
      throw error;
    }
  }

  async function check(): Promise<void> {
    let signature: string;
    try {
      signature = await signatureOfFile();
    } catch (error) {
      state = { signature: 'unreadable', error: error as Error };
      return;
    }
    if (state?.signature === signature) return;
    try {
      const list = signature === MISSING ? emptyBlocklist() : await readBlocklist(root);
      state = { signature, list: withConfigHosts(list, extraHosts) };
      options.onReload?.(state.list);
    } catch (error) {
      state = { signature, error: error as Error };
    }
  }

  const refresh = recheckGate(check, options);
  return {
    async current() {
      await refresh();
      if (state === null) throw new Error('blocklist not loaded');
      if ('error' in state) {
        throw new ImageproxyError('internal', 'internal error', {
          cause: state.error,
          detail: `blocklist ${path} cannot be used: ${state.error.message}`,
        });
      }
      return state.list;
    },
  };
}
