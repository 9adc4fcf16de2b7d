/**
 * Hits from an S3 bucket through real nginx (config, secrets module and keys file
 * rendered by `imageproxy nginx-config` from a config with `storage.type: "s3"`) in front
 * of a real Ceph RADOS Gateway (test/rgwHarness.ts). Objects are put by the S3 store at
 * the names the app uses (server/storage/objectNames.ts): the original, the source
 * thumbnail and the AVIF and WebP class files of a negotiated thumbnail link.
 *
 * The app cannot serve from a bucket yet (another step of issue 22), so a tiny loopback
 * HTTP server stands in for it on the configured port: it records each request and, for
 * a link it was told about, puts the object and answers X-Accel-Redirect to it, as the
 * real app will; anything else gets a text 404.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { KNOWN_ACCEPT_HEADERS } from '../server/deploy/nginxConfig.js';
import { CACHE_FRESH_SECONDS, S3_KEYS_FILE_NAME } from '../server/deploy/s3Nginx.js';
import { classVariantStem, fileStem, storageKey } from '../server/contract/layout.js';
import { IMAGE_CACHE_CONTROL } from '../server/http/responseHeaders.js';
import { imageObjectName } from '../server/storage/objectNames.js';
import { originalObjectMetadata } from '../server/storage/objectMetadata.js';
import { S3ObjectStore } from '../server/storage/s3Store.js';
import { assertSameBytes, makeTempRoot, removeTempRoot, request, shortBody, signedPath, until, type Answer } from './helpers.js';
import { freePort, nginxMissing, startNginx, testWorkerUser, type RunningNginx } from './nginxHarness.js';
import { cephMissing, gatewayStoreSettings, startGateway, type RunningGateway } from './rgwHarness.js';

const SECRET = 'nginx-s3-secret';
const PREFIX = 'site-a/';
const LABEL = '250x250';
const [CHROME, , , , FIREFOX_65] = KNOWN_ACCEPT_HEADERS;
const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'server', 'cli.js');
/** A takedown's promise: gone from every node's cache within this. */
const TAKEDOWN_BOUND_MS = 5_000;

const skip = nginxMissing() ?? cephMissing();
if (skip !== null) console.log(`# nginx from a bucket skipped: ${skip}`);

interface AppRequest {
  method: string;
  url: string;
}

interface StandInApp {
  requests: AppRequest[];
  /** The next request for `url` puts `object` and answers X-Accel-Redirect to it. */
  stores: Map<string, { name: string; bytes: Buffer; contentType: string; cacheControl?: string | null }>;
  close(): Promise<void>;
}

async function startStandInApp(port: number, store: S3ObjectStore): Promise<StandInApp> {
  const requests: AppRequest[] = [];
  const stores: StandInApp['stores'] = new Map();
  const server: Server = createServer((incoming, response) => {
    const url = incoming.url ?? '';
    requests.push({ method: incoming.method ?? '', url });
    const object = stores.get(url);
    if (object === undefined) {
      response.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Imageproxy-Error': 'not_stored' }).end('not_stored: image is not stored\n');
      return;
    }
    store.put(object.name, object.bytes, { contentType: object.contentType }).then(
      () =>
        response
          .writeHead(200, {
            'X-Accel-Redirect': `/_imageproxy/${object.name}`,
            'Content-Type': object.contentType,
            ...(object.cacheControl === null ? {} : { 'Cache-Control': object.cacheControl ?? IMAGE_CACHE_CONTROL }),
          })
          .end(),
      () => response.writeHead(500).end('stand-in app failed\n'),
    );
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    requests,
    stores,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** `imageproxy nginx-config --standalone-conf --out DIR` with `env` added to this process's. */
function runNginxConfig(
  configPath: string,
  outDir: string,
  env: Record<string, string | undefined>,
  extraArgs: readonly string[] = [],
): Promise<{ code: number | null; stderr: string }> {
  const args = [CLI, 'nginx-config', '--config', configPath, '--standalone-conf', '--out', outDir, ...extraArgs];
  const user = testWorkerUser();
  if (user !== undefined && extraArgs.length === 0) args.push('--user', user);
  const childEnv: NodeJS.ProcessEnv = { ...process.env };
  for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN']) delete childEnv[name];
  Object.assign(childEnv, env);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env: childEnv });
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stderr }));
  });
}

/** Lines of the gateway's log naming a GET of `objectPath`. */
async function gatewayGets(gateway: RunningGateway, objectPath: string): Promise<number> {
  const log = await readFile(join(gateway.directory, 'log', 'client.rgw.a.log'), 'utf8').catch(() => '');
  return log.split('\n').filter((line) => line.includes(`"GET ${objectPath} `)).length;
}

