/**
 * Format negotiation for thumbnails: an `Accept` header and the formats the server
 * offers, in, one of a handful of classes out. Pure: no I/O.
 *
 * The class, never the header text, is what a variant's file name, the nginx `map`
 * value and a cache key are made of: any client can invent new Accept strings, and each
 * one must land on one of FORMAT_CLASSES, so the number of variants (and encodes) per
 * thumbnail stays bounded whatever is sent.
 *
 * Parsing follows RFC 9110 §12.5.1 (Accept) with §5.6 (lists, tokens, quoted strings,
 * parameters) and §12.4.2 (qvalue):
 * - media types and parameter names are case-insensitive; optional whitespace around
 *   `,` and `;` (and, leniently, around `=`) is skipped; empty list elements (`a,,b`)
 *   and empty parameters (`a;;q=1`) are allowed, as §5.6.1 asks of recipients;
 * - any parameter named `q`, wherever it stands among the parameters (§12.4.2), is the
 *   weight: `0`, `1` or a decimal with at most three digits, from 0 to 1 (`0.`, `1.000`
 *   are valid; `.5`, `0.1234`, `1.001`, `-0`, a quoted value are not);
 * - `q=0` means "not acceptable".
 *
 * Decisions (each one errs toward the source format, which every client decodes):
 * - **Malformed means the whole header.** One element that breaks the grammar (a
 *   missing subtype, a bad q, a second q on one element, an unterminated quoted string,
 *   stray characters) makes the header malformed, and a malformed header gets the source
 *   format. No browser sends one, so nothing is lost; skipping the bad element instead
 *   could turn `image/avif;q=0.x` (meant as "no") into "avif accepted" via another one.
 * - **Only an exact `image/avif` or `image/webp` counts.** `*\/*` and `image/*` say
 *   nothing about these two formats: a client that names neither may not decode them.
 * - **A format listed twice takes its lowest q**, so `image/avif;q=0` anywhere excludes
 *   AVIF whatever else the header says about it.
 * - **The source format is the fallback, not a competitor.** The class must depend on
 *   the Accept header alone (nginx picks the file before it knows the source's type), so
 *   the chosen format is the offered one with the highest q above 0; ties go to the
 *   server's order. A client listing `image/jpeg;q=1, image/webp;q=0.5` gets WebP: it
 *   said WebP is acceptable, and no browser ranks an old format above a listed new one.
 * - **Bounded work.** A header longer than MAX_ACCEPT_LENGTH or with more than
 *   MAX_ACCEPT_ELEMENTS elements is malformed; the scan is one pass over the characters
 *   with no regular expression and no backtracking, so its cost is linear in the length.
 *
 * Porting to njs 0.7.9: parseAccept, parseQuality, negotiateFormat and formatClassOf use
 * only ES5 plus let/const/arrow functions (charCodeAt loops, plain objects and arrays, no
 * regex, no lookbehind, no spread, no optional chaining, no Set/Map): they port directly
 * by deleting the type annotations. Only the exported constant arrays' `as const` and the
 * `readonly` markers are TypeScript-only.
 */

/** Formats a thumbnail may be converted to, named as in config `formats`. */
export const MODERN_FORMATS = ['avif', 'webp'] as const;
export type ModernFormat = (typeof MODERN_FORMATS)[number];

/**
 * Every outcome of negotiation: a modern format, or `source` (the origin's format, as
 * today). These exact strings are the variant file-name suffixes and the nginx map
 * values; never anything taken from the header.
 */
export const FORMAT_CLASSES = ['avif', 'webp', 'source'] as const;
export type FormatClass = (typeof FORMAT_CLASSES)[number];

/** The class of a client that gets the source format. */
const SOURCE_CLASS: FormatClass = 'source';

/**
 * Longest Accept header parsed; a longer one is malformed (the source format). Browsers
 * send at most about 130 characters (Safari), so twice that refuses none. The bound is
 * tight because nginx parses a header it does not know with the njs port of this file
 * (nginx/imageproxy.js), where each character costs a good part of what a whole hit
 * costs: any client may send a long header to a thumbnail link, and its parse must stay
 * within a few hits' work. nginx and the app read the same constant, so they agree.
 */
export const MAX_ACCEPT_LENGTH = 256;

/** Most list elements parsed; browsers send about ten. Bounds the njs parse as above. */
export const MAX_ACCEPT_ELEMENTS = 32;

/** One media range of an Accept header, lower-cased, with its weight. */
export interface AcceptElement {
  type: string;
  subtype: string;
  /** The weight from 0 to 1 (1 when no q parameter). */
  quality: number;
}

// RFC 9110 tchar: "!#$%&'*+-.^_`|~", digits, letters.
const TOKEN_PUNCTUATION = "!#$%&'*+-.^_`|~";

function isTokenChar(code: number): boolean {
  if (code >= 0x30 && code <= 0x39) return true; // 0-9
  if (code >= 0x41 && code <= 0x5a) return true; // A-Z
  if (code >= 0x61 && code <= 0x7a) return true; // a-z
  return code < 0x80 && TOKEN_PUNCTUATION.indexOf(String.fromCharCode(code)) !== -1;
}

/** SP or HTAB (OWS). */
function isWhitespace(code: number): boolean {
  return code === 0x20 || code === 0x09;
}

/**
 * A qvalue as RFC 9110 §12.4.2 writes it: `0` or `1`, optionally followed by `.` and at
 * most three digits, and at most 1. Returns null for anything else.
 */
