// The URL contract: path parsing, image URL decoding and size rules.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ERROR_STATUS, ImageproxyError, type ErrorCode } from '../server/errors.js';
import { decodeImageUrl, formatLink, imageUrlBytes, parseLink, type LinkRules, type ParsedLink } from '../server/contract/link.js';
import { describeVerdict, judgeLink, signLinkFor, type LinkPolicy, type SignRequest } from '../server/contract/linkTools.js';
import { signLink } from '../server/contract/signing.js';
import { parseSize, type SizeSpec } from '../server/contract/sizes.js';
import { VECTORS, extUrlOf } from './helpers.js';

const RULES: LinkRules = { buckets: new Set(['i', 'f', 't']), sizes: [150, 200, 250, 500] };
const SIG = 'gnjO6SJxYbeT9VBz';
/** 25 bytes: base64url needs `==` padding. */
const IMAGE_URL = 'https://example.com/a.jpg';
const EXT = extUrlOf(IMAGE_URL);
const EXT_PADDED = Buffer.from(IMAGE_URL).toString('base64');

const box = (maxHeight: number | null, maxWidth: number | null, label: string): SizeSpec => ({
  kind: 'box',
  maxHeight,
  maxWidth,
  label,
});
const FULL: SizeSpec = { kind: 'full' };

/** Runs a case: the value it must give, or the code of the ImageproxyError it must throw. */
function assertOutcome<T>(run: () => T, expected: T | ErrorCode): void {
  if (typeof expected === 'string' && Object.hasOwn(ERROR_STATUS, expected)) {
    assert.throws(run, (error: unknown) => {
      assert.ok(error instanceof ImageproxyError, `expected ImageproxyError, got ${String(error)}`);
      assert.equal(error.code, expected);
      return true;
    });
  } else {
    assert.deepEqual(run(), expected);
  }
}

interface LinkCase {
  name: string;
  path: string;
  expected: ParsedLink | ErrorCode;
}

const link = (extUrl: string, size: SizeSpec, proxy = false, bucket = 'i', signature = SIG): ParsedLink => ({
  bucket,
  size,
  signature,
  extUrl,
  proxy,
});

const [firstVector, , proxyVector] = VECTORS;
assert.ok(firstVector !== undefined && proxyVector !== undefined);

