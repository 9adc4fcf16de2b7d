/**
 * What a cache hit costs, side by side on the same stored file (a ~60 KB JPEG of noise):
 *
 *   (a) plain nginx serving the file as static content, no checks: the reference
 *   (b) our nginx, first hit: the njs link check, no cache in front (nginx.cacheSeconds 0)
 *   (b') our nginx, first hit through the cache: a new request line each time (a query
 *       string), so each is checked by njs and then stored in the cache
 *   (c) our nginx, repeated hit: the same link again and again, served from the cache
 *   (d) the app standalone (`imageproxy serve`, delivery direct), same worker count
 *   (e) our nginx, thumbnail hit, formats [] (not negotiated), Chrome's `Accept`
 *   (f) our nginx, thumbnail hit negotiated (formats avif,webp): Chrome's `Accept` gets
 *       the avif class file. (e) and (f) serve the same bytes as (a): the thumbnail and
 *       the class file are copies of the stored original, so only the work differs.
 *
 * each with 1 worker and with `worker_processes auto` (the app: `--workers` 1 and the
 * number of cores). `wrk -t2 -c64` on each target in turn, rounds alternating, medians;
 * ratios against (a) of the same worker setting. Also the nginx workers' CPU time per
 * request from /proc: steadier than the rate on a shared machine.
 *
 *   npm run build && node --import tsx scripts/bench-nginx.ts [--quick]
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { classVariantStem, keyDirectory, storageKey } from '../server/contract/layout.js';
import { encodeImageUrl, formatLink } from '../server/contract/link.js';
import {
  CONFIG_MODULE_NAME,
  KNOWN_ACCEPT_HEADERS,
  renderConfigModule,
  renderStandaloneConf,
  type NginxRenderInput,
} from '../server/deploy/nginxConfig.js';
import { signLink } from '../server/contract/signing.js';
import { NJS_DIR, commandWorks, freePort, nginxMissing, startNginx, testWorkerUser, type RunningNginx } from '../test/nginxHarness.js';
import type { BenchRow } from './benchTable.js';
import { cpuTicks, median } from './benchMeasure.js';

const SECRET = 'bench-secret';
const CLI = fileURLToPath(new URL('../dist/server/cli.js', import.meta.url));
// Linux counts process CPU time in clock ticks of 1/100 s (USER_HZ) on every common build.
const TICK_MICROS = 10_000;

export interface BenchNginxOptions {
  /** Rounds per target and worker setting (default 3). */
  rounds?: number;
  /** Seconds per wrk run (default 5). */
  seconds?: number;
  /** Print each wrk run as it ends (default true). */
  verbose?: boolean;
}

/** A JPEG of noise, about 60 KB (noise hardly compresses, so the size is predictable). */
async function benchJpeg(): Promise<Buffer> {
  const { default: sharp } = await import('sharp');
  const side = 265;
  return sharp(randomBytes(side * side * 3), { raw: { width: side, height: side, channels: 3 } })
    .jpeg({ quality: 90 })
    .toBuffer();
}

