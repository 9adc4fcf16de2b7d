/**
 * What a hit costs, side by side, with `worker_processes auto` and the same access log:
 *
 *   plain nginx serving the same files as static content, no checks: the reference of
 *     each workload
 *   the njs floor: plain nginx with a minimal `js_set` handler that computes one
 *     HMAC-SHA256 over a fixed string and compares 16 base64url characters, on the same
 *     thumbnail: what any njs check costs at least
 *   our nginx (the rendered config, njs link check, try_files) on
 *     - one thumbnail link (250x250, a few KB) again and again
 *     - 1 000 distinct thumbnail links round-robin (a page of thumbnails)
 *     - one full-size link (the original, ~100 KB)
 *   and, with formats avif,webp, the same thumbnail link negotiated: Chrome's `Accept`
 *   gets the avif class file (a copy of the thumbnail's bytes, so only the work differs)
 *
 * `wrk -t2 -c64` on each target in turn (a workload's rows back to back), rounds
 * alternating, medians; each row as a ratio
 * to plain nginx on the same workload, and the nginx workers' CPU time per request from
 * /proc beside it (plain / ours: steadier than the rate on a shared machine).
 * `--compare-njs DIR` adds our three rows again with the imageproxy.js in DIR (an earlier
 * version, same generated config module): before and after in one run.
 *
 *   npm run build && node --import tsx scripts/bench-nginx.ts [--quick] [--rounds N] [--compare-njs DIR]
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
import { classVariantStem, fileStem, imageFileName, keyDirectory, storageKey } from '../server/contract/layout.js';
import { encodeImageUrl, formatLink } from '../server/contract/link.js';
import {
  CONFIG_MODULE_NAME,
  KNOWN_ACCEPT_HEADERS,
  NJS_MODULE_PATH,
  WORKER_CONNECTIONS,
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
const THUMBNAIL_SIZE = '250x250';
const PAGE_LINKS = 1000;
/** Chrome's `<img>` Accept: the class `avif` with formats avif,webp. */
const CHROME_ACCEPT = `Accept: ${KNOWN_ACCEPT_HEADERS[0] ?? ''}`;

export interface BenchNginxOptions {
  /** Rounds per target (default 3). */
  rounds?: number;
  /** Seconds per wrk run (default 5). */
  seconds?: number;
  /** Print each wrk run as it ends (default true). */
  verbose?: boolean;
  /** A directory holding another imageproxy.js to measure beside this one ("before"). */
  compareNjsDir?: string;
}

/**
 * A photo-like JPEG of about 100 KB (1200×900): smooth colour fields with a little grain,
 * so its 250x250 thumbnail is a few KB, as a real one is.
 */
async function benchJpeg(): Promise<Buffer> {
  const { default: sharp } = await import('sharp');
  const [width, height, coarse, grain] = [1200, 900, 24, 6];
  const pixels = await sharp(randomBytes(coarse * 18 * 3), { raw: { width: coarse, height: 18, channels: 3 } })
    .resize(width, height, { kernel: 'cubic' })
    .raw()
    .toBuffer();
  const noise = randomBytes(pixels.length);
  for (let index = 0; index < pixels.length; index += 1) {
    pixels[index] = Math.max(0, Math.min(255, (pixels[index] ?? 0) + ((noise[index] ?? 0) % grain) - grain / 2));
  }
  return sharp(pixels, { raw: { width, height, channels: 3 } }).jpeg({ quality: 85 }).toBuffer();
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

/**
 * A wrk script asking for `paths` in turn, each thread from its own start. The requests
 * are formatted once, in init: wrk.format per request would make wrk, not nginx, the
 * bound of the round-robin rows.
 */
function roundRobinScript(paths: readonly string[]): string {
  return [
    `local paths = { ${paths.map((path) => JSON.stringify(path)).join(', ')} }`,
    'local requests = {}',
    'local count = #paths',
    'local index = 0',
    'local threads = 0',
    'function setup(thread)',
    '  threads = threads + 1',
    '  thread:set("start", threads * 397)',
    'end',
    'function init(args)',
    '  for i = 1, count do requests[i] = wrk.format("GET", paths[i]) end',
    '  index = start or 0',
    'end',
    'function request()',
    '  index = index % count + 1',
    '  return requests[index]',
    'end',
    '',
  ].join('\n');
}

/**
 * The njs floor: one HMAC-SHA256 over a fixed string, 16 base64url characters compared.
 * Any link check does at least this much in njs.
 */
const FLOOR_SCRIPT = `var crypto = require('crypto');
function check(r) {
    var signature = crypto.createHmac('sha256', 'bench-secret202650').update('i/aHR0cDovLzEyNy4wLjAuMS9iZW5jaC5qcGc').digest('base64url');
    return signature.substring(0, 16) === 'AAAAAAAAAAAAAAAA' ? '' : 'pass';
}
export default { check: check };
`;

interface ServeProcess {
  child: ChildProcessWithoutNullStreams;
  url: string;
}

function startServe(root: string): Promise<ServeProcess> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('IMAGEPROXY_')));
  const child = spawn(
    process.execPath,
    [CLI, 'serve', '--listen', '127.0.0.1:0', '--admin-listen', 'off', '--root', root, '--delivery', 'direct', '--allow-private-networks', '--secret', SECRET, '--log-level', 'info'],
    { env: { ...env, IMAGEPROXY_STATS_REFRESH_SECONDS: '0', IMAGEPROXY_HEAL_INTERVAL_SECONDS: '0' } },
  );
  return new Promise((resolve, reject) => {
    let pending = '';
    child.stdout.on('data', (chunk: Buffer) => {
      pending += chunk.toString('utf8');
      const match = /listening on (http:\/\/[0-9.:]+)/.exec(pending);
      if (match?.[1] !== undefined) resolve({ child, url: match[1] });
    });
    child.once('exit', (code) => reject(new Error(`serve exited ${code}`)));
  });
}

