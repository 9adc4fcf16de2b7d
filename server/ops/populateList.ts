/**
 * The list `imageproxy populate` reads, one entry per line, and the lines of its
 * `.success` / `.failed` reports. Pure.
 *
 * A line is blank, a `#` comment, a plain http(s) image URL (stored in the bucket given
 * by `--bucket`), or a signed link as `purge` takes it (a path or a whole URL; its bucket
 * and size are used, its signature is not checked: the admin owns the list).
 */
import { ImageproxyError, type ErrorCode } from '../errors.js';
import { storageKey } from '../contract/layout.js';
import { decodeImageUrl, encodeImageUrl, imageUrlBytes, linkPathOf, parseLink, type LinkRules, type ParsedLink } from '../contract/link.js';
import { FULL_SIZE, parseSize, type SizeSpec } from '../contract/sizes.js';
import { MODERN_FORMATS, type ModernFormat } from '../contract/accept.js';

type BoxSize = Extract<SizeSpec, { kind: 'box' }>;

/** One image to store, with the thumbnails to make of it. */
export interface PopulateTarget {
  /** The line as given, trimmed: the reports repeat it. */
  text: string;
  bucket: string;
  /** base64url of the image URL, as a link would carry it (the key derives from its bytes). */
  extUrl: string;
  imageUrl: URL;
  key: string;
  /** Origin host name: the per-host concurrency bound applies to it. */
  host: string;
  /** Thumbnail sizes to make besides the original, no label twice. */
  sizes: BoxSize[];
}

export type PopulateLine =
  | { kind: 'skip' }
  | { kind: 'target'; target: PopulateTarget }
  | { kind: 'invalid'; text: string; code: ErrorCode };

export interface PopulateLineRules {
  link: LinkRules;
  /** Bucket of plain image URLs (`--bucket`). */
  bucket: string;
  /** Thumbnails to make for every line (`--sizes`). */
  sizes: readonly BoxSize[];
}

/**
 * `--sizes 150x,x200,250x250`: each label must name only allowed sizes, exactly as the
 * thumbnail would be labelled (the server would silently drop a size not allowed; an
 * admin asking for one wants to hear so).
 */
export function parseSizeList(text: string, allowed: readonly number[]): BoxSize[] {
  const sizes: BoxSize[] = [];
  for (const label of text.split(',').map((part) => part.trim())) {
    let size: SizeSpec;
    try {
      size = parseSize(label, allowed);
    } catch {
      throw new RangeError(`${JSON.stringify(label)} is not a size such as 150x, x200 or 250x250 of ${allowed.join(', ')}`);
    }
    if (size.kind !== 'box' || size.label !== label) {
      throw new RangeError(`${JSON.stringify(label)} is not a size such as 150x, x200 or 250x250 of ${allowed.join(', ')}`);
    }
    if (!sizes.some((known) => known.label === size.label)) sizes.push(size);
  }
  return sizes;
}

/**
 * `--formats avif,webp`: the format classes whose thumbnails are made ahead (config
 * `formats` names the ones served), each once.
 */
export function parseFormatList(text: string): ModernFormat[] {
  const formats: ModernFormat[] = [];
  for (const name of text.split(',').map((part) => part.trim().toLowerCase())) {
    const format = MODERN_FORMATS.find((known) => known === name);
    if (format === undefined) throw new RangeError(`${JSON.stringify(name)} is not a format of ${MODERN_FORMATS.join(', ')}`);
    if (!formats.includes(format)) formats.push(format);
  }
  return formats;
}

function withSize(sizes: readonly BoxSize[], size: SizeSpec): BoxSize[] {
  if (size.kind !== 'box' || sizes.some((known) => known.label === size.label)) return [...sizes];
  return [size, ...sizes];
}

/** The link a line names, or null when the line is not one of our links. */
function linkOf(text: string, rules: LinkRules): ParsedLink | null {
  const path = linkPathOf(text);
  // A whole URL is a link only when its path has a link's shape; else it is an image URL.
  if (!text.startsWith('/') && path.split('/').length < 5) return null;
  try {
    return parseLink(path, rules);
  } catch (error) {
    if (text.startsWith('/')) throw error;
    return null;
  }
}

function targetOf(text: string, bucket: string, extUrl: string, sizes: BoxSize[]): PopulateTarget {
  const imageUrl = decodeImageUrl(extUrl);
  return { text, bucket, extUrl, imageUrl, key: storageKey(imageUrlBytes(extUrl)), host: imageUrl.hostname, sizes };
}

export function parsePopulateLine(raw: string, rules: PopulateLineRules): PopulateLine {
  const text = raw.trim();
  if (text === '' || text.startsWith('#')) return { kind: 'skip' };
  try {
    const link = linkOf(text, rules.link);
    if (link !== null) {
      // A /proxy link names the same image; populating it means storing it.
      return { kind: 'target', target: targetOf(text, link.bucket, link.extUrl, withSize(rules.sizes, link.size)) };
    }
    const extUrl = encodeImageUrl(text);
    return { kind: 'target', target: targetOf(text, rules.bucket, extUrl, [...rules.sizes]) };
  } catch (error) {
    if (error instanceof ImageproxyError) return { kind: 'invalid', text, code: error.code };
    throw error;
  }
}

/** The full size first (thumbnails are made from it), then each thumbnail. */
export function targetSizes(target: PopulateTarget): SizeSpec[] {
  return [FULL_SIZE, ...target.sizes];
}

/** A `.success` line: the line as given. */
export function successLine(text: string): string {
  return text;
}

/** A `.failed` line: the line as given, a space, the error code. */
export function failedLine(text: string, code: ErrorCode): string {
  return `${text} ${code}`;
}
