/**
 * One jimp worker thread: decodes a stored original, resizes it to the planned size
 * and encodes it in the same format. Pure JavaScript (and WebAssembly for WebP/AVIF)
 * is slow (docs/benchmarks.md), which is why it runs here, off the event
 * loop; jimpEngine.ts owns the pool and sends one job at a time to each worker.
 *
 * Format notes (the jimp engine only; sharp does all of them fully):
 * - JPEG: jimp applies the EXIF orientation on read; the jpeg-js encoder writes no EXIF.
 * - PNG: alpha kept.
 * - GIF: jimp decodes the first frame only, so an animated GIF becomes a still GIF
 *   of its first frame (frames: 1).
 * - WebP and AVIF: the squoosh codecs (@jsquash/webp, @jsquash/avif), which jimp's own
 *   @jimp/wasm-webp and @jimp/wasm-avif wrap. Those two plugins cannot run on Node as
 *   published (their WebAssembly is fetched from a file: URL, which Node's fetch refuses:
 *   jimp-dev/jimp#1366), so we depend on the codecs directly and the worker compiles
 *   their .wasm files from disk once and hands them to the codecs. Animated WebP cannot be decoded by these codecs;
 *   jimpEngine.ts refuses it before it gets here. EXIF orientation is not applied to
 *   PNG, WebP or AVIF (rare in those formats; sharp applies it).
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { parentPort } from 'node:worker_threads';
import { Jimp } from 'jimp';
import { planResize } from './resizePlan.js';
import type { EncodeQuality, ImageFormat } from './engine.js';

/** A job from the pool: one original and its box. */
export interface WorkerJob {
  id: number;
  input: Uint8Array;
  format: ImageFormat;
  maxHeight: number | null;
  maxWidth: number | null;
  quality: EncodeQuality;
}

/** The worker's answer to a job; `ready` is sent once when the worker has loaded. */
export type WorkerMessage =
  | { kind: 'ready' }
  | { kind: 'done'; id: number; bytes: Uint8Array; width: number; height: number }
  | { kind: 'failed'; id: number; message: string };

/** RGBA pixels, 4 bytes a pixel, rows top to bottom (the ImageData shape the codecs use). */
interface RgbaBitmap {
  data: Uint8ClampedArray;
  width: number;
  height: number;
}

/** The codec pair for a format jimp cannot handle by itself. */
interface WasmCodec {
  decode(bytes: Uint8Array): Promise<RgbaBitmap>;
  encode(bitmap: RgbaBitmap, quality: number): Promise<Uint8Array>;
}

/** The compiled module, opaque here. */
interface WasmModule {
  readonly compiledWasm: unique symbol;
}

// TypeScript's Node types (no DOM lib) do not declare WebAssembly; only what is used.
declare const WebAssembly: {
  compile(bytes: Uint8Array): Promise<WasmModule>;
  validate(bytes: Uint8Array): boolean;
};

interface SquooshDecoder {
  init(module: WasmModule): Promise<unknown>;
  default(bytes: ArrayBuffer): Promise<RgbaBitmap>;
}

interface SquooshEncoder<Options> {
  init(module: WasmModule): Promise<unknown>;
  default(bitmap: RgbaBitmap, options: Partial<Options>): Promise<ArrayBuffer>;
}

type JimpImage = InstanceType<typeof Jimp>;

/** What a Jimp image is made from: RGBA pixels in a Buffer. */
interface JimpBitmap {
  data: Buffer;
  width: number;
  height: number;
}

const wasmCodecs: Partial<Record<'webp' | 'avif', Promise<WasmCodec>>> = {};

async function resizeJob(job: WorkerJob): Promise<{ bytes: Uint8Array; width: number; height: number }> {
  try {
    return await resizeWithJimp(job);
  } catch (error) {
    // A WebAssembly codec that failed may be left in a broken state (an emscripten
    // abort): the next job of that format gets a fresh instance.
    if (job.format === 'webp' || job.format === 'avif') delete wasmCodecs[job.format];
    throw error;
  }
}

async function resizeWithJimp(job: WorkerJob): Promise<{ bytes: Uint8Array; width: number; height: number }> {
  const input = Buffer.from(job.input.buffer, job.input.byteOffset, job.input.byteLength);
  const image = new Jimp(await decode(input, job.format));
  const plan = planResize({ width: image.bitmap.width, height: image.bitmap.height }, job);
  if (plan.resize) image.resize({ w: plan.width, h: plan.height });
  const bytes = await encode(image, job.format, job.quality);
  return { bytes, width: image.bitmap.width, height: image.bitmap.height };
}

/** Upright RGBA pixels of the original (jimp applies a JPEG's EXIF orientation on read). */
async function decode(input: Buffer, format: ImageFormat): Promise<JimpBitmap> {
  if (format === 'webp' || format === 'avif') {
    const { data, width, height } = await (await wasmCodec(format)).decode(input);
    return { data: Buffer.from(data.buffer, data.byteOffset, data.byteLength), width, height };
  }
  const { data, width, height } = (await Jimp.fromBuffer(input)).bitmap;
  return { data, width, height };
}

async function encode(image: JimpImage, format: ImageFormat, quality: EncodeQuality): Promise<Uint8Array> {
  switch (format) {
    case 'jpeg':
      return image.getBuffer('image/jpeg', { quality: quality.jpeg });
    case 'png':
      return image.getBuffer('image/png');
    case 'gif':
      return image.getBuffer('image/gif');
    case 'webp':
    case 'avif': {
      const { data, width, height } = image.bitmap;
      const pixels = new Uint8ClampedArray(data.buffer, data.byteOffset, data.byteLength);
      return (await wasmCodec(format)).encode({ data: pixels, width, height }, quality[format]);
    }
  }
}

