/**
 * nginx/imageproxy.js, run by the real njs 0.7.9 (the Debian `njs` command-line tool):
 * the shared vectors, week rules, sizes, refusals, and a cross-check of many links
 * against the TypeScript contract (server/contract/link.ts, signing.ts, weeks.ts, layout.ts).
 *
 * The test writes every case to a JSON file, one njs run evaluates them all and prints
 * one line per case (njs cuts long single outputs), and the table below compares.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isImageproxyError } from '../server/errors.js';
import { fileStem, keyDirectory, storageKey } from '../server/contract/layout.js';
import { formatLink, imageUrlBytes, parseLink } from '../server/contract/link.js';
import { CONFIG_MODULE_NAME, renderConfigModule, type NginxRenderInput } from '../server/deploy/nginxConfig.js';
import { signLink, verifySignature } from '../server/contract/signing.js';
import { acceptedWeeks } from '../server/contract/weeks.js';
import { NJS_DIR, njsMissing } from './nginxHarness.js';
import { extUrlOf, VECTORS, type Vector } from './helpers.js';

const vectors = VECTORS;

const DAY = 86_400;

/** The njs config object, read back from the generated module (its object is JSON). */
type NjsConfig = Record<string, unknown>;

function renderInput(overrides: Partial<NginxRenderInput>): NginxRenderInput {
  return {
    nginxListen: '127.0.0.1:8080',
    appListen: '127.0.0.1:8091',
    root: '/srv/imageproxy',
    internalPrefix: '/_imageproxy',
    njsDir: NJS_DIR,
    configModuleDir: '/tmp',
    buckets: { i: { legacySignatures: false }, f: { legacySignatures: false }, t: { legacySignatures: false } },
    sizes: [150, 250],
    skewSeconds: 3600,
    secrets: ['1234', '123456'],
    ...overrides,
  };
}

function njsConfig(input: NginxRenderInput): NjsConfig {
  const text = renderConfigModule(input);
  const match = /export default (\{[\s\S]*\});\s*$/.exec(text);
  assert.ok(match?.[1] !== undefined, 'generated module ends with export default {...};');
  return JSON.parse(match[1]) as NjsConfig;
}

const plainConfig = njsConfig(renderInput({}));
const legacyConfig = njsConfig(renderInput({ buckets: { i: { legacySignatures: true }, f: { legacySignatures: true } } }));
const calendarConfig = njsConfig(renderInput({ calendarYearWeeks: true }));

function configFor(vector: Vector): NjsConfig {
  if (vector.calendarYearWeeks === true) return calendarConfig;
  return vector.legacy ? legacyConfig : plainConfig;
}

/** The stem nginx should try for a vector, as vectors.json states it (not computed here). */
function vectorStem(vector: Vector): string {
  return `/${vector.bucket}/${vector.key[0]}/${vector.key[1]}/${vector.fileStem}`;
}

/** The stem nginx should try for a URL: server/contract/layout.ts, as the app stores it. */
function expectedStem(bucket: string, imageUrl: string, label: string | null): string {
  const key = storageKey(Buffer.from(imageUrl));
  return `/${keyDirectory(bucket, key)}/${fileStem(key, label)}`;
}

function linkPath(bucket: string, size: string, signature: string, extUrl: string, proxy: boolean): string {
  return formatLink({ bucket, size, signature, extUrl, proxy });
}

function tamper(signature: string): string {
  const last = signature.slice(-1);
  return signature.slice(0, -1) + (last === 'A' ? 'B' : 'A');
}

/** What the TypeScript contract says about a path: a stem or an error code. */
function typescriptVerdict(path: string, nowSeconds: number, input: NginxRenderInput): string {
  try {
    const link = parseLink(path, { buckets: new Set(Object.keys(input.buckets)), sizes: input.sizes });
    const match = verifySignature(link.signature, link, {
      secrets: input.secrets,
      legacyAllowed: input.buckets[link.bucket]?.legacySignatures ?? false,
      nowMs: nowSeconds * 1000,
      skewSeconds: input.skewSeconds,
    });
    if (match === null) return 'bad_signature';
    const key = storageKey(imageUrlBytes(link.extUrl));
    return `/${keyDirectory(link.bucket, key)}/${fileStem(key, link.size.kind === 'full' ? null : link.size.label)}`;
  } catch (error) {
    if (isImageproxyError(error)) return error.code;
    throw error;
  }
}

type NjsCase =
  | { kind: 'verify'; path: string; now: number; cfg: NjsConfig }
  | { kind: 'weeks'; now: number; skew: number; calendar: boolean }
  | { kind: 'stem'; method: string; path: string };

interface Expectation {
  name: string;
  run: NjsCase;
  expected: string;
}

const cases: Expectation[] = [];

