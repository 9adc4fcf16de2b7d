/**
 * Cold misses against the same work done in-process: how much the app adds to a fetch,
 * a resize and keeping both. The baseline fetches with plain http.get from the same
 * loopback origin, resizes with the app's own sharp engine (server/engines/sharpEngine.ts,
 * same qualities and mozjpeg setting) and keeps the original and the thumbnail as a
 * crash-safe cache must (temp, fsync, rename; writeDurably) in the same 64 × 64 tree
 * (server/layout.ts); ours is `imageproxy serve` as a child process (sharp, delivery
 * direct) on a tree made by init-buckets. Every URL is new.
 *
 * Rows: median latency of sequential 250x250 misses and the ratio; misses/s at
 * concurrency 8 and 32 and the ratio; CPU per miss of every process at concurrency 8;
 * peak RSS of the child for 256 concurrent misses;
 * single-flight: 500 concurrent requests for one new image → origin requests, total time.
 * Baseline and ours alternate round by round (a shared machine is noisy); medians.
 *
 *   npm run build && node --import tsx scripts/bench-miss.ts [rounds=3] [cli=dist/server/cli.js]
 *
 * The `cli` argument measures another build (e.g. the last commit built in /tmp).
 */
import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtemp, open, readFile, rename, rm } from 'node:fs/promises';
import { Agent, createServer, get as httpGet, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { DEFAULT_CONFIG } from '../server/config.js';
import { createSharpEngine } from '../server/engines/sharpEngine.js';
import { keyDirectory, storageKey } from '../server/layout.js';
import { encodeImageUrl, formatLink } from '../server/link.js';
import { signLink } from '../server/signing.js';
import type { BenchRow } from './benchTable.js';

const SECRET = 'bench-miss-secret';
const SIZE = { label: '250x250', maxWidth: 250, maxHeight: 250 };
const SEQUENTIAL = 20;
const WARM_UP_MISSES = 300;

export interface BenchMissOptions {
  rounds?: number;
  cli?: string;
  /** Misses each side makes before measuring (default WARM_UP_MISSES; `npm run bench --quick` makes fewer). */
  warmUpMisses?: number;
}

/** A 1600×1200 photo-like JPEG of at most 220 KB (noise, blurred; the table names its size). */
async function photoJpeg(): Promise<Buffer> {
  const width = 1600;
  const height = 1200;
  const raw = Buffer.alloc(width * height * 3);
  let seed = 4242;
  for (let index = 0; index < raw.length; index += 1) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    raw[index] = seed >> 23;
  }
  let best = Buffer.alloc(0);
  for (const sigma of [2, 3, 4, 6, 8, 12]) {
    best = await sharp(raw, { raw: { width, height, channels: 3 } }).blur(sigma).jpeg({ quality: 80 }).toBuffer();
    if (best.length <= 220_000) break;
  }
  return best;
}

/**
 * What any cache that survives a crash does with a file: temp name, fsync, rename. The
 * baseline keeps the original and the thumbnail this way, as serve does (serve writes a
 * sidecar too, the third fsync; that one is its own cost and stays in the ratio).
 */
async function writeDurably(path: string, bytes: Uint8Array): Promise<void> {
  const temp = `${path}.tmp`;
  const handle = await open(temp, 'wx');
  try {
    await handle.writeFile(bytes);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temp, path);
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

/** Runs `count` jobs, `concurrency` at a time; returns the seconds taken. */
async function pool(count: number, concurrency: number, job: (index: number) => Promise<void>): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const index = next;
        next += 1;
        await job(index);
      }
    }),
  );
  return (performance.now() - started) / 1000;
}

interface Served {
  child: ChildProcessWithoutNullStreams;
  url: string;
}

