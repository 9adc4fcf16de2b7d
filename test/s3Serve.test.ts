/**
 * `serve` with `storage.type: "s3"` (issue 22): the whole server in-process against a
 * real Ceph RADOS Gateway on loopback (test/rgwHarness.ts, one for the file) and real
 * origins on 127.0.0.1. A miss keeps the original and its thumbnails as objects (bytes,
 * type, metadata read back), a hit is answered from the bucket without the origin, format
 * classes, both deliveries, two servers on one bucket, the gateway gone and back,
 * /readyz, and the built `serve` refusing a bucket it cannot use. Each case has a
 * storage.prefix of its own.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { fileStem, classVariantStem } from '../server/contract/layout.js';
import type { RunningServer } from '../server/http/server.js';
import { IMAGE_CACHE_CONTROL } from '../server/http/responseHeaders.js';
import { originalFactsOf, variantRecordOfObject } from '../server/storage/objectMetadata.js';
import { imageObjectName } from '../server/storage/objectNames.js';
import { S3ObjectStore } from '../server/storage/s3Store.js';
import { sha256Hex, type OriginalImage } from '../server/tree/originals.js';
import { createS3Backend } from '../server/storage/s3Backend.js';
import { ImageStore } from '../server/tree/store.js';
import { runCli, startServeCli } from './cliProcess.js';
import { assertSameBytes, makeTempRoot, removeTempRoot, request, shortBody, startLoopbackServer, type Answer } from './helpers.js';
import { originImages } from './originImages.js';
import { startOrigin, type Origin } from './origin.js';
import { cephMissing, gatewayCliEnv, gatewayStoreSettings, startGateway, type RunningGateway } from './rgwHarness.js';
import type { ConfigLayer } from '../server/config/config.js';

const SECRET = 's3-serve-secret';
const CHROME = 'image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8';
const CAP = 16 * 1024 * 1024;

/** A photo-like JPEG (noise, blurred) of its own for each call: 400×300, so a 250x250 thumbnail is 250×188. */
function photoJpeg(width = 400, height = 300): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 3, background: '#446688', noise: { type: 'gaussian', mean: 128, sigma: 30 } } })
    .blur(2)
    .jpeg({ quality: 85 })
    .toBuffer();
}

/** 16×16 of one colour: as AVIF larger than as PNG, so the AVIF class gets the PNG's bytes. */
function tinyFlatPng(): Promise<Buffer> {
  return sharp({ create: { width: 16, height: 16, channels: 3, background: '#3366aa' } }).png().toBuffer();
}

function assertImage(answer: Answer, what: string): void {
  assert.equal(answer.status, 200, `${what}: ${answer.status} ${shortBody(answer.body, answer.headers.get('content-type'))}`);
}

