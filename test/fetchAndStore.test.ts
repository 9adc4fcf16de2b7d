/**
 * The whole server against real origins on 127.0.0.1 that misbehave on purpose: one
 * fetch per new image however many ask, nothing partial left in the tree, backoff,
 * /proxy pass-through, the address policy, and the process still serving afterwards.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import { buildConfig, type ConfigLayer } from '../server/config/config.js';
import { startServer, type RunningServer } from '../server/http/server.js';
import { keyDirectory, storageKey } from '../server/contract/layout.js';
import { LOCK_STALE_MS } from '../server/fetch/singleFlight.js';
import { createLogger } from '../server/observe/log.js';
import { ERROR_CACHE_CONTROL, SECURITY_HEADERS } from '../server/http/responseHeaders.js';
import { makeTempRoot, removeTempRoot, request, scrapeMetrics, shortBody, signedPath, until } from './helpers.js';
import { startOrigin, type Origin } from './origin.js';

const SECRET = 'fetch-test-secret';

function linkFor(imageUrl: string, options: { size?: string; proxy?: boolean } = {}, atMs = Date.now()): string {
  return signedPath({ secret: SECRET, imageUrl, atMs, ...options });
}

async function startApp(root: string, overrides: ConfigLayer = {}, now?: () => number): Promise<RunningServer> {
  const config = buildConfig({
    flags: {
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      root,
      secrets: [SECRET],
      allowPrivateNetworks: true,
      logLevel: 'silent',
      ...overrides,
    },
  });
  return startServer({ config, secrets: config.secrets, logger: createLogger('silent'), ...(now ? { now } : {}) });
}

type OriginHandler = Parameters<typeof startOrigin>[0];

/** A loopback origin, a fresh root and the whole server in front of them, torn down after `body`. */
async function withOriginAndApp(
  handler: OriginHandler,
  options: { config?: ConfigLayer; now?: () => number },
  body: (context: { origin: Origin; root: string; app: RunningServer }) => Promise<void>,
): Promise<void> {
  const origin = await startOrigin(handler);
  const root = await makeTempRoot('imageproxy-fetch-');
  const app = await startApp(root, options.config, options.now);
  try {
    await body({ origin, root, app });
  } finally {
    await app.close();
    await origin.close();
    await removeTempRoot(root);
  }
}

/** Every file below the key's directory, sorted: what a failed fetch must not leave behind. */
async function filesOfKey(root: string, imageUrl: string): Promise<string[]> {
  const directory = join(root, 'i', ...keyDirectory('i', storageKey(Buffer.from(imageUrl))).split('/').slice(1));
  try {
    return (await readdir(directory)).sort();
  } catch {
    return [];
  }
}

