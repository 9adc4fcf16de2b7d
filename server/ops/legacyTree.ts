/**
 * imageproxy-py's tree, read for `imageproxy import-legacy`. Pure: names, `.headers`
 * text and URLs in, decisions out; server/ops/legacyImport.ts does the I/O.
 *
 *   {py-root}/{bucket}/{A}/{B}/{name}            the image as fetched (no extension)
 *   {py-root}/{bucket}/{A}/{B}/{name}.headers    `content-type <type>` and `x-original-url <ext_url>` lines
 *   {py-root}/{bucket}/{A}/{B}/{name}.err        backoff record (ignored)
 *   {py-root}/{bucket}/{A}/{B}/{name}.tmp        an unfinished download (ignored)
 *
 * name = urlsafe-base64(sha224(ext_url as it appeared in the link)): 38 characters plus
 * `==` (Python keeps the padding); A and B are its first two characters. The ext_url is
 * hashed as written, so links with and without `=` padding have two legacy files for the
 * same image; our key (sha256 of the decoded URL) folds them into one.
 */
import { createHash } from 'node:crypto';
import { isImageproxyError } from '../errors.js';
import { storageKey } from '../contract/layout.js';
import { decodeImageUrl, imageUrlBytes, isExtUrlShaped } from '../contract/link.js';
import type { TreeEntryType } from '../tree/walk.js';

type LegacyEntryKind = 'image' | 'headers' | 'err' | 'tmp' | 'unknown';

export interface LegacyEntry {
  kind: LegacyEntryKind;
  /** The image name the entry belongs to (itself for an image); null for unknown files. */
  imageName: string | null;
}

/** sha224 is 28 bytes: 38 base64 characters and `==`. */
const LEGACY_IMAGE_NAME = /^[A-Za-z0-9_-]{38}(?:==)?$/;

const SUFFIX_KINDS: ReadonlyArray<{ suffix: string; kind: LegacyEntryKind }> = [
  { suffix: '.headers', kind: 'headers' },
  { suffix: '.err', kind: 'err' },
  { suffix: '.tmp', kind: 'tmp' },
];

/**
 * What a file of the legacy tree is, from its name alone. `.err` and `.tmp` are
 * classified whatever their stem (they are ignored either way); a `.headers` file or an
 * image must have a legacy name, anything else is `unknown`.
 */
export function classifyLegacyName(name: string): LegacyEntry {
  for (const { suffix, kind } of SUFFIX_KINDS) {
    if (!name.endsWith(suffix)) continue;
    const stem = name.slice(0, -suffix.length);
    if (kind !== 'headers') return { kind, imageName: stem };
    return LEGACY_IMAGE_NAME.test(stem) ? { kind, imageName: stem } : { kind: 'unknown', imageName: null };
  }
  return LEGACY_IMAGE_NAME.test(name) ? { kind: 'image', imageName: name } : { kind: 'unknown', imageName: null };
}

export function headersFileName(imageName: string): string {
  return `${imageName}.headers`;
}

/** The legacy file name of an ext_url, as imageproxy-py made it (padded). */
export function legacyImageName(extUrl: string): string {
  return createHash('sha224').update(extUrl, 'utf8').digest('base64url') + '==';
}

/** Whether `name` is the legacy name of `extUrl`, with or without the `==`. */
export function legacyNameMatches(name: string, extUrl: string): boolean {
  const padded = legacyImageName(extUrl);
  return name === padded || name === padded.slice(0, -2);
}

export interface LegacyHeaders {
  contentType: string | null;
  /** The ext_url exactly as it appeared in the link; null when the line is missing or empty. */
  extUrl: string | null;
}

/**
 * The `.headers` file: one `name value` pair per line, split at the first space, names
 * compared without case. Lines without a space and unknown names are ignored; the last
 * of repeated names wins (as Python's dict did).
 */
export function parseLegacyHeaders(text: string): LegacyHeaders {
  const values = new Map<string, string>();
  for (const rawLine of text.split('\n')) {
    const line = rawLine.endsWith('\r') ? rawLine.slice(0, -1) : rawLine;
    const space = line.indexOf(' ');
    if (space <= 0) continue;
    values.set(line.slice(0, space).toLowerCase(), line.slice(space + 1).trim());
  }
  const nonEmpty = (value: string | undefined): string | null => (value === undefined || value === '' ? null : value);
  return { contentType: nonEmpty(values.get('content-type')), extUrl: nonEmpty(values.get('x-original-url')) };
}

export type LegacyUrlVerdict =
  | { ok: true; imageUrl: string; key: string }
  | { ok: false; detail: string };

/**
 * Judges an ext_url from `.headers` exactly as a link's would be (link.ts: shape, then
 * decodeImageUrl) and derives our key from the decoded bytes.
 */
