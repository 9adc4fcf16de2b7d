/**
 * Backoff after failed fetches. Pure: the record is read and written by server/store.ts.
 *
 * The window is counted from the time of the failure (imageproxy-py counted it from the
 * old lock time, so a long fetch could leave no window at all), starts at
 * `initialSeconds` and doubles with each further failure up to `maxSeconds`.
 */
import type { ErrorCode } from './errors.js';

export interface FailureRecord {
  failures: number;
  lastFailureAt: string;
  retryAtMs: number;
  code: ErrorCode;
  detail: string | null;
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
  failure: { code: ErrorCode; detail: string | null },
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
      code: (record.code ?? 'internal') as ErrorCode,
      detail: typeof record.detail === 'string' ? record.detail : null,
    };
  } catch {
    return null;
  }
}