/** The workers of an nginx master, from /proc (empty off Linux). */
function workerPids(masterPid: number | undefined): number[] {
  if (masterPid === undefined) return [];
  try {
    return readFileSync(`/proc/${masterPid}/task/${masterPid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter((pid) => pid !== '')
      .map(Number);
  } catch {
    return [];
  }
}

function totalTicks(pids: readonly number[]): number | null {
  let total = 0;
  for (const pid of pids) {
    const ticks = cpuTicks(pid);
    if (ticks === null) return null;
    total += ticks;
  }
  return pids.length === 0 ? null : total;
}

interface WrkRun {
  rps: number;
  /** CPU time of the measured processes per request, µs; null when /proc does not tell. */
  cpuMicros: number | null;
}

/** One wrk run against `url` (with a Lua script when given), CPU of `pids` meanwhile. */
function wrkRun(url: string, seconds: number, pids: readonly number[], script?: string, headers: readonly string[] = []): WrkRun {
  const before = totalTicks(pids);
  const args = ['-t2', '-c64', `-d${seconds}s`, ...(script === undefined ? [] : ['-s', script]), ...headers.flatMap((header) => ['-H', header]), url];
  const result = spawnSync('wrk', args, { encoding: 'utf8' });
  const after = totalTicks(pids);
  const output = result.stdout ?? '';
  const rate = /Requests\/sec:\s+([\d.]+)/.exec(output);
  const count = /(\d+) requests in/.exec(output);
  if (rate === null || count === null || /Non-2xx or 3xx responses/.test(output)) {
    throw new Error(`wrk failed for ${url}: ${output}${result.stderr ?? ''}`);
  }
  const requests = Number(count[1]);
  const cpuMicros = before === null || after === null || requests === 0 ? null : ((after - before) * TICK_MICROS) / requests;
  return { rps: Number(rate[1]), cpuMicros };
}

/** A wrk script giving each request a request line of its own (thread id + counter). */
const UNIQUE_QUERY_SCRIPT = `
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function init(args)
  counter = 0
end
function request()
  counter = counter + 1
  return wrk.format("GET", wrk.path .. "?" .. id .. "-" .. counter)
end
`;

interface ServeProcess {
  child: ChildProcessWithoutNullStreams;
  url: string;
}

function startServe(root: string, workers: number): Promise<ServeProcess> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('IMAGEPROXY_')));
  const child = spawn(
    process.execPath,
    [CLI, 'serve', '--listen', '127.0.0.1:0', '--admin-listen', 'off', '--root', root, '--delivery', 'direct', '--allow-private-networks', '--secret', SECRET, '--log-level', 'info', '--workers', String(workers)],
    { env: { ...env, IMAGEPROXY_STATS_REFRESH_SECONDS: '0', IMAGEPROXY_HEAL_INTERVAL_SECONDS: '0' } },
  );
  return new Promise((resolve, reject) => {
    let pending = '';
    child.stdout.on('data', (chunk: Buffer) => {
      pending += chunk.toString('utf8');
      const match = /listening on (http:\/\/[0-9.:]+)/.exec(pending);
      if (match?.[1] !== undefined) resolve({ child, url: match[1] });
    });
    child.once('exit', (code) => reject(new Error(`serve --workers ${workers} exited ${code}`)));
  });
}

async function stopServe(serve: ServeProcess): Promise<void> {
  if (serve.child.exitCode !== null) return;
  serve.child.kill('SIGTERM');
  await new Promise((resolve) => serve.child.once('exit', resolve));
}

interface Target {
  key: string;
  name: string;
  url: string;
  pids: () => number[];
  script?: string;
  /** Request headers, `Name: value`. */
  headers?: string[];
}

/** Chrome's Accept for an <img>. */
const CHROME_ACCEPT = `Accept: ${KNOWN_ACCEPT_HEADERS[0] ?? ''}`;
const THUMBNAIL_LABEL = '250x250';

/** Why the hit bench cannot run here, or null. */
export function benchNginxMissing(): string | null {
  const missing = nginxMissing();
  if (missing !== null) return missing;
  if (!(commandWorks('wrk', ['-v']) || existsSync('/usr/bin/wrk'))) return 'wrk not found: apt-get install wrk';
  if (!existsSync(CLI)) return `${CLI} not found: npm run build`;
  return null;
}

export async function benchNginx(options: BenchNginxOptions = {}): Promise<BenchRow[]> {
  const missing = benchNginxMissing();
  if (missing !== null) throw new Error(missing);
  const rounds = options.rounds ?? 3;
  const seconds = options.seconds ?? 5;
  const verbose = options.verbose ?? true;
  const work = await mkdtemp(join(tmpdir(), 'imageproxy-bench-hit-'));
  await chmod(work, 0o755); // nginx's workers (nobody, as root) enter it
  const root = join(work, 'root');
  const plainRoot = join(work, 'plain');
  const jpeg = await benchJpeg();
  const origin: Server = createServer((_request, response) => response.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg));
  await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
  const imageUrl = `http://127.0.0.1:${(origin.address() as AddressInfo).port}/bench.jpg`;
  const extUrl = encodeImageUrl(imageUrl);
  const signature = signLink(SECRET, { bucket: 'i', extUrl, proxy: false }, Date.now());
  const path = formatLink({ bucket: 'i', size: 'full', signature, extUrl, proxy: false });
  const thumbnailPath = formatLink({ bucket: 'i', size: THUMBNAIL_LABEL, signature, extUrl, proxy: false });
  const running: { nginx: RunningNginx[]; serve: ServeProcess[] } = { nginx: [], serve: [] };
  const rows: BenchRow[] = [];
  try {
    // The app stores the original as it would for a visitor; every target serves that file.
    const storing = await startServe(root, 1);
    running.serve.push(storing);
    const first = await fetch(`${storing.url}${path}`);
    if (first.status !== 200) throw new Error(`storing the original answered ${first.status}`);
    await first.arrayBuffer();
    await stopServe(storing);
    running.serve = [];
    const key = storageKey(Buffer.from(imageUrl));
    await mkdir(plainRoot, { recursive: true });
    const keyDir = join(root, keyDirectory('i', key));
    await copyFile(join(keyDir, `${key}.jpg`), join(plainRoot, 'bench.jpg'));
    // The same bytes as the thumbnail and as the avif class file (served as image/avif):
    // (e) and (f) send what (a) sends.
    await copyFile(join(keyDir, `${key}.jpg`), join(keyDir, `${key}.${THUMBNAIL_LABEL}.jpg`));
    await copyFile(join(keyDir, `${key}.jpg`), join(keyDir, `${classVariantStem(key, THUMBNAIL_LABEL, 'avif')}.avif`));
    const script = join(work, 'unique-query.lua');
    await writeFile(script, UNIQUE_QUERY_SCRIPT);

    for (const workers of [1, 'auto'] as const) {
      const appWorkers = workers === 'auto' ? availableParallelism() : 1;
      const section = `hit, ${(jpeg.length / 1000).toFixed(0)} KB JPEG, ${rounds} × wrk -t2 -c64 -d${seconds}s, ${workers === 1 ? '1 worker' : `worker_processes auto (${availableParallelism()}), app --workers ${appWorkers}`}`;
      const [cachedPort, plainPort, checkedPort, negotiatingPort, appPort] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
      const cachedPrefix = join(work, `cached-${workers}`);
      const checkedPrefix = join(work, `checked-${workers}`);
      const negotiatingPrefix = join(work, `negotiating-${workers}`);
      const base = (prefix: string, port: number, cacheSeconds: number, formats: NginxRenderInput['formats'] = []): NginxRenderInput => ({
        nginxListen: `127.0.0.1:${port}`,
        appListen: `127.0.0.1:${appPort}`, // never contacted: every request is a hit
        root,
        internalPrefix: '/_imageproxy',
        njsDir: NJS_DIR,
        configModuleDir: prefix,
        buckets: { i: { legacySignatures: false } },
        sizes: [150, 200, 250],
        skewSeconds: 3600,
        secrets: [SECRET],
        formats,
        cache: { directory: join(prefix, 'verdict-cache'), maxSize: '256m', seconds: cacheSeconds, checkedSocket: join(prefix, 'checked.sock'), verdictSocket: join(prefix, 'verdict.sock') },
      });
      // Same http-level settings (sendfile, access log) and the same open_file_cache.
      const plainServer = [
        'server {',
        `    listen 127.0.0.1:${plainPort};`,
        `    root "${plainRoot}";`,
        '    open_file_cache max=10000 inactive=60s;',
        '    open_file_cache_valid 1s;',
        '    location / { }',
        '}',
      ].join('\n');
      const user = testWorkerUser();
      const standalone = { workerProcesses: workers, ...(user === undefined ? {} : { user }) };
      const started: RunningNginx[] = [];
      for (const [prefix, port, cacheSeconds, extraHttp, formats] of [
        [cachedPrefix, cachedPort, 2, plainServer, []],
        [checkedPrefix, checkedPort, 0, undefined, []],
        [negotiatingPrefix, negotiatingPort, 0, undefined, ['avif', 'webp']],
      ] as const) {
        await mkdir(prefix, { recursive: true });
        const input = base(prefix, port, cacheSeconds, formats);
        await writeFile(join(prefix, CONFIG_MODULE_NAME), renderConfigModule(input), { mode: 0o600 });
        // The cache keys a link without its query string; here the query makes each (b')
        // request a link of its own, as a page of never-seen links would be.
        const conf = renderStandaloneConf(input, prefix, { ...standalone, ...(extraHttp === undefined ? {} : { extraHttp }) })
          .replace('proxy_cache_key $imageproxy_link;', 'proxy_cache_key $request_uri;');
        const nginx = await startNginx(prefix, conf, port);
        started.push(nginx);
        running.nginx.push(nginx);
      }
      const [cachedNginx, checkedNginx, negotiatingNginx] = started as [RunningNginx, RunningNginx, RunningNginx];
      const serve = await startServe(root, appWorkers);
      running.serve.push(serve);
      const targets: Target[] = [
        { key: 'a', name: '(a) plain nginx, static file', url: `http://127.0.0.1:${plainPort}/bench.jpg`, pids: () => workerPids(cachedNginx.process.pid) },
        { key: 'b', name: '(b) our nginx, first hit (njs check)', url: `http://127.0.0.1:${checkedPort}${path}`, pids: () => workerPids(checkedNginx.process.pid) },
        {
          key: "b'",
          name: "(b') our nginx, first hit through the cache (njs check through the cache)",
          url: `http://127.0.0.1:${cachedPort}${path}`,
          pids: () => workerPids(cachedNginx.process.pid),
          script,
        },
        { key: 'c', name: '(c) our nginx, repeated hit (from the cache)', url: `http://127.0.0.1:${cachedPort}${path}`, pids: () => workerPids(cachedNginx.process.pid) },
        { key: 'd', name: '(d) the app standalone (delivery direct)', url: `${serve.url}${path}`, pids: () => [] },
        {
          key: 'e',
          name: "(e) our nginx, thumbnail hit, formats [] (Chrome's Accept)",
          url: `http://127.0.0.1:${checkedPort}${thumbnailPath}`,
          pids: () => workerPids(checkedNginx.process.pid),
          headers: [CHROME_ACCEPT],
        },
        {
          key: 'f',
          name: "(f) our nginx, negotiated thumbnail hit, formats avif,webp (Chrome's Accept: the avif file)",
          url: `http://127.0.0.1:${negotiatingPort}${thumbnailPath}`,
          pids: () => workerPids(negotiatingNginx.process.pid),
          headers: [CHROME_ACCEPT],
        },
      ];
      const runs = new Map<string, WrkRun[]>(targets.map((target) => [target.key, []]));
      for (let round = 0; round < rounds; round += 1) {
        for (const target of targets) {
          const run = wrkRun(target.url, seconds, target.pids(), target.script, target.headers);
          runs.get(target.key)?.push(run);
          if (verbose) {
            const cpu = run.cpuMicros === null ? '' : `, ${run.cpuMicros.toFixed(1)} µs nginx CPU/request`;
            console.log(`${section} round ${round + 1}: ${target.name}: ${run.rps.toFixed(0)} req/s${cpu}`);
          }
        }
      }
      const plainRuns = runs.get('a') ?? [];
      const plainRps = median(plainRuns.map((run) => run.rps));
      const cpuOf = (targetRuns: readonly WrkRun[]): number | null =>
        targetRuns.length > 0 && targetRuns.every((run) => run.cpuMicros !== null) ? median(targetRuns.map((run) => run.cpuMicros ?? 0)) : null;
      const plainCpu = cpuOf(plainRuns);
      const cpuRows: BenchRow[] = [];
      for (const target of targets) {
        const targetRuns = runs.get(target.key) ?? [];
        const rps = median(targetRuns.map((run) => run.rps));
        rows.push({ section, name: target.name, value: rps, unit: 'req/s', ...(target.key === 'a' ? {} : { ratio: rps / plainRps }) });
        const cpu = cpuOf(targetRuns);
        // CPU per request is steadier than the rate on a shared machine; plain / ours is
        // the rate ratio nginx would reach when CPU-bound.
        if (cpu !== null && plainCpu !== null && target.key !== 'd') {
          cpuRows.push({ section: `${section}: nginx CPU per request`, name: target.name, value: cpu, unit: 'µs', ...(target.key === 'a' ? {} : { ratio: plainCpu / cpu }) });
        }
      }
      rows.push(...cpuRows);
      await stopServe(serve);
      for (const nginx of started) await nginx.stop();
      running.nginx = [];
      running.serve = [];
    }
    return rows;
  } finally {
    for (const serve of running.serve) await stopServe(serve);
    for (const nginx of running.nginx) await nginx.stop();
    await new Promise<void>((resolve) => origin.close(() => resolve()));
    await rm(work, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { printBenchTable } = await import('./benchTable.js');
  const quick = process.argv.includes('--quick');
  printBenchTable(await benchNginx(quick ? { rounds: 1, seconds: 2 } : {}));
}
