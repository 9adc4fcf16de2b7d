/**
 * The image service and app in-process against loopback origins that hold their answers:
 * admission before work (bounded count and wait, `busy` at once), remembered failures
 * answered as they happened, disk faults in their own codes (real tmpfs mounts), and a
 * client that went away counted as `client_closed`, never `internal`.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { open, mkdir } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse, Server } from 'node:http';
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import sharp from 'sharp';
import { buildConfig, type ConfigLayer } from '../server/config/config.js';
import { createApp } from '../server/http/app.js';
import { createImageServiceFor } from '../server/service/imageServiceFactory.js';
import { storageKey } from '../server/contract/layout.js';
import { createMetrics, type Metrics } from '../server/observe/metrics.js';
import type { ImageStore } from '../server/tree/store.js';
import { makeTempRoot, removeTempRoot, request, shortBody, signedPath, until, type Answer } from './helpers.js';
import { startOrigin, type Origin } from './origin.js';

const SECRET = 'admission-test-secret';
const PNG = await sharp({ create: { width: 40, height: 30, channels: 3, background: '#3a6' } }).png().toBuffer();

interface Running {
  baseUrl: string;
  origin: Origin;
  root: string;
  store: ImageStore;
  metrics: Metrics;
  logLines: () => Array<{ level: number; msg: string; [field: string]: unknown }>;
  /** Requests the origin is holding; `release()` answers them all with the PNG. */
  held: ServerResponse[];
  maxInFlight: () => number;
  /** The service's queue depths (the `imageproxy_queue_depth` gauge's source). */
  queueDepths: () => Record<string, number>;
  /** Connections open at the app's listener. */
  appConnections: () => Promise<number>;
}

/** A held origin: every request waits until the test releases it, unless the path says otherwise. */
function holdingHandler(held: ServerResponse[], inFlight: { now: number; max: number }) {
  return (incoming: IncomingMessage, response: ServerResponse): void => {
    if (incoming.url === '/404') return void response.writeHead(404).end('gone');
    if (incoming.url === '/html') return void response.writeHead(200, { 'Content-Type': 'image/png' }).end('<html>no</html>');
    if (incoming.url?.startsWith('/now')) return void response.writeHead(200, { 'Content-Type': 'image/png' }).end(PNG);
    inFlight.now += 1;
    inFlight.max = Math.max(inFlight.max, inFlight.now);
    response.once('close', () => (inFlight.now -= 1));
    held.push(response);
  };
}

function release(held: ServerResponse[]): void {
  for (const response of held.splice(0)) response.writeHead(200, { 'Content-Type': 'image/png' }).end(PNG);
}

async function withService(
  config: ConfigLayer,
  body: (running: Running) => Promise<void>,
  options: { root?: string } = {},
): Promise<void> {
  const held: ServerResponse[] = [];
  const inFlight = { now: 0, max: 0 };
  const origin = await startOrigin(holdingHandler(held, inFlight));
  const root = options.root ?? (await makeTempRoot('imageproxy-admission-'));
  const lines: string[] = [];
  const logger = pino(
    { level: 'info' },
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(...chunk.toString('utf8').split('\n').filter((line) => line !== ''));
        done();
      },
    }),
  );
  const built = buildConfig({
    flags: { root, secrets: [SECRET], allowPrivateNetworks: true, statsRefreshSeconds: 0, ...config },
  });
  const metrics = createMetrics({ processMetrics: false });
  const parts = await createImageServiceFor(built, logger, { metrics });
  const app = createApp({ config: built, secrets: [SECRET], images: parts.service, logger, metrics });
  const server: Server = app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    await body({
      baseUrl: `http://127.0.0.1:${port}`,
      origin,
      root,
      store: parts.store,
      metrics,
      logLines: () => lines.map((line) => JSON.parse(line) as { level: number; msg: string }),
      held,
      maxInFlight: () => inFlight.max,
      queueDepths: () => parts.service.queueDepths?.() ?? {},
      appConnections: () => new Promise((resolve, reject) => server.getConnections((error, count) => (error ? reject(error) : resolve(count)))),
    });
  } finally {
    release(held);
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await parts.close();
    await origin.close();
    if (options.root === undefined) await removeTempRoot(root);
  }
}

function get(running: Running, imagePath: string, size = 'full'): Promise<Answer> {
  return request(running.baseUrl, signedPath({ secret: SECRET, imageUrl: running.origin.url(imagePath).href, atMs: Date.now(), size }));
}

function refusal(answer: Answer): string {
  return `${answer.status} ${answer.headers.get('x-imageproxy-error')} ${shortBody(answer.body, answer.headers.get('content-type')).trim()}`;
}

