import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  FORMAT_CLASSES,
  MAX_ACCEPT_ELEMENTS,
  MAX_ACCEPT_LENGTH,
  formatClassOf,
  negotiateFormat,
  parseAccept,
  parseQuality,
  type FormatClass,
  type ModernFormat,
} from '../server/contract/accept.js';
import { seededRandom } from './seededRandom.js';

/** The config `formats` lists every case is run against. */
const OFFERED: Record<string, readonly ModernFormat[]> = {
  'avif,webp': ['avif', 'webp'],
  'webp,avif': ['webp', 'avif'],
  webp: ['webp'],
  avif: ['avif'],
  off: [],
};

interface NegotiationCase {
  name: string;
  accept: string | undefined;
  /** The class for each offered list; `off` is always `source` and not repeated here. */
  expected: { 'avif,webp': FormatClass; 'webp,avif': FormatClass; webp: FormatClass; avif: FormatClass };
}

const SOURCE_EVERYWHERE = { 'avif,webp': 'source', 'webp,avif': 'source', webp: 'source', avif: 'source' } as const;
const BOTH_ACCEPTED = { 'avif,webp': 'avif', 'webp,avif': 'webp', webp: 'webp', avif: 'avif' } as const;
const WEBP_ONLY = { 'avif,webp': 'webp', 'webp,avif': 'webp', webp: 'webp', avif: 'source' } as const;
const AVIF_PREFERRED = { 'avif,webp': 'avif', 'webp,avif': 'avif', webp: 'webp', avif: 'avif' } as const;
const AVIF_ONLY = { 'avif,webp': 'avif', 'webp,avif': 'avif', webp: 'source', avif: 'avif' } as const;

