/**
 * The production shape, end to end: a real nginx started with the config that
 * `imageproxy nginx-config --standalone-conf` renders, in front of the real app in
 * `accel` delivery, in front of a real origin on 127.0.0.1. Every image URL here points
 * at that loopback origin, so nothing leaves the machine even if the code is broken.
 */
import assert from 'node:assert/strict';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { buildConfig } from '../server/config.js';
import { startServer, type RunningServer } from '../server/http/server.js';
import { keyDirectory, storageKey } from '../server/layout.js';
import { createLogger } from '../server/log.js';
import { CONTENT_SECURITY_POLICY, IMAGE_CACHE_CONTROL } from '../server/responseHeaders.js';
import { makeTempRoot, removeTempRoot, request, signedPath, VECTORS, type Answer } from './helpers.js';
import { freePort, nginxMissing, startNginx, renderStandaloneWithCli, type RunningNginx } from './nginxHarness.js';
import { startOrigin, type Origin } from './origin.js';

const SECRET = 'e2e-secret';
const missing = nginxMissing();
if (missing !== null) console.log(`# e2e skipped: ${missing}`);

describe('nginx + njs in front of the app', { skip: missing ?? false }, () => {
  let workDir = '';
  let root = '';
  let origin: Origin;
  let originUrl = '';
  let app: RunningServer | null = null;
  let nginx: RunningNginx | null = null;
  let base = '';
  let jpeg: Buffer;
  let png: Buffer;

  const link = (path: string, options: { size?: string; proxy?: boolean; atMs?: number } = {}): string =>
    signedPath({ secret: SECRET, imageUrl: `${originUrl}${path}`, atMs: options.atMs ?? Date.now(), ...options });
  const get = (path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> =>
    request(base, path, { method, headers });
  const hitsOf = (path: string): number => origin.requests.filter((request) => request.url === path).length;

  function assertImageHeaders(answer: Answer, contentType: string): void {
    assert.equal(answer.headers.get('content-type'), contentType);
    // Exactly one Cache-Control, whether nginx served a hit or an X-Accel-Redirect.
    assert.equal(answer.headers.get('cache-control'), IMAGE_CACHE_CONTROL);
    assert.equal(answer.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(answer.headers.get('content-security-policy'), CONTENT_SECURITY_POLICY);
  }

  before(async () => {
    jpeg = await sharp({ create: { width: 800, height: 600, channels: 3, background: '#884422' } }).jpeg().toBuffer();
    png = await sharp({ create: { width: 400, height: 300, channels: 4, background: { r: 0, g: 0, b: 255, alpha: 0.5 } } })
      .png()
      .toBuffer();
    workDir = await makeTempRoot('imageproxy-e2e-');
    root = join(workDir, 'tree');

    origin = await startOrigin((req, res) => {
      const path = req.url ?? '/';
      if (path.endsWith('.jpg')) res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg);
      else if (path.endsWith('.png')) res.writeHead(200, { 'Content-Type': 'image/png' }).end(png);
      else res.writeHead(404).end('no such image');
    });
    originUrl = origin.url('').origin;

    const nginxPort = await freePort();
    const config = buildConfig({
      flags: {
        listen: '127.0.0.1:0',
        root,
        secrets: [SECRET],
        delivery: 'accel',
        allowPrivateNetworks: true,
        logLevel: 'silent',
        nginx: { listen: `127.0.0.1:${nginxPort}`, internalPrefix: '/_imageproxy' },
      },
    });
    app = await startServer({ config, secrets: config.secrets, logger: createLogger('silent') });

    // Render the config the way an admin does: the CLI, from a config file.
    const configPath = join(workDir, 'config.json');
    await writeFile(
      configPath,
      JSON.stringify({ ...config, listen: new URL(app.url).host, secrets: [SECRET] }, null, 2),
    );
    const prefix = join(workDir, 'nginx');
    const rendered = await renderStandaloneWithCli(configPath, prefix);
    nginx = await startNginx(prefix, rendered, nginxPort);
    base = `http://127.0.0.1:${nginxPort}`;
  });

  after(async () => {
    await nginx?.stop();
    await app?.close();
    await origin.close();
    await removeTempRoot(workDir);
  });

  it('answers 410 itself for every shared vector, now long expired, without the app or the origin', async () => {
    for (const vector of VECTORS) {
      const answer = await get(vector.path);
      assert.equal(answer.status, 410, vector.name);
      assert.equal(answer.headers.get('x-imageproxy-error'), 'bad_signature', vector.name);
    }
  });

  it('a miss is fetched once through the app, stored and streamed by nginx (X-Accel-Redirect)', async () => {
    const path = link('/photo.jpg');
    const first = await get(path);
    assert.equal(first.status, 200);
    assert.ok(first.body.equals(jpeg));
    assertImageHeaders(first, 'image/jpeg');
    assert.equal(first.headers.get('x-accel-redirect'), null); // nginx consumed it
    assert.equal(hitsOf('/photo.jpg'), 1);

    const second = await get(path);
    assert.equal(second.status, 200);
    assert.ok(second.body.equals(jpeg));
    assertImageHeaders(second, 'image/jpeg');
    assert.ok(second.headers.get('etag'));
    assert.equal(hitsOf('/photo.jpg'), 1);
  });

  it('makes thumbnails through the app once, then serves them from disk', async () => {
    const cases = [
      { size: '150x', width: 200, height: 150 },
      { size: 'x200', width: 200, height: 150 },
      { size: '250x250', width: 250, height: 188 },
    ];
    for (const expected of cases) {
      for (let round = 0; round < 2; round += 1) {
        const answer = await get(link('/thumb.png', { size: expected.size }));
        assert.equal(answer.status, 200, expected.size);
        assertImageHeaders(answer, 'image/png');
        const metadata = await sharp(answer.body).metadata();
        assert.deepEqual([metadata.width, metadata.height, metadata.hasAlpha], [expected.width, expected.height, true], expected.size);
      }
    }
    assert.equal(hitsOf('/thumb.png'), 1);
  });

  it('passes /proxy links through the app without storing them', async () => {
    const answer = await get(link('/passing.png', { proxy: true }));
    assert.equal(answer.status, 200);
    assert.ok(answer.body.equals(png));
    assert.equal(answer.headers.get('content-type'), 'image/png');
    assert.equal(answer.headers.get('x-content-type-options'), 'nosniff');
    const key = storageKey(Buffer.from(`${originUrl}/passing.png`));
    const stored = await readdir(join(root, keyDirectory('i', key))).catch(() => [] as string[]);
    assert.deepEqual(stored.filter((name) => name.startsWith(key)), []);
  });

  it('answers HEAD and Range on a hit', async () => {
    const path = link('/photo.jpg');
    const head = await get(path, {}, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(jpeg.length));
    assert.equal(head.body.length, 0);
    const range = await get(path, { Range: 'bytes=0-99' });
    assert.equal(range.status, 206);
    assert.equal(range.headers.get('content-range'), `bytes 0-99/${jpeg.length}`);
    assert.ok(range.body.equals(jpeg.subarray(0, 100)));
  });

  it('refuses expired and tampered links with 410 on hits and misses alike, contacting nobody', async () => {
    const threeWeeksAgo = Date.now() - 21 * 86_400_000;
    const before = hitsOf('/photo.jpg') + hitsOf('/never.jpg');
    for (const imagePath of ['/photo.jpg', '/never.jpg']) {
      const expired = link(imagePath, { atMs: threeWeeksAgo });
      const good = link(imagePath);
      const parts = good.split('/');
      const signature = parts[3] ?? '';
      parts[3] = `${signature[0] === 'A' ? 'B' : 'A'}${signature.slice(1)}`;
      for (const path of [expired, parts.join('/')]) {
        const answer = await get(path);
        assert.equal(answer.status, 410, `${imagePath} ${path}`);
        assert.equal(answer.headers.get('x-imageproxy-error'), 'bad_signature');
        assert.equal(answer.headers.get('x-content-type-options'), 'nosniff');
      }
    }
    assert.equal(hitsOf('/photo.jpg') + hitsOf('/never.jpg'), before);
  });

  it("passes the app's precise refusals through", async () => {
    const table: Array<[string, string, number, string]> = [
      ['origin 404', link('/missing.gif'), 502, 'origin_status'],
      ['size not allowed', link('/photo.jpg', { size: '999x' }), 400, 'bad_size'],
      ['unknown bucket', link('/photo.jpg').replace(/^\/i\//, '/zz/'), 404, 'unknown_bucket'],
      ['wrong segment count', '/i/full/x', 400, 'bad_path'],
    ];
    for (const [name, path, status, code] of table) {
      const answer = await get(path);
      assert.equal(answer.status, status, name);
      assert.equal(answer.headers.get('x-imageproxy-error'), code, name);
    }
    const post = await get(link('/photo.jpg'), {}, 'POST');
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
  });

  it("keeps the app's metrics off the public side", async () => {
    assert.equal((await get('/metrics')).status, 404);
    const direct = await request(app?.url ?? '', '/metrics');
    assert.equal(direct.status, 200);
    assert.match(direct.body.toString(), /imageproxy_origin_fetches_total\{result="ok"\} [1-9]/);
  });

  it('serves every stored file with the app stopped', async () => {
    await app?.close();
    app = null;
    const photo = await get(link('/photo.jpg'));
    assert.equal(photo.status, 200);
    assert.ok(photo.body.equals(jpeg));
    assertImageHeaders(photo, 'image/jpeg');
    const thumb = await get(link('/thumb.png', { size: '150x' }));
    assert.equal(thumb.status, 200);
    assert.equal((await sharp(thumb.body).metadata()).height, 150);
    // A stored original also answers its /proxy link.
    const proxied = await get(link('/photo.jpg', { proxy: true }));
    assert.equal(proxied.status, 200);
    assert.ok(proxied.body.equals(jpeg));
    // A miss needs the app: nginx says so, and nothing is served.
    const miss = await get(link('/new.jpg'));
    assert.equal(miss.status, 502);
  });
});
