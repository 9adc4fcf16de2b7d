// Latency on the admin /metrics of the whole server in-process, against a real origin on
// 127.0.0.1: request duration by outcome (agreeing with imageproxy_responses_total), the
// wait for a fetch slot (a queued miss, a refusal at once, a wait past maxQueueWaitMs),
// and build info (after a reload too). The gate's report to the metrics without the server too.
import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import type { ConfigLayer } from '../server/config/config.js';
import { ImageproxyError } from '../server/errors.js';
import { AdmissionGate, type GateObserver } from '../server/fetch/admission.js';
import type { RunningServer } from '../server/http/server.js';
import { createMetrics } from '../server/observe/metrics.js';
import { packageVersion } from '../server/observe/packageVersion.js';
import { loopbackConfig, makeTempRoot, parseSamples, removeTempRoot, request, scrapeMetrics, signedPath, startLoopbackServer, until, type Answer } from './helpers.js';
import { startOrigin, type Origin } from './origin.js';

const SECRET = 'latency-secret';
/** The sum of the samples of `name` whose labels include `wanted` (label order as exposed does not matter). */
function sampleSum(samples: Map<string, number>, name: string, wanted: Record<string, string> = {}): number {
  let sum = 0;
  for (const [key, value] of samples) {
    const brace = key.indexOf('{');
    if ((brace < 0 ? key : key.slice(0, brace)) !== name) continue;
    const labels = brace < 0 ? {} : labelsOf(key.slice(brace + 1, -1));
    if (Object.entries(wanted).every(([label, expected]) => labels[label] === expected)) sum += value;
  }
  return sum;
}

function labelsOf(text: string): Record<string, string> {
  return Object.fromEntries([...text.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map(([, label = '', value = '']) => [label, value]));
}

/** What changed between two scrapes, for one series selection. */
function delta(before: Map<string, number>, after: Map<string, number>, name: string, wanted: Record<string, string> = {}): number {
  return sampleSum(after, name, wanted) - sampleSum(before, name, wanted);
}

/** A test's origin: images at once, except paths under /held/, answered when the test releases them. */
async function heldOrigin(jpeg: Buffer): Promise<{ origin: Origin; release: () => void }> {
  const held: ServerResponse[] = [];
  const answer = (response: ServerResponse): void => void response.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg);
  const origin = await startOrigin((incoming, response) => {
    if (incoming.url?.startsWith('/held/') === true) held.push(response);
    else answer(response);
  });
  return { origin, release: () => held.splice(0).forEach(answer) };
}

