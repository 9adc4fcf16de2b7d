/**
 * The bucket tree. Pure path derivation; server/store.ts does the file I/O.
 *
 *   {root}/{bucket}/{key[0]}/{key[1]}/{key}.{ext}           stored original
 *   {root}/{bucket}/{key[0]}/{key[1]}/{key}.{label}.{ext}   resized variant (label `150x`, `x200`, `250x250`)
 *   {root}/{bucket}/{key[0]}/{key[1]}/{key}.json            metadata sidecar
 *   … {key}.lock / {key}.fail                              single-flight lock, fetch backoff
 *   … .{name}.{unique}.tmp                                  in-progress write
 *
 * key = base64url(sha256(decoded image URL bytes)) without padding: nginx's njs can compute
 * it (it has sha256, not sha224), it is the same with and without `=` padding in the link,
 * and its first two characters spread files over 64 × 64 directories. Only names ending in
 * an image extension are ever served (nginx `try_files` and the app both list them), so
 * the sidecar, lock, failure and temp files can never be served.
 */
import { createHash } from 'node:crypto';

/**
 * `{root}/.imageproxy/`: the tree's own records (blocklist, audit log, import reports,
 * counters). No bucket can have this name (bucket names have no dot) and nothing serves it.
 */
export const STATE_DIRECTORY = '.imageproxy';

/** Served extensions, in the order lookups try them (most common first). */
export const IMAGE_EXTENSIONS = ['jpg', 'png', 'webp', 'gif', 'avif'] as const;
export type ImageExtension = (typeof IMAGE_EXTENSIONS)[number];

/** The 64 characters a key can start with: one directory level per character. */
export const SHARD_CHARACTERS =
  'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

export function storageKey(imageUrlBytes: Uint8Array): string {
  return createHash('sha256').update(imageUrlBytes).digest('base64url');
}

/** `{bucket}/{k0}/{k1}`: the key's directory, relative to the root, `/`-separated. */
export function keyDirectory(bucket: string, key: string): string {
  return `${bucket}/${key[0]}/${key[1]}`;
}

/** `{key}` for the original, `{key}.{label}` for a variant; the extension is added per lookup. */
export function fileStem(key: string, variantLabel: string | null): string {
  return variantLabel === null ? key : `${key}.${variantLabel}`;
}

export function imageFileName(stem: string, ext: ImageExtension): string {
  return `${stem}.${ext}`;
}

export function metadataFileName(key: string): string {
  return `${key}.json`;
}

export function lockFileName(stem: string): string {
  return `${stem}.lock`;
}

/** Backoff record of the original (stem = key) or of a variant (stem = key.label). */
export function failureFileName(stem: string): string {
  return `${stem}.fail`;
}

/** A name that no lookup can ever match: leading dot, trailing `.tmp`. */
export function tempFileName(finalName: string, unique: string): string {
  return `.${finalName}.${unique}.tmp`;
}

export function isTempFileName(name: string): boolean {
  return name.startsWith('.') && name.endsWith('.tmp');
}

export function isImageExtension(value: string): value is ImageExtension {
  return (IMAGE_EXTENSIONS as readonly string[]).includes(value);
}

/**
 * What a file in a key directory is, by its name alone (statistics, sweeps):
 * `original` `{key}.{ext}`, `thumbnail` `{key}.{label}.{ext}`, `sidecar` `{key}.json`,
 * `failure` `{key}.fail` or `{key}.{label}.fail`, `temp` `.{name}.{unique}.tmp`, and
 * `other` for anything else (a stray file, an imageproxy-py leftover). Lock directories
 * are directories and never reach it.
 */
export type TreeFileKind = 'original' | 'thumbnail' | 'sidecar' | 'failure' | 'temp' | 'other';

const KEY_NAME_PATTERN = /^[A-Za-z0-9_-]{43}$/;
/** A variant label as sizeLabel writes it: `150x`, `x200`, `250x250`, never a bare `x`. */
const LABEL_NAME_PATTERN = /^(\d+x\d*|x\d+)$/;

export function classifyTreeFile(name: string): TreeFileKind {
  if (isTempFileName(name)) return 'temp';
  const parts = name.split('.');
  const [key, second, third] = parts;
  if (key === undefined || !KEY_NAME_PATTERN.test(key)) return 'other';
  if (parts.length === 2 && second !== undefined) {
    if (isImageExtension(second)) return 'original';
    if (second === 'json') return 'sidecar';
    if (second === 'fail') return 'failure';
    return 'other';
  }
  if (parts.length === 3 && second !== undefined && third !== undefined && LABEL_NAME_PATTERN.test(second)) {
    if (isImageExtension(third)) return 'thumbnail';
    if (third === 'fail') return 'failure';
  }
  return 'other';
}
