/**
 * Streaming walk of a sharded tree, `{bucketDir}/{a}/{b}/{file}` (ours and imageproxy-py's
 * have the same shape): one directory handle open per level, entries read as a stream
 * (fs.opendir), never a whole listing of the tree in memory. Trees hold millions of files.
 */
import type { Dirent } from 'node:fs';
import { lstat, opendir } from 'node:fs/promises';
import { join } from 'node:path';
import { kindOf } from './regularFile.js';

export interface ShardFile {
  /** `{a}/{b}`: the shard directory below the bucket directory. */
  shard: string;
  /** Absolute directory holding the file. */
  directory: string;
  name: string;
  /** True only for directories, which walkShardFiles yields with `{ directories: true }`. */
  isDirectory: boolean;
  /** With `{ irregular: true }`: what an entry that is neither a regular file nor a directory is ("a symbolic link", "a FIFO"). */
  irregular?: string;
}

export interface ShardWalkOptions {
  /** Also yield the directories at the file level (the heal pass looks at `.lock` ones). */
  directories?: boolean;
  /** Also yield the symbolic links, FIFOs, sockets and devices at the file level, with `irregular` set (the heal pass moves them aside). */
  irregular?: boolean;
  /** Told of each bucket or shard directory not walked because it is a symbolic link: a link is never followed out of the tree. */
  onSkippedDirectory?: (path: string, what: string) => void;
}

async function* entriesOf(directory: string) {
  let handle;
  try {
    handle = await opendir(directory, { bufferSize: 256 });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // A missing bucket or shard directory is an empty one (trees made without init-buckets).
    if (code === 'ENOENT' || code === 'ENOTDIR') return;
    throw error;
  }
  // The async iterator closes the handle when the loop ends, early exits included.
  for await (const entry of handle) yield entry;
}

/**
 * Every regular file two directory levels below `bucketDir`, in directory order, one
 * shard directory after the other. Directories at the file level (our `.lock`
 * directories) are skipped unless `options.directories`; symlinks, FIFOs and the like
 * unless `options.irregular`; anything not at that depth always is. A bucket or shard
 * directory that is a symbolic link is not walked (`options.onSkippedDirectory` hears
 * of it): the directory entries' own types (lstat's) decide, never their targets'.
 */
export async function* walkShardFiles(bucketDir: string, options: ShardWalkOptions = {}): AsyncGenerator<ShardFile> {
  const bucketInfo = await lstat(bucketDir).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT' || error.code === 'ENOTDIR') return null;
    throw error;
  });
  if (bucketInfo === null) return;
  if (!bucketInfo.isDirectory()) {
    // Anything else in a bucket's place (a stray file) is an empty bucket, as before.
    if (bucketInfo.isSymbolicLink()) options.onSkippedDirectory?.(bucketDir, kindOf(bucketInfo));
    return;
  }
  for await (const first of entriesOf(bucketDir)) {
    const firstDir = join(bucketDir, first.name);
    if (!first.isDirectory()) {
      if (first.isSymbolicLink()) options.onSkippedDirectory?.(firstDir, kindOf(first));
      continue;
    }
    for await (const second of entriesOf(firstDir)) {
      const directory = join(firstDir, second.name);
      if (!second.isDirectory()) {
        if (second.isSymbolicLink()) options.onSkippedDirectory?.(directory, kindOf(second));
        continue;
      }
      const shard = `${first.name}/${second.name}`;
      for await (const file of entriesOf(directory)) {
        if (file.isFile()) yield { shard, directory, name: file.name, isDirectory: false };
        else if (file.isDirectory()) {
          if (options.directories === true) yield { shard, directory, name: file.name, isDirectory: true };
        } else if (options.irregular === true) yield { shard, directory, name: file.name, isDirectory: false, irregular: kindOf(file) };
      }
    }
  }
}

/** What a directory entry is, without following it. */
export type TreeEntryType = 'file' | 'directory' | 'symlink' | 'other';

/** One entry of an imageproxy-py bucket that the walk does not descend into. */
interface LegacyWalkEntry {
  kind: 'entry';
  /** Relative to the bucket directory: `{A}/{B}/{name}`, or `{A}` / `{A}/{B}` for what stands where a shard directory belongs. */
  relativePath: string;
  path: string;
  /** 3: in a shard directory; 1 or 2: in place of a shard directory (anything but a real directory). */
  depth: 1 | 2 | 3;
  name: string;
  type: TreeEntryType;
}

/** A directory of the bucket that could not be listed (or stopped listing). */
interface LegacyWalkUnreadable {
  kind: 'unreadable';
  relativePath: string;
  path: string;
  error: Error;
}

export type LegacyWalkItem = LegacyWalkEntry | LegacyWalkUnreadable;

async function entryType(entry: Dirent, path: string): Promise<TreeEntryType | null> {
  if (entry.isFile()) return 'file';
  if (entry.isDirectory()) return 'directory';
  if (entry.isSymbolicLink()) return 'symlink';
  if (entry.isFIFO() || entry.isSocket() || entry.isCharacterDevice() || entry.isBlockDevice()) return 'other';
  // The filesystem did not say (DT_UNKNOWN): ask without following.
  try {
    const info = await lstat(path);
    return info.isFile() ? 'file' : info.isDirectory() ? 'directory' : info.isSymbolicLink() ? 'symlink' : 'other';
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}

/**
 * The walk of an imageproxy-py bucket, where everything is untrusted: every entry is
 * yielded once with its type, symlinks are never followed (a symlinked shard directory
 * is yielded, not walked), the depth is fixed (no loop can trap it), and a directory that
 * cannot be listed is yielded as unreadable instead of ending the walk. Streamed like
 * walkShardFiles. The bucket directory itself is the caller's to check.
 */
export async function* walkLegacyBucket(bucketDir: string): AsyncGenerator<LegacyWalkItem> {
  async function* level(directory: string, relativeDir: string, depth: 1 | 2 | 3): AsyncGenerator<LegacyWalkItem> {
    let handle;
    try {
      handle = await opendir(directory, { bufferSize: 256 });
    } catch (error) {
      // Gone since it was listed: nothing left to walk.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      yield { kind: 'unreadable', relativePath: relativeDir, path: directory, error: error as Error };
      return;
    }
    // Closed however the loop ends: done, failed, or the caller stopped early.
    const iterator = handle[Symbol.asyncIterator]();
    try {
      for (;;) {
        let next: IteratorResult<Dirent>;
        try {
          next = await iterator.next();
        } catch (error) {
          yield { kind: 'unreadable', relativePath: relativeDir, path: directory, error: error as Error };
          return;
        }
        if (next.done === true) return;
        const entry = next.value;
        const path = join(directory, entry.name);
        const relativePath = relativeDir === '' ? entry.name : `${relativeDir}/${entry.name}`;
        let type: TreeEntryType | null;
        try {
          type = await entryType(entry, path);
        } catch (error) {
          yield { kind: 'unreadable', relativePath, path, error: error as Error };
          continue;
        }
        if (type === null) continue;
        if (depth < 3 && type === 'directory') yield* level(path, relativePath, depth === 1 ? 2 : 3);
        else yield { kind: 'entry', relativePath, path, depth, name: entry.name, type };
      }
    } finally {
      await iterator.return?.().catch(() => undefined);
    }
  }
  yield* level(bucketDir, '', 1);
}
