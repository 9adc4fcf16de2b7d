/**
 * The pure side of the heal pass: temp writer names, lock and quarantine names
 * (server/contract/layout.ts), and the findings and repair steps of a shard directory
 * (server/tree/health.ts), each as a table of cases.
 */
import assert from 'node:assert/strict';
import { parseSidecarFields, variantRecordOf, withVariantRecord, type SidecarFields, type VariantRecord } from '../server/tree/originals.js';
import { describe, it } from 'node:test';
import {
  hostTag,
  isLockDirectoryName,
  quarantinePath,
  storageKey,
  tempFileName,
  tempFileWriter,
  tempUnique,
} from '../server/contract/layout.js';
import type { ImageFormat } from '../server/images/sniff.js';
import {
  countFindings,
  damagedImageReason,
  parseSidecar,
  repairSteps,
  shardFindings,
  variantRecordNameOf,
  variantRecordIn,
  type HealContext,
  type ShardEntry,
  type SidecarReading,
} from '../server/tree/health.js';

const KEY = storageKey(Buffer.from('https://example.org/a.jpg'));
const OTHER = storageKey(Buffer.from('https://example.org/b.png'));
const HOST = hostTag('this-host');
const NOW = Date.parse('2025-03-01T12:00:00Z');
const DIGEST_A = 'a'.repeat(64);
const DIGEST_B = 'b'.repeat(64);
const RECORD_30: VariantRecord = { bytes: 30, sha256: DIGEST_B, contentType: 'image/jpeg' };
const RECORD_12: VariantRecord = { bytes: 12, sha256: DIGEST_A, contentType: 'image/avif' };

describe('temp file writers', () => {
  const cases: Array<{ name: string; fileName: string; expected: ReturnType<typeof tempFileWriter> }> = [
    { name: 'with host tag', fileName: tempFileName(`${KEY}.jpg`, tempUnique({ pid: 4242, hostTag: HOST }, 'a1b2c3')), expected: { pid: 4242, hostTag: HOST } },
    { name: 'thumbnail with host tag', fileName: tempFileName(`${KEY}.150x.webp`, tempUnique({ pid: 7, hostTag: HOST }, 'ff')), expected: { pid: 7, hostTag: HOST } },
    { name: 'old name, pid only', fileName: tempFileName(`${KEY}.json`, '123.abcdef'), expected: { pid: 123, hostTag: null } },
    { name: 'no pid', fileName: tempFileName(`${KEY}.jpg`, 'abcdef'), expected: null },
    { name: 'pid zero', fileName: tempFileName(`${KEY}.jpg`, '0.ab'), expected: null },
    { name: 'tag of wrong length', fileName: `.${KEY}.jpg.12-abc.ff.tmp`, expected: null },
    { name: 'not a temp name', fileName: `${KEY}.jpg`, expected: null },
    { name: 'too few parts', fileName: '.12.ab.tmp', expected: null },
  ];
  for (const testCase of cases) {
    it(testCase.name, () => assert.deepEqual(tempFileWriter(testCase.fileName), testCase.expected));
  }
  it('host tags are eight hex characters, one per host', () => {
    assert.match(HOST, /^[0-9a-f]{8}$/);
    assert.notEqual(hostTag('other-host'), HOST);
  });
});

describe('lock directory names', () => {
  const cases: Array<[string, boolean]> = [
    [`${KEY}.lock`, true],
    [`${KEY}.150x.lock`, true],
    [`${KEY}.x200.lock`, true],
    [`${KEY}.250x250.lock`, true],
    [`${KEY}.jpg.lock`, false],
    [`${KEY}.150x.jpg.lock`, false],
    [`${KEY}.250x250.avif.lock`, true],
    [`${KEY}.250x250.webp.lock`, true],
    [`${KEY}.avif.lock`, false],
    [`${KEY}.250x250.source.lock`, false],
    ['short.lock', false],
    [`${KEY}.json`, false],
  ];
  for (const [name, expected] of cases) it(name, () => assert.equal(isLockDirectoryName(name), expected));
});

describe('quarantine paths', () => {
  it('keep the bucket, the name and a sortable UTC time with milliseconds', () => {
    assert.equal(
      quarantinePath('i', `${KEY}.jpg`, Date.parse('2025-01-02T03:04:05.678Z')),
      `.imageproxy/quarantine/i/${KEY}.jpg.20250102T030405.678Z`,
    );
  });
});

