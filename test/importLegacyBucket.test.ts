/**
 * `imageproxy import-legacy` with `storage.type: "s3"` (the built command) against a real
 * Ceph RADOS Gateway on loopback (test/rgwHarness.ts, one for the file): a small
 * imageproxy-py tree goes into the bucket as the service names and describes originals
 * (object name, bytes, Content-Type, metadata read back), then the built `serve` on that
 * bucket answers links to the imported images without one origin request; a rerun
 * imports nothing; the bucket's blocklist is honoured; `--move` removes the legacy files;
 * `--link` is refused; the gateway down, or stopped mid-run, is one line and exit 1.
 */
import assert from 'node:assert/strict';
import { lstat, readFile, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { storageKey } from '../server/contract/layout.js';
import { originalFactsOf } from '../server/storage/objectMetadata.js';
import { imageObjectName } from '../server/storage/objectNames.js';
import { S3ObjectStore } from '../server/storage/s3Store.js';
import { addEntries } from '../server/takedown/blocklist.js';
import { updateBucketBlocklist } from '../server/takedown/bucketBlocklist.js';
import { sha256Hex } from '../server/tree/originals.js';
import { finishCli, lines, runCli, startCli, startServeCli, type CliRun } from './cliProcess.js';
import { assertSameBytes, extUrlOf, makeTempRoot, removeTempRoot, request, shortBody, signedPath, until } from './helpers.js';
import { writeLegacyEntry } from './legacyFixture.js';
import { startOrigin, type Origin } from './origin.js';
import { cephMissing, gatewayCliEnv, gatewayStoreSettings, startGateway, withGatewayStopped, type RunningGateway } from './rgwHarness.js';

const SECRET = 'legacy-bucket-secret';
const CAP = 16 * 1024 * 1024;
const LEGACY_MTIME = new Date('2023-04-05T06:07:08.000Z');

interface LegacyImage {
  path: string;
  imageUrl: string;
  bytes: Buffer;
  contentType: string;
  /** What `.headers` claimed. */
  claimedType: string;
  width: number;
  height: number;
  relativePath: string;
}

/** `ok N, failed F, skipped S` and `imported (mode) N` / `would import N` of the summary line. */
function summaryOf(run: CliRun): { ok: number; failed: number; skipped: number; imported: number } {
  const summary = lines(run.stdout).find((line) => line.startsWith('import-legacy: '));
  assert.ok(summary !== undefined, `a summary line; stderr: ${run.stderr.slice(-500)}`);
  const number = (pattern: RegExp): number => Number(pattern.exec(summary)?.[1] ?? NaN);
  return { ok: number(/ok (\d+)/), failed: number(/failed (\d+)/), skipped: number(/skipped (\d+)/), imported: number(/(?:imported \(\w+\)|would import) (\d+)/) };
}

/** The report's lines as path → reason (header skipped). */
async function reportReasons(run: CliRun): Promise<Map<string, string>> {
  const path = /report: (\S+)/.exec(run.stdout)?.[1];
  assert.ok(path !== undefined, 'the summary names the report');
  const [header, ...rows] = lines(await readFile(path, 'utf8'));
  assert.equal(header, 'path\treason\tdetail');
  return new Map(rows.map((row) => row.split('\t') as [string, string]));
}

describe('import-legacy into an S3 bucket against a real Ceph RGW', { skip: cephMissing() ?? false }, () => {
  let gateway: RunningGateway;
  let work: string;
  let origin: Origin;
  const stores: S3ObjectStore[] = [];

  const storeAt = (prefix: string): S3ObjectStore => {
    const store = new S3ObjectStore(gatewayStoreSettings(gateway, prefix));
    stores.push(store);
    return store;
  };

  const envOf = (): Record<string, string> => gatewayCliEnv(gateway, work);

  /** A config on the gateway's bucket under `prefix`, able to serve (direct delivery, loopback origins allowed). */
  const configFor = async (name: string, prefix: string): Promise<string> => {
    const path = join(work, `${name}.json`);
    const config = {
      root: join(work, `${name}-root`),
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      secrets: [SECRET],
      delivery: 'direct',
      allowPrivateNetworks: true,
      storage: { type: 's3', endpoint: gateway.endpoint, bucket: gateway.bucket, prefix },
    };
    await writeFile(path, JSON.stringify(config), { mode: 0o600 });
    return path;
  };

  const importLegacy = (pyRoot: string, config: string, args: string[] = []): Promise<CliRun> =>
    runCli(['import-legacy', pyRoot, '--config', config, ...args], { cwd: work, env: envOf(), timeoutMs: 180_000 });

  const keyOf = (image: LegacyImage): string => storageKey(Buffer.from(image.imageUrl));
  const objectOf = (image: LegacyImage): string => imageObjectName('i', keyOf(image), keyOf(image));

  const objectNames = async (store: S3ObjectStore): Promise<string[]> => {
    const names: string[] = [];
    for await (const listed of store.list('')) names.push(listed.name);
    return names.sort();
  };

  /** A legacy tree of a JPEG and a PNG (its `.headers` claiming JPEG) whose URLs point at the counting origin. */
  const plantLegacyTree = async (pyRoot: string, tag: string): Promise<LegacyImage[]> => {
    const planted: LegacyImage[] = [];
    const kinds = [
      { ext: 'jpg', contentType: 'image/jpeg', claimedType: 'image/jpeg', width: 400, height: 300 },
      { ext: 'png', contentType: 'image/png', claimedType: 'image/jpeg', width: 120, height: 90 },
    ];
    for (const kind of kinds) {
      const canvas = sharp({ create: { width: kind.width, height: kind.height, channels: 3, background: '#446688', noise: { type: 'gaussian', mean: 128, sigma: 30 } } });
      const bytes = await (kind.ext === 'png' ? canvas.png() : canvas.jpeg({ quality: 85 })).toBuffer();
      const path = `/${tag}/legacy.${kind.ext}`;
      const imageUrl = origin.url(path).href;
      const relativePath = await writeLegacyEntry(pyRoot, { bucket: 'i', extUrl: extUrlOf(imageUrl), bytes, contentType: kind.claimedType });
      await utimes(join(pyRoot, relativePath), LEGACY_MTIME, LEGACY_MTIME);
      planted.push({ path, imageUrl, bytes, contentType: kind.contentType, claimedType: kind.claimedType, width: kind.width, height: kind.height, relativePath });
    }
    return planted;
  };

  before(async () => {
    [gateway, work] = await Promise.all([startGateway(), makeTempRoot('imageproxy-legacy-bucket-')]);
    // Counts every request; answers none with an image: a served link must come from the bucket.
    origin = await startOrigin((_incoming, response) => {
      response.writeHead(404, { 'Content-Type': 'text/plain' }).end('not here');
    });
  });

  after(async () => {
    for (const store of stores) store.close();
    await origin?.close();
    await gateway?.stop();
    if (work !== undefined) await removeTempRoot(work);
  });

  describe('a legacy tree into the bucket, then served from it', () => {
    let pyRoot: string;
    let planted: LegacyImage[];
    let config: string;
    let store: S3ObjectStore;
    let orphan: string;
    const PREFIX = 'site/';

    before(async () => {
      pyRoot = join(work, 'py');
      planted = await plantLegacyTree(pyRoot, 'site');
      // An orphan `.headers`: reported, as in the tree import.
      const lost = origin.url('/site/lost.jpg').href;
      const lostPath = await writeLegacyEntry(pyRoot, { bucket: 'i', extUrl: extUrlOf(lost), bytes: Buffer.alloc(0) });
      orphan = `${lostPath}.headers`;
      await unlink(join(pyRoot, lostPath));
      config = await configFor('site', PREFIX);
      store = storeAt(PREFIX);
    });

    it('--dry-run judges every entry and writes nothing into the bucket', async () => {
      const run = await importLegacy(pyRoot, config, ['--dry-run']);
      assert.equal(run.code, 0, run.stderr);
      assert.equal(summaryOf(run).imported, planted.length);
      assert.match(run.stderr, /dry run, copy into s3:\/\/[^ ]+\/site\//);
      assert.deepEqual(await objectNames(store), []);
    });

    it('stores each original under its object name with its bytes, type and facts; nothing else', async () => {
      const run = await importLegacy(pyRoot, config);
      assert.equal(run.code, 0, `${run.stdout}\n${run.stderr}`);
      assert.deepEqual(summaryOf(run), { ok: planted.length, failed: 1, skipped: 0, imported: planted.length });
      assert.deepEqual([...(await reportReasons(run)).entries()], [[orphan, 'orphan_headers']]);
      for (const image of planted) {
        const got = await store.get(objectOf(image), { maxBytes: CAP });
        assert.ok(got !== null, `${image.path}: its object`);
        assert.equal(sha256Hex(got.bytes), sha256Hex(image.bytes), `${image.path}: the legacy bytes`);
        assert.equal(got.info.contentType, image.contentType, `${image.path}: the bytes' type, whatever .headers said`);
        assert.deepEqual(originalFactsOf(got.info.metadata, got.info), {
          sourceUrl: image.imageUrl,
          contentType: image.contentType,
          originContentType: image.claimedType,
          bytes: image.bytes.length,
          width: image.width,
          height: image.height,
          frames: 1,
          sha256: sha256Hex(image.bytes),
          fetchedAt: LEGACY_MTIME.toISOString(),
        }, `${image.path}: the sidecar's facts ride on the object`);
      }
      assert.deepEqual(await objectNames(store), planted.map(objectOf).sort(), 'one object per image: no sidecar, no thumbnail');
      // --copy leaves the old tree as it was.
      for (const image of planted) assertSameBytes(await readFile(join(pyRoot, image.relativePath)), image.bytes, image.relativePath);
    });

    it('a rerun imports nothing', async () => {
      const before = await Promise.all(planted.map(async (image) => (await store.head(objectOf(image)))?.etag));
      const run = await importLegacy(pyRoot, config);
      assert.equal(run.code, 0, run.stderr);
      assert.deepEqual(summaryOf(run), { ok: 0, failed: 1, skipped: planted.length, imported: 0 });
      assert.deepEqual(await Promise.all(planted.map(async (image) => (await store.head(objectOf(image)))?.etag)), before, 'the objects are untouched');
    });

    it('the built serve on the bucket answers the imported images without the origin', async () => {
      const serve = await startServeCli(['--config', config], { cwd: work, env: envOf() });
      const { listening } = serve;
      let exitCode: number | null;
      try {
        for (const image of planted) {
          const answer = await request(listening.address, signedPath({ secret: SECRET, imageUrl: image.imageUrl, atMs: Date.now() }));
          assert.equal(answer.status, 200, `${image.path}: ${answer.status} ${shortBody(answer.body, answer.headers.get('content-type'))}`);
          assert.equal(answer.headers.get('content-type'), image.contentType, image.path);
          assertSameBytes(answer.body, image.bytes, `${image.path}: the imported bytes`);
        }
        // A thumbnail is made from the imported original, as a tree import's would be.
        const [jpeg] = planted;
        assert.ok(jpeg !== undefined);
        const thumbnail = await request(listening.address, signedPath({ secret: SECRET, imageUrl: jpeg.imageUrl, atMs: Date.now(), size: '250x250' }));
        assert.equal(thumbnail.status, 200, `thumbnail: ${thumbnail.status} ${shortBody(thumbnail.body, thumbnail.headers.get('content-type'))}`);
        const pixels = await sharp(thumbnail.body).metadata();
        assert.deepEqual([pixels.width, pixels.height], [250, 188]);
        assert.equal(origin.requests.length, 0, 'no origin request');
      } finally {
        exitCode = await serve.stop();
      }
      assert.equal(exitCode, 0, serve.stderr());
    });
  });

  it("an image the bucket's blocklist names is not imported (blocked)", async () => {
    const pyRoot = join(work, 'py-blocked');
    const [blocked, allowed] = await plantLegacyTree(pyRoot, 'blocked');
    assert.ok(blocked !== undefined && allowed !== undefined);
    const store = storeAt('blocked/');
    const entry = { kind: 'key' as const, value: keyOf(blocked), at: '2026-01-01T00:00:00.000Z', by: 'test' };
    await updateBucketBlocklist(store, (list) => ({ list: addEntries(list, [entry]).list, result: undefined }));
    const run = await importLegacy(pyRoot, await configFor('blocked', 'blocked/'));
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual([...(await reportReasons(run)).entries()].map(([path, reason]) => [path, reason]), [[blocked.relativePath, 'blocked']]);
    assert.equal(await store.head(objectOf(blocked)), null);
    assert.ok((await store.head(objectOf(allowed))) !== null);
  });

  it('--move stores the images and removes the legacy files and their .headers; --link is refused', async () => {
    const pyRoot = join(work, 'py-move');
    const planted = await plantLegacyTree(pyRoot, 'move');
    const config = await configFor('move', 'move/');
    const link = await importLegacy(pyRoot, config, ['--link']);
    assert.equal(link.code, 2, link.stderr);
    assert.match(link.stderr, /--link: a bucket has no hard links/);
    const run = await importLegacy(pyRoot, config, ['--move']);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(summaryOf(run).imported, planted.length);
    const store = storeAt('move/');
    for (const image of planted) {
      const got = await store.get(objectOf(image), { maxBytes: CAP });
      assert.equal(sha256Hex(got?.bytes ?? Buffer.alloc(0)), sha256Hex(image.bytes), image.path);
      await assert.rejects(lstat(join(pyRoot, image.relativePath)), { code: 'ENOENT' }, `${image.relativePath} moved`);
      await assert.rejects(lstat(join(pyRoot, `${image.relativePath}.headers`)), { code: 'ENOENT' }, `${image.relativePath}.headers removed`);
    }
  });

  it('the gateway stopped mid-run: the run stops with one line and exit 1; a rerun imports the rest', async () => {
    const pyRoot = join(work, 'py-stopped');
    const total = 150;
    for (let index = 0; index < total; index += 1) {
      const bytes = await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: index, g: 80, b: 200 } } }).png().toBuffer();
      await writeLegacyEntry(pyRoot, { bucket: 'i', extUrl: extUrlOf(origin.url(`/stopped/${index}.png`).href), bytes, contentType: 'image/png' });
    }
    const config = await configFor('stopped', 'stopped/');
    const store = storeAt('stopped/');
    const child = startCli(['import-legacy', pyRoot, '--config', config], { cwd: work, env: envOf() });
    const finished = finishCli(child, 180_000);
    await until(async () => (await objectNames(store)).length >= 10, { message: 'some images imported', timeoutMs: 120_000, intervalMs: 50 });
    const first = await withGatewayStopped(gateway, () => finished);
    assert.equal(first.code, 1, first.stderr);
    const errorLines = lines(first.stderr).filter((line) => line.startsWith('import-legacy: storage'));
    assert.equal(errorLines.length, 1, `one line for the gateway: ${first.stderr}`);
    assert.match(errorLines[0] ?? '', /storage unavailable.*127\.0\.0\.1/);
    const stoppedAfter = summaryOf(first);
    assert.ok(stoppedAfter.ok + stoppedAfter.failed < total, `stopped before the end (${stoppedAfter.ok} imported, ${stoppedAfter.failed} failed)`);
    const rerun = await importLegacy(pyRoot, config);
    assert.equal(rerun.code, 0, rerun.stderr);
    const done = summaryOf(rerun);
    assert.equal(done.ok + done.skipped, total);
    assert.equal((await objectNames(store)).length, total);
  });

  it('credentials refused, or no such bucket: one line naming it, exit 2', async () => {
    const pyRoot = join(work, 'py-refused');
    await plantLegacyTree(pyRoot, 'refused');
    const wrongKey = await runCli(['import-legacy', pyRoot, '--config', await configFor('refused', 'refused/')], {
      cwd: work,
      env: gatewayCliEnv(gateway, work, { AWS_SECRET_ACCESS_KEY: 'not-the-secret' }),
      timeoutMs: 180_000,
    });
    const noBucketConfig = join(work, 'no-bucket.json');
    await writeFile(noBucketConfig, JSON.stringify({ root: join(work, 'no-bucket-root'), storage: { type: 's3', endpoint: gateway.endpoint, bucket: 'no-such-bucket' } }));
    const noBucket = await importLegacy(pyRoot, noBucketConfig);
    for (const [run, expected] of [
      [wrongKey, new RegExp(`^import-legacy: storage refused our credentials: .*access key ${gateway.credentials.accessKeyId}`)],
      [noBucket, /^import-legacy: storage failed: .*no-such-bucket.*NoSuchBucket/],
    ] as const) {
      assert.equal(run.code, 2, run.stderr);
      const errorLines = lines(run.stderr).filter((line) => line.startsWith('import-legacy:') || line.startsWith('imageproxy:'));
      assert.equal(errorLines.length, 1, `one line: ${run.stderr}`);
      assert.match(errorLines[0] ?? '', expected);
      assert.equal(run.stdout, '');
    }
    assert.deepEqual(await objectNames(storeAt('refused/')), []);
  });

  it('the gateway down: one line, exit 1, nothing done', async () => {
    const pyRoot = join(work, 'py-down');
    await plantLegacyTree(pyRoot, 'down');
    const config = await configFor('down', 'down/');
    const run = await withGatewayStopped(gateway, () => importLegacy(pyRoot, config));
    assert.equal(run.code, 1, run.stderr);
    // The command's own lines (node may add a warning of the AWS SDK's about node's version).
    const errorLines = lines(run.stderr).filter((line) => line.startsWith('import-legacy:') || line.startsWith('imageproxy:'));
    assert.equal(errorLines.length, 1, `one line: ${run.stderr}`);
    assert.match(errorLines[0] ?? '', /^import-legacy: storage unavailable.*127\.0\.0\.1/);
    assert.doesNotMatch(run.stderr, /\n\s+at /, 'no stack trace');
    assert.equal(run.stdout, '');
    assert.deepEqual(await objectNames(storeAt('down/')), []);
  });
});
