/**
 * The bucket tree. Pure path derivation; server/tree/store.ts does the file I/O.
 *
 *   {root}/{bucket}/{key[0]}/{key[1]}/{key}.{ext}           stored original
 *   {root}/{bucket}/{key[0]}/{key[1]}/{key}.{label}.{ext}   resized variant (label `150x`, `x200`, `250x250`)
 *   … {key}.{label}.{class}.{ext}                          the variant for clients of a format class
 *                                                          (`avif`, `webp`); {ext} is what the bytes are:
 *                                                          the class's format, or the source format when
 *                                                          converting did not pay (a hard link of the
 *                                                          source-format variant)
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
import { MODERN_FORMATS, type FormatClass, type ModernFormat } from './accept.js';

/**
 * `{root}/.imageproxy/`: the tree's own records (blocklist, audit log, import reports,
 * quarantine, the readiness probe's file). No bucket can have this name (bucket names
 * have no dot) and nothing serves it.
 */
export const STATE_DIRECTORY = '.imageproxy';

/** Served extensions, in the order lookups try them (most common first). */
export const IMAGE_EXTENSIONS = ['jpg', 'png', 'webp', 'gif', 'avif'] as const;
export type ImageExtension = (typeof IMAGE_EXTENSIONS)[number];

/** The 64 characters a key can start with: one directory level per character. */
export const SHARD_CHARACTERS =
  'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** Shard directories of one bucket: `{a}/{b}`, one per pair of key characters. */
export const SHARDS_PER_BUCKET = SHARD_CHARACTERS.length * SHARD_CHARACTERS.length;

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

/**
 * `{key}.{label}.{format}`: the stem of a thumbnail made for the clients whose `Accept`
 * negotiates to `format` (server/contract/accept.ts). Its file is `{stem}.{ext}` with
 * the extension of the bytes it holds (classFileExtensions), so the name alone tells
 * nginx and the tools its type.
 */
export function classVariantStem(key: string, variantLabel: string, format: ModernFormat): string {
  return `${key}.${variantLabel}.${format}`;
}

/**
 * The extensions a format class's file may have, in the order lookups try them: the
 * class's own format first (the usual case), then the source formats, which a class
 * gets when converting did not pay or cannot keep the image (an animation as AVIF).
 */
export function classFileExtensions(format: ModernFormat): ImageExtension[] {
  return [format, ...IMAGE_EXTENSIONS.filter((ext) => ext !== format)];
}

/**
 * What names a thumbnail in its key's sidecar (`variants`) and in ImageStore's variant
 * methods: `{label}` for the source-format thumbnail, `{label}.{format}` for a format
 * class's; its file's stem without the key. One name per file, so the record of a class
 * file never overwrites, nor is judged against, the source-format thumbnail's.
 */