const cases: NegotiationCase[] = [
  // real browsers' Accept for an <img>
  { name: 'Chrome / Edge (Chromium)', accept: 'image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8', expected: BOTH_ACCEPTED },
  { name: 'Firefox current', accept: 'image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5', expected: BOTH_ACCEPTED },
  { name: 'Firefox 65-91', accept: 'image/webp,*/*', expected: WEBP_ONLY },
  { name: 'Firefox 64 and older', accept: '*/*', expected: SOURCE_EVERYWHERE },
  {
    name: 'Safari 16: webp listed before avif, same q, so the server order decides',
    accept: 'image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5',
    expected: BOTH_ACCEPTED,
  },
  { name: 'Safari 13', accept: 'image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5', expected: SOURCE_EVERYWHERE },
  { name: 'old Edge (EdgeHTML) <img>', accept: 'image/png, image/svg+xml, image/*; q=0.8, */*; q=0.5', expected: SOURCE_EVERYWHERE },
  { name: 'curl', accept: '*/*', expected: SOURCE_EVERYWHERE },
  { name: 'image/* alone', accept: 'image/*', expected: SOURCE_EVERYWHERE },
  { name: 'no Accept header', accept: undefined, expected: SOURCE_EVERYWHERE },
  { name: 'empty header', accept: '', expected: SOURCE_EVERYWHERE },
  { name: 'only commas and whitespace', accept: ' ,\t, ', expected: SOURCE_EVERYWHERE },
  // q=0 excludes, highest q wins, ties to the server
  { name: 'avif q=0', accept: 'image/avif;q=0,image/webp', expected: WEBP_ONLY },
  { name: 'avif q=0.000', accept: 'image/avif;q=0.000,image/webp,*/*', expected: WEBP_ONLY },
  { name: 'both q=0', accept: 'image/avif;q=0,image/webp;q=0,*/*', expected: SOURCE_EVERYWHERE },
  { name: 'webp q=0 before a wildcard', accept: 'image/webp;q=0,image/*,*/*', expected: SOURCE_EVERYWHERE },
  { name: 'avif listed twice, once q=0', accept: 'image/avif,image/webp,image/avif;q=0', expected: WEBP_ONLY },
  { name: 'webp ranked higher than avif', accept: 'image/avif;q=0.5,image/webp;q=0.9', expected: { 'avif,webp': 'webp', 'webp,avif': 'webp', webp: 'webp', avif: 'avif' } },
  { name: 'avif ranked higher than webp', accept: 'image/webp;q=0.5,image/avif', expected: AVIF_PREFERRED },
  { name: 'equal low q: server order', accept: 'image/webp;q=0.1,image/avif;q=0.100', expected: BOTH_ACCEPTED },
  { name: 'q=0.001 still accepts', accept: 'image/avif;q=0.001', expected: AVIF_ONLY },
  { name: 'the source-type ranked higher does not win (class depends on Accept only)', accept: 'image/jpeg,image/webp;q=0.5', expected: WEBP_ONLY },
  // case, whitespace, parameters
  { name: 'upper case', accept: 'IMAGE/AVIF,IMAGE/WEBP', expected: BOTH_ACCEPTED },
  { name: 'mixed case with Q', accept: 'Image/WebP;Q=1, */*;Q=0.5', expected: WEBP_ONLY },
  { name: 'upper-case q=0 excludes', accept: 'image/avif;Q=0,image/webp', expected: WEBP_ONLY },
  { name: 'whitespace around separators', accept: ' image/avif ; q=0.9 ,\timage/webp\t;\tq=0.8 ', expected: AVIF_PREFERRED },
  { name: 'whitespace around = tolerated', accept: 'image/avif;q = 0,image/webp', expected: WEBP_ONLY },
  { name: 'parameters before q', accept: 'image/avif;codecs=av01;q=0,image/webp;foo="a,b;q=1";q=0.5', expected: WEBP_ONLY },
  { name: 'q before other parameters still weighs', accept: 'image/avif;q=0;foo=bar,image/webp', expected: WEBP_ONLY },
  { name: 'quoted parameter with escapes and commas', accept: 'image/webp;x="a\\"b,c",image/avif;q=0', expected: WEBP_ONLY },
  { name: 'empty list elements and empty parameters', accept: ',,image/avif;;q=1,,image/webp;', expected: BOTH_ACCEPTED },
  { name: 'image/avif+xml is not avif', accept: 'image/avif+xml,image/webpx,*/*', expected: SOURCE_EVERYWHERE },
  { name: 'application/avif is not image/avif', accept: 'application/avif,video/webp', expected: SOURCE_EVERYWHERE },
  // malformed: the whole header means the source format
  { name: 'garbage', accept: '"><script>alert(1)</script>', expected: SOURCE_EVERYWHERE },
  { name: 'binary-ish garbage', accept: '\u0000\u00ff image/avif', expected: SOURCE_EVERYWHERE },
  { name: 'q above 1', accept: 'image/avif;q=1.5', expected: SOURCE_EVERYWHERE },
  { name: 'q with four decimals', accept: 'image/avif;q=0.1234,image/webp', expected: SOURCE_EVERYWHERE },
  { name: 'q starting with a dot', accept: 'image/avif;q=.5', expected: SOURCE_EVERYWHERE },
  { name: 'negative q', accept: 'image/webp;q=-0', expected: SOURCE_EVERYWHERE },
  { name: 'empty q', accept: 'image/webp;q=', expected: SOURCE_EVERYWHERE },
  { name: 'quoted q', accept: 'image/webp;q="1"', expected: SOURCE_EVERYWHERE },
  { name: 'two q on one element', accept: 'image/webp;q=1;q=0', expected: SOURCE_EVERYWHERE },
  { name: 'a bad element spoils the rest', accept: 'image/avif,image/webp,image', expected: SOURCE_EVERYWHERE },
  { name: 'missing subtype', accept: 'image/,image/webp', expected: SOURCE_EVERYWHERE },
  { name: '*/subtype is not a media range', accept: '*/webp', expected: SOURCE_EVERYWHERE },
  { name: 'unterminated quoted string', accept: 'image/webp;x="abc', expected: SOURCE_EVERYWHERE },
  { name: 'parameter without a value', accept: 'image/webp;charset', expected: SOURCE_EVERYWHERE },
  { name: 'space inside a media type', accept: 'image /webp', expected: SOURCE_EVERYWHERE },
  { name: 'stray text after an element', accept: 'image/webp junk', expected: SOURCE_EVERYWHERE },
  { name: 'non-ASCII letters in a token', accept: 'image/wébp,image/webp', expected: SOURCE_EVERYWHERE },
  // bounds
  {
    name: `${MAX_ACCEPT_ELEMENTS} elements are parsed`,
    accept: [...Array.from({ length: MAX_ACCEPT_ELEMENTS - 1 }, (_, index) => `x/${index}`), 'image/webp'].join(','),
    expected: WEBP_ONLY,
  },
  {
    name: `${MAX_ACCEPT_ELEMENTS + 1} elements are malformed`,
    accept: [...Array.from({ length: MAX_ACCEPT_ELEMENTS }, (_, index) => `x/${index}`), 'image/webp'].join(','),
    expected: SOURCE_EVERYWHERE,
  },
  { name: 'a header at the length limit is parsed', accept: `image/webp;x=${'a'.repeat(MAX_ACCEPT_LENGTH - 'image/webp;x='.length)}`, expected: WEBP_ONLY },
  { name: 'a header past the length limit is malformed', accept: `image/webp;x=${'a'.repeat(MAX_ACCEPT_LENGTH)}`, expected: SOURCE_EVERYWHERE },
  { name: 'a whole header of semicolons', accept: `image/webp${';'.repeat(MAX_ACCEPT_LENGTH - 10)}`, expected: WEBP_ONLY },
  { name: 'a whole header of garbage', accept: '\u0001/"\\'.repeat(MAX_ACCEPT_LENGTH / 4), expected: SOURCE_EVERYWHERE },
  { name: 'a whole-header quoted string never closed', accept: `image/webp;x="${'\\a'.repeat(MAX_ACCEPT_LENGTH / 2 - 8)}`, expected: SOURCE_EVERYWHERE },
];

