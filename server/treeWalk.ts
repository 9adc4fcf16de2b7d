/**
 * Streaming walk of a sharded tree, `{bucketDir}/{a}/{b}/{file}` (ours and imageproxy-py's
 * have the same shape): one directory handle open per level, entries read as a stream
 * (fs.opendir), never a whole listing of the tree in memory. Trees hold millions of files.
 */
import { opendir } from 'node:fs/promises';
import { join } from 'node:path';

export interface ShardFile {
  /** `{a}/{b}`: the shard directory below the bucket directory. */
  shard: string;
  /** Absolute directory holding the file. */
  directory: string;
  name: string;
  /** True only for directories, which walkShardFiles yields with `{ directories: true }`. */
  isDirectory: boolean;
}

export interface ShardWalkOptions {
  /** Also yield the directories at the file level (the heal pass looks at `.lock` ones). */
  directories?: boolean;
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
 * directories) are skipped unless `options.directories`; symlinks always are, and so is
 * anything not at that depth.
 */
export async function* walkShardFiles(bucketDir: string, options: ShardWalkOptions = {}): AsyncGenerator<ShardFile> {
  for await (const first of entriesOf(bucketDir)) {
    if (!first.isDirectory()) continue;
    const firstDir = join(bucketDir, first.name);
    for await (const second of entriesOf(firstDir)) {
      if (!second.isDirectory()) continue;
      const directory = join(firstDir, second.name);
      const shard = `${first.name}/${second.name}`;
      for await (const file of entriesOf(directory)) {
        if (file.isFile()) yield { shard, directory, name: file.name, isDirectory: false };
        else if (options.directories === true && file.isDirectory()) yield { shard, directory, name: file.name, isDirectory: true };
      }
    }
  }
}