/** Compiles a format's codecs on first use (tens of ms), then reuses them for every job. */
function wasmCodec(format: 'webp' | 'avif'): Promise<WasmCodec> {
  const loading = wasmCodecs[format] ?? (format === 'webp' ? loadWebpCodec() : loadAvifCodec());
  wasmCodecs[format] = loading;
  // A failed load is not kept: the next job tries again.
  loading.catch(() => {
    if (wasmCodecs[format] === loading) delete wasmCodecs[format];
  });
  return loading;
}

interface WebpEncodeOptions {
  quality: number;
}

async function loadWebpCodec(): Promise<WasmCodec> {
  const codecFiles = codecResolver();
  const decoder = await loadSquoosh<SquooshDecoder>(codecFiles, '@jsquash/webp/decode.js', '@jsquash/webp/codec/dec/webp_dec.wasm');
  // The encoder's glue picks its SIMD build when the runtime validates SIMD; the .wasm
  // handed to it must be the matching one.
  const simdWasm = await readFile(codecFiles('@jsquash/webp/codec/enc/webp_enc_simd.wasm'));
  const encoderWasm = WebAssembly.validate(simdWasm)
    ? simdWasm
    : await readFile(codecFiles('@jsquash/webp/codec/enc/webp_enc.wasm'));
  const encoder = await loadSquoosh<SquooshEncoder<WebpEncodeOptions>>(codecFiles, '@jsquash/webp/encode.js', encoderWasm);
  return {
    decode: (bytes) => decoder.default(copyToArrayBuffer(bytes)),
    encode: async (bitmap, quality) => new Uint8Array(await encoder.default(bitmap, { quality })),
  };
}

interface AvifEncodeOptions {
  cqLevel: number;
  cqAlphaLevel: number;
}

async function loadAvifCodec(): Promise<WasmCodec> {
  const codecFiles = codecResolver();
  const decoder = await loadSquoosh<SquooshDecoder>(codecFiles, '@jsquash/avif/decode.js', '@jsquash/avif/codec/dec/avif_dec.wasm');
  // On Node the encoder glue always takes its single-threaded build.
  const encoder = await loadSquoosh<SquooshEncoder<AvifEncodeOptions>>(
    codecFiles,
    '@jsquash/avif/encode.js',
    '@jsquash/avif/codec/enc/avif_enc.wasm',
  );
  return {
    decode: (bytes) => decoder.default(copyToArrayBuffer(bytes)),
    encode: async (bitmap, quality) => {
      const cqLevel = avifQuantizer(quality);
      return new Uint8Array(await encoder.default(bitmap, { cqLevel, cqAlphaLevel: cqLevel }));
    },
  };
}

/**
 * AVIF quality 1-100 to the AV1 quantizer 63-0, the mapping libheif (sharp) uses, so a
 * quality setting means the same for both engines.
 */
function avifQuantizer(quality: number): number {
  return Math.round(((100 - quality) * 63) / 100);
}

/** Resolves the codecs' glue and .wasm files from our own dependencies. */
function codecResolver(): (specifier: string) => string {
  const fromHere = createRequire(import.meta.url);
  return (specifier) => fromHere.resolve(specifier);
}

async function loadSquoosh<Codec extends { init(module: WasmModule): Promise<unknown> }>(
  codecFiles: (specifier: string) => string,
  glueSpecifier: string,
  wasm: string | Uint8Array,
): Promise<Codec> {
  const wasmBytes = typeof wasm === 'string' ? await readFile(codecFiles(wasm)) : wasm;
  const glue = (await import(codecFiles(glueSpecifier))) as Codec;
  await glue.init(await WebAssembly.compile(wasmBytes));
  return glue;
}

/** The codecs take a whole ArrayBuffer; a Buffer may be a view into a shared pool. */
function copyToArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return copy.buffer;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

const port = parentPort;
if (port === null) throw new Error('jimpWorker.ts runs only as a worker thread (see jimpEngine.ts)');

port.on('message', (job: WorkerJob) => {
  resizeJob(job).then(
    (result) => {
      // A fresh copy, so the transfer cannot detach a pooled Buffer still in use.
      const bytes = new Uint8Array(result.bytes);
      const message: WorkerMessage = { kind: 'done', id: job.id, bytes, width: result.width, height: result.height };
      port.postMessage(message, [bytes.buffer]);
    },
    (error: unknown) => {
      const message: WorkerMessage = { kind: 'failed', id: job.id, message: errorMessage(error) };
      port.postMessage(message);
    },
  );
});

/**
 * One small JPEG through the whole path before the worker says it is ready: the pool's
 * timeout starts when a job is sent, so it should time the job, not the compilation of
 * jimp's decoder and encoder that a new worker's first job would otherwise pay (on a
 * loaded machine, long enough to fail a small job). A failure here is not fatal: the
 * first real job then pays that cost, as before.
 */
async function warmUp(): Promise<void> {
  const sample = await new Jimp({ width: 16, height: 16, color: 0x6a8cafff }).getBuffer('image/jpeg', { quality: 80 });
  await resizeWithJimp({ id: -1, input: new Uint8Array(sample), format: 'jpeg', maxWidth: 8, maxHeight: 8, quality: { jpeg: 80, webp: 80, avif: 50 } });
}

void warmUp().catch(() => undefined).finally(() => {
  const ready: WorkerMessage = { kind: 'ready' };
  port.postMessage(ready);
});
