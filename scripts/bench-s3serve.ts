/**
 * `serve` on a bucket against `serve` on the tree, side by side in one run: a throwaway
 * Ceph RGW (test/rgwHarness.ts), a loopback origin, and three servers in this process
 * (delivery direct): one on a temp tree, two on the same bucket. Misses and hits are
 * interleaved image by image (the tree first on even images, the bucket first on odd
 * ones), so both see the same machine load; then bursts of new images, each asked of
 * both bucket servers at once, count the origin's requests per image (the duplicate
 * fetches two nodes make when neither has the image yet).
 *
 *   node --import tsx scripts/bench-s3serve.ts [--images 60] [--burst 100] [--rounds 3]
 */
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import type { RunningServer } from '../server/http/server.js';
import { makeTempRoot, removeTempRoot, request, signedPath, startLoopbackServer } from '../test/helpers.js';
import { startOrigin } from '../test/origin.js';
import { startGateway } from '../test/rgwHarness.js';
import { median } from './benchMeasure.js';
import { printBenchTable, type BenchRow } from './benchTable.js';

const SECRET = 'bench-s3serve-secret';

const { values: args } = parseArgs({
  options: { images: { type: 'string', default: '60' }, burst: { type: 'string', default: '100' }, rounds: { type: 'string', default: '3' } },
});
const imageCount = Number(args.images);
const burstSize = Number(args.burst);
const rounds = Number(args.rounds);
const loadAtStart = loadavg().map((value) => Number(value.toFixed(2)));

// One photo-like JPEG for every URL: each URL is its own key, so its own miss.
const photo = await sharp({ create: { width: 800, height: 600, channels: 3, background: '#446688', noise: { type: 'gaussian', mean: 128, sigma: 30 } } })
  .blur(2)
  .jpeg({ quality: 85 })
  .toBuffer();

const gateway = await startGateway();
const work = await makeTempRoot('imageproxy-bench-s3serve-');
process.env.AWS_ACCESS_KEY_ID = gateway.credentials.accessKeyId;
process.env.AWS_SECRET_ACCESS_KEY = gateway.credentials.secretAccessKey;
process.env.AWS_EC2_METADATA_DISABLED = 'true';
process.env.AWS_SHARED_CREDENTIALS_FILE = join(work, 'no-credentials');
process.env.AWS_CONFIG_FILE = join(work, 'no-config');
const origin = await startOrigin((_incoming, response) => {
  response.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(photo);
});
const bucketStorage = { type: 's3', endpoint: gateway.endpoint, bucket: gateway.bucket, prefix: 'bench' } as const;
const servers: RunningServer[] = [];
const start = async (name: string, storage?: typeof bucketStorage): Promise<RunningServer> => {
  const server = await startLoopbackServer(join(work, name), SECRET, storage === undefined ? {} : { storage });
  servers.push(server);
  return server;
};

const linkOf = (path: string, size?: string): string =>
  signedPath({ secret: SECRET, imageUrl: origin.url(path).href, atMs: Date.now(), ...(size === undefined ? {} : { size }) });

async function timedGet(server: RunningServer, link: string): Promise<number> {
  const started = process.hrtime.bigint();
  const answer = await request(server.url, link);
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  if (answer.status !== 200) throw new Error(`${link}: ${answer.status} ${answer.body.toString().slice(0, 200)}`);
  return ms;
}

type Case = 'full-size miss' | 'thumbnail miss (cold)' | 'full-size hit' | 'thumbnail hit';
const times = new Map<string, number[]>();
const record = (kind: Case, where: 'tree' | 'bucket', ms: number): void => {
  const id = `${kind}\t${where}`;
  times.set(id, [...(times.get(id) ?? []), ms]);
};

const fetchTotals: number[] = [];
const duplicateTotals: number[] = [];
let treeServer: RunningServer;
try {
  treeServer = await start('tree');
  const [first, second] = [await start('node-a', bucketStorage), await start('node-b', bucketStorage)];
  // Warm both: connections to the gateway, the engine, the origin.
  for (let index = 0; index < 5; index += 1) {
    await timedGet(treeServer, linkOf(`/warm-tree-${index}.jpg`, '250x250'));
    await timedGet(first, linkOf(`/warm-bucket-${index}.jpg`, '250x250'));
  }
  for (let index = 0; index < imageCount; index += 1) {
    const order: Array<['tree' | 'bucket', RunningServer]> = index % 2 === 0 ? [['tree', treeServer], ['bucket', first]] : [['bucket', first], ['tree', treeServer]];
    for (const [where, server] of order) {
      const full = `/full-${where}-${index}.jpg`;
      const thumb = `/thumb-${where}-${index}.jpg`;
      record('full-size miss', where, await timedGet(server, linkOf(full)));
      record('thumbnail miss (cold)', where, await timedGet(server, linkOf(thumb, '250x250')));
      record('full-size hit', where, await timedGet(server, linkOf(full)));
      record('thumbnail hit', where, await timedGet(server, linkOf(thumb, '250x250')));
    }
  }
  for (let round = 0; round < rounds; round += 1) {
    const paths = Array.from({ length: burstSize }, (_, index) => `/burst-${round}-${index}.jpg`);
    const before = origin.requests.length;
    await Promise.all(paths.flatMap((path) => [first, second].map((server) => timedGet(server, linkOf(path)))));
    const fetched = origin.requests.length - before;
    fetchTotals.push(fetched);
    duplicateTotals.push(fetched - burstSize);
  }
} finally {
  await Promise.all(servers.map((server) => server.close({ graceMs: 100 })));
  await origin.close();
  await gateway.stop();
  await removeTempRoot(work);
}

const rows: BenchRow[] = [];
for (const kind of ['full-size miss', 'thumbnail miss (cold)', 'full-size hit', 'thumbnail hit'] as const) {
  const tree = times.get(`${kind}\ttree`) ?? [];
  const bucket = times.get(`${kind}\tbucket`) ?? [];
  rows.push({ section: kind, name: 'tree', value: median(tree), unit: 'ms', note: `${tree.length} requests` });
  rows.push({ section: kind, name: 'bucket (Ceph RGW)', value: median(bucket), unit: 'ms', ratio: median(bucket) / median(tree), note: `${bucket.length} requests` });
}
rows.push({
  section: `${burstSize} new images, each asked of two bucket servers at once`,
  name: 'origin requests per burst',
  value: median(fetchTotals),
  unit: 'requests',
  note: `rounds ${fetchTotals.join(', ')}; duplicates ${duplicateTotals.join(', ')}`,
});
console.log(`${cpus().length} cores; load average ${loadAtStart.join(' ')} at start, ${loadavg().map((value) => value.toFixed(2)).join(' ')} at end; node ${process.version}`);
printBenchTable(rows);