function pngDeclaring(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer): Buffer => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const typeAndData = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(typeAndData));
    return Buffer.concat([length, typeAndData, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', Buffer.from([0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

let jpeg: Buffer;
let png: Buffer;

before(async () => {
  jpeg = await sharp({ create: { width: 640, height: 480, channels: 3, background: '#3366cc' } }).jpeg().toBuffer();
  png = await sharp({ create: { width: 300, height: 200, channels: 4, background: { r: 0, g: 128, b: 0, alpha: 0.5 } } })
    .png()
    .toBuffer();
});

/** A 3000×2000 noisy JPEG: slow enough to resize that thumbnails queue behind each other. */
function noisyPhoto(): Promise<Buffer> {
  return sharp({ create: { width: 3000, height: 2000, channels: 3, background: '#808080', noise: { type: 'gaussian', mean: 128, sigma: 40 } } })
    .jpeg()
    .toBuffer();
}

describe('fetch once, store, serve', () => {
  test('100 concurrent requests for one new image: one origin fetch, same bytes for all', async () => {
    let answerOrigin = (): void => undefined;
    const originMayAnswer = new Promise<void>((resolve) => {
      answerOrigin = resolve;
    });
    await withOriginAndApp((_req, res) => {
      // The origin holds its answer until all 100 are in the server: every one asks while the fetch runs.
      void originMayAnswer.then(() => res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg));
    }, {}, async ({ origin, root, app }) => {
      const imageUrl = origin.url('/burst.jpg').href;
      const burst = Promise.all(
        Array.from({ length: 100 }, async () => {
          const response = await fetch(app.url + linkFor(imageUrl));
          return { status: response.status, bytes: Buffer.from(await response.arrayBuffer()) };
        }),
      );
      await until(async () => (await scrapeMetrics(app.adminUrl ?? '')).get('imageproxy_queue_depth{queue="requests"}'), {
        message: '100 link requests in progress at once',
        done: (inProgress) => inProgress === 100,
      });
      assert.equal(origin.requests.length, 1, 'one fetch while 100 requests are in progress');
      answerOrigin();
      const answers = await burst;
      assert.equal(origin.requests.length, 1);
      for (const answer of answers) {
        assert.equal(answer.status, 200);
        assert.ok(answer.bytes.equals(jpeg));
      }
      const key = storageKey(Buffer.from(imageUrl));
      assert.deepEqual(await filesOfKey(root, imageUrl), [`${key}.jpg`, `${key}.json`]);
      // Served from the tree from now on.
      const again = await fetch(app.url + linkFor(imageUrl));
      assert.equal(again.status, 200);
      assert.equal(origin.requests.length, 1);
      // What an admin's Prometheus sees of it.
      const samples = await scrapeMetrics(app.adminUrl ?? '');
      assert.equal(samples.get('imageproxy_origin_fetches_total{result="ok"}'), 1);
      assert.equal(samples.get('imageproxy_origin_fetched_bytes_total'), jpeg.length);
      // Each of the 100 found nothing stored and waited for the one fetch (miss), or, on a slow
      // machine, reached its lookup only after the write (hit); the request after them found the file.
      const misses = samples.get('imageproxy_responses_total{outcome="miss",bucket="i"}') ?? 0;
      const hits = samples.get('imageproxy_responses_total{outcome="hit",bucket="i"}') ?? 0;
      assert.ok(misses >= 1, `${misses} misses`);
      assert.equal(misses + hits, 101);
    });
  });

  test('a miss is answered from the bytes just written: the headers and bytes of the hit after it; HEAD, Range and conditions too', async () => {
    await withOriginAndApp((_req, res) => res.writeHead(200, { 'Content-Type': 'image/png' }).end(png), {}, async ({ origin, root, app }) => {
      const compared = ['content-type', 'content-length', 'etag', 'last-modified', 'cache-control', 'accept-ranges', 'x-content-type-options'];
      const headersOf = (response: Response): Record<string, string | null> =>
        Object.fromEntries(compared.map((name) => [name, response.headers.get(name)]));
      for (const size of ['full', '250x250']) {
        const imageUrl = origin.url(`/same-${size}.png`).href;
        const miss = await fetch(app.url + linkFor(imageUrl, { size }));
        const missBytes = Buffer.from(await miss.arrayBuffer());
        const hit = await fetch(app.url + linkFor(imageUrl, { size }));
        const hitBytes = Buffer.from(await hit.arrayBuffer());
        assert.deepEqual([miss.status, hit.status], [200, 200], size);
        assert.deepEqual(headersOf(miss), headersOf(hit), size);
        assert.ok(missBytes.equals(hitBytes), size);
        const key = storageKey(Buffer.from(imageUrl));
        const name = size === 'full' ? `${key}.png` : `${key}.${size}.png`;
        const onDisk = await readFile(join(root, 'i', key[0] as string, key[1] as string, name));
        assert.ok(missBytes.equals(onDisk), size);
        // The ETag the miss gave is the file's: a revalidation of it is a 304.
        const revalidated = await request(app.url, linkFor(imageUrl, { size }), { headers: { 'If-None-Match': miss.headers.get('etag') as string } });
        assert.equal(revalidated.status, 304, size);
      }
      // HEAD of a miss: the length, no body.
      const headUrl = origin.url('/head.png').href;
      const head = await fetch(app.url + linkFor(headUrl, { size: '250x250' }), { method: 'HEAD' });
      const headKey = storageKey(Buffer.from(headUrl));
      const headFile = await readFile(join(root, 'i', headKey[0] as string, headKey[1] as string, `${headKey}.250x250.png`));
      assert.equal(head.status, 200);
      assert.equal(head.headers.get('content-length'), String(headFile.length));
      assert.equal((await head.arrayBuffer()).byteLength, 0);
      // A Range on a miss is answered from the file, as on a hit.
      const rangeUrl = origin.url('/range.png').href;
      const ranged = await fetch(app.url + linkFor(rangeUrl, { size: '250x250' }), { headers: { Range: 'bytes=0-9' } });
      const rangeKey = storageKey(Buffer.from(rangeUrl));
      const rangeFile = await readFile(join(root, 'i', rangeKey[0] as string, rangeKey[1] as string, `${rangeKey}.250x250.png`));
      assert.equal(ranged.status, 206);
      assert.equal(ranged.headers.get('content-range'), `bytes 0-9/${rangeFile.length}`);
      assert.ok(Buffer.from(await ranged.arrayBuffer()).equals(rangeFile.subarray(0, 10)));
      assert.equal(origin.requests.length, 4);
    });
  });

  test('variants are made once from the stored original and read back at the fitted size', async () => {
    await withOriginAndApp((_req, res) => res.writeHead(200, { 'Content-Type': 'image/png' }).end(png), {}, async ({ origin, root, app }) => {
      const imageUrl = origin.url('/alpha.png').href;
      const cases = [
        { size: '150x', width: 225, height: 150 },
        { size: 'x200', width: 200, height: 133 },
        { size: '250x250', width: 250, height: 167 },
        { size: '500x500', width: 300, height: 200 }, // never enlarged
        { size: '150x999', width: 225, height: 150 }, // 999 is not allowed: ignored
      ];
      for (const expected of cases) {
        const response = await fetch(app.url + linkFor(imageUrl, { size: expected.size }));
        assert.equal(response.status, 200, expected.size);
        assert.equal(response.headers.get('content-type'), 'image/png');
        const metadata = await sharp(Buffer.from(await response.arrayBuffer())).metadata();
        assert.deepEqual([metadata.width, metadata.height, metadata.format, metadata.hasAlpha], [expected.width, expected.height, 'png', true], expected.size);
      }
      assert.equal(origin.requests.length, 1);
      const key = storageKey(Buffer.from(imageUrl));
      assert.deepEqual(await filesOfKey(root, imageUrl), [
        `${key}.150x.png`,
        `${key}.250x250.png`,
        `${key}.500x500.png`,
        `${key}.json`,
        `${key}.png`,
        `${key}.x200.png`,
      ]);
    });
  });

  test('past limits.maxQueuedResizes waiting thumbnails a new one answers 503 busy at once, and is made on the next try', async () => {
    const big = await noisyPhoto();
    await withOriginAndApp((_req, res) => res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(big), { config: { limits: { maxConcurrentResizes: 1, maxQueuedResizes: 1, maxBytes: 20_000_000 } } }, async ({ origin, root, app }) => {
      const imageUrl = origin.url('/big.jpg').href;
      assert.equal((await fetch(app.url + linkFor(imageUrl))).status, 200); // the original, stored
      const sizes = ['150x', 'x200', '250x250', '500x500'];
      const answers = await Promise.all(sizes.map((size) => fetch(app.url + linkFor(imageUrl, { size }))));
      const busy = answers.filter((answer) => answer.status === 503);
      assert.ok(busy.length >= 1, `statuses ${answers.map((answer) => answer.status).join(',')}`);
      assert.ok(answers.some((answer) => answer.status === 200));
      for (const answer of busy) {
        assert.equal(answer.headers.get('x-imageproxy-error'), 'busy');
        assert.equal(answer.headers.get('retry-after'), '2');
      }
      // busy is not the origin's fault: no backoff, the next try makes the thumbnail.
      for (const size of sizes) assert.equal((await fetch(app.url + linkFor(imageUrl, { size }))).status, 200, size);
      const key = storageKey(Buffer.from(imageUrl));
      assert.equal((await filesOfKey(root, imageUrl)).filter((name) => name.endsWith('.fail')).length, 0);
      assert.equal((await filesOfKey(root, imageUrl)).filter((name) => name.startsWith(`${key}.`) && name.endsWith('.jpg')).length, 5);
      assert.equal(origin.requests.length, 1);
    });
  });

  /**
   * One image's thumbnail asked while sixteen resizes of other images are ahead of it on
   * the one slot; its stored original is removed (as `purge` removes it) while it waits.
   */
  async function thumbnailWaitingWhileOriginalRemoved(
    maxWaitingResizeBytes: number,
  ): Promise<{ answer: Response; files: string[]; key: string; originRequests: number; aheadStatuses: number[] }> {
    const big = await noisyPhoto();
    let result: Awaited<ReturnType<typeof thumbnailWaitingWhileOriginalRemoved>> | undefined;
    const limits = { maxConcurrentResizes: 1, maxQueuedResizes: 100, maxBytes: 20_000_000, maxWaitingResizeBytes };
    await withOriginAndApp((_req, res) => res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(big), { config: { limits } }, async ({ origin, root, app }) => {
      const waiting = origin.url('/waiting.jpg').href;
      assert.equal((await fetch(app.url + linkFor(waiting))).status, 200); // the original, stored
      const ahead = ['/a.jpg', '/b.jpg', '/c.jpg', '/d.jpg'].flatMap((path) =>
        ['150x', 'x200', '250x250', '500x500'].map((size) => fetch(app.url + linkFor(origin.url(path).href, { size }))),
      );
      const scrape = (): Promise<Map<string, number>> => scrapeMetrics(app.adminUrl ?? '');
      // Each of the sixteen counts once while queued (depth) or once answered (a miss; the
      // first miss is the original's), never twice: past 16, the thumbnail is in the queue.
      const queuedOrAnswered = (samples: Map<string, number>): number =>
        (samples.get('imageproxy_queue_depth{queue="resize"}') ?? 0) + (samples.get('imageproxy_responses_total{outcome="miss",bucket="i"}') ?? 0) - 1;
      // The sixteen with their originals fetched: they queue for the slot ahead of it.
      await until(scrape, {
        message: 'sixteen thumbnails queued, their four originals fetched',
        done: (samples) => queuedOrAnswered(samples) === 16 && samples.get('imageproxy_origin_fetches_total{result="ok"}') === 5,
      });
      const thumbnail = fetch(app.url + linkFor(waiting, { size: '150x' }));
      const resized = (samples: Map<string, number>): number => samples.get('imageproxy_resizes_total{engine="sharp",format="source",result="ok"}') ?? 0;
      const entered = await until(scrape, { message: 'the thumbnail in the resize queue', done: (samples) => queuedOrAnswered(samples) >= 17 });
      // A whole resize of the photo later it has read its stored original and waits for the
      // slot, with at least a dozen resizes still ahead of it: now the original goes.
      await until(scrape, { message: 'one more resize done', done: (samples) => resized(samples) > resized(entered) });
      const key = storageKey(Buffer.from(waiting));
      await rm(join(root, 'i', key[0] as string, key[1] as string, `${key}.jpg`));
      const answer = await thumbnail;
      await answer.clone().arrayBuffer();
      const aheadStatuses = (await Promise.all(ahead)).map((other) => other.status);
      result = {
        answer,
        files: await filesOfKey(root, waiting),
        key,
        originRequests: origin.requests.filter((incoming) => incoming.url === '/waiting.jpg').length,
        aheadStatuses,
      };
    });
    assert.ok(result !== undefined);
    return result;
  }

  test('past limits.maxWaitingResizeBytes a thumbnail waiting for a resize slot holds no bytes: it reads the stored original when its turn comes (removed meanwhile: 404 not_stored)', async () => {
    const { answer, files, key, originRequests, aheadStatuses } = await thumbnailWaitingWhileOriginalRemoved(0);
    assert.equal(answer.status, 404, `${answer.status} ${answer.headers.get('x-imageproxy-error')}`);
    assert.equal(answer.headers.get('x-imageproxy-error'), 'not_stored');
    assert.deepEqual(aheadStatuses, Array(16).fill(200));
    assert.deepEqual(files, [`${key}.json`], 'no thumbnail made of a removed original');
    assert.equal(originRequests, 1);
  });

  test('within limits.maxWaitingResizeBytes a thumbnail waiting for a resize slot keeps its bytes: made although its original was removed meanwhile, nothing fetched again', async () => {
    // Far above what the queue holds: every waiting thumbnail keeps its bytes.
    const { answer, files, key, originRequests, aheadStatuses } = await thumbnailWaitingWhileOriginalRemoved(1_000_000_000);
    assert.equal(answer.status, 200, `${answer.status} ${answer.headers.get('x-imageproxy-error')}`);
    const size = await sharp(Buffer.from(await answer.arrayBuffer())).metadata();
    assert.deepEqual([size.format, size.width, size.height], ['jpeg', 225, 150]); // 150x: 150 high
    assert.deepEqual(aheadStatuses, Array(16).fill(200));
    assert.deepEqual(files, [`${key}.150x.jpg`, `${key}.json`]);
    assert.equal(originRequests, 1);
  });

  test('an image that passes sniffing but does not decode: original kept, thumbnail 502 bad_image, remembered as such', async () => {
    // A real JPEG header (dimensions readable) followed by garbage instead of scan data.
    const broken = Buffer.concat([jpeg.subarray(0, 600), Buffer.alloc(4000, 0x5a)]);
    await withOriginAndApp((_req, res) => res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(broken), {}, async ({ origin, root, app }) => {
      const imageUrl = origin.url('/broken.jpg').href;
      const thumb = await fetch(app.url + linkFor(imageUrl, { size: '150x' }));
      assert.equal(thumb.status, 502);
      assert.equal(thumb.headers.get('x-imageproxy-error'), 'bad_image');
      const again = await fetch(app.url + linkFor(imageUrl, { size: '150x' }));
      assert.equal(again.status, 502);
      assert.equal(again.headers.get('x-imageproxy-error'), 'bad_image');
      assert.notEqual(again.headers.get('x-imageproxy-remembered'), null);
      // The documented rule: the original stays and full-size links serve what the origin sent.
      const full = await fetch(app.url + linkFor(imageUrl));
      assert.equal(full.status, 200);
      assert.ok(Buffer.from(await full.arrayBuffer()).equals(broken));
      const key = storageKey(Buffer.from(imageUrl));
      assert.deepEqual(await filesOfKey(root, imageUrl), [`${key}.150x.fail`, `${key}.jpg`, `${key}.json`]);
      assert.equal(origin.requests.length, 1);
    });
  });

  test("the origin sees our User-Agent and nothing of the visitor's", async () => {
    let seen: IncomingMessage['headers'] = {};
    await withOriginAndApp((req, res) => {
      seen = req.headers;
      res.writeHead(200, { 'Content-Type': 'image/jpeg', 'Set-Cookie': 'tracker=1' }).end(jpeg);
    }, { config: { userAgent: 'imageproxy-test/1 (ops@example.org)' } }, async ({ origin, app }) => {
      const response = await fetch(app.url + linkFor(origin.url('/visitor.jpg').href), {
        headers: {
          Cookie: 'session=secret',
          Referer: 'https://tracker.example/torrents.php?id=1',
          'X-Forwarded-For': '203.0.113.7',
          Authorization: 'Basic dXNlcjpwYXNz',
          'User-Agent': 'VisitorBrowser/1.0',
        },
      });
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('set-cookie'), null); // nor the origin's cookies back
      assert.equal(seen['user-agent'], 'imageproxy-test/1 (ops@example.org)');
      for (const header of ['cookie', 'referer', 'x-forwarded-for', 'x-real-ip', 'forwarded', 'authorization']) {
        assert.equal(seen[header], undefined, header);
      }
    });
  });

  test('two server processes on one root fetch a new image once', async () => {
    const origin = await startOrigin((_req, res) => {
      setTimeout(() => res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg), 300);
    });
    const root = await makeTempRoot('imageproxy-fetch-');
    const children: ChildProcess[] = [];
    try {
      const urls = await Promise.all([0, 1].map(async () => {
        const child = spawn(
          process.execPath,
          ['dist/server/cli.js', 'serve', '--listen', '127.0.0.1:0', '--admin-listen', 'off', '--root', root, '--secret', SECRET, '--allow-private-networks'],
          { stdio: ['ignore', 'pipe', 'inherit'] },
        );
        children.push(child);
        return new Promise<string>((resolve, reject) => {
          let output = '';
          child.stdout?.on('data', (chunk: Buffer) => {
            output += chunk.toString();
            const match = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(output);
            if (match?.[1] !== undefined) resolve(match[1]);
          });
          child.once('exit', (code) => reject(new Error(`server exited with ${code}: ${output}`)));
        });
      }));
      const imageUrl = origin.url('/shared.jpg').href;
      const answers = await Promise.all(
        Array.from({ length: 40 }, async (_, index) => {
          const response = await fetch(urls[index % 2] + linkFor(imageUrl));
          return { status: response.status, bytes: Buffer.from(await response.arrayBuffer()) };
        }),
      );
      assert.equal(origin.requests.length, 1);
      for (const answer of answers) {
        assert.equal(answer.status, 200);
        assert.ok(answer.bytes.equals(jpeg));
      }
    } finally {
      // Gone before the root is removed: a server still writing its state files would
      // make the removal fail (ENOTEMPTY).
      await Promise.all(
        children.map((child) =>
          child.exitCode !== null || child.signalCode !== null
            ? Promise.resolve()
            : new Promise<void>((exited) => {
                child.once('exit', () => exited());
                child.kill('SIGTERM');
              }),
        ),
      );
      await origin.close();
      await removeTempRoot(root);
    }
  });

  test('singleFlightScope tree: a stale lock directory left by a dead process is taken over', async () => {
    await withOriginAndApp((_req, res) => res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg), { config: { singleFlightScope: 'tree' } }, async ({ origin, root, app }) => {
      const imageUrl = origin.url('/stale.jpg').href;
      const key = storageKey(Buffer.from(imageUrl));
      const lockPath = join(root, keyDirectory('i', key), `${key}.lock`);
      await mkdir(lockPath, { recursive: true });
      const longAgo = new Date(Date.now() - 60_000);
      await utimes(lockPath, longAgo, longAgo);
      const response = await fetch(app.url + linkFor(imageUrl));
      assert.equal(response.status, 200);
      assert.equal(origin.requests.length, 1);
      await assert.rejects(stat(lockPath), { code: 'ENOENT' });
    });
  });

  test('singleFlightScope host (default): another process holding the lock holds the fetch back; killed with -9, the fetch goes at once; no lock directory made', async () => {
    await withOriginAndApp((_req, res) => res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg), {}, async ({ origin, root, app }) => {
      const imageUrl = origin.url('/held.jpg').href;
      const key = storageKey(Buffer.from(imageUrl));
      // The other process takes the lock the server's miss needs, by the same name.
      const holderScript = `
        const { hostLockName } = await import(${JSON.stringify(new URL('../dist/server/contract/layout.js', import.meta.url).href)});
        const { statSync } = await import('node:fs');
        const { createServer } = await import('node:net');
        const { dev, ino } = statSync(process.argv[1], { bigint: true });
        createServer().listen({ path: '\\0' + hostLockName({ dev, ino }, 'i', process.argv[2]), exclusive: true }, () => console.log('held'));`;
      const holder = spawn(process.execPath, ['--input-type=module', '-e', holderScript, root, key], { stdio: ['ignore', 'pipe', 'inherit'] });
      const exited = new Promise((resolve) => holder.once('exit', resolve));
      try {
        await new Promise<void>((resolve, reject) => {
          holder.stdout?.once('data', () => resolve());
          holder.once('exit', (code) => reject(new Error(`holder exited ${code}`)));
        });
        const answer = fetch(app.url + linkFor(imageUrl));
        // The miss has its place in the fetch queue: from here on it waits for the lock.
        await until(async () => (await scrapeMetrics(app.adminUrl ?? '')).get('imageproxy_queue_depth{queue="fetch"}'), {
          message: 'the miss in the fetch queue',
          done: (depth) => depth === 1,
        });
        // Behaviour under test, not a wait: the lock holds the fetch back for as long as it is held.
        await new Promise((observe) => setTimeout(observe, 400));
        assert.equal(origin.requests.length, 0, 'no fetch while another process holds the lock');
        const killedAt = Date.now();
        holder.kill('SIGKILL');
        await exited;
        const response = await answer;
        // 200, not busy: the lock was taken as soon as the holder was gone, well within singleFlightWaitMs.
        assert.equal(response.status, 200);
        assert.ok(Buffer.from(await response.arrayBuffer()).equals(jpeg), 'the origin\'s bytes');
        assert.equal(origin.requests.length, 1);
        // No staleness waited out: a lock directory would have been taken over only after LOCK_STALE_MS.
        assert.ok(Date.now() - killedAt < LOCK_STALE_MS, `answered ${Date.now() - killedAt} ms after the kill`);
        assert.deepEqual(await filesOfKey(root, imageUrl), [`${key}.jpg`, `${key}.json`]);
      } finally {
        holder.kill('SIGKILL');
      }
    });
  });

  test('temp files older than tempMaxAgeSeconds are swept at start; fresh ones are kept', async () => {
    const root = await makeTempRoot('imageproxy-fetch-');
    const directory = join(root, 'i', 'A', 'b');
    await mkdir(directory, { recursive: true });
    const oldTemp = join(directory, '.Abkey.jpg.123.aaaa.tmp');
    const freshTemp = join(directory, '.Abkey.jpg.123.bbbb.tmp');
    await writeFile(oldTemp, 'partial');
    await writeFile(freshTemp, 'partial');
    const longAgo = new Date(Date.now() - 7_200_000);
    await utimes(oldTemp, longAgo, longAgo);
    const app = await startApp(root);
    try {
      const left = await until(() => readdir(directory), { message: 'the old temp file swept', done: (names) => names.length === 1 });
      assert.deepEqual(left, ['.Abkey.jpg.123.bbbb.tmp']);
    } finally {
      await app.close();
      await removeTempRoot(root);
    }
  });
});

