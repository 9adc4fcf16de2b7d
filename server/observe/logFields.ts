/**
 * Short log fields. Pure. A got error carries its whole request options (headers,
 * agents, hooks): logged as is, one failed fetch is a screenful. URLs come from links
 * and can be kilobytes long.
 */

/** Longest URL written at info level and below. */
const LOG_URL_CHARS = 200;

export function shortUrl(url: string, maxChars = LOG_URL_CHARS): string {
  return url.length <= maxChars ? url : `${url.slice(0, maxChars)}…(${url.length} chars)`;
}

export interface CauseSummary {
  type: string;
  code?: string;
  message: string;
  cause?: CauseSummary;
}

/** An error's name, code and message (and its causes'), nothing else; null for none. */
export function summarizeCause(value: unknown, depth = 0): CauseSummary | undefined {
  if (value === undefined || value === null) return undefined;
  // eslint-disable-next-line @typescript-eslint/no-base-to-string -- a thrown non-Error is shown as String() shows it
  if (!(value instanceof Error)) return { type: typeof value, message: shortUrl(String(value), 300) };
  const code = (value as { code?: unknown }).code;
  const summary: CauseSummary = { type: value.name, message: shortUrl(value.message, 300) };
  if (typeof code === 'string') summary.code = code;
  const inner = depth < 3 ? summarizeCause(value.cause, depth + 1) : undefined;
  if (inner !== undefined) summary.cause = inner;
  return summary;
}