export function variantRecordName(variantLabel: string, formatClass: FormatClass): string {
  return formatClass === 'source' ? variantLabel : `${variantLabel}.${formatClass}`;
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

/**
 * Who wrote a temp file: the writer's pid and a tag of its host. The host is part of the
 * name because trees are shared by machines (a shared filesystem): a pid means nothing
 * on another host, so only temps of this host are judged by their writer's life.
 */
export interface TempWriter {
  pid: number;
  /** hostTag() of the writer's hostname; null in names written before it was recorded. */
  hostTag: string | null;
}

/** Eight hex characters naming a host in temp names: short, and free of dots. */
export function hostTag(hostname: string): string {
  return createHash('sha256').update(hostname).digest('hex').slice(0, 8);
}

/** The `{unique}` part of a temp name: `{pid}-{hostTag}.{random}` (random without dots). */
export function tempUnique(writer: { pid: number; hostTag: string }, random: string): string {
  return `${writer.pid}-${writer.hostTag}.${random}`;
}

const TEMP_WRITER_PATTERN = /^(\d+)(?:-([0-9a-f]{8}))?$/;

/**
 * The writer recorded in a temp name, `.{name}.{pid}[-{hostTag}].{random}.tmp`; null for
 * a temp name without one (another tool's, or not ours at all).
 */
export function tempFileWriter(name: string): TempWriter | null {
  if (!isTempFileName(name)) return null;
  const parts = name.slice(0, -'.tmp'.length).split('.');
  if (parts.length < 4) return null;
  const match = TEMP_WRITER_PATTERN.exec(parts[parts.length - 2] ?? '');
  if (match === null) return null;
  const pid = Number(match[1]);
  if (!Number.isSafeInteger(pid) || pid <= 0) return null;
  return { pid, hostTag: match[2] ?? null };
}

/** A tree as the kernel knows it: the same however its root is reached (symlink, bind mount). */
export interface TreeIdentity {
  dev: bigint;
  ino: bigint;
}

/**
 * The name of a `host` single-flight lock (server/fetch/singleFlight.ts): the tree by its
 * root's device and inode, and a hash of the locked file's stem. Fixed length, well
 * within the 107 bytes of an abstract socket name.
 */
export function hostLockName(tree: TreeIdentity, bucket: string, stem: string): string {
  const file = createHash('sha256').update(`${bucket}/${stem}`).digest('base64url');
  return `imageproxy/${tree.dev}:${tree.ino}/${file}`;
}

/** `{stem}.lock`: a single-flight lock directory of an original or a variant (scope `tree`). */
export function isLockDirectoryName(name: string): boolean {
  if (!name.endsWith('.lock')) return false;
  const stem = name.slice(0, -'.lock'.length);
  const [key, label, format, ...rest] = stem.split('.');
  if (key === undefined || !KEY_NAME_PATTERN.test(key) || rest.length > 0) return false;
  if (format !== undefined && !isModernFormat(format)) return false;
  return label === undefined || LABEL_NAME_PATTERN.test(label);
}

/** `quarantine` under STATE_DIRECTORY: damaged files moved aside, kept for a look, never served. */
const QUARANTINE_DIRECTORY = 'quarantine';

/**
 * Where a damaged file goes, relative to the root: `.imageproxy/quarantine/{bucket}/{name}.{time}`,
 * time in compact UTC with milliseconds (`20250102T030405.678Z`) so the same name damaged
 * twice keeps both.
 */
export function quarantinePath(bucket: string, name: string, atMs: number): string {
  const time = new Date(atMs).toISOString().replace(/[-:]/g, '');
  return `${STATE_DIRECTORY}/${QUARANTINE_DIRECTORY}/${bucket}/${name}.${time}`;
}

/** The key of a tree file's name (`{key}.…`), or null for a name that is none of ours. */
export function keyOfTreeFile(name: string): string | null {
  const key = name.split('.')[0];
  return key !== undefined && KEY_NAME_PATTERN.test(key) ? key : null;
}

export function isImageExtension(value: string): value is ImageExtension {
  return (IMAGE_EXTENSIONS as readonly string[]).includes(value);
}

function isModernFormat(value: string): value is ModernFormat {
  return (MODERN_FORMATS as readonly string[]).includes(value);
}

/** What a thumbnail's name says: its size label, the class it serves, its bytes' type. */
export interface ThumbnailName {
  key: string;
  label: string;
  /** `source` for `{key}.{label}.{ext}`, the format for `{key}.{label}.{format}.{ext}`. */
  formatClass: FormatClass;
  ext: ImageExtension;
}

/** The parts of a thumbnail's file name, or null for any other name. */
export function parseThumbnailName(name: string): ThumbnailName | null {
  const parts = name.split('.');
  const key = parts[0];
  const label = parts[1];
  const ext = parts[parts.length - 1];
  if (key === undefined || label === undefined || ext === undefined) return null;
  if (parts.length !== 3 && parts.length !== 4) return null;
  if (!KEY_NAME_PATTERN.test(key) || !LABEL_NAME_PATTERN.test(label) || !isImageExtension(ext)) return null;
  if (parts.length === 3) return { key, label, formatClass: 'source', ext };
  const format = parts[2];
  if (format === undefined || !isModernFormat(format)) return null;
  return { key, label, formatClass: format, ext };
}

/**
 * What a file in a key directory is, by its name alone (statistics, sweeps):
 * `original` `{key}.{ext}`, `thumbnail` `{key}.{label}.{ext}` or `{key}.{label}.{format}.{ext}`,
 * `sidecar` `{key}.json`, `failure` `{key}.fail`, `{key}.{label}.fail` or `{key}.{label}.{format}.fail`, `temp` `.{name}.{unique}.tmp`, and
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
  const fourth = parts[3];
  if (parts.length === 4 && second !== undefined && LABEL_NAME_PATTERN.test(second) && third !== undefined && isModernFormat(third)) {
    if (fourth !== undefined && isImageExtension(fourth)) return 'thumbnail';
    if (fourth === 'fail') return 'failure';
  }
  return 'other';
}