describe('admission before work', () => {
  test('with 2 fetch slots and a queue of 3, the 6th cold miss is busy at once; the origin never sees more than 2', async () => {
    await withService({ limits: { maxConcurrentFetches: 2, maxQueuedFetches: 3, maxQueueWaitMs: 20_000 } }, async (running) => {
      const first = [1, 2, 3, 4, 5].map((index) => get(running, `/photo-${index}.png`));
      await until(() => running.origin.requests.length, { message: 'two fetches at the origin', done: (count) => count === 2 });
      // The other three hold queue places, waiting for a slot.
      await until(() => running.queueDepths().fetch, { message: 'five places in the fetch queue', done: (depth) => depth === 5 });
      const sixth = await get(running, '/photo-6.png');
      assert.equal(refusal(sixth), '503 busy busy: too busy, try again');
      assert.equal(sixth.headers.get('retry-after'), '2');
      // Refused at once because the queue was full, not after waiting maxQueueWaitMs for a slot.
      const busyLine = running.logLines().find((line) => line.code === 'busy');
      assert.match(String(busyLine?.detail), /^fetch queue full: 2 running, 3 waiting$/);
      assert.equal(running.origin.requests.length, 2);
      // Answer the held ones as they come: the queue drains two at a time.
      const releaser = setInterval(() => release(running.held), 20);
      try {
        const answers = await Promise.all(first);
        assert.deepEqual(answers.map((answer) => answer.status), [200, 200, 200, 200, 200]);
      } finally {
        clearInterval(releaser);
      }
      assert.equal(running.origin.requests.length, 5, 'the busy one was never fetched');
      assert.ok(running.origin.requests.every((incoming) => incoming.url !== '/photo-6.png'));
      assert.equal(running.maxInFlight(), 2);
    });
  });

  test('a miss queued longer than maxQueueWaitMs answers busy, without a fetch', async () => {
    await withService({ limits: { maxConcurrentFetches: 1, maxQueuedFetches: 4, maxQueueWaitMs: 300 } }, async (running) => {
      const holder = get(running, '/slow.png');
      await until(() => running.origin.requests.length === 1, { message: 'the first fetch at the origin' });
      const queued = await get(running, '/waiting.png');
      assert.equal(refusal(queued), '503 busy busy: too busy, try again');
      assert.equal(queued.headers.get('retry-after'), '2');
      assert.deepEqual(running.origin.requests.map((incoming) => incoming.url), ['/slow.png']);
      release(running.held);
      assert.equal((await holder).status, 200);
    });
  });

  test('a thumbnail refused busy has not fetched its original', async () => {
    const limits = { maxConcurrentFetches: 4, maxConcurrentResizes: 1, maxQueuedResizes: 0 };
    await withService({ limits }, async (running) => {
      const first = get(running, '/first.png', '250x250');
      await until(() => running.origin.requests.length === 1, { message: 'the first original at the origin' });
      const second = await get(running, '/second.png', '250x250');
      assert.equal(refusal(second), '503 busy busy: too busy, try again');
      assert.deepEqual(running.origin.requests.map((incoming) => incoming.url), ['/first.png']);
      assert.equal(await running.store.find('i', storageKey(Buffer.from(running.origin.url('/second.png').href)), null), null);
      release(running.held);
      const answer = await first;
      assert.equal(answer.status, 200);
      const { width, height } = await sharp(answer.body).metadata();
      assert.deepEqual([width, height], [40, 30]);
    });
  });
});

