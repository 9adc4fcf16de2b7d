/**
 * Encoder settings for WebP and AVIF thumbnails, chosen by measurement (issue 20).
 *
 *   npm run bench:formats [-- --rounds N] [-- --quick] [-- --json FILE]
 *
 * Corpus: the photos the tests and benches make (scripts/bench-resize.ts's photo-like
 * picture, test/bigPhotoOrigin.ts's 12 MP noise photo, the noise, flat, rotated and
 * half-transparent images of the store, e2e and miss-order tests) plus generated ones:
 * a portrait, a texture, a smooth sky, flat graphics with text-like strokes, a
 * screenshot, a transparent logo, two small flat images that are not resized, and an
 * animated GIF.
 *
 * Each image goes through the engine's resize (planResize, auto-orient, `fit: fill` to
 * the planned size, as server/images/sharpEngine.ts does) into a 250x250 box; those
 * pixels, kept raw in memory, are the reference. Every encode starts from the reference
 * pixels, so its time is the encoder's alone:
 * - JPEG: mozjpeg q80, the engine's options (sharpJpegOptions), the yardstick; an image
 *   with alpha is flattened onto white first (the engine keeps a PNG a PNG; the JPEG
 *   only serves as the common yardstick, the "source" column is what is served today);
 * - WebP and AVIF over a grid of settings, through encodeThumbnailAs.
 * SSIM (ssim.js, the original Wang et al. algorithm, no downsampling) of each decoded
 * encode against the reference, both flattened onto white; bytes and SSIM are compared
 * with the JPEG's. Encode time: each encode is timed right after a JPEG encode of the
 * same pixels, and the ratio is the median over rounds of (encode ms / that JPEG's ms),
 * so a noisy, shared machine slows both sides of each ratio alike.
 *
 * Aggregates over the still images (the animation has no JPEG to compare with): bytes as
 * the median of the per-image ratios (and the total as a second figure), SSIM as the
 * mean of per-image deltas (and the worst), time as the median of per-image ratios.
 * Chosen per format: among the settings meeting issue 20's goals (bytes ratio at most
 * 0.75 for WebP and 0.60 for AVIF, as the median and as the total; mean SSIM delta at
 * least -0.005), the fastest (see choose).
 */
import { writeFile } from 'node:fs/promises';
import { availableParallelism, cpus } from 'node:os';
import { pathToFileURL } from 'node:url';
import sharp from 'sharp';
import type { Sharp } from 'sharp';
import { ssim } from 'ssim.js';
import type { ModernFormat } from '../server/contract/accept.js';
import { DEFAULT_QUALITY } from '../server/images/engine.js';
import type { ImageFormat } from '../server/images/engine.js';
import {
  DEFAULT_FORMAT_SETTINGS,
  encodeThumbnailAs,
  isWorthServing,
  type AvifSettings,
  type FormatSettings,
  type WebpSettings,
} from '../server/images/formatEncode.js';
import { orientedSize, planResize } from '../server/images/resizePlan.js';
import { sharpJpegOptions } from '../server/images/sharpEngine.js';
import { twelveMegapixelJpeg } from '../test/bigPhotoOrigin.js';
import { photoLike } from './bench-resize.js';
import { median } from './benchMeasure.js';
import type { BenchRow } from './benchTable.js';

const BOX = { maxWidth: 250, maxHeight: 250 };
const WHITE = { r: 255, g: 255, b: 255 };
const GOALS: Record<ModernFormat, { maxBytesRatio: number }> = { webp: { maxBytesRatio: 0.75 }, avif: { maxBytesRatio: 0.6 } };
const MAX_SSIM_LOSS = 0.005;

type Setting = { format: 'webp'; webp: WebpSettings } | { format: 'avif'; avif: AvifSettings };

function settingGrid(): Setting[] {
  const grid: Setting[] = [];
  for (const effort of [4, 6]) {
    for (const smartSubsample of [false, true]) {
      for (let quality = 60; quality <= 85; quality += 5) grid.push({ format: 'webp', webp: { quality, effort, smartSubsample } });
    }
  }
  for (const effort of [2, 4, 6]) {
    for (const chromaSubsampling of ['4:2:0', '4:4:4'] as const) {
      for (let quality = 40; quality <= 65; quality += 5) grid.push({ format: 'avif', avif: { quality, effort, chromaSubsampling } });
    }
  }
  return grid;
}

