/**
 * PUT and GET of 100 KB objects on a throwaway Ceph RGW (test/rgwHarness.ts), through the
 * object store (server/storage/s3Store.ts) and through the bare SDK client as
 * ../shared/reference/ceph-rgw.md measured it, interleaved object by object so both see
 * the same machine load; plus a conditional create (If-None-Match: *) against a plain PUT.
 *
 * `--nginx`: a hit through nginx instead, `wrk -t2 -c64` on one ~60 KB image, one nginx
 * worker each, targets in turn within each round, rounds alternating the order, medians:
 * plain nginx serving the file (no checks), a tree hit (the rendered config, tree mode),
 * a bucket hit with nginx's cache warm (the rendered config, storage.type s3), and cold
 * (the same config with `proxy_cache off`: every hit a signed GET to the gateway).
 *
 *   node --import tsx scripts/bench-storage.ts [--objects 200]
 *   node --import tsx scripts/bench-storage.ts --nginx [--rounds 3] [--seconds 5]
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { keyDirectory, storageKey } from '../server/contract/layout.js';
import { encodeImageUrl, formatLink } from '../server/contract/link.js';
import { signLink } from '../server/contract/signing.js';
import { CONFIG_MODULE_NAME, NJS_MODULE_PATH, renderConfigModule, renderStandaloneConf, type NginxRenderInput } from '../server/deploy/nginxConfig.js';
import { S3_KEYS_FILE_NAME, renderS3KeysInclude } from '../server/deploy/s3Nginx.js';
import { imageObjectName } from '../server/storage/objectNames.js';
import { S3ObjectStore } from '../server/storage/s3Store.js';
import { makeTempRoot, removeTempRoot } from '../test/helpers.js';
import { NJS_DIR, freePort, nginxMissing, startNginx, testWorkerUser, type RunningNginx } from '../test/nginxHarness.js';
import { gatewayStoreSettings, startGateway } from '../test/rgwHarness.js';
import { cpuTicks, median } from './benchMeasure.js';
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

const { values: args } = parseArgs({
  options: { objects: { type: 'string', default: '200' }, nginx: { type: 'boolean', default: false }, rounds: { type: 'string', default: '3' }, seconds: { type: 'string', default: '5' } },
});
const count = Number(args.objects);
const loadAtStart = loadavg().map((value) => Number(value.toFixed(2)));

// Linux counts process CPU time in clock ticks of 1/100 s (USER_HZ) on every common build.
const TICK_MICROS = 10_000;

/** CPU ticks of an nginx's processes (master's children: workers, cache manager), or null off Linux. */
function nginxTicks(nginx: RunningNginx): number | null {
  const master = nginx.process.pid;
  if (master === undefined) return null;
  try {
    const pids = readFileSync(`/proc/${master}/task/${master}/children`, 'utf8').trim().split(/\s+/).filter((pid) => pid !== '').map(Number);
    let total = 0;
    for (const pid of pids) total += cpuTicks(pid) ?? Number.NaN;
    return Number.isNaN(total) ? null : total;
  } catch {
    return null;
  }
}

/**
 * One `wrk -t2 -c64` run: requests per second, and the nginx's CPU per request (µs;
 * steadier than the rate on a shared machine). Throws on any non-2xx answer.
 */
function wrkRun(url: string, seconds: number, nginx: RunningNginx | undefined): { rps: number; cpuMicros: number | null } {
  const before = nginx === undefined ? null : nginxTicks(nginx);
  const result = spawnSync('wrk', ['-t2', '-c64', `-d${seconds}s`, url], { encoding: 'utf8' });
  const after = nginx === undefined ? null : nginxTicks(nginx);
  const output = result.stdout ?? '';
  const rate = /Requests\/sec:\s+([\d.]+)/.exec(output);
  const count = /(\d+) requests in/.exec(output);
  if (rate === null || count === null || /Non-2xx or 3xx responses/.test(output)) throw new Error(`wrk failed for ${url}: ${output}${result.stderr ?? ''}`);
  const requests = Number(count[1]);
  return { rps: Number(rate[1]), cpuMicros: before === null || after === null || requests === 0 ? null : ((after - before) * TICK_MICROS) / requests };
}