describe('misbehaving origins: documented status, nothing stored, still serving', () => {
  const cases: Array<{ name: string; code: string; status: number; requests?: number; handler: (req: IncomingMessage, res: ServerResponse) => void }> = [
    { name: '404', code: 'origin_status', status: 502, handler: (_q, res) => res.writeHead(404).end('gone') },
    { name: '500', code: 'origin_status', status: 502, handler: (_q, res) => res.writeHead(500).end('oops') },
    {
      name: 'HTML served as image/jpeg',
      code: 'not_an_image',
      status: 502,
      handler: (_q, res) => res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end('<!doctype html><script>alert(1)</script>'),
    },
    {
      name: 'SVG served as image/jpeg',
      code: 'not_an_image',
      status: 502,
      handler: (_q, res) =>
        res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'),
    },
    {
      name: 'endless body',
      code: 'origin_too_large',
      status: 502,
      handler: (_q, res) => {
        res.writeHead(200, { 'Content-Type': 'image/jpeg' });
        const chunk = Buffer.alloc(64 * 1024, 0xff);
        const pump = (): void => {
          while (!res.destroyed && res.write(chunk));
          if (!res.destroyed) res.once('drain', pump);
        };
        res.on('error', () => undefined);
        pump();
      },
    },
    {
      name: 'slow drip past the total timeout',
      code: 'origin_timeout',
      status: 504,
      handler: (_q, res) => {
        res.writeHead(200, { 'Content-Type': 'image/jpeg' });
        const timer = setInterval(() => (res.destroyed ? clearInterval(timer) : res.write(Buffer.from([0xff]))), 100);
        res.on('close', () => clearInterval(timer));
      },
    },
    {
      name: 'redirect loop',
      code: 'too_many_redirects',
      status: 502,
      requests: 4, // the first request and maxRedirects (3) hops
      handler: (req, res) => res.writeHead(302, { Location: `${req.url ?? '/'}x` }).end(),
    },
    {
      name: 'truncated body',
      code: 'origin_unreachable',
      status: 502,
      handler: (_q, res) => {
        res.writeHead(200, { 'Content-Type': 'image/jpeg', 'Content-Length': String(jpeg.length) });
        res.write(jpeg.subarray(0, 100));
        setTimeout(() => res.destroy(), 20);
      },
    },
    {
      name: 'PNG declaring 60000 × 60000 pixels',
      code: 'too_many_pixels',
      status: 502,
      handler: (_q, res) => res.writeHead(200, { 'Content-Type': 'image/png' }).end(pngDeclaring(60_000, 60_000)),
    },
  ];

  for (const testCase of cases) {
    test(testCase.name, async () => {
      await withOriginAndApp(testCase.handler, { config: { limits: { maxBytes: 1_000_000, totalTimeoutMs: 1500, connectTimeoutMs: 1000 } } }, async ({ origin, root, app }) => {
        const imageUrl = origin.url('/bad.jpg').href;
        for (const size of ['full', '150x']) {
          const response = await fetch(app.url + linkFor(imageUrl, { size }));
          const body = await response.text();
          if (size === 'full') {
            assert.equal(response.status, testCase.status);
            assert.equal(response.headers.get('x-imageproxy-error'), testCase.code);
            assert.ok(body.startsWith(`${testCase.code}: `), shortBody(Buffer.from(body), response.headers.get('content-type')));
          } else {
            // The same key is now backing off: the failure answers again, no second contact with the origin.
            assert.equal(response.status, testCase.status);
            assert.equal(response.headers.get('x-imageproxy-error'), testCase.code);
            assert.ok(body.startsWith(`${testCase.code}: `), shortBody(Buffer.from(body), response.headers.get('content-type')));
            assert.ok(Number(response.headers.get('retry-after')) > 0);
            assert.notEqual(response.headers.get('x-imageproxy-remembered'), null);
          }
        }
        assert.equal(origin.requests.length, testCase.requests ?? 1);
        const key = storageKey(Buffer.from(imageUrl));
        assert.deepEqual(await filesOfKey(root, imageUrl), [`${key}.fail`]);
        const health = await fetch(`${app.url}/healthz`);
        assert.equal(health.status, 200);
      });
    });
  }
});

