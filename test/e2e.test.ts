/**
 * The production shape, end to end: a real nginx started with the config that
 * `imageproxy nginx-config --standalone-conf` renders, in front of the real app in
 * `accel` delivery, in front of a real origin on 127.0.0.1. Every image URL here points
 * at that loopback origin, so nothing leaves the machine even if the code is broken.
 * As root, nginx's workers run as nobody (as www-data would in production), so a tree
 * nginx may not read can be shown; otherwise they run as the test's own user.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, readdir, readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { buildConfig } from '../server/config/config.js';
import { startServer, type RunningServer } from '../server/http/server.js';
import { keyDirectory, storageKey } from '../server/contract/layout.js';
import { createLogger } from '../server/observe/log.js';
import { CONTENT_SECURITY_POLICY, ERROR_CACHE_CONTROL, IMAGE_CACHE_CONTROL } from '../server/http/responseHeaders.js';
import { runCli } from './cliProcess.js';
import { makeTempRoot, removeTempRoot, request, signedPath, VECTORS, type Answer } from './helpers.js';
import { freePort, nginxMissing, startNginx, type RunningNginx } from './nginxHarness.js';
import { startOrigin, type Origin } from './origin.js';

const SECRET = 'e2e-secret';
const missing = nginxMissing();
if (missing !== null) console.log(`# e2e skipped: ${missing}`);
const AS_ROOT = process.getuid?.() === 0;
/** `user nobody <its group>` for nginx's workers when the tests run as root. */
const WORKER_USER = AS_ROOT ? `nobody ${execFileSync('id', ['-gn', 'nobody']).toString().trim()}` : undefined;

/** One request written by hand (what node:http refuses to send), answer read until close. */
async function rawRequest(port: number, text: string): Promise<Answer> {
  const raw = await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(port, '127.0.0.1', () => socket.end(text));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks)));
  });
  const split = raw.indexOf('\r\n\r\n');
  const [statusLine = '', ...headerLines] = raw.subarray(0, split).toString('latin1').split('\r\n');
  const headers = new Headers();
  for (const line of headerLines) {
    const colon = line.indexOf(':');
    headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body: raw.subarray(split + 4) };
}

