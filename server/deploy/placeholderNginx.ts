/**
 * nginx's side of config `placeholder` (server/http/placeholder.ts): its own error answers
 * (410, 404, 502, 504, …) carry the placeholder image to an image load, as the app's do.
 * Pure: returns config text.
 *
 * Which requests: a `map` of `$http_accept` rendered from the TypeScript decision, as
 * regular expressions that say yes only where the decision is plain (a list of
 * `type/subtype` elements whose only parameter is a q above 0, no `text/html`, at most
 * the elements and length the parser takes) and then give the decision's format;
 * everything else gets the text. So nginx may answer text where the app would answer an
 * image, never the reverse (test/placeholder.test.ts checks the patterns against
 * placeholderFormatOf, and that every browser's <img> Accept gets its image). No exact
 * strings: browsers' Accept strings are longer than the default map_hash_bucket_size
 * takes, and raising it is an http-level directive the admin's nginx.conf may already
 * set. The map is read only by an error location, never on a hit.
 *
 * How: the error location, for an image load, rewrites to an internal location whose njs
 * handler (nginx/placeholder.js) sends the bytes of a second map's value
 * (`{content type} {base64}`) with the status and code the URI names. The bytes live
 * in the config nginx's master reads: no file for the workers to open.
 */
import { MAX_ACCEPT_ELEMENTS, MAX_ACCEPT_LENGTH } from '../contract/accept.js';
import { PLACEHOLDER_FORMATS, PLACEHOLDER_IMAGES, placeholderBase64, type PlaceholderFormat } from '../http/placeholder.js';

/** The placeholder's format for this request's Accept, or empty: the text. */
const FORMAT_VARIABLE = '$imageproxy_placeholder_format';
/** `{content type} {base64}` of that format, or empty. */
const IMAGE_VARIABLE = '$imageproxy_placeholder_image';
const NJS_SCRIPT_NAME = 'placeholder.js';
const NJS_IMPORT_NAME = 'imageproxy_placeholder';
/** Internal: `{prefix}/{status}/{code}`, answered by the njs handler. */
const LOCATION_PREFIX = '/_imageproxy_placeholder/';

/**
 * Accept headers of image loads in the browsers a Gazelle site sees (an `<img>` or CSS
 * image): the patterns must give each its decision.
 */
export const BROWSER_IMAGE_ACCEPTS: readonly string[] = [
  // Chrome, Edge (Chromium), Opera
  'image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8',
  // Firefox 92 to 127, and 128 on
  'image/avif,image/webp,*/*',
  'image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5',
  // Firefox 65 to 91
  'image/webp,*/*',
  // Safari 17 on, Safari 16
  'image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5',
  'image/webp,image/avif,video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5',
  // Safari 13 to 15
  'image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5',
  // old Edge (EdgeHTML)
  'image/png, image/svg+xml, image/*; q=0.8, */*; q=0.5',
];

// ---- the patterns: a strict subset of what parseAccept reads ---------------------------

// SP and HTAB, as the parser skips them; written as escapes PCRE and JavaScript read alike.
const OWS = '[\\x20\\x09]*';
// Tokens of letters, digits and .+- (a subset of RFC 9110's tchar); `*` only as a whole subtype, or `*/*`.
const TOKEN = '[a-z0-9.+-]+';
const MEDIA_RANGE = `(?:\\*/\\*|${TOKEN}/(?:${TOKEN}|\\*))`;
// A q above 0: `1`, `1.`, `1.000`, or `0.` and one to three digits not all zero.
const POSITIVE_Q = '(?:1(?:\\.0{0,3})?|0\\.(?:[1-9][0-9]{0,2}|0[1-9][0-9]?|00[1-9]))';
const ELEMENT = `${MEDIA_RANGE}(?:${OWS};${OWS}q=${POSITIVE_Q})?`;
const PLAIN_LIST = `${OWS}${ELEMENT}(?:${OWS},${OWS}${ELEMENT}){0,${MAX_ACCEPT_ELEMENTS - 1}}${OWS}$`;

/** A lookahead: some element is exactly one of `ranges` (regex-escaped). */
function listsOneOf(ranges: readonly string[]): string {
  return `(?=(?:.*,)?${OWS}(?:${ranges.join('|')})${OWS}(?:;|,|$))`;
}

/**
 * The regular expressions of the map, in order (case-insensitive, `~*`), each with the
 * format it gives. Every element has q > 0, so a range listed is a range accepted: PNG
 * when an image type is listed and `image/png`, `image/*` or `*\/*` is; else the first
 * other format listed exactly.
 */
export function placeholderAcceptPatterns(): Array<{ pattern: string; format: PlaceholderFormat }> {
  const plain = `^(?=.{0,${MAX_ACCEPT_LENGTH}}$)(?!.*text/html)`;
  return PLACEHOLDER_FORMATS.map((format) => {
    const own = `image/${PLACEHOLDER_IMAGES[format].subtype}`;
    const accepted = format === 'png' ? `(?=(?:.*,)?${OWS}image/)${listsOneOf([own, 'image/\\*', '\\*/\\*'])}` : listsOneOf([own]);
    return { pattern: `${plain}${accepted}${PLAIN_LIST}`, format };
  });
}

// ---- rendering -----------------------------------------------------------------------

/** http level: the njs handler's module and the two maps. */
export function placeholderHttpLevel(): string[] {
  return [
    `js_import ${NJS_IMPORT_NAME} from ${NJS_SCRIPT_NAME};`,
    '',
    // server/http/placeholder.ts decides; nginx/placeholder.js sends.
    `map $http_accept ${FORMAT_VARIABLE} {`,
    '    default "";',
    ...placeholderAcceptPatterns().map(({ pattern, format }) => `    "~*${pattern}" ${format};`),
    '}',
    '',
    `map ${FORMAT_VARIABLE} ${IMAGE_VARIABLE} {`,
    '    default "";',
    ...PLACEHOLDER_FORMATS.map((format) => `    ${format} "${PLACEHOLDER_IMAGES[format].contentType} ${placeholderBase64(format)}";`),
    '}',
    '',
  ];
}

/**
 * The lines of an error location before its text: an image load goes to the placeholder
 * with this status and code. Both answers depend on Accept.
 */
export function placeholderBranch(status: number, code: string): string[] {
  return [
    'add_header Vary Accept always;',
    `if (${IMAGE_VARIABLE} != "") {`,
    `    rewrite ^ ${LOCATION_PREFIX}${status}/${code} last;`,
    '}',
  ];
}

/**
 * The location answering with the placeholder: njs sets the type, X-Imageproxy-Error and
 * the status; `headers` (the error answers' no-store and security headers) and Vary are
 * added as to the text; `headerFilter` first deletes what an earlier pass left.
 */
export function placeholderLocation(headers: readonly string[], headerFilter: string): string[] {
  return [
    `location ^~ ${LOCATION_PREFIX} {`,
    '    internal;',
    `    js_header_filter ${headerFilter};`,
    ...headers.map((line) => `    ${line}`),
    '    add_header Vary Accept always;',
    `    js_content ${NJS_IMPORT_NAME}.send;`,
    '}',
  ];
}
