/**
 * Thumbnail misses by format class (issue 20): what an AVIF or a WebP client's first
 * request costs against a JPEG client's, with `formats: ["avif", "webp"]`. One
 * `imageproxy serve` child (sharp, delivery direct) and a loopback origin serving the
 * miss bench's photo (scripts/missBaseline.ts); every URL is new, so each miss fetches,
 * makes the JPEG thumbnail and, for a class, then its own file. The classes alternate
 * miss by miss (a shared machine is noisy); medians, ratios against the JPEG miss.
 *
 * Rows: a cold 250x250 miss per class (`*\/*` → JPEG, `image/webp,*\/*` → WebP, Chrome's
 * Accept → AVIF); the class's file made when the JPEG thumbnail is already stored (what a
 * class adds to a miss: the bound); the bytes of each class's file.
 *
 *   npm run build && node --import tsx scripts/bench-format-miss.ts [rounds=3] [cli=dist/server/cli.js]
 */
import { createServer } from 'node:http';
import { Agent } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchRow } from './benchTable.js';
import { median } from './benchMeasure.js';
import { BENCH_SIZE, photoJpeg } from './missBaseline.js';
import { coldMissPath, startServeChild, timedGet, type TimedAnswer } from './serveChild.js';

const SECRET = 'bench-format-miss-secret';
const PER_ROUND = 10;
const WARM_UP = 10;

const CLASSES = [
  { name: 'JPEG', accept: '*/*', type: 'image/jpeg' },
  { name: 'WebP', accept: 'image/webp,*/*', type: 'image/webp' },
  { name: 'AVIF', accept: 'image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8', type: 'image/avif' },
] as const;
type ClassName = (typeof CLASSES)[number]['name'];

export async function benchFormatMiss(options: { rounds?: number; cli?: string } = {}): Promise<BenchRow[]> {
  const rounds = options.rounds ?? 3;
  const cli = resolve(options.cli ?? fileURLToPath(new URL('../dist/server/cli.js', import.meta.url)));
  const jpeg = await photoJpeg();
  const origin = createServer((_request, response) => {
    response.writeHead(200, { 'Content-Type': 'image/jpeg', 'Content-Length': jpeg.length }).end(jpeg);
  });
  await new Promise<void>((done) => origin.listen(0, '127.0.0.1', done));
  const originBase = `http://127.0.0.1:${(origin.address() as AddressInfo).port}`;
  const root = await mkdtemp(join(tmpdir(), 'imageproxy-bench-format-miss-'));
  const served = await startServeChild(cli, ['--delivery', 'direct', '--root', root, '--engine', 'sharp', '--allow-private-networks', '--secret', SECRET, '--log-level', 'info'], {
    IMAGEPROXY_FORMATS: 'avif,webp',
    IMAGEPROXY_HEAL_INTERVAL_SECONDS: '0',
  });
  const agent = new Agent({ keepAlive: true });
  const atMs = Date.now();
  let serial = 0;
  const newLink = (): string => coldMissPath(SECRET, `${originBase}/format-${process.pid}-${(serial += 1)}.jpg`, BENCH_SIZE.label, atMs);
  let wrongAnswers = 0;
  const miss = async (path: string, which: (typeof CLASSES)[number]): Promise<TimedAnswer> => {
    const answer = await timedGet(served.url, path, agent, { Accept: which.accept });
    if (answer.status !== 200 || answer.contentType !== which.type) wrongAnswers += 1;
    return answer;
  };
  const cold: Record<ClassName, number[]> = { JPEG: [], WebP: [], AVIF: [] };
  const afterJpeg: Record<ClassName, number[]> = { JPEG: [], WebP: [], AVIF: [] };
  const bytes: Record<ClassName, number[]> = { JPEG: [], WebP: [], AVIF: [] };
  try {
    for (let index = 0; index < WARM_UP; index += 1) for (const which of CLASSES) await miss(newLink(), which);
    wrongAnswers = 0;
    for (let round = 0; round < rounds; round += 1) {
      for (let index = 0; index < PER_ROUND; index += 1) {
        for (const which of CLASSES) {
          const answer = await miss(newLink(), which);
          cold[which.name].push(answer.ms);
          bytes[which.name].push(answer.bytes);
        }
        // The class's own work alone: its JPEG thumbnail (and original) stored first.
        for (const which of CLASSES.slice(1)) {
          const path = newLink();
          await miss(path, CLASSES[0]);
          afterJpeg[which.name].push((await miss(path, which)).ms);
        }
      }
    }
  } finally {
    agent.destroy();
    await served.stop();
    origin.close();
    await rm(root, { recursive: true, force: true });
  }
  const section = `thumbnail miss ${BENCH_SIZE.label} by format class, ${(jpeg.length / 1000).toFixed(0)} KB 1600×1200 JPEG, formats avif,webp`;
  const jpegMs = median(cold.JPEG);
  const jpegBytes = median(bytes.JPEG);
  const note = `${rounds} rounds × ${PER_ROUND}, classes alternating, median`;
  const rows: BenchRow[] = [];
  for (const which of CLASSES) {
    rows.push({ section, name: `cold miss, ${which.name} client (Accept ${which.accept})`, value: median(cold[which.name]), unit: 'ms', ratio: median(cold[which.name]) / jpegMs, note });
  }
  for (const which of CLASSES.slice(1)) {
    const value = median(afterJpeg[which.name]);
    rows.push({ section, name: `${which.name} file made, JPEG thumbnail already stored (what the class adds)`, value, unit: 'ms', ratio: value / jpegMs, note: 'ratio against the cold JPEG miss' });
  }
  for (const which of CLASSES) {
    const value = median(bytes[which.name]);
    rows.push({ section, name: `bytes of the ${which.name} thumbnail`, value, unit: 'bytes', ratio: value / jpegBytes });
  }
  if (wrongAnswers > 0) rows.push({ section, name: 'answers not 200 of the expected type', value: wrongAnswers, unit: 'requests' });
  return rows;
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { printBenchTable } = await import('./benchTable.js');
  const rounds = process.argv[2] === undefined ? undefined : Number(process.argv[2]);
  const cli = process.argv[3];
  printBenchTable(await benchFormatMiss({ ...(rounds === undefined ? {} : { rounds }), ...(cli === undefined ? {} : { cli }) }));
}