/** An answer nginx made itself: text `code: message`, the error and security headers, never cached. */
function assertNginxError(answer: Answer, status: number, code: string, name = code): void {
  assert.equal(answer.status, status, name);
  assert.equal(answer.headers.get('content-type'), 'text/plain; charset=utf-8', name);
  assert.equal(answer.headers.get('x-imageproxy-error'), code, name);
  assert.equal(answer.headers.get('x-content-type-options'), 'nosniff', name);
  assert.equal(answer.headers.get('content-security-policy'), CONTENT_SECURITY_POLICY, name);
  // get() joins repeated headers: equality means exactly one Cache-Control, no-store.
  assert.equal(answer.headers.get('cache-control'), ERROR_CACHE_CONTROL, name);
  assert.match(answer.body.toString(), new RegExp(`^${code}: [^\\n<]+\\n$`), name);
}

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
  let nginxPort = 0;
  /** Stores an image through the app's own address: nginx has never opened (nor cached) it. */
  async function storeBehindNginx(path: string): Promise<{ link: string; file: string }> {
    const stored = link(path);
    const answer = await request(app?.url ?? '', stored);
    assert.equal(answer.status, 200, path);
    const target = answer.headers.get('x-accel-redirect') ?? '';
    assert.match(target, /^\/_imageproxy\//);
    return { link: stored, file: join(root, target.slice('/_imageproxy/'.length)) };
  }

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
    // mkdtemp makes it 0700: nginx's workers (nobody, as root) must be able to enter it.
    await chmod(workDir, 0o755);
    root = join(workDir, 'tree');

    origin = await startOrigin((req, res) => {
      const path = req.url ?? '/';
      if (path.endsWith('.jpg')) res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg);
      else if (path.endsWith('.png')) res.writeHead(200, { 'Content-Type': 'image/png' }).end(png);
      else res.writeHead(404).end('no such image');
    });
    originUrl = origin.url('').origin;

    nginxPort = await freePort();
    const config = buildConfig({
      flags: {
        listen: '127.0.0.1:0',
        admin: { listen: '127.0.0.1:0' },
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
      { mode: 0o600 },
    );
    const prefix = join(workDir, 'nginx');
    const render = await runCli(
      ['nginx-config', '--config', configPath, '--standalone-conf', '--out', prefix, '--workers', '1', ...(WORKER_USER === undefined ? [] : ['--user', WORKER_USER])],
      { cwd: workDir },
    );
    assert.equal(render.code, 0, render.stderr);
    nginx = await startNginx(prefix, await readFile(join(prefix, 'nginx.conf'), 'utf8'), nginxPort);
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
      // njs leaves it to the app, whose 414 names the limit (nginx's own 414 is link_too_long).
      ['ext_url past 8192 characters', `/i/full/AAAAAAAAAAAAAAAA/${'A'.repeat(8193)}`, 414, 'url_too_long'],
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

  it("keeps the app's metrics off the public side, in every spelling, through nginx and on the app's public address", async () => {
    const spellings = ['/metrics', '/metrics/', '/Metrics', '/METRICS?x=1', '//metrics', '/%6detrics'];
    for (const spelling of spellings) {
      for (const [side, base] of [['nginx', `http://127.0.0.1:${nginxPort}`], ['app', app?.url ?? '']] as const) {
        const answer = await request(base, spelling);
        assert.notEqual(answer.status, 200, `${side} ${spelling}`);
        assert.doesNotMatch(answer.body.toString(), /imageproxy_|# HELP|# TYPE/, `${side} ${spelling}`);
        assert.match(answer.headers.get('x-imageproxy-error') ?? '', /^[a-z_]+$/, `${side} ${spelling}: a text error`);
      }
    }
    const admin = await request(app?.adminUrl ?? '', '/metrics');
    assert.equal(admin.status, 200);
    assert.match(admin.body.toString(), /imageproxy_origin_fetches_total\{result="ok"\} [1-9]/);
  });

  it('puts the week-long Cache-Control on stored images only: 200, 206 and 304, once each', async () => {
    const path = link('/photo.jpg');
    const full = await get(path);
    assert.equal(full.status, 200);
    const partial = await get(path, { Range: 'bytes=10-19' });
    assert.equal(partial.status, 206);
    const notModified = await get(path, { 'If-None-Match': full.headers.get('etag') ?? '' });
    assert.equal(notModified.status, 304);
    for (const answer of [full, partial, notModified]) {
      assert.equal(answer.headers.get('cache-control'), IMAGE_CACHE_CONTROL, String(answer.status));
      assert.equal(answer.headers.get('x-imageproxy-error'), null, String(answer.status));
    }
  });

  it('answers a request for many ranges as one for none: the whole image, never a multipart answer', async () => {
    const path = link('/photo.jpg');
    const whole = await get(path);
    const ranges = Array.from({ length: 1000 }, () => '0-0').join(',');
    const many = await get(path, { Range: `bytes=${ranges}` });
    assert.equal(many.status, 200);
    assert.doesNotMatch(many.headers.get('content-type') ?? '', /multipart/);
    assert.ok(many.body.equals(whole.body), 'the stored image, once');
    const two = await get(path, { Range: 'bytes=0-0,5-9' });
    assert.equal(two.status, 200);
    assert.equal(two.body.length, whole.body.length);
    const one = await get(path, { Range: 'bytes=5-9' });
    assert.equal(one.status, 206);
    assert.equal(one.body.length, 5);
  });

  it('answers its own 400, 404, 405, 410, 413, 414, 416, 501 and 505 as text with the headers, whatever the path looks like', async () => {
    const stored = link('/photo.jpg');
    const expired = link('/photo.jpg', { atMs: Date.now() - 21 * 86_400_000 });
    const long = `/i/full/AAAAAAAAAAAAAAAA/${'A'.repeat(20_000)}`;
    const cases: Array<[string, () => Promise<Answer>, number, string]> = [
      ['internal prefix asked for directly, .jpg path', () => get('/_imageproxy/i/AA/AA/AAAA.jpg'), 404, 'not_stored'],
      ['a sidecar through the internal prefix', () => get('/_imageproxy/i/AA/AA/AAAA.json'), 404, 'not_stored'],
      ['expired link', () => get(expired), 410, 'bad_signature'],
      ['expired link with a .jpg-looking query', () => get(`${expired}?.jpg`), 410, 'bad_signature'],
      ['request line past the header buffers', () => get(long), 414, 'link_too_long'],
      ['range past the end of a stored image', () => get(stored, { Range: 'bytes=99999999-' }), 416, 'range_not_satisfiable'],
      ['body announced past client_max_body_size', () => rawRequest(nginxPort, `GET ${stored} HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\nConnection: close\r\n\r\n`), 413, 'request_too_large'],
      ['two Host headers', () => rawRequest(nginxPort, 'GET /i/full/x HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: close\r\n\r\n'), 400, 'bad_request'],
      ['header past the buffers (494)', () => get(stored, { 'X-Long': 'a'.repeat(20_000) }), 400, 'bad_request'],
      ['TRACE, refused before any location', () => rawRequest(nginxPort, `TRACE ${stored} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`), 405, 'method_not_allowed'],
      ...['gzip', 'xchunked', 'chunked, identity'].map((encoding): [string, () => Promise<Answer>, number, string] => [
        `Transfer-Encoding: ${encoding}`,
        () => rawRequest(nginxPort, `GET ${stored} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ${encoding}\r\nConnection: close\r\n\r\n`),
        501,
        'unsupported_transfer_encoding',
      ]),
      ['an HTTP version nginx does not speak (505)', () => rawRequest(nginxPort, `GET ${stored} HTTP/9.0\r\nHost: x\r\nConnection: close\r\n\r\n`), 400, 'bad_request'],
    ];
    for (const [name, answer, status, code] of cases) assertNginxError(await answer(), status, code, name);
  });

  it('answers 403 as text, never with an image Cache-Control, when nginx may not read a stored file', async () => {
    const { link: unreadable, file } = await storeBehindNginx('/unreadable.jpg');
    // Root reads any file: as root the workers are nobody, so 0600 keeps them out.
    await chmod(file, AS_ROOT ? 0o600 : 0o000);
    try {
      assertNginxError(await get(unreadable), 403, 'forbidden', 'hit on an unreadable file');
    } finally {
      await chmod(file, 0o644);
    }
  });

  it('answers 403 as text with one no-store Cache-Control when the tree sits below a directory nginx cannot enter', { skip: AS_ROOT ? false : 'needs root: nginx and the app are otherwise the same user' }, async () => {
    const { link: below } = await storeBehindNginx('/below.jpg');
    // try_files cannot see the file, the app finds it and answers X-Accel-Redirect with
    // the image's Cache-Control, and nginx's open fails: the case that sent HTML with
    // the week-long Cache-Control.
    await chmod(workDir, 0o700);
    try {
      assertNginxError(await get(below), 403, 'forbidden', 'X-Accel-Redirect into an unreadable tree');
    } finally {
      await chmod(workDir, 0o755);
    }
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
    // A miss needs the app: nginx says so, as text, and nothing is served; the same for
    // requests nginx leaves to the app, which reach it through an error_page.
    assertNginxError(await get(link('/new.jpg')), 502, 'app_unavailable', 'miss');
    assertNginxError(await get('/i/full/x'), 502, 'app_unavailable', 'not a link');
  });
});
