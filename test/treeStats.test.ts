// Tree statistics, pure: adding files to a bucket's totals, merging buckets, counting the
// blocklist, and the table and JSON of `imageproxy stats`.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { storageKey } from '../server/contract/layout.js';
import {
  addFormatFile,
  addTreeFile,
  countBlocked,
  emptyBucketStats,
  emptyFormatFigures,
  linkedThumbnailNames,
  mergeFormatFigures,
  formatInstant,
  formatStatsJson,
  formatStatsTable,
  humanBytes,
  mergeBucketStats,
  totalStats,
  type BucketStats,
  type FormatFigures,
  type TreeFileFacts,
  type TreeStats,
} from '../server/stats/treeStats.js';

const T1 = Date.parse('2026-01-02T03:04:05.678Z');
const T2 = Date.parse('2026-03-04T05:06:07Z');
const T3 = Date.parse('2025-12-31T23:59:59Z');

function tally(files: TreeFileFacts[]): BucketStats {
  const totals = emptyBucketStats();
  for (const file of files) addTreeFile(totals, file);
  return totals;
}

interface TallyCase {
  name: string;
  files: TreeFileFacts[];
  expected: Partial<BucketStats>;
}

const TALLY_CASES: TallyCase[] = [
  { name: 'nothing', files: [], expected: {} },
  {
    name: 'one original: counted, bytes, oldest = newest = its mtime',
    files: [{ kind: 'original', bytes: 1000, modifiedMs: T1 }],
    expected: { originals: 1, bytes: 1000, originalBytes: 1000, oldestFetchMs: T1, newestFetchMs: T1 },
  },
  {
    name: 'originals: oldest and newest over all, whatever the order',
    files: [
      { kind: 'original', bytes: 1, modifiedMs: T1 },
      { kind: 'original', bytes: 2, modifiedMs: T3 },
      { kind: 'original', bytes: 3, modifiedMs: T2 },
    ],
    expected: { originals: 3, bytes: 6, originalBytes: 6, oldestFetchMs: T3, newestFetchMs: T2 },
  },
  {
    name: 'thumbnails add bytes but are no fetch',
    files: [
      { kind: 'thumbnail', bytes: 50, modifiedMs: T3 },
      { kind: 'thumbnail', bytes: 70, modifiedMs: T2 },
    ],
    expected: { thumbnails: 2, bytes: 120, thumbnailBytes: 120 },
  },
  {
    name: 'sidecars, backoff records, temp and other files are counted, without bytes',
    files: [
      { kind: 'sidecar', bytes: 999 },
      { kind: 'failure' },
      { kind: 'failure' },
      { kind: 'temp', bytes: 5 },
      { kind: 'other' },
      { kind: 'other' },
      { kind: 'other' },
    ],
    expected: { sidecars: 1, backoff: 2, temp: 1, other: 3 },
  },
  {
    name: 'an original without an mtime counts but leaves the instants alone',
    files: [{ kind: 'original', bytes: 7 }],
    expected: { originals: 1, bytes: 7, originalBytes: 7 },
  },
];

describe('addTreeFile', () => {
  for (const testCase of TALLY_CASES) {
    it(testCase.name, () => {
      assert.deepEqual(tally(testCase.files), { ...emptyBucketStats(), ...testCase.expected });
    });
  }
});

describe('mergeBucketStats', () => {
  const a = tally([
    { kind: 'original', bytes: 10, modifiedMs: T1 },
    { kind: 'thumbnail', bytes: 3 },
    { kind: 'failure' },
  ]);
  const b = tally([
    { kind: 'original', bytes: 20, modifiedMs: T3 },
    { kind: 'original', bytes: 30, modifiedMs: T2 },
    { kind: 'sidecar' },
    { kind: 'temp' },
  ]);

  it('sums counts and bytes, takes the earliest and latest instants', () => {
    assert.deepEqual(mergeBucketStats(a, b), {
      originals: 3,
      thumbnails: 1,
      sidecars: 1,
      backoff: 1,
      temp: 1,
      other: 0,
      bytes: 63,
      originalBytes: 60,
      thumbnailBytes: 3,
      oldestFetchMs: T3,
      newestFetchMs: T2,
    });
  });

  it('an empty bucket changes nothing, on either side, and nothing is modified', () => {
    const before = structuredClone(a);
    assert.deepEqual(mergeBucketStats(a, emptyBucketStats()), a);
    assert.deepEqual(mergeBucketStats(emptyBucketStats(), a), a);
    assert.deepEqual(a, before);
  });
});