/** The nginx rows (--nginx): see the header. */
async function benchNginxHits(rounds: number, seconds: number): Promise<BenchRow[]> {
  const missing = nginxMissing();
  if (missing !== null) throw new Error(missing);
  const work = await makeTempRoot('imageproxy-bench-storage-nginx-');
  const gateway = await startGateway();
  const store = new S3ObjectStore(gatewayStoreSettings(gateway, 'bench/'));
  const running: RunningNginx[] = [];
  try {
    const secret = 'bench-storage-secret';
    const imageUrl = 'http://images.example/bench.jpg';
    const key = storageKey(Buffer.from(imageUrl));
    const bytes = randomBytes(60 * 1024);
    const root = join(work, 'tree');
    await mkdir(join(root, keyDirectory('i', key)), { recursive: true });
    await writeFile(join(root, keyDirectory('i', key), `${key}.jpg`), bytes);
    await store.put(imageObjectName('i', key, key), bytes, { contentType: 'image/jpeg' });
    const extUrl = encodeImageUrl(imageUrl);
    const link = formatLink({ bucket: 'i', size: 'full', signature: signLink(secret, { bucket: 'i', extUrl, proxy: false }, Date.now()), extUrl, proxy: false });
    const user = testWorkerUser();
    const options = { workerProcesses: 1, ...(user === undefined ? {} : { user }) };

    const start = async (name: string, conf: (prefix: string, port: number) => string): Promise<{ base: string; nginx: RunningNginx }> => {
      const prefix = join(work, name);
      await mkdir(prefix, { recursive: true });
      const port = await freePort();
      const nginx = await startNginx(prefix, conf(prefix, port), port);
      running.push(nginx);
      return { base: `http://127.0.0.1:${port}`, nginx };
    };
    const rendered = async (name: string, s3: boolean, cache: boolean): Promise<{ base: string; nginx: RunningNginx }> => {
      const prefix = join(work, name);
      await mkdir(prefix, { recursive: true });
      const input = (port: number): NginxRenderInput => ({
        nginxListen: `127.0.0.1:${port}`,
        appListen: '127.0.0.1:9', // no miss happens: the image is stored
        root,
        internalPrefix: '/_imageproxy',
        njsDir: NJS_DIR,
        configModuleDir: prefix,
        buckets: { i: { legacySignatures: false } },
        sizes: [250],
        skewSeconds: 3600,
        secrets: [secret],
        ...(s3
          ? { s3: { endpoint: gateway.endpoint, bucket: gateway.bucket, region: gateway.region, prefix: 'bench/', forcePathStyle: true, cacheDir: join(prefix, 'cache'), cacheMaxSize: '1g' } }
          : {}),
      });
      await writeFile(join(prefix, CONFIG_MODULE_NAME), renderConfigModule(input(1)), { mode: 0o600 });
      await writeFile(join(prefix, S3_KEYS_FILE_NAME), renderS3KeysInclude(gateway.credentials), { mode: 0o600 });
      return start(name, (_, port) => {
        const text = renderStandaloneConf(input(port), prefix, options);
        // Cold: the rendered config without its cache, so each hit is the gateway's round trip.
        return cache ? text : text.replaceAll('proxy_cache imageproxy_s3;', 'proxy_cache off;');
      });
    };
    const plain = await start(
      'plain',
      (prefix, port) =>
        `load_module ${NJS_MODULE_PATH};\n${user === undefined ? '' : `user ${user};\n`}daemon off;\nworker_processes 1;\npid ${prefix}/nginx.pid;\nerror_log ${prefix}/error.log warn;\n` +
        `events { worker_connections 4096; }\nhttp {\n    access_log ${prefix}/access.log combined buffer=64k flush=1s;\n    sendfile on;\n    tcp_nopush on;\n` +
        `    types { image/jpeg jpg; }\n    server {\n        listen 127.0.0.1:${port};\n        root ${root};\n    }\n}\n`,
    );
    const tree = await rendered('tree', false, true);
    const warm = await rendered('warm', true, true);
    const cold = await rendered('cold', true, false);
    const targets = [
      { name: 'plain nginx, the same file (no checks)', url: `${plain.base}/${keyDirectory('i', key)}/${key}.jpg`, nginx: plain.nginx },
      { name: 'tree hit (rendered config, tree)', url: `${tree.base}${link}`, nginx: tree.nginx },
      { name: 'bucket hit, nginx cache warm', url: `${warm.base}${link}`, nginx: warm.nginx },
      // nginx's CPU only: the gateway's is not counted.
      { name: 'bucket hit, cold (proxy_cache off: signed GET to the gateway)', url: `${cold.base}${link}`, nginx: cold.nginx },
    ];
    const runs = targets.map(() => ({ rps: [] as number[], cpu: [] as number[] }));
    for (const target of targets) wrkRun(target.url, 1, undefined); // warm: connections, the cache, njs
    for (let round = 0; round < rounds; round += 1) {
      const order = round % 2 === 0 ? targets.map((_, index) => index) : targets.map((_, index) => targets.length - 1 - index);
      for (const index of order) {
        const run = wrkRun(targets[index]?.url ?? '', seconds, targets[index]?.nginx);
        runs[index]?.rps.push(run.rps);
        if (run.cpuMicros !== null) runs[index]?.cpu.push(run.cpuMicros);
        console.log(`round ${round + 1}: ${targets[index]?.name}: ${run.rps.toFixed(0)} req/s, ${run.cpuMicros?.toFixed(1) ?? '?'} µs CPU/request`);
      }
    }
    const section = `hit of a 60 KB image, ${rounds} × wrk -t2 -c64 -d${seconds}s, 1 nginx worker`;
    const treeRps = median(runs[1]?.rps ?? []);
    const treeCpu = median(runs[1]?.cpu ?? []);
    return targets.flatMap((target, index) => {
      const { rps, cpu } = runs[index] ?? { rps: [], cpu: [] };
      return [
        {
          section,
          name: target.name,
          value: median(rps),
          unit: 'req/s',
          ratio: median(rps) / treeRps,
          note: `runs ${rps.map((rate) => rate.toFixed(0)).join(', ')}; vs plain nginx ${(median(rps) / median(runs[0]?.rps ?? [])).toFixed(2)}`,
        },
        ...(cpu.length === 0
          ? []
          : [{ section: `${section}, nginx CPU per request (ratio: tree hit / this)`, name: target.name, value: median(cpu), unit: 'µs', ratio: treeCpu / median(cpu) }]),
      ];
    });
  } finally {
    for (const nginx of running) await nginx.stop();
    store.close();
    await gateway.stop();
    await removeTempRoot(work);
  }
}

if (args.nginx === true) {
  const rows = await benchNginxHits(Number(args.rounds), Number(args.seconds));
  console.log(`${cpus().length} cores; load average ${loadAtStart.join(' ')} at start, ${loadavg().map((value) => value.toFixed(2)).join(' ')} at end; node ${process.version}; ratio: against the tree hit`);
  printBenchTable(rows);
  process.exit(0);
}

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