describe('parseSidecar', () => {
  const cases: Array<[string, SidecarReading]> = [
    ['{"bytes": 1234, "sourceUrl": null}', { bytes: 1234 }],
    ['{"bytes": 0}', { bytes: 0 }],
    [`{"bytes": 9, "sha256": "${DIGEST_A}"}`, { bytes: 9, sha256: DIGEST_A }],
    [
      `{"bytes": 9, "variants": {"150x": {"bytes": 3, "sha256": "${DIGEST_B}", "contentType": "image/jpeg"}, "x200": {"bytes": "3"}, "250x250": null}}`,
      { bytes: 9, variants: { '150x': { bytes: 3, sha256: DIGEST_B, contentType: 'image/jpeg' } } },
    ],
    ['{"bytes": 9, "variants": []}', { bytes: 9 }],
    [`{"variants": {"150x": {"bytes": 3, "sha256": "${DIGEST_B}", "contentType": "image/jpeg"}}}`, null],
    ['{"bytes": "12"}', null],
    ['{"bytes": -1}', null],
    ['[]', null],
    ['null', null],
    ['{"bytes": 12', null],
    ['', null],
  ];
  for (const [text, expected] of cases) it(JSON.stringify(text), () => assert.deepEqual(parseSidecar(text), expected));
});

