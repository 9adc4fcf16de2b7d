/**
 * How fast nginx serves a cache hit through the njs link check, against the same file
 * served as plain static content. One worker, a ~60 KB JPEG, `wrk -t2 -c64 -d5s` on
 * both alternately, three rounds, medians:
 *
 *   node --import tsx scripts/bench-nginx.ts
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { storageKey } from '../server/layout.js';
import {
  CONFIG_MODULE_NAME,
  renderConfigModule,
  renderStandaloneConf,
  type NginxRenderInput,
} from '../server/nginxConfig.js';
import { signLink } from '../server/signing.js';
import {
  NJS_DIR,
  commandWorks,
  freePort,
  nginxMissing,
  startNginx,
  testWorkerUser,
  type RunningNginx,
} from '../test/nginxHarness.js';

// ---- the benchmark -------------------------------------------------------------------

const IMAGE_URL = 'https://example.com/bench.jpg';
const SECRET = 'bench-secret';

/** A JPEG of noise, about 60 KB (noise hardly compresses, so the size is predictable). */
async function benchJpeg(): Promise<Buffer> {
  // Loaded here so the tests that share this file's nginx runner do not load sharp.
  const { default: sharp } = await import('sharp');
  const side = 265;
  return sharp(randomBytes(side * side * 3), { raw: { width: side, height: side, channels: 3 } })
    .jpeg({ quality: 90 })
    .toBuffer();
}

interface WrkRun {
  rps: number;
  /** CPU time of the nginx worker per request, µs; null when /proc does not tell. */
  cpuMicros: number | null;
}

// Linux counts process CPU time in clock ticks of 1/100 s (USER_HZ) on every common build.
const TICK_MICROS = 10_000;

/** utime + stime of a process in clock ticks, from /proc, or null off Linux. */
function cpuTicks(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]); // fields 14 and 15 of proc(5)
  } catch {
    return null;
  }
}

/** The (single) worker of an nginx master, from /proc. */
function workerPid(masterPid: number | undefined): number | null {
  if (masterPid === undefined) return null;
  try {
    const children = readFileSync(`/proc/${masterPid}/task/${masterPid}/children`, 'utf8').trim().split(/\s+/);
    return children.length === 1 && children[0] !== '' ? Number(children[0]) : null;
  } catch {
    return null;
  }
}

/**
 * One wrk run. Besides wrk's rate it reads the worker's CPU time per request: on a
 * machine shared with other jobs, or with wrk on the same two cores, the rate swings by
 * ±30 % while CPU per request stays within a few per cent.
 */
