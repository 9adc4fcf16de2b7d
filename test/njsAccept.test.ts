/**
 * The njs port of server/contract/accept.ts (nginx/imageproxy.js acceptClass,
 * formatClassOf, formatClass), run by the real njs, against the TypeScript: a table of
 * cases and thousands of generated Accept headers, under every offered list, and the
 * rendered table of known headers. njs sees a header's UTF-8 decoded and the app sees
 * its bytes as latin1, so the TypeScript is asked about the latin1 reading of the same
 * bytes.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MAX_ACCEPT_ELEMENTS, MAX_ACCEPT_LENGTH, formatClassOf, type ModernFormat } from '../server/contract/accept.js';
import { KNOWN_ACCEPT_HEADERS, acceptClassTable } from '../server/deploy/nginxConfig.js';
import { njsMissing, runNjsDriver } from './nginxHarness.js';
import { seededRandom } from './seededRandom.js';

const OFFERED_LISTS: ReadonlyArray<readonly ModernFormat[]> = [['avif', 'webp'], ['webp', 'avif'], ['webp'], ['avif']];
/** The generated module's formats: acceptClass answers under these. */
const MODULE_FORMATS: readonly ModernFormat[] = ['avif', 'webp'];

/** What the app sees of the bytes nginx hands njs as `text`. */
function asTheAppSeesIt(text: string): string {
  return Buffer.from(text, 'utf8').toString('latin1');
}

const TABLE: readonly string[] = [
  ...KNOWN_ACCEPT_HEADERS,
  ...KNOWN_ACCEPT_HEADERS.map((header) => header.toUpperCase()),
  ...KNOWN_ACCEPT_HEADERS.map((header) => ` ${header}`),
  '',
  ' ,\t, ',
  'image/avif;q=0,image/webp',
  'image/avif;q=0.000,image/webp,*/*',
  'image/avif;q=0,image/webp;q=0,*/*',
  'image/webp;q=0,image/*,*/*',
  'image/avif,image/webp,image/avif;q=0',
  'image/avif;q=0.5,image/webp;q=0.9',
  'image/webp;q=0.5,image/avif',
  'image/webp;q=0.1,image/avif;q=0.100',
  'image/avif;q=0.001',
  'image/jpeg,image/webp;q=0.5',
  'Image/WebP;Q=1, */*;Q=0.5',
  'image/avif;Q=0,image/webp',
  ' image/avif ; q=0.9 ,\timage/webp\t;\tq=0.8 ',
  'image/avif;q = 0,image/webp',
  'image/avif;codecs=av01;q=0,image/webp;foo="a,b;q=1";q=0.5',
  'image/avif;q=0;foo=bar,image/webp',
  'image/webp;x="a\\"b,c",image/avif;q=0',
  ',,image/avif;;q=1,,image/webp;',
  'image/avif+xml,image/webpx,*/*',
  'application/avif,video/webp',
  '"><script>alert(1)</script>',
  'image/avif;q=1.5',
  'image/avif;q=0.1234,image/webp',
  'image/avif;q=.5',
  'image/webp;q=-0',
  'image/webp;q=',
  'image/webp;q="1"',
  'image/webp;q=1;q=0',
  'image/avif,image/webp,image',
  'image/,image/webp',
  '*/webp',
  'image/webp;x="abc',
  'image/webp;charset',
  'image /webp',
  'image/webp junk',
  'image/wébp,image/webp',
  'image/webp;x="é€",image/avif;q=0',
  'image/webp;x="\\€"',
  [...Array.from({ length: MAX_ACCEPT_ELEMENTS - 1 }, (_, index) => `x/${index}`), 'image/webp'].join(','),
  [...Array.from({ length: MAX_ACCEPT_ELEMENTS }, (_, index) => `x/${index}`), 'image/webp'].join(','),
  `image/webp;x=${'a'.repeat(MAX_ACCEPT_LENGTH - 'image/webp;x='.length)}`,
  `image/webp;x=${'a'.repeat(MAX_ACCEPT_LENGTH)}`,
  `image/webp${';'.repeat(MAX_ACCEPT_LENGTH - 10)}`,
  `image/webp;x="${'\\a'.repeat(MAX_ACCEPT_LENGTH / 2 - 8)}`,
];

