/**
 * A placeholder instead of a broken image (config `placeholder`): which requests get one,
 * in which format, and the error answer either way. Pure: no I/O.
 *
 * An error answer is text (`code: message`), which a browser showing an `<img>` draws as
 * a broken-image icon. With the option on, a request that is plainly an image load gets
 * a 1×1 light grey image instead, stretched by the page to the box it reserved, with the
 * same status, `X-Imageproxy-Error` and `no-store`: scripts and tools still read the code
 * from the header, nothing caches it. nginx's own answers make the same choice from a
 * `map` rendered from this module (server/deploy/placeholderNginx.ts).
 *
 * Decisions (each one errs toward the text, which is what everyone got before):
 * - **Plainly an image load**: the Accept header (RFC 9110, parsed by
 *   server/contract/accept.ts) lists an image type (`image/<x>` or `image/*`) with q > 0
 *   and does not list `text/html` with q > 0. A navigation lists `text/html`; curl's
 *   `*\/*` lists no image type; a malformed header is nobody's image load.
 * - **A format the client accepts**: the first of PLACEHOLDER_FORMATS whose media type
 *   the header accepts, each type weighed by its most specific range (`image/png`, else
 *   `image/*`, else `*\/*`; the lowest q where one is listed twice), so
 *   `image/*, image/png;q=0` gets a GIF. The order is by size and support, not by the
 *   client's q: a 1×1 image looks the same in every format, acceptable is what counts.
 *   No format accepted (`image/heic` alone): text.
 */
import { parseAccept, type AcceptElement } from '../contract/accept.js';
import { ERROR_CACHE_CONTROL, errorText, errorTextHeaders } from './responseHeaders.js';

/** Placeholder formats in order of preference (every browser decodes PNG and GIF); named as the file extensions. */
export const PLACEHOLDER_FORMATS = ['png', 'gif', 'webp', 'avif', 'jpg'] as const;
export type PlaceholderFormat = (typeof PLACEHOLDER_FORMATS)[number];

export interface PlaceholderImage {
  /** The media subtype Accept names it by (`image/<subtype>`). */
  subtype: string;
  contentType: string;
  bytes: Buffer;
}

/**
 * One light grey (224, 224, 224) pixel in each format, made once with sharp
 * (`sharp({ create: { width: 1, height: 1, channels: 3, background } })`: PNG and JPEG
 * in `b-w`, WebP and AVIF lossless); test/placeholder.test.ts decodes each and checks
 * size, format and colour.
 */
const PLACEHOLDER_BASE64: Readonly<Record<PlaceholderFormat, string>> = {
  png: 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACXBIWXMAAAPoAAAD6AG1e1JrAAAACklEQVQI12N4AAAA4gDhv/hcQgAAAABJRU5ErkJggg==',
  gif: 'R0lGODlhAQABAIAAAExpceDg4CH5BAUAAAAALAAAAAABAAEAAAICTAEAOw==',
  webp: 'UklGRh4AAABXRUJQVlA4TBEAAAAvAAAAAAdQ8IIXvP+BiOh/AAA=',
  avif:
    'AAAAHGZ0eXBhdmlmAAAAAG1pZjFhdmlmbWlhZgAAAOptZXRhAAAAAAAAACFoZGxyAAAAAAAAAABwaWN0AAAAAAAAAAAAAAAAAAAAACJpbG9jAAAAAERAAAEAAQAAAAABDgAB' +
    'AAAAAAAAACAAAAAjaWluZgAAAAAAAQAAABVpbmZlAgAAAAABAABhdjAxAAAAAA5waXRtAAAAAAABAAAAamlwcnAAAABLaXBjbwAAAAxhdjFDgSACAAAAABNjb2xybmNs' +
    'eAABAA0AAIAAAAAUaXNwZQAAAAAAAAABAAAAAQAAABBwaXhpAAAAAAMICAgAAAAXaXBtYQAAAAAAAAABAAEEgQIDBAAAAChtZGF0EgAKBzgADlAQ0AIyExAAAAAP+I79' +
    'WMuWK+t+g55URdA=',
  jpg: '/9j/2wBDAAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQH/wAALCAABAAEBAREA/8QAFAABAAAAAAAAAAAAAAAAAAAACv/EABQQAQAAAAAAAAAAAAAAAAAAAAD/2gAIAQEAAD8AYA//2Q==',
};

const SUBTYPES: Readonly<Record<PlaceholderFormat, string>> = { png: 'png', gif: 'gif', webp: 'webp', avif: 'avif', jpg: 'jpeg' };

export const PLACEHOLDER_IMAGES: Readonly<Record<PlaceholderFormat, PlaceholderImage>> = Object.fromEntries(
  PLACEHOLDER_FORMATS.map((format) => [
    format,
    { subtype: SUBTYPES[format], contentType: `image/${SUBTYPES[format]}`, bytes: Buffer.from(PLACEHOLDER_BASE64[format], 'base64') },
  ]),
) as Record<PlaceholderFormat, PlaceholderImage>;

/** The base64 text of a placeholder, for the rendered nginx config. */
export function placeholderBase64(format: PlaceholderFormat): string {
  return PLACEHOLDER_BASE64[format];
}

/** A listed image type with q > 0 and no listed `text/html` with q > 0. */
function isImageLoad(elements: readonly AcceptElement[]): boolean {
  const listed = (type: string, subtype: string | null): boolean =>
    elements.some((element) => element.type === type && (subtype === null || element.subtype === subtype) && element.quality > 0);
  return listed('image', null) && !listed('text', 'html');
}

/** The weight of `image/<subtype>`: its most specific range's (the lowest q of that range), 0 when none matches. */
function acceptedQuality(elements: readonly AcceptElement[], subtype: string): number {
  for (const [type, rangeSubtype] of [['image', subtype], ['image', '*'], ['*', '*']] as const) {
    const matching = elements.filter((element) => element.type === type && element.subtype === rangeSubtype);
    if (matching.length > 0) return Math.min(...matching.map((element) => element.quality));
  }
  return 0;
}

/** The placeholder a request with this Accept header gets, or null: it gets the text. */
export function placeholderFormatOf(accept: string | undefined): PlaceholderFormat | null {
  if (accept === undefined) return null;
  const elements = parseAccept(accept);
  if (elements === null || !isImageLoad(elements)) return null;
  return PLACEHOLDER_FORMATS.find((format) => acceptedQuality(elements, SUBTYPES[format]) > 0) ?? null;
}

/** An error answer: its headers (without the security headers) and body. */
export interface ErrorAnswer {
  headers: Record<string, string>;
  body: string | Buffer;
}

/**
 * The answer to a refusal: the text, or with `placeholder` on and an image load's
 * Accept, the placeholder with the text's status line and error headers. With the option
 * on, either answer depends on Accept and says so (`Vary`).
 */
export function errorAnswer(code: string, message: string, accept: string | undefined, placeholder: boolean): ErrorAnswer {
  if (!placeholder) return { headers: errorTextHeaders(code), body: errorText(code, message) };
  const format = placeholderFormatOf(accept);
  if (format === null) return { headers: { ...errorTextHeaders(code), Vary: 'Accept' }, body: errorText(code, message) };
  const image = PLACEHOLDER_IMAGES[format];
  return {
    headers: {
      'Content-Type': image.contentType,
      'Content-Length': String(image.bytes.length),
      'Cache-Control': ERROR_CACHE_CONTROL,
      'X-Imageproxy-Error': code,
      Vary: 'Accept',
    },
    body: image.bytes,
  };
}