async function stopServe(serve: ServeProcess): Promise<void> {
  if (serve.child.exitCode !== null) return;
  serve.child.kill('SIGTERM');
  await new Promise((resolve) => serve.child.once('exit', resolve));
}

/** Asks the app for `path` so that it stores the file, as a visitor's miss would. */
async function storeThroughApp(serveUrl: string, path: string): Promise<void> {
  const response = await fetch(`${serveUrl}${path}`);
  if (response.status !== 200) throw new Error(`storing ${path} answered ${response.status}`);
  await response.arrayBuffer();
}

interface Target {
  key: string;
  name: string;
  /** The key of the plain-nginx target this one is a ratio to (absent: a reference). */
  reference?: string;
  url: string;
  pids: () => number[];
  script?: string;
  /** Request headers, `Name: value`. */
  headers?: readonly string[];
}

/** Why the hit bench cannot run here, or null. */
export function benchNginxMissing(): string | null {
  const missing = nginxMissing();
  if (missing !== null) return missing;
  if (!(commandWorks('wrk', ['-v']) || existsSync('/usr/bin/wrk'))) return 'wrk not found: apt-get install wrk';
  if (!existsSync(CLI)) return `${CLI} not found: npm run build`;
  return null;
}

function signedPath(imageUrl: string, size: string): string {
  const extUrl = encodeImageUrl(imageUrl);
  return formatLink({ bucket: 'i', size, signature: signLink(SECRET, { bucket: 'i', extUrl, proxy: false }, Date.now()), extUrl, proxy: false });
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
  const floorDir = join(work, 'floor');
  const jpeg = await benchJpeg();
  const origin: Server = createServer((_request, response) => response.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg));
  await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
  const imageUrl = `http://127.0.0.1:${(origin.address() as AddressInfo).port}/bench.jpg`;
  const fullPath = signedPath(imageUrl, 'full');
  const thumbnailPath = signedPath(imageUrl, THUMBNAIL_SIZE);
  const running: RunningNginx[] = [];
  const rows: BenchRow[] = [];
  try {
    // The app stores the original and its thumbnail as it would for a visitor.
    const storing = await startServe(root);
    try {
      await storeThroughApp(storing.url, fullPath);
      await storeThroughApp(storing.url, thumbnailPath);
    } finally {
      await stopServe(storing);
    }
    const key = storageKey(Buffer.from(imageUrl));
    const stored = (stem: string): string => join(root, keyDirectory('i', key), imageFileName(stem, 'jpg'));
    const thumbnailFile = stored(fileStem(key, THUMBNAIL_SIZE));
    // A page of distinct links: the same thumbnail stored under 1 000 image URLs.
    const pagePaths: string[] = [];
    const plainPagePaths: string[] = [];
    await mkdir(join(plainRoot, 'page'), { recursive: true });
    for (let index = 0; index < PAGE_LINKS; index += 1) {
      const pageUrl = `${imageUrl}?n=${index}`;
      const pageKey = storageKey(Buffer.from(pageUrl));
      await mkdir(join(root, keyDirectory('i', pageKey)), { recursive: true });
      await copyFile(thumbnailFile, join(root, keyDirectory('i', pageKey), imageFileName(fileStem(pageKey, THUMBNAIL_SIZE), 'jpg')));
      await copyFile(thumbnailFile, join(plainRoot, 'page', `${index}.jpg`));
      pagePaths.push(signedPath(pageUrl, THUMBNAIL_SIZE));
      plainPagePaths.push(`/page/${index}.jpg`);
    }
    await copyFile(stored(fileStem(key, null)), join(plainRoot, 'full.jpg'));
    await copyFile(thumbnailFile, join(plainRoot, 'thumbnail.jpg'));
    await copyFile(thumbnailFile, join(root, keyDirectory('i', key), imageFileName(classVariantStem(key, THUMBNAIL_SIZE, 'avif'), 'avif')));
    const pageScript = join(work, 'page.lua');
    const plainPageScript = join(work, 'plain-page.lua');
    await writeFile(pageScript, roundRobinScript(pagePaths));
    await writeFile(plainPageScript, roundRobinScript(plainPagePaths));
    await mkdir(floorDir, { recursive: true });
    await writeFile(join(floorDir, 'floor.js'), FLOOR_SCRIPT);

    const workers = availableParallelism();
    const section = `hit, ${rounds} × wrk -t2 -c64 -d${seconds}s, worker_processes auto (${workers})`;
    const [plainPort, floorPort, appPort] = [await freePort(), await freePort(), await freePort()];
    // Same http-level settings (sendfile, access log) and the same open_file_cache. An nginx
    // of its own: njs 0.7.9 runs the top level of every imported module for each request
    // that runs any js, so the floor must not share a VM with imageproxy.js.
    const referenceServers = [
      'server {',
      `    listen 127.0.0.1:${plainPort};`,
      `    root "${plainRoot}";`,
      '    open_file_cache max=10000 inactive=60s;',
      '    open_file_cache_valid 1s;',
      '    location / { }',
      '}',
      `js_path "${floorDir}/";`,
      'js_import floor from floor.js;',
      'js_set $imageproxy_floor floor.check;',
      'server {',
      `    listen 127.0.0.1:${floorPort};`,
      `    root "${plainRoot}";`,
      '    open_file_cache max=10000 inactive=60s;',
      '    open_file_cache_valid 1s;',
      '    location / {',
      '        if ($imageproxy_floor = "") {',
      '            return 410;',
      '        }',
      '        try_files /thumbnail.jpg =404;',
      '    }',
      '}',
    ].join('\n');
    const user = testWorkerUser();
    const referencePrefix = join(work, 'reference');
    await mkdir(referencePrefix, { recursive: true });
    const referenceConf = [
      `load_module ${NJS_MODULE_PATH};`,
      ...(user === undefined ? [] : [`user ${user};`]),
      'daemon off;',
      'worker_processes auto;',
      `pid "${referencePrefix}/nginx.pid";`,
      `error_log "${referencePrefix}/error.log" warn;`,
      'events {',
      `    worker_connections ${WORKER_CONNECTIONS};`,
      '}',
      'http {',
      `    access_log "${referencePrefix}/access.log" combined buffer=64k flush=1s;`,
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((name) => `    ${name}_temp_path "${referencePrefix}/${name}_temp";`),
      '    sendfile on;',
      '    tcp_nopush on;',
      '    keepalive_timeout 65s;',
      referenceServers,
      '}',
      '',
    ].join('\n');
    const reference = await startNginx(referencePrefix, referenceConf, plainPort);
    running.push(reference);
    const referencePids = (): number[] => workerPids(reference.process.pid);
    const plain = `http://127.0.0.1:${plainPort}`;
    // Each workload's rows run back to back, so its reference sees the same load.
    const thumbnailTargets: Target[] = [
      { key: 'plain-thumbnail', name: 'plain nginx, one thumbnail file', url: `${plain}/thumbnail.jpg`, pids: referencePids },
      { key: 'floor', name: 'njs floor: one HMAC, 16 characters compared, one thumbnail', reference: 'plain-thumbnail', url: `http://127.0.0.1:${floorPort}/thumbnail.jpg`, pids: referencePids },
    ];
    const pageTargets: Target[] = [{ key: 'plain-page', name: `plain nginx, ${PAGE_LINKS} thumbnail files round-robin`, url: plain, pids: referencePids, script: plainPageScript }];
    const fullTargets: Target[] = [{ key: 'plain-full', name: 'plain nginx, one full-size file', url: `${plain}/full.jpg`, pids: referencePids }];
    const variants: Array<{ label: string; njsDir: string; formats?: NginxRenderInput['formats'] }> = [
      { label: '', njsDir: NJS_DIR },
      ...(options.compareNjsDir === undefined ? [] : [{ label: ' [before]', njsDir: options.compareNjsDir }]),
      { label: ", negotiated (formats avif,webp; Chrome's Accept: the avif file)", njsDir: NJS_DIR, formats: ['avif', 'webp'] },
    ];
    for (const [index, variant] of variants.entries()) {
      const prefix = join(work, `ours-${index}`);
      const port = await freePort();
      await mkdir(prefix, { recursive: true });
      const input: NginxRenderInput = {
        nginxListen: `127.0.0.1:${port}`,
        appListen: `127.0.0.1:${appPort}`, // never contacted: every request is a hit
        root,
        internalPrefix: '/_imageproxy',
        njsDir: variant.njsDir,
        configModuleDir: prefix,
        buckets: { i: { legacySignatures: false } },
        sizes: [150, 200, 250],
        skewSeconds: 3600,
        secrets: [SECRET],
        ...(variant.formats === undefined ? {} : { formats: variant.formats }),
      };
      await writeFile(join(prefix, CONFIG_MODULE_NAME), renderConfigModule(input), { mode: 0o600 });
      const conf = renderStandaloneConf(input, prefix, { workerProcesses: 'auto', ...(user === undefined ? {} : { user }) });
      const nginx = await startNginx(prefix, conf, port);
      running.push(nginx);
      const pids = (): number[] => workerPids(nginx.process.pid);
      const base = `http://127.0.0.1:${port}`;
      const thumbnail: Target = { key: `thumbnail${index}`, name: `ours, one thumbnail link${variant.label}`, reference: 'plain-thumbnail', url: `${base}${thumbnailPath}`, pids };
      if (variant.formats !== undefined) {
        // Only the thumbnail row: full-size links are never negotiated, a page costs what one link does.
        thumbnailTargets.push({ ...thumbnail, headers: [CHROME_ACCEPT] });
        continue;
      }
      thumbnailTargets.push(thumbnail);
      pageTargets.push({ key: `page${index}`, name: `ours, ${PAGE_LINKS} thumbnail links round-robin${variant.label}`, reference: 'plain-page', url: base, pids, script: pageScript });
      fullTargets.push({ key: `full${index}`, name: `ours, one full-size link${variant.label}`, reference: 'plain-full', url: `${base}${fullPath}`, pids });
    }
    const targets = [...thumbnailTargets, ...pageTargets, ...fullTargets];

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
    const rpsOf = (key: string): number => median((runs.get(key) ?? []).map((run) => run.rps));
    const cpuOf = (key: string): number | null => {
      const targetRuns = runs.get(key) ?? [];
      return targetRuns.length > 0 && targetRuns.every((run) => run.cpuMicros !== null) ? median(targetRuns.map((run) => run.cpuMicros ?? 0)) : null;
    };
    const rangeOf = (target: Target): string => {
      if (target.reference === undefined) return '';
      const references = runs.get(target.reference) ?? [];
      const ratios = (runs.get(target.key) ?? []).map((run, round) => run.rps / (references[round]?.rps ?? Number.NaN));
      return `${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)} by round`;
    };
    const cpuRows: BenchRow[] = [];
    for (const target of targets) {
      const rps = rpsOf(target.key);
      const ratio = target.reference === undefined ? {} : { ratio: rps / rpsOf(target.reference) };
      const note = rounds > 1 && target.reference !== undefined ? { note: rangeOf(target) } : {};
      rows.push({ section, name: target.name, value: rps, unit: 'req/s', ...ratio, ...note });
      // CPU per request is steadier than the rate on a shared machine; plain / ours is
      // the rate ratio nginx would reach when CPU-bound.
      const cpu = cpuOf(target.key);
      const referenceCpu = target.reference === undefined ? null : cpuOf(target.reference);
      if (cpu !== null) {
        cpuRows.push({ section: `${section}: nginx CPU per request`, name: target.name, value: cpu, unit: 'µs', ...(referenceCpu === null ? {} : { ratio: referenceCpu / cpu }) });
      }
    }
    rows.push(...cpuRows);
    return rows;
  } finally {
    for (const nginx of running) await nginx.stop();
    await new Promise<void>((resolve) => origin.close(() => resolve()));
    await rm(work, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { printBenchTable } = await import('./benchTable.js');
  const argv = process.argv.slice(2);
  const quick = argv.includes('--quick');
  const valueOf = (flag: string): string | undefined => {
    const at = argv.indexOf(flag);
    return at >= 0 ? argv[at + 1] : undefined;
  };
  const compareNjsDir = valueOf('--compare-njs');
  const rounds = valueOf('--rounds');
  printBenchTable(
    await benchNginx({
      ...(quick ? { rounds: 1, seconds: 2 } : {}),
      ...(rounds === undefined ? {} : { rounds: Number(rounds) }),
      ...(compareNjsDir === undefined ? {} : { compareNjsDir }),
    }),
  );
}
