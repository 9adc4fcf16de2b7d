/** server/fetch/backoff.ts: the window after failed fetches, as tables. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  backoffRemainingSeconds,
  backoffSeconds,
  parseFailureRecord,
  recordFailure,
  rememberedFailure,
  type BackoffPolicy,
  type FailureRecord,
} from '../server/fetch/backoff.js';

const POLICY: BackoffPolicy = { initialSeconds: 60, maxSeconds: 86_400 };
const T0 = Date.UTC(2026, 10, 28, 12, 0, 0);

describe('backoffSeconds doubles from initialSeconds up to maxSeconds', () => {
  const cases: Array<[failures: number, seconds: number]> = [
    [0, 60],
    [1, 60],
    [2, 120],
    [3, 240],
    [5, 960],
    [11, 61_440],
    [12, 86_400], // 122 880 capped at a day
    [40, 86_400],
    [10_000, 86_400], // no overflow to Infinity or NaN
  ];
  for (const [failures, seconds] of cases) {
    it(`${failures} failures → ${seconds} s`, () => assert.equal(backoffSeconds(failures, POLICY), seconds));
  }
  it('a policy whose maximum is its initial window never grows', () => {
    assert.equal(backoffSeconds(9, { initialSeconds: 30, maxSeconds: 30 }), 30);
  });
});

describe('recordFailure counts from the time of the failure', () => {
  it('a first failure opens the initial window at its own time', () => {
    const record = recordFailure(null, { code: 'origin_status', detail: 'origin answered 500', message: 'origin answered 500' }, T0, POLICY);
    assert.deepEqual(record, {
      failures: 1,
      lastFailureAt: '2026-11-28T12:00:00.000Z',
      retryAtMs: T0 + 60_000,
      code: 'origin_status',
      detail: 'origin answered 500',
      message: 'origin answered 500',
    });
  });
  it('a later failure doubles the window from its own time, not from the first one', () => {
    const first = recordFailure(null, { code: 'origin_timeout', detail: null }, T0, POLICY);
    const later = T0 + 3_600_000;
    const second = recordFailure(first, { code: 'origin_unreachable', detail: 'ECONNREFUSED' }, later, POLICY);
    assert.equal(second.failures, 2);
    assert.equal(second.retryAtMs, later + 120_000);
    assert.equal(second.code, 'origin_unreachable');
  });
});

describe('backoffRemainingSeconds', () => {
  const record: FailureRecord = { failures: 1, lastFailureAt: '', retryAtMs: T0 + 60_000, code: 'origin_status', detail: null, message: null };
  const cases: Array<[name: string, record: FailureRecord | null, nowMs: number, seconds: number]> = [
    ['no record', null, T0, 0],
    ['right after the failure', record, T0, 60],
    ['rounded up, never 0 inside the window', record, T0 + 59_999, 1],
    ['at the end of the window', record, T0 + 60_000, 0],
    ['after the window', record, T0 + 600_000, 0],
  ];
  for (const [name, given, nowMs, seconds] of cases) {
    it(name, () => assert.equal(backoffRemainingSeconds(given, nowMs), seconds));
  }
});

describe('parseFailureRecord reads what recordFailure wrote and nothing else', () => {
  const written = recordFailure(null, { code: 'not_an_image', detail: '12 bytes starting "<html>"' }, T0, POLICY);
  const cases: Array<[name: string, text: string, expected: FailureRecord | null]> = [
    ['round trip', JSON.stringify(written), written],
    ['not JSON (a torn write from another tool)', '{"failures": 1, "retr', null],
    ['JSON but not an object', '[1, 2]', null],
    ['null', 'null', null],
    ['missing retryAtMs', '{"failures": 2}', null],
    ['failures as a string', '{"failures": "2", "retryAtMs": 5}', null],
    ['minimal record (an older version): no cause, so `backoff`', '{"failures": 2, "retryAtMs": 5}', { failures: 2, lastFailureAt: '', retryAtMs: 5, code: 'backoff', detail: null, message: null }],
    [
      'unknown code and an unprintable message are not repeated',
      '{"failures": 1, "retryAtMs": 5, "code": "no_such_code", "message": "line\\nbreak"}',
      { failures: 1, lastFailureAt: '', retryAtMs: 5, code: 'backoff', detail: null, message: null },
    ],
  ];
  for (const [name, text, expected] of cases) {
    it(name, () => assert.deepEqual(parseFailureRecord(text), expected));
  }
});

describe('rememberedFailure answers the failure itself during the window', () => {
  const at = new Date(T0).toISOString();
  const recorded = (code: FailureRecord['code'], message: string | null): FailureRecord => ({
    failures: 1,
    lastFailureAt: at,
    retryAtMs: T0 + 60_000,
    code,
    detail: 'for the log',
    message,
  });
  const cases: Array<[name: string, record: FailureRecord | null, nowMs: number, expected: { code: string; status: number; message: string; retryAfter: number } | null]> = [
    ['no record', null, T0, null],
    ['after the window', recorded('origin_status', 'origin answered 404'), T0 + 60_000, null],
    ['origin status, with the status in the message', recorded('origin_status', 'origin answered 404'), T0 + 1000, { code: 'origin_status', status: 502, message: 'origin answered 404', retryAfter: 59 }],
    ['blocked destination stays 403', recorded('blocked_destination', 'destination not allowed'), T0, { code: 'blocked_destination', status: 403, message: 'destination not allowed', retryAfter: 60 }],
    ['not an image', recorded('not_an_image', 'not an image'), T0, { code: 'not_an_image', status: 502, message: 'not an image', retryAfter: 60 }],
    ['too many pixels, message lost: a generic one', recorded('too_many_pixels', null), T0, { code: 'too_many_pixels', status: 502, message: 'earlier attempt failed', retryAfter: 60 }],
    ['a record without a cause is `backoff`', recorded('backoff', null), T0, { code: 'backoff', status: 503, message: 'earlier attempt failed, retry later', retryAfter: 60 }],
  ];
  for (const [name, record, nowMs, expected] of cases) {
    it(name, () => {
      const error = rememberedFailure(record, nowMs);
      if (expected === null) return assert.equal(error, null);
      assert.ok(error !== null);
      assert.deepEqual(
        { code: error.code, status: error.status, message: error.message, retryAfter: error.retryAfterSeconds },
        expected,
      );
      assert.equal(error.rememberedAt, at);
    });
  }
});
