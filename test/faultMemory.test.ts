/**
 * The memory bound of the admission gates, scaled down: `imageproxy serve` as a real
 * process (sharp engine, the default limits) in front of a loopback origin serving a
 * noisy 12 MP JPEG just under `maxBytes` under any path, and more concurrent cold misses
 * (full size and 250x250 alternating) than the fetch gate runs: the rest wait.
 * The child's resident memory (/proc/PID/status VmRSS) is sampled every 50 ms along with
 * /healthz on the admin listener.
 *
 * The bound is per request in flight, not per machine. Only the gates' running slots
 * hold image data; a queued miss holds a socket and a few small objects.
 * - A fetch slot holds the body as received (got's chunks), the body joined into one
 *   buffer, and the metadata-stripped copy written to the tree: 3 × the photo's bytes.
 * - A resize slot holds the original read back from the tree (1 × its bytes), the
 *   decoded pixels, counted as if the whole photo were decoded at once
 *   (width × height × 3 bytes; libvips actually streams and JPEG shrinks on load, so
 *   this is an upper bound), and the small encoded thumbnail.
 * Every slot is given the larger of the two (3 × bytes + width × height × 3): what a
 * fetch slot does not use of it covers buffers already released but not yet collected
 * by V8, and the per-thread allocator arenas of libvips' threads. So
 *   peak RSS − idle RSS ≤ (maxConcurrentFetches + maxConcurrentResizes) × (3 × bytes + width × height × 3)
 *                         + requests × 64 KiB (what a waiting miss may hold).
 * If a gate stopped bounding (every miss fetching at once), the fetches alone would hold
 * requests × 3 × bytes and the test fails.
 */
import assert from 'node:assert/strict';
import { Agent } from 'node:http';
import { test } from 'node:test';
import { DEFAULT_CONFIG } from '../server/config/config.js';
import { PHOTO_CHANNELS, PHOTO_HEIGHT, PHOTO_WIDTH, startBigPhotoOrigin, twelveMegapixelJpeg } from './bigPhotoOrigin.js';
import { lightRequest, rssKiB, startServe, writeServeConfig, type LightAnswer } from './faultHarness.js';
import { makeTempRoot, removeTempRoot, scrapeMetrics, signedPath, until } from './helpers.js';

const SECRET = 'fault-memory-secret';
const SAMPLE_MS = 50;
const { maxConcurrentFetches, maxConcurrentResizes } = DEFAULT_CONFIG.limits;
/** Many times what the fetch gate runs, so most misses wait in its queue. */
const MISSES = 96;
/** What a waiting miss may hold: a socket and small objects, never image bytes. */
const WAITING_BUDGET_BYTES = 64 * 1024;

