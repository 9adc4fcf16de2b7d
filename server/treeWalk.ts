/**
 * Streaming walk of a sharded tree, `{bucketDir}/{a}/{b}/{file}` (ours and imageproxy-py's
 * have the same shape): one directory handle open per level, entries read as a stream
 * (fs.opendir), never a whole listing of the tree in memory. Trees hold millions of files.
 */
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