describe('parseSidecarFields (server/tree/originals.ts): each field on its own', () => {
  const cases: Array<[string, SidecarFields | null]> = [
    ['{"bytes": 5, "sourceUrl": "https://example.org/a.jpg", "sha256": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}', { bytes: 5, sourceUrl: 'https://example.org/a.jpg', sha256: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' }],
    ['{"bytes": 5, "sourceUrl": null}', { bytes: 5, sourceUrl: null, sha256: null }],
    ['{"sha256": "ABC", "bytes": 1.5}', { bytes: null, sourceUrl: null, sha256: null }],
    ['{"sha256": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}', { bytes: null, sourceUrl: null, sha256: null }],
    ['[1]', null],
    ['"text"', null],
    ['{"bytes": 5', null],
  ];
  for (const [text, expected] of cases) it(JSON.stringify(text), () => assert.deepEqual(parseSidecarFields(text), expected));
});

describe('damagedImageReason', () => {
  const cases: Array<{ name: string; image: Parameters<typeof damagedImageReason>[0]; expected: RegExp | null }> = [
    { name: 'sound original, size as its sidecar', image: { name: `${KEY}.jpg`, bytes: 10, sniffed: 'jpeg', sidecar: { bytes: 10 } }, expected: null },
    { name: 'empty', image: { name: `${KEY}.jpg`, bytes: 0 }, expected: /^empty$/ },
    { name: 'HTML at an original name', image: { name: `${KEY}.jpg`, bytes: 10, sniffed: null }, expected: /not an image/ },
    { name: 'PNG stored as .jpg', image: { name: `${KEY}.jpg`, bytes: 10, sniffed: 'png' }, expected: /a png image stored as \.jpg/ },
    { name: 'truncated: size below its sidecar', image: { name: `${KEY}.jpg`, bytes: 10, sniffed: 'jpeg', sidecar: { bytes: 20 } }, expected: /10 bytes, its sidecar says 20/ },
    { name: 'unreadable sidecar says nothing of the size', image: { name: `${KEY}.jpg`, bytes: 10, sidecar: null }, expected: null },
    { name: 'not sniffed (the app): size alone', image: { name: `${KEY}.150x.webp`, bytes: 5 }, expected: null },
    { name: 'decode failure', image: { name: `${KEY}.150x.webp`, bytes: 5, sniffed: 'webp', decodeError: 'bad' }, expected: /does not decode: bad/ },
    { name: 'thumbnail of its record\'s size', image: { name: `${KEY}.150x.jpg`, bytes: 30, sniffed: 'jpeg', variantRecord: RECORD_30 }, expected: null },
    { name: 'thumbnail grown past its record', image: { name: `${KEY}.150x.jpg`, bytes: 31, sniffed: 'jpeg', variantRecord: RECORD_30 }, expected: /31 bytes, its record says 30/ },
    { name: 'HTML of a thumbnail\'s exact size: the type decides', image: { name: `${KEY}.150x.jpg`, bytes: 30, sniffed: null, variantRecord: RECORD_30 }, expected: /not an image/ },
    { name: 'original, digest as its sidecar\'s', image: { name: `${KEY}.jpg`, bytes: 10, sniffed: 'jpeg', sidecar: { bytes: 10, sha256: DIGEST_A }, sha256: DIGEST_A }, expected: null },
    { name: 'original, bit rot: size and type right, digest not', image: { name: `${KEY}.jpg`, bytes: 10, sniffed: 'jpeg', sidecar: { bytes: 10, sha256: DIGEST_A }, sha256: DIGEST_B }, expected: /sha256 bbbbbbbbbbbb…, its sidecar says aaaaaaaaaaaa…/ },
    { name: 'thumbnail, bit rot', image: { name: `${KEY}.150x.jpg`, bytes: 30, sniffed: 'jpeg', variantRecord: RECORD_30, sha256: DIGEST_A }, expected: /its record says bbbbbbbbbbbb…/ },
    { name: 'a digest and no recorded one: nothing to compare', image: { name: `${KEY}.jpg`, bytes: 10, sniffed: 'jpeg', sidecar: { bytes: 10 }, sha256: DIGEST_B }, expected: null },
  ];
  for (const testCase of cases) {
    it(testCase.name, () => {
      const reason = damagedImageReason(testCase.image);
      if (testCase.expected === null) assert.equal(reason, null);
      else assert.match(reason ?? '', testCase.expected);
    });
  }
});

function entry(name: string, options: { bytes?: number; ageMs?: number; directory?: boolean; irregular?: string } = {}): ShardEntry {
  const irregular = options.irregular === undefined ? {} : { irregular: options.irregular };
  return { name, isDirectory: options.directory ?? false, bytes: options.bytes ?? 100, modifiedMs: NOW - (options.ageMs ?? 0), ...irregular };
}

const LIVE_PID = 100;
const DEAD_PID = 200;
const context: HealContext = {
  nowMs: NOW,
  tempMaxAgeMs: 3_600_000,
  lockStaleMs: 10_000,
  thisHostTag: HOST,
  pidAlive: (pid) => pid === LIVE_PID,
};

describe('shardFindings', () => {
  const temp = (pid: number, host: string | null, ageMs = 0): ShardEntry =>
    entry(tempFileName(`${KEY}.jpg`, host === null ? `${pid}.ab` : tempUnique({ pid, hostTag: host }, `ab${pid}`)), { ageMs });
  const cases: Array<{
    name: string;
    entries: ShardEntry[];
    sidecars?: Array<[string, SidecarReading]>;
    sniffed?: Array<[string, ImageFormat | null]>;
    decodeErrors?: Array<[string, string]>;
    expected: Array<[string, string]>;
  }> = [
    { name: 'temp of a dead writer on this host, fresh', entries: [temp(DEAD_PID, HOST)], expected: [['stale-temp', temp(DEAD_PID, HOST).name]] },
    { name: 'temp of a live writer on this host', entries: [temp(LIVE_PID, HOST)], expected: [] },
    { name: 'temp of a live writer, older than the age limit', entries: [temp(LIVE_PID, HOST, 7_200_000)], expected: [['stale-temp', temp(LIVE_PID, HOST).name]] },
    { name: 'temp of another host: pid not judged', entries: [temp(DEAD_PID, hostTag('elsewhere'))], expected: [] },
    { name: 'old temp name without host: age only', entries: [temp(DEAD_PID, null)], expected: [] },
    { name: 'old temp name without host, old', entries: [temp(DEAD_PID, null, 7_200_000)], expected: [['stale-temp', temp(DEAD_PID, null).name]] },
    { name: 'fresh lock', entries: [entry(`${KEY}.lock`, { directory: true, ageMs: 2000 })], expected: [] },
    { name: 'stale lock', entries: [entry(`${KEY}.150x.lock`, { directory: true, ageMs: 60_000 })], expected: [['stale-lock', `${KEY}.150x.lock`]] },
    { name: 'a directory of another name', entries: [entry('stray', { directory: true, ageMs: 60_000 })], expected: [] },
    {
      name: 'sound original with sidecar and thumbnail',
      entries: [entry(`${KEY}.jpg`), entry(`${KEY}.json`), entry(`${KEY}.150x.jpg`, { bytes: 30 })],
      sidecars: [[KEY, { bytes: 100 }]],
      sniffed: [[`${KEY}.jpg`, 'jpeg'], [`${KEY}.150x.jpg`, 'jpeg']],
      expected: [],
    },
    { name: 'original without sidecar', entries: [entry(`${OTHER}.png`)], sniffed: [[`${OTHER}.png`, 'png']], expected: [['missing-sidecar', `${OTHER}.png`]] },
    {
      name: 'original with unreadable sidecar',
      entries: [entry(`${OTHER}.png`), entry(`${OTHER}.json`)],
      sidecars: [[OTHER, null]],
      sniffed: [[`${OTHER}.png`, 'png']],
      expected: [['missing-sidecar', `${OTHER}.png`]],
    },
    { name: 'sidecar alone (crash between the two writes): nothing', entries: [entry(`${KEY}.json`)], expected: [] },
    { name: 'empty original, no sidecar: damaged, not missing', entries: [entry(`${KEY}.jpg`, { bytes: 0 })], expected: [['damaged-original', `${KEY}.jpg`]] },
    {
      name: 'truncated original',
      entries: [entry(`${KEY}.jpg`, { bytes: 50 }), entry(`${KEY}.json`)],
      sidecars: [[KEY, { bytes: 100 }]],
      sniffed: [[`${KEY}.jpg`, 'jpeg']],
      expected: [['damaged-original', `${KEY}.jpg`]],
    },
    {
      name: 'HTML thumbnail',
      entries: [entry(`${KEY}.150x.jpg`)],
      sniffed: [[`${KEY}.150x.jpg`, null]],
      expected: [['damaged-thumbnail', `${KEY}.150x.jpg`]],
    },
    {
      name: 'thumbnail that does not decode',
      entries: [entry(`${KEY}.150x.jpg`)],
      sniffed: [[`${KEY}.150x.jpg`, 'jpeg']],
      decodeErrors: [[`${KEY}.150x.jpg`, 'premature end']],
      expected: [['damaged-thumbnail', `${KEY}.150x.jpg`]],
    },
    {
      name: 'thumbnail of another size than its record',
      entries: [entry(`${KEY}.jpg`), entry(`${KEY}.json`), entry(`${KEY}.150x.jpg`, { bytes: 29 })],
      sidecars: [[KEY, { bytes: 100, variants: { '150x': RECORD_30 } }]],
      sniffed: [[`${KEY}.jpg`, 'jpeg'], [`${KEY}.150x.jpg`, 'jpeg']],
      expected: [['damaged-thumbnail', `${KEY}.150x.jpg`]],
    },
    {
      name: 'thumbnail without a record (an older tree): unknown, not damaged',
      entries: [entry(`${KEY}.jpg`), entry(`${KEY}.json`), entry(`${KEY}.x200.jpg`, { bytes: 29 })],
      sidecars: [[KEY, { bytes: 100, variants: { '150x': RECORD_30 } }]],
      sniffed: [[`${KEY}.jpg`, 'jpeg'], [`${KEY}.x200.jpg`, 'jpeg']],
      expected: [],
    },
    {
      name: 'files of format classes beside a recorded source-format thumbnail: each judged by its own record, a hard link of the source included',
      entries: [
        entry(`${KEY}.jpg`),
        entry(`${KEY}.json`),
        entry(`${KEY}.150x.jpg`, { bytes: 30 }),
        entry(`${KEY}.150x.avif.avif`, { bytes: 12 }),
        entry(`${KEY}.150x.webp.webp`, { bytes: 21 }),
        entry(`${KEY}.x200.avif.jpg`, { bytes: 30 }),
        entry(`${KEY}.150x.webp.fail`),
      ],
      sidecars: [[KEY, { bytes: 100, variants: { '150x': RECORD_30, '150x.avif': RECORD_12 } }]],
      sniffed: [
        [`${KEY}.jpg`, 'jpeg'],
        [`${KEY}.150x.jpg`, 'jpeg'],
        [`${KEY}.150x.avif.avif`, 'avif'],
        [`${KEY}.150x.webp.webp`, 'webp'],
        [`${KEY}.x200.avif.jpg`, 'jpeg'],
      ],
      expected: [],
    },
    {
      name: 'a format class file of another size than its own record',
      entries: [entry(`${KEY}.jpg`), entry(`${KEY}.json`), entry(`${KEY}.150x.avif.avif`, { bytes: 11 })],
      sidecars: [[KEY, { bytes: 100, variants: { '150x': RECORD_30, '150x.avif': RECORD_12 } }]],
      sniffed: [[`${KEY}.jpg`, 'jpeg'], [`${KEY}.150x.avif.avif`, 'avif']],
      expected: [['damaged-thumbnail', `${KEY}.150x.avif.avif`]],
    },
    {
      name: 'format class files whose bytes are not of their extension',
      entries: [entry(`${KEY}.150x.avif.avif`), entry(`${KEY}.150x.webp.webp`), entry(`${KEY}.150x.avif.jpg`)],
      sniffed: [[`${KEY}.150x.avif.avif`, 'jpeg'], [`${KEY}.150x.webp.webp`, null], [`${KEY}.150x.avif.jpg`, 'avif']],
      expected: [
        ['damaged-thumbnail', `${KEY}.150x.avif.avif`],
        ['damaged-thumbnail', `${KEY}.150x.webp.webp`],
        ['damaged-thumbnail', `${KEY}.150x.avif.jpg`],
      ],
    },
    {
      name: 'a format class file that does not decode (truncated)',
      entries: [entry(`${KEY}.150x.webp.webp`)],
      sniffed: [[`${KEY}.150x.webp.webp`, 'webp']],
      decodeErrors: [[`${KEY}.150x.webp.webp`, 'truncated']],
      expected: [['damaged-thumbnail', `${KEY}.150x.webp.webp`]],
    },
    {
      name: 'format class files without their original: as a thumbnail without one, judged by type alone',
      entries: [entry(`${OTHER}.150x.avif.avif`), entry(`${OTHER}.150x.webp.png`)],
      sniffed: [[`${OTHER}.150x.avif.avif`, 'avif'], [`${OTHER}.150x.webp.png`, 'png']],
      expected: [],
    },
    { name: 'fresh lock of a format class', entries: [entry(`${KEY}.150x.avif.lock`, { directory: true, ageMs: 2000 })], expected: [] },
    { name: 'stale lock of a format class', entries: [entry(`${KEY}.150x.webp.lock`, { directory: true, ageMs: 60_000 })], expected: [['stale-lock', `${KEY}.150x.webp.lock`]] },
    { name: 'symlink at a format class file name', entries: [entry(`${KEY}.150x.avif.avif`, { irregular: 'a symbolic link' })], expected: [['not-regular', `${KEY}.150x.avif.avif`]] },
    { name: 'stray files and backoff records', entries: [entry('README'), entry(`${KEY}.fail`), entry(`${KEY}.150x.fail`)], expected: [] },
    {
      name: 'FIFO at a sidecar name: not regular, and the original misses its sidecar',
      entries: [entry(`${KEY}.jpg`), entry(`${KEY}.json`, { irregular: 'a FIFO' })],
      sniffed: [[`${KEY}.jpg`, 'jpeg']],
      expected: [['missing-sidecar', `${KEY}.jpg`], ['not-regular', `${KEY}.json`]],
    },
    {
      name: 'symlink at an original name: not regular, never judged as an image',
      entries: [entry(`${KEY}.jpg`, { irregular: 'a symbolic link' }), entry(`${KEY}.json`)],
      sidecars: [[KEY, { bytes: 100 }]],
      expected: [['not-regular', `${KEY}.jpg`]],
    },
    { name: 'symlink at a thumbnail name', entries: [entry(`${KEY}.150x.jpg`, { irregular: 'a symbolic link' })], expected: [['not-regular', `${KEY}.150x.jpg`]] },
    { name: 'socket at a backoff record name', entries: [entry(`${KEY}.fail`, { irregular: 'a socket' })], expected: [['not-regular', `${KEY}.fail`]] },
    { name: 'symlink at a lock name', entries: [entry(`${KEY}.lock`, { irregular: 'a symbolic link' })], expected: [['not-regular', `${KEY}.lock`]] },
    { name: 'symlink of a name not ours: left alone, as a stray file', entries: [entry('README', { irregular: 'a symbolic link' })], expected: [] },
  ];
  for (const testCase of cases) {
    it(testCase.name, () => {
      const findings = shardFindings(
        {
          entries: testCase.entries,
          sidecars: new Map(testCase.sidecars ?? []),
          sniffed: new Map(testCase.sniffed ?? []),
          decodeErrors: new Map(testCase.decodeErrors ?? []),
        },
        context,
      );
      assert.deepEqual(
        findings.map((finding) => [finding.kind, finding.name]),
        testCase.expected,
      );
    });
  }
  it('counts every kind, zero included', () => {
    assert.deepEqual(countFindings([{ kind: 'stale-temp' }, { kind: 'stale-temp' }, { kind: 'damaged-thumbnail' }]), {
      'stale-temp': 2,
      'stale-lock': 0,
      'missing-sidecar': 0,
      'damaged-original': 0,
      'damaged-thumbnail': 1,
      'not-regular': 0,
    });
  });
});

describe('variant records', () => {
  it('record names of thumbnail names only: the label, or label.format for a format class', () => {
    const cases: Array<[string, string | null]> = [
      [`${KEY}.150x.jpg`, '150x'],
      [`${KEY}.250x250.webp`, '250x250'],
      [`${KEY}.250x250.avif.avif`, '250x250.avif'],
      [`${KEY}.250x250.avif.jpg`, '250x250.avif'],
      [`${KEY}.x200.webp.webp`, 'x200.webp'],
      [`${KEY}.250x250.jpeg.jpg`, null],
      [`${KEY}.250x250.avif.fail`, null],
      [`${KEY}.jpg`, null],
      [`${KEY}.150x.fail`, null],
      [`${KEY}.json`, null],
    ];
    for (const [name, expected] of cases) assert.equal(variantRecordNameOf(name), expected, name);
  });
  it('the record of a thumbnail in its sidecar', () => {
    const sidecar = { bytes: 100, variants: { '150x': RECORD_30 } };
    const cases: Array<[string, Parameters<typeof variantRecordIn>[0], VariantRecord | undefined]> = [
      [`${KEY}.150x.jpg`, sidecar, RECORD_30],
      [`${KEY}.x200.jpg`, sidecar, undefined],
      [`${KEY}.150x.jpg`, { bytes: 100 }, undefined],
      [`${KEY}.150x.jpg`, null, undefined],
      [`${KEY}.150x.jpg`, undefined, undefined],
      [`${KEY}.jpg`, sidecar, undefined],
      [`${KEY}.constructor.jpg`, sidecar, undefined],
      // A format class's file has a record of its own, never the source-format thumbnail's.
      [`${KEY}.150x.avif.avif`, sidecar, undefined],
      [`${KEY}.150x.avif.jpg`, sidecar, undefined],
      [`${KEY}.150x.avif.avif`, { bytes: 100, variants: { '150x': RECORD_30, '150x.avif': RECORD_12 } }, RECORD_12],
      [`${KEY}.150x.webp.webp`, { bytes: 100, variants: { '150x': RECORD_30, '150x.avif': RECORD_12 } }, undefined],
    ];
    for (const [name, reading, expected] of cases) assert.deepEqual(variantRecordIn(reading, name), expected, name);
  });
  it('variantRecordOf: size, sha256 and type of the bytes', () => {
    assert.deepEqual(variantRecordOf(Buffer.from('abc'), 'image/png'), {
      bytes: 3,
      sha256: 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
      contentType: 'image/png',
    });
  });
  const original = `{"sourceUrl": null, "bytes": 100, "sha256": "${DIGEST_A}", "extra": [1]}`;
  const cases: Array<{ name: string; text: string; label: string; expected: Record<string, unknown> | null }> = [
    {
      name: 'first record: every other field kept',
      text: original,
      label: '150x',
      expected: { sourceUrl: null, bytes: 100, sha256: DIGEST_A, extra: [1], variants: { '150x': RECORD_30 } },
    },
    {
      name: 'another label beside it; a malformed entry dropped',
      text: `{"bytes": 100, "variants": {"x200": {"bytes": 7, "sha256": "${DIGEST_A}", "contentType": "image/webp"}, "bad": 1}}`,
      label: '150x',
      expected: { bytes: 100, variants: { x200: { bytes: 7, sha256: DIGEST_A, contentType: 'image/webp' }, '150x': RECORD_30 } },
    },
    {
      name: 'the same label replaced',
      text: `{"bytes": 100, "variants": {"150x": {"bytes": 7, "sha256": "${DIGEST_A}", "contentType": "image/webp"}}}`,
      label: '150x',
      expected: { bytes: 100, variants: { '150x': RECORD_30 } },
    },
    { name: 'no original\'s sidecar (no byte count): nothing', text: '{"sourceUrl": null}', label: '150x', expected: null },
    { name: 'not JSON', text: '{"bytes": 1', label: '150x', expected: null },
  ];
  for (const testCase of cases) {
    it(`withVariantRecord: ${testCase.name}`, () => {
      const text = withVariantRecord(testCase.text, testCase.label, RECORD_30);
      assert.deepEqual(text === null ? null : JSON.parse(text), testCase.expected);
    });
  }
});

describe('repairSteps', () => {
  const names = [
    `${KEY}.jpg`,
    `${KEY}.json`,
    `${KEY}.fail`,
    `${KEY}.150x.jpg`,
    `${KEY}.x200.webp`,
    `${KEY}.250x250.fail`,
    `${KEY}.150x.lock`,
    `${OTHER}.png`,
    `${OTHER}.150x.png`,
  ];
  it('a damaged original: itself and its sidecar moved aside, its thumbnails and their backoff records removed', () => {
    assert.deepEqual(repairSteps({ kind: 'damaged-original', name: `${KEY}.jpg`, key: KEY }, names), [
      { action: 'quarantine', name: `${KEY}.jpg` },
      { action: 'remove', name: `${KEY}.150x.jpg` },
      { action: 'remove', name: `${KEY}.250x250.fail` },
      { action: 'quarantine', name: `${KEY}.json` },
      { action: 'remove', name: `${KEY}.x200.webp` },
    ]);
  });
  it('a damaged original: the files of its format classes and their backoff records go with its thumbnails; their locks stay', () => {
    const withClasses = [...names, `${KEY}.150x.avif.avif`, `${KEY}.150x.webp.jpg`, `${KEY}.150x.avif.fail`, `${KEY}.150x.avif.lock`];
    const removed = repairSteps({ kind: 'damaged-original', name: `${KEY}.jpg`, key: KEY }, withClasses)
      .filter((step) => step.action === 'remove')
      .map((step) => step.name);
    assert.deepEqual(removed, [
      `${KEY}.150x.avif.avif`,
      `${KEY}.150x.avif.fail`,
      `${KEY}.150x.jpg`,
      `${KEY}.150x.webp.jpg`,
      `${KEY}.250x250.fail`,
      `${KEY}.x200.webp`,
    ]);
  });
  const single: Array<[Parameters<typeof repairSteps>[0], ReturnType<typeof repairSteps>]> = [
    [{ kind: 'damaged-thumbnail', name: `${KEY}.150x.jpg`, key: KEY }, [{ action: 'quarantine', name: `${KEY}.150x.jpg` }]],
    [{ kind: 'damaged-thumbnail', name: `${KEY}.150x.avif.avif`, key: KEY }, [{ action: 'quarantine', name: `${KEY}.150x.avif.avif` }]],
    [{ kind: 'stale-temp', name: '.x.1.a.tmp', key: null }, [{ action: 'remove', name: '.x.1.a.tmp' }]],
    [{ kind: 'stale-lock', name: `${KEY}.lock`, key: KEY }, [{ action: 'remove-directory', name: `${KEY}.lock` }]],
    [{ kind: 'missing-sidecar', name: `${OTHER}.png`, key: OTHER }, [{ action: 'rebuild-sidecar', name: `${OTHER}.png` }]],
    [{ kind: 'not-regular', name: `${KEY}.json`, key: KEY }, [{ action: 'quarantine', name: `${KEY}.json` }]],
  ];
  for (const [finding, expected] of single) it(finding.kind, () => assert.deepEqual(repairSteps(finding, names), expected));
});
