/**
 * What a GET with a Range header gets for an image answered from a bucket (delivery
 * `direct`): one part (206), the whole image (200), or 416. Pure: the caller parses the
 * header with Express's `req.range(size, { combine: true })` and sends the answer. The
 * tree's files get the same from `send`; nginx does it in front of either.
 *
 * Several parts are answered whole (a server may ignore Range; multipart bodies buy an
 * image nothing), and so is a Range whose If-Range names another version of the image.
 */

/** Express's req.range: undefined without a Range header, -1 unsatisfiable, -2 malformed. */
export type ParsedRanges = number | undefined | (ReadonlyArray<{ start: number; end: number }> & { type?: string });

export type RangeDecision = { kind: 'whole' } | { kind: 'part'; start: number; end: number } | { kind: 'unsatisfiable' };

/** The image's validators as this answer states them. */
export interface RangeValidators {
  /** The ETag header's value, quotes included. */
  etag: string;
  lastModifiedMs: number;
}

const WHOLE: RangeDecision = { kind: 'whole' };

/**
 * Whether an If-Range still names this image (RFC 9110 13.1.5): an entity tag by strong
 * comparison (a weak one never matches), a date only when it is the Last-Modified itself.
 */
export function ifRangeMatches(ifRange: string, validators: RangeValidators): boolean {
  const value = ifRange.trim();
  if (value.startsWith('W/')) return false;
  if (value.startsWith('"')) return value === validators.etag;
  const date = Date.parse(value);
  return Number.isFinite(date) && date === Math.floor(validators.lastModifiedMs / 1000) * 1000;
}

export function rangeDecision(parsed: ParsedRanges, ifRange: string | undefined, validators: RangeValidators): RangeDecision {
  // No Range, or one we cannot read: the whole image, as if none was sent.
  if (parsed === undefined || parsed === -2) return WHOLE;
  if (ifRange !== undefined && !ifRangeMatches(ifRange, validators)) return WHOLE;
  if (typeof parsed === 'number') return { kind: 'unsatisfiable' };
  if (parsed.type !== 'bytes' || parsed.length !== 1) return WHOLE;
  const [part] = parsed;
  return part === undefined ? WHOLE : { kind: 'part', start: part.start, end: part.end };
}
