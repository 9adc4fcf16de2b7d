/**
 * What a waiting miss costs `serve`: an origin that never answers holds the one running
 * fetch, so every other cold miss waits in the queues (half full size, waiting for a
 * fetch slot; half 250x250, waiting for their original's fetch in both queues). The
 * child's RSS and open descriptors are read once the fetch queue holds each count of
 * misses (admin /metrics, `imageproxy_queue_depth`); the slope between the counts is the
 * cost of one more waiting miss. Not part of CI; needs `npm run build` first.
 *
 *   node --import tsx scripts/bench-queue-cost.ts [counts=500,1000,2000,4000] [cli=dist/server/cli.js]
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { Agent } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startOrigin } from '../test/origin.js';
import { rssKiB } from './benchMeasure.js';
import { coldMissPath, startServeChild, timedGet } from './serveChild.js';

const COUNTS = (process.argv[2] ?? '500,1000,2000,4000').split(',').map(Number);
const CLI = resolve(process.argv[3] ?? fileURLToPath(new URL('../dist/server/cli.js', import.meta.url)));
const SECRET = 'bench-queue-cost-secret';
const POLL_MS = 100;

/** The child's open descriptors (/proc/PID/fd). */
async function descriptors(pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`)).length;
}
const FILL_DEADLINE_MS = 120_000;

async function fetchQueueDepth(adminUrl: string): Promise<number> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  const match = /^imageproxy_queue_depth\{queue="fetch"\} (\d+)/m.exec(text);
  return match === null ? 0 : Number(match[1]);
}

// The origin holds every request until the bench ends: the one running fetch never ends.
const origin = await startOrigin(() => undefined);
const root = await mkdtemp(join(tmpdir(), 'imageproxy-bench-queue-cost-'));
const most = Math.max(...COUNTS);
const serve = await startServeChild(CLI, ['--root', root, '--allow-private-networks', '--secret', SECRET, '--log-level', 'info'], {
  IMAGEPROXY_MAX_CONCURRENT_FETCHES: '1',
  IMAGEPROXY_MAX_QUEUED_FETCHES: String(most),
  IMAGEPROXY_MAX_QUEUED_RESIZES: String(most),
  // The longest wait the config allows: nothing leaves the queue while it is measured.
  IMAGEPROXY_MAX_QUEUE_WAIT_MS: '119999',
  IMAGEPROXY_TOTAL_TIMEOUT_MS: '600000',
  IMAGEPROXY_SINGLE_FLIGHT_WAIT_MS: '600000',
});
const pid = serve.child.pid as number;
const agent = new Agent({ keepAlive: false, maxSockets: Infinity });
const atMs = Date.now();
console.log(`cli ${CLI}`);
const idleKiB = await rssKiB(pid);
const points: Array<{ count: number; kiB: number; fds: number }> = [{ count: 0, kiB: idleKiB, fds: await descriptors(pid) }];
let sent = 0;
const answers: Array<Promise<unknown>> = [];
for (const count of COUNTS) {
  for (; sent < count; sent += 1) {
    const size = sent % 2 === 0 ? 'full' : '250x250';
    answers.push(timedGet(serve.url, coldMissPath(SECRET, `${origin.url('/').href}held-${sent}.jpg`, size, atMs), agent));
  }
  const deadline = Date.now() + FILL_DEADLINE_MS;
  while ((await fetchQueueDepth(serve.adminUrl)) < count) {
    if (Date.now() > deadline) throw new Error(`the fetch queue did not reach ${count}`);
    await new Promise((wait) => setTimeout(wait, POLL_MS));
  }
  const kiB = await rssKiB(pid);
  const fds = await descriptors(pid);
  const previous = points[points.length - 1] as (typeof points)[number];
  points.push({ count, kiB, fds });
  console.log(
    `${count} misses waiting: RSS ${(kiB / 1024).toFixed(0)} MiB (idle ${(idleKiB / 1024).toFixed(0)} MiB); ` +
      `${((kiB - previous.kiB) / (count - previous.count)).toFixed(1)} KiB and ` +
      `${((fds - previous.fds) / (count - previous.count)).toFixed(1)} descriptors per waiting miss since ${previous.count}`,
  );
}
await serve.stop();
agent.destroy();
await Promise.allSettled(answers);
await origin.close();
await rm(root, { recursive: true, force: true });
