/**
 * Past `limits.maxWaitingResizeBytes` a thumbnail waiting for a resize slot holds none of
 * its original's bytes — with formats on too, where a thumbnail request waits twice (the
 * source-format thumbnail and the class's conversion). Measured as what a burst leaves
 * held in Buffers (process.memoryUsage().arrayBuffers after a full collection) while
 * every original is fetched and stored and the thumbnails queue behind one resize slot:
 * the running resize's input and a little, never one original per waiting thumbnail.
 * The app runs in this process so that the collection is the app's.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import sharp from 'sharp';
import type { RunningServer } from '../server/http/server.js';
import { makeTempRoot, removeTempRoot, scrapeMetrics, signedPath, startLoopbackServer, until } from './helpers.js';
import { startOrigin } from './origin.js';

setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

const SECRET = 'waiting-resize-memory-secret';
const THUMBNAILS = 24;
/** A fetch slot holds its original's bytes until they are stored (its writes may still run). */
const FETCH_SLOTS = 4;
const CHROME_ACCEPT = 'image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8';

function heldBufferBytes(): number {
  collectGarbage();
  collectGarbage();
  return process.memoryUsage().arrayBuffers;
}

const cases = [
  { name: 'formats off', formats: [] as string[], accept: undefined, placesPerThumbnail: 1 },
  { name: 'formats webp, a WebP client', formats: ['webp'], accept: CHROME_ACCEPT, placesPerThumbnail: 2 },
];

for (const { name, formats, accept, placesPerThumbnail } of cases) {
  test(`${name}: ${THUMBNAILS} thumbnails waiting for one resize slot past maxWaitingResizeBytes hold none of their originals' bytes`, async (t) => {
    // Noise keeps the JPEG big and its resize slow: the thumbnails queue behind each other.
    const photo = await sharp({ create: { width: 3000, height: 2000, channels: 3, background: '#808080', noise: { type: 'gaussian', mean: 128, sigma: 40 } } })
      .jpeg()
      .toBuffer();
    const origin = await startOrigin((_req, res) => res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(photo));
    const root = await makeTempRoot('imageproxy-waiting-memory-');
    let app: RunningServer | null = null;
    try {
      app = await startLoopbackServer(root, SECRET, {
        engine: 'sharp',
        formats,
        limits: { maxBytes: 20_000_000, maxConcurrentFetches: FETCH_SLOTS, maxConcurrentResizes: 1, maxQueuedResizes: 4 * THUMBNAILS, maxWaitingResizeBytes: 0, maxQueueWaitMs: 119_999 },
      });
      const { url, adminUrl } = app;
      assert.ok(adminUrl !== null);
      const idleBytes = heldBufferBytes();
      const atMs = Date.now();
      const answers = Array.from({ length: THUMBNAILS }, (_, index) =>
        fetch(url + signedPath({ secret: SECRET, imageUrl: origin.url(`/photo-${index}.jpg`).href, atMs, size: '250x250' }), {
          headers: accept === undefined ? {} : { Accept: accept },
        }).then(async (answer) => ({ status: answer.status, type: answer.headers.get('content-type'), body: Buffer.from(await answer.arrayBuffer()) })),
      );
      // Every original fetched (and so stored: a thumbnail past the byte budget reads it
      // back), most thumbnails still waiting for the slot.
      const figures = async (): Promise<{ fetched: number; queued: number }> => {
        const samples = await scrapeMetrics(adminUrl);
        return { fetched: samples.get('imageproxy_origin_fetches_total{result="ok"}') ?? 0, queued: samples.get('imageproxy_queue_depth{queue="resize"}') ?? 0 };
      };
      const { queued } = await until(figures, {
        message: 'every original fetched, the thumbnails queued',
        timeoutMs: 120_000,
        done: ({ fetched, queued }) => fetched === THUMBNAILS && queued >= (placesPerThumbnail * THUMBNAILS) / 2,
      });
      const heldBytes = heldBufferBytes() - idleBytes;
      t.diagnostic(`photo ${(photo.length / 1048576).toFixed(2)} MiB; resize queue ${queued}; Buffers held ${(heldBytes / 1048576).toFixed(1)} MiB`);
      // The originals of the fetch slots still being written, the running resize's input,
      // a stored original read back for the next one, and outputs; before the fix every
      // waiting thumbnail kept its original's bytes (16 photos and more).
      const boundBytes = (FETCH_SLOTS + 3) * photo.length;
      assert.ok(heldBytes <= boundBytes, `Buffers held ${heldBytes} bytes with ${queued} resizes queued: more than ${FETCH_SLOTS + 3} photos (${boundBytes})`);

      const done = await Promise.all(answers);
      for (const [index, answer] of done.entries()) {
        assert.equal(answer.status, 200, `thumbnail ${index}`);
        assert.equal(answer.type, formats.length === 0 ? 'image/jpeg' : 'image/webp', `thumbnail ${index}`);
        const { width, height } = await sharp(answer.body).metadata();
        assert.deepEqual([width, height], [250, 167], `thumbnail ${index}`);
      }
    } finally {
      await app?.close();
      await origin.close();
      await removeTempRoot(root);
    }
  });
}