describe('formatClassOf: browsers, q values, case, malformed headers × offered formats', () => {
  for (const testCase of cases) {
    it(testCase.name, () => {
      for (const [offeredName, offered] of Object.entries(OFFERED)) {
        const expected = offeredName === 'off' ? 'source' : testCase.expected[offeredName as keyof NegotiationCase['expected']];
        assert.equal(formatClassOf(testCase.accept, offered), expected, `offered ${offeredName}`);
        assert.equal(negotiateFormat(testCase.accept, offered), expected === 'source' ? null : expected, `offered ${offeredName}`);
      }
    });
  }
});

describe('parseQuality: RFC 9110 qvalue', () => {
  const table: Array<[string, number | null]> = [
    ['0', 0], ['1', 1], ['0.', 0], ['1.', 1], ['0.5', 0.5], ['0.05', 0.05], ['0.123', 0.123], ['0.999', 0.999],
    ['1.0', 1], ['1.000', 1], ['0.000', 0],
    ['', null], ['.5', null], ['0.1234', null], ['1.001', null], ['1.5', null], ['2', null], ['-0', null],
    ['+1', null], ['0,5', null], ['0.5 ', null], ['00', null], ['1e0', null], ['0.a', null],
  ];
  for (const [text, expected] of table) {
    it(`${JSON.stringify(text)} → ${expected}`, () => assert.equal(parseQuality(text), expected));
  }
});

describe('parseAccept: elements', () => {
  it('lower-cases types and keeps each weight', () => {
    assert.deepEqual(parseAccept('Image/AVIF;q=0.9, */*;Q=0.1;level=1'), [
      { type: 'image', subtype: 'avif', quality: 0.9 },
      { type: '*', subtype: '*', quality: 0.1 },
    ]);
  });
  it('an empty header has no elements; a malformed one is null', () => {
    assert.deepEqual(parseAccept(''), []);
    assert.equal(parseAccept('image'), null);
  });
});

describe('property: any number of distinct Accept strings fall on a handful of classes', () => {
  it('1 000 distinct random headers give at most one outcome per class, for every offered list', () => {
    const random = seededRandom(20);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
    const mediaRanges = ['image/avif', 'IMAGE/WEBP', 'image/webp', 'image/png', 'image/*', '*/*', 'video/*', 'image/jxl', 'text/html', 'image/avif+xml', 'x/y'];
    const qualities = ['', ';q=0', ';q=0.5', ';q=1', ';Q=0.001', ';q=1.5', ';q=.2', ';q="1"', ';level=1', ';x="a,b"'];
    const noise = ['', ' ', ',', ';', '"', '\t', 'é', '\u0000', '/'];
    const headers = new Set<string>();
    while (headers.size < 1000) {
      const parts: string[] = [];
      const count = 1 + Math.floor(random() * 6);
      for (let part = 0; part < count; part++) parts.push(`${pick(mediaRanges)}${pick(qualities)}${random() < 0.1 ? pick(noise) : ''}`);
      headers.add(parts.join(random() < 0.5 ? ',' : ', ') + String(headers.size % 7 === 0 ? pick(noise) : ''));
    }
    for (const [offeredName, offered] of Object.entries(OFFERED)) {
      const outcomes = new Set<FormatClass>();
      for (const header of headers) outcomes.add(formatClassOf(header, offered));
      assert.ok(outcomes.size <= FORMAT_CLASSES.length, `offered ${offeredName}: ${outcomes.size} outcomes`);
      for (const outcome of outcomes) {
        assert.ok(outcome === 'source' || offered.includes(outcome), `offered ${offeredName}: ${outcome} was not offered`);
      }
      // The generator reaches every offered format and the source fallback.
      assert.equal(outcomes.size, offered.length + 1, `offered ${offeredName}: outcomes ${[...outcomes].join(',')}`);
    }
  });
});
