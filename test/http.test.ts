// The Express app over stored images, in-process on 127.0.0.1:0, with real JPEG and PNG
// files placed at their layout paths. No request leaves loopback: the stored-images
// service never fetches.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { ERROR_STATUS, type ErrorCode } from '../server/errors.js';
import { storageKey } from '../server/contract/layout.js';
import { signLink } from '../server/contract/signing.js';
import {
  assertSameBytes,
  extUrlOf,
  makeTempRoot,
  removeTempRoot,
  request,
  shortBody,
  signedPath,
  startApp,
  type Answer,
  type LinkSpec,
  type RunningApp,
} from './helpers.js';

const SECRET = 'http test secret';
/** Wednesday 2025-06-11 12:00 UTC. */
const NOW = Date.parse('2025-06-11T12:00:00Z');
const DAY_MS = 86_400_000;
const IMAGE_CACHE_CONTROL = 'public, max-age=604800, immutable';
const BUCKETS = { i: {}, f: {}, t: {}, old: { legacySignatures: true } };

const PHOTO_URL = 'https://example.com/photo.jpg';
const MISSING_URL = 'https://example.com/missing.png';
const PHOTO_KEY = storageKey(Buffer.from(PHOTO_URL));
const PHOTO_DIRECTORY = `i/${PHOTO_KEY[0]}/${PHOTO_KEY[1]}`;

const photoJpeg = await sharp({ create: { width: 40, height: 30, channels: 3, background: { r: 200, g: 30, b: 30 } } })
  .jpeg()
  .toBuffer();
const thumbPng = await sharp({ create: { width: 20, height: 15, channels: 3, background: { r: 30, g: 200, b: 30 } } })
  .png()
  .toBuffer();

const link = (spec: Partial<LinkSpec> = {}): string => signedPath({ secret: SECRET, imageUrl: PHOTO_URL, atMs: NOW, ...spec });

let clockMs = NOW;
let root = '';
let direct: RunningApp;
let accel: RunningApp;

async function placeFile(base: string, relativePath: string, bytes: Buffer): Promise<void> {
  await mkdir(join(base, relativePath, '..'), { recursive: true });
  await writeFile(join(base, relativePath), bytes);
}

before(async () => {
  root = await makeTempRoot();
  await placeFile(root, `${PHOTO_DIRECTORY}/${PHOTO_KEY}.jpg`, photoJpeg);
  await placeFile(root, `${PHOTO_DIRECTORY}/${PHOTO_KEY}.150x.png`, thumbPng);
  await placeFile(root, `old/${PHOTO_KEY[0]}/${PHOTO_KEY[1]}/${PHOTO_KEY}.jpg`, photoJpeg);
  const common = { root, secrets: ['a newer secret', SECRET], now: () => clockMs };
  direct = await startApp({ ...common, config: { buckets: BUCKETS } });
  accel = await startApp({ ...common, config: { buckets: BUCKETS, delivery: 'accel' } });
});

after(async () => {
  await direct.close();
  await accel.close();
  await removeTempRoot(root);
});

function assertSecurityHeaders(answer: Answer): void {
  assert.equal(answer.headers.get('x-content-type-options'), 'nosniff');
  assert.match(answer.headers.get('content-security-policy') ?? '', /default-src 'none'/);
}

interface ImageCase {
  name: string;
  path: string;
  init?: { method?: string; headers?: Record<string, string> };
  status: number;
  contentType: string;
  body: Buffer;
  headers?: Record<string, string>;
}