function startServe(cli: string, root: string): Promise<Served> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('IMAGEPROXY_')));
  const child = spawn(
    process.execPath,
    [cli, 'serve', '--listen', '127.0.0.1:0', '--admin-listen', 'off', '--delivery', 'direct', '--root', root, '--engine', 'sharp',
      '--allow-private-networks', '--secret', SECRET, '--log-level', 'info'],
    // Limits high enough that nothing here is refused `busy`: the bench measures work, not admission.
    { env: { ...env, IMAGEPROXY_STATS_REFRESH_SECONDS: '0', IMAGEPROXY_HEAL_INTERVAL_SECONDS: '0', IMAGEPROXY_MAX_QUEUED_FETCHES: '1000', IMAGEPROXY_MAX_QUEUED_RESIZES: '1000' } },
  );
  let pending = '';
  return new Promise((done, fail) => {
    child.stdout.on('data', (chunk: Buffer) => {
      pending += chunk.toString('utf8');
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        const match = /listening on (http:\/\/[0-9.:]+)/.exec(line);
        if (match !== null) done({ child, url: match[1] as string });
      }
    });
    child.stderr.on('data', (chunk: Buffer) => process.stderr.write(chunk));
    child.once('exit', (code) => fail(new Error(`serve exited ${code}`)));
  });
}

/** GET through the app; resolves with the status once the body is read. */
function getThrough(baseUrl: string, path: string, agent: Agent): Promise<number> {
  return new Promise((done) => {
    const { hostname, port } = new URL(baseUrl);
    const outgoing = httpRequest({ hostname, port, path, agent }, (incoming) => {
      incoming.resume();
      incoming.on('end', () => done(incoming.statusCode ?? 0));
      incoming.on('error', () => done(-1));
    });
    outgoing.on('error', () => done(-1));
    outgoing.end();
  });
}

function fetchBytes(url: string, agent: Agent): Promise<Buffer> {
  return new Promise((done, fail) => {
    httpGet(url, { agent }, (incoming) => {
      const chunks: Buffer[] = [];
      incoming.on('data', (chunk: Buffer) => chunks.push(chunk));
      incoming.on('end', () => done(Buffer.concat(chunks)));
      incoming.on('error', fail);
    }).on('error', fail);
  });
}

/** CPU time used so far, in ms: this process (user + system) and the child `pid` (/proc, clock ticks of 10 ms). */
async function cpuMs(pid: number): Promise<{ self: number; child: number }> {
  const usage = process.cpuUsage();
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11] ?? 0) + Number(fields[12] ?? 0);
  return { self: (usage.user + usage.system) / 1000, child: ticks * 10 };
}

async function rssKiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const match = /^VmRSS:\s+(\d+) kB/m.exec(status);
  return match === null ? 0 : Number(match[1]);
}

