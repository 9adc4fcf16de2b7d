/**
 * Backoff after failed fetches. Pure: the record is read and written by server/tree/store.ts.
 *
 * The window is counted from the time of the failure (imageproxy-py counted it from the
 * old lock time, so a long fetch could leave no window at all), starts at
 * `initialSeconds` and doubles with each further failure up to `maxSeconds`.
 */
import { ERROR_STATUS, ImageproxyError, type ErrorCode } from '../errors.js';

export interface FailureRecord {
  failures: number;
  lastFailureAt: string;
  retryAtMs: number;
  /** The failure's code; `backoff` for a record that lacks one (written by an older version). */
  code: ErrorCode;
  detail: string | null;
  /** The failure's public message, answered again during the window; null: the code's generic one. */
  message: string | null;
}

export interface BackoffPolicy {
  initialSeconds: number;
  maxSeconds: number;
}

export function backoffSeconds(failures: number, policy: BackoffPolicy): number {
  // 2 ** 30 × any sane initial window is already far beyond maxSeconds.
  const doublings = Math.min(Math.max(failures - 1, 0), 30);
  return Math.min(policy.initialSeconds * 2 ** doublings, policy.maxSeconds);
}

export function recordFailure(
  previous: FailureRecord | null,
  failure: { code: ErrorCode; detail: string | null; message?: string },
  nowMs: number,
  policy: BackoffPolicy,
): FailureRecord {
  const failures = (previous?.failures ?? 0) + 1;
  return {
    failures,
    lastFailureAt: new Date(nowMs).toISOString(),
    retryAtMs: nowMs + backoffSeconds(failures, policy) * 1000,
    code: failure.code,
    detail: failure.detail,
    message: failure.message ?? null,
  };
}

/** Seconds left in the backoff window, or 0 when a fetch may be tried. */
export function backoffRemainingSeconds(record: FailureRecord | null, nowMs: number): number {
  if (record === null || nowMs >= record.retryAtMs) return 0;
  return Math.ceil((record.retryAtMs - nowMs) / 1000);
}

/** Reads a record written by an older or broken process defensively: garbage is no record. */
export function parseFailureRecord(text: string): FailureRecord | null {
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value !== 'object' || value === null) return null;
    const record = value as Partial<FailureRecord>;
    if (typeof record.failures !== 'number' || typeof record.retryAtMs !== 'number') return null;
    return {
      failures: record.failures,
      lastFailureAt: String(record.lastFailureAt ?? ''),
      retryAtMs: record.retryAtMs,
      code: typeof record.code === 'string' && Object.hasOwn(ERROR_STATUS, record.code) ? record.code : 'backoff',
      detail: typeof record.detail === 'string' ? record.detail : null,
      message: typeof record.message === 'string' && PUBLIC_MESSAGE_PATTERN.test(record.message) ? record.message : null,
    };
  } catch {
    return null;
  }
}

/** What a stored public message may be: short printable ASCII (the file is ours, but read it as any input). */
const PUBLIC_MESSAGE_PATTERN = /^[\x20-\x7e]{1,120}$/;

/** Codes whose record is answered as the generic `backoff`: no cause worth repeating. */
const GENERIC_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['backoff', 'internal', 'busy']);

/**
 * The answer during a backoff window: the remembered failure itself (its code, status and
 * public message), with Retry-After and the time it happened; `backoff` only when the
 * record says nothing about its cause. Null outside the window.
 */
export function rememberedFailure(record: FailureRecord | null, nowMs: number): ImageproxyError | null {
  const remaining = backoffRemainingSeconds(record, nowMs);
  if (record === null || remaining === 0) return null;
  const generic = GENERIC_CODES.has(record.code);
  const code: ErrorCode = generic ? 'backoff' : record.code;
  const message = generic ? 'earlier attempt failed, retry later' : (record.message ?? 'earlier attempt failed');
  return new ImageproxyError(code, message, {
    retryAfterSeconds: remaining,
    rememberedAt: record.lastFailureAt === '' ? undefined : record.lastFailureAt,
    detail: `remembered failure #${record.failures} (${record.code}: ${record.detail ?? ''})`,
  });
}
