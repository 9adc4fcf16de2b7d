/**
 * Memory and liveness under a burst of cold misses: starts `imageproxy serve` as a child
 * process (sharp, then jimp) in front of a loopback origin serving a noisy 12 MP JPEG of
 * just under 2 MiB under many URLs, fires N concurrent cold misses (full size and
 * 250x250 alternating), and samples the child's RSS (/proc/PID/status VmRSS) and the
 * latency of /healthz every 50 ms from separate prober processes, on the admin listener
 * (liveness) and on the public one. Prints peak RSS, the slowest /healthz answer and the
 * answers by status and error code. Not part of CI; needs `npm run build` first.
 *
 *   node --import tsx scripts/bench-memory.ts [requests=512] [cli=dist/server/cli.js] [engines=sharp,jimp] [formats=] [storage=tree]
 *
 * `storage`: `tree`, `s3` (a throwaway Ceph gateway of test/rgwHarness.ts, the images
 * in its bucket), or `s3-hung` (the same, the gateway hung with SIGSTOP for
 * GATEWAY_HUNG_MS from GATEWAY_HUNG_AFTER_MS into the burst: a slow gateway).
 *
 * With `formats` (say `avif,webp`) the server offers them and every thumbnail request
 * carries Chrome's `<img>` Accept, so each thumbnail miss also makes its AVIF file: the
 * burst with format negotiation on.
 *
 * The `cli` argument lets the same script measure another build (say an export of the
 * last commit built in /tmp) for a before/after comparison.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { Agent } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startBigPhotoOrigin, twelveMegapixelJpeg } from '../test/bigPhotoOrigin.js';
import { gatewayCliEnv, startGateway, type RunningGateway } from '../test/rgwHarness.js';
import { startHealthProbe } from './healthProbe.js';
import { rssKiB } from './benchMeasure.js';
import { coldMissPath, startServeChild, timedGet } from './serveChild.js';

const REQUESTS = Number(process.argv[2] ?? 512);
const CLI = resolve(process.argv[3] ?? fileURLToPath(new URL('../dist/server/cli.js', import.meta.url)));
const ENGINES = (process.argv[4] ?? 'sharp,jimp').split(',');
const FORMATS = process.argv[5] ?? '';
const STORAGE = process.argv[6] ?? 'tree';
if (!['tree', 's3', 's3-hung'].includes(STORAGE)) throw new Error(`storage must be tree, s3 or s3-hung, got ${STORAGE}`);
const GATEWAY_HUNG_AFTER_MS = 2000;
const GATEWAY_HUNG_MS = 4000;
const CHROME_IMAGE_ACCEPT = 'image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8';
const SECRET = 'bench-memory-secret';
const SAMPLE_MS = 50;

async function measure(engine: string, origin: URL, jpegBytes: number, gateway: RunningGateway | null): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'imageproxy-bench-memory-'));
  const storageEnv: Record<string, string> =
    gateway === null
      ? {}
      : {
          ...gatewayCliEnv(gateway, root),
          IMAGEPROXY_STORAGE_TYPE: 's3',
          IMAGEPROXY_STORAGE_ENDPOINT: gateway.endpoint,
          IMAGEPROXY_STORAGE_BUCKET: gateway.bucket,
          IMAGEPROXY_STORAGE_PREFIX: `${engine}-${Date.now()}/`,
        };
  const { child, url, adminUrl, errorLines, stop } = await startServeChild(CLI, [
    '--root', root, '--engine', engine, '--allow-private-networks', '--secret', SECRET, '--log-level', 'info',
  ], { IMAGEPROXY_FORMATS: FORMATS, ...storageEnv });
  const pid = child.pid as number;
  const idleKiB = await rssKiB(pid);
  let peakKiB = idleKiB;
  let sampling = true;
  // /healthz from a process of its own (scripts/healthProbe.ts): this one's burst would stall its probes.
  // Liveness on the admin listener (its own accept queue), and what a client of the
  // public port sees: that port's connections wait in its accept queue behind the burst's.
  const health = await startHealthProbe(adminUrl, SAMPLE_MS);
  const publicHealth = await startHealthProbe(url, SAMPLE_MS);
  const sampler = (async () => {
    while (sampling) {
      peakKiB = Math.max(peakKiB, await rssKiB(pid));
      await new Promise((wait) => setTimeout(wait, SAMPLE_MS));
    }
  })();
  const agent = new Agent({ keepAlive: false, maxSockets: Infinity });
  const atMs = Date.now();
  const started = performance.now();
  const hung =
    STORAGE === 's3-hung' && gateway !== null
      ? (async () => {
          await new Promise((wait) => setTimeout(wait, GATEWAY_HUNG_AFTER_MS));
          gateway.pauseGateway();
          await new Promise((wait) => setTimeout(wait, GATEWAY_HUNG_MS));
          gateway.resumeGateway();
        })()
      : Promise.resolve();
  const answers = await Promise.all(
    Array.from({ length: REQUESTS }, (_, index) => {
      const size = index % 2 === 0 ? 'full' : '250x250';
      const headers: Record<string, string> = FORMATS === '' || size === 'full' ? {} : { Accept: CHROME_IMAGE_ACCEPT };
      return timedGet(url, coldMissPath(SECRET, `${origin.href}photo-${engine}-${index}.jpg`, size, atMs), agent, headers);
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  await hung;
  sampling = false;
  await sampler;
  const healthFigures = await health.stop();
  const publicFigures = await publicHealth.stop();
  const probeText = (figures: typeof healthFigures): string =>
    `max ${figures.maxMs.toFixed(0)} ms (${figures.over100Ms} of ${figures.probes} probes over 100 ms, ${figures.failed} not 200)`;
  const byOutcome = new Map<string, number>();
  for (const answer of answers) {
    const type = answer.status === 200 ? ` ${answer.contentType}` : '';
    const outcome = `${answer.status}${answer.code === '' ? '' : ` ${answer.code}`}${type}`;
    byOutcome.set(outcome, (byOutcome.get(outcome) ?? 0) + 1);
  }
  const outcomes = [...byOutcome].sort().map(([outcome, count]) => `${outcome}: ${count}`).join(', ');
  // A `busy` at once is a full queue; one after seconds waited maxQueueWaitMs in a queue.
  const busyMs = answers.filter((answer) => answer.code === 'busy').map((answer) => answer.ms);
  const busyText = busyMs.length === 0 ? '' : ` (busy after ${(Math.min(...busyMs) / 1000).toFixed(1)}–${(Math.max(...busyMs) / 1000).toFixed(1)} s)`;
  const slowest = Math.max(...answers.map((answer) => answer.ms));
  console.log(
    `${engine}${FORMATS === '' ? '' : ` (formats ${FORMATS})`}${STORAGE === 'tree' ? '' : ` (storage ${STORAGE})`}: ${REQUESTS} cold misses of a ${(jpegBytes / 1048576).toFixed(2)} MiB 12 MP JPEG in ${seconds.toFixed(1)} s; ` +
      `RSS idle ${(idleKiB / 1024).toFixed(0)} MiB, peak ${(peakKiB / 1024).toFixed(0)} MiB; ` +
      `admin /healthz ${probeText(healthFigures)}; public /healthz ${probeText(publicFigures)}; slowest answer ${(slowest / 1000).toFixed(1)} s; ` +
      `error log lines ${errorLines()}; answers ${outcomes}${busyText}`,
  );
  await stop();
  await rm(root, { recursive: true, force: true });
}

const jpeg = await twelveMegapixelJpeg();
const origin = await startBigPhotoOrigin(jpeg);
console.log(`cli ${CLI}`);
const gateway = STORAGE === 'tree' ? null : await startGateway();
try {
  for (const engine of ENGINES) await measure(engine, origin.url('/'), jpeg.length, gateway);
} finally {
  await gateway?.stop();
  await origin.close();
}