export function judgeLegacyExtUrl(extUrl: string): LegacyUrlVerdict {
  if (!isExtUrlShaped(extUrl)) return { ok: false, detail: 'x-original-url is not base64url' };
  try {
    decodeImageUrl(extUrl);
  } catch (error) {
    if (!isImageproxyError(error)) throw error;
    return { ok: false, detail: error.message };
  }
  const bytes = imageUrlBytes(extUrl);
  return { ok: true, imageUrl: bytes.toString('utf8'), key: storageKey(bytes) };
}

/** Reasons an entry is reported and not imported. */
export const LEGACY_FAILURE_REASONS = [
  'no_headers',
  'bad_headers',
  'bad_url',
  'too_large',
  'not_an_image',
  'too_many_pixels',
  'damaged',
  'blocked',
  'orphan_headers',
  'unknown_file',
  'not_a_regular_file',
  'not_a_directory',
  'outside_tree',
  'io_error',
] as const;

/**
 * Reported, the entry imported all the same: `name_mismatch` (imported under the URL its
 * `.headers` gives), `metadata_kept` (stripping is on but the bytes could not be
 * stripped: stored as they were).
 */
export const LEGACY_WARNING_REASONS = ['name_mismatch', 'metadata_kept'] as const;

export type LegacyProblemReason = (typeof LEGACY_FAILURE_REASONS)[number] | (typeof LEGACY_WARNING_REASONS)[number];

/**
 * Whether running the import again might import the entry: only a failed read or write
 * (permissions, a full or failing disk). Every other reason is in the legacy tree itself
 * (or in the config and blocklist the rerun uses too), so the exit code leaves it out.
 */
export function rerunMightFix(reason: LegacyProblemReason): boolean {
  return reason === 'io_error';
}

/** What the import does with one entry of the walk (server/tree/walk.ts walkLegacyBucket). */
export type LegacyEntryAction =
  /** `.err`, `.tmp`: left alone, counted as ignored. */
  | { action: 'ignore' }
  /** A `.headers`: judged with its image, reported only when it has none. */
  | { action: 'headers'; imageName: string }
  /** An image name on a regular file. */
  | { action: 'import' }
  /** A symbolic link, never followed: reported as `outside_tree` when it leads out of the py root, else as `reason`. */
  | { action: 'symlink'; reason: LegacyProblemReason }
  | { action: 'report'; reason: LegacyProblemReason; detail: string };

const TYPE_WORDS: Record<Exclude<TreeEntryType, 'symlink'>, string> = {
  file: 'a file',
  directory: 'a directory',
  other: 'a FIFO, socket or device',
};

/**
 * Decides an entry from its place, name and type alone. Depth 3 is a shard directory's
 * content; depth 1 or 2 is something other than a directory where a shard directory belongs.
 */
export function decideLegacyEntry(entry: { depth: 1 | 2 | 3; name: string; type: TreeEntryType }): LegacyEntryAction {
  if (entry.depth < 3) {
    if (entry.type === 'symlink') return { action: 'symlink', reason: 'not_a_directory' };
    return { action: 'report', reason: 'not_a_directory', detail: `${TYPE_WORDS[entry.type]} where a shard directory belongs` };
  }
  const { kind, imageName } = classifyLegacyName(entry.name);
  if (kind === 'err' || kind === 'tmp') return { action: 'ignore' };
  if (kind === 'headers' && imageName !== null) return { action: 'headers', imageName };
  if (entry.type === 'symlink') return { action: 'symlink', reason: 'not_a_regular_file' };
  if (entry.type !== 'file') return { action: 'report', reason: 'not_a_regular_file', detail: `${TYPE_WORDS[entry.type]}, not a regular file` };
  if (kind === 'image') return { action: 'import' };
  return { action: 'report', reason: 'unknown_file', detail: 'not an imageproxy-py name' };
}

/** Whether an absolute, resolved path lies inside the resolved root (the root itself included). */
export function isInsideTree(resolvedRoot: string, resolvedPath: string): boolean {
  const prefix = resolvedRoot.endsWith('/') ? resolvedRoot : `${resolvedRoot}/`;
  return resolvedPath === resolvedRoot || resolvedPath.startsWith(prefix);
}

/** One report line: tab-separated path, reason, detail; tabs and line breaks in fields become spaces. */
export function formatReportLine(path: string, reason: LegacyProblemReason, detail: string): string {
  const field = (text: string): string => text.replace(/[\t\r\n]+/g, ' ');
  return `${field(path)}\t${reason}\t${field(detail)}\n`;
}

export const REPORT_HEADER = 'path\treason\tdetail\n';

/** `import-legacy-20261128T120000Z.tsv`: the default report name, sortable by time. */
export function defaultReportName(nowMs: number): string {
  const stamp = new Date(nowMs).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `import-legacy-${stamp}.tsv`;
}
