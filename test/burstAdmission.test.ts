/**
 * Bursts wait, they are not refused: `imageproxy serve` as a real process in front of a
 * loopback origin that holds its answers until the test lets them go. At the default
 * queue limits a burst of distinct cold misses larger than the old limit (8 running +
 * 64 queued fetches) all wait in the fetch queue at once and all answer 200; past a
 * configured small limit a new miss is still refused 503 `busy` at once, having fetched
 * nothing.
 */
import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { Agent } from 'node:http';
import { test } from 'node:test';
import sharp from 'sharp';
import { DEFAULT_CONFIG } from '../server/config/config.js';
import { lightRequest, startServe, writeServeConfig, type LightAnswer, type ServeProcess } from './faultHarness.js';
import { makeTempRoot, removeTempRoot, signedPath, until } from './helpers.js';
import { startOrigin, type Origin } from './origin.js';

const SECRET = 'burst-admission-secret';
const PNG = await sharp({ create: { width: 40, height: 30, channels: 3, background: '#36a' } }).png().toBuffer();
/** The defaults before misses were let wait: 8 running and 64 waiting fetches. */
const OLD_FETCH_PLACES = 8 + 64;
const BURST = 150;
const DEADLINE_MS = 60_000;
const POLL_MS = 50;

interface Setup {
  serve: ServeProcess;
  adminUrl: string;
  origin: Origin;
  /** The origin's requests not answered yet. */
  held: ServerResponse[];
  work: string;
}

/** An origin holding every request, and serve in front of it with `limits` over the defaults. */
async function setUp(limits: Record<string, number>): Promise<Setup> {
  const held: ServerResponse[] = [];
  const origin = await startOrigin((_request, response) => void held.push(response));
  const work = await makeTempRoot('imageproxy-burst-');
  try {
    const configPath = await writeServeConfig(work, { secrets: [SECRET], statsRefreshSeconds: 0, limits });
    const serve = await startServe(configPath, work);
    assert.ok(serve.adminUrl !== null, 'serve has an admin listener');
    return { serve, adminUrl: serve.adminUrl, origin, held, work };
  } catch (error) {
    // A serve that did not start leaves nothing running: the origin would keep the test process alive.
    await origin.close();
    await removeTempRoot(work);
    throw error;
  }
}

async function tearDown(setup: Setup): Promise<void> {
  await setup.serve.stop();
  await setup.origin.close();
  await removeTempRoot(setup.work);
}

function release(held: ServerResponse[]): void {
  for (const response of held.splice(0)) response.writeHead(200, { 'Content-Type': 'image/png', 'Content-Length': PNG.length }).end(PNG);
}

/** Misses in the fetch gate, running or waiting (admin /metrics, `imageproxy_queue_depth`). */
async function fetchDepth(adminUrl: string): Promise<number> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  const match = /^imageproxy_queue_depth\{queue="fetch"\} (\d+)$/m.exec(text);
  return match === null ? 0 : Number(match[1]);
}

function linksTo(origin: Origin, count: number, name: string): string[] {
  const atMs = Date.now();
  return Array.from({ length: count }, (_, index) =>
    signedPath({ secret: SECRET, imageUrl: origin.url(`/${name}-${index}.png`).href, atMs, size: index % 2 === 0 ? 'full' : '250x250' }),
  );
}

test(`${BURST} concurrent cold misses at the default queue limits all wait and all answer 200`, async () => {
  assert.ok(BURST > OLD_FETCH_PLACES, 'the burst is larger than the old fetch limit');
  assert.ok(BURST <= DEFAULT_CONFIG.limits.maxConcurrentFetches + DEFAULT_CONFIG.limits.maxQueuedFetches, 'the default fetch queue holds the burst');
  const setup = await setUp({});
  try {
    const agent = new Agent({ keepAlive: false, maxSockets: Infinity });
    const answers = Promise.all(linksTo(setup.origin, BURST, 'burst').map((link) => lightRequest(setup.serve.url, link, agent, { timeoutMs: 120_000 })));
    // Every miss of the burst is in the fetch gate at once, while the origin answers none.
    const running = DEFAULT_CONFIG.limits.maxConcurrentFetches;
    await until(async () => (await fetchDepth(setup.adminUrl)) === BURST && setup.held.length === running, {
      message: `${BURST} misses in the fetch gate, ${running} of them at the origin`,
      timeoutMs: DEADLINE_MS,
      intervalMs: POLL_MS,
    });
    assert.equal(setup.origin.requests.length, running, 'only the running fetches reached the origin');
    // Let the origin answer, now and as the waiting fetches get their turn.
    const releasing = setInterval(() => release(setup.held), POLL_MS);
    let settled: LightAnswer[];
    try {
      settled = await answers;
    } finally {
      clearInterval(releasing);
    }
    const statuses = settled.map((answer) => `${answer.status} ${String(answer.headers['x-imageproxy-error'] ?? '')}`.trim());
    assert.deepEqual(statuses, Array.from({ length: BURST }, () => '200'));
    assert.equal(setup.origin.requests.length, BURST, 'each image fetched once');
    assert.deepEqual(setup.serve.errorLines(), [], 'no error-level log line');
  } finally {
    release(setup.held);
    await tearDown(setup);
  }
});

test('past a configured small queue a new miss is refused 503 busy at once, having fetched nothing', async () => {
  const maxConcurrentFetches = 1;
  const maxQueuedFetches = 2;
  const setup = await setUp({ maxConcurrentFetches, maxQueuedFetches });
  try {
    const agent = new Agent({ keepAlive: false, maxSockets: Infinity });
    const [refusedLink, ...admittedLinks] = linksTo(setup.origin, 1 + maxConcurrentFetches + maxQueuedFetches, 'small');
    const admitted = Promise.all(admittedLinks.map((link) => lightRequest(setup.serve.url, link, agent, { timeoutMs: 120_000 })));
    await until(async () => (await fetchDepth(setup.adminUrl)) === maxConcurrentFetches + maxQueuedFetches && setup.held.length === maxConcurrentFetches, {
      message: 'the fetch gate full, its running fetch at the origin',
      timeoutMs: DEADLINE_MS,
      intervalMs: POLL_MS,
    });
    // Answered while the origin still holds the running fetch: refused, not queued.
    const refused = await lightRequest(setup.serve.url, refusedLink as string, agent, { timeoutMs: 30_000 });
    assert.equal(refused.status, 503);
    assert.equal(refused.headers['x-imageproxy-error'], 'busy');
    assert.equal(refused.headers['retry-after'], '2');
    assert.equal(setup.held.length, maxConcurrentFetches, 'the origin still holds the running fetch');
    assert.equal(setup.origin.requests.length, maxConcurrentFetches, 'the refused miss fetched nothing');
    const releasing = setInterval(() => release(setup.held), POLL_MS);
    try {
      const statuses = (await admitted).map((answer) => answer.status);
      assert.deepEqual(statuses, admittedLinks.map(() => 200), 'the queued misses were answered');
    } finally {
      clearInterval(releasing);
    }
  } finally {
    release(setup.held);
    await tearDown(setup);
  }
});