const LINK_CASES: LinkCase[] = [
  // accepted
  { name: 'vector path, full size', path: firstVector.path, expected: link('aHR0cHM6Ly9leGFtcGxlX3VybC9pbWcuanBn', FULL) },
  {
    name: 'vector path with /proxy',
    path: proxyVector.path,
    expected: link('aHR0cHM6Ly9leGFtcGxlX3VybC9pbWcuanBn', FULL, true, 'i', 'u21SyNepGvwmqYgs'),
  },
  { name: 'height only', path: `/i/150x/${SIG}/${EXT}`, expected: link(EXT, box(150, null, '150x')) },
  { name: 'width only', path: `/f/x200/${SIG}/${EXT}`, expected: link(EXT, box(null, 200, 'x200'), false, 'f') },
  { name: 'both', path: `/t/250x250/${SIG}/${EXT}`, expected: link(EXT, box(250, 250, '250x250'), false, 't') },
  { name: 'disallowed width ignored', path: `/i/150x999/${SIG}/${EXT}`, expected: link(EXT, box(150, null, '150x')) },
  { name: 'disallowed height ignored', path: `/i/999x500/${SIG}/${EXT}`, expected: link(EXT, box(null, 500, 'x500')) },
  { name: 'padding = kept as signed', path: `/i/full/${SIG}/${EXT_PADDED}`, expected: link(EXT_PADDED, FULL) },
  { name: 'padding as %3D decoded to =', path: `/i/full/${SIG}/${EXT}%3D%3D`, expected: link(EXT_PADDED, FULL) },
  { name: 'lower-case %3d decoded too', path: `/i/full/${SIG}/${EXT}%3d%3d`, expected: link(EXT_PADDED, FULL) },
  { name: '/proxy with garbage size: size ignored', path: `/i/abc/${SIG}/${EXT}/proxy`, expected: link(EXT, FULL, true) },
  { name: '/proxy with a resize: size ignored', path: `/i/150x150/${SIG}/${EXT}/proxy`, expected: link(EXT, FULL, true) },
  { name: '/proxy with an empty size', path: `/i//${SIG}/${EXT}/proxy`, expected: link(EXT, FULL, true) },
  // segment count and the fifth segment
  { name: 'sixth segment', path: `/i/full/${SIG}/${EXT}/proxy/x`, expected: 'bad_path' },
  { name: 'fifth segment not proxy', path: `/i/full/${SIG}/${EXT}/thumb`, expected: 'bad_path' },
  { name: 'fifth segment PROXY (case matters)', path: `/i/full/${SIG}/${EXT}/PROXY`, expected: 'bad_path' },
  { name: 'trailing slash makes an empty fifth segment', path: `/i/full/${SIG}/${EXT}/`, expected: 'bad_path' },
  { name: 'trailing slash after /proxy', path: `/i/full/${SIG}/${EXT}/proxy/`, expected: 'bad_path' },
  { name: 'three segments', path: `/i/full/${SIG}`, expected: 'bad_path' },
  { name: 'root', path: '/', expected: 'bad_path' },
  { name: 'empty path', path: '', expected: 'bad_path' },
  { name: 'no leading slash', path: `i/full/${SIG}/${EXT}`, expected: 'bad_path' },
  { name: 'doubled slash adds a segment', path: `/i/full//${SIG}/${EXT}`, expected: 'bad_path' },
  { name: 'malformed percent-encoding', path: `/i/full/${SIG}/${EXT}%E0%A4%A`, expected: 'bad_path' },
  // bucket
  { name: 'unknown bucket', path: `/x/full/${SIG}/${EXT}`, expected: 'unknown_bucket' },
  { name: 'bucket names are case-sensitive', path: `/I/full/${SIG}/${EXT}`, expected: 'unknown_bucket' },
  { name: 'empty bucket segment', path: `//full/${SIG}/${EXT}`, expected: 'unknown_bucket' },
  { name: 'unknown bucket is said before a bad size', path: `/x/abc/${SIG}/${EXT}`, expected: 'unknown_bucket' },
  // signature shape
  { name: 'signature of 15 characters', path: `/i/full/${SIG.slice(1)}/${EXT}`, expected: 'bad_signature' },
  { name: 'signature of 17 characters', path: `/i/full/${SIG}A/${EXT}`, expected: 'bad_signature' },
  { name: 'signature with + (standard base64)', path: `/i/full/${SIG.slice(1)}+/${EXT}`, expected: 'bad_signature' },
  { name: 'signature with padding', path: `/i/full/${SIG.slice(1)}=/${EXT}`, expected: 'bad_signature' },
  { name: 'empty signature', path: `/i/full//${EXT}`, expected: 'bad_signature' },
  { name: 'bad signature is said before a bad size', path: `/i/abc/short/${EXT}`, expected: 'bad_signature' },
  // ext_url shape
  { name: 'ext_url with + (standard base64)', path: `/i/full/${SIG}/${EXT}+`, expected: 'bad_url' },
  { name: 'ext_url with $', path: `/i/full/${SIG}/abc$def`, expected: 'bad_url' },
  { name: 'ext_url with %2F decoded to /', path: `/i/full/${SIG}/abc%2Fdef`, expected: 'bad_url' },
  { name: 'ext_url with three =', path: `/i/full/${SIG}/${EXT}===`, expected: 'bad_url' },
  { name: 'ext_url with = inside', path: `/i/full/${SIG}/ab=cd`, expected: 'bad_url' },
  { name: 'empty ext_url', path: `/i/full/${SIG}/`, expected: 'bad_url' },
  { name: 'ext_url longer than 8192', path: `/i/full/${SIG}/${'A'.repeat(8193)}`, expected: 'url_too_long' },
  { name: 'bad ext_url is said before a bad size', path: `/i/abc/${SIG}/abc$`, expected: 'bad_url' },
  // size
  { name: 'size x', path: `/i/x/${SIG}/${EXT}`, expected: 'bad_size' },
  { name: 'size 999x', path: `/i/999x/${SIG}/${EXT}`, expected: 'bad_size' },
  { name: 'size abc', path: `/i/abc/${SIG}/${EXT}`, expected: 'bad_size' },
  { name: 'size 0x0', path: `/i/0x0/${SIG}/${EXT}`, expected: 'bad_size' },
  { name: 'size 150x150x150', path: `/i/150x150x150/${SIG}/${EXT}`, expected: 'bad_size' },
  { name: 'empty size without /proxy', path: `/i//${SIG}/${EXT}`, expected: 'bad_size' },
];