describe('requests past the time-slice queue', () => {
  test('503 busy at once with the headers of every answer, counted; /healthz still answered; nothing fetched', async () => {
    const origin = await startOrigin((_req, res) => res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg));
    const root = await makeTempRoot('imageproxy-slices-');
    const config = buildConfig({
      flags: { listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, root, secrets: [SECRET], allowPrivateNetworks: true, logLevel: 'silent' },
    });
    // No room at all: every link is refused before the app sees it.
    const app = await startServer({ config, secrets: config.secrets, logger: createLogger('silent'), maxRequestsWaiting: 0 });
    try {
      const answer = await request(app.url, linkFor(origin.url('/refused.jpg').href));
      assert.equal(answer.status, 503);
      assert.equal(answer.body.toString(), 'busy: too busy, try again\n');
      assert.equal(answer.headers.get('x-imageproxy-error'), 'busy');
      assert.equal(answer.headers.get('retry-after'), '2');
      assert.equal(answer.headers.get('cache-control'), ERROR_CACHE_CONTROL);
      assert.equal(answer.headers.get('content-type'), 'text/plain; charset=utf-8');
      for (const [name, value] of Object.entries(SECURITY_HEADERS)) assert.equal(answer.headers.get(name), value, name);
      const head = await request(app.url, linkFor(origin.url('/refused.jpg').href), { method: 'HEAD' });
      assert.deepEqual([head.status, head.body.length], [503, 0]);
      assert.equal((await request(app.url, '/healthz')).status, 200);
      assert.equal(origin.requests.length, 0);
      const metrics = await (await fetch(`${app.adminUrl}/metrics`)).text();
      assert.match(metrics, /^imageproxy_responses_total\{outcome="busy"\} 2$/m);
    } finally {
      await app.close();
      await origin.close();
      await removeTempRoot(root);
    }
  });
});