describe('figures by format', () => {
  const A = storageKey(Buffer.from('https://origin.test/formats.jpg'));
  const zero = { files: 0, bytes: 0 };
  const files: TreeFileFacts[] = [
    { kind: 'original', name: `${A}.jpg`, bytes: 1000, modifiedMs: T1 },
    { kind: 'thumbnail', name: `${A}.250x250.jpg`, bytes: 300 },
    { kind: 'thumbnail', name: `${A}.250x250.avif.avif`, bytes: 120 },
    { kind: 'thumbnail', name: `${A}.250x250.webp.jpg`, bytes: 300, linked: true },
    { kind: 'thumbnail', name: `${A}.150x.webp.webp`, bytes: 80 },
    { kind: 'sidecar', name: `${A}.json` },
    { kind: 'failure', name: `${A}.150x.avif.fail` },
    { kind: 'other', name: 'notes.txt' },
  ];

  it('thumbnails by class and by type, originals by type; a hard link counts as a file of its class, its bytes once', () => {
    assert.deepEqual(formatsOf(files), {
      originalsByType: { jpg: { files: 1, bytes: 1000 }, png: zero, webp: zero, gif: zero, avif: zero },
      thumbnailsByClass: {
        source: { files: 1, bytes: 300, linked: 0 },
        avif: { files: 1, bytes: 120, linked: 0 },
        webp: { files: 2, bytes: 80, linked: 1 },
      },
      thumbnailsByType: { jpg: { files: 2, bytes: 300 }, png: zero, webp: { files: 1, bytes: 80 }, gif: zero, avif: { files: 1, bytes: 120 } },
    });
  });

  it('each sums to the bucket figures: thumbnails and thumbnailBytes, originals and originalBytes', () => {
    const totals = tally(files);
    const formats = formatsOf(files);
    const sum = (figures: Record<string, { files: number; bytes: number }>) =>
      Object.values(figures).reduce((acc, each) => ({ files: acc.files + each.files, bytes: acc.bytes + each.bytes }), zero);
    assert.deepEqual(sum(formats.thumbnailsByClass), { files: totals.thumbnails, bytes: totals.thumbnailBytes });
    assert.deepEqual(sum(formats.thumbnailsByType), { files: totals.thumbnails, bytes: totals.thumbnailBytes });
    assert.deepEqual(sum(formats.originalsByType), { files: totals.originals, bytes: totals.originalBytes });
    assert.deepEqual([totals.thumbnails, totals.thumbnailBytes, totals.bytes], [4, 500, 1500]);
  });

  it('merge sums every figure; an empty side changes nothing', () => {
    const once = formatsOf(files);
    const twice = mergeFormatFigures(once, once);
    assert.deepEqual(twice.thumbnailsByClass.webp, { files: 4, bytes: 160, linked: 2 });
    assert.deepEqual(twice.originalsByType.jpg, { files: 2, bytes: 2000 });
    assert.deepEqual(mergeFormatFigures(once, emptyFormatFigures()), once);
  });

  const linkCases: Array<{ name: string; thumbnails: Array<{ name: string; identity: string }>; expected: string[] }> = [
    { name: 'no shared inode', thumbnails: [{ name: `${A}.150x.jpg`, identity: '1:1' }, { name: `${A}.150x.avif.avif`, identity: '1:2' }], expected: [] },
    {
      name: 'class files linked to the source-format thumbnail: the source one carries the bytes, whatever the listing order',
      thumbnails: [
        { name: `${A}.150x.webp.jpg`, identity: '1:7' },
        { name: `${A}.150x.avif.jpg`, identity: '1:7' },
        { name: `${A}.150x.jpg`, identity: '1:7' },
      ],
      expected: [`${A}.150x.avif.jpg`, `${A}.150x.webp.jpg`],
    },
    {
      name: 'two class files linked together without the source one: the first by name carries the bytes',
      thumbnails: [
        { name: `${A}.150x.webp.png`, identity: '1:9' },
        { name: `${A}.150x.avif.png`, identity: '1:9' },
      ],
      expected: [`${A}.150x.webp.png`],
    },
    { name: 'same inode number on another device: not a link', thumbnails: [{ name: `${A}.150x.jpg`, identity: '1:5' }, { name: `${A}.150x.avif.jpg`, identity: '2:5' }], expected: [] },
  ];
  for (const testCase of linkCases) {
    it(`linkedThumbnailNames: ${testCase.name}`, () => assert.deepEqual([...linkedThumbnailNames(testCase.thumbnails)].sort(), testCase.expected));
  }
});

