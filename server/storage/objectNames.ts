/**
 * Object names in a bucket of an S3 gateway. Pure.
 *
 * An image is the object `{prefix}{bucket}/{k0}/{k1}/{stem}`: the tree's relative file
 * name (server/contract/layout.ts) without its image extension. The extension is what a
 * hit would have to probe for (the tree tries .jpg .png .webp .gif .avif in turn); in the
 * bucket the object's Content-Type says what the bytes are, so the name follows from the
 * link alone and a hit is one GET. nginx's link check yields the same
 * `/{bucket}/{k0}/{k1}/{stem}` (nginx/imageproxy.js linkStem).
 *
 * The prefix lets one S3 bucket hold other things (or several sites): it is empty or
 * `segment/…/segment/`, segments of letters, digits, `.`, `_` and `-` (never `.` or `..`
 * alone), so a name needs no escaping beyond what SigV4 does anyway and no gateway
 * normalises it into another name.
 */
import { STATE_DIRECTORY, classVariantStem, classifyTreeFile, fileStem, imageFileName, keyDirectory, keyOfTreeFile, parseThumbnailName, type ImageExtension } from '../contract/layout.js';
import type { FormatClass } from '../contract/accept.js';

const PREFIX_SEGMENT_PATTERN = /^[A-Za-z0-9._-]+$/;

/** S3 caps a key at 1024 bytes; a prefix leaves room for the longest image name (~100). */
export const MAX_PREFIX_LENGTH = 512;

/** Why `raw` cannot be a store prefix, or null when it can (leading and trailing `/` are dropped). */
export function storePrefixProblem(raw: string): string | null {
  const trimmed = trimSlashes(raw);
  if (trimmed === '') return null;
  if (trimmed.length > MAX_PREFIX_LENGTH) return `longer than ${MAX_PREFIX_LENGTH} characters`;
  for (const segment of trimmed.split('/')) {
    if (segment === '') return 'has an empty segment (`//`)';
    if (segment === '.' || segment === '..') return `has a \`${segment}\` segment`;
    if (!PREFIX_SEGMENT_PATTERN.test(segment)) return 'may hold only letters, digits, `.`, `_`, `-` and `/`';
  }
  return null;
}

/** `raw` as the store uses it: '' or `a/b/`. Throws on a prefix storePrefixProblem refuses. */
export function normalizeStorePrefix(raw: string): string {
  const problem = storePrefixProblem(raw);
  if (problem !== null) throw new Error(`storage prefix ${JSON.stringify(raw)} ${problem}`);
  const trimmed = trimSlashes(raw);
  return trimmed === '' ? '' : `${trimmed}/`;
}

function trimSlashes(value: string): string {
  let start = 0;
  let end = value.length;
  while (start < end && value[start] === '/') start += 1;
  while (end > start && value[end - 1] === '/') end -= 1;
  return value.slice(start, end);
}

/** The S3 key of a store name under a normalised prefix. */
export function objectKeyOf(prefix: string, name: string): string {
  return `${prefix}${name}`;
}

/** The store name of an S3 key, or null for a key outside the prefix (or the prefix itself). */
export function nameOfObjectKey(prefix: string, objectKey: string): string | null {
  if (!objectKey.startsWith(prefix) || objectKey.length === prefix.length) return null;
  return objectKey.slice(prefix.length);
}

/** `{bucket}/{k0}/{k1}/{stem}`: the object of an original (stem = key) or a thumbnail (server/contract/layout.ts fileStem, classVariantStem). */
export function imageObjectName(bucket: string, key: string, stem: string): string {
  return `${keyDirectory(bucket, key)}/${stem}`;
}

/**
 * The object name for a tree file `{bucket}/{k0}/{k1}/{name}` (what a copy of a tree into
 * a bucket writes), or null for a file that is no image of ours: the sidecar, locks,
 * backoff records and temp files have no object (the sidecar's facts ride in the
 * original's metadata, server/storage/objectMetadata.ts).
 */
export function objectNameOfTreeImage(bucket: string, fileName: string): string | null {
  const kind = classifyTreeFile(fileName);
  const key = keyOfTreeFile(fileName);
  if ((kind !== 'original' && kind !== 'thumbnail') || key === null) return null;
  return imageObjectName(bucket, key, fileName.slice(0, fileName.lastIndexOf('.')));
}

/**
 * The blocklist's object: the tree's `.imageproxy/blocklist.json`, same bytes, replaced
 * whole. No image object can have this name (bucket names have no dot).
 */
export const BLOCKLIST_OBJECT_NAME = `${STATE_DIRECTORY}/blocklist.json`;

/** What an image object's name says: the key, and for a thumbnail its label and class. */
export interface ImageObjectName {
  bucket: string;
  key: string;
  /** null for the original. */
  label: string | null;
  formatClass: FormatClass;
}

/**
 * The parts of `{bucket}/{k0}/{k1}/{stem}`, or null for a name that is no image object
 * of ours (the shard directories must be the key's, as the tree's are).
 */
export function parseImageObjectName(name: string): ImageObjectName | null {
  const parts = name.split('/');
  if (parts.length !== 4) return null;
  const [bucket = '', first, second, stem = ''] = parts;
  const key = keyOfTreeFile(stem);
  if (key === null || first !== key[0] || second !== key[1] || bucket === '' || !/^[A-Za-z0-9_-]+$/.test(bucket)) return null;
  if (stem === key) return { bucket, key, label: null, formatClass: 'source' };
  // A thumbnail's stem with any extension: parseThumbnailName checks its parts.
  const thumbnail = parseThumbnailName(`${stem}.jpg`);
  return thumbnail === null ? null : { bucket, key, label: thumbnail.label, formatClass: thumbnail.formatClass };
}

/** The tree file name (in the key's directory) of an image object whose bytes have extension `ext`. */
export function treeFileNameOfObject(name: ImageObjectName, ext: ImageExtension): string {
  const { key, label, formatClass } = name;
  const stem = label === null || formatClass === 'source' ? fileStem(key, label) : classVariantStem(key, label, formatClass);
  return imageFileName(stem, ext);
}
