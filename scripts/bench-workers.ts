/**
 * Hit throughput of standalone `imageproxy serve` (delivery direct: the app sends the
 * bytes) with 1 and with 2 workers: both servers run on the same tree, one stored
 * original is fetched once from a loopback origin, then wrk asks for it in alternating
 * rounds. Prints each round, the medians and their ratio. Not part of CI; needs
 * `npm run build` first and wrk on the PATH.
 *
 *   node --import tsx scripts/bench-workers.ts [rounds=3] [seconds=5] [connections=64]
 */
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { encodeImageUrl, formatLink } from '../server/contract/link.js';
import { signLink } from '../server/contract/signing.js';

const ROUNDS = Number(process.argv[2] ?? 3);
const SECONDS = Number(process.argv[3] ?? 5);
const CONNECTIONS = Number(process.argv[4] ?? 64);
const CLI = fileURLToPath(new URL('../dist/server/cli.js', import.meta.url));
const SECRET = 'bench-workers-secret';

function startServe(root: string, workers: number): Promise<{ child: ChildProcessWithoutNullStreams; url: string }> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('IMAGEPROXY_')));
  const child = spawn(
    process.execPath,
    [CLI, 'serve', '--listen', '127.0.0.1:0', '--admin-listen', 'off', '--root', root, '--delivery', 'direct', '--allow-private-networks', '--secret', SECRET, '--log-level', 'info', '--workers', String(workers)],
    { env: { ...env, IMAGEPROXY_STATS_REFRESH_SECONDS: '0', IMAGEPROXY_HEAL_INTERVAL_SECONDS: '0' } },
  );
  child.stderr.on('data', (chunk: Buffer) => process.stderr.write(chunk));
  return new Promise((done, fail) => {
    let pending = '';
    child.stdout.on('data', (chunk: Buffer) => {
      pending += chunk.toString('utf8');
      const match = /listening on (http:\/\/[0-9.:]+)/.exec(pending);
      if (match !== null) done({ child, url: match[1] as string });
    });
    child.once('exit', (code) => fail(new Error(`serve --workers ${workers} exited ${code}`)));
  });
}

function wrk(url: string): number {
  const output = execFileSync('wrk', ['-t2', `-c${CONNECTIONS}`, `-d${SECONDS}s`, url], { encoding: 'utf8' });
  const match = /Requests\/sec:\s+([0-9.]+)/.exec(output);
  if (match === null) throw new Error(`no Requests/sec in wrk output:\n${output}`);
  const errors = /Non-2xx or 3xx responses: (\d+)/.exec(output);
  if (errors !== null) throw new Error(`wrk saw ${errors[1]} error answers`);
  return Number(match[1]);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

const jpeg = await sharp({ create: { width: 800, height: 600, channels: 3, background: { r: 30, g: 120, b: 200 } } }).jpeg({ quality: 85 }).toBuffer();
const origin = createServer((_request, response) => response.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg));
await new Promise<void>((done) => origin.listen(0, '127.0.0.1', done));
const imageUrl = `http://127.0.0.1:${(origin.address() as AddressInfo).port}/bench.jpg`;
const extUrl = encodeImageUrl(imageUrl);
const path = formatLink({ bucket: 'i', size: 'full', signature: signLink(SECRET, { bucket: 'i', extUrl, proxy: false }, Date.now()), extUrl, proxy: false });

const root = await mkdtemp(join(tmpdir(), 'imageproxy-bench-workers-'));
const servers = { 1: await startServe(root, 1), 2: await startServe(root, 2) };
const first = await fetch(`${servers[1].url}${path}`);
if (first.status !== 200) throw new Error(`storing the original answered ${first.status}`);
await first.arrayBuffer();

const results: Record<1 | 2, number[]> = { 1: [], 2: [] };
for (let round = 1; round <= ROUNDS; round += 1) {
  for (const workers of [1, 2] as const) {
    const rate = wrk(`${servers[workers].url}${path}`);
    results[workers].push(rate);
    console.log(`round ${round}: ${workers} worker${workers === 1 ? '' : 's'}: ${rate.toFixed(0)} requests/s`);
  }
}
const one = median(results[1]);
const two = median(results[2]);
console.log(
  `hits of a ${(jpeg.length / 1024).toFixed(0)} KiB original, wrk -t2 -c${CONNECTIONS} -d${SECONDS}s, ${ROUNDS} rounds each, on ${
    availableParallelism()
  } cores: median 1 worker ${one.toFixed(0)} requests/s, 2 workers ${two.toFixed(0)} requests/s, ratio ${(two / one).toFixed(2)}`,
);
for (const server of Object.values(servers)) server.child.kill('SIGTERM');
await Promise.all(Object.values(servers).map((server) => new Promise((done) => server.child.once('exit', done))));
origin.close();
await rm(root, { recursive: true, force: true });
