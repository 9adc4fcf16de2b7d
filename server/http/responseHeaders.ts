/**
 * Response headers. Pure: the same rules serve the standalone app and, rendered into
 * the nginx config, the files nginx sends.
 */
import type { ImageExtension } from '../contract/layout.js';
import { FORMAT_INFO } from '../images/sniff.js';

/** Stored images never change: a link's bytes are fixed once fetched. */
export const IMAGE_CACHE_CONTROL = 'public, max-age=604800, immutable';
/** Errors may go away (an origin comes back, a link gets signed): never cache them. */
export const ERROR_CACHE_CONTROL = 'no-store';
/**
 * A stand-in for a format class's file that could not be made (its encode failed): the
 * source-format thumbnail, kept by caches a minute only, so the class gets its own
 * format once it is made rather than the source's for a week.
 */
export const PROVISIONAL_CACHE_CONTROL = 'public, max-age=60';

/** The text every refusal answers with: `code: message`. */
export function errorText(code: string, message: string): string {
  return `${code}: ${message}\n`;
}

/**
 * The headers of that text (the app, a request the parser refused, `busy` past the slice
 * queue); the security headers come with them too, from helmet or SECURITY_HEADERS.
 */
export function errorTextHeaders(code: string): Record<string, string> {
  return { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': ERROR_CACHE_CONTROL, 'X-Imageproxy-Error': code };
}
/**
 * Nothing we answer may run script or load anything, even if a browser is tricked into
 * rendering it. The directives feed helmet (the app); the string, nginx.
 */
export const CSP_DIRECTIVES: Readonly<Record<string, readonly string[]>> = { 'default-src': ["'none'"], sandbox: [] };
export const CONTENT_SECURITY_POLICY = Object.entries(CSP_DIRECTIVES)
  .map(([name, values]) => [name, ...values].join(' '))
  .join('; ');
/** Images are embedded by the site, another origin. */
export const CROSS_ORIGIN_RESOURCE_POLICY = 'cross-origin';
/** Nothing we send makes requests, but if it did, it would tell nobody where from. */
export const REFERRER_POLICY = 'no-referrer';

export const CONTENT_TYPE_BY_EXTENSION = Object.fromEntries(
  Object.values(FORMAT_INFO).map((info) => [info.ext, info.contentType]),
) as Record<ImageExtension, string>;

/** Headers on every answer, image or error. */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'X-Content-Type-Options': 'nosniff',
  'Content-Security-Policy': CONTENT_SECURITY_POLICY,
  'Cross-Origin-Resource-Policy': CROSS_ORIGIN_RESOURCE_POLICY,
  'Referrer-Policy': REFERRER_POLICY,
};