function settingLabel(setting: Setting): string {
  if (setting.format === 'webp') {
    const { quality, effort, smartSubsample } = setting.webp;
    return `webp q${quality} effort ${effort}${smartSubsample ? ' smartSubsample' : ''}`;
  }
  const { quality, effort, chromaSubsampling } = setting.avif;
  return `avif q${quality} effort ${effort} ${chromaSubsampling}`;
}

function settingsWith(setting: Setting): FormatSettings {
  return setting.format === 'webp'
    ? { webp: setting.webp, avif: DEFAULT_FORMAT_SETTINGS.avif }
    : { webp: DEFAULT_FORMAT_SETTINGS.webp, avif: setting.avif };
}

// ---------------------------------------------------------------- corpus

interface CorpusImage {
  name: string;
  /** Where it comes from: a test or bench of the project, or made here. */
  origin: string;
  input: Buffer;
  format: ImageFormat;
}

/** A deterministic pseudo-random sequence (LCG), so the corpus is the same every run. */
function pseudoRandom(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1103515245 + 12345) & 0x7fffffff;
    return state / 0x7fffffff;
  };
}

/** Rows of thin dark bars of random widths: the edges of text, without needing a font. */
function textLikeStrokes(x: number, y: number, width: number, lines: number, lineHeight: number, colour: string, seed: number): string {
  const random = pseudoRandom(seed);
  const parts: string[] = [];
  for (let line = 0; line < lines; line++) {
    let cursor = x;
    const top = y + line * lineHeight;
    while (cursor < x + width - 20) {
      const word = 12 + Math.floor(random() * 60);
      for (let glyph = 0; glyph < word; glyph += 7) {
        const glyphHeight = random() < 0.3 ? lineHeight * 0.7 : lineHeight * 0.45;
        parts.push(`<rect x="${cursor + glyph}" y="${top + lineHeight * 0.7 - glyphHeight}" width="${2 + Math.floor(random() * 3)}" height="${glyphHeight.toFixed(1)}" fill="${colour}"/>`);
      }
      cursor += word + 10;
    }
  }
  return parts.join('');
}

async function grain(width: number, height: number, sigma: number, opacity: number): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 4, background: { r: 128, g: 128, b: 128, alpha: opacity }, noise: { type: 'gaussian', mean: 128, sigma } } })
    .png()
    .toBuffer();
}

async function svgWithGrain(svg: string, width: number, height: number, sigma: number): Promise<Sharp> {
  return sharp(Buffer.from(svg)).composite([{ input: await grain(width, height, sigma, 0.3), blend: 'overlay' }]);
}