describe('parseLink', () => {
  for (const testCase of LINK_CASES) {
    it(testCase.name, () => {
      assertOutcome(() => parseLink(testCase.path, RULES), testCase.expected);
    });
  }

  it('padded and unpadded ext_url decode to the same bytes', () => {
    assert.deepEqual(imageUrlBytes(EXT_PADDED), imageUrlBytes(EXT));
    assert.equal(imageUrlBytes(EXT).toString('utf8'), IMAGE_URL);
  });
});

interface UrlCase {
  name: string;
  text: string;
  /** The URL's href when accepted, or the error code. */
  expected: string;
}

const URL_CASES: UrlCase[] = [
  { name: 'http ok', text: 'http://example.com/a.jpg', expected: 'http://example.com/a.jpg' },
  { name: 'https ok', text: 'https://example.com/a.jpg', expected: 'https://example.com/a.jpg' },
  { name: 'https with port, query and fragment', text: 'https://example.com:8443/a.jpg?x=1#f', expected: 'https://example.com:8443/a.jpg?x=1#f' },
  { name: 'upper-case scheme and host', text: 'HTTPS://EXAMPLE.COM/A.JPG', expected: 'https://example.com/A.JPG' },
  { name: 'IDN host becomes punycode', text: 'https://bücher.example/bild.jpg', expected: 'https://xn--bcher-kva.example/bild.jpg' },
  { name: 'ftp', text: 'ftp://example.com/a.jpg', expected: 'bad_url' },
  { name: 'javascript', text: 'javascript:alert(1)', expected: 'bad_url' },
  { name: 'data', text: 'data:image/png;base64,iVBORw0KGgo=', expected: 'bad_url' },
  { name: 'file', text: 'file:///etc/passwd', expected: 'bad_url' },
  { name: 'websocket', text: 'wss://example.com/a', expected: 'bad_url' },
  { name: 'user and password', text: 'https://user:pass@example.com/a.jpg', expected: 'bad_url' },
  { name: 'user only', text: 'https://user@example.com/a.jpg', expected: 'bad_url' },
  { name: 'password only', text: 'https://:pass@example.com/a.jpg', expected: 'bad_url' },
  { name: 'no host', text: 'http://', expected: 'bad_url' },
  { name: 'scheme only', text: 'https:', expected: 'bad_url' },
  { name: 'relative path', text: '/images/a.jpg', expected: 'bad_url' },
  { name: 'not a URL', text: 'not a url', expected: 'bad_url' },
  { name: 'empty', text: '', expected: 'bad_url' },
];

describe('decodeImageUrl', () => {
  for (const testCase of URL_CASES) {
    it(testCase.name, () => {
      assertOutcome(() => decodeImageUrl(extUrlOf(testCase.text)).href, testCase.expected);
    });
  }

  it('padded ext_url decodes to the same URL', () => {
    assert.equal(decodeImageUrl(EXT_PADDED).href, IMAGE_URL);
  });
});

interface SizeCase {
  name: string;
  segment: string;
  allowed?: number[];
  expected: SizeSpec | 'bad_size';
}

