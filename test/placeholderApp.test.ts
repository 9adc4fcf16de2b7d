/**
 * Config `placeholder` in the app: every error status the app gives, for an <img> load,
 * a navigation and curl, with the whole server on 127.0.0.1 in front of an origin that
 * misbehaves on purpose; and the text as before when the option is off.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { ERROR_CACHE_CONTROL } from '../server/http/responseHeaders.js';
import { PLACEHOLDER_IMAGES } from '../server/http/placeholder.js';
import { startServer, type RunningServer } from '../server/http/server.js';
import { createLogger } from '../server/observe/log.js';
import { startOrigin, type Origin } from './origin.js';
import { assertSameBytes, makeTempRoot, removeTempRoot, request, loopbackConfig, shortBody, signedPath, startLoopbackServer, type Answer } from './helpers.js';

const SECRET = 'placeholder test secret';
const CHROME_IMAGE = 'image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8';
const CHROME_NAVIGATION = 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8';
const CURL = '*/*';
const ACCEPTS = { image: CHROME_IMAGE, navigation: CHROME_NAVIGATION, curl: CURL } as const;
const DAY_MS = 86_400_000;

let origin: Origin;
let root = '';
let withPlaceholder: RunningServer;
let withoutPlaceholder: RunningServer;
/** A new image URL on each call: a failure is remembered per URL (backoff), each request must meet the origin. */
let serial = 0;

before(async () => {
  origin = await startOrigin((request, response) => {
    const path = request.url ?? '';
    if (path.startsWith('/status500')) {
      response.writeHead(500, { 'Content-Type': 'text/plain' }).end('origin broke');
    } else if (path.startsWith('/text')) {
      response.writeHead(200, { 'Content-Type': 'text/html' }).end('<html>not an image, but long enough to sniff</html>');
    } else if (path.startsWith('/stall')) {
      // Never answers: the fetch's total timeout ends it.
    } else {
      response.writeHead(404).end();
    }
  });
  root = await makeTempRoot('imageproxy-placeholder-');
  const common = { blockedHosts: ['blocked.example'], limits: { totalTimeoutMs: 1500 } };
  withPlaceholder = await startLoopbackServer(root, SECRET, { ...common, placeholder: true });
  withoutPlaceholder = await startLoopbackServer(root, SECRET, common);
});

after(async () => {
  await withPlaceholder?.close({ graceMs: 0 });
  await withoutPlaceholder?.close({ graceMs: 0 });
  await origin?.close();
  if (root !== '') await removeTempRoot(root);
});

function originUrl(path: string): string {
  serial += 1;
  return origin.url(`${path}?n=${serial}`).toString();
}

/** Each refusal: the status and code it must answer with, and a fresh link to it. */
const refusals: Array<{ name: string; status: number; code: string; path: () => string }> = [
  { name: 'a size not configured', status: 400, code: 'bad_size', path: () => signedPath({ secret: SECRET, imageUrl: originUrl('/x.jpg'), atMs: Date.now(), size: '999x' }) },
  { name: 'an unknown bucket', status: 404, code: 'unknown_bucket', path: () => signedPath({ secret: SECRET, imageUrl: originUrl('/x.jpg'), atMs: Date.now(), bucket: 'zz' }) },
  { name: 'an expired signature', status: 410, code: 'bad_signature', path: () => signedPath({ secret: SECRET, imageUrl: originUrl('/x.jpg'), atMs: Date.now() - 21 * DAY_MS }) },
  { name: 'a blocked host', status: 451, code: 'blocked', path: () => signedPath({ secret: SECRET, imageUrl: `http://blocked.example/x.jpg?n=${++serial}`, atMs: Date.now() }) },
  { name: 'an origin error', status: 502, code: 'origin_status', path: () => signedPath({ secret: SECRET, imageUrl: originUrl('/status500'), atMs: Date.now() }) },
  { name: 'not an image', status: 502, code: 'not_an_image', path: () => signedPath({ secret: SECRET, imageUrl: originUrl('/text'), atMs: Date.now() }) },
  { name: 'an origin timeout', status: 504, code: 'origin_timeout', path: () => signedPath({ secret: SECRET, imageUrl: originUrl('/stall'), atMs: Date.now() }) },
];