describe('nginx serves hits from an S3 bucket (real Ceph RGW)', { skip: skip ?? false }, () => {
  let gateway: RunningGateway;
  let store: S3ObjectStore;
  let app: StandInApp;
  let nginx: RunningNginx | null = null;
  let workDir = '';
  let base = '';
  let configPath = '';

  const imageUrl = (name: string): string => `http://images.example/${name}.jpg`;
  const keyOf = (name: string): string => storageKey(Buffer.from(imageUrl(name)));
  const link = (name: string, size = 'full', atMs = Date.now()): string => signedPath({ secret: SECRET, imageUrl: imageUrl(name), atMs, size });
  const get = (path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> => request(base, path, { headers, method });
  const objectPath = (name: string): string => `/${gateway.bucket}/${PREFIX}${name}`;

  /** Objects of image `all`, named as the app names them. */
  const objects = {
    original: { bytes: randomBytes(30_000), contentType: 'image/jpeg', stem: (key: string) => fileStem(key, null) },
    source: { bytes: randomBytes(12_000), contentType: 'image/jpeg', stem: (key: string) => fileStem(key, LABEL) },
    avif: { bytes: randomBytes(8_000), contentType: 'image/avif', stem: (key: string) => classVariantStem(key, LABEL, 'avif') },
    webp: { bytes: randomBytes(9_000), contentType: 'image/webp', stem: (key: string) => classVariantStem(key, LABEL, 'webp') },
  };
  const nameOf = (image: string, stem: (key: string) => string): string => imageObjectName('i', keyOf(image), stem(keyOf(image)));

  async function putImage(image: string, bytes: Buffer, contentType = 'image/jpeg'): Promise<string> {
    const name = nameOf(image, objects.original.stem);
    await store.put(name, bytes, { contentType });
    return name;
  }

  async function writeConfig(file: string, nginxPort: number, appPort: number, cacheDir: string): Promise<void> {
    const config = {
      listen: `127.0.0.1:${appPort}`,
      root: join(workDir, 'tree'),
      secrets: [SECRET],
      formats: ['avif', 'webp'],
      nginx: { listen: `127.0.0.1:${nginxPort}`, internalPrefix: '/_imageproxy' },
      storage: { type: 's3', endpoint: gateway.endpoint, bucket: gateway.bucket, region: gateway.region, prefix: PREFIX, cacheDir, cacheMaxSize: '64m' },
    };
    await writeFile(file, JSON.stringify(config), { mode: 0o600 });
  }

  const gatewayKeys = (): Record<string, string> => ({ AWS_ACCESS_KEY_ID: gateway.credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: gateway.credentials.secretAccessKey });

  before(async () => {
    gateway = await startGateway();
    store = new S3ObjectStore(gatewayStoreSettings(gateway, PREFIX));
    workDir = await makeTempRoot('imageproxy-nginx-s3-');
    const appPort = await freePort();
    app = await startStandInApp(appPort, store);
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    configPath = join(workDir, 'config.json');
    await writeConfig(configPath, port, appPort, join(workDir, 'cache'));
    const prefixDir = join(workDir, 'nginx');
    const rendered = await runNginxConfig(configPath, prefixDir, gatewayKeys());
    assert.equal(rendered.code, 0, rendered.stderr);
    const original = objects.original;
    const facts = { sourceUrl: imageUrl('all'), contentType: 'image/jpeg', originContentType: 'image/jpeg', bytes: original.bytes.length, width: 10, height: 10, frames: 1, sha256: '0'.repeat(64), fetchedAt: '2026-01-01T00:00:00.000Z' };
    for (const object of Object.values(objects)) {
      await store.put(nameOf('all', object.stem), object.bytes, { contentType: object.contentType, ...(object === original ? { metadata: originalObjectMetadata(facts) } : {}) });
    }
    nginx = await startNginx(prefixDir, await readFile(join(prefixDir, 'nginx.conf'), 'utf8'), port);
  });

  after(async () => {
    await nginx?.stop();
    await app?.close();
    store?.close();
    await gateway?.stop();
    if (workDir !== '') await removeTempRoot(workDir);
  });

  it('nginx-config writes the keys to a 0600 include file, never into the config', async () => {
    const prefixDir = join(workDir, 'nginx');
    const conf = await readFile(join(prefixDir, 'nginx.conf'), 'utf8');
    assert.ok(!conf.includes(gateway.credentials.secretAccessKey), 'no secret key in nginx.conf');
    assert.ok(!conf.includes(gateway.credentials.accessKeyId), 'no key id in nginx.conf');
    assert.ok(conf.includes(`include "${join(prefixDir, S3_KEYS_FILE_NAME)}";`), 'the config includes the keys file');
    const keys = await readFile(join(prefixDir, S3_KEYS_FILE_NAME), 'utf8');
    assert.ok(keys.includes(gateway.credentials.secretAccessKey), 'the keys file holds the secret key');
    assert.equal((await stat(join(prefixDir, S3_KEYS_FILE_NAME))).mode & 0o777, 0o600);
  });

  it('nginx-config refuses to write an s3 config without keys in its environment', async () => {
    const outDir = join(workDir, 'no-keys');
    const result = await runNginxConfig(configPath, outDir, { AWS_ACCESS_KEY_ID: gateway.credentials.accessKeyId });
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /AWS_SECRET_ACCESS_KEY is not set/);
    await assert.rejects(stat(join(outDir, S3_KEYS_FILE_NAME)), 'no keys file written');
  });

  it("nginx-config warns when nginx's user cannot enter the cache directory (nginx never reads the tree then)", async () => {
    const parent = join(workDir, 'private');
    await mkdir(parent, { mode: 0o700 });
    await chmod(parent, 0o700);
    const file = join(workDir, 'private-cache.json');
    await writeConfig(file, await freePort(), await freePort(), join(parent, 'cache'));
    const result = await runNginxConfig(file, join(workDir, 'private-out'), gatewayKeys(), ['--nginx-user', 'nobody']);
    assert.equal(result.code, 0, result.stderr);
    // The temp dir above may be the first one nobody cannot enter: the path named is the cache's, not the tree's.
    assert.match(result.stderr, new RegExp(`nginx's user nobody cannot enter \\S+ \\(mode 0700, .*so nginx cannot read ${join(parent, 'cache')}:`));
  });

  const kinds = [
    { what: 'the original (full-size link)', object: objects.original, size: 'full', accept: CHROME, vary: null },
    { what: 'the source-format thumbnail (Accept */*)', object: objects.source, size: LABEL, accept: '*/*', vary: 'Accept' },
    { what: 'the AVIF class file (Chrome)', object: objects.avif, size: LABEL, accept: CHROME, vary: 'Accept' },
    { what: 'the WebP class file (Firefox 65)', object: objects.webp, size: LABEL, accept: FIREFOX_65, vary: 'Accept' },
  ] as const;

  for (const { what, object, size, accept, vary } of kinds) {
    it(`${what}: 200, 206, HEAD and 304s from the object, with the hit's headers`, async () => {
      const path = link('all', size);
      const headers = { Accept: accept ?? '*/*' };
      const full = await get(path, headers);
      assert.equal(full.status, 200, shortBody(full.body, full.headers.get('content-type')));
      assertSameBytes(full.body, object.bytes, what);
      const etag = full.headers.get('etag');
      const lastModified = full.headers.get('last-modified');
      assert.ok(etag !== null && lastModified !== null, `${what}: ETag and Last-Modified`);
      const partial = await get(path, { ...headers, Range: 'bytes=100-199' });
      assert.equal(partial.status, 206, what);
      assert.equal(partial.headers.get('content-range'), `bytes 100-199/${object.bytes.length}`);
      assertSameBytes(partial.body, object.bytes.subarray(100, 200), `${what}: the range`);
      const head = await get(path, headers, 'HEAD');
      assert.equal(head.status, 200, what);
      assert.equal(head.headers.get('content-length'), String(object.bytes.length));
      assert.equal(head.body.length, 0);
      const byTag = await get(path, { ...headers, 'If-None-Match': etag });
      assert.equal(byTag.status, 304, `${what}: If-None-Match`);
      const byDate = await get(path, { ...headers, 'If-Modified-Since': lastModified });
      assert.equal(byDate.status, 304, `${what}: If-Modified-Since`);
      for (const [kind, answer] of [['200', full], ['206', partial], ['HEAD', head], ['304', byTag], ['304 by date', byDate]] as const) {
        assert.equal(answer.headers.get('cache-control'), IMAGE_CACHE_CONTROL, `${what}: one week-long Cache-Control on the ${kind}`);
        assert.equal(answer.headers.get('vary'), vary, `${what}: Vary on the ${kind}`);
        assert.equal(answer.headers.get('x-content-type-options'), 'nosniff', `${what}: security headers on the ${kind}`);
        const leaked = [...answer.headers.keys()].filter((name) => name.startsWith('x-amz-') || name.startsWith('x-rgw-'));
        assert.deepEqual(leaked, [], `${what}: none of the gateway's headers on the ${kind}`);
        if (kind !== '304' && kind !== '304 by date') assert.equal(answer.headers.get('content-type'), object.contentType, `${what}: Content-Type on the ${kind}`);
      }
    });
  }

  it('concurrent first requests for one object make one gateway GET (proxy_cache_lock)', async () => {
    const name = await putImage('lock', randomBytes(200_000));
    const answers = await Promise.all(Array.from({ length: 8 }, () => get(link('lock'))));
    for (const answer of answers) assert.equal(answer.status, 200);
    // The gateway logs in order: once a later request's line is there, so are the first ones'.
    const marker = await putImage('lock-marker', randomBytes(100));
    assert.equal((await get(link('lock-marker'))).status, 200);
    await until(() => gatewayGets(gateway, objectPath(marker)), { message: "the marker's GET in the gateway's log", timeoutMs: 30_000 });
    assert.equal(await gatewayGets(gateway, objectPath(name)), 1, 'one GET of the object reached the gateway');
  });

  it('a Range on the first request of an object: 206 with the slice', async () => {
    const bytes = randomBytes(50_000);
    await putImage('ranged', bytes);
    const answer = await get(link('ranged'), { Range: 'bytes=1000-1999' });
    assert.equal(answer.status, 206);
    assert.equal(answer.headers.get('content-range'), `bytes 1000-1999/${bytes.length}`);
    assertSameBytes(answer.body, bytes.subarray(1000, 2000), 'the range');
  });

  it('an entry past its freshness is revalidated: a conditional GET, 304 from the gateway, the same bytes', async () => {
    const bytes = randomBytes(30_000);
    const name = await putImage('revalidated', bytes);
    const path = link('revalidated');
    assert.equal((await get(path)).status, 200);
    const cachedAt = Date.now();
    // Freshness is by the clock: once it has passed, the next hit revalidates.
    await until(() => Date.now() - cachedAt > (CACHE_FRESH_SECONDS + 1) * 1000, { message: 'the entry stale', timeoutMs: 10_000, intervalMs: 100 });
    const answer = await get(path);
    assert.equal(answer.status, 200);
    assertSameBytes(answer.body, bytes, 'the cached bytes');
    const revalidations = async (): Promise<number> => {
      const log = await readFile(join(gateway.directory, 'log', 'client.rgw.a.log'), 'utf8').catch(() => '');
      return log.split('\n').filter((line) => line.includes(`"GET ${objectPath(name)} HTTP/1.1" 304`)).length;
    };
    assert.equal(await until(revalidations, { message: "the gateway's 304 in its log", timeoutMs: 30_000 }), 1);
    assert.equal(await gatewayGets(gateway, objectPath(name)), 2, 'the first GET and the conditional one');
  });

  it('a missing object: the request goes to the app, which stores it and answers X-Accel-Redirect; nginx serves it from the bucket', async () => {
    const path = link('late', LABEL);
    const bytes = randomBytes(5_000);
    const name = nameOf('late', objects.source.stem);
    app.stores.set(path, { name, bytes, contentType: 'image/png' });
    const before = app.requests.length;
    const answer = await get(path, { Accept: '*/*' });
    assert.equal(answer.status, 200, shortBody(answer.body, answer.headers.get('content-type')));
    assertSameBytes(answer.body, bytes, 'the object the app stored');
    assert.equal(answer.headers.get('content-type'), 'image/png');
    assert.equal(answer.headers.get('cache-control'), IMAGE_CACHE_CONTROL, 'one Cache-Control: the app\'s');
    assert.equal(answer.headers.get('vary'), 'Accept');
    assert.deepEqual(app.requests.slice(before), [{ method: 'GET', url: path }], 'the app got the link once');
    app.stores.delete(path);
    const again = await get(path, { Accept: '*/*' });
    assert.equal(again.status, 200);
    assert.equal(app.requests.length, before + 1, 'the second request is a hit');
  });

  it("X-Accel-Redirect keeps the app's Cache-Control (a provisional answer's), else adds the week-long one", async () => {
    for (const [image, cacheControl, expected] of [
      ['provisional', 'public, max-age=60', 'public, max-age=60'],
      ['no-cache-control', null, IMAGE_CACHE_CONTROL],
    ] as const) {
      const path = link(image);
      app.stores.set(path, { name: nameOf(image, objects.original.stem), bytes: randomBytes(2_000), contentType: 'image/gif', cacheControl });
      const answer = await get(path);
      app.stores.delete(path);
      assert.equal(answer.status, 200, image);
      assert.equal(answer.headers.get('cache-control'), expected, image);
      assert.equal(answer.headers.get('content-type'), 'image/gif', image);
    }
  });

  it('a name the app would never give is not fetched through the internal location', async () => {
    const path = link('odd');
    app.stores.set(path, { name: '.imageproxy/blocklist.json', bytes: Buffer.from('{}'), contentType: 'application/json' });
    const answer = await get(path);
    app.stores.delete(path);
    assert.equal(answer.status, 404);
    assert.equal(answer.headers.get('x-imageproxy-error'), 'not_stored');
  });

  it('a deleted object (a takedown) stops being served within 5 s: the request reaches the app', async () => {
    const name = await putImage('blocked', randomBytes(20_000));
    const path = link('blocked');
    assert.equal((await get(path)).status, 200);
    assert.equal((await get(path)).status, 200, 'cached');
    const before = app.requests.length;
    await store.delete(name);
    const deletedAt = Date.now();
    const answer = await until(async () => ((await get(path)).status === 200 ? null : app.requests.length > before), { message: 'the request reaching the app', timeoutMs: 30_000, intervalMs: 50 });
    const elapsedMs = Date.now() - deletedAt;
    assert.equal(answer, true);
    console.log(`# takedown: the deleted object reached the app after ${elapsedMs} ms`);
    assert.ok(elapsedMs < TAKEDOWN_BOUND_MS, `reached the app after ${elapsedMs} ms`);
    assert.equal(app.requests.at(-1)?.url, path);
  });

  it('gateway down: cached objects still 200, links checked without it, uncached objects 503 storage_unavailable', async () => {
    const name = await putImage('cached', randomBytes(40_000));
    const bytes = (await store.get(name, { maxBytes: 1 << 20 }))?.bytes ?? Buffer.alloc(0);
    const path = link('cached');
    assert.equal((await get(path)).status, 200);
    await putImage('uncached', randomBytes(1_000));
    await gateway.stopGateway();
    try {
      const cached = await get(path);
      assert.equal(cached.status, 200, 'the cached object');
      assertSameBytes(cached.body, bytes, 'the cached copy');
      // Freshness is by the clock: once it has passed, the entry is stale for sure.
      const stoppedAt = Date.now();
      await until(() => Date.now() - stoppedAt > (CACHE_FRESH_SECONDS + 1) * 1000, { message: 'the entry stale', timeoutMs: 10_000, intervalMs: 100 });
      const stale = await get(path);
      assert.equal(stale.status, 200, 'served stale while the gateway is down');
      assertSameBytes(stale.body, bytes, 'the stale copy');
      const badSignature = await get(signedPath({ secret: 'not-the-secret', imageUrl: imageUrl('cached'), atMs: Date.now() }));
      assert.equal(badSignature.status, 410, 'a bad signature is refused by njs');
      const expired = await get(link('cached', 'full', Date.now() - 30 * 86_400_000));
      assert.equal(expired.status, 410, 'an expired link is refused');
      const missing = await get(link('uncached'));
      assert.equal(missing.status, 503, shortBody(missing.body, missing.headers.get('content-type')));
      assert.equal(missing.headers.get('x-imageproxy-error'), 'storage_unavailable');
      assert.equal(missing.headers.get('retry-after'), '5');
      assert.equal(missing.body.toString(), 'storage_unavailable: storage unavailable, try again\n');
    } finally {
      await gateway.startGateway();
    }
  });

  it('wrong nginx keys: no image, and nothing of the gateway\'s answer', async () => {
    const prefixDir = join(workDir, 'wrong-keys');
    const port = await freePort();
    const file = join(workDir, 'wrong-keys.json');
    await writeConfig(file, port, await freePort(), join(workDir, 'wrong-keys-cache'));
    const rendered = await runNginxConfig(file, prefixDir, { AWS_ACCESS_KEY_ID: gateway.credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: 'not-the-secret' });
    assert.equal(rendered.code, 0, rendered.stderr);
    const wrong = await startNginx(prefixDir, await readFile(join(prefixDir, 'nginx.conf'), 'utf8'), port);
    try {
      const answer = await request(`http://127.0.0.1:${port}`, link('all'));
      assert.equal(answer.status, 500);
      assert.equal(answer.headers.get('x-imageproxy-error'), 'storage_denied');
      assert.equal(answer.body.toString(), "storage_denied: storage refused nginx's keys\n");
    } finally {
      await wrong.stop();
    }
  });
});