/** `count` distinct headers from a seeded generator: browsers' pieces, q values, noise. */
function generatedHeaders(count: number, seed: number): string[] {
  const random = seededRandom(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
  const mediaRanges = ['image/avif', 'IMAGE/AVIF', 'Image/Webp', 'image/webp', 'image/png', 'image/*', '*/*', 'video/*', 'image/jxl', 'text/html', 'image/avif+xml', 'x/y', 'image', '*/webp', ''];
  const parameters = ['', '', ';q=0', ';q=0.5', ';q=0.50', ';q=1', ';q=1.0', ';Q=0.001', ';q=0.8', ';q=1.5', ';q=.2', ';q="1"', ';level=1', ';x="a,b"', ';x="é"', ';q=0;q=1', '; q = 0.3', ';;', ';x="\\"'];
  const noise = ['', ' ', ',', ';', '"', '\t', 'é', '€', '/', '=', '\\'];
  const headers = new Set<string>();
  while (headers.size < count) {
    const parts: string[] = [];
    const elements = 1 + Math.floor(random() * 8);
    for (let part = 0; part < elements; part++) {
      parts.push(`${random() < 0.2 ? ' ' : ''}${pick(mediaRanges)}${pick(parameters)}${random() < 0.3 ? pick(parameters) : ''}${random() < 0.05 ? pick(noise) : ''}`);
    }
    headers.add(parts.join(pick([',', ', ', ' ,', ',\t'])) + (random() < 0.1 ? pick(noise) : ''));
  }
  return [...headers];
}

const GENERATED = generatedHeaders(5000, 2020);
const HEADERS = [...TABLE, ...GENERATED];

interface StemCase {
  stem: string;
  accept: string | undefined;
  expected: string;
}
const CHROME = KNOWN_ACCEPT_HEADERS[0] ?? '';
const STEM_CASES: StemCase[] = [
  { stem: '/i/A/b/Abc.250x250', accept: CHROME, expected: 'avif' },
  { stem: '/i/A/b/Abc.150x', accept: 'image/webp,*/*', expected: 'webp' },
  { stem: '/i/A/b/Abc.x150', accept: '*/*', expected: 'source' },
  { stem: '/i/A/b/Abc.150x', accept: undefined, expected: 'source' },
  { stem: '/i/A/b/Abc.150x', accept: 'garbage', expected: 'source' },
  // full size and /proxy (no label), refusals: never negotiated
  { stem: '/i/A/b/Abc', accept: CHROME, expected: '' },
  { stem: 'bad_signature', accept: CHROME, expected: '' },
  { stem: '', accept: CHROME, expected: '' },
];

const DRIVER = `import ip from 'imageproxy.js';
var fs = require('fs');
var input = JSON.parse(fs.readFileSync(CASES_FILE, 'utf8'));
for (var i = 0; i < input.headers.length; i++) {
    var header = input.headers[i];
    var row = [ip.acceptClass(header)];
    for (var o = 0; o < input.offered.length; o++) row.push(ip.formatClassOf(header, input.offered[o]));
    console.log(JSON.stringify(['h', i, row]));
}
for (var s = 0; s < input.stems.length; s++) {
    var c = input.stems[s];
    var headersIn = c.accept === null ? {} : { Accept: c.accept };
    console.log(JSON.stringify(['s', s, ip.formatClass({ variables: { imageproxy_stem: c.stem }, headersIn: headersIn })]));
}
`;

describe('nginx/imageproxy.js format class under njs, against server/contract/accept.ts', { skip: njsMissing() ?? false }, () => {
  let workDir = '';
  const headerResults: string[][] = [];
  const stemResults: string[] = [];

  before(async () => {
    workDir = await mkdtemp(join(tmpdir(), 'imageproxy-njs-accept-'));
    const casesFile = join(workDir, 'cases.json');
    await writeFile(casesFile, JSON.stringify({ headers: HEADERS, offered: OFFERED_LISTS, stems: STEM_CASES.map((entry) => ({ stem: entry.stem, accept: entry.accept ?? null })) }));
    const stdout = await runNjsDriver(workDir, DRIVER.replace('CASES_FILE', JSON.stringify(casesFile)), { sizes: [150, 250], formats: MODULE_FORMATS });
    for (const line of stdout.split('\n')) {
      if (!line.startsWith('[')) continue;
      const [kind, index, value] = JSON.parse(line) as ['h', number, string[]] | ['s', number, string];
      if (kind === 'h') headerResults[index] = value;
      else stemResults[index] = value;
    }
    assert.equal(headerResults.length, HEADERS.length, 'one njs row per header');
    assert.equal(stemResults.length, STEM_CASES.length, 'one njs result per stem case');
  });

  after(async () => {
    if (workDir !== '') await rm(workDir, { recursive: true, force: true });
  });

  it(`agrees with formatClassOf on ${TABLE.length} table cases and ${GENERATED.length} generated headers, under ${OFFERED_LISTS.length} offered lists`, () => {
    const failures: string[] = [];
    HEADERS.forEach((header, index) => {
      const appView = asTheAppSeesIt(header);
      const expected = [formatClassOf(appView, MODULE_FORMATS), ...OFFERED_LISTS.map((offered) => formatClassOf(appView, offered))];
      if (JSON.stringify(headerResults[index]) !== JSON.stringify(expected)) {
        failures.push(`${JSON.stringify(header.slice(0, 200))}: TypeScript ${expected.join(',')}, njs ${headerResults[index]?.join(',') ?? 'nothing'}`);
      }
    });
    assert.deepEqual(failures, []);
  });

  it('the generated headers reach every class under every offered list', () => {
    for (const [listIndex, offered] of OFFERED_LISTS.entries()) {
      const outcomes = new Set(GENERATED.map((_, index) => headerResults[TABLE.length + index]?.[listIndex + 1]));
      assert.deepEqual([...outcomes].sort(), [...offered, 'source'].sort(), `offered ${offered.join(',')}`);
    }
  });

  it('formatClass: thumbnail links only, the class of their Accept', () => {
    STEM_CASES.forEach((entry, index) => assert.equal(stemResults[index], entry.expected, `${entry.stem} ${entry.accept ?? '(no Accept)'}`));
  });
});

describe('acceptClassTable: the known headers and their class, as njs searches it', () => {
  it('holds each known header once, with formatClassOf of it', () => {
    for (const offered of OFFERED_LISTS) {
      const table = acceptClassTable(offered);
      for (const header of KNOWN_ACCEPT_HEADERS) {
        assert.equal(table.split(`\n${header}\r`).length, 2, header);
        assert.ok(table.includes(`\n${header}\r${formatClassOf(header, offered)}\n`), header);
      }
    }
  });
  it('is empty when nothing is offered', () => {
    assert.equal(acceptClassTable([]), '');
  });
});