async function assertPlaceholder(answer: Answer, status: number, code: string, name: string): Promise<void> {
  assert.equal(answer.status, status, `${name}: ${shortBody(answer.body, answer.headers.get('content-type'))}`);
  assert.equal(answer.headers.get('x-imageproxy-error'), code, name);
  assert.equal(answer.headers.get('content-type'), 'image/png', name);
  assert.equal(answer.headers.get('cache-control'), ERROR_CACHE_CONTROL, name);
  assert.equal(answer.headers.get('vary'), 'Accept', name);
  assert.equal(answer.headers.get('x-content-type-options'), 'nosniff', name);
  assertSameBytes(answer.body, PLACEHOLDER_IMAGES.png.bytes, name);
  const decoded = await sharp(answer.body).metadata();
  assert.deepEqual([decoded.format, decoded.width, decoded.height], ['png', 1, 1], name);
}

function assertText(answer: Answer, status: number, code: string, vary: string | null, name: string): void {
  assert.equal(answer.status, status, `${name}: ${shortBody(answer.body, answer.headers.get('content-type'))}`);
  assert.equal(answer.headers.get('x-imageproxy-error'), code, name);
  assert.equal(answer.headers.get('content-type'), 'text/plain; charset=utf-8', name);
  assert.equal(answer.headers.get('cache-control'), ERROR_CACHE_CONTROL, name);
  assert.equal(answer.headers.get('vary'), vary, name);
  assert.ok(answer.body.toString('utf8').startsWith(`${code}: `), name);
}

describe('placeholder on', () => {
  for (const refusal of refusals) {
    it(`${refusal.name}: an <img> load gets the image, a navigation and curl the text, same status and code`, async () => {
      for (const [kind, accept] of Object.entries(ACCEPTS)) {
        const answer = await request(withPlaceholder.url, refusal.path(), { headers: { Accept: accept } });
        const name = `${refusal.name}, ${kind}`;
        if (kind === 'image') await assertPlaceholder(answer, refusal.status, refusal.code, name);
        else assertText(answer, refusal.status, refusal.code, 'Accept', name);
      }
    });
  }

  it('answers HEAD with the image headers and no body', async () => {
    const path = refusals[2]!.path();
    const answer = await request(withPlaceholder.url, path, { method: 'HEAD', headers: { Accept: CHROME_IMAGE } });
    assert.equal(answer.status, 410);
    assert.equal(answer.headers.get('content-type'), 'image/png');
    assert.equal(answer.headers.get('content-length'), String(PLACEHOLDER_IMAGES.png.bytes.length));
    assert.equal(answer.body.length, 0);
  });

  it('gives a client that lists only image/webp a WebP', async () => {
    const answer = await request(withPlaceholder.url, refusals[2]!.path(), { headers: { Accept: 'image/webp' } });
    assert.equal(answer.status, 410);
    assert.equal(answer.headers.get('content-type'), 'image/webp');
    assert.equal((await sharp(answer.body).metadata()).format, 'webp');
  });
});

describe('placeholder on, past the time-slice queue', () => {
  it('answers busy before any routing with the image to an <img> load and the text to curl', async () => {
    const config = loopbackConfig(root, SECRET, { placeholder: true });
    // No room at all: every link is refused before the app sees it.
    const server = await startServer({ config, secrets: config.secrets, logger: createLogger('silent'), maxRequestsWaiting: 0 });
    try {
      const path = signedPath({ secret: SECRET, imageUrl: originUrl('/x.jpg'), atMs: Date.now() });
      await assertPlaceholder(await request(server.url, path, { headers: { Accept: CHROME_IMAGE } }), 503, 'busy', 'busy, <img>');
      assertText(await request(server.url, path, { headers: { Accept: CURL } }), 503, 'busy', 'Accept', 'busy, curl');
    } finally {
      await server.close({ graceMs: 0 });
    }
  });
});

describe('placeholder off', () => {
  for (const refusal of refusals.filter((item) => ['bad_signature', 'origin_status'].includes(item.code))) {
    it(`${refusal.name}: the text for an <img> load too, without Vary`, async () => {
      const answer = await request(withoutPlaceholder.url, refusal.path(), { headers: { Accept: CHROME_IMAGE } });
      assertText(answer, refusal.status, refusal.code, null, refusal.name);
    });
  }
});