export function parseQuality(text: string): number | null {
  const length = text.length;
  if (length === 0 || length > 5) return null;
  const first = text.charCodeAt(0);
  if (first !== 0x30 && first !== 0x31) return null; // "0" or "1"
  if (length === 1) return first - 0x30;
  if (text.charCodeAt(1) !== 0x2e) return null; // "."
  let thousandths = 0;
  let scale = 100;
  for (let index = 2; index < length; index++) {
    const digit = text.charCodeAt(index) - 0x30;
    if (digit < 0 || digit > 9) return null;
    thousandths += digit * scale;
    scale = scale / 10;
  }
  if (first === 0x31 && thousandths !== 0) return null; // above 1
  return first === 0x31 ? 1 : thousandths / 1000;
}

/**
 * The elements of an Accept header, or null when it is malformed (see the module
 * comment). An empty header has no elements.
 */
export function parseAccept(header: string): AcceptElement[] | null {
  const length = header.length;
  if (length > MAX_ACCEPT_LENGTH) return null;
  const elements: AcceptElement[] = [];
  let index = 0;

  const skipWhitespace = (): void => {
    while (index < length && isWhitespace(header.charCodeAt(index))) index++;
  };
  const readToken = (): string => {
    const start = index;
    while (index < length && isTokenChar(header.charCodeAt(index))) index++;
    return header.slice(start, index);
  };
  // A quoted-string starting at `index` (on its opening quote): its raw text, or null
  // when it is not terminated or holds a character the grammar forbids.
  const readQuotedString = (): string | null => {
    const start = index;
    index++; // the opening quote
    while (index < length) {
      const code = header.charCodeAt(index);
      if (code === 0x22) {
        index++;
        return header.slice(start, index);
      }
      if (code === 0x5c) {
        // quoted-pair: a backslash and one HTAB, SP, VCHAR or obs-text
        index++;
        if (index >= length) return null;
        const escaped = header.charCodeAt(index);
        if (escaped !== 0x09 && (escaped < 0x20 || escaped === 0x7f || escaped > 0xff)) return null;
      } else if (code !== 0x09 && (code < 0x20 || code === 0x7f || code > 0xff)) {
        return null;
      }
      index++;
    }
    return null;
  };

  while (true) {
    skipWhitespace();
    if (index >= length) break;
    if (header.charCodeAt(index) === 0x2c) {
      index++; // an empty list element
      continue;
    }
    if (elements.length >= MAX_ACCEPT_ELEMENTS) return null;

    const type = readToken().toLowerCase();
    if (type === '' || header.charCodeAt(index) !== 0x2f) return null; // "/"
    index++;
    const subtype = readToken().toLowerCase();
    if (subtype === '' || (type === '*' && subtype !== '*')) return null;

    let quality = 1;
    let sawQuality = false;
    while (true) {
      skipWhitespace();
      if (index >= length || header.charCodeAt(index) !== 0x3b) break; // ";"
      index++;
      skipWhitespace();
      if (index >= length) break;
      const next = header.charCodeAt(index);
      if (next === 0x3b || next === 0x2c) continue; // an empty parameter
      const name = readToken().toLowerCase();
      if (name === '') return null;
      skipWhitespace();
      if (header.charCodeAt(index) !== 0x3d) return null; // "="
      index++;
      skipWhitespace();
      const quoted = header.charCodeAt(index) === 0x22;
      const value = quoted ? readQuotedString() : readToken();
      if (value === null || value === '') return null;
      if (name === 'q') {
        const parsed = quoted || sawQuality ? null : parseQuality(value);
        if (parsed === null) return null;
        quality = parsed;
        sawQuality = true;
      }
    }
    skipWhitespace();
    if (index < length && header.charCodeAt(index) !== 0x2c) return null;
    elements.push({ type, subtype, quality });
  }
  return elements;
}

/**
 * The weight a parsed header gives an image format: its lowest q among the elements
 * naming `image/<format>` exactly, or 0 when none does (wildcards do not count).
 */
function qualityOf(elements: readonly AcceptElement[], format: ModernFormat): number {
  let quality = -1;
  for (let index = 0; index < elements.length; index++) {
    const element = elements[index];
    if (element === undefined || element.type !== 'image' || element.subtype !== format) continue;
    if (quality === -1 || element.quality < quality) quality = element.quality;
  }
  return quality === -1 ? 0 : quality;
}

/**
 * The format to serve: among `offered` (the server's order of preference, config
 * `formats`), the one the header gives the highest q above 0, the earliest on a tie; null
 * (the source format) when none qualifies, the header is absent or malformed, or nothing
 * is offered.
 */
export function negotiateFormat(accept: string | undefined, offered: readonly ModernFormat[]): ModernFormat | null {
  if (accept === undefined || offered.length === 0) return null;
  const elements = parseAccept(accept);
  if (elements === null) return null;
  let chosen: ModernFormat | null = null;
  let chosenQuality = 0;
  for (let index = 0; index < offered.length; index++) {
    const format = offered[index];
    if (format === undefined) continue;
    const quality = qualityOf(elements, format);
    if (quality > chosenQuality) {
      chosen = format;
      chosenQuality = quality;
    }
  }
  return chosen;
}

/** negotiateFormat as a class: the format's name, or `source`. */
export function formatClassOf(accept: string | undefined, offered: readonly ModernFormat[]): FormatClass {
  const chosen = negotiateFormat(accept, offered);
  return chosen === null ? SOURCE_CLASS : chosen;
}
