/**
 * The one way a file in a tree is read: opened without following a symlink and without
 * blocking (a FIFO opened for reading with no writer would hold a thread of libuv's pool
 * forever, and with it every later file operation of the process), checked with fstat to
 * be a regular file, and read no further than a cap. Everything in a tree is untrusted:
 * an imageproxy-py tree an admin adopts, or a file planted or damaged in ours.
 */
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/** Sidecars, `.headers` files, failure records: a few hundred bytes when well-formed. */
export const METADATA_READ_CAP = 16 * 1024;

export type IrregularReason = 'not_a_regular_file' | 'too_large';

/** A path that exists but is no regular file we will read: a symlink, FIFO, socket, device, directory, or past the cap. */
export class IrregularFileError extends Error {
  readonly reason: IrregularReason;
  readonly path: string;
  constructor(reason: IrregularReason, path: string, detail: string) {
    super(`${path}: ${detail}`);
    this.name = 'IrregularFileError';
    this.reason = reason;
    this.path = path;
  }
}

export function isIrregularFileError(value: unknown): value is IrregularFileError {
  return value instanceof IrregularFileError;
}

// O_NOFOLLOW: a symlink at the last component fails with ELOOP instead of being followed.
// O_NONBLOCK: a FIFO opens at once (and fstat then refuses it); no effect on regular files.
// (libuv adds O_CLOEXEC to every open itself.)
export const SAFE_READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** What the fstat said of a file we may read. */
export interface RegularFileFacts {
  bytes: number;
  ino: number;
  modifiedMs: number;
}

/**
 * Opens `path` for reading if it is a regular file of at most `maxBytes`; ENOENT and other
 * errors of the open pass through as they are, a symlink or anything not regular throws
 * IrregularFileError. The caller closes the handle.
 */
export async function openRegularFile(path: string, maxBytes: number): Promise<{ handle: FileHandle; facts: RegularFileFacts }> {
  let handle: FileHandle;
  try {
    handle = await open(path, SAFE_READ_FLAGS);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ELOOP') throw new IrregularFileError('not_a_regular_file', path, 'is a symbolic link');
    throw error;
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new IrregularFileError('not_a_regular_file', path, `is ${kindOf(info)}, not a regular file`);
    if (info.size > maxBytes) throw new IrregularFileError('too_large', path, `is ${info.size} bytes, over the ${maxBytes}-byte cap`);
    return { handle, facts: { bytes: info.size, ino: info.ino, modifiedMs: info.mtimeMs } };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/**
 * The bytes of a regular file of at most `maxBytes`. Reads at most `maxBytes + 1` bytes
 * whatever fstat said (a file that grows while read is refused as too large, not read on).
 */
export async function readRegularFile(path: string, maxBytes: number): Promise<Buffer> {
  return (await readRegularFileAndFacts(path, maxBytes)).bytes;
}

/** readRegularFile, with what the fstat said of the file read (its mtime: when it was stored). */
export async function readRegularFileAndFacts(path: string, maxBytes: number): Promise<{ bytes: Buffer; facts: RegularFileFacts }> {
  const { handle, facts } = await openRegularFile(path, maxBytes);
  try {
    const buffer = Buffer.allocUnsafe(Math.min(facts.bytes, maxBytes) + 1);
    let filled = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, filled, buffer.length - filled, filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
      if (filled === buffer.length) {
        if (filled > maxBytes) throw new IrregularFileError('too_large', path, `grew past the ${maxBytes}-byte cap while read`);
        break;
      }
    }
    return { bytes: buffer.subarray(0, filled), facts };
  } finally {
    await handle.close();
  }
}

/** A small text file (sidecar, `.headers`, record) of a regular file, capped at METADATA_READ_CAP by default. */
export async function readRegularText(path: string, maxBytes: number = METADATA_READ_CAP): Promise<string> {
  return (await readRegularFile(path, maxBytes)).toString('utf8');
}

/** The methods Stats and Dirent share that tell what kind of entry a path is. */
export interface EntryKindFacts {
  isDirectory(): boolean;
  isFIFO(): boolean;
  isSocket(): boolean;
  isCharacterDevice(): boolean;
  isBlockDevice(): boolean;
  /** Absent on an fstat's answer: an open file descriptor is never a link. */
  isSymbolicLink?(): boolean;
}

/** What an entry that is no regular file is, for a log line or a finding ("a FIFO"). */
export function kindOf(info: EntryKindFacts): string {
  if (info.isSymbolicLink?.() === true) return 'a symbolic link';
  if (info.isDirectory()) return 'a directory';
  if (info.isFIFO()) return 'a FIFO';
  if (info.isSocket()) return 'a socket';
  if (info.isCharacterDevice() || info.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

/**
 * The first `count` bytes of a regular file of any size (fewer when it is shorter), read
 * synchronously with the same refusals as openRegularFile: for the lookup of a file about
 * to be served (server/tree/store.ts), which stats synchronously too, rather than waiting for
 * libuv's pool behind resizes. One page, of a file whose bytes are read next anyway.
 */
export function readRegularHeadSync(path: string, count: number): Buffer {
  let fd: number;
  try {
    fd = openSync(path, SAFE_READ_FLAGS);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ELOOP') throw new IrregularFileError('not_a_regular_file', path, 'is a symbolic link');
    throw error;
  }
  try {
    const info = fstatSync(fd);
    if (!info.isFile()) throw new IrregularFileError('not_a_regular_file', path, `is ${kindOf(info)}, not a regular file`);
    // No more than the file holds (plus one, to see one grown past `count`'s cap): a
    // sidecar read with a 16 KiB cap allocates its few hundred bytes.
    const head = Buffer.allocUnsafe(Math.min(count, info.size + 1));
    const bytesRead = readSync(fd, head, 0, head.length, 0);
    return head.subarray(0, bytesRead);
  } finally {
    closeSync(fd);
  }
}