describe('serve with storage.type "s3" against a real Ceph RGW', { skip: cephMissing() ?? false }, () => {
  let gateway: RunningGateway;
  let work: string;
  let origin: Origin;
  const bodies = new Map<string, Buffer>();
  const servers: RunningServer[] = [];
  const stores: S3ObjectStore[] = [];

  const storeAt = (prefix: string): S3ObjectStore => {
    const store = new S3ObjectStore(gatewayStoreSettings(gateway, prefix));
    stores.push(store);
    return store;
  };

  const { fetchesOf, imageUrlOf, keyOf, linkOf, objectOf } = originImages(() => origin, SECRET);

  /** A server of its own root on the gateway's bucket under `prefix`. */
  async function startS3Server(prefix: string, overrides: ConfigLayer = {}): Promise<RunningServer> {
    const root = await makeTempRoot('imageproxy-s3serve-root-');
    const server = await startLoopbackServer(root, SECRET, {
      storage: { type: 's3', endpoint: gateway.endpoint, bucket: gateway.bucket, prefix },
      ...overrides,
    });
    servers.push(server);
    return server;
  }

  const get = (server: RunningServer, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> =>
    request(server.url, path, { method, headers });

  const readyz = async (server: RunningServer): Promise<Answer> => {
    assert.ok(server.adminUrl !== null);
    return request(server.adminUrl, '/readyz');
  };

  before(async () => {
    [gateway, work] = await Promise.all([startGateway(), makeTempRoot('imageproxy-s3serve-')]);
    // The SDK's credential chain, as an operator's serve finds them; nothing looked up beyond loopback.
    process.env.AWS_ACCESS_KEY_ID = gateway.credentials.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = gateway.credentials.secretAccessKey;
    process.env.AWS_EC2_METADATA_DISABLED = 'true';
    process.env.AWS_SHARED_CREDENTIALS_FILE = join(work, 'no-credentials');
    process.env.AWS_CONFIG_FILE = join(work, 'no-config');
    origin = await startOrigin((incoming, response) => {
      const body = bodies.get(incoming.url ?? '/');
      if (body === undefined) {
        response.writeHead(404, { 'Content-Type': 'text/plain' }).end('not here');
        return;
      }
      response.writeHead(200, { 'Content-Type': incoming.url?.endsWith('.png') === true ? 'image/png' : 'image/jpeg' }).end(body);
    });
  });

  after(async () => {
    await Promise.all(servers.map((server) => server.close({ graceMs: 100 })));
    for (const store of stores) store.close();
    await origin?.close();
    await gateway?.stop();
    if (work !== undefined) await removeTempRoot(work);
  });

  it('a miss keeps the original and the thumbnail as objects; a hit is answered from the bucket without the origin', async () => {
    const server = await startS3Server('miss');
    const store = storeAt('miss');
    bodies.set('/miss.jpg', await photoJpeg());
    const full = await get(server, linkOf('/miss.jpg'));
    assertImage(full, 'full-size miss');
    assert.equal(full.headers.get('content-type'), 'image/jpeg');
    const thumbnail = await get(server, linkOf('/miss.jpg', '250x250'));
    assertImage(thumbnail, 'thumbnail');
    assert.equal(fetchesOf('/miss.jpg'), 1);

    const original = await store.get(objectOf('/miss.jpg'), { maxBytes: CAP });
    assert.ok(original !== null, 'the original is an object');
    assertSameBytes(original.bytes, full.body, 'the original object holds what was answered');
    assert.equal(original.info.contentType, 'image/jpeg');
    const facts = originalFactsOf(original.info.metadata, { contentType: original.info.contentType, bytes: original.info.bytes });
    assert.ok(facts !== null, 'the original carries its facts');
    assert.equal(facts.sha256, sha256Hex(original.bytes));
    assert.deepEqual([facts.width, facts.height, facts.frames, facts.sourceUrl, facts.originContentType], [400, 300, 1, imageUrlOf('/miss.jpg'), 'image/jpeg']);

    const stored = await store.get(objectOf('/miss.jpg', '250x250'), { maxBytes: CAP });
    assert.ok(stored !== null, 'the thumbnail is an object');
    assertSameBytes(stored.bytes, thumbnail.body, 'the thumbnail object holds what was answered');
    assert.equal(stored.info.contentType, 'image/jpeg');
    const record = variantRecordOfObject(stored.info.metadata, { contentType: stored.info.contentType, bytes: stored.info.bytes });
    assert.equal(record?.sha256, sha256Hex(stored.bytes));
    const pixels = await sharp(stored.bytes).metadata();
    assert.deepEqual([pixels.width, pixels.height], [250, 188]);
    const names: string[] = [];
    for await (const listed of store.list('')) names.push(listed.name);
    assert.deepEqual(names.sort(), [objectOf('/miss.jpg'), objectOf('/miss.jpg', '250x250')].sort(), 'one object per image, nothing else');

    // Hits, streamed from the bucket with the object's own validators.
    for (const [link, object] of [
      [linkOf('/miss.jpg'), original],
      [linkOf('/miss.jpg', '250x250'), stored],
    ] as const) {
      const hit = await get(server, link);
      assertImage(hit, 'hit');
      assertSameBytes(hit.body, object.bytes, 'a hit answers the object');
      assert.equal(hit.headers.get('content-type'), 'image/jpeg');
      assert.equal(hit.headers.get('content-length'), String(object.bytes.length));
      assert.equal(hit.headers.get('etag'), `"${object.info.etag}"`);
      assert.equal(hit.headers.get('last-modified'), new Date(object.info.modifiedMs).toUTCString());
      assert.equal(hit.headers.get('cache-control'), IMAGE_CACHE_CONTROL);
      assert.equal(hit.headers.get('vary'), null);
      const head = await get(server, link, {}, 'HEAD');
      assert.equal(head.status, 200);
      assert.equal(head.body.length, 0);
      assert.equal(head.headers.get('content-length'), String(object.bytes.length));
      assert.equal(head.headers.get('etag'), `"${object.info.etag}"`);
      const revalidated = await get(server, link, { 'If-None-Match': `"${object.info.etag}"` });
      assert.equal(revalidated.status, 304);
      assert.equal(revalidated.body.length, 0);
      assert.equal(hit.headers.get('accept-ranges'), 'bytes');
      // One range: a ranged GET of the object, answered 206 with its part.
      const size = object.bytes.length;
      const etag = `"${object.info.etag}"`;
      for (const [header, start, end] of [
        ['bytes=0-9', 0, 9],
        ['bytes=-5', size - 5, size - 1],
        [`bytes=${size - 3}-`, size - 3, size - 1],
      ] as const) {
        const part = await get(server, link, { Range: header });
        assert.equal(part.status, 206, header);
        assert.equal(part.headers.get('content-range'), `bytes ${start}-${end}/${size}`, header);
        assert.equal(part.headers.get('content-length'), String(end - start + 1), header);
        assert.equal(part.headers.get('etag'), etag, header);
        assertSameBytes(part.body, object.bytes.subarray(start, end + 1), `${header}: the object's own bytes`);
      }
      const matching = await get(server, link, { Range: 'bytes=0-9', 'If-Range': etag });
      assert.equal(matching.status, 206, 'If-Range with the current ETag');
      assert.equal(matching.body.length, 10);
      // Answered whole: If-Range naming another version, several ranges.
      const wholeAnswers: Array<Record<string, string>> = [{ Range: 'bytes=0-9', 'If-Range': '"another-version"' }, { Range: 'bytes=0-1,5-6' }];
      for (const headers of wholeAnswers) {
        const whole = await get(server, link, headers);
        assert.equal(whole.status, 200, JSON.stringify(headers));
        assertSameBytes(whole.body, object.bytes, `${JSON.stringify(headers)}: the whole object`);
      }
      const beyond = await get(server, link, { Range: `bytes=${size}-` });
      assert.equal(beyond.status, 416);
      assert.equal(beyond.headers.get('content-range'), `bytes */${size}`);
      assert.equal(beyond.body.length, 0);
    }
    // The miss's own answer carried the same ETag as the hits: the object's MD5.
    assert.equal(full.headers.get('etag'), `"${original.info.etag}"`);
    assert.equal(fetchesOf('/miss.jpg'), 1, 'no origin request for hits');
  });

  it('formats on: class objects made (a class that did not pay holds the source thumbnail\'s bytes), Vary: Accept', async () => {
    const server = await startS3Server('formats', { formats: ['avif', 'webp'] });
    const store = storeAt('formats');
    bodies.set('/formats.jpg', await photoJpeg());
    bodies.set('/flat.png', await tinyFlatPng());
    const avif = await get(server, linkOf('/formats.jpg', '250x250'), { Accept: CHROME });
    assertImage(avif, 'AVIF thumbnail');
    assert.equal(avif.headers.get('content-type'), 'image/avif');
    assert.equal(avif.headers.get('vary'), 'Accept');
    const webp = await get(server, linkOf('/formats.jpg', '250x250'), { Accept: 'image/webp,*/*' });
    assert.equal(webp.headers.get('content-type'), 'image/webp');
    const source = await get(server, linkOf('/formats.jpg', '250x250'), { Accept: '*/*' });
    assert.equal(source.headers.get('content-type'), 'image/jpeg');
    assert.equal(source.headers.get('vary'), 'Accept');
    const key = keyOf('/formats.jpg');
    for (const [format, type, answer] of [
      ['avif', 'image/avif', avif],
      ['webp', 'image/webp', webp],
    ] as const) {
      const object = await store.get(imageObjectName('i', key, classVariantStem(key, '250x250', format)), { maxBytes: CAP });
      assert.ok(object !== null, `the ${format} class is an object`);
      assert.equal(object.info.contentType, type);
      assertSameBytes(object.bytes, answer.body, `the ${format} object holds what was answered`);
      const pixels = await sharp(object.bytes).metadata();
      assert.deepEqual([pixels.format === 'heif' ? 'avif' : pixels.format, pixels.width, pixels.height], [format, 250, 188]);
    }
    assert.equal(fetchesOf('/formats.jpg'), 1);
    // A hit of a class: the object, still varying with Accept.
    const hit = await get(server, linkOf('/formats.jpg', '250x250'), { Accept: CHROME });
    assertImage(hit, 'AVIF hit');
    assertSameBytes(hit.body, avif.body, 'the AVIF hit');
    assert.equal(hit.headers.get('vary'), 'Accept');

    const flat = await get(server, linkOf('/flat.png', '250x250'), { Accept: CHROME });
    assertImage(flat, 'flat PNG for an AVIF client');
    assert.equal(flat.headers.get('content-type'), 'image/png');
    const flatKey = keyOf('/flat.png');
    const linked = await store.get(imageObjectName('i', flatKey, classVariantStem(flatKey, '250x250', 'avif')), { maxBytes: CAP });
    const sourceThumbnail = await store.get(imageObjectName('i', flatKey, fileStem(flatKey, '250x250')), { maxBytes: CAP });
    assert.ok(linked !== null && sourceThumbnail !== null);
    assert.equal(linked.info.contentType, 'image/png');
    assertSameBytes(linked.bytes, sourceThumbnail.bytes, 'the AVIF class object is a copy of the PNG thumbnail');
  });

  it('delivery accel: X-Accel-Redirect names {internalPrefix}/{object name}, for a miss and a hit', async () => {
    const server = await startS3Server('accel', { delivery: 'accel' });
    bodies.set('/accel.jpg', await photoJpeg());
    for (const round of ['miss', 'hit']) {
      for (const size of [undefined, '250x250']) {
        const answer = await get(server, linkOf('/accel.jpg', size));
        assert.equal(answer.status, 200, `${round} ${size ?? 'full'}`);
        assert.equal(answer.body.length, 0);
        assert.equal(answer.headers.get('x-accel-redirect'), `/_imageproxy/${objectOf('/accel.jpg', size ?? null)}`);
        assert.equal(answer.headers.get('content-type'), 'image/jpeg');
        assert.equal(answer.headers.get('cache-control'), IMAGE_CACHE_CONTROL);
      }
    }
    assert.equal(fetchesOf('/accel.jpg'), 1);
  });

  it('two servers on one bucket: one serves what the other fetched; 100 new images asked of both at once', async (t) => {
    const [first, second] = [await startS3Server('pair'), await startS3Server('pair')];
    const store = storeAt('pair');
    bodies.set('/shared.jpg', await photoJpeg());
    const fetched = await get(first, linkOf('/shared.jpg', '250x250'));
    assertImage(fetched, 'through the first');
    for (const size of [undefined, '250x250']) {
      const served = await get(second, linkOf('/shared.jpg', size));
      assertImage(served, `through the second, ${size ?? 'full'}`);
    }
    assert.equal(fetchesOf('/shared.jpg'), 1, 'the second server asked the bucket, not the origin');

    const paths = Array.from({ length: 100 }, (_, index) => `/burst-${index}.jpg`);
    for (const path of paths) bodies.set(path, await photoJpeg(160, 120));
    const answers = await Promise.all(paths.flatMap((path) => [first, second].map(async (server) => ({ path, answer: await get(server, linkOf(path)) }))));
    for (const { path, answer } of answers) assertImage(answer, path);
    for (const path of paths) {
      const [a, b] = answers.filter((entry) => entry.path === path).map((entry) => entry.answer.body);
      assert.ok(a !== undefined && b !== undefined);
      assertSameBytes(a, b, `${path}: both servers answer the same bytes`);
    }
    const originals = new Set<string>();
    for await (const listed of store.list('i/')) originals.add(listed.name);
    for (const path of paths) assert.ok(originals.has(objectOf(path)), `${path}: one object`);
    assert.equal(originals.size, paths.length + 2, 'one object per image (and the shared image\'s two)');
    const fetchCounts = paths.map(fetchesOf);
    const duplicates = fetchCounts.reduce((sum, count) => sum + count - 1, 0);
    t.diagnostic(`origin requests for 100 new images asked of two servers at once: ${fetchCounts.reduce((a, b) => a + b, 0)} (duplicates ${duplicates}; per image ${JSON.stringify(countsOf(fetchCounts))})`);
    // Each server fetches an image at most once (its own single-flight); the create
    // keeps one object whichever finished first.
    for (const [index, count] of fetchCounts.entries()) assert.ok(count >= 1 && count <= 2, `${paths[index]}: ${count} origin requests`);
  });

  it('an original another node stored first: the create keeps the winner\'s object, and the loser answers it', async () => {
    const store = storeAt('race');
    const backend = createS3Backend(store, { locks: new ImageStore(join(work, 'race-locks')) });
    const [winnerBytes, loserBytes] = [await photoJpeg(), await photoJpeg()];
    const key = keyOf('/race.jpg');
    const provenance = { sourceUrl: imageUrlOf('/race.jpg'), originContentType: 'image/jpeg', fetchedAt: new Date().toISOString() };
    const imageOf = (bytes: Buffer): OriginalImage => ({ format: 'jpeg', width: 400, height: 300, frames: 1, bytes });
    const winner = await backend.storeOriginal('i', key, imageOf(winnerBytes), provenance);
    const loser = await backend.storeOriginal('i', key, imageOf(loserBytes), provenance);
    assert.equal(winner.object?.sha256, sha256Hex(winnerBytes));
    assert.deepEqual(loser.object, winner.object, "the loser's answer is the winner's object");
    assert.equal(loser.bytes, winnerBytes.length);
    const kept = await store.get(objectOf('/race.jpg'), { maxBytes: CAP });
    assert.ok(kept !== null);
    assertSameBytes(kept.bytes, winnerBytes, "the winner's bytes stay");
    assert.equal(kept.info.etag, winner.object?.etag, 'the ETag of a PUT is the MD5 of its bytes');
    // A server asked afterwards finds the winner's object and fetches nothing.
    bodies.set('/race.jpg', loserBytes);
    const server = await startS3Server('race');
    const hit = await get(server, linkOf('/race.jpg'));
    assertImage(hit, 'the stored original');
    assertSameBytes(hit.body, winnerBytes, "the winner's object is answered");
    assert.equal(fetchesOf('/race.jpg'), 0);
  });

  it('the gateway gone: a miss answers 503 storage_unavailable with Retry-After within the deadline, /readyz not ready; both fine again once it is back', async () => {
    const server = await startS3Server('outage', { storage: { type: 's3', endpoint: gateway.endpoint, bucket: gateway.bucket, prefix: 'outage', callTimeoutMs: 3000, connectTimeoutMs: 1000 } });
    bodies.set('/before.jpg', await photoJpeg());
    bodies.set('/during.jpg', await photoJpeg());
    assertImage(await get(server, linkOf('/before.jpg')), 'before the outage');
    assert.equal((await readyz(server)).status, 200);
    await gateway.stopGateway();
    try {
      const started = Date.now();
      const miss = await get(server, linkOf('/during.jpg'));
      const tookMs = Date.now() - started;
      assert.equal(miss.status, 503, shortBody(miss.body, miss.headers.get('content-type')));
      assert.match(miss.body.toString(), /storage unavailable/);
      assert.equal(miss.headers.get('retry-after'), '5');
      assert.equal(miss.headers.get('cache-control'), 'no-store');
      assert.ok(tookMs < 15_000, `answered within the store's deadlines (${tookMs} ms)`);
      const hit = await get(server, linkOf('/before.jpg'));
      assert.equal(hit.status, 503, 'a hit through the app needs the gateway too');
      const notReady = await readyz(server);
      assert.equal(notReady.status, 503);
      assert.match(notReady.body.toString(), /storage: storage_unavailable: put .*readyz/);
    } finally {
      await gateway.startGateway();
    }
    const after = await get(server, linkOf('/during.jpg'));
    assertImage(after, 'a miss once the gateway is back');
    assert.equal((await readyz(server)).status, 200);
  });

  it('a hung gateway (SIGSTOP): a miss answers 503 storage_unavailable at the call deadline, never a hang; fine once it answers', async () => {
    const server = await startS3Server('hung', { storage: { type: 's3', endpoint: gateway.endpoint, bucket: gateway.bucket, prefix: 'hung', callTimeoutMs: 2000, connectTimeoutMs: 1000 } });
    bodies.set('/hung.jpg', await photoJpeg());
    assert.equal((await readyz(server)).status, 200);
    gateway.pauseGateway();
    try {
      const started = Date.now();
      const miss = await get(server, linkOf('/hung.jpg'));
      const tookMs = Date.now() - started;
      assert.equal(miss.status, 503, shortBody(miss.body, miss.headers.get('content-type')));
      assert.equal(miss.headers.get('retry-after'), '5');
      // One lookup's deadline (2 s), with room for a loaded machine; never nginx's minute.
      assert.ok(tookMs < 12_000, `answered at the deadline (${tookMs} ms)`);
      const notReady = await readyz(server);
      assert.equal(notReady.status, 503);
      assert.match(notReady.body.toString(), /storage: .*no answer within 2000 ms/);
    } finally {
      gateway.resumeGateway();
    }
    assertImage(await get(server, linkOf('/hung.jpg')), 'a miss once the gateway answers');
    assert.equal(fetchesOf('/hung.jpg'), 1, 'nothing was fetched while the gateway hung');
  });

  /** A config file for the built serve on the gateway's `bucket` (prefix `cli`). */
  const cliConfig = async (name: string, bucket: string): Promise<string> => {
    const path = join(work, `${name}.json`);
    const storage = { type: 's3', endpoint: gateway.endpoint, bucket, prefix: 'cli' };
    const config = { root: join(work, `${name}-root`), listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, secrets: [SECRET], allowPrivateNetworks: true, storage };
    await writeFile(path, JSON.stringify(config), { mode: 0o600 });
    return path;
  };
  /** The gateway's keys through the SDK's chain, with another secret if given. */
  const cliEnv = (secret = gateway.credentials.secretAccessKey): Record<string, string> => gatewayCliEnv(gateway, work, { AWS_SECRET_ACCESS_KEY: secret });

  it('the built serve --workers 2 on a bucket: a miss kept as objects, /readyz probes the bucket, SIGTERM exits 0', async () => {
    const serve = await startServeCli(['--config', await cliConfig('workers', gateway.bucket), '--workers', '2'], { cwd: work, env: cliEnv() });
    const { listening } = serve;
    let exitCode: number | null;
    try {
      assert.match(listening.storage, new RegExp(`^s3 ${gateway.bucket}/cli/ at `));
      bodies.set('/workers.jpg', await photoJpeg());
      assertImage(await request(listening.address, linkOf('/workers.jpg', '250x250')), 'a miss through a worker');
      const store = storeAt('cli');
      assert.ok((await store.head(objectOf('/workers.jpg'))) !== null, 'the original is an object');
      assert.ok((await store.head(objectOf('/workers.jpg', '250x250'))) !== null, 'the thumbnail is an object');
      const ready = await request(listening.admin, '/readyz');
      assert.equal(ready.status, 200, ready.body.toString());
    } finally {
      exitCode = await serve.stop();
    }
    assert.equal(exitCode, 0, serve.stderr());
  });

  it('the built populate fills the bucket (originals, thumbnails, format classes); a rerun skips every line without the origin', async () => {
    const paths = ['/populate-a.jpg', '/populate-b.jpg'];
    for (const path of paths) bodies.set(path, await photoJpeg());
    const list = join(work, 'populate.txt');
    await writeFile(list, `${paths.map(imageUrlOf).join('\n')}\n`);
    const config = await cliConfig('populate', gateway.bucket);
    const args = ['populate', list, '--config', config, '--sizes', '250x250', '--formats', 'webp'];
    const first = await runCli(args, { cwd: work, env: cliEnv(), timeoutMs: 120_000 });
    assert.equal(first.code, 0, first.stdout + first.stderr);
    assert.match(first.stdout, /ok 2, failed 0, skipped 0/);
    const store = storeAt('cli');
    for (const path of paths) {
      const key = keyOf(path);
      const thumbnail = await store.get(objectOf(path, '250x250'), { maxBytes: CAP });
      assert.ok(thumbnail !== null, `${path}: the thumbnail`);
      const pixels = await sharp(thumbnail.bytes).metadata();
      assert.deepEqual([pixels.width, pixels.height], [250, 188]);
      assert.equal((await store.head(objectOf(path)))?.contentType, 'image/jpeg', `${path}: the original`);
      assert.equal((await store.head(imageObjectName('i', key, classVariantStem(key, '250x250', 'webp'))))?.contentType, 'image/webp', `${path}: the WebP class`);
      assert.equal(fetchesOf(path), 1, path);
    }
    const rerun = await runCli(args, { cwd: work, env: cliEnv(), timeoutMs: 120_000 });
    assert.equal(rerun.code, 0, rerun.stdout + rerun.stderr);
    assert.match(rerun.stdout, /ok 0, failed 0, skipped 2/);
    for (const path of paths) assert.equal(fetchesOf(path), 1, `${path}: no origin request on the rerun`);
    const dry = await runCli([...args, '--dry-run'], { cwd: work, env: cliEnv(), timeoutMs: 120_000 });
    assert.equal(dry.code, 0, dry.stdout + dry.stderr);
    assert.match(dry.stdout, /dry run: 2 already stored, 0 to fetch or make/);
  });

  it('the built serve refuses to start when the gateway refuses our credentials or has no such bucket: one line, exit 2', async () => {
    const cases = [
      { name: 'wrong secret', bucket: gateway.bucket, secret: 'not-the-secret', expect: /storage_denied: .*SignatureDoesNotMatch.*access key / },
      { name: 'no such bucket', bucket: 'no-such-bucket', secret: gateway.credentials.secretAccessKey, expect: /storage\.bucket no-such-bucket .*storage_failed: .*NoSuchBucket/ },
    ];
    for (const { name, bucket, secret, expect } of cases) {
      for (const workers of ['1', '2']) {
        const what = `${name}, --workers ${workers}`;
        const run = await runCli(['serve', '--config', await cliConfig('refused', bucket), '--workers', workers], { cwd: work, env: cliEnv(secret), timeoutMs: 120_000 });
        assert.equal(run.code, 2, `${what}: ${run.stderr}`);
        const lines = run.stderr.trim().split('\n');
        assert.equal(lines.length, 1, `${what}: one line: ${run.stderr}`);
        assert.match(lines[0] ?? '', expect, what);
        assert.match(lines[0] ?? '', new RegExp(`storage\\.bucket ${bucket} at ${gateway.endpoint.replace(/[.]/g, '\\.')}`), what);
        assert.doesNotMatch(run.stderr, /\n\s+at /, `${what}: no stack trace`);
      }
    }
  });
});

/** `{fetches: images}` of a list of per-image fetch counts. */
function countsOf(counts: readonly number[]): Record<number, number> {
  const tally: Record<number, number> = {};
  for (const count of counts) tally[count] = (tally[count] ?? 0) + 1;
  return tally;
}