describe('countBlocked', () => {
  const cases: Array<{ name: string; kinds: Array<'key' | 'digest' | 'host'>; expected: Record<string, number> }> = [
    { name: 'empty list', kinds: [], expected: { key: 0, digest: 0, host: 0 } },
    { name: 'one of each', kinds: ['key', 'digest', 'host'], expected: { key: 1, digest: 1, host: 1 } },
    { name: 'several keys, one host', kinds: ['key', 'key', 'host', 'key'], expected: { key: 3, digest: 0, host: 1 } },
  ];
  for (const testCase of cases) {
    it(testCase.name, () => {
      assert.deepEqual(countBlocked(testCase.kinds.map((kind) => ({ kind }))), testCase.expected);
    });
  }
});

describe('humanBytes and formatInstant', () => {
  const bytesCases: Array<[number, string]> = [
    [0, '0 B'],
    [1023, '1023 B'],
    [1024, '1.0 KiB'],
    [1536, '1.5 KiB'],
    [1024 * 1024 - 1, '1024.0 KiB'],
    [5 * 1024 ** 3, '5.0 GiB'],
    [3 * 1024 ** 4, '3.0 TiB'],
    [2 * 1024 ** 6, '2048.0 PiB'],
  ];
  for (const [bytes, expected] of bytesCases) {
    it(`${bytes} bytes is ${expected}`, () => assert.equal(humanBytes(bytes), expected));
  }
  it('instants to the second, UTC; none is -', () => {
    assert.equal(formatInstant(T1), '2026-01-02T03:04:05Z');
    assert.equal(formatInstant(null), '-');
  });
});

const KEY = storageKey(Buffer.from('https://origin.test/a.jpg'));
const OTHER_KEY = storageKey(Buffer.from('https://origin.test/b.png'));

/** Bucket i of treeStats(): two originals, a thumbnail, a backoff record, two sidecars. */
const BUCKET_I_FILES: TreeFileFacts[] = [
  { kind: 'original', name: `${KEY}.jpg`, bytes: 2048, modifiedMs: T1 },
  { kind: 'original', name: `${OTHER_KEY}.png`, bytes: 1000, modifiedMs: T2 },
  { kind: 'thumbnail', name: `${KEY}.150x.jpg`, bytes: 100 },
  { kind: 'failure', name: `${KEY}.fail` },
  { kind: 'sidecar', name: `${KEY}.json` },
  { kind: 'sidecar', name: `${OTHER_KEY}.json` },
];

function formatsOf(files: TreeFileFacts[]): FormatFigures {
  const figures = emptyFormatFigures();
  for (const file of files) addFormatFile(figures, file);
  return figures;
}

function treeStats(overrides: Partial<TreeStats> = {}): TreeStats {
  return {
    complete: true,
    root: '/srv/tree',
    buckets: {
      i: tally(BUCKET_I_FILES),
      f: emptyBucketStats(),
    },
    formats: { i: formatsOf(BUCKET_I_FILES), f: emptyFormatFigures() },
    blocked: { key: 2, digest: 1, host: 0 },
    blockedError: null,
    shardsWalked: 8192,
    shardsTotal: 8192,
    startedMs: T2,
    durationMs: 1234,
    ...overrides,
  };
}