export async function benchMiss(options: BenchMissOptions = {}): Promise<BenchRow[]> {
  const rounds = options.rounds ?? 3;
  const cli = resolve(options.cli ?? fileURLToPath(new URL('../dist/server/cli.js', import.meta.url)));
  const jpeg = await photoJpeg();
  let originRequests = 0;
  const origin = createServer((_request, response) => {
    originRequests += 1;
    response.writeHead(200, { 'Content-Type': 'image/jpeg', 'Content-Length': jpeg.length }).end(jpeg);
  });
  await new Promise<void>((done) => origin.listen(0, '127.0.0.1', done));
  const originBase = `http://127.0.0.1:${(origin.address() as AddressInfo).port}`;
  const root = await mkdtemp(join(tmpdir(), 'imageproxy-bench-miss-'));
  const baselineDir = await mkdtemp(join(tmpdir(), 'imageproxy-bench-miss-baseline-'));
  // The engine as serve builds it (server/imageServiceFactory.ts), on the config's defaults.
  const engine = createSharpEngine({
    maxPixels: DEFAULT_CONFIG.limits.maxPixels,
    timeoutSeconds: Math.ceil(DEFAULT_CONFIG.limits.totalTimeoutMs / 1000),
    concurrency: Math.max(1, availableParallelism() - 1),
    quality: DEFAULT_CONFIG.quality,
    mozjpeg: DEFAULT_CONFIG.mozjpeg,
  });
  // Both sides keep files in a tree as a server in production has it: 64 × 64
  // directories per bucket made at install (scripts/setup-tree.sh runs init-buckets), so
  // no miss pays for a new one, and both spread their files over the disk alike.
  for (const tree of [root, baselineDir]) {
    await promisify(execFile)(process.execPath, [cli, 'init-buckets', '--root', tree, '--secret', SECRET]);
  }
  const served = await startServe(cli, root);
  const appAgent = new Agent({ keepAlive: true, maxSockets: Infinity });
  const originAgent = new Agent({ keepAlive: true, maxSockets: Infinity });
  let serial = 0;
  const atMs = Date.now();
  const newPath = (): string => `/photo-${process.pid}-${(serial += 1)}.jpg`;
  const linkOf = (imagePath: string, size: string): string => {
    const extUrl = encodeImageUrl(`${originBase}${imagePath}`);
    return formatLink({ bucket: 'i', size, signature: signLink(SECRET, { bucket: 'i', extUrl, proxy: false }, atMs), extUrl, proxy: false });
  };
  let failures = 0;
  // Each miss of a new image; a caller timing one names it first (a site signs its links
  // when it renders a page, not when the browser asks).
  const oursMiss = async (link = linkOf(newPath(), SIZE.label)): Promise<void> => {
    if ((await getThrough(served.url, link, appAgent)) !== 200) failures += 1;
  };
  const baselineMiss = async (imagePath = newPath()): Promise<void> => {
    const input = await fetchBytes(`${originBase}${imagePath}`, originAgent);
    const result = await engine.resize({ input, format: 'jpeg', maxWidth: SIZE.maxWidth, maxHeight: SIZE.maxHeight });
    const key = storageKey(Buffer.from(`${originBase}${imagePath}`));
    const directory = join(baselineDir, keyDirectory('i', key));
    await Promise.all([
      writeDurably(join(directory, `${key}.jpg`), input),
      writeDurably(join(directory, `${key}.${SIZE.label}.jpg`), result.bytes),
    ]);
  };
  const timed = async (miss: () => Promise<void>): Promise<number> => {
    const started = performance.now();
    await miss();
    return performance.now() - started;
  };

  try {
    // Warm-up: connections, sharp's first use, and enough misses for V8 to optimise the
    // hot paths of both (a server that has run for a minute; a cold one costs more).
    for (let index = 0; index < 5; index += 1) {
      await baselineMiss();
      await oursMiss();
    }
    const warmUp = options.warmUpMisses ?? WARM_UP_MISSES;
    await pool(warmUp, 8, () => baselineMiss());
    await pool(warmUp, 8, () => oursMiss());
    failures = 0;
    const latency = { baseline: [] as number[], ours: [] as number[] };
    const rates = new Map<number, { baseline: number[]; ours: number[] }>([
      [8, { baseline: [], ours: [] }],
      [32, { baseline: [], ours: [] }],
    ]);
    // CPU per miss at concurrency 8, of every process taking part: steadier than rates
    // when other jobs share the machine. Both sides include the origin (this process);
    // ours also its HTTP client and the server.
    const cpuPerMiss = { baseline: [] as number[], ours: [] as number[] };
    const childPid = served.child.pid as number;
    for (let round = 0; round < rounds; round += 1) {
      for (let index = 0; index < SEQUENTIAL; index += 1) {
        const imagePath = newPath();
        latency.baseline.push(await timed(() => baselineMiss(imagePath)));
        const link = linkOf(newPath(), SIZE.label);
        latency.ours.push(await timed(() => oursMiss(link)));
      }
      for (const [concurrency, rate] of rates) {
        const count = concurrency * 4;
        const measureCpu = concurrency === 8;
        let cpu = await cpuMs(childPid);
        rate.baseline.push(count / (await pool(count, concurrency, () => baselineMiss())));
        if (measureCpu) cpuPerMiss.baseline.push(((await cpuMs(childPid)).self - cpu.self) / count);
        cpu = await cpuMs(childPid);
        rate.ours.push(count / (await pool(count, concurrency, () => oursMiss())));
        if (measureCpu) {
          const after = await cpuMs(childPid);
          cpuPerMiss.ours.push((after.self - cpu.self + after.child - cpu.child) / count);
        }
      }
    }
    const rows: BenchRow[] = [];
    const section = `miss ${SIZE.label}, ${(jpeg.length / 1000).toFixed(0)} KB 1600×1200 JPEG, loopback origin`;
    const baselineMs = median(latency.baseline);
    const oursMs = median(latency.ours);
    const note = `${rounds} rounds × ${SEQUENTIAL}, alternating, median`;
    rows.push({ section, name: 'in-process http.get + sharp engine + durable writes, sequential', value: baselineMs, unit: 'ms', note });
    rows.push({ section, name: 'imageproxy serve, sequential', value: oursMs, unit: 'ms', ratio: oursMs / baselineMs, note });
    for (const [concurrency, rate] of rates) {
      const baselineRate = median(rate.baseline);
      const oursRate = median(rate.ours);
      rows.push({ section, name: `in-process, concurrency ${concurrency}`, value: baselineRate, unit: 'misses/s' });
      rows.push({ section, name: `imageproxy serve, concurrency ${concurrency}`, value: oursRate, unit: 'misses/s', ratio: oursRate / baselineRate });
    }
    const baselineCpu = median(cpuPerMiss.baseline);
    const oursCpu = median(cpuPerMiss.ours);
    const cpuNote = 'concurrency 8, every process (origin included), median of rounds';
    rows.push({ section, name: 'in-process, CPU per miss', value: baselineCpu, unit: 'ms', note: cpuNote });
    rows.push({ section, name: 'imageproxy serve + its client, CPU per miss', value: oursCpu, unit: 'ms', ratio: oursCpu / baselineCpu, note: cpuNote });

    // Peak RSS of the child during 256 concurrent cold misses.
    const pid = served.child.pid as number;
    let peakKiB = await rssKiB(pid);
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peakKiB = Math.max(peakKiB, await rssKiB(pid));
        await new Promise((wait) => setTimeout(wait, 20));
      }
    })();
    await Promise.all(Array.from({ length: 256 }, () => oursMiss()));
    sampling = false;
    await sampler;
    rows.push({ section, name: 'imageproxy serve, peak RSS, 256 concurrent misses', value: peakKiB / 1024, unit: 'MiB' });

    // Single-flight: one new image, 500 requests at once.
    const before = originRequests;
    const onePath = linkOf(newPath(), SIZE.label);
    const started = performance.now();
    const statuses = await Promise.all(Array.from({ length: 500 }, () => getThrough(served.url, onePath, appAgent)));
    const seconds = performance.now() - started;
    const ok = statuses.filter((status) => status === 200).length;
    rows.push({ section, name: 'single-flight: 500 requests for one new image, origin requests', value: originRequests - before, unit: 'requests', note: `${ok} answered 200` });
    rows.push({ section, name: 'single-flight: 500 requests for one new image, total time', value: seconds, unit: 'ms' });
    if (failures > 0) rows.push({ section, name: 'misses not answered 200', value: failures, unit: 'requests' });
    return rows;
  } finally {
    appAgent.destroy();
    originAgent.destroy();
    served.child.kill('SIGTERM');
    await new Promise((done) => served.child.once('exit', done));
    await engine.close();
    origin.close();
    await rm(root, { recursive: true, force: true });
    await rm(baselineDir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { printBenchTable } = await import('./benchTable.js');
  const rounds = process.argv[2] === undefined ? undefined : Number(process.argv[2]);
  const cli = process.argv[3];
  printBenchTable(await benchMiss({ ...(rounds === undefined ? {} : { rounds }), ...(cli === undefined ? {} : { cli }) }));
}