const SIZE_CASES: SizeCase[] = [
  { name: 'full', segment: 'full', expected: FULL },
  { name: '150x', segment: '150x', expected: box(150, null, '150x') },
  { name: 'x500', segment: 'x500', expected: box(null, 500, 'x500') },
  { name: '200x250', segment: '200x250', expected: box(200, 250, '200x250') },
  { name: 'one side disallowed is dropped', segment: '200x251', expected: box(200, null, '200x') },
  { name: 'leading zero is the same number', segment: '0150x', expected: box(150, null, '150x') },
  { name: 'configured list', segment: '100x100', allowed: [100], expected: box(100, 100, '100x100') },
  { name: 'default size not in a configured list', segment: '150x', allowed: [100], expected: 'bad_size' },
  { name: 'x', segment: 'x', expected: 'bad_size' },
  { name: '999x', segment: '999x', expected: 'bad_size' },
  { name: 'abc', segment: 'abc', expected: 'bad_size' },
  { name: '0x0', segment: '0x0', expected: 'bad_size' },
  { name: '150x150x150', segment: '150x150x150', expected: 'bad_size' },
  { name: 'empty', segment: '', expected: 'bad_size' },
  { name: 'FULL in capitals', segment: 'FULL', expected: 'bad_size' },
  { name: 'capital X', segment: '150X', expected: 'bad_size' },
  { name: 'sign', segment: '+150x', expected: 'bad_size' },
  { name: 'negative', segment: '-150x', expected: 'bad_size' },
  { name: 'decimal', segment: '150.0x', expected: 'bad_size' },
  { name: 'space', segment: ' 150x', expected: 'bad_size' },
  { name: 'seven digits, nothing else allowed', segment: '1234567x', expected: 'bad_size' },
  { name: 'a long disallowed value is ignored like any other', segment: '1234567x150', expected: box(null, 150, 'x150') },
  { name: 'digits past Number precision', segment: '150x99999999999999999999', expected: box(150, null, '150x') },
];

describe('parseSize', () => {
  for (const testCase of SIZE_CASES) {
    it(testCase.name, () => {
      assertOutcome(() => parseSize(testCase.segment, testCase.allowed ?? RULES.sizes), testCase.expected);
    });
  }
});

