/**
 * The order of a thumbnail miss inside the image service, with the real store, fetcher
 * and sharp engine, each wrapped only to record when it is called: the resize, the
 * longest step, starts before the original's writes, and nothing becomes visible out of
 * order (sidecar, then original, then thumbnail), the sidecar written once with the
 * thumbnail's record in it. A takedown that lands during the
 * resize keeps the thumbnail from being shown.
 */
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import sharp from 'sharp';
import { buildConfig } from '../server/config/config.js';
import { createSharpEngine } from '../server/images/sharpEngine.js';
import type { ResizeEngine } from '../server/images/engine.js';
import { createFetcher } from '../server/fetch/fetcher.js';
import { createFetchingImageService } from '../server/service/fetchingImages.js';
import { addEntries, emptyBlocklist, type Blocklist } from '../server/takedown/blocklist.js';
import type { ImageRequest } from '../server/service/imageService.js';
import { keyDirectory, storageKey } from '../server/contract/layout.js';
import { decodeImageUrl, imageUrlBytes, linkRulesOf, parseLink } from '../server/contract/link.js';
import { createLogger } from '../server/observe/log.js';
import { variantRecordOf } from '../server/tree/originals.js';
import { ImageStore, type StagedFile } from '../server/tree/store.js';
import { makeTempRoot, removeTempRoot, signedPath, until } from './helpers.js';
import { startOrigin, type Origin } from './origin.js';

const SECRET = 'miss-order-secret';

/** An ImageStore that records each file it stages and commits, in order. */
class RecordingStore extends ImageStore {
  readonly events: string[] = [];

  private recorded(name: string, staged: StagedFile): StagedFile {
    this.events.push(`stage ${name}`);
    return {
      commit: async () => {
        const image = await staged.commit();
        this.events.push(`commit ${name}`);
        return image;
      },
      // A rename without the directory's fsync: visible from here on as a commit is.
      place: async () => {
        const image = await staged.place();
        this.events.push(`commit ${name}`);
        return image;
      },
      discard: () => staged.discard(),
    };
  }

  override async stageImage(...args: Parameters<ImageStore['stageImage']>): Promise<StagedFile> {
    const name = args[2] ?? 'original';
    this.events.push(`begin ${name}`);
    return this.recorded(name, await super.stageImage(...args));
  }

  override async stageMetadata(...args: Parameters<ImageStore['stageMetadata']>): Promise<StagedFile> {
    this.events.push('begin sidecar');
    return this.recorded('sidecar', await super.stageMetadata(...args));
  }
}

let origin: Origin;
let root: string;
let jpeg: Buffer;

before(async () => {
  jpeg = await sharp({ create: { width: 1200, height: 800, channels: 3, background: '#446688', noise: { type: 'gaussian', mean: 128, sigma: 30 } } })
    .jpeg()
    .toBuffer();
  origin = await startOrigin((_req, res) => res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg));
  root = await makeTempRoot('imageproxy-miss-order-');
});

after(async () => {
  await origin.close();
  await removeTempRoot(root);
});