describe('latency metrics', () => {
  let workDir: string;
  let jpeg: Buffer;

  before(async () => {
    workDir = await makeTempRoot('imageproxy-latency-');
    jpeg = await sharp({ create: { width: 64, height: 48, channels: 3, background: '#36a' } }).jpeg().toBuffer();
  });
  after(() => removeTempRoot(workDir));

  /** The server over a held origin, one fetch at a time; closed after `body`. */
  async function withServer(name: string, limits: ConfigLayer, body: (server: RunningServer, origin: Origin, release: () => void) => Promise<void>): Promise<void> {
    const { origin, release } = await heldOrigin(jpeg);
    const server = await startLoopbackServer(join(workDir, name), SECRET, { statsRefreshSeconds: 0, limits: { maxConcurrentFetches: 1, ...limits } });
    try {
      await body(server, origin, release);
    } finally {
      release();
      await server.close({ graceMs: 0 });
      await origin.close();
    }
  }

  const get = (server: RunningServer, origin: Origin, path: string): Promise<Answer> =>
    request(server.url, signedPath({ secret: SECRET, imageUrl: origin.url(path).href, atMs: Date.now() }));
  const scrape = (server: RunningServer): Promise<Map<string, number>> => scrapeMetrics(server.adminUrl ?? '');
  const fetchDepth = async (server: RunningServer): Promise<number> => sampleSum(await scrape(server), 'imageproxy_queue_depth', { queue: 'fetch' });

  it('hits, misses and refused links: each answer counted once in the duration histogram of its outcome, as in responses_total', async () => {
    await withServer('outcomes', {}, async (server, origin) => {
      const before = await scrape(server);
      const answers = [
        await get(server, origin, '/one.jpg'),
        await get(server, origin, '/two.jpg'),
        await get(server, origin, '/one.jpg'),
        await get(server, origin, '/one.jpg'),
        await get(server, origin, '/two.jpg'),
        await request(server.url, signedPath({ secret: 'another-secret', imageUrl: origin.url('/one.jpg').href, atMs: Date.now() })),
        await request(server.url, '/i/not-a-link'),
      ];
      const outcomes = answers.map((answer) => answer.headers.get('x-imageproxy-error') ?? `${answer.status}`);
      assert.deepEqual(outcomes.slice(0, 5), ['200', '200', '200', '200', '200']);
      const [badSignature = '', malformed = ''] = outcomes.slice(5);
      assert.ok(answers.slice(5).every((answer) => answer.status >= 400 && answer.status < 500), 'the refused links are refused');
      const after = await scrape(server);

      const expected: Record<string, number> = { miss: 2, hit: 3, [badSignature]: 1, [malformed]: 1 };
      assert.equal(Object.keys(expected).length, 4, `four outcomes: ${Object.keys(expected).join(', ')}`);
      for (const [outcome, count] of Object.entries(expected)) {
        assert.equal(delta(before, after, 'imageproxy_request_duration_seconds_count', { outcome }), count, `${outcome}: _count`);
        assert.equal(delta(before, after, 'imageproxy_request_duration_seconds_bucket', { outcome, le: '+Inf' }), count, `${outcome}: le="+Inf"`);
        assert.equal(delta(before, after, 'imageproxy_responses_total', { outcome }), count, `${outcome}: responses_total agrees`);
        assert.ok(delta(before, after, 'imageproxy_request_duration_seconds_sum', { outcome }) > 0, `${outcome}: _sum grew`);
      }
      assert.equal(delta(before, after, 'imageproxy_request_duration_seconds_count'), 7, 'no other outcome counted');
    });
  });

  it('a miss queued behind a held fetch records its wait for the slot, and its whole time as the duration of a miss', async () => {
    await withServer('queued', { maxQueueWaitMs: 60_000 }, async (server, origin, release) => {
      const before = await scrape(server);
      const first = get(server, origin, '/held/first.jpg');
      await until(() => origin.requests.length === 1, { message: 'the first fetch held at the origin' });
      const queued = get(server, origin, '/queued.jpg');
      await until(() => fetchDepth(server), { message: 'the second miss in the fetch queue', done: (depth) => depth === 2 });
      // The stimulus, not a wait for a condition: the slot stays taken this long.
      const holdMs = 1500;
      const heldFrom = performance.now();
      await new Promise((resolve) => setTimeout(resolve, holdMs));
      release();
      const heldSeconds = (performance.now() - heldFrom) / 1000;
      assert.deepEqual([(await first).status, (await queued).status], [200, 200]);
      const after = await scrape(server);

      // Both requests were answered after the hold ended: each took at least the held time.
      assert.equal(delta(before, after, 'imageproxy_request_duration_seconds_count', { outcome: 'miss' }), 2);
      assert.equal(delta(before, after, 'imageproxy_request_duration_seconds_bucket', { outcome: 'miss', le: '1' }), 0);
      assert.ok(delta(before, after, 'imageproxy_request_duration_seconds_sum', { outcome: 'miss' }) >= 2 * heldSeconds);
      assert.equal(delta(before, after, 'imageproxy_queue_wait_seconds_count', { queue: 'fetch' }), 2);
      // The held fetch started at once; the queued one waited for most of the hold (its lock and
      // lookup come between its place in the queue, counted in the depth, and its wait).
      assert.equal(delta(before, after, 'imageproxy_queue_wait_seconds_bucket', { queue: 'fetch', le: '0.005' }), 1, 'the first at once');
      assert.equal(delta(before, after, 'imageproxy_queue_wait_seconds_bucket', { queue: 'fetch', le: '1' }), 1, 'the second waited over 1 s');
      assert.ok(delta(before, after, 'imageproxy_queue_wait_seconds_sum', { queue: 'fetch' }) >= 1);
      assert.equal(delta(before, after, 'imageproxy_queue_wait_seconds_count', { queue: 'resize' }), 0, 'full size: no resize');
      assert.equal(delta(before, after, 'imageproxy_queue_refusals_total'), 0);
    });
  });

  it('busy from the fetch queue: refused at once when full (no wait recorded), after maxQueueWaitMs when the wait times out (recorded)', async () => {
    await withServer('refused', { maxQueuedFetches: 1, maxQueueWaitMs: 2000 }, async (server, origin, release) => {
      const before = await scrape(server);
      const first = get(server, origin, '/held/first.jpg');
      await until(() => origin.requests.length === 1, { message: 'the first fetch held at the origin' });
      const timedOut = get(server, origin, '/times-out.jpg');
      await until(() => fetchDepth(server), { message: 'the second miss in the fetch queue', done: (depth) => depth === 2 });
      const full = await get(server, origin, '/queue-full.jpg');
      assert.equal(full.headers.get('x-imageproxy-error'), 'busy');
      assert.equal((await timedOut).headers.get('x-imageproxy-error'), 'busy');
      release();
      assert.equal((await first).status, 200);
      const after = await scrape(server);

      assert.equal(delta(before, after, 'imageproxy_queue_refusals_total', { queue: 'fetch', reason: 'full' }), 1);
      assert.equal(delta(before, after, 'imageproxy_queue_refusals_total', { queue: 'fetch', reason: 'timed_out' }), 1);
      assert.equal(delta(before, after, 'imageproxy_queue_refusals_total'), 2);
      // The first started at once, the timed-out one waited maxQueueWaitMs; the full one never waited.
      assert.equal(delta(before, after, 'imageproxy_queue_wait_seconds_count', { queue: 'fetch' }), 2);
      assert.equal(delta(before, after, 'imageproxy_queue_wait_seconds_bucket', { queue: 'fetch', le: '1' }), 1);
      assert.equal(delta(before, after, 'imageproxy_request_duration_seconds_count', { outcome: 'busy' }), 2);
      assert.equal(delta(before, after, 'imageproxy_request_duration_seconds_count', { outcome: 'miss' }), 1);
    });
  });

  it("a gate's waits and refusals, reported to the metrics' observer, land in queue_wait_seconds and queue_refusals_total", async () => {
    const metrics = createMetrics({ processMetrics: false });
    const observer: GateObserver = metrics.queueWaits;
    const gate = new AdmissionGate({ name: 'resize', maxActive: 1, maxQueued: 1, maxWaitMs: 200, retryAfterSeconds: 2, observer });
    const scrapeOwn = async (): Promise<Map<string, number>> => parseSamples(await metrics.registry.metrics());
    const running = await gate.admit();
    const waiting = gate.admit();
    assert.throws(() => gate.enter(), (error: unknown) => error instanceof ImageproxyError && error.code === 'busy');
    await assert.rejects(waiting, (error: unknown) => error instanceof ImageproxyError && error.code === 'busy');
    const queued = gate.enter();
    const admitted = queued.start();
    running();
    await admitted;
    queued.release();
    const samples = await scrapeOwn();
    assert.equal(sampleSum(samples, 'imageproxy_queue_wait_seconds_count', { queue: 'resize' }), 3, 'at once, timed out, admitted after a release');
    assert.equal(sampleSum(samples, 'imageproxy_queue_wait_seconds_bucket', { queue: 'resize', le: '0.1' }), 2, 'the timed-out one waited maxWaitMs');
    assert.equal(sampleSum(samples, 'imageproxy_queue_refusals_total', { queue: 'resize', reason: 'full' }), 1);
    assert.equal(sampleSum(samples, 'imageproxy_queue_refusals_total', { queue: 'resize', reason: 'timed_out' }), 1);
  });

  it('build_info: 1, labelled with the version, the configured engine and Node; a reload to another engine relabels it', async () => {
    const root = join(workDir, 'build-info');
    const server = await startLoopbackServer(root, SECRET, { statsRefreshSeconds: 0 });
    const buildInfo = async (): Promise<Array<[string, number]>> =>
      [...(await scrape(server))].filter(([key]) => key.startsWith('imageproxy_build_info{'));
    try {
      const expectedLabels = (engine: string): string => `imageproxy_build_info{version="${packageVersion()}",engine="${engine}",node="${process.version}"}`;
      assert.match(packageVersion(), /^\d+\.\d+\.\d+/);
      assert.deepEqual(await buildInfo(), [[expectedLabels('sharp'), 1]]);
      await server.reload(loopbackConfig(root, SECRET, { statsRefreshSeconds: 0, engine: 'jimp' }), [SECRET]);
      assert.deepEqual(await buildInfo(), [[expectedLabels('jimp'), 1]]);
    } finally {
      await server.close({ graceMs: 0 });
    }
  });
});
