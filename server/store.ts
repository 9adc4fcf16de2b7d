/**
 * The bucket tree on disk: lookups, atomic writes, metadata, directory setup. Thin I/O
 * over server/layout.ts, which decides every name.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { parseFailureRecord, type FailureRecord } from './backoff.js';
import { join } from 'node:path';
import {
  IMAGE_EXTENSIONS,
  SHARD_CHARACTERS,
  failureFileName,
  fileStem,
  imageFileName,
  lockFileName,
  isTempFileName,
  keyDirectory,
  metadataFileName,
  tempFileName,
  type ImageExtension,
} from './layout.js';

export interface StoredImage {
  /** Absolute path on disk. */
  path: string;
  /** `/`-separated path below the root: what nginx's internal location appends. */
  relativePath: string;
  ext: ImageExtension;
  bytes: number;
  modifiedMs: number;
}

export interface ImageMetadata {
  sourceUrl: string;
  contentType: string;
  originContentType: string | null;
  bytes: number;
  width: number;
  height: number;
  frames: number;
  /** sha256 (hex) of the stored bytes: what `purge --block` records to refuse the same image elsewhere. */
  sha256: string;
  fetchedAt: string;
}

export class ImageStore {
  constructor(readonly root: string) {}

  directoryOf(bucket: string, key: string): string {
    return join(this.root, keyDirectory(bucket, key));
  }

  /** The stored original (variantLabel null) or variant, whatever its format, or null. */
  async find(bucket: string, key: string, variantLabel: string | null): Promise<StoredImage | null> {
    const directory = keyDirectory(bucket, key);
    const stem = fileStem(key, variantLabel);
    for (const ext of IMAGE_EXTENSIONS) {
      const relativePath = `${directory}/${imageFileName(stem, ext)}`;
      const path = join(this.root, relativePath);
      try {
        const info = await stat(path);
        if (info.isFile()) return { path, relativePath, ext, bytes: info.size, modifiedMs: info.mtimeMs };
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
    }
    return null;
  }

  /**
   * Writes bytes under a temporary name in the target directory, fsyncs, then renames
   * into place: readers see the whole file or none, and a crash leaves only a temp file.
   */
  async writeAtomic(bucket: string, key: string, fileName: string, bytes: Uint8Array): Promise<string> {
    const directory = this.directoryOf(bucket, key);
    await mkdir(directory, { recursive: true });
    const finalPath = join(directory, fileName);
    const tempPath = join(directory, tempFileName(fileName, `${process.pid}.${randomBytes(6).toString('hex')}`));
    const handle = await open(tempPath, 'wx', 0o644);
    try {
      await handle.writeFile(bytes);
      await handle.sync();
    } catch (error) {
      await handle.close();
      await unlink(tempPath).catch(() => undefined);
      throw error;
    }
    await handle.close();
    try {
      await rename(tempPath, finalPath);
    } catch (error) {
      await unlink(tempPath).catch(() => undefined);
      throw error;
    }
    return finalPath;
  }

  async storeImage(
    bucket: string,
    key: string,
    variantLabel: string | null,
    ext: ImageExtension,
    bytes: Uint8Array,
  ): Promise<StoredImage> {
    const name = imageFileName(fileStem(key, variantLabel), ext);
    const path = await this.writeAtomic(bucket, key, name, bytes);
    const info = await stat(path);
    return { path, relativePath: `${keyDirectory(bucket, key)}/${name}`, ext, bytes: info.size, modifiedMs: info.mtimeMs };
  }

  async writeMetadata(bucket: string, key: string, metadata: ImageMetadata): Promise<void> {
    const text = `${JSON.stringify(metadata, null, 2)}\n`;
    await this.writeAtomic(bucket, key, metadataFileName(key), Buffer.from(text));
  }

  async readFailure(bucket: string, key: string, stem: string): Promise<FailureRecord | null> {
    try {
      return parseFailureRecord(await readFile(join(this.directoryOf(bucket, key), failureFileName(stem)), 'utf8'));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw error;
    }
  }

  async writeFailure(bucket: string, key: string, stem: string, record: FailureRecord): Promise<void> {
    await this.writeAtomic(bucket, key, failureFileName(stem), Buffer.from(`${JSON.stringify(record)}\n`));
  }

  async clearFailure(bucket: string, key: string, stem: string): Promise<void> {
    await rm(join(this.directoryOf(bucket, key), failureFileName(stem)), { force: true });
  }

  /**
   * The cross-process lock of one stem (a directory proper-lockfile makes), after
   * creating the key's directory: a tree without init-buckets works too.
   */
  async prepareLock(bucket: string, key: string, stem: string): Promise<string> {
    const directory = this.directoryOf(bucket, key);
    await mkdir(directory, { recursive: true });
    return join(directory, lockFileName(stem));
  }

  /**
   * Removes everything stored for a key: original, thumbnails, metadata and backoff
   * record (not a lock or temp file of a write in progress). Returns the removed paths.
   */
  async purge(bucket: string, key: string): Promise<string[]> {
    const directory = this.directoryOf(bucket, key);
    let names: string[];
    try {
      names = await readdir(directory);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
    const removed: string[] = [];
    for (const name of names) {
      if (!name.startsWith(`${key}.`) || name.endsWith('.lock')) continue;
      const path = join(directory, name);
      await rm(path, { force: true });
      removed.push(path);
    }
    return removed.sort();
  }

  /**
   * Creates `{bucket}/{c1}/{c2}` for all 64 × 64 pairs. Idempotent: existing directories
   * are kept. Returns how many directories were created.
   */
  async initBuckets(buckets: readonly string[]): Promise<number> {
    let created = 0;
    for (const bucket of buckets) {
      for (const first of SHARD_CHARACTERS) {
        for (const second of SHARD_CHARACTERS) {
          const made = await mkdir(join(this.root, bucket, first, second), { recursive: true });
          if (made !== undefined) created += 1;
        }
      }
    }
    return created;
  }

  /** Removes temp files older than maxAgeMs left by crashed writers. Returns how many. */
  async removeStaleTempFiles(bucket: string, maxAgeMs: number, nowMs: number): Promise<number> {
    let removed = 0;
    const bucketDir = join(this.root, bucket);
    const walk = async (directory: string, depth: number): Promise<void> => {
      let entries;
      try {
        entries = await readdir(directory, { withFileTypes: true });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw error;
      }
      for (const entry of entries) {
        const path = join(directory, entry.name);
        if (entry.isDirectory() && depth < 2) await walk(path, depth + 1);
        else if (entry.isFile() && depth === 2 && isTempFileName(entry.name)) {
          const info = await stat(path).catch(() => null);
          if (info !== null && nowMs - info.mtimeMs > maxAgeMs) {
            await rm(path, { force: true });
            removed += 1;
          }
        }
      }
    };
    await walk(bucketDir, 0);
    return removed;
  }
}