function verifyCase(name: string, path: string, now: number, cfg: NjsConfig, expected: string): void {
  cases.push({ name, run: { kind: 'verify', path, now, cfg }, expected });
}

// ---- the shared vectors -----------------------------------------------------------------

for (const vector of vectors) {
  const cfg = configFor(vector);
  const stem = vectorStem(vector);
  verifyCase(`vector "${vector.name}" at its time`, vector.path, vector.at, cfg, stem);
  verifyCase(`vector "${vector.name}" one week later (previous week)`, vector.path, vector.at + 7 * DAY, cfg, stem);
  verifyCase(`vector "${vector.name}" two weeks later`, vector.path, vector.at + 14 * DAY, cfg, 'bad_signature');
  const [, bucket = '', size = '', signature = ''] = vector.path.split('/');
  const tampered = vector.path.replace(`/${bucket}/${size}/${signature}/`, `/${bucket}/${size}/${tamper(signature)}/`);
  verifyCase(`vector "${vector.name}" tampered`, tampered, vector.at, cfg, 'bad_signature');
  verifyCase(`vector "${vector.name}" with a query string`, `${vector.path}?x=1`, vector.at, cfg, stem);
}

const [bucketVector, , proxyVector, legacyVector] = vectors;
assert.ok(bucketVector && proxyVector?.proxy && legacyVector?.legacy, 'vectors.json holds the expected vectors');

for (const vector of vectors.filter((item) => item.calendarYearWeeks === true)) {
  verifyCase(`calendar vector "${vector.name}" without calendarYearWeeks`, vector.path, vector.at, plainConfig, 'bad_signature');
}

// The New-Year replay: a link signed in ISO week 1 against the calendar rule's key in late December.
const replayImageUrl = 'https://example.com/replayed.jpg';
const replayPath = linkPath(
  'i',
  'full',
  signLink('1234', { bucket: 'i', extUrl: extUrlOf(replayImageUrl), proxy: false }, Date.parse('2024-01-03T12:00:00Z')),
  extUrlOf(replayImageUrl),
  false,
);
for (const instant of ['2024-12-30T00:00:00Z', '2024-12-31T23:59:59Z']) {
  const now = Date.parse(instant) / 1000;
  verifyCase(`signed 2024-01-03, replayed ${instant}: refused by default`, replayPath, now, plainConfig, 'bad_signature');
  verifyCase(`signed 2024-01-03, replayed ${instant}: accepted with calendarYearWeeks`, replayPath, now, calendarConfig, expectedStem('i', replayImageUrl, null));
}

verifyCase('legacy vector on a bucket without legacy signatures', legacyVector.path, legacyVector.at, plainConfig, 'bad_signature');
verifyCase('bucket vector on a legacy bucket', bucketVector.path, bucketVector.at, legacyConfig, expectedStem('i', bucketVector.imageUrl, null));
verifyCase(
  'only the first secret configured: the other-secret vector fails',
  vectors[1]?.path ?? '',
  vectors[1]?.at ?? 0,
  njsConfig(renderInput({ secrets: ['1234'] })),
  'bad_signature',
);
verifyCase(
  'proxy vector: size segment ignored',
  proxyVector.path.replace('/full/', '/whatever/'),
  proxyVector.at,
  plainConfig,
  expectedStem('i', proxyVector.imageUrl, null),
);
verifyCase('proxy signature without /proxy', proxyVector.path.replace(/\/proxy$/, ''), proxyVector.at, plainConfig, 'bad_signature');
verifyCase('non-proxy signature with /proxy', `${bucketVector.path}/proxy`, bucketVector.at, plainConfig, 'bad_signature');

// ---- sizes, padding and refusals, signed at a fixed time -------------------------------------

const at = bucketVector.at;
const atMs = at * 1000;
const imageUrl = 'https://images.example.org/a/b.png?x=1&y=%20';
const extUrl = extUrlOf(imageUrl);
const signed = (parts: { bucket?: string; ext?: string; proxy?: boolean; legacy?: boolean; secret?: string }): string =>
  signLink(
    parts.secret ?? '1234',
    { bucket: parts.bucket ?? 'i', extUrl: parts.ext ?? extUrl, proxy: parts.proxy ?? false },
    atMs,
    { legacy: parts.legacy ?? false },
  );
const signature = signed({});

