/**
 * The one atomic writer: bytes written under a temp name beside the target, fsynced,
 * renamed over it, and the directory fsynced. A reader sees the whole file or the one
 * before it; a crash leaves at most a temp file (which the heal pass removes in the
 * tree), and a rename that returned survives the crash. Used by the tree's store
 * (images, sidecars, backoff records), the state files (blocklist, heal cursor) and
 * the report files of bulk commands.
 */
import { randomBytes } from 'node:crypto';
import { fstatSync } from 'node:fs';
import { hostname } from 'node:os';
import { mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { hostTag, tempFileName, tempUnique } from '../contract/layout.js';

/** This host in temp names (layout.tempUnique): the heal pass judges only its own host's writers by pid. */
export const THIS_HOST_TAG = hostTag(hostname());

/** A unique temp suffix naming this process as the writer. */
export function writerUnique(): string {
  return tempUnique({ pid: process.pid, hostTag: THIS_HOST_TAG }, randomBytes(6).toString('hex'));
}

/** A file written and fsynced under a temp name, not yet visible under its own. */
export interface StagedWrite {
  /** Where it will be once committed. */
  readonly path: string;
  /** Its mtime in whole milliseconds, as a later stat's `mtime` (and so an ETag) has it. */
  readonly modifiedMs: number;
  /** Renames it into place and fsyncs the directory: from then on readers see the whole file, after a crash too. */
  commit(): Promise<void>;
  /**
   * Renames it into place only, for a file committed before another of the same
   * directory: the later commit's directory fsync makes both renames durable, and a
   * journaling filesystem replays renames of one directory in their order.
   */
  place(): Promise<void>;
  /** Removes the temp file (the write is abandoned). */
  discard(): Promise<void>;
}

/**
 * Creates a new file, and its directory only if that is missing and `makeDirectory`
 * says so: the directory almost always exists, so the common case is one open.
 */
async function openNew(path: string, makeDirectory: boolean): Promise<FileHandle> {
  try {
    return await open(path, 'wx', 0o644);
  } catch (error) {
    if (!makeDirectory || (error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  await mkdir(dirname(path), { recursive: true });
  return open(path, 'wx', 0o644);
}

/**
 * fsync of a directory: what makes a rename in it durable. A filesystem that cannot
 * fsync a directory (EINVAL, some network filesystems) has nothing more to offer.
 */
export async function syncDirectory(directory: string): Promise<void> {
  let handle: FileHandle;
  try {
    handle = await open(directory, 'r');
  } catch {
    return;
  }
  try {
    await handle.sync();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'ENOTSUP' && code !== 'EISDIR') throw error;
  } finally {
    await handle.close();
  }
}

/**
 * The first half of an atomic write: the bytes written and fsynced under a temp name
 * beside `path`. The caller commits when the order of several files allows it, so
 * their writes can run at once while what becomes visible, and when, stays decided.
 */
export async function stageFile(path: string, bytes: Uint8Array | string, options: { makeDirectory?: boolean } = {}): Promise<StagedWrite> {
  const directory = dirname(path);
  const tempPath = join(directory, tempFileName(basename(path), writerUnique()));
  const handle = await openNew(tempPath, options.makeDirectory === true);
  let modifiedMs: number;
  try {
    await handle.writeFile(bytes);
    await handle.sync();
    modifiedMs = fstatSync(handle.fd).mtime.getTime();
  } catch (error) {
    await handle.close();
    await unlink(tempPath).catch(() => undefined);
    throw error;
  }
  await handle.close();
  const place = async (): Promise<void> => {
    try {
      await rename(tempPath, path);
    } catch (error) {
      await unlink(tempPath).catch(() => undefined);
      throw error;
    }
  };
  return {
    path,
    modifiedMs,
    place,
    commit: async () => {
      await place();
      await syncDirectory(directory);
    },
    discard: () => unlink(tempPath).catch(() => undefined),
  };
}

/** Writes `path` whole or not at all (stageFile, then commit). Its directory must exist unless `makeDirectory`. */
export async function writeFileAtomic(path: string, bytes: Uint8Array | string, options: { makeDirectory?: boolean } = {}): Promise<void> {
  await (await stageFile(path, bytes, options)).commit();
}
