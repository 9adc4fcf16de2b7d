/**
 * Resize benchmark: median milliseconds per thumbnail, sharp against jimp, in one run.
 *
 *   node --import tsx scripts/bench-resize.ts
 *
 * Inputs are made here with sharp (a 1600×1200 photo-like picture: gradients, shapes
 * and light noise) as JPEG and as PNG. Both engines run with one thread (sharp:
 * one libvips thread; jimp: one worker), jobs one after the other, so the figures
 * are the cost of one thumbnail, not throughput. jimp's figure includes the trip to
 * its worker thread, as in production.
 */
import { pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { DEFAULT_QUALITY } from '../server/images/engine.js';
import { createEngine } from '../server/images/engineChoice.js';
import type { EngineOptions, ImageFormat, ResizeEngine, ResizeRequest } from '../server/images/engine.js';

export interface ResizeBenchRow {
  input: string;
  size: string;
  sharpMedianMs: number;
  jimpMedianMs: number;
  /** jimpMedianMs / sharpMedianMs. */
  ratio: number;
}

const WARM_UP_ROUNDS = 2;
const MEASURED_ROUNDS = 15;

const ENGINE_OPTIONS: EngineOptions = {
  maxPixels: 40_000_000,
  timeoutSeconds: 60,
  concurrency: 1,
  quality: { ...DEFAULT_QUALITY },
};

const SIZES: Array<{ size: string; maxHeight: number | null; maxWidth: number | null }> = [
  { size: '250x250', maxHeight: 250, maxWidth: 250 },
  { size: '150x', maxHeight: 150, maxWidth: null },
];

/** A 1600×1200 picture that compresses like a photo (smooth areas, edges, a little grain). */
export async function photoLike(format: ImageFormat): Promise<Buffer> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="1600" height="1200">
    <defs>
      <linearGradient id="sky" x1="0" y1="0" x2="0" y2="1"><stop offset="0" stop-color="#3b6fb6"/><stop offset="1" stop-color="#f2c58a"/></linearGradient>
      <radialGradient id="sun"><stop offset="0" stop-color="#fff6c8"/><stop offset="1" stop-color="#f2a14a" stop-opacity="0"/></radialGradient>
    </defs>
    <rect width="1600" height="1200" fill="url(#sky)"/>
    <circle cx="1150" cy="420" r="260" fill="url(#sun)"/>
    <path d="M0 900 L300 620 L520 820 L800 560 L1100 860 L1350 700 L1600 880 L1600 1200 L0 1200 Z" fill="#2f4a32"/>
    <path d="M0 1000 Q400 900 800 1010 T1600 980 L1600 1200 L0 1200 Z" fill="#1d3020"/>
  </svg>`;
  const grain = await sharp({
    create: { width: 1600, height: 1200, channels: 4, background: { r: 128, g: 128, b: 128, alpha: 0.3 }, noise: { type: 'gaussian', mean: 128, sigma: 40 } },
  })
    .png()
    .toBuffer();
  return sharp(Buffer.from(svg))
    .composite([{ input: grain, blend: 'overlay' }])
    .toFormat(format)
    .toBuffer();
}

async function timeOne(engine: ResizeEngine, request: ResizeRequest): Promise<number> {
  const start = performance.now();
  await engine.resize(request);
  return performance.now() - start;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const upper = sorted[middle] ?? Number.NaN;
  return sorted.length % 2 === 1 ? upper : ((sorted[middle - 1] ?? upper) + upper) / 2;
}

function roundTo(value: number, decimals: number): number {
  const factor = 10 ** decimals;
  return Math.round(value * factor) / factor;
}

export async function benchResize(): Promise<ResizeBenchRow[]> {
  const sharpEngine = await createEngine('sharp', ENGINE_OPTIONS);
  const jimpEngine = await createEngine('jimp', ENGINE_OPTIONS);
  const rows: ResizeBenchRow[] = [];
  try {
    for (const format of ['jpeg', 'png'] as const) {
      const input = await photoLike(format);
      for (const { size, maxHeight, maxWidth } of SIZES) {
        const request: ResizeRequest = { input, format, maxHeight, maxWidth };
        const timings = { sharp: [] as number[], jimp: [] as number[] };
        // Alternate the engines so drift (thermal, other load) hits both alike.
        for (let round = 0; round < WARM_UP_ROUNDS + MEASURED_ROUNDS; round++) {
          const sharpMs = await timeOne(sharpEngine, request);
          const jimpMs = await timeOne(jimpEngine, request);
          if (round < WARM_UP_ROUNDS) continue;
          timings.sharp.push(sharpMs);
          timings.jimp.push(jimpMs);
        }
        const sharpMedianMs = median(timings.sharp);
        const jimpMedianMs = median(timings.jimp);
        rows.push({
          input: `${format.toUpperCase()} 1600×1200 (${Math.round(input.byteLength / 1024)} KiB)`,
          size,
          sharpMedianMs: roundTo(sharpMedianMs, 1),
          jimpMedianMs: roundTo(jimpMedianMs, 1),
          ratio: roundTo(jimpMedianMs / sharpMedianMs, 1),
        });
      }
    }
  } finally {
    await Promise.all([sharpEngine.close(), jimpEngine.close()]);
  }
  return rows;
}

export function printResizeRows(rows: ResizeBenchRow[]): void {
  console.log(`resize: median ms per thumbnail over ${MEASURED_ROUNDS} runs (after ${WARM_UP_ROUNDS} warm-up), one thread each`);
  console.log(['input'.padEnd(26), 'size'.padEnd(8), 'sharp ms'.padStart(9), 'jimp ms'.padStart(9), 'jimp/sharp'.padStart(11)].join(' '));
  for (const row of rows) {
    console.log(
      [
        row.input.padEnd(26),
        row.size.padEnd(8),
        row.sharpMedianMs.toFixed(1).padStart(9),
        row.jimpMedianMs.toFixed(1).padStart(9),
        `${row.ratio.toFixed(1)}×`.padStart(11),
      ].join(' '),
    );
  }
}

const runDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (runDirectly) printResizeRows(await benchResize());
