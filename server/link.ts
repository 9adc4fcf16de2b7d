/**
 * The URL contract: `/{bucket}/{size}/{signature}/{ext_url}[/proxy]`. Pure.
 *
 * Parsing is split in two so the order of refusals matches nginx's njs check: the
 * structure (segments, bucket, size, alphabets) is checked first, then the caller
 * verifies the signature, and only a signed link has its image URL decoded and judged.
 */
import type { Config } from './config.js';
import { ImageproxyError } from './errors.js';
import { SIGNATURE_PATTERN } from './signing.js';
import { FULL_SIZE, parseSize, type SizeSpec } from './sizes.js';

export interface LinkRules {
  buckets: ReadonlySet<string>;
  sizes: readonly number[];
}

/** The contract's rules as a config sets them. */
export function linkRulesOf(config: Pick<Config, 'buckets' | 'sizes'>): LinkRules {
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
// Longer than any URL a browser or Gazelle would keep; bounds the work on hostile input.
const MAX_EXT_URL_LENGTH = 8192;

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
  if (extUrl.length > MAX_EXT_URL_LENGTH || !BASE64URL_PATTERN.test(extUrl)) {
    throw new ImageproxyError('bad_url', 'image URL is not base64url');
  }
  // With /proxy the size is ignored: pass-through never resizes.
  const size = proxy ? FULL_SIZE : parseSize(sizeSegment, rules.sizes);
  return { bucket, size, signature, extUrl, proxy };
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
