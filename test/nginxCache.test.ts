/**
 * nginx's cache of njs verdicts (server/deploy/nginxConfig.ts, cache input): the rendered text
 * (tables), then a real nginx with the cache and a node:http stand-in for the app that
 * counts its requests. A hit's verdict is kept for at most its lifetime and used
 * meanwhile, hits keep their headers, HEAD and Range, a purged file stops being served
 * although its verdict is cached, and misses, 410s and errors are never cached.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { ConfigError } from '../server/config/config.js';
import { keyDirectory, storageKey } from '../server/contract/layout.js';
import {
  CONFIG_MODULE_NAME,
  MAX_CACHE_SECONDS,
  renderConfigModule,
  renderServerBlock,
  renderStandaloneConf,
  type NginxCacheInput,
  type NginxRenderInput,
} from '../server/deploy/nginxConfig.js';
import { ERROR_CACHE_CONTROL, IMAGE_CACHE_CONTROL } from '../server/http/responseHeaders.js';
import { exampleRenderInput, freePort, NJS_DIR, nginxMissing, startNginx, testWorkerUser, type RunningNginx } from './nginxHarness.js';
import { assertSameBytes, makeTempRoot, removeTempRoot, request, signedPath, until, type Answer } from './helpers.js';

const SECRET = '1234';
const CACHE: NginxCacheInput = {
  directory: '/var/cache/imageproxy',
  maxSize: '64m',
  seconds: 2,
  checkedSocket: '/run/checked.sock',
  verdictSocket: '/run/verdict.sock',
};
const BASE_INPUT = exampleRenderInput({ secrets: [SECRET], cache: CACHE });

function lines(text: string): string[] {
  return text.split('\n').map((line) => line.trim());
}

describe('renderServerBlock with a cache', () => {
  const text = renderServerBlock(BASE_INPUT);
  const expected: Array<[string, string]> = [
    ['a bounded cache where the admin says', 'proxy_cache_path "/var/cache/imageproxy" levels=1:2 keys_zone=imageproxy_verdicts:32m max_size=64m inactive=5s use_temp_path=off;'],
    ['the checked server on its socket', 'listen unix:/run/checked.sock;'],
    ['the verdict server on its socket', 'listen unix:/run/verdict.sock;'],
    ['the public listen', 'listen 127.0.0.1:8080;'],
    ['the upstream of the verdicts', 'server unix:/run/verdict.sock;'],
    ['the upstream of everything but hits', 'server unix:/run/checked.sock;'],
    ['the verdict before anything else', 'auth_request /_imageproxy_verdict;'],
    ['the verdict kept', 'auth_request_set $imageproxy_verdict $upstream_http_x_imageproxy_stem;'],
    ['hits served from the tree', 'try_files $imageproxy_hit_stem.jpg $imageproxy_hit_stem.png $imageproxy_hit_stem.webp $imageproxy_hit_stem.gif $imageproxy_hit_stem.avif @imageproxy_checked;'],
    ['a path under the root whatever the verdict', 'default "/.imageproxy/no-such-image";'],
    ['the raw request line to the verdict server', 'proxy_pass http://imageproxy_verdict$request_uri;'],
    ['keyed by the raw link', 'proxy_cache_key $imageproxy_link;'],
    ['the link is the request line without its query', '"~^(?<imageproxy_path>[^?]*)" $imageproxy_path;'],
    ['only X-Accel-Expires makes an entry', 'proxy_ignore_headers Cache-Control Expires Set-Cookie Vary;'],
    ['one check for a burst', 'proxy_cache_lock on;'],
    ['stored from the second request', 'proxy_cache_min_uses 2;'],
    ['the verdict from njs', 'add_header X-Imageproxy-Stem $imageproxy_stem;'],
    ['its lifetime from njs', 'add_header X-Accel-Expires $imageproxy_cache_seconds;'],
    ['410 without asking again', 'if ($imageproxy_verdict = "bad_signature") {'],
    ['the client address for the app', 'real_ip_header X-Real-IP;'],
    ['the public server passes the client address', 'proxy_set_header X-Real-IP $remote_addr;'],
    ['the same open file cache on the public server', 'open_file_cache_valid 1s;'],
  ];
  for (const [name, line] of expected) {
    it(`has ${name}`, () => assert.ok(lines(text).includes(line), `missing: ${line}\n${text}`));
  }

  it('puts the generation of the rendering into every key, and refuses one that is not letters and digits', () => {
    const text = renderServerBlock({ ...BASE_INPUT, cache: { ...CACHE, generation: 'a1b2c3' } });
    assert.ok(lines(text).includes('proxy_cache_key "a1b2c3$imageproxy_link";'), text);
    assert.throws(
      () => renderServerBlock({ ...BASE_INPUT, cache: { ...CACHE, generation: 'x";' } }),
      (error: unknown) => error instanceof ConfigError && error.key === 'generation',
    );
  });

  it('never gives an entry a lifetime of its own (proxy_cache_valid) and never serves a stale one', () => {
    assert.ok(!/proxy_cache_valid|proxy_cache_use_stale|open_file_cache_errors/.test(text), text);
  });

  it('has the error pages and the file headers on the public server too', () => {
    assert.equal(lines(text).filter((line) => line === 'error_page 410 = /_imageproxy_error/bad_signature;').length, 4);
    assert.equal(lines(text).filter((line) => line === `add_header Cache-Control "${IMAGE_CACHE_CONTROL}";`).length, 2);
    assert.equal(lines(text).filter((line) => line === 'location = /_imageproxy_error/bad_signature {').length, 2);
  });

  it('renders the former single server without a cache, or with 0 seconds', () => {
    for (const cache of [undefined, null, { ...CACHE, seconds: 0 }]) {
      const plain = renderServerBlock({ ...BASE_INPUT, cache });
      assert.ok(!plain.includes('proxy_cache_path') && !plain.includes('auth_request'), 'no cache');
      assert.ok(lines(plain).includes('listen 127.0.0.1:8080;'));
      assert.ok(!plain.includes('X-Accel-Expires'));
      assert.match(renderConfigModule({ ...BASE_INPUT, cache }), /"cacheSeconds": 0$/m);
    }
    assert.match(renderConfigModule(BASE_INPUT), /"cacheSeconds": 2$/m);
  });

  const refusals: Array<[string, Partial<NginxCacheInput>, string]> = [
    ['too long a lifetime for a purge within 5 s', { seconds: MAX_CACHE_SECONDS + 1 }, 'nginx.cacheSeconds'],
    ['negative lifetime', { seconds: -1 }, 'nginx.cacheSeconds'],
    ['size with a unit nginx does not know', { maxSize: '1t' }, 'nginx.cacheMaxSize'],
    ['size that ends a directive', { maxSize: '1m;' }, 'nginx.cacheMaxSize'],
    ['relative directory', { directory: 'cache' }, 'nginx.cacheDir'],
    ['directory with a variable', { directory: '/var/$host' }, 'nginx.cacheDir'],
    ['socket with a semicolon', { checkedSocket: '/run/x;.sock' }, 'checkedSocket'],
    ['socket with a brace', { verdictSocket: '/run/x}.sock' }, 'verdictSocket'],
  ];
  for (const [name, override, key] of refusals) {
    it(`refuses ${name}`, () => {
      assert.throws(
        () => renderServerBlock({ ...BASE_INPUT, cache: { ...CACHE, ...override } }),
        (error: unknown) => error instanceof ConfigError && error.key === key,
      );
    });
  }
});

interface AppRequest {
  method: string;
  url: string;
  realIp: string | undefined;
  forwardedFor: string | undefined;
}

describe('the cache under a real nginx', { skip: nginxMissing() ?? false }, () => {
  const cacheSeconds = MAX_CACHE_SECONDS;
  let prefixDir = '';
  let root = '';
  let cacheDir = '';
  let baseUrl = '';
  let nginx: RunningNginx | null = null;
  let app: Server | null = null;
  const appRequests: AppRequest[] = [];
  /** Misses the app answers once: it writes `file` and answers X-Accel-Redirect `target`. */
  const accelMisses = new Map<string, { target: string; file: string; bytes: Buffer }>();

  const get = (path: string, options: { method?: string; headers?: Record<string, string> } = {}): Promise<Answer> =>
    request(baseUrl, path, options);

  async function store(imageUrl: string, bytes: Buffer): Promise<{ path: string; file: string }> {
    const key = storageKey(Buffer.from(imageUrl));
    const directory = join(root, keyDirectory('i', key));
    await mkdir(directory, { recursive: true });
    const file = join(directory, `${key}.jpg`);
    await writeFile(file, bytes);
    return { path: signedPath({ secret: SECRET, imageUrl, atMs: Date.now() }), file };
  }

  function appAnswers(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '';
    const header = (name: string): string | undefined => {
      const value = req.headers[name];
      return Array.isArray(value) ? value.join(',') : value;
    };
    appRequests.push({ method: req.method ?? '', url, realIp: header('x-real-ip'), forwardedFor: header('x-forwarded-for') });
    req.resume();
    const miss = accelMisses.get(url);
    if (miss !== undefined && req.method === 'GET') {
      accelMisses.delete(url);
      void writeFile(miss.file, miss.bytes).then(() => {
        res.writeHead(200, { 'X-Accel-Redirect': miss.target, 'Content-Type': 'image/jpeg', 'Cache-Control': IMAGE_CACHE_CONTROL });
        res.end();
      });
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Imageproxy-Error': 'not_stored', 'Cache-Control': ERROR_CACHE_CONTROL });
    res.end('not_stored: from the app\n');
  }

  async function appCalls<T>(action: () => Promise<T>): Promise<{ result: T; calls: number }> {
    const before = appRequests.length;
    const result = await action();
    return { result, calls: appRequests.length - before };
  }

  async function cacheFiles(): Promise<string[]> {
    const entries = await readdir(cacheDir, { recursive: true, withFileTypes: true }).catch(() => []);
    return entries.filter((entry) => entry.isFile()).map((entry) => join(entry.parentPath, entry.name));
  }

  /** The cache entry whose key is `path`: its inode, valid_sec (nginx's header) and text. */
  async function cacheEntryFor(path: string): Promise<{ inode: number; validSec: number; text: string } | null> {
    for (const file of await cacheFiles()) {
      const bytes = await readFile(file).catch(() => null);
      if (bytes === null) continue;
      const text = bytes.toString('latin1');
      if (!text.includes(`\nKEY: ${path.split('?')[0] ?? path}\n`)) continue;
      // ngx_http_file_cache_header_t: version, then valid_sec (64-bit time_t on Linux x86-64/arm64).
      return { inode: (await stat(file)).ino, validSec: Number(bytes.readBigInt64LE(8)), text };
    }
    return null;
  }

  /** The headers of an answer but Date, as name: value lines. */
  function headerLines(answer: Answer): string[] {
    return [...answer.headers.entries()].filter(([name]) => name !== 'date').map(([name, value]) => `${name}: ${value}`);
  }

  before(async () => {
    prefixDir = await makeTempRoot('imageproxy-nginx-cache-');
    root = join(prefixDir, 'root');
    cacheDir = join(prefixDir, 'verdict-cache');
    const configModuleDir = join(prefixDir, 'njs');
    await mkdir(root, { recursive: true });
    await mkdir(configModuleDir, { recursive: true });
    app = createServer(appAnswers);
    await new Promise<void>((resolve) => app?.listen(0, '127.0.0.1', resolve));
    const appPort = (app.address() as AddressInfo).port;
    const port = await freePort();
    baseUrl = `http://127.0.0.1:${port}`;
    const input: NginxRenderInput = {
      ...BASE_INPUT,
      nginxListen: `127.0.0.1:${port}`,
      appListen: `127.0.0.1:${appPort}`,
      root,
      njsDir: NJS_DIR,
      configModuleDir,
      cache: {
        directory: cacheDir,
        maxSize: '16m',
        seconds: cacheSeconds,
        checkedSocket: join(prefixDir, 'checked.sock'),
        verdictSocket: join(prefixDir, 'verdict.sock'),
      },
    };
    await writeFile(join(configModuleDir, CONFIG_MODULE_NAME), renderConfigModule(input), { mode: 0o600 });
    const user = testWorkerUser();
    const conf = renderStandaloneConf(input, prefixDir, { workerProcesses: 1, ...(user === undefined ? {} : { user }) });
    nginx = await startNginx(prefixDir, conf, port);
  });

  after(async () => {
    await nginx?.stop();
    await new Promise<void>((resolve) => (app === null ? resolve() : app.close(() => resolve())));
    if (prefixDir !== '') await removeTempRoot(prefixDir);
  });

  it('keeps the verdict of a hit for at most cacheSeconds, uses it meanwhile (no new entry), then checks again', async () => {
    const bytes = randomBytes(4000);
    const { path } = await store('https://example.com/cached.jpg', bytes);
    const first = await get(path);
    assert.equal(first.status, 200);
    assertSameBytes(first.body, bytes, 'the first answer');
    assert.equal(await cacheEntryFor(path), null, 'a link asked for once costs no cache write');
    const checkedFrom = Math.floor(Date.now() / 1000);
    assert.equal((await get(path)).status, 200);
    const checkedBy = Math.floor(Date.now() / 1000);
    const entry = await cacheEntryFor(path);
    assert.ok(entry !== null, 'the verdict of a hit asked for again is stored');
    // nginx serves an entry while now <= valid_sec: never later than cacheSeconds + 1 from the check.
    assert.ok(
      entry.validSec > checkedFrom - 1 && entry.validSec <= checkedBy + cacheSeconds,
      `valid_sec ${entry.validSec - checkedFrom} s after the check began, ${entry.validSec - checkedBy} s after it ended`,
    );
    assert.match(entry.text, /X-Imageproxy-Stem: \/i\//);
    const repeated = await get(path);
    assert.equal(repeated.status, 200);
    assertSameBytes(repeated.body, bytes, 'the answer from a cached verdict');
    assert.deepEqual(headerLines(repeated), headerLines(first), 'same headers from a cached verdict');
    const again = await cacheEntryFor(path);
    if (Math.floor(Date.now() / 1000) <= entry.validSec) assert.equal(again?.inode, entry.inode, 'the verdict came from the cache');
    // After its lifetime, the next request is checked again and stored anew.
    await until(
      async () => {
        assert.equal((await get(path)).status, 200);
        return (await cacheEntryFor(path))?.inode;
      },
      { message: 'the entry stored anew after its lifetime', done: (inode) => inode !== entry.inode, intervalMs: 200 },
    );
  });

  it('takes a link with a query string added for the same link: one entry for all', async () => {
    const bytes = randomBytes(300);
    const { path } = await store('https://example.com/queried.jpg', bytes);
    for (const query of ['?1', '?2']) assert.equal((await get(`${path}${query}`)).status, 200);
    assert.ok((await cacheEntryFor(path)) !== null, 'the second request, with another query, stored the entry of the link');
  });

  it('stops serving a purged file within 2 s although its verdict is cached, and never caches a file', async () => {
    const bytes = randomBytes(4000);
    const { path, file } = await store('https://example.com/purged.jpg', bytes);
    for (let index = 0; index < 2; index += 1) assert.equal((await get(path)).status, 200);
    assert.ok((await cacheEntryFor(path)) !== null);
    const removedAt = Date.now();
    await rm(file);
    // Judged by when each request was sent, not by when a slow machine answered it: one sent
    // 2 s after the removal or later is past open_file_cache_valid and must not be served.
    const servedLate: number[] = [];
    await until(
      async () => {
        const sentAfterMs = Date.now() - removedAt;
        const { status } = await get(path);
        if (status === 200 && sentAfterMs >= 2000) servedLate.push(sentAfterMs);
        return status;
      },
      { message: 'the app answers once the file is gone', done: (status) => status === 404, intervalMs: 100 },
    );
    assert.deepEqual(servedLate, [], 'requests sent 2 s or more after the removal were served the file (ms after it)');
    for (const cached of await cacheFiles()) assert.ok((await stat(cached)).size < 2000, 'entries hold a verdict, not an image');
  });

  it('answers HEAD and Range with a cached verdict, and 416 as text', async () => {
    const bytes = randomBytes(3000);
    const { path } = await store('https://example.com/ranges.jpg', bytes);
    assert.equal((await get(path)).status, 200);
    const head = await get(path, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(bytes.length));
    assert.equal(head.body.length, 0);
    const range = await get(path, { headers: { Range: 'bytes=10-19' } });
    assert.equal(range.status, 206);
    assert.equal(range.headers.get('content-range'), `bytes 10-19/${bytes.length}`);
    assertSameBytes(range.body, bytes.subarray(10, 20), 'the range');
    const unsatisfiable = await get(path, { headers: { Range: 'bytes=99999-' } });
    assert.equal(unsatisfiable.status, 416);
    assert.equal(unsatisfiable.headers.get('content-type'), 'text/plain; charset=utf-8');
    assert.equal(unsatisfiable.headers.get('cache-control'), ERROR_CACHE_CONTROL);
  });

  it('answers a first HEAD and a first Range, before any entry exists', async () => {
    const bytes = randomBytes(2000);
    const { path } = await store('https://example.com/first-range.jpg', bytes);
    const range = await get(path, { headers: { Range: 'bytes=0-9' } });
    assert.equal(range.status, 206);
    assertSameBytes(range.body, bytes.subarray(0, 10), 'the first range');
    const { path: headPath } = await store('https://example.com/first-head.jpg', bytes);
    const head = await get(headPath, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(bytes.length));
    const unsatisfiable = await get(signedPath({ secret: SECRET, imageUrl: 'https://example.com/first-range.jpg', atMs: Date.now(), size: 'full' }) + '?r', {
      headers: { Range: 'bytes=99999-' },
    });
    assert.equal(unsatisfiable.status, 416);
  });

  it("never keeps a miss's answer nor an app error: once the file is gone the app is asked again", async () => {
    const errorPath = signedPath({ secret: SECRET, imageUrl: 'https://example.com/never-stored.jpg', atMs: Date.now() });
    const { result: errors, calls: errorCalls } = await appCalls(async () => [await get(errorPath), await get(errorPath)]);
    assert.deepEqual(errors.map((answer) => answer.status), [404, 404]);
    assert.equal(errorCalls, 2, 'each error reached the app');

    // The app stores the file and answers X-Accel-Redirect once; afterwards it says 404.
    const bytes = randomBytes(1000);
    const imageUrl = 'https://example.com/miss.jpg';
    const key = storageKey(Buffer.from(imageUrl));
    const file = join(root, keyDirectory('i', key), `${key}.jpg`);
    const missPath = signedPath({ secret: SECRET, imageUrl, atMs: Date.now() });
    await mkdir(join(root, keyDirectory('i', key)), { recursive: true });
    accelMisses.set(missPath, { target: `/_imageproxy/${keyDirectory('i', key)}/${key}.jpg`, file, bytes });
    const { result: miss, calls: missCalls } = await appCalls(() => get(missPath));
    assert.equal(miss.status, 200);
    assertSameBytes(miss.body, bytes, 'the miss');
    assert.equal(missCalls, 1);
    await rm(file);
    // Behaviour under test, not a wait for a condition: past the open file cache's recheck
    // (open_file_cache_valid 1s), a kept miss answer would still be served; a fresh one is not.
    await sleep(1100);
    const { result: again, calls: againCalls } = await appCalls(() => get(missPath));
    assert.equal(again.status, 404, 'the miss answer was not kept');
    assert.equal(againCalls, 1);
  });

  it('never caches a 410', async () => {
    const bytes = randomBytes(500);
    const { path } = await store('https://example.com/tampered.jpg', bytes);
    const tampered = path.replace(/\/full\/([A-Za-z0-9_-]{15})[A-Za-z0-9_-]\//, '/full/$1A/');
    const bad = tampered === path ? path.replace(/\/full\/([A-Za-z0-9_-]{15})[A-Za-z0-9_-]\//, '/full/$1B/') : tampered;
    for (let index = 0; index < 2; index += 1) assert.equal((await get(bad)).status, 410);
    assert.equal(await cacheEntryFor(bad), null, 'no entry for a 410');
    assert.ok((await cacheEntryFor(path)) === null, 'nor for the valid link, never asked');
  });

  it('sends other methods to the app, never to the file', async () => {
    const bytes = randomBytes(500);
    const { path } = await store('https://example.com/posted.jpg', bytes);
    for (const method of ['POST', 'PUT', 'OPTIONS']) {
      const { result, calls } = await appCalls(() => get(path, { method }));
      assert.equal(result.status, 404, method); // the stand-in's answer, not nginx's
      assert.equal(result.headers.get('x-imageproxy-error'), 'not_stored', method);
      assert.equal(calls, 1, method);
    }
  });

  it('passes the client address to the app once, as without the cache', async () => {
    const path = signedPath({ secret: SECRET, imageUrl: 'https://example.com/address.jpg', atMs: Date.now() });
    await get(path);
    const last = appRequests.at(-1);
    assert.equal(last?.realIp, '127.0.0.1');
    assert.equal(last?.forwardedFor, '127.0.0.1');
  });
});
