/**
 * The work of a cold miss without imageproxy around it, for scripts/bench-miss.ts: fetch
 * with plain http.get, resize with the app's own sharp engine (same qualities and
 * mozjpeg setting), keep the original and the thumbnail as a crash-safe cache must.
 * The bench runs it twice: in its own process (the baseline) and behind a bare
 * node:http server in a child process (scripts/bareMissServer.ts), which tells how much
 * of a miss's cost is crossing a process and how much is the app.
 */
import { open, rename } from 'node:fs/promises';
import { get as httpGet, type Agent } from 'node:http';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { DEFAULT_CONFIG } from '../server/config/config.js';
import type { ResizeEngine } from '../server/images/engine.js';
import { createSharpEngine } from '../server/images/sharpEngine.js';
import { keyDirectory, storageKey } from '../server/contract/layout.js';

/** The thumbnail size every bench miss asks for. */
export const BENCH_SIZE = { label: '250x250', maxWidth: 250, maxHeight: 250 };

/** A 1600×1200 photo-like JPEG of at most 220 KB (noise, blurred; the table names its size). */
export async function photoJpeg(): Promise<Buffer> {
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

/** The engine as serve builds it (server/service/imageServiceFactory.ts), on the config's defaults. */
export function baselineEngine(): ResizeEngine {
  return createSharpEngine({
    maxPixels: DEFAULT_CONFIG.limits.maxPixels,
    timeoutSeconds: Math.ceil(DEFAULT_CONFIG.limits.totalTimeoutMs / 1000),
    concurrency: Math.max(1, availableParallelism() - 1),
    quality: DEFAULT_CONFIG.quality,
    mozjpeg: DEFAULT_CONFIG.mozjpeg,
  });
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

export function fetchBytes(url: string, agent: Agent): Promise<Buffer> {
  return new Promise((done, fail) => {
    httpGet(url, { agent }, (incoming) => {
      const chunks: Buffer[] = [];
      incoming.on('data', (chunk: Buffer) => chunks.push(chunk));
      incoming.on('end', () => done(Buffer.concat(chunks)));
      incoming.on('error', fail);
    }).on('error', fail);
  });
}

/**
 * One miss of `imageUrl`: fetched, resized to BENCH_SIZE, original and thumbnail kept in
 * `treeRoot` (a tree made by init-buckets, the 64 × 64 layout of server/contract/layout.ts).
 * Resolves with the thumbnail's bytes.
 */
export async function baselineMiss(imageUrl: string, engine: ResizeEngine, agent: Agent, treeRoot: string): Promise<Buffer> {
  const input = await fetchBytes(imageUrl, agent);
  const result = await engine.resize({ input, format: 'jpeg', maxWidth: BENCH_SIZE.maxWidth, maxHeight: BENCH_SIZE.maxHeight });
  const key = storageKey(Buffer.from(imageUrl));
  const directory = join(treeRoot, keyDirectory('i', key));
  await Promise.all([
    writeDurably(join(directory, `${key}.jpg`), input),
    writeDurably(join(directory, `${key}.${BENCH_SIZE.label}.jpg`), result.bytes),
  ]);
  return result.bytes;
}