test(`${MISSES} concurrent cold misses of a 12 MP photo: RSS grows by at most the gates' slots × a per-request budget; most answer 200, any other busy; /healthz answers throughout`, async (t) => {
  assert.ok(MISSES > 4 * maxConcurrentFetches, 'most of the burst waits in the fetch queue');
  const work = await makeTempRoot('imageproxy-fault-memory-');
  const jpeg = await twelveMegapixelJpeg();
  const origin = await startBigPhotoOrigin(jpeg);
  const configPath = await writeServeConfig(work, { secrets: [SECRET], engine: 'sharp' });
  // A serve that did not start must not leave the origin keeping the test process alive.
  const serve = await startServe(configPath, work).catch(async (error: unknown) => {
    await origin.close();
    await removeTempRoot(work);
    throw error;
  });
  try {
    assert.ok(serve.adminUrl !== null);
    const adminUrl = serve.adminUrl;
    // Idle: after start-up settled (the first stats walk of the empty tree is done).
    await until(async () => (await scrapeMetrics(adminUrl)).get('imageproxy_tree_scan_timestamp_seconds') ?? 0, {
      message: 'the first stats walk',
      done: (scannedAt) => scannedAt > 0,
    });
    const idleKiB = await rssKiB(serve.pid);
    let peakKiB = idleKiB;
    let healthMaxMs = 0;
    let healthFailures = 0;
    let healthSamples = 0;
    let sampling = true;
    const healthAgent = new Agent({ keepAlive: false });
    const sampler = (async () => {
      while (sampling) {
        const started = performance.now();
        const [rss, health] = await Promise.all([
          rssKiB(serve.pid),
          lightRequest(adminUrl, '/healthz', healthAgent, { timeoutMs: 10_000 }).catch(() => null),
        ]);
        peakKiB = Math.max(peakKiB, rss);
        healthSamples += 1;
        if (health?.status !== 200) healthFailures += 1;
        healthMaxMs = Math.max(healthMaxMs, performance.now() - started);
        await new Promise((done) => setTimeout(done, SAMPLE_MS));
      }
    })();

    const agent = new Agent({ keepAlive: false, maxSockets: Infinity });
    const atMs = Date.now();
    const links = Array.from({ length: MISSES }, (_, index) =>
      signedPath({ secret: SECRET, imageUrl: origin.url(`/photo-${index}.jpg`).href, atMs, size: index % 2 === 0 ? 'full' : '250x250' }),
    );
    const started = performance.now();
    const answers: LightAnswer[] = await Promise.all(links.map((link) => lightRequest(serve.url, link, agent, { timeoutMs: 120_000 })));
    const seconds = (performance.now() - started) / 1000;
    sampling = false;
    await sampler;

    const budgetBytes = 3 * jpeg.length + PHOTO_WIDTH * PHOTO_HEIGHT * PHOTO_CHANNELS;
    const slots = maxConcurrentFetches + maxConcurrentResizes;
    const growthBytes = (peakKiB - idleKiB) * 1024;
    const boundBytes = slots * budgetBytes + MISSES * WAITING_BUDGET_BYTES;
    const mib = (bytes: number): string => (bytes / 1048576).toFixed(1);
    const byOutcome = new Map<string, number>();
    for (const answer of answers) {
      const outcome = `${answer.status} ${String(answer.headers['x-imageproxy-error'] ?? '')}`.trim();
      byOutcome.set(outcome, (byOutcome.get(outcome) ?? 0) + 1);
    }
    t.diagnostic(
      `${MISSES} cold misses of a ${mib(jpeg.length)} MiB ${PHOTO_WIDTH}x${PHOTO_HEIGHT} JPEG in ${seconds.toFixed(1)} s; ` +
        `answers ${[...byOutcome].map(([outcome, count]) => `${outcome}: ${count}`).join(', ')}`,
    );
    t.diagnostic(
      `RSS idle ${mib(idleKiB * 1024)} MiB, peak ${mib(peakKiB * 1024)} MiB, growth ${mib(growthBytes)} MiB = ${mib(growthBytes / slots)} MiB per slot ` +
        `(${slots} slots); budget ${mib(budgetBytes)} MiB per slot and ${WAITING_BUDGET_BYTES / 1024} KiB per waiting miss, ${mib(boundBytes)} MiB in all`,
    );
    t.diagnostic(`/healthz: ${healthSamples} samples, ${healthFailures} failed, slowest ${healthMaxMs.toFixed(0)} ms`);

    for (const [index, answer] of answers.entries()) {
      if (answer.status === 200) continue;
      assert.equal(answer.status, 503, `link ${index}: ${answer.status} ${String(answer.headers['x-imageproxy-error'])}`);
      assert.equal(answer.headers['x-imageproxy-error'], 'busy', `link ${index}`);
      assert.equal(answer.headers['retry-after'], '2', `link ${index}`);
    }
    // A busy is a wait past maxQueueWaitMs on a loaded machine: the queue holds the whole burst.
    assert.ok((byOutcome.get('200') ?? 0) >= MISSES / 2, 'most misses were answered');
    assert.ok(peakKiB > 0 && idleKiB > 0, 'RSS was read');
    assert.ok(growthBytes <= boundBytes, `RSS grew ${mib(growthBytes)} MiB, more than ${mib(boundBytes)} MiB`);
    assert.equal(healthFailures, 0, '/healthz answered 200 every time');
    assert.ok(healthMaxMs < 5000, `/healthz answered within 5 s (slowest ${healthMaxMs.toFixed(0)} ms)`);
    assert.deepEqual(serve.errorLines(), [], 'no error-level log line');
  } finally {
    await serve.stop();
    await origin.close();
    await removeTempRoot(work);
  }
});