test('a thumbnail miss: resize called before the original is written; sidecar, original, thumbnail made visible in that order', async () => {
  const config = buildConfig({ flags: { root, secrets: [SECRET], allowPrivateNetworks: true, logLevel: 'silent' } });
  const store = new RecordingStore(root);
  const sharpEngine = createSharpEngine({ maxPixels: config.limits.maxPixels, timeoutSeconds: 30, concurrency: 1, quality: config.quality, mozjpeg: config.mozjpeg });
  const engine: ResizeEngine = {
    name: sharpEngine.name,
    convertsFrom: sharpEngine.convertsFrom,
    resize: (request) => {
      store.events.push('resize');
      return sharpEngine.resize(request);
    },
    convert: (request) => sharpEngine.convert(request),
    close: () => sharpEngine.close(),
  };
  const fetcher = createFetcher({ limits: config.limits, allowPrivateNetworks: true, userAgent: config.userAgent });
  const service = createFetchingImageService({ config, store, fetcher, engine, logger: createLogger('silent') });
  try {
    const imageUrl = origin.url('/photo.jpg').href;
    const link = parseLink(signedPath({ secret: SECRET, imageUrl, atMs: Date.now(), size: '250x250' }), linkRulesOf(config));
    const request: ImageRequest = { link, imageUrl: decodeImageUrl(link.extUrl), key: storageKey(imageUrlBytes(link.extUrl)) };

    const answer = await service.get(request);

    assert.equal(answer.kind, 'stored');
    assert.equal(answer.kind === 'stored' ? answer.cache : null, 'miss');
    const content = answer.kind === 'stored' ? answer.content : undefined;
    assert.ok(content !== undefined, 'a miss is answered from the bytes it wrote');
    const size = await sharp(content).metadata();
    assert.deepEqual([size.format, size.width, size.height], ['jpeg', 250, 167]);
    const { events } = store;
    assert.ok(events.indexOf('resize') < events.indexOf('begin original'), `resize first: ${events.join(', ')}`);
    assert.ok(events.indexOf('resize') < events.indexOf('begin sidecar'), `resize first: ${events.join(', ')}`);
    const commits = events.filter((event) => event.startsWith('commit '));
    assert.deepEqual(commits, ['commit sidecar', 'commit original', 'commit 250x250']);
    assert.equal(events.filter((event) => event === 'begin sidecar').length, 1, `one sidecar write, the thumbnail's record in it: ${events.join(', ')}`);
    const key = request.key;
    const files = (await readdir(join(root, keyDirectory('i', key)))).sort();
    assert.deepEqual(files, [`${key}.250x250.jpg`, `${key}.jpg`, `${key}.json`]);
    const sidecar = JSON.parse(await readFile(join(root, keyDirectory('i', key), `${key}.json`), 'utf8')) as { variants?: unknown };
    assert.deepEqual(sidecar.variants, { '250x250': variantRecordOf(content, 'image/jpeg') });
    assert.equal(origin.requests.length, 1);
  } finally {
    fetcher.close();
    await service.close();
  }
});

test('a takedown of the key while its thumbnail is resized: 451 blocked, the original kept, no thumbnail shown', async () => {
  const config = buildConfig({ flags: { root, secrets: [SECRET], allowPrivateNetworks: true, logLevel: 'silent' } });
  const store = new ImageStore(root);
  const sharpEngine = createSharpEngine({ maxPixels: config.limits.maxPixels, timeoutSeconds: 30, concurrency: 1, quality: config.quality, mozjpeg: config.mozjpeg });
  const imageUrl = origin.url('/taken-down-meanwhile.jpg').href;
  const link = parseLink(signedPath({ secret: SECRET, imageUrl, atMs: Date.now(), size: '250x250' }), linkRulesOf(config));
  const request: ImageRequest = { link, imageUrl: decodeImageUrl(link.extUrl), key: storageKey(imageUrlBytes(link.extUrl)) };
  // The watcher hands out one object per load, as the file's watcher does; the block is
  // a new load, made while the engine has the original's bytes.
  let list: Blocklist = emptyBlocklist();
  const engine: ResizeEngine = {
    name: sharpEngine.name,
    convertsFrom: sharpEngine.convertsFrom,
    resize: (resizeRequest) => {
      list = addEntries(list, [{ kind: 'key', value: request.key, at: new Date().toISOString(), by: 'test' }]).list;
      return sharpEngine.resize(resizeRequest);
    },
    convert: (convertRequest) => sharpEngine.convert(convertRequest),
    close: () => sharpEngine.close(),
  };
  const fetcher = createFetcher({ limits: config.limits, allowPrivateNetworks: true, userAgent: config.userAgent });
  const service = createFetchingImageService({ config, store, fetcher, engine, logger: createLogger('silent'), blocklist: { current: async () => list } });
  try {
    await assert.rejects(service.get(request), { code: 'blocked' });
    const key = request.key;
    const filesOfKey = async (): Promise<string[]> =>
      (await readdir(join(root, keyDirectory('i', key)))).filter((name) => name.startsWith(key)).sort();
    // The original's flight goes on beside the refused thumbnail: its files are waited for.
    const files = await until(filesOfKey, {
      message: "the original's files",
      done: (names) => names.includes(`${key}.jpg`),
    });
    assert.deepEqual(files, [`${key}.jpg`, `${key}.json`]);
  } finally {
    fetcher.close();
    await service.close();
  }
});
