/**
 * `imageproxy populate` throughput: a loopback origin serving one photo-like JPEG of 90 KB
 * or more (1200×900) under N different URLs; populates fresh roots in the OS temp dir without
 * thumbnails, with `--sizes 250x250`, and reruns the first list (everything stored: no
 * origin contact). Prints images/s of each and the origin's request counts. Not part of
 * CI. Needs `npm run build` first.
 *
 *   node --import tsx scripts/bench-populate.ts [urls=800] [populate flags…]
 */
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';

const CLI = fileURLToPath(new URL('../dist/server/cli.js', import.meta.url));
const URLS = Number(process.argv[2] ?? 800);
const EXTRA_FLAGS = process.argv.slice(3);

/** A noisy, slightly blurred 1200×900 JPEG: photo-like, at least 90 KB (the run prints its size). */
async function photoLikeJpeg(): Promise<Buffer> {
  const width = 1200;
  const height = 900;
  const raw = Buffer.alloc(width * height * 3);
  for (let index = 0; index < raw.length; index += 1) raw[index] = (index * 7919 + (index >> 8) * 31) & 0xff;
  let jpeg = Buffer.alloc(0);
  for (let quality = 60; quality <= 95 && jpeg.length < 90_000; quality += 5) {
    jpeg = await sharp(raw, { raw: { width, height, channels: 3 } }).blur(3).jpeg({ quality }).toBuffer();
  }
  return jpeg;
}

function runPopulate(list: string, root: string, flags: string[]): Promise<{ seconds: number; summary: string }> {
  return new Promise((resolve, reject) => {
    const startedMs = performance.now();
    const child = spawn(process.execPath, [CLI, 'populate', list, '--root', root, ...flags], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, IMAGEPROXY_ALLOW_PRIVATE_NETWORKS: 'true' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('exit', (code) => {
      if (code !== 0) reject(new Error(`populate exited ${code}: ${stdout} ${stderr}`));
      else resolve({ seconds: (performance.now() - startedMs) / 1000, summary: stdout.trim() });
    });
  });
}

const jpeg = await photoLikeJpeg();
let requests = 0;
const origin = createServer((_request, response) => {
  requests += 1;
  response.writeHead(200, { 'Content-Type': 'image/jpeg', 'Content-Length': jpeg.length }).end(jpeg);
});
await new Promise<void>((done) => origin.listen(0, '127.0.0.1', done));
const { port } = origin.address() as AddressInfo;
const work = await mkdtemp(join(tmpdir(), 'imageproxy-bench-populate-'));
try {
  console.log(`${URLS} URLs, one ${jpeg.length}-byte 1200×900 JPEG each, flags: ${EXTRA_FLAGS.join(' ') || '(defaults)'}`);
  const urls = Array.from({ length: URLS }, (_, index) => `http://127.0.0.1:${port}/image-${index}.jpg`).join('\n');
  const runs: { name: string; list: string; root: string; flags: string[] }[] = [
    { name: 'originals only', list: join(work, 'plain.txt'), root: join(work, 'plain'), flags: [] },
    { name: '--sizes 250x250', list: join(work, 'sized.txt'), root: join(work, 'sized'), flags: ['--sizes', '250x250'] },
    { name: 'rerun, all stored', list: join(work, 'plain.txt'), root: join(work, 'plain'), flags: [] },
  ];
  for (const run of runs) {
    await writeFile(run.list, urls);
    const before = requests;
    const { seconds, summary } = await runPopulate(run.list, run.root, [...run.flags, ...EXTRA_FLAGS]);
    console.log(
      `${run.name.padEnd(18)} ${(URLS / seconds).toFixed(0).padStart(6)} images/s (${seconds.toFixed(2)} s with process start), ` +
        `origin requests ${requests - before}; ${summary.split(';')[0]}`,
    );
  }
} finally {
  origin.close();
  await rm(work, { recursive: true, force: true });
}