describe('formatStatsTable', () => {
  it('one aligned row per bucket, a total row, other files and the blocklist', () => {
    assert.equal(
      formatStatsTable(treeStats()),
      [
        'bucket  originals  thumbnails           bytes  in backoff  oldest fetch          newest fetch',
        'i               2           1  3.1 KiB (3148)           1  2026-01-02T03:04:05Z  2026-03-04T05:06:07Z',
        'f               0           0         0 B (0)           0  -                     -',
        'total           2           1  3.1 KiB (3148)           1  2026-01-02T03:04:05Z  2026-03-04T05:06:07Z',
        'thumbnails by class: source 1 (100 B), avif 0 (0 B), webp 0 (0 B)',
        'thumbnails by type: jpg 1 (100 B)',
        'originals by type: jpg 1 (2.0 KiB), png 1 (1000 B)',
        'sidecars 2, temp files 0, other files 0',
        'blocked (all buckets): 3 entries: key 2, digest 1, host 0',
        '',
      ].join('\n'),
    );
  });

  it('a single bucket has no total row', () => {
    const text = formatStatsTable(treeStats({ buckets: { t: emptyBucketStats() } }));
    assert.equal(text.split('\n').filter((line) => line.startsWith('total')).length, 0);
    assert.match(text, /^t +0 +0 +0 B \(0\) +0 +- +-$/m);
  });

  it('an interrupted walk says so on the first line', () => {
    const text = formatStatsTable(treeStats({ complete: false, shardsWalked: 100 }));
    assert.equal(text.split('\n')[0], 'INTERRUPTED: partial figures, 100 of 8192 shard directories walked');
  });

  it('an unreadable blocklist says why', () => {
    const text = formatStatsTable(treeStats({ blocked: null, blockedError: 'blocklist.json: not JSON' }));
    assert.ok(text.includes('\nblocked: unknown: blocklist.json: not JSON\n'), text);
  });
});

describe('formatStatsJson', () => {
  it('one object, one line, with the documented fields', () => {
    const text = formatStatsJson(treeStats());
    assert.equal(text.split('\n').length, 2, 'one line and its newline');
    assert.deepEqual(JSON.parse(text), {
      complete: true,
      root: '/srv/tree',
      scannedAt: '2026-03-04T05:06:07.000Z',
      durationSeconds: 1.234,
      shardsWalked: 8192,
      shardsTotal: 8192,
      buckets: {
        i: {
          originals: 2,
          thumbnails: 1,
          sidecars: 2,
          backoff: 1,
          temp: 0,
          other: 0,
          bytes: 3148,
          originalBytes: 3048,
          thumbnailBytes: 100,
          oldestFetch: '2026-01-02T03:04:05.678Z',
          newestFetch: '2026-03-04T05:06:07.000Z',
        },
        f: {
          originals: 0,
          thumbnails: 0,
          sidecars: 0,
          backoff: 0,
          temp: 0,
          other: 0,
          bytes: 0,
          originalBytes: 0,
          thumbnailBytes: 0,
          oldestFetch: null,
          newestFetch: null,
        },
      },
      total: {
        originals: 2,
        thumbnails: 1,
        sidecars: 2,
        backoff: 1,
        temp: 0,
        other: 0,
        bytes: 3148,
        originalBytes: 3048,
        thumbnailBytes: 100,
        oldestFetch: '2026-01-02T03:04:05.678Z',
        newestFetch: '2026-03-04T05:06:07.000Z',
      },
      formats: {
        buckets: { i: formatsOf(BUCKET_I_FILES), f: emptyFormatFigures() },
        total: formatsOf(BUCKET_I_FILES),
      },
      blocked: { key: 2, digest: 1, host: 0, total: 3 },
      blockedError: null,
    });
    const formats = (JSON.parse(text) as { formats: { total: unknown } }).formats.total;
    const zero = { files: 0, bytes: 0 };
    assert.deepEqual(formats, {
      originalsByType: { jpg: { files: 1, bytes: 2048 }, png: { files: 1, bytes: 1000 }, webp: zero, gif: zero, avif: zero },
      thumbnailsByClass: { source: { files: 1, bytes: 100, linked: 0 }, avif: { ...zero, linked: 0 }, webp: { ...zero, linked: 0 } },
      thumbnailsByType: { jpg: { files: 1, bytes: 100 }, png: zero, webp: zero, gif: zero, avif: zero },
    });
  });

  it('interrupted: complete false; unreadable blocklist: blocked null with the reason', () => {
    const parsed = JSON.parse(formatStatsJson(treeStats({ complete: false, blocked: null, blockedError: 'bad' }))) as Record<string, unknown>;
    assert.equal(parsed.complete, false);
    assert.equal(parsed.blocked, null);
    assert.equal(parsed.blockedError, 'bad');
  });

  it('totalStats equals the merge of the buckets', () => {
    const stats = treeStats();
    assert.deepEqual(totalStats(stats), mergeBucketStats(stats.buckets.i ?? emptyBucketStats(), emptyBucketStats()));
  });
});