describe('backoff', () => {
  test('window doubles from the failure time, answers the failure again without contacting the origin, success clears it', async () => {
    let healthy = false;
    let clock = Date.now();
    await withOriginAndApp((_req, res) => {
      if (healthy) res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg);
      else res.writeHead(500).end();
    }, { now: () => clock }, async ({ origin, root, app }) => {
      const imageUrl = origin.url('/flaky.jpg').href;
      const get = (): Promise<Response> => fetch(app.url + linkFor(imageUrl, {}, clock));
      assert.equal((await get()).status, 502);
      assert.equal(origin.requests.length, 1);
      const during = await get();
      assert.equal(during.status, 502);
      assert.equal(await during.text(), 'origin_status: origin answered 500\n');
      assert.equal(during.headers.get('retry-after'), '60');
      assert.equal(during.headers.get('x-imageproxy-remembered'), new Date(clock).toISOString());
      assert.equal(origin.requests.length, 1);

      clock += 61_000; // first window (60 s) over: try again, fail again
      assert.equal((await get()).status, 502);
      assert.equal(origin.requests.length, 2);
      const second = await get();
      assert.equal(second.status, 502);
      assert.equal(second.headers.get('retry-after'), '120'); // doubled, counted from this failure

      clock += 121_000;
      healthy = true;
      assert.equal((await get()).status, 200);
      assert.equal(origin.requests.length, 3);
      const key = storageKey(Buffer.from(imageUrl));
      assert.deepEqual(await filesOfKey(root, imageUrl), [`${key}.jpg`, `${key}.json`]);
    });
  });
});