async function animatedGif(): Promise<Buffer> {
  const frames: Buffer[] = [];
  for (let frame = 0; frame < 8; frame++) {
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="480" height="360">
      <defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1"><stop offset="0" stop-color="#204080"/><stop offset="1" stop-color="#e0a040"/></linearGradient></defs>
      <rect width="480" height="360" fill="url(#g)"/>
      <circle cx="${60 + frame * 45}" cy="${180 + Math.round(Math.sin(frame) * 80)}" r="50" fill="#f4f4f4"/>
      <rect x="20" y="300" width="${40 + frame * 50}" height="30" fill="#101010"/></svg>`;
    frames.push(await sharp(Buffer.from(svg)).png().toBuffer());
  }
  const delay = [80, 80, 100, 100, 120, 120, 150, 150];
  return sharp(frames, { join: { animated: true } }).gif({ delay, loop: 0 }).toBuffer();
}

async function buildCorpus(): Promise<CorpusImage[]> {
  const logo = `<svg xmlns="http://www.w3.org/2000/svg" width="600" height="600">
    <circle cx="300" cy="300" r="250" fill="#e63946" fill-opacity="0.85"/>
    <polygon points="300,90 500,470 100,470" fill="#f1faee"/>
    <circle cx="300" cy="340" r="90" fill="#1d3557" fill-opacity="0.6"/>
    ${textLikeStrokes(150, 500, 300, 1, 40, '#1d3557', 7)}</svg>`;
  const graphic = `<svg xmlns="http://www.w3.org/2000/svg" width="1200" height="900">
    <rect width="1200" height="900" fill="#ffffff"/>
    <rect x="0" y="0" width="1200" height="120" fill="#2a9d8f"/>
    ${textLikeStrokes(60, 30, 700, 1, 60, '#ffffff', 1)}
    <rect x="760" y="180" width="380" height="300" fill="#e9c46a"/>
    <circle cx="950" cy="330" r="110" fill="#e76f51"/>
    ${textLikeStrokes(60, 180, 660, 16, 36, '#222222', 2)}
    ${textLikeStrokes(760, 520, 380, 9, 36, '#264653', 3)}</svg>`;
  const screenshot = `<svg xmlns="http://www.w3.org/2000/svg" width="1280" height="800">
    <rect width="1280" height="800" fill="#f5f5f7"/>
    <rect width="1280" height="48" fill="#2b2d42"/>
    <rect x="0" y="48" width="240" height="752" fill="#edf2f4"/>
    ${textLikeStrokes(20, 70, 200, 18, 34, '#555555', 4)}
    <rect x="280" y="90" width="940" height="300" rx="8" fill="#ffffff" stroke="#d0d0d0"/>
    ${textLikeStrokes(300, 110, 900, 7, 38, '#333333', 5)}
    <rect x="280" y="420" width="200" height="44" rx="6" fill="#0a84ff"/>
    <rect x="500" y="420" width="200" height="44" rx="6" fill="#ffffff" stroke="#0a84ff"/>
    ${textLikeStrokes(280, 500, 940, 7, 38, '#333333', 6)}</svg>`;
  const portrait = `<svg xmlns="http://www.w3.org/2000/svg" width="900" height="1350">
    <defs>
      <radialGradient id="bg" cx="0.3" cy="0.2" r="1"><stop offset="0" stop-color="#d8c3a5"/><stop offset="1" stop-color="#3e2f24"/></radialGradient>
      <radialGradient id="skin" cx="0.4" cy="0.35" r="0.7"><stop offset="0" stop-color="#f3c9a8"/><stop offset="1" stop-color="#a86f4c"/></radialGradient>
    </defs>
    <rect width="900" height="1350" fill="url(#bg)"/>
    <ellipse cx="450" cy="520" rx="210" ry="270" fill="url(#skin)"/>
    <path d="M150 1350 Q450 760 750 1350 Z" fill="#3a506b"/>
    <ellipse cx="370" cy="480" rx="30" ry="16" fill="#2b1d14"/><ellipse cx="530" cy="480" rx="30" ry="16" fill="#2b1d14"/>
    <path d="M390 650 Q450 690 510 650" stroke="#7a3b2e" stroke-width="10" fill="none"/></svg>`;
  const sky = `<svg xmlns="http://www.w3.org/2000/svg" width="1920" height="1080">
    <defs><linearGradient id="s" x1="0" y1="0" x2="0" y2="1"><stop offset="0" stop-color="#0b3d91"/><stop offset="0.7" stop-color="#7fb2e5"/><stop offset="1" stop-color="#fde2c0"/></linearGradient></defs>
    <rect width="1920" height="1080" fill="url(#s)"/>
    <path d="M0 1000 L500 940 L900 990 L1400 930 L1920 990 L1920 1080 L0 1080 Z" fill="#14213d"/></svg>`;
  const icon = `<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96">
    <rect width="96" height="96" fill="#ffffff"/><rect x="16" y="16" width="64" height="64" rx="10" fill="#3a86ff"/>
    <rect x="30" y="44" width="36" height="8" fill="#ffffff"/></svg>`;

  const textureNoise = await sharp({ create: { width: 1600, height: 1066, channels: 3, background: '#4a7a3a', noise: { type: 'gaussian', mean: 110, sigma: 60 } } })
    .blur(1.2)
    .png()
    .toBuffer();
  const redBlock = await sharp({ create: { width: 400, height: 600, channels: 3, background: '#ff0000' } }).png().toBuffer();
  const rotatedPixels = await sharp({ create: { width: 800, height: 600, channels: 3, background: '#3366cc', noise: { type: 'gaussian', mean: 128, sigma: 20 } } })
    .composite([{ input: redBlock, left: 0, top: 0 }])
    .png()
    .toBuffer();

  return [
    { name: 'photo-like landscape 1600x1200', origin: 'scripts/bench-resize.ts', format: 'jpeg', input: await photoLike('jpeg') },
    { name: 'photo-like landscape, PNG', origin: 'scripts/bench-resize.ts', format: 'png', input: await photoLike('png') },
    { name: '12 MP noise photo', origin: 'test/bigPhotoOrigin.ts', format: 'jpeg', input: await twelveMegapixelJpeg() },
    {
      name: 'noise photo, EXIF 6, P3 profile',
      origin: 'test/metadataStore.test.ts',
      format: 'jpeg',
      input: await sharp(rotatedPixels).withIccProfile('p3').withMetadata({ orientation: 6 }).jpeg().toBuffer(),
    },
    {
      name: 'noise photo 1200x800',
      origin: 'test/missOrder.test.ts',
      format: 'jpeg',
      input: await sharp({ create: { width: 1200, height: 800, channels: 3, background: '#446688', noise: { type: 'gaussian', mean: 128, sigma: 30 } } }).jpeg().toBuffer(),
    },
    { name: 'flat 800x600 JPEG', origin: 'test/e2e.test.ts', format: 'jpeg', input: await sharp({ create: { width: 800, height: 600, channels: 3, background: '#884422' } }).jpeg().toBuffer() },
    {
      name: 'half-transparent flat PNG',
      origin: 'test/e2e.test.ts',
      format: 'png',
      input: await sharp({ create: { width: 400, height: 300, channels: 4, background: { r: 0, g: 0, b: 255, alpha: 0.5 } } }).png().toBuffer(),
    },
    { name: 'portrait, gradients + grain', origin: 'generated', format: 'jpeg', input: await (await svgWithGrain(portrait, 900, 1350, 30)).jpeg({ quality: 90 }).toBuffer() },
    { name: 'texture (blurred noise)', origin: 'generated', format: 'jpeg', input: await sharp(textureNoise).jpeg({ quality: 90 }).toBuffer() },
    { name: 'smooth sky gradient', origin: 'generated', format: 'jpeg', input: await (await svgWithGrain(sky, 1920, 1080, 6)).jpeg({ quality: 92 }).toBuffer() },
    { name: 'graphic with text-like strokes', origin: 'generated', format: 'png', input: await sharp(Buffer.from(graphic)).png().toBuffer() },
    { name: 'screenshot-like UI', origin: 'generated', format: 'png', input: await sharp(Buffer.from(screenshot)).png().toBuffer() },
    { name: 'transparent logo', origin: 'generated', format: 'png', input: await sharp(Buffer.from(logo)).png().toBuffer() },
    { name: 'small flat icon 96x96 (kept)', origin: 'generated', format: 'png', input: await sharp(Buffer.from(icon)).png().toBuffer() },
    {
      name: 'small flat JPEG 200x150 (kept)',
      origin: 'generated',
      format: 'jpeg',
      input: await sharp({ create: { width: 200, height: 150, channels: 3, background: '#d0e0f0' } })
        .composite([{ input: await sharp(Buffer.from(icon)).png().toBuffer(), left: 52, top: 27 }])
        .jpeg()
        .toBuffer(),
    },
    {
      name: 'tiny 2-colour PNG 64x64 (kept)',
      origin: 'generated',
      format: 'png',
      input: await sharp(Buffer.from(icon)).resize(64, 64).png({ palette: true, colours: 2 }).toBuffer(),
    },
    { name: 'flat GIF 120x90 (kept)', origin: 'generated', format: 'gif', input: await sharp(Buffer.from(icon)).resize(120, 90, { fit: 'fill' }).gif().toBuffer() },
    { name: 'animated GIF, 8 frames', origin: 'generated', format: 'gif', input: await animatedGif() },
  ];
}

// ---------------------------------------------------------------- measuring

interface Reference {
  pixels: Buffer;
  width: number;
  /** One frame's height. */
  height: number;
  frames: number;
  channels: 3 | 4;
  /** The source-format thumbnail the engine serves today, for the "not smaller" count. */
  sourceFormatBytes: number;
}

/** The engine's resize (server/images/sharpEngine.ts: plan, auto-orient, fit fill to the plan). */
async function thumbnailPipeline(image: CorpusImage): Promise<Sharp> {
  const input = sharp(image.input, { animated: image.format === 'gif' || image.format === 'webp', failOn: 'warning' });
  const header = await input.metadata();
  const plan = planResize(orientedSize({ width: header.width, height: header.pageHeight ?? header.height }, header.orientation), BOX);
  const oriented = input.autoOrient();
  return plan.resize ? oriented.resize({ width: plan.width, height: plan.height, fit: 'fill', withoutEnlargement: true }) : oriented;
}

function sourceFormatEncode(pipeline: Sharp, format: ImageFormat): Sharp {
  switch (format) {
    case 'jpeg':
      return pipeline.jpeg(sharpJpegOptions(DEFAULT_QUALITY, true));
    case 'png':
      return pipeline.png();
    case 'gif':
      return pipeline.gif();
    case 'webp':
      return pipeline.webp({ quality: DEFAULT_QUALITY.webp });
    case 'avif':
      return pipeline.avif({ quality: DEFAULT_QUALITY.avif });
  }
}

async function referenceOf(image: CorpusImage): Promise<Reference> {
  const pipeline = await thumbnailPipeline(image);
  const { data, info } = await pipeline.clone().raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 && info.channels !== 4) throw new Error(`${image.name}: ${info.channels} channels`);
  const sourceFormat = await sourceFormatEncode(pipeline.clone(), image.format).toBuffer();
  return {
    pixels: data,
    width: info.width,
    height: info.pageHeight ?? info.height,
    frames: info.pages ?? 1,
    channels: info.channels,
    sourceFormatBytes: sourceFormat.length,
  };
}

function fromReference(reference: Reference): Sharp {
  const frames = reference.frames;
  return sharp(reference.pixels, {
    raw: { width: reference.width, height: reference.height * frames, channels: reference.channels, ...(frames > 1 ? { pageHeight: reference.height } : {}) },
  });
}

function encodeJpeg(reference: Reference): Promise<Buffer> {
  const pipeline = fromReference(reference);
  const opaque = reference.channels === 4 ? pipeline.flatten({ background: WHITE }) : pipeline;
  return opaque.jpeg(sharpJpegOptions(DEFAULT_QUALITY, true)).toBuffer();
}

/** RGBA pixels flattened onto white, the way ssim.js reads them. */
async function flattenedRgba(image: Sharp): Promise<{ data: Uint8ClampedArray; width: number; height: number }> {
  const { data, info } = await image.flatten({ background: WHITE }).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8ClampedArray(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
}

async function ssimAgainst(reference: Awaited<ReturnType<typeof flattenedRgba>>, encoded: Buffer): Promise<number> {
  const decoded = await flattenedRgba(sharp(encoded, { animated: true }));
  if (decoded.width !== reference.width || decoded.height !== reference.height) {
    throw new Error(`decoded ${decoded.width}x${decoded.height}, reference ${reference.width}x${reference.height}`);
  }
  return ssim(reference, decoded, { ssim: 'original', downsample: false }).mssim;
}

async function timed<T>(work: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const start = performance.now();
  const value = await work();
  return { value, ms: performance.now() - start };
}

interface ImageMeasure {
  image: CorpusImage;
  reference: Reference;
  jpegBytes: number;
  jpegSsim: number;
  /** Per setting, in grid order. */
  settings: Array<{ bytes: number; ssim: number; timeRatio: number; jpegMs: number; ms: number }>;
}

async function measureImage(image: CorpusImage, grid: readonly Setting[], rounds: number): Promise<ImageMeasure> {
  const reference = await referenceOf(image);
  const referenceRgba = await flattenedRgba(fromReference(reference));
  const jpeg = await encodeJpeg(reference);
  const jpegSsim = await ssimAgainst(referenceRgba, jpeg);
  const animated = reference.frames > 1;
  const settings: ImageMeasure['settings'] = [];
  for (const setting of grid) {
    if (animated && setting.format === 'avif') {
      settings.push({ bytes: Number.NaN, ssim: Number.NaN, timeRatio: Number.NaN, jpegMs: Number.NaN, ms: Number.NaN });
      continue;
    }
    const ratios: number[] = [];
    const jpegTimes: number[] = [];
    const times: number[] = [];
    let bytes: Buffer | null = null;
    for (let round = 0; round < rounds; round++) {
      // The JPEG is encoded right before, so both sides of the ratio see the same load.
      const jpegRun = await timed(() => encodeJpeg(reference));
      const run = await timed(() => encodeThumbnailAs(setting.format, fromReference(reference), settingsWith(setting)));
      bytes ??= run.value.bytes;
      ratios.push(run.ms / jpegRun.ms);
      jpegTimes.push(jpegRun.ms);
      times.push(run.ms);
    }
    if (bytes === null) throw new Error('no rounds');
    settings.push({ bytes: bytes.length, ssim: await ssimAgainst(referenceRgba, bytes), timeRatio: median(ratios), jpegMs: median(jpegTimes), ms: median(times) });
  }
  return { image, reference, jpegBytes: jpeg.length, jpegSsim, settings };
}

// ---------------------------------------------------------------- aggregating

export interface SettingSummary {
  setting: Setting;
  label: string;
  medianBytesRatio: number;
  totalBytesRatio: number;
  meanSsimDelta: number;
  worstSsimDelta: number;
  medianTimeRatio: number;
  /** Images (animation included for WebP) whose encode is not smaller than the source-format thumbnail. */
  notSmallerThanSource: number;
  imagesCounted: number;
  meetsGoals: boolean;
}

function summarize(measures: readonly ImageMeasure[], grid: readonly Setting[]): SettingSummary[] {
  const stills = measures.filter((measure) => measure.reference.frames === 1);
  return grid.map((setting, index) => {
    const rows = stills.map((measure) => ({ measure, result: measure.settings[index] ?? raise('missing result') }));
    const bytesRatios = rows.map(({ measure, result }) => result.bytes / measure.jpegBytes);
    const ssimDeltas = rows.map(({ measure, result }) => result.ssim - measure.jpegSsim);
    const totalBytes = rows.reduce((sum, { result }) => sum + result.bytes, 0);
    const totalJpeg = rows.reduce((sum, { measure }) => sum + measure.jpegBytes, 0);
    const counted = measures.filter((measure) => Number.isFinite(measure.settings[index]?.bytes));
    const notSmaller = counted.filter((measure) => !isWorthServing(measure.settings[index]?.bytes ?? 0, measure.reference.sourceFormatBytes)).length;
    const summary = {
      setting,
      label: settingLabel(setting),
      medianBytesRatio: median(bytesRatios),
      totalBytesRatio: totalBytes / totalJpeg,
      meanSsimDelta: ssimDeltas.reduce((sum, delta) => sum + delta, 0) / ssimDeltas.length,
      worstSsimDelta: Math.min(...ssimDeltas),
      medianTimeRatio: median(rows.map(({ result }) => result.timeRatio)),
      notSmallerThanSource: notSmaller,
      imagesCounted: counted.length,
    };
    const maxBytesRatio = GOALS[setting.format].maxBytesRatio;
    const meetsGoals = summary.medianBytesRatio <= maxBytesRatio && summary.totalBytesRatio <= maxBytesRatio && summary.meanSsimDelta >= -MAX_SSIM_LOSS;
    return { ...summary, meetsGoals };
  });
}

function raise(message: string): never {
  throw new Error(message);
}

/**
 * Times closer than this (relative) to the fastest goal-meeting setting count as equally
 * fast: within one effort level the quality hardly changes the encode time, and what is
 * left is the machine's noise.
 */
const SAME_SPEED = 0.2;

/** Mean SSIMs closer than this count as equal (4:2:0 against 4:4:4 at one quality). */
const SAME_SSIM = 0.001;

/**
 * Of the goal-meeting settings, those as fast as the fastest (within SAME_SPEED); of
 * those, the ones as good as the best mean SSIM (within SAME_SSIM); of those, the fewest
 * bytes in total. Null when none meets the goals.
 */
function choose(summaries: readonly SettingSummary[], format: ModernFormat): SettingSummary | null {
  const candidates = summaries.filter((summary) => summary.setting.format === format && summary.meetsGoals);
  const fastest = Math.min(...candidates.map((summary) => summary.medianTimeRatio));
  const asFast = candidates.filter((summary) => summary.medianTimeRatio <= fastest * (1 + SAME_SPEED));
  const bestSsim = Math.max(...asFast.map((summary) => summary.meanSsimDelta));
  const asGood = asFast.filter((summary) => summary.meanSsimDelta >= bestSsim - SAME_SSIM);
  asGood.sort((a, b) => a.totalBytesRatio - b.totalBytesRatio);
  return asGood[0] ?? null;
}

// ---------------------------------------------------------------- printing

function fixed(value: number, decimals: number): string {
  return Number.isFinite(value) ? value.toFixed(decimals) : 'n/a';
}

function signed(value: number): string {
  return Number.isFinite(value) ? `${value >= 0 ? '+' : ''}${value.toFixed(4)}` : 'n/a';
}

function gridTable(summaries: readonly SettingSummary[], chosen: ReadonlySet<SettingSummary>): string {
  const lines = [
    '| setting | bytes/JPEG median | bytes/JPEG total | SSIM Δ mean | SSIM Δ worst | encode time/JPEG median | not smaller than source | goals |',
    '|---|---:|---:|---:|---:|---:|---:|---|',
  ];
  for (const summary of summaries) {
    lines.push(
      `| ${chosen.has(summary) ? `**${summary.label}**` : summary.label} | ${fixed(summary.medianBytesRatio, 2)} | ${fixed(summary.totalBytesRatio, 2)} | ${signed(summary.meanSsimDelta)} | ${signed(summary.worstSsimDelta)} | ${fixed(summary.medianTimeRatio, 1)} | ${summary.notSmallerThanSource}/${summary.imagesCounted} | ${summary.meetsGoals ? 'met' : ''} |`,
    );
  }
  return lines.join('\n');
}

function imageTable(measures: readonly ImageMeasure[], grid: readonly Setting[], picks: ReadonlyArray<SettingSummary | null>): string {
  const picked = picks.filter((pick): pick is SettingSummary => pick !== null);
  const header = ['image', 'thumbnail', 'source', 'source bytes', 'JPEG bytes', 'JPEG SSIM', 'JPEG ms', ...picked.flatMap((pick) => [`${pick.setting.format} bytes (÷JPEG)`, `${pick.setting.format} SSIM`, `${pick.setting.format} ms`])];
  const lines = [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`];
  for (const measure of measures) {
    const { reference } = measure;
    // An animation has no JPEG counterpart: its ratios are to the stacked frames' JPEG.
    const still = reference.frames === 1;
    const cells = [
      measure.image.name,
      `${reference.width}x${reference.height}${still ? '' : ` × ${reference.frames}`}`,
      measure.image.format,
      String(reference.sourceFormatBytes),
      still ? String(measure.jpegBytes) : `(${measure.jpegBytes})`,
      still ? measure.jpegSsim.toFixed(4) : 'n/a',
      fixed(measure.settings.find((result) => Number.isFinite(result.jpegMs))?.jpegMs ?? Number.NaN, 1),
    ];
    for (const pick of picked) {
      const result = measure.settings[grid.indexOf(pick.setting)] ?? raise('missing result');
      const mark = Number.isFinite(result.bytes) && !isWorthServing(result.bytes, reference.sourceFormatBytes) ? ' (not smaller than source)' : '';
      cells.push(Number.isFinite(result.bytes) ? `${result.bytes} (${(result.bytes / measure.jpegBytes).toFixed(2)})${mark}` : 'n/a (animation)', fixed(result.ssim, 4), fixed(result.ms, 1));
    }
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------- running

export interface FormatsBenchResult {
  grid: SettingSummary[];
  chosen: Record<ModernFormat, SettingSummary | null>;
  tables: { grid: string; images: string };
}

export async function benchFormats(rounds: number, log: (line: string) => void = () => {}): Promise<FormatsBenchResult> {
  // One libvips thread: the figures are the cost of one encode, as under load.
  sharp.concurrency(1);
  sharp.cache(false);
  const corpus = await buildCorpus();
  const grid = settingGrid();
  const measures: ImageMeasure[] = [];
  for (const image of corpus) {
    const start = performance.now();
    measures.push(await measureImage(image, grid, rounds));
    log(`measured ${image.name} in ${((performance.now() - start) / 1000).toFixed(1)} s`);
  }
  const summaries = summarize(measures, grid);
  const chosen = { webp: choose(summaries, 'webp'), avif: choose(summaries, 'avif') };
  const chosenSet = new Set([chosen.webp, chosen.avif].filter((pick): pick is SettingSummary => pick !== null));
  return {
    grid: summaries,
    chosen,
    tables: { grid: gridTable(summaries, chosenSet), images: imageTable(measures, grid, [chosen.webp, chosen.avif]) },
  };
}

/** The chosen settings as rows of `npm run bench`'s table (for issue 20's item 7). */
export function formatsBenchRows(result: FormatsBenchResult): BenchRow[] {
  const rows: BenchRow[] = [];
  for (const pick of [result.chosen.webp, result.chosen.avif]) {
    if (pick === null) continue;
    rows.push({ section: 'formats, 250x250 vs mozjpeg q80', name: `${pick.label}: bytes`, value: pick.medianBytesRatio, unit: '× JPEG (median)' });
    rows.push({ section: 'formats, 250x250 vs mozjpeg q80', name: `${pick.label}: SSIM Δ`, value: pick.meanSsimDelta, unit: 'mean' });
    rows.push({ section: 'formats, 250x250 vs mozjpeg q80', name: `${pick.label}: encode time`, value: pick.medianTimeRatio, unit: '× JPEG (median)' });
  }
  return rows;
}

function sameSettings(pick: SettingSummary | null, format: ModernFormat): boolean {
  if (pick === null) return false;
  const current = DEFAULT_FORMAT_SETTINGS[format];
  const measured = pick.setting.format === 'webp' ? pick.setting.webp : pick.setting.avif;
  return JSON.stringify(Object.entries(current).sort()) === JSON.stringify(Object.entries(measured).sort());
}

function parseArguments(argv: readonly string[]): { rounds: number; jsonFile: string | null } {
  let rounds = 5;
  let jsonFile: string | null = null;
  for (let index = 0; index < argv.length; index++) {
    const argument = argv[index];
    if (argument === '--quick') rounds = 1;
    else if (argument === '--rounds') {
      rounds = Number(argv[++index]);
      if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds needs a positive integer');
    } else if (argument === '--json') {
      jsonFile = argv[++index] ?? raise('--json needs a file name');
    } else throw new Error(`unknown argument ${argument ?? ''}: use --rounds N, --quick, --json FILE`);
  }
  return { rounds, jsonFile };
}

const runDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (runDirectly) {
  const { rounds, jsonFile } = parseArguments(process.argv.slice(2));
  const started = new Date().toISOString();
  const result = await benchFormats(rounds, (line) => console.error(line));
  console.log(`date ${started}; ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown'}); node ${process.version}; sharp ${sharp.versions.sharp ?? '?'} (libvips ${sharp.versions.vips}); ${rounds} rounds`);
  console.log('');
  console.log(result.tables.grid);
  console.log('');
  console.log(result.tables.images);
  console.log('');
  for (const format of ['webp', 'avif'] as const) {
    const pick = result.chosen[format];
    const agrees = sameSettings(pick, format) ? 'same as' : 'differs from';
    console.log(pick === null ? `${format}: no setting meets the goals` : `${format}: chosen ${pick.label} (${agrees} DEFAULT_FORMAT_SETTINGS in server/images/formatEncode.ts)`);
  }
  if (jsonFile !== null) await writeFile(jsonFile, `${JSON.stringify({ started, rounds, grid: result.grid, chosen: result.chosen }, null, 2)}\n`);
}
