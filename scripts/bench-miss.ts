/**
 * Cold misses against the same work done without the app: how much imageproxy adds to a
 * fetch, a resize and keeping both. The baseline (scripts/missBaseline.ts) fetches with
 * plain http.get from the same loopback origin, resizes with the app's own sharp engine
 * (server/images/sharpEngine.ts, same qualities and mozjpeg setting) and keeps the
 * original and the thumbnail as a crash-safe cache must (temp, fsync, rename) in the
 * same 64 × 64 tree (server/contract/layout.ts). It runs in this process, and again behind a bare
 * node:http server in a child process (scripts/bareMissServer.ts): the client then
 * crosses a process as it does to serve, so the rows split what a miss costs into the
 * process boundary and the app. Ours is `imageproxy serve` as a child process (sharp,
 * delivery direct) on a tree made by init-buckets. Every URL is new.
 *
 * Rows: median latency of sequential 250x250 misses and the ratio; misses/s at
 * concurrency 8 and 32 and the ratio; CPU per miss of every process at concurrency 8;
 * each for the baseline, the bare server and serve (ratios against the baseline, the
 * bare server's in the note of serve's row); the two servers' main-thread CPU per miss
 * (their JavaScript; serve's against the bare server's); peak RSS of the child for 256 concurrent
 * misses; single-flight: 500 concurrent requests for one new image → origin requests,
 * total time. The three alternate round by round (a shared machine is noisy); medians.
 *
 *   npm run build && node --import tsx scripts/bench-miss.ts [rounds=3] [cli=dist/server/cli.js]
 *
 * The `cli` argument measures another build (e.g. the last commit built in /tmp).
 */