describe('/proxy', () => {
  test('an image not stored is passed through and not stored; a stored one is served from the tree', async () => {
    await withOriginAndApp((_req, res) => res.writeHead(200, { 'Content-Type': 'application/octet-stream' }).end(png), {}, async ({ origin, root, app }) => {
      const imageUrl = origin.url('/passing.png').href;
      const proxied = await fetch(app.url + linkFor(imageUrl, { proxy: true, size: 'garbage' }));
      assert.equal(proxied.status, 200);
      assert.equal(proxied.headers.get('content-type'), 'image/png');
      assert.ok(Buffer.from(await proxied.arrayBuffer()).equals(png));
      assert.deepEqual(await filesOfKey(root, imageUrl), []);
      assert.equal(origin.requests.length, 1);

      assert.equal((await fetch(app.url + linkFor(imageUrl))).status, 200); // now stored
      const fromTree = await fetch(app.url + linkFor(imageUrl, { proxy: true }));
      assert.equal(fromTree.status, 200);
      assert.ok(Buffer.from(await fromTree.arrayBuffer()).equals(png));
      assert.equal(origin.requests.length, 2);
    });
  });
});

describe('address policy through the server', () => {
  test('with private networks refused, loopback links answer 403 and never connect', async () => {
    await withOriginAndApp((_req, res) => res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg), { config: { allowPrivateNetworks: false } }, async ({ origin, app }) => {
      const port = origin.port;
      for (const host of ['127.0.0.1', 'localhost', '[::1]', '[::ffff:127.0.0.1]', '0.0.0.0', '127.1', '2130706433']) {
        const response = await fetch(app.url + linkFor(`http://${host}:${port}/x.jpg`));
        assert.equal(response.status, 403, host);
        assert.equal(response.headers.get('x-imageproxy-error'), 'blocked_destination', host);
      }
      assert.equal(origin.connections, 0);
    });
  });

  test('allowedAddresses lets one blocked address through, and only that one', async () => {
    await withOriginAndApp((_req, res) => res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg), { config: { allowPrivateNetworks: false, allowedAddresses: ['127.0.0.1'] } }, async ({ origin, app }) => {
      const allowed = await fetch(app.url + linkFor(origin.url('/intranet.jpg').href));
      assert.equal(allowed.status, 200);
      const other = await fetch(app.url + linkFor(origin.url('/intranet.jpg', '127.0.0.2').href));
      assert.equal(other.status, 403);
      assert.equal(other.headers.get('x-imageproxy-error'), 'blocked_destination');
      assert.equal(origin.requests.length, 1);
    });
  });
});