const sizeTable: Array<[string, string]> = [
  ['full', expectedStem('i', imageUrl, null)],
  ['150x', expectedStem('i', imageUrl, '150x')],
  ['x250', expectedStem('i', imageUrl, 'x250')],
  ['150x250', expectedStem('i', imageUrl, '150x250')],
  ['0150x', expectedStem('i', imageUrl, '150x')],
  ['150x999', expectedStem('i', imageUrl, '150x')],
  ['999x250', expectedStem('i', imageUrl, 'x250')],
  ['999x', 'bad_size'],
  ['x', 'bad_size'],
  ['1234567x', 'bad_size'],
  ['1234567x250', expectedStem('i', imageUrl, 'x250')],
  ['150x99999999999999999999', expectedStem('i', imageUrl, '150x')],
  ['150', 'bad_size'],
  ['FULL', 'bad_size'],
  ['', 'bad_size'],
];
for (const [size, expected] of sizeTable) {
  verifyCase(`size "${size}"`, linkPath('i', size, signature, extUrl, false), at, plainConfig, expected);
}

// Padding: the signature covers ext_url as written, the stem does not depend on it.
for (const url of ['https://e.org/a', 'https://e.org/ab', 'https://e.org/abc']) {
  const bare = extUrlOf(url);
  const padded = Buffer.from(url).toString('base64');
  const paddings = new Set([bare, `${bare}${padded.slice(bare.length)}`, `${bare}=`, `${bare}==`]);
  for (const ext of paddings) {
    const path = linkPath('f', 'full', signed({ bucket: 'f', ext }), ext, false);
    verifyCase(`padding "${ext}"`, path, at, plainConfig, expectedStem('f', url, null));
  }
}

const refusals: Array<[string, string, string]> = [
  ['unknown bucket', linkPath('x', 'full', signature, extUrl, false), 'unknown_bucket'],
  ['inherited property as bucket', linkPath('constructor', 'full', signature, extUrl, false), 'unknown_bucket'],
  ['three segments', `/i/full/${signature}`, 'bad_path'],
  ['six segments', `${linkPath('i', 'full', signature, extUrl, true)}/x`, 'bad_path'],
  ['fifth segment not proxy', `${linkPath('i', 'full', signature, extUrl, false)}/proxi`, 'bad_path'],
  ['trailing slash', `${linkPath('i', 'full', signature, extUrl, false)}/`, 'bad_path'],
  ['percent-encoded', linkPath('i', 'full', signature, `%41${extUrl}`, false), 'bad_path'],
  ['no leading slash', linkPath('i', 'full', signature, extUrl, false).slice(1), 'bad_path'],
  ['short signature', linkPath('i', 'full', signature.slice(1), extUrl, false), 'bad_signature'],
  ['signature with a bad character', linkPath('i', 'full', `${signature.slice(1)}.`, extUrl, false), 'bad_signature'],
  ['ext_url with a dot', linkPath('i', 'full', signature, `${extUrl}.jpg`, false), 'bad_url'],
  ['ext_url with three =', linkPath('i', 'full', signature, `${extUrl}===`, false), 'bad_url'],
  ['ext_url too long', linkPath('i', 'full', signature, 'A'.repeat(8193), false), 'url_too_long'],
  ['bad ext_url before bad signature check', linkPath('i', 'full', signature, '..', false), 'bad_url'],
];
for (const [name, path, expected] of refusals) verifyCase(name, path, at, plainConfig, expected);

// ---- cross-check with the TypeScript contract ------------------------------------------------

