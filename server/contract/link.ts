/**
 * The URL contract: `/{bucket}/{size}/{signature}/{ext_url}[/proxy]`. Pure. parseLink
 * reads a link, formatLink writes one: every link this project builds (CLI, tests) is
 * written by formatLink.
 *
 * Parsing is split in two so the order of refusals matches nginx's njs check: the
 * structure (segments, bucket, size, alphabets) is checked first, then the caller
 * verifies the signature, and only a signed link has its image URL decoded and judged.
 */
import { ImageproxyError } from '../errors.js';
import { SIGNATURE_PATTERN } from './signing.js';
import { FULL_SIZE, parseSize, type SizeSpec } from './sizes.js';

export interface LinkRules {
  buckets: ReadonlySet<string>;
  sizes: readonly number[];
}

/** The contract's rules as a config sets them. */
export function linkRulesOf(config: { buckets: Readonly<Record<string, unknown>>; sizes: readonly number[] }): LinkRules {
  return { buckets: new Set(Object.keys(config.buckets)), sizes: config.sizes };
}

/** The path of a link an admin pastes, as a path or a whole URL, without its query string. */
export function linkPathOf(text: string): string {
  return text.replace(/^https?:\/\/[^/]+/, '').split('?')[0] ?? '';
}

export interface ParsedLink {
  bucket: string;
  size: SizeSpec;
  signature: string;
  /** As it appears in the path: this is what was signed. */
  extUrl: string;
  proxy: boolean;
}

const BASE64URL_PATTERN = /^[A-Za-z0-9_-]+={0,2}$/;
/**
 * Longest ext_url accepted, in characters: longer than any URL a browser or Gazelle
 * would keep; bounds the work on hostile input. nginx/imageproxy.js gets it from the
 * generated config module.
 */
export const MAX_EXT_URL_LENGTH = 8192;

/** Whether an ext_url has the contract's shape (base64url, bounded length); decodeImageUrl judges its content. */
export function isExtUrlShaped(extUrl: string): boolean {
  return extUrl.length <= MAX_EXT_URL_LENGTH && BASE64URL_PATTERN.test(extUrl);
}

/** The refusal of an ext_url that is not shaped: too long, or not base64url. */
function extUrlShapeError(extUrl: string): ImageproxyError {
  if (extUrl.length > MAX_EXT_URL_LENGTH) {
    return new ImageproxyError('url_too_long', `image URL too long: its base64url form has at most ${MAX_EXT_URL_LENGTH} characters`, {
      detail: `${extUrl.length} characters`,
    });
  }
  return new ImageproxyError('bad_url', 'image URL is not base64url');
}

function decodeSegment(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new ImageproxyError('bad_path', 'malformed percent-encoding in path');
  }
}

/** Splits and checks a request path (without query string). Throws ImageproxyError. */
export function parseLink(pathname: string, rules: LinkRules): ParsedLink {
  if (!pathname.startsWith('/')) throw new ImageproxyError('bad_path', 'path must start with /');
  const segments = pathname.slice(1).split('/').map(decodeSegment);
  if (segments.length !== 4 && segments.length !== 5) {
    throw new ImageproxyError('bad_path', 'link must have 4 or 5 path segments', {
      detail: `${segments.length} segments`,
    });
  }
  const [bucket = '', sizeSegment = '', signature = '', extUrl = '', fifth] = segments;
  if (fifth !== undefined && fifth !== 'proxy') {
    throw new ImageproxyError('bad_path', 'fifth path segment must be proxy');
  }
  const proxy = fifth === 'proxy';
  if (!rules.buckets.has(bucket)) throw new ImageproxyError('unknown_bucket', 'unknown bucket');
  if (!SIGNATURE_PATTERN.test(signature)) {
    throw new ImageproxyError('bad_signature', 'invalid or expired signature', {
      detail: 'signature is not 16 base64url characters',
    });
  }
  if (!isExtUrlShaped(extUrl)) throw extUrlShapeError(extUrl);
  // With /proxy the size is ignored: pass-through never resizes.
  const size = proxy ? FULL_SIZE : parseSize(sizeSegment, rules.sizes);
  return { bucket, size, signature, extUrl, proxy };
}

/** The size segment of a link: `full` or the size's label (`150x`, `x200`, `250x250`). */
export function sizeSegment(size: SizeSpec): string {
  return size.kind === 'full' ? 'full' : size.label;
}

/**
 * A link to write. The size is a parsed size, or a segment as it is to appear (a test
 * of refusals writes sizes no config allows).
 */
export type LinkParts = Omit<ParsedLink, 'size'> & { size: SizeSpec | string };

/**
 * The path of a link, the inverse of parseLink (which reads a /proxy link's size as
 * full, so a parsed proxy link is written with `full`). Checks nothing: signLinkFor in
 * server/contract/linkTools.ts decides what may be signed.
 */
export function formatLink(link: LinkParts): string {
  const size = typeof link.size === 'string' ? link.size : sizeSegment(link.size);
  return `/${link.bucket}/${size}/${link.signature}/${link.extUrl}${link.proxy ? '/proxy' : ''}`;
}

/** ext_url for an image URL as Gazelle writes it: base64url of its UTF-8 bytes, unpadded. */
export function encodeImageUrl(imageUrl: string): string {
  return Buffer.from(imageUrl, 'utf8').toString('base64url');
}

/** The decoded image URL bytes: the storage key is derived from exactly these. */
export function imageUrlBytes(extUrl: string): Buffer {
  return Buffer.from(extUrl, 'base64url');
}

/** The image URL a signed link points to; refuses anything but a plain http(s) URL. */
export function decodeImageUrl(extUrl: string): URL {
  const text = imageUrlBytes(extUrl).toString('utf8');
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ImageproxyError('bad_url', 'image URL is not a valid URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ImageproxyError('bad_url', 'image URL must be http or https', {
      detail: `scheme ${url.protocol}`,
    });
  }
  if (url.hostname === '') throw new ImageproxyError('bad_url', 'image URL has no host');
  if (url.username !== '' || url.password !== '') {
    throw new ImageproxyError('bad_url', 'image URL must not carry credentials');
  }
  return url;
}