function wrkRun(url: string, worker: number | null): WrkRun {
  const before = worker === null ? null : cpuTicks(worker);
  const result = spawnSync('wrk', ['-t2', '-c64', '-d5s', url], { encoding: 'utf8' });
  const after = worker === null ? null : cpuTicks(worker);
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

function median(values: ReadonlyArray<number | null>): number | null {
  const sorted = values.filter((value): value is number => value !== null).sort((a, b) => a - b);
  return sorted.length === values.length ? (sorted[Math.floor(sorted.length / 2)] ?? null) : null;
}

export interface BenchResult {
  /** Medians of wrk's requests per second. */
  plainRps: number;
  njsRps: number;
  /** njsRps / plainRps: the goal is at least 0.6. */
  ratio: number;
  /** Medians of the nginx worker's CPU µs per request (null off Linux). */
  plainCpuMicros: number | null;
  njsCpuMicros: number | null;
}

export async function benchNginx(): Promise<BenchResult> {
  const missing = nginxMissing() ?? (commandWorks('wrk', ['-v']) || existsSync('/usr/bin/wrk') ? null : 'wrk not found: apt-get install wrk');
  if (missing !== null) throw new Error(missing);
  const prefixDir = await mkdtemp(join(tmpdir(), 'imageproxy-bench-'));
  let nginx: RunningNginx | null = null;
  try {
    const [njsPort, plainPort, appPort] = [await freePort(), await freePort(), await freePort()];
    const root = join(prefixDir, 'root');
    const plainRoot = join(prefixDir, 'plain');
    const configModuleDir = join(prefixDir, 'njs');
    const input: NginxRenderInput = {
      nginxListen: `127.0.0.1:${njsPort}`,
      appListen: `127.0.0.1:${appPort}`, // never contacted: every request is a hit
      root,
      internalPrefix: '/_imageproxy',
      njsDir: NJS_DIR,
      configModuleDir,
      buckets: { i: { legacySignatures: false }, f: { legacySignatures: false }, t: { legacySignatures: false } },
      sizes: [150, 200, 250, 500],
      skewSeconds: 3600,
      secrets: [SECRET],
    };
    const jpeg = await benchJpeg();
    const key = storageKey(Buffer.from(IMAGE_URL));
    await mkdir(join(root, 'i', key.charAt(0), key.charAt(1)), { recursive: true });
    await mkdir(plainRoot, { recursive: true });
    await mkdir(configModuleDir, { recursive: true });
    await writeFile(join(root, 'i', key.charAt(0), key.charAt(1), `${key}.jpg`), jpeg);
    await writeFile(join(plainRoot, 'bench.jpg'), jpeg);
    await writeFile(join(configModuleDir, CONFIG_MODULE_NAME), renderConfigModule(input), { mode: 0o600 });
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
    const conf = renderStandaloneConf(input, prefixDir, {
      workerProcesses: 1,
      extraHttp: plainServer,
      ...(user === undefined ? {} : { user }),
    });
    nginx = await startNginx(prefixDir, conf, njsPort);

    const extUrl = Buffer.from(IMAGE_URL).toString('base64url');
    const signature = signLink(SECRET, { bucket: 'i', extUrl, proxy: false }, Date.now());
    const njsUrl = `http://127.0.0.1:${njsPort}/i/full/${signature}/${extUrl}`;
    const plainUrl = `http://127.0.0.1:${plainPort}/bench.jpg`;
    const worker = workerPid(nginx.process.pid);
    const plain: WrkRun[] = [];
    const njs: WrkRun[] = [];
    for (let round = 0; round < 3; round += 1) {
      plain.push(wrkRun(plainUrl, worker));
      njs.push(wrkRun(njsUrl, worker));
    }
    const show = (runs: WrkRun[]): string =>
      runs.map((run) => `${run.rps.toFixed(0)}${run.cpuMicros === null ? '' : ` (${run.cpuMicros.toFixed(1)} µs CPU)`}`).join(', ');
    console.log(`jpeg ${jpeg.length} bytes, 1 worker, wrk -t2 -c64 -d5s`);
    console.log(`plain req/s: ${show(plain)}`);
    console.log(`njs   req/s: ${show(njs)}`);
    const plainRps = median(plain.map((run) => run.rps)) ?? 0;
    const njsRps = median(njs.map((run) => run.rps)) ?? 0;
    return {
      plainRps,
      njsRps,
      ratio: njsRps / plainRps,
      plainCpuMicros: median(plain.map((run) => run.cpuMicros)),
      njsCpuMicros: median(njs.map((run) => run.cpuMicros)),
    };
  } finally {
    await nginx?.stop();
    await rm(prefixDir, { recursive: true, force: true });
  }
}

export function printNginxResult(result: BenchResult): void {
  console.log(
    `median: plain ${result.plainRps.toFixed(0)} req/s, njs ${result.njsRps.toFixed(0)} req/s, ratio njs/plain ${result.ratio.toFixed(2)} (goal >= 0.6)`,
  );
  if (result.plainCpuMicros !== null && result.njsCpuMicros !== null) {
    console.log(
      `worker CPU per request: plain ${result.plainCpuMicros.toFixed(1)} µs, njs ${result.njsCpuMicros.toFixed(1)} µs, ratio plain/njs ${(result.plainCpuMicros / result.njsCpuMicros).toFixed(2)}`,
    );
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  printNginxResult(await benchNginx());
}