const crossInput = renderInput({
  buckets: { i: { legacySignatures: false }, old: { legacySignatures: true } },
  sizes: [100, 150, 200, 250, 500],
  secrets: ['first secret', 'sëcret "two" \\ ✓'],
});
const crossConfig = njsConfig(crossInput);
const crossUrls = ['http://a.b/c.gif', 'https://example.com/image.jpg?size=large&é=1', 'https://x.y/' + 'z'.repeat(300)];
const crossSizes = ['full', '150x', 'x500', '100x200', '99x', '0250x0100', 'abc'];
let crossCount = 0;
for (const [urlIndex, url] of crossUrls.entries()) {
  for (const bucket of ['i', 'old', 'nope']) {
    for (const proxy of [false, true]) {
      for (const legacy of [false, true]) {
        const ext = urlIndex === 1 ? Buffer.from(url).toString('base64').replace(/\+/g, '-').replace(/\//g, '_') : extUrlOf(url);
        for (const size of crossSizes) {
          for (const daysLater of [0, 6, 8, 15]) {
            const secret = crossInput.secrets[(urlIndex + daysLater) % 2] ?? '';
            const sig = signLink(secret, { bucket, extUrl: ext, proxy }, atMs, { legacy });
            const path = linkPath(bucket, size, sig, ext, proxy);
            const now = at + daysLater * DAY;
            verifyCase(`cross-check ${path} +${daysLater}d`, path, now, crossConfig, typescriptVerdict(path, now, crossInput));
            crossCount += 1;
          }
        }
      }
    }
  }
}

// ---- weeks: the same accepted set as server/contract/weeks.ts ------------------------------------------

const weekInstants: number[] = [];
for (let year = 2000; year <= 2040; year += 1) {
  for (const [month, day] of [[0, 1], [0, 2], [0, 3], [0, 4], [0, 5], [0, 6], [0, 7], [0, 8], [11, 24], [11, 28], [11, 29], [11, 30], [11, 31]] as const) {
    for (const hour of [0, 1, 23]) weekInstants.push(Date.UTC(year, month, day, hour, 30) / 1000);
  }
  weekInstants.push(Date.UTC(year, 5, 15) / 1000);
}
for (const now of weekInstants) {
  for (const skew of [0, 3600, 86_400]) {
    for (const calendar of [false, true]) {
      const expected = acceptedWeeks(now * 1000, skew, calendar)
        .map((candidate) => candidate.suffix)
        .sort()
        .join(',');
      cases.push({
        name: `weeks at ${new Date(now * 1000).toISOString()} skew ${skew}${calendar ? ' calendar' : ''}`,
        run: { kind: 'weeks', now, skew, calendar },
        expected,
      });
    }
  }
}

// ---- linkStem: the js_set handler with the generated module, at the real time ---------------------

const generatedInput = renderInput({});
const nowSignature = signLink('123456', { bucket: 'i', extUrl, proxy: false }, Date.now());
const nowPath = linkPath('i', '150x', nowSignature, extUrl, false);
const stemTable: Array<[string, string, string]> = [
  ['GET', nowPath, expectedStem('i', imageUrl, '150x')],
  ['HEAD', nowPath, expectedStem('i', imageUrl, '150x')],
  ['POST', nowPath, ''],
  ['GET', linkPath('i', '150x', tamper(nowSignature), extUrl, false), 'bad_signature'],
  ['GET', linkPath('i', '7x', nowSignature, extUrl, false), ''],
  ['GET', '/favicon.ico', ''],
];
for (const [method, path, expected] of stemTable) {
  cases.push({ name: `linkStem ${method} ${path}`, run: { kind: 'stem', method, path }, expected });
}

// ---- the run ------------------------------------------------------------------------------

const DRIVER = `import ip from 'imageproxy.js';
var fs = require('fs');
var cases = JSON.parse(fs.readFileSync(CASES_FILE, 'utf8'));
for (var i = 0; i < cases.length; i++) {
    var c = cases[i];
    var out;
    if (c.kind === 'verify') out = ip.verifyLink(c.path, c.now, c.cfg);
    else if (c.kind === 'weeks') out = ip.weekSuffixes(c.now, c.skew, c.calendar).sort().join(',');
    else out = ip.linkStem({ method: c.method, variables: { request_uri: c.path } });
    console.log(JSON.stringify([i, out]));
}
`;

describe('nginx/imageproxy.js under njs', { skip: njsMissing() ?? false }, () => {
  let workDir = '';
  let results: string[] = [];

  before(async () => {
    workDir = await mkdtemp(join(tmpdir(), 'imageproxy-njs-'));
    const casesFile = join(workDir, 'cases.json');
    await writeFile(casesFile, JSON.stringify(cases.map((entry) => entry.run)));
    await writeFile(join(workDir, CONFIG_MODULE_NAME), renderConfigModule(generatedInput), { mode: 0o600 });
    await writeFile(join(workDir, 'driver.js'), DRIVER.replace('CASES_FILE', JSON.stringify(casesFile)));
    const run = spawnSync('njs', ['-p', workDir, '-p', NJS_DIR, join(workDir, 'driver.js')], {
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    });
    assert.equal(run.status, 0, `njs failed: ${run.stderr}${run.stdout.slice(0, 2000)}`);
    results = [];
    for (const line of run.stdout.split('\n')) {
      if (!line.startsWith('[')) continue;
      const [index, value] = JSON.parse(line) as [number, string];
      results[index] = value;
    }
    assert.equal(results.length, cases.length, 'one njs result per case');
  });

  after(async () => {
    if (workDir !== '') await rm(workDir, { recursive: true, force: true });
  });

  it(`agrees on ${cases.length} cases (${crossCount} cross-checked with the TypeScript contract)`, () => {
    const failures = cases
      .map((entry, index) => ({ entry, actual: results[index] }))
      .filter(({ entry, actual }) => actual !== entry.expected)
      .map(({ entry, actual }) => `${entry.name}: expected ${JSON.stringify(entry.expected)}, njs ${JSON.stringify(actual)}`);
    assert.deepEqual(failures, []);
  });

  it('every vector verifies at its time and not two weeks later', () => {
    for (const vector of vectors) {
      const index = cases.findIndex((entry) => entry.name === `vector "${vector.name}" at its time`);
      assert.equal(results[index], vectorStem(vector), vector.name);
      const later = cases.findIndex((entry) => entry.name === `vector "${vector.name}" two weeks later`);
      assert.equal(results[later], 'bad_signature', vector.name);
    }
  });
});
