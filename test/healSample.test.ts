/**
 * The heal pass's sample (server/tree/healSample.ts): its cursor on disk, the order of shard
 * directories from the cursor on, and which names of a shard are verified, as tables.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatSampleCursor, parseSampleCursor, sampleOfShard, shardsFrom, SHARD_ORDER, type SamplePosition } from '../server/tree/healSample.js';
import { storageKey } from '../server/contract/layout.js';

const A = storageKey(Buffer.from('https://example.org/a.jpg'));
const B = storageKey(Buffer.from('https://example.org/b.jpg'));
const [FIRST_KEY, SECOND_KEY] = [A, B].sort();

describe('sample cursor', () => {
  const position: SamplePosition = { bucket: 'i', shard: 'A/b', name: `${A}.jpg` };
  const cases: Array<{ name: string; text: string; expected: SamplePosition | null }> = [
    { name: 'as written', text: formatSampleCursor(position), expected: position },
    { name: 'start as written', text: formatSampleCursor(null), expected: null },
    { name: 'not JSON (a torn write of an older version)', text: '{"bucket": "i"', expected: null },
    { name: 'a field missing', text: '{"bucket": "i", "shard": "A/b"}', expected: null },
    { name: 'a shard of no tree', text: '{"bucket": "i", "shard": "A/b/c", "name": "x"}', expected: null },
    { name: 'an array', text: '[]', expected: null },
  ];
  for (const testCase of cases) it(testCase.name, () => assert.deepEqual(parseSampleCursor(testCase.text), testCase.expected));
});

describe('shardsFrom', () => {
  const first = (buckets: string[], cursor: SamplePosition | null, count: number) => [...shardsFrom(buckets, cursor)].slice(0, count);
  const cases: Array<{ name: string; buckets: string[]; cursor: SamplePosition | null; expectedFirst: Array<{ bucket: string; shard: string }>; expectedCount: number }> = [
    {
      name: 'no cursor: every shard of every bucket, in order',
      buckets: ['i', 'f'],
      cursor: null,
      expectedFirst: [{ bucket: 'i', shard: SHARD_ORDER[0] as string }, { bucket: 'i', shard: SHARD_ORDER[1] as string }],
      expectedCount: 2 * SHARD_ORDER.length,
    },
    {
      name: 'from the cursor\'s shard (included), then the next buckets',
      buckets: ['i', 'f'],
      cursor: { bucket: 'i', shard: SHARD_ORDER[10] as string, name: 'x' },
      expectedFirst: [{ bucket: 'i', shard: SHARD_ORDER[10] as string }, { bucket: 'i', shard: SHARD_ORDER[11] as string }],
      expectedCount: 2 * SHARD_ORDER.length - 10,
    },
    {
      name: 'a cursor in the second bucket',
      buckets: ['i', 'f'],
      cursor: { bucket: 'f', shard: SHARD_ORDER[SHARD_ORDER.length - 1] as string, name: 'x' },
      expectedFirst: [{ bucket: 'f', shard: SHARD_ORDER[SHARD_ORDER.length - 1] as string }],
      expectedCount: 1,
    },
    {
      name: 'a cursor in a bucket no longer configured: from the start',
      buckets: ['i'],
      cursor: { bucket: 'gone', shard: SHARD_ORDER[5] as string, name: 'x' },
      expectedFirst: [{ bucket: 'i', shard: SHARD_ORDER[0] as string }],
      expectedCount: SHARD_ORDER.length,
    },
  ];
  for (const testCase of cases) {
    it(testCase.name, () => {
      assert.deepEqual(first(testCase.buckets, testCase.cursor, testCase.expectedFirst.length), testCase.expectedFirst);
      assert.equal([...shardsFrom(testCase.buckets, testCase.cursor)].length, testCase.expectedCount);
    });
  }
  it('4096 shard directories a bucket, each once', () => {
    assert.equal(SHARD_ORDER.length, 4096);
    assert.equal(new Set(SHARD_ORDER).size, 4096);
  });
});

describe('sampleOfShard', () => {
  const names = [
    `${SECOND_KEY}.jpg`,
    `${FIRST_KEY}.150x.jpg`,
    `${FIRST_KEY}.jpg`,
    `${FIRST_KEY}.json`,
    `${FIRST_KEY}.x200.fail`,
    `.${FIRST_KEY}.jpg.1-abcdef12.ff.tmp`,
    `${SECOND_KEY}.lock`,
    'README',
  ];
  const cases: Array<{ name: string; after: string | null; room: number; expected: string[] }> = [
    { name: 'images only, sorted', after: null, room: 10, expected: [`${FIRST_KEY}.150x.jpg`, `${FIRST_KEY}.jpg`, `${SECOND_KEY}.jpg`] },
    { name: 'at most room', after: null, room: 2, expected: [`${FIRST_KEY}.150x.jpg`, `${FIRST_KEY}.jpg`] },
    { name: 'after the cursor\'s name', after: `${FIRST_KEY}.150x.jpg`, room: 10, expected: [`${FIRST_KEY}.jpg`, `${SECOND_KEY}.jpg`] },
    { name: 'after the last: none', after: `${SECOND_KEY}.jpg`, room: 10, expected: [] },
    { name: 'no room', after: null, room: 0, expected: [] },
  ];
  for (const testCase of cases) it(testCase.name, () => assert.deepEqual(sampleOfShard(names, testCase.after, testCase.room), testCase.expected));
});