describe('formatLink', () => {
  const table: Array<[string, ParsedLink, string]> = [
    ['full', { bucket: 'i', size: { kind: 'full' }, signature: SIG, extUrl: EXT, proxy: false }, `/i/full/${SIG}/${EXT}`],
    ['height only', { bucket: 'f', size: box(150, null, '150x'), signature: SIG, extUrl: EXT, proxy: false }, `/f/150x/${SIG}/${EXT}`],
    ['width only', { bucket: 't', size: box(null, 200, 'x200'), signature: SIG, extUrl: EXT, proxy: false }, `/t/x200/${SIG}/${EXT}`],
    ['box', { bucket: 'i', size: box(250, 250, '250x250'), signature: SIG, extUrl: EXT, proxy: false }, `/i/250x250/${SIG}/${EXT}`],
    ['proxy', { bucket: 'i', size: { kind: 'full' }, signature: SIG, extUrl: EXT, proxy: true }, `/i/full/${SIG}/${EXT}/proxy`],
    ['padded ext_url', { bucket: 'i', size: { kind: 'full' }, signature: SIG, extUrl: EXT_PADDED.replace(/\+/g, '-').replace(/\//g, '_'), proxy: false }, `/i/full/${SIG}/${EXT_PADDED.replace(/\+/g, '-').replace(/\//g, '_')}`],
  ];
  for (const [name, link, path] of table) {
    it(`${name}: writes the path, and parseLink reads the same link back`, () => {
      assert.equal(formatLink(link), path);
      assert.deepEqual(parseLink(path, RULES), link);
    });
  }

  it('every vector path is formatLink of its parsed link', () => {
    for (const vector of VECTORS) {
      assert.equal(formatLink(parseLink(vector.path, RULES)), vector.path, vector.name);
    }
  });
});

// ---- server/contract/linkTools.ts: what sign and verify decide ------------------------------------

const POLICY: LinkPolicy = {
  buckets: { i: { legacySignatures: false }, old: { legacySignatures: true } },
  sizes: [150, 200, 250, 500],
  skewSeconds: 3600,
  calendarYearWeeks: false,
};
const AT = Date.parse('2025-06-11T12:00:00Z');
const signer = { policy: POLICY, secret: 's' };

describe('signLinkFor', () => {
  const refusals: Array<[string, Partial<SignRequest>, ErrorCode]> = [
    ['credentials', { imageUrl: 'http://u:p@example.com/a.jpg' }, 'bad_url'],
    ['ftp', { imageUrl: 'ftp://example.com/a.jpg' }, 'bad_url'],
    ['not a URL', { imageUrl: 'example.com/a.jpg' }, 'bad_url'],
    ['too long for a link', { imageUrl: `https://example.com/${'a'.repeat(6200)}` }, 'url_too_long'],
    ['height not allowed', { height: 999 }, 'bad_size'],
    ['width not allowed with an allowed height', { height: 150, width: 7 }, 'bad_size'],
    ['unknown bucket', { bucket: 'zz' }, 'unknown_bucket'],
    ['legacy in a bucket without legacy', { legacy: true }, 'bad_signature'],
  ];
  for (const [name, overrides, code] of refusals) {
    it(`refuses: ${name} (${code})`, () => {
      assert.throws(
        () => signLinkFor({ imageUrl: 'https://example.com/a.jpg', bucket: 'i', atMs: AT, ...overrides }, signer),
        (error: unknown) => error instanceof ImageproxyError && error.code === code,
      );
    });
  }

  it('a proxy link is full size whatever size was asked', () => {
    const path = signLinkFor({ imageUrl: 'https://example.com/a.jpg', bucket: 'i', atMs: AT, proxy: true, height: 999 }, signer);
    assert.match(path, /^\/i\/full\/[A-Za-z0-9_-]{16}\/[A-Za-z0-9_-]+\/proxy$/);
  });

  it('the longest signable URL is right at the ext_url limit', () => {
    const base = 'https://example.com/';
    const longest = `${base}${'a'.repeat((8192 / 4) * 3 - base.length)}`;
    assert.doesNotThrow(() => signLinkFor({ imageUrl: longest, bucket: 'i', atMs: AT }, signer));
    assert.throws(() => signLinkFor({ imageUrl: `${longest}a`, bucket: 'i', atMs: AT }, signer));
  });

  it('what it signs, judgeLink calls valid, with the week and the bucket scheme', () => {
    const path = signLinkFor({ imageUrl: 'https://ex.com/ü ñ.png?x=1#y', bucket: 'old', legacy: true, height: 150, atMs: AT }, signer);
    const verdict = judgeLink(path, { policy: POLICY, secrets: ['other', 's'], nowMs: AT });
    assert.equal(verdict.kind, 'valid');
    assert.match(describeVerdict(verdict), /^valid: secret #1, week 202524 \(iso year rule, now\), legacy scheme/);
  });
});

describe('judgeLink', () => {
  const fresh = signLinkFor({ imageUrl: 'https://example.com/a.jpg', bucket: 'i', atMs: AT }, signer);
  // signLinkFor refuses a legacy link for bucket i (it refuses them): signed by hand, as an old Gazelle did.
  const legacyExtUrl = extUrlOf('https://example.com/old.jpg');
  const legacyInPlainBucket = formatLink({
    bucket: 'i',
    size: 'full',
    signature: signLink('s', { bucket: 'i', extUrl: legacyExtUrl, proxy: false }, AT, { legacy: true }),
    extUrl: legacyExtUrl,
    proxy: false,
  });
  const table: Array<[string, string, number, string]> = [
    ['valid now', fresh, AT, 'valid'],
    ['valid last week', fresh, AT + 7 * 86_400_000, 'valid'],
    ['expired three weeks later', fresh, AT + 21 * 86_400_000, 'expired'],
    ['wrong after more than a year', fresh, AT + 60 * 7 * 86_400_000, 'wrong'],
    ['wrong: tampered', fresh.replace(/\/([A-Za-z0-9_-])([A-Za-z0-9_-]{15})\//, (_all, first: string, rest: string) => `/${first === 'A' ? 'B' : 'A'}${rest}/`), AT, 'wrong'],
    ['invalid: structure', '/i/full', AT, 'refused'],
    ['legacy: valid under the legacy scheme, which bucket i refuses', legacyInPlainBucket, AT, 'legacy'],
    ['expired: a legacy link three weeks later', legacyInPlainBucket, AT + 21 * 86_400_000, 'expired'],
  ];
  for (const [name, path, nowMs, kind] of table) {
    it(name, () => {
      const verdict = judgeLink(path, { policy: POLICY, secrets: ['s'], nowMs });
      assert.equal(verdict.kind, kind);
      assert.match(describeVerdict(verdict), new RegExp(`^${kind === 'refused' ? 'invalid' : kind}: `));
    });
  }
});