const IMAGE_CASES: ImageCase[] = [
  { name: 'stored original', path: link(), status: 200, contentType: 'image/jpeg', body: photoJpeg },
  { name: 'stored original, query string ignored', path: `${link()}?utm=1`, status: 200, contentType: 'image/jpeg', body: photoJpeg },
  { name: 'variant for 150x', path: link({ size: '150x' }), status: 200, contentType: 'image/png', body: thumbPng },
  { name: 'variant for 150x999 (999 ignored)', path: link({ size: '150x999' }), status: 200, contentType: 'image/png', body: thumbPng },
  { name: '/proxy of a stored image', path: link({ proxy: true }), status: 200, contentType: 'image/jpeg', body: photoJpeg },
  { name: 'legacy link in a legacy bucket', path: link({ bucket: 'old', legacy: true }), status: 200, contentType: 'image/jpeg', body: photoJpeg },
  {
    name: 'HEAD: headers, no body',
    path: link(),
    init: { method: 'HEAD' },
    status: 200,
    contentType: 'image/jpeg',
    body: Buffer.alloc(0),
    headers: { 'content-length': String(photoJpeg.length) },
  },
  {
    name: 'Range: 206 with Content-Range',
    path: link(),
    init: { headers: { Range: 'bytes=0-9' } },
    status: 206,
    contentType: 'image/jpeg',
    body: photoJpeg.subarray(0, 10),
    headers: { 'content-range': `bytes 0-9/${photoJpeg.length}`, 'content-length': '10' },
  },
  {
    name: 'Range: suffix',
    path: link(),
    init: { headers: { Range: 'bytes=-5' } },
    status: 206,
    contentType: 'image/jpeg',
    body: photoJpeg.subarray(-5),
    headers: { 'content-range': `bytes ${photoJpeg.length - 5}-${photoJpeg.length - 1}/${photoJpeg.length}` },
  },
];

describe('stored images, direct delivery', () => {
  for (const testCase of IMAGE_CASES) {
    it(testCase.name, async () => {
      const answer = await request(direct.baseUrl, testCase.path, testCase.init);
      assert.equal(answer.status, testCase.status);
      assert.equal(answer.headers.get('content-type'), testCase.contentType);
      assertSameBytes(answer.body, testCase.body, 'the body');
      assert.equal(answer.headers.get('cache-control'), IMAGE_CACHE_CONTROL);
      assert.ok(answer.headers.get('last-modified'));
      if (testCase.status === 200) assert.equal(answer.headers.get('content-length'), String(testCase.body.length || photoJpeg.length));
      assert.equal(answer.headers.get('x-imageproxy-error'), null);
      for (const [name, value] of Object.entries(testCase.headers ?? {})) assert.equal(answer.headers.get(name), value, name);
      assertSecurityHeaders(answer);
    });
  }

  it('padded links (= and %3D) share the stored file', async () => {
    const padded = Buffer.from(PHOTO_URL).toString('base64'); // 29 bytes: one '='
    assert.ok(padded.endsWith('='));
    const signature = signLink(SECRET, { bucket: 'i', extUrl: padded, proxy: false }, NOW);
    for (const path of [`/i/full/${signature}/${padded}`, `/i/full/${signature}/${padded.slice(0, -1)}%3D`]) {
      const answer = await request(direct.baseUrl, path);
      assert.equal(answer.status, 200, path);
      assertSameBytes(answer.body, photoJpeg, 'the body');
    }
  });

  it('If-Modified-Since with the Last-Modified answers 304', async () => {
    const first = await request(direct.baseUrl, link());
    const lastModified = first.headers.get('last-modified') ?? '';
    const again = await request(direct.baseUrl, link(), { headers: { 'If-Modified-Since': lastModified } });
    assert.equal(again.status, 304);
    assert.equal(again.body.length, 0);
  });

  it(
    'ETag is sent and If-None-Match answers 304',
    async () => {
      const first = await request(direct.baseUrl, link());
      const etag = first.headers.get('etag');
      assert.ok(etag, 'ETag header');
      const again = await request(direct.baseUrl, link(), { headers: { 'If-None-Match': etag } });
      assert.equal(again.status, 304);
    },
  );

  const REFUSED_CONDITIONS: Array<{ name: string; headers: Record<string, string>; status: number }> = [
    { name: 'Range beyond the end answers 416', headers: { Range: 'bytes=999999-' }, status: 416 },
    { name: 'failed If-Match answers 412', headers: { 'If-Match': '"not-this"' }, status: 412 },
    { name: 'failed If-Unmodified-Since answers 412', headers: { 'If-Unmodified-Since': 'Mon, 01 Jan 2001 00:00:00 GMT' }, status: 412 },
  ];
  for (const testCase of REFUSED_CONDITIONS) {
    it(
      testCase.name,
      async () => {
        const answer = await request(direct.baseUrl, link(), { headers: testCase.headers });
        assert.equal(answer.status, testCase.status);
        assertSecurityHeaders(answer);
      },
    );
  }

  it('GET /healthz answers 200', async () => {
    const answer = await request(direct.baseUrl, '/healthz');
    assert.equal(answer.status, 200);
    assert.equal(answer.body.toString(), 'ok\n');
    assertSecurityHeaders(answer);
  });
});

