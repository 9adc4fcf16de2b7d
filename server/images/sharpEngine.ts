/**
 * The sharp (libvips) engine, the default: native, multi-threaded off the event loop
 * (its speed against jimp: docs/benchmarks.md).
 *
 * Per request: header read (metadata) → size planned by planResize → auto-orient →
 * resize → encode in the input's format, or (convert) in a format class's from the same
 * pipeline, so both thumbnails of a link follow one set of rules. sharp drops EXIF/ICC/XMP on output unless
 * told otherwise (we never call withMetadata), so thumbnails carry no orientation tag
 * and no camera or GPS data.
 */
import sharp from 'sharp';
import type { Sharp } from 'sharp';
import { isImageproxyError } from '../errors.js';
import { orientedSize, planResize } from './resizePlan.js';
import { badImage, pixelCountDetail, tooManyPixels } from './engine.js';
import type { Conversion, ConvertRequest, EncodeQuality, EngineOptions, ImageFormat, ResizeEngine, ResizeRequest, ResizeResult } from './engine.js';
import { encodeThumbnailAs, keepsAnimation } from './formatEncode.js';

/** How sharp encodes: qualities, and whether JPEG goes through mozjpeg. */
interface SharpEncoding {
  quality: EncodeQuality;
  mozjpeg: boolean;
}

/**
 * sharp's JPEG options for a thumbnail; exported so the bench's in-process baseline
 * encodes exactly as the engine does. mozjpeg: trellis quantisation and progressive
 * scans, smaller files at equal looks for more encoding CPU (docs/resizing.md).
 */
export function sharpJpegOptions(quality: EncodeQuality, mozjpeg: boolean): { quality: number; mozjpeg: boolean } {
  return { quality: quality.jpeg, mozjpeg };
}

/** GIF and WebP may be animated: every frame is loaded and resized. */
const ANIMATED_FORMATS: ReadonlySet<ImageFormat> = new Set(['gif', 'webp']);

export function createSharpEngine(options: EngineOptions): ResizeEngine {
  // Both settings are process-wide in sharp. No operation cache: each request decodes
  // a different original, so libvips' cache would only hold memory without hits.
  sharp.cache(false);
  sharp.concurrency(Math.max(1, Math.floor(options.concurrency)));
  // sharp's timeout counts whole seconds.
  const timeoutSeconds = Math.max(1, Math.ceil(options.timeoutSeconds));
  const encoding: SharpEncoding = { quality: options.quality, mozjpeg: options.mozjpeg ?? true };

  return {
    name: 'sharp',
    convertsFrom: 'original',
    async resize(request: ResizeRequest): Promise<ResizeResult> {
      try {
        return await resizeWithSharp(request, options.maxPixels, timeoutSeconds, encoding);
      } catch (error) {
        throw toEngineError(error);
      }
    },
    async convert(request: ConvertRequest): Promise<Conversion> {
      try {
        // The same pipeline as the source-format thumbnail's (orientation applied, colours
        // to sRGB, no metadata written), encoded in the class's format.
        const { pipeline, frames } = await openResized(request, options.maxPixels, timeoutSeconds);
        if (frames > 1 && !keepsAnimation(request.to)) return { kind: 'kept', reason: 'animation' };
        return { kind: 'converted', image: await encodeThumbnailAs(request.to, pipeline) };
      } catch (error) {
        throw toEngineError(error);
      }
    },
    async close(): Promise<void> {
      // sharp keeps no per-engine resources: its thread pool is libuv's.
    },
  };
}

/** The original opened, auto-oriented and resized to the planned box; nothing encoded yet. */
async function openResized(request: ResizeRequest, maxPixels: number, timeoutSeconds: number): Promise<{ pipeline: Sharp; frames: number }> {
  const image = sharp(request.input, {
    animated: ANIMATED_FORMATS.has(request.format),
    limitInputPixels: maxPixels,
    // sharp's default, spelled out: a truncated or corrupt original fails (bad_image)
    // instead of making a thumbnail that is half grey.
    failOn: 'warning',
  }).timeout({ seconds: timeoutSeconds });

  // Header only: no pixels are decoded yet. For an animation `height` is all frames
  // stacked; `pageHeight` is one frame.
  const header = await image.metadata();
  const frameHeight = header.pageHeight ?? header.height;
  const frames = header.pages ?? 1;
  if (header.width * header.height > maxPixels) {
    throw tooManyPixels(pixelCountDetail(header.width, header.height, maxPixels));
  }
  const plan = planResize(orientedSize({ width: header.width, height: frameHeight }, header.orientation), request);

  // autoOrient applies the EXIF orientation (a quarter-turn swaps width and height;
  // sharp swaps the resize target to match, so the plan is in upright pixels).
  let pipeline = image.autoOrient();
  if (plan.resize) {
    // The exact planned size, not sharp's own `fit: 'inside'` arithmetic: for JPEG that
    // runs on the shrink-on-load size and can land one pixel off planResize, and then
    // the two engines would disagree. The plan already keeps the aspect ratio (to the
    // nearest pixel) and never enlarges; withoutEnlargement is a second guard.
    pipeline = pipeline.resize({ width: plan.width, height: plan.height, fit: 'fill', withoutEnlargement: true });
  }
  return { pipeline, frames };
}

async function resizeWithSharp(
  request: ResizeRequest,
  maxPixels: number,
  timeoutSeconds: number,
  encoding: SharpEncoding,
): Promise<ResizeResult> {
  const { pipeline, frames } = await openResized(request, maxPixels, timeoutSeconds);
  const { data, info } = await encodeAs(pipeline, request.format, encoding).toBuffer({ resolveWithObject: true });
  return {
    bytes: data,
    format: request.format,
    width: info.width,
    height: info.pageHeight ?? info.height,
    frames: info.pages ?? frames,
  };
}

/** Output format = input format; PNG, WebP and AVIF keep an alpha channel when there is one. */
function encodeAs(pipeline: Sharp, format: ImageFormat, { quality, mozjpeg }: SharpEncoding): Sharp {
  switch (format) {
    case 'jpeg':
      return pipeline.jpeg(sharpJpegOptions(quality, mozjpeg));
    case 'png':
      return pipeline.png();
    case 'gif':
      // Frame delays and loop count come from the input's metadata.
      return pipeline.gif();
    case 'webp':
      return pipeline.webp({ quality: quality.webp });
    case 'avif':
      return pipeline.avif({ quality: quality.avif });
  }
}

/** Pixel-limit failures keep their own code; every other sharp failure is `bad_image`. */
function toEngineError(error: unknown): Error {
  if (isImageproxyError(error)) return error;
  const message = error instanceof Error ? error.message : String(error);
  if (/pixel limit/i.test(message)) return tooManyPixels(`sharp: ${message}`, error);
  return badImage(error, `sharp: ${message}`);
}