import { execFile, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { Agent, createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { encodeImageUrl, formatLink } from '../server/contract/link.js';
import { signLink } from '../server/contract/signing.js';
import type { BenchRow } from './benchTable.js';
import { BENCH_SIZE, baselineEngine, baselineMiss, photoJpeg } from './missBaseline.js';
import { cpuTicks, mainThreadCpuTicks, median, rssKiB } from './benchMeasure.js';
import { benchEnv, startChild, stopChild } from './serveChild.js';

const SECRET = 'bench-miss-secret';
const SEQUENTIAL = 20;
const WARM_UP_MISSES = 300;
const BARE_SERVER = fileURLToPath(new URL('./bareMissServer.ts', import.meta.url));

export interface BenchMissOptions {
  rounds?: number;
  cli?: string;
  /** Misses each side makes before measuring (default WARM_UP_MISSES; `npm run bench --quick` makes fewer). */
  warmUpMisses?: number;
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

const LISTENING = /listening on (http:\/\/[0-9.:]+)/;

async function startListening(args: readonly string[], env: NodeJS.ProcessEnv): Promise<Served> {
  const { child, match } = await startChild(args, env, LISTENING);
  return { child, url: match[1] as string };
}

function startServe(cli: string, root: string): Promise<Served> {
  return startListening(
    [cli, 'serve', '--listen', '127.0.0.1:0', '--admin-listen', 'off', '--delivery', 'direct', '--root', root, '--engine', 'sharp',
      '--allow-private-networks', '--secret', SECRET, '--log-level', 'info'],
    benchEnv({ IMAGEPROXY_STATS_REFRESH_SECONDS: '0', IMAGEPROXY_HEAL_INTERVAL_SECONDS: '0' }),
  );
}

/** GET through a child server; resolves with the status once the body is read. */
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

/** CPU time used so far, in ms: this process (user + system) and the child `pid` (/proc, clock ticks of 10 ms). */
function cpuMs(pid: number | undefined): { self: number; child: number } {
  const usage = process.cpuUsage();
  const ticks = pid === undefined ? 0 : (cpuTicks(pid) ?? 0);
  return { self: (usage.user + usage.system) / 1000, child: ticks * 10 };
}

/** The three ways a miss is made, in the order each round measures them. */
const SIDES = ['baseline', 'bare', 'ours'] as const;
type Side = (typeof SIDES)[number];
type PerSide = Record<Side, number[]>;
const perSide = (): PerSide => ({ baseline: [], bare: [], ours: [] });

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
  const bareDir = await mkdtemp(join(tmpdir(), 'imageproxy-bench-miss-bare-'));
  const engine = baselineEngine();
  // Every side keeps files in a tree as a server in production has it: 64 × 64
  // directories per bucket made at install (scripts/setup-tree.sh runs init-buckets), so
  // no miss pays for a new one, and all spread their files over the disk alike.
  for (const tree of [root, baselineDir, bareDir]) {
    await promisify(execFile)(process.execPath, [cli, 'init-buckets', '--root', tree, '--secret', SECRET]);
  }
  const served = await startServe(cli, root);
  const bare = await startListening(['--import', 'tsx', BARE_SERVER, bareDir], process.env).catch(async (error: unknown) => {
    await stopChild(served.child);
    throw error;
  });
  const appAgent = new Agent({ keepAlive: true, maxSockets: Infinity });
  const originAgent = new Agent({ keepAlive: true, maxSockets: Infinity });
  let serial = 0;
  const atMs = Date.now();
  const newPath = (): string => `/photo-${process.pid}-${(serial += 1)}.jpg`;
  const linkOf = (imagePath: string): string => {
    const extUrl = encodeImageUrl(`${originBase}${imagePath}`);
    return formatLink({ bucket: 'i', size: BENCH_SIZE.label, signature: signLink(SECRET, { bucket: 'i', extUrl, proxy: false }, atMs), extUrl, proxy: false });
  };
  let failures = 0;
  // A miss of a new image on each side: named (and signed) when made, before it is timed,
  // as a site signs its links when it renders a page, not when the browser asks.
  const newMiss: Record<Side, () => () => Promise<void>> = {
    baseline: () => {
      const imageUrl = `${originBase}${newPath()}`;
      return async () => {
        await baselineMiss(imageUrl, engine, originAgent, baselineDir);
      };
    },
    bare: () => {
      const path = `/${encodeImageUrl(`${originBase}${newPath()}`)}`;
      return async () => {
        if ((await getThrough(bare.url, path, appAgent)) !== 200) failures += 1;
      };
    },
    ours: () => {
      const link = linkOf(newPath());
      return async () => {
        if ((await getThrough(served.url, link, appAgent)) !== 200) failures += 1;
      };
    },
  };
  const childPid: Record<Side, number | undefined> = { baseline: undefined, bare: bare.child.pid, ours: served.child.pid };
  const timed = async (miss: () => Promise<void>): Promise<number> => {
    const started = performance.now();
    await miss();
    return performance.now() - started;
  };

  try {
    // Warm-up: connections, sharp's first use, and enough misses for V8 to optimise the
    // hot paths of each (a server that has run for a minute; a cold one costs more).
    for (let index = 0; index < 5; index += 1) {
      for (const side of SIDES) await newMiss[side]()();
    }
    const warmUp = options.warmUpMisses ?? WARM_UP_MISSES;
    for (const side of SIDES) await pool(warmUp, 8, () => newMiss[side]()());
    failures = 0;
    const latency = perSide();
    const rates = new Map<number, PerSide>([
      [8, perSide()],
      [32, perSide()],
    ]);
    // CPU per miss at concurrency 8, of every process taking part: steadier than rates
    // when other jobs share the machine. Every side includes the origin (this process);
    // the bare server and ours also their HTTP client and the child.
    const cpuPerMiss = perSide();
    // The servers' main thread alone (their JavaScript): where serve's extra CPU is.
    const mainThreadPerMiss: Record<'bare' | 'ours', number[]> = { bare: [], ours: [] };
    for (let round = 0; round < rounds; round += 1) {
      for (let index = 0; index < SEQUENTIAL; index += 1) {
        for (const side of SIDES) latency[side].push(await timed(newMiss[side]()));
      }
      for (const [concurrency, rate] of rates) {
        const count = concurrency * 4;
        for (const side of SIDES) {
          const pid = childPid[side];
          const before = cpuMs(pid);
          const mainBefore = pid === undefined ? null : mainThreadCpuTicks(pid);
          rate[side].push(count / (await pool(count, concurrency, () => newMiss[side]()())));
          if (concurrency === 8) {
            const after = cpuMs(pid);
            cpuPerMiss[side].push((after.self - before.self + after.child - before.child) / count);
            const mainAfter = pid === undefined ? null : mainThreadCpuTicks(pid);
            if (side !== 'baseline' && mainBefore !== null && mainAfter !== null) mainThreadPerMiss[side].push(((mainAfter - mainBefore) * 10) / count);
          }
        }
      }
    }
    const rows: BenchRow[] = [];
    const section = `miss ${BENCH_SIZE.label}, ${(jpeg.length / 1000).toFixed(0)} KB 1600×1200 JPEG, loopback origin`;
    const names: Record<Side, string> = {
      baseline: 'in-process http.get + sharp engine + durable writes',
      bare: 'the same behind a bare node:http server (child process)',
      ours: 'imageproxy serve',
    };
    /** Three rows of one measure; ratios against the baseline, ours also against the bare server in its note. */
    const threeRows = (measure: string, values: PerSide, unit: string, note: string): void => {
      const medians = { baseline: median(values.baseline), bare: median(values.bare), ours: median(values.ours) };
      const vsBare = medians.ours / medians.bare;
      for (const side of SIDES) {
        rows.push({
          section,
          name: `${names[side]}, ${measure}`,
          value: medians[side],
          unit,
          ...(side === 'baseline' ? {} : { ratio: medians[side] / medians.baseline }),
          ...(side === 'ours' ? { note: `${note}; ${vsBare.toFixed(2)}× the bare server's` } : side === 'baseline' ? { note } : {}),
        });
      }
    };
    threeRows('sequential', latency, 'ms', `${rounds} rounds × ${SEQUENTIAL}, alternating, median`);
    for (const [concurrency, rate] of rates) threeRows(`concurrency ${concurrency}`, rate, 'misses/s', 'median of rounds');
    threeRows('CPU per miss', cpuPerMiss, 'ms', 'concurrency 8, every process (origin and client included), median of rounds');
    if (mainThreadPerMiss.bare.length > 0 && mainThreadPerMiss.ours.length > 0) {
      const bareMain = median(mainThreadPerMiss.bare);
      rows.push({ section, name: `${names.bare}, main thread CPU per miss`, value: bareMain, unit: 'ms', note: 'concurrency 8, the server\'s JavaScript thread alone (10 ms ticks), median of rounds' });
      rows.push({ section, name: `${names.ours}, main thread CPU per miss`, value: median(mainThreadPerMiss.ours), unit: 'ms', ratio: median(mainThreadPerMiss.ours) / bareMain, note: 'ratio against the bare server\'s' });
    }

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
    await Promise.all(Array.from({ length: 256 }, () => newMiss.ours()()));
    sampling = false;
    await sampler;
    rows.push({ section, name: 'imageproxy serve, peak RSS, 256 concurrent misses', value: peakKiB / 1024, unit: 'MiB' });

    // Single-flight: one new image, 500 requests at once.
    const before = originRequests;
    const onePath = linkOf(newPath());
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
    await Promise.all([stopChild(served.child), stopChild(bare.child)]);
    await engine.close();
    origin.close();
    for (const tree of [root, baselineDir, bareDir]) await rm(tree, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { printBenchTable } = await import('./benchTable.js');
  const rounds = process.argv[2] === undefined ? undefined : Number(process.argv[2]);
  const cli = process.argv[3];
  printBenchTable(await benchMiss({ ...(rounds === undefined ? {} : { rounds }), ...(cli === undefined ? {} : { cli }) }));
}