describe('stored images, accel delivery', () => {
  for (const method of ['GET', 'HEAD']) {
    it(`${method}: X-Accel-Redirect into the internal prefix, empty body`, async () => {
      const answer = await request(accel.baseUrl, link(), { method });
      assert.equal(answer.status, 200);
      assert.equal(answer.headers.get('x-accel-redirect'), `/_imageproxy/${PHOTO_DIRECTORY}/${PHOTO_KEY}.jpg`);
      assert.equal(answer.body.length, 0);
      assert.equal(answer.headers.get('content-type'), 'image/jpeg');
      assert.equal(answer.headers.get('cache-control'), IMAGE_CACHE_CONTROL);
      assertSecurityHeaders(answer);
    });
  }

  it('variant: X-Accel-Redirect names the variant file', async () => {
    const answer = await request(accel.baseUrl, link({ size: '150x' }));
    assert.equal(answer.headers.get('x-accel-redirect'), `/_imageproxy/${PHOTO_DIRECTORY}/${PHOTO_KEY}.150x.png`);
    assert.equal(answer.headers.get('content-type'), 'image/png');
  });

  it('errors are answered by the app, not redirected', async () => {
    const answer = await request(accel.baseUrl, link({ imageUrl: MISSING_URL }));
    assert.equal(answer.status, 404);
    assert.equal(answer.headers.get('x-accel-redirect'), null);
    assert.equal(answer.headers.get('x-imageproxy-error'), 'not_stored');
  });
});

interface ErrorCase {
  name: string;
  path: string;
  method?: string;
  code: ErrorCode;
  /** Moves the app's clock for this request. */
  atMs?: number;
}

const validSignature = link().split('/')[3] ?? '';
const tampered = link().replace(`/${validSignature}/`, `/${validSignature.slice(0, -1)}${validSignature.endsWith('A') ? 'B' : 'A'}/`);
const photoExt = extUrlOf(PHOTO_URL);

