/**
 * Encoding a thumbnail as WebP or AVIF (issue 20), next to the source-format encode
 * the engines do. No I/O apart from sharp.
 *
 * Facts this module is built on (sharp 0.35 / libvips 8.18; test/formatsEncode.test.ts
 * checks each one):
 * - alpha: WebP and AVIF keep an alpha channel when the pipeline has one; nothing is
 *   flattened onto a background;
 * - animation: WebP keeps every frame and each frame's delay (taken from the input's
 *   metadata when the pipeline was opened with `animated: true`);
 * - sharp cannot write animated AVIF: given the frames of an animation its AVIF output
 *   is one still image with the frames stacked. So AVIF refuses an animated pipeline;
 *   the caller serves an animation as WebP or in its source format (keepsAnimation).
 *
 * The settings were chosen by measurement: scripts/bench-formats.ts (`npm run
 * bench:formats`) compares each setting's bytes, SSIM and encode time against the
 * mozjpeg q80 JPEG the engine makes today; its table and the reasons for the defaults
 * are in docs/formats.md.
 */
import sharp from 'sharp';
import type { Sharp } from 'sharp';
import type { ModernFormat } from '../contract/accept.js';

export interface WebpSettings {
  /** 1-100, libwebp's scale. */
  quality: number;
  /** 0 (fastest) to 6 (smallest). */
  effort: number;
  /** libwebp's sharp-YUV conversion: cleaner colour edges for a little more encode time. */
  smartSubsample: boolean;
}

export interface AvifSettings {
  /** 1-100, libheif's scale (lower numbers than JPEG's for the same looks). */
  quality: number;
  /** 0 (fastest) to 9 (smallest): sharp's `effort`, aom's speed turned around. */
  effort: number;
  chromaSubsampling: '4:2:0' | '4:4:4';
}

export interface FormatSettings {
  webp: WebpSettings;
  avif: AvifSettings;
}

/**
 * The defaults, as chosen by `npm run bench:formats` (table and reasons in
 * docs/formats.md): of the settings meeting issue 20's goals (WebP at most 0.75 and AVIF
 * at most 0.60 of the mozjpeg q80 JPEG's bytes, as the median and as the total over the
 * corpus, at a mean SSIM no more than 0.005 below the JPEG's), the fastest to encode.
 * AVIF effort 2 rather than sharp's default 4: both meet the goals and effort 4 costs
 * several times the encode time for bytes the goal does not need.
 */
export const DEFAULT_FORMAT_SETTINGS: Readonly<FormatSettings> = Object.freeze({
  webp: Object.freeze({ quality: 75, effort: 4, smartSubsample: false }),
  avif: Object.freeze({ quality: 50, effort: 2, chromaSubsampling: '4:2:0' as const }),
});

export interface EncodedThumbnail {
  bytes: Buffer;
  format: ModernFormat;
  /** Width of one frame in pixels. */
  width: number;
  /** Height of one frame in pixels (not the stacked height of an animation). */
  height: number;
  /** Frames in `bytes`: 1 for a still image. */
  frames: number;
  hasAlpha: boolean;
}

/** Whether a format keeps an animation's frames; an animation is never turned into a still. */
export function keepsAnimation(format: ModernFormat): boolean {
  return format === 'webp';
}

/**
 * Whether a converted thumbnail is worth serving instead of the source-format one: only
 * when it is smaller. Small flat images can come out larger as WebP or AVIF than as PNG
 * or JPEG, and then the client is better served by the source format.
 */
export function isWorthServing(convertedBytes: number, sourceFormatBytes: number): boolean {
  return convertedBytes < sourceFormatBytes;
}

/**
 * Encodes a thumbnail as `format`.
 *
 * `source` is either the engine's pipeline, already auto-oriented and resized (it is
 * cloned, so the same pipeline can also make the source-format thumbnail), or an image
 * already at thumbnail size, decoded with all its frames and not resized (best lossless,
 * such as a PNG: a JPEG would be compressed twice).
 *
 * Throws a RangeError for AVIF of an animation (see keepsAnimation: the caller decides
 * before asking) and sharp's own error for an image it cannot decode.
 */
export async function encodeThumbnailAs(
  format: ModernFormat,
  source: Sharp | Buffer,
  settings: Readonly<FormatSettings> = DEFAULT_FORMAT_SETTINGS,
): Promise<EncodedThumbnail> {
  const pipeline = Buffer.isBuffer(source) ? sharp(source, { animated: true, failOn: 'warning' }) : source.clone();
  if (!keepsAnimation(format)) {
    // Header only. A pipeline opened with its frames has them stacked: height is a
    // multiple of pageHeight.
    const header = await pipeline.metadata();
    if (header.pageHeight !== undefined && header.height > header.pageHeight) {
      throw new RangeError(`${format} cannot keep an animation (${header.height / header.pageHeight} frames): serve it as webp or in its source format`);
    }
  }
  const encoder = format === 'webp' ? pipeline.webp({ ...settings.webp }) : pipeline.avif({ ...settings.avif });
  const { data, info } = await encoder.toBuffer({ resolveWithObject: true });
  return {
    bytes: data,
    format,
    width: info.width,
    height: info.pageHeight ?? info.height,
    frames: info.pages ?? 1,
    hasAlpha: info.hasAlpha,
  };
}
