// The Range decision for images answered from a bucket (server/http/byteRange.ts) and the
// gateway's Content-Range read back (server/storage/s3Store.ts): pure, cases in tables.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ifRangeMatches, rangeDecision, type ParsedRanges, type RangeDecision } from '../server/http/byteRange.js';
import { contentRangeOf } from '../server/storage/s3Store.js';

const MODIFIED_MS = Date.UTC(2026, 11, 7, 12, 0, 5, 250);
const VALIDATORS = { etag: '"abc123"', lastModifiedMs: MODIFIED_MS };
const LAST_MODIFIED = new Date(MODIFIED_MS).toUTCString();

/** What Express's req.range(size, { combine: true }) gives for one or more byte ranges. */
function ranges(type: string, ...parts: Array<[number, number]>): ParsedRanges {
  return Object.assign(
    parts.map(([start, end]) => ({ start, end })),
    { type },
  );
}

describe('rangeDecision', () => {
  const cases: Array<{ name: string; parsed: ParsedRanges; ifRange?: string; expected: RangeDecision }> = [
    { name: 'no Range header: the whole image', parsed: undefined, expected: { kind: 'whole' } },
    { name: 'a malformed Range: the whole image, as if none was sent', parsed: -2, expected: { kind: 'whole' } },
    { name: 'one byte range: that part', parsed: ranges('bytes', [0, 9]), expected: { kind: 'part', start: 0, end: 9 } },
    { name: 'a suffix range as parsed (last 5 of 100)', parsed: ranges('bytes', [95, 99]), expected: { kind: 'part', start: 95, end: 99 } },
    { name: 'unsatisfiable (starts past the end): 416', parsed: -1, expected: { kind: 'unsatisfiable' } },
    { name: 'two parts: the whole image (no multipart answers)', parsed: ranges('bytes', [0, 1], [5, 6]), expected: { kind: 'whole' } },
    { name: 'another unit than bytes: the whole image', parsed: ranges('items', [0, 1]), expected: { kind: 'whole' } },
    { name: 'If-Range with the current ETag: the part', parsed: ranges('bytes', [0, 9]), ifRange: '"abc123"', expected: { kind: 'part', start: 0, end: 9 } },
    { name: 'If-Range with another ETag: the whole image', parsed: ranges('bytes', [0, 9]), ifRange: '"other"', expected: { kind: 'whole' } },
    { name: 'If-Range with a weak ETag never matches', parsed: ranges('bytes', [0, 9]), ifRange: 'W/"abc123"', expected: { kind: 'whole' } },
    { name: 'If-Range with the Last-Modified date: the part', parsed: ranges('bytes', [0, 9]), ifRange: LAST_MODIFIED, expected: { kind: 'part', start: 0, end: 9 } },
    { name: 'If-Range with a later date: the whole image', parsed: ranges('bytes', [0, 9]), ifRange: new Date(MODIFIED_MS + 60_000).toUTCString(), expected: { kind: 'whole' } },
    { name: 'If-Range that is no date or tag: the whole image', parsed: ranges('bytes', [0, 9]), ifRange: 'yesterday', expected: { kind: 'whole' } },
    { name: 'an unsatisfiable Range with a stale If-Range: the whole image, not 416', parsed: -1, ifRange: '"other"', expected: { kind: 'whole' } },
  ];
  for (const testCase of cases) {
    it(testCase.name, () => {
      assert.deepEqual(rangeDecision(testCase.parsed, testCase.ifRange, VALIDATORS), testCase.expected);
    });
  }
});

describe('ifRangeMatches', () => {
  const cases: Array<[string, boolean]> = [
    ['"abc123"', true],
    [' "abc123" ', true],
    ['"abc12"', false],
    ['W/"abc123"', false],
    [LAST_MODIFIED, true],
    [new Date(MODIFIED_MS - 1000).toUTCString(), false],
    ['', false],
  ];
  for (const [ifRange, expected] of cases) {
    it(`${JSON.stringify(ifRange)} → ${expected}`, () => assert.equal(ifRangeMatches(ifRange, VALIDATORS), expected));
  }
});

describe('contentRangeOf (a ranged GET answer from the gateway)', () => {
  const cases: Array<[string, ReturnType<typeof contentRangeOf>]> = [
    ['bytes 0-9/12345', { start: 0, end: 9, size: 12345 }],
    ['bytes 12340-12344/12345', { start: 12340, end: 12344, size: 12345 }],
    ['bytes 0-0/1', { start: 0, end: 0, size: 1 }],
    ['bytes 0-9/*', null],
    ['bytes */12345', null],
    ['bytes 9-0/12345', null],
    ['bytes 0-12345/12345', null],
    ['items 0-9/100', null],
    ['', null],
  ];
  for (const [header, expected] of cases) {
    it(`${JSON.stringify(header)}`, () => assert.deepEqual(contentRangeOf(header), expected));
  }
});