const ERROR_CASES: ErrorCase[] = [
  { name: 'valid link, not stored', path: link({ imageUrl: MISSING_URL }), code: 'not_stored' },
  { name: 'valid link, variant not stored', path: link({ size: 'x200' }), code: 'not_stored' },
  { name: 'valid link, other bucket not stored', path: link({ bucket: 'f' }), code: 'not_stored' },
  { name: 'three segments', path: `/i/full/${validSignature}`, code: 'bad_path' },
  { name: 'six segments', path: `${link({ proxy: true })}/x`, code: 'bad_path' },
  { name: 'fifth segment not proxy', path: `${link()}/thumb`, code: 'bad_path' },
  { name: 'trailing slash', path: `${link()}/`, code: 'bad_path' },
  { name: 'root', path: '/', code: 'bad_path' },
  { name: 'malformed percent-encoding', path: `${link()}%E0%A4%A`, code: 'bad_path' },
  { name: 'unknown bucket', path: `/x/full/${validSignature}/${photoExt}`, code: 'unknown_bucket' },
  { name: 'size x', path: link({ size: 'x' }), code: 'bad_size' },
  { name: 'size 999x', path: link({ size: '999x' }), code: 'bad_size' },
  { name: 'size abc', path: link({ size: 'abc' }), code: 'bad_size' },
  { name: 'size 0x0', path: link({ size: '0x0' }), code: 'bad_size' },
  { name: 'size 150x150x150', path: link({ size: '150x150x150' }), code: 'bad_size' },
  { name: 'ext_url not base64url', path: `/i/full/${validSignature}/abc$def`, code: 'bad_url' },
  { name: 'signed ftp URL', path: link({ imageUrl: 'ftp://example.com/a.jpg' }), code: 'bad_url' },
  { name: 'signed javascript: URL', path: link({ imageUrl: 'javascript:alert(1)' }), code: 'bad_url' },
  { name: 'signed URL with credentials', path: link({ imageUrl: 'https://u:p@example.com/a.jpg' }), code: 'bad_url' },
  { name: 'unsigned ftp URL: the signature is judged first', path: `/i/full/${validSignature}/${extUrlOf('ftp://example.com/a.jpg')}`, code: 'bad_signature' },
  { name: 'tampered signature', path: tampered, code: 'bad_signature' },
  { name: 'signature of the wrong length', path: `/i/full/${validSignature}A/${photoExt}`, code: 'bad_signature' },
  { name: 'signed by another secret', path: signedPath({ secret: 'not ours', imageUrl: PHOTO_URL, atMs: NOW }), code: 'bad_signature' },
  { name: 'signed for another bucket', path: link().replace(/^\/i\//, '/f/'), code: 'bad_signature' },
  { name: 'proxy added to a non-proxy link', path: `${link()}/proxy`, code: 'bad_signature' },
  { name: 'legacy link in a bucket without legacy', path: link({ legacy: true }), code: 'bad_signature' },
  { name: 'expired: 15 days later', path: link(), atMs: NOW + 15 * DAY_MS, code: 'bad_signature' },
  { name: 'signed 15 days ago', path: link({ atMs: NOW - 15 * DAY_MS }), code: 'bad_signature' },
  { name: 'POST', path: link(), method: 'POST', code: 'method_not_allowed' },
  { name: 'PUT', path: link(), method: 'PUT', code: 'method_not_allowed' },
  { name: 'DELETE', path: link(), method: 'DELETE', code: 'method_not_allowed' },
  { name: 'POST to /healthz', path: '/healthz', method: 'POST', code: 'method_not_allowed' },
];

describe('errors', () => {
  for (const testCase of ERROR_CASES) {
    it(`${testCase.name}: ${ERROR_STATUS[testCase.code]} ${testCase.code}`, async () => {
      clockMs = testCase.atMs ?? NOW;
      try {
        const answer = await request(direct.baseUrl, testCase.path, { method: testCase.method ?? 'GET' });
        assert.equal(answer.status, ERROR_STATUS[testCase.code]);
        assert.equal(answer.headers.get('x-imageproxy-error'), testCase.code);
        assert.ok(answer.body.toString('utf8').startsWith(`${testCase.code}: `), shortBody(answer.body, answer.headers.get('content-type')));
        assert.match(answer.headers.get('content-type') ?? '', /^text\/plain/);
        assert.equal(answer.headers.get('cache-control'), 'no-store');
        if (testCase.code === 'method_not_allowed') assert.equal(answer.headers.get('allow'), 'GET, HEAD');
        assertSecurityHeaders(answer);
      } finally {
        clockMs = NOW;
      }
    });
  }

  it('HEAD of an error: status and header, no body', async () => {
    const answer = await request(direct.baseUrl, link({ imageUrl: MISSING_URL }), { method: 'HEAD' });
    assert.equal(answer.status, 404);
    assert.equal(answer.headers.get('x-imageproxy-error'), 'not_stored');
    assert.equal(answer.body.length, 0);
  });
});

describe('a root below a hidden directory', () => {
  it(
    'serves stored files',
    async () => {
      const parent = await makeTempRoot('.imageproxy-hidden-');
      const hiddenRoot = join(parent, 'data');
      await placeFile(hiddenRoot, `${PHOTO_DIRECTORY}/${PHOTO_KEY}.jpg`, photoJpeg);
      const app = await startApp({ root: hiddenRoot, secrets: [SECRET], now: () => NOW });
      try {
        const answer = await request(app.baseUrl, link());
        assert.equal(answer.status, 200);
        assertSameBytes(answer.body, photoJpeg, 'the body');
      } finally {
        await app.close();
        await removeTempRoot(parent);
      }
    },
  );
});