describe('a remembered failure answers as it happened, without contacting the origin', () => {
  const cases: Array<[name: string, path: string, expected: string]> = [
    ['origin status, naming the status', '/404', '502 origin_status origin_status: origin answered 404'],
    ['not an image', '/html', '502 not_an_image not_an_image: not an image'],
  ];
  for (const [name, path, expected] of cases) {
    test(name, async () => {
      await withService({}, async (running) => {
        const first = await get(running, path);
        assert.equal(refusal(first), expected);
        assert.equal(first.headers.get('x-imageproxy-remembered'), null);
        const again = await get(running, path);
        assert.equal(refusal(again), expected);
        assert.equal(again.headers.get('retry-after'), '60');
        const remembered = again.headers.get('x-imageproxy-remembered') ?? '';
        assert.match(remembered, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
        assert.ok(Math.abs(Date.parse(remembered) - Date.now()) < 60_000);
        assert.equal(running.origin.requests.length, 1, 'the repeat did not reach the origin');
      });
    });
  }

  test('blocked destination stays 403 on every repeat', async () => {
    await withService({ allowPrivateNetworks: false }, async (running) => {
      for (const round of [1, 2, 3]) {
        const answer = await get(running, '/anything.png');
        assert.equal(refusal(answer), '403 blocked_destination blocked_destination: destination not allowed', `round ${round}`);
        if (round > 1) assert.notEqual(answer.headers.get('x-imageproxy-remembered'), null);
      }
      assert.equal(running.origin.connections, 0);
    });
  });
});

describe('a client that went away', () => {
  test('is counted as client_closed, logged at info, and the fetched original is kept', async () => {
    await withService({}, async (running) => {
      const imageUrl = running.origin.url('/left.png').href;
      const path = signedPath({ secret: SECRET, imageUrl, atMs: Date.now() });
      const { port } = new URL(running.baseUrl);
      const outgoing = httpRequest({ host: '127.0.0.1', port, path });
      outgoing.on('error', () => undefined);
      outgoing.end();
      await until(() => running.origin.requests.length === 1, { message: 'the fetch at the origin' });
      outgoing.destroy();
      // The app has seen the client go before the origin answers.
      await until(() => running.appConnections(), { message: 'the client connection closed at the app', done: (count) => count === 0 });
      release(running.held);
      await until(() => running.logLines().some((line) => line.msg === 'client closed the connection'), { message: 'the client_closed log line' });
      assert.notEqual(await running.store.find('i', storageKey(Buffer.from(imageUrl)), null), null, 'the original is stored');
      const counted = await running.metrics.responses.get();
      const outcomes = counted.values.map((value) => `${value.labels.outcome}=${value.value}`);
      assert.deepEqual(outcomes, ['client_closed=1']);
      assert.deepEqual(running.logLines().filter((line) => line.level >= 50), [], 'no error-level line');
    });
  });
});

/** A tmpfs of `size` at a fresh directory, or null when this process may not mount. */
async function mountTmpfs(size: string): Promise<string | null> {
  const directory = await makeTempRoot('imageproxy-tmpfs-');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', directory], { stdio: 'ignore' });
    return directory;
  } catch {
    await removeTempRoot(directory);
    return null;
  }
}

async function unmount(directory: string): Promise<void> {
  execFileSync('umount', [directory], { stdio: 'ignore' });
  await removeTempRoot(directory);
}

/** Fills the filesystem of `directory` until a write fails with ENOSPC. */
async function fill(directory: string): Promise<void> {
  const handle = await open(join(directory, 'filler'), 'w');
  const chunk = Buffer.alloc(64 * 1024);
  try {
    for (;;) await handle.write(chunk);
  } catch (error) {
    assert.equal((error as NodeJS.ErrnoException).code, 'ENOSPC');
  } finally {
    await handle.close();
  }
}

describe('disk faults', () => {
  test('a full disk: 507 storage_full for a new image, the origin error still answered and logged', async (context) => {
    const root = await mountTmpfs('1m');
    if (root === null) return context.skip('mount -t tmpfs is not permitted here (needs root)');
    try {
      await mkdir(join(root, 'i'));
      await withService(
        {},
        async (running) => {
          await fill(root);
          const stored = await get(running, '/now.png');
          assert.equal(refusal(stored), '507 storage_full storage_full: storage is full');
          const failed = await get(running, '/404');
          assert.equal(refusal(failed), '502 origin_status origin_status: origin answered 404');
          const lines = running.logLines();
          assert.ok(lines.some((line) => line.msg === 'fetch failed; backing off' && line.code === 'origin_status'));
          const unwritten = lines.find((line) => line.msg === 'backoff record not written; answering the fetch failure without it');
          assert.equal(unwritten?.code, 'storage_full');
          assert.ok(String(unwritten?.detail).includes(root), 'the log names the directory');
        },
        { root },
      );
    } finally {
      await unmount(root);
    }
  });

  test('a read-only tree: 500 storage_unwritable naming the directory, nothing fetched', async (context) => {
    const root = await mountTmpfs('4m');
    if (root === null) return context.skip('mount -t tmpfs is not permitted here (needs root)');
    try {
      await withService(
        {},
        async (running) => {
          execFileSync('mount', ['-o', 'remount,ro', root], { stdio: 'ignore' });
          const answer = await get(running, '/now.png');
          assert.equal(refusal(answer), '500 storage_unwritable storage_unwritable: storage is not writable');
          const line = running.logLines().find((entry) => entry.code === 'storage_unwritable');
          assert.match(String(line?.detail), /^EROFS .* in \//);
          assert.ok(String(line?.detail).includes(root), 'the log names the directory');
          assert.equal(running.origin.requests.length, 0);
        },
        { root },
      );
    } finally {
      await unmount(root);
    }
  });
});
