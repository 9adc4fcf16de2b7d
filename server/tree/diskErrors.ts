/**
 * Disk faults in our own codes. Pure: an errno from a write in the tree becomes the error
 * the client is answered with, and the log names the directory, so a full or read-only
 * disk says so instead of 500 `internal`.
 */
import { ImageproxyError } from '../errors.js';

const STORAGE_FULL = new Set(['ENOSPC', 'EDQUOT']);
const STORAGE_UNWRITABLE = new Set(['EROFS', 'EACCES', 'EPERM']);

/** The errno code of a thrown value (`ENOSPC`, …), or null. */
function errnoCode(error: unknown): string | null {
  if (typeof error !== 'object' || error === null) return null;
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && /^E[A-Z0-9]+$/.test(code) ? code : null;
}

/**
 * 507 `storage_full` (ENOSPC, EDQUOT) or 500 `storage_unwritable` (EROFS, EACCES, EPERM)
 * for a failed write below `directory`; null for anything else.
 */
export function storageError(error: unknown, directory: string): ImageproxyError | null {
  const code = errnoCode(error);
  if (code === null) return null;
  const syscall = (error as { syscall?: unknown }).syscall;
  const detail = `${code}${typeof syscall === 'string' ? ` ${syscall}` : ''} in ${directory}`;
  if (STORAGE_FULL.has(code)) return new ImageproxyError('storage_full', 'storage is full', { cause: error, detail });
  if (STORAGE_UNWRITABLE.has(code)) return new ImageproxyError('storage_unwritable', 'storage is not writable', { cause: error, detail });
  return null;
}

/**
 * Node's recursive mkdir reports a read-only filesystem as ENOENT: the directory is
 * missing and could not be made. Only such a failure is worth a closer look (the
 * caller probes the nearest existing parent for the real reason).
 */
export function isMissingAfterMkdir(error: unknown): boolean {
  return errnoCode(error) === 'ENOENT' && (error as { syscall?: unknown }).syscall === 'mkdir';
}
