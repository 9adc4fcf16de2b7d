/**
 * PUT and GET of 100 KB objects on a throwaway Ceph RGW (test/rgwHarness.ts), through the
 * object store (server/storage/s3Store.ts) and through the bare SDK client as
 * ../shared/reference/ceph-rgw.md measured it, interleaved object by object so both see
 * the same machine load; plus a conditional create (If-None-Match: *) against a plain PUT.
 *
 *   node --import tsx scripts/bench-storage.ts [--objects 200]
 */
import { randomBytes } from 'node:crypto';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { S3ObjectStore } from '../server/storage/s3Store.js';
import { gatewayStoreSettings, startGateway } from '../test/rgwHarness.js';
import { median } from './benchMeasure.js';
import { printBenchTable, type BenchRow } from './benchTable.js';

const OBJECT_BYTES = 100 * 1024;

function percentile(values: readonly number[], fraction: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))] ?? 0;
}

async function timed(work: () => Promise<unknown>): Promise<number> {
  const started = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - started) / 1e6;
}

/** `count` rounds of both operations, alternating which goes first so both see the same load. */
async function interleaved(
  first: (index: number) => Promise<unknown>,
  second: (index: number) => Promise<unknown>,
  firstTimes: number[],
  secondTimes: number[],
): Promise<void> {
  for (let index = 0; index < count; index += 1) {
    if (index % 2 === 0) {
      firstTimes.push(await timed(() => first(index)));
      secondTimes.push(await timed(() => second(index)));
    } else {
      secondTimes.push(await timed(() => second(index)));
      firstTimes.push(await timed(() => first(index)));
    }
  }
}

const { values: args } = parseArgs({ options: { objects: { type: 'string', default: '200' } } });
const count = Number(args.objects);
const loadAtStart = loadavg().map((value) => Number(value.toFixed(2)));

const startedAt = Date.now();
const gateway = await startGateway();
const startMs = Date.now() - startedAt;
const store = new S3ObjectStore(gatewayStoreSettings(gateway, 'bench/'));
const bare = new S3Client({
  endpoint: gateway.endpoint,
  region: gateway.region,
  forcePathStyle: true,
  credentials: gateway.credentials,
  requestChecksumCalculation: 'WHEN_REQUIRED',
  responseChecksumValidation: 'WHEN_REQUIRED',
});

const times = { storePut: [] as number[], barePut: [] as number[], storeGet: [] as number[], bareGet: [] as number[], create: [] as number[], put: [] as number[] };
try {
  const body = randomBytes(OBJECT_BYTES);
  // Warm both clients' connections and the gateway's pools before measuring.
  for (let index = 0; index < 10; index += 1) {
    await store.put(`warm/${index}`, body, { contentType: 'image/jpeg' });
    await bare.send(new PutObjectCommand({ Bucket: gateway.bucket, Key: `bare-warm/${index}`, Body: body, ContentType: 'image/jpeg' }));
  }
  await interleaved(
    (index) => store.put(`store/${index}`, body, { contentType: 'image/jpeg' }),
    (index) => bare.send(new PutObjectCommand({ Bucket: gateway.bucket, Key: `bare/${index}`, Body: body, ContentType: 'image/jpeg' })),
    times.storePut,
    times.barePut,
  );
  await interleaved(
    (index) => store.get(`store/${index}`, { maxBytes: OBJECT_BYTES }),
    async (index) => {
      const answer = await bare.send(new GetObjectCommand({ Bucket: gateway.bucket, Key: `bare/${index}` }));
      await answer.Body?.transformToByteArray();
    },
    times.storeGet,
    times.bareGet,
  );
  for (let index = 0; index < count; index += 1) {
    times.create.push(await timed(() => store.create(`create/${index}`, body, { contentType: 'image/jpeg' })));
    times.put.push(await timed(() => store.put(`put/${index}`, body, { contentType: 'image/jpeg' })));
  }
  const secondCreate = await store.create('create/0', body, { contentType: 'image/jpeg' });
  if (secondCreate !== 'exists') throw new Error(`a second create answered ${secondCreate}, not exists: If-None-Match is not honoured`);
} finally {
  store.close();
  bare.destroy();
  await gateway.stop();
}

const row = (section: string, name: string, values: number[], reference?: number[]): BenchRow => ({
  section,
  name,
  value: median(values),
  unit: 'ms',
  ...(reference === undefined ? {} : { ratio: median(values) / median(reference) }),
  note: `p90 ${percentile(values, 0.9).toFixed(2)} ms, ${values.length} objects`,
});
const rows: BenchRow[] = [
  { section: 'gateway', name: 'start: monitor, OSD, gateway, user, bucket', value: startMs, unit: 'ms' },
  row('PUT 100 KB', 'bare SDK client (the reference doc\'s way)', times.barePut),
  row('PUT 100 KB', 'S3ObjectStore.put', times.storePut, times.barePut),
  row('GET 100 KB', 'bare SDK client', times.bareGet),
  row('GET 100 KB', 'S3ObjectStore.get (capped read)', times.storeGet, times.bareGet),
  row('create 100 KB', 'S3ObjectStore.put', times.put),
  row('create 100 KB', 'S3ObjectStore.create (If-None-Match: *)', times.create, times.put),
];
console.log(`${cpus().length} cores; load average ${loadAtStart.join(' ')} at start, ${loadavg().map((value) => value.toFixed(2)).join(' ')} at end; node ${process.version}`);
printBenchTable(rows);
