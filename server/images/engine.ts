/**
 * The resize engine interface: one stored original in, one thumbnail out, same format.
 * Two implementations: sharp (libvips, native, the default) and jimp (pure JavaScript,
 * for hosts where sharp's prebuilt binary cannot run; it works in worker threads).
 * server/images/engineChoice.ts starts the one chosen (for `serve` and `populate`); the rest
 * only talks to this interface.
 */
import { ImageproxyError } from '../errors.js';
import type { ModernFormat } from '../contract/accept.js';
import type { EncodedThumbnail } from './formatEncode.js';
import type { ImageFormat } from './sniff.js';

export type { ImageFormat };

/** The engines, as the config names them (server/config/schema.ts). */
export const ENGINE_NAMES = ['sharp', 'jimp'] as const;
export type EngineName = (typeof ENGINE_NAMES)[number];

export interface ResizeRequest {
  /** The stored original, exactly as fetched. */
  input: Buffer;
  /** The sniffed format of `input`; the thumbnail is encoded in the same format. */
  format: ImageFormat;
  maxHeight: number | null;
  maxWidth: number | null;
}

export interface ResizeResult {
  bytes: Buffer;
  format: ImageFormat;
  /** Width of one frame in pixels. */
  width: number;
  /** Height of one frame in pixels (not the stacked height of an animation). */
  height: number;
  /** Frames in `bytes`: 1 for a still image. */
  frames: number;
}

/**
 * A thumbnail for a format class (issue 20): the same box as its source-format thumbnail.
 * `input` is what the engine converts from (ResizeEngine.convertsFrom): the original, or
 * the source-format thumbnail already made.
 */
export interface ConvertRequest extends ResizeRequest {
  to: ModernFormat;
}

/**
 * What a format class gets: its own encode, or the source-format thumbnail, because the
 * format cannot keep the image (an animation as AVIF) or no encoder for it could load
 * (the jimp engine on a host where sharp cannot).
 */
export type Conversion = { kind: 'converted'; image: EncodedThumbnail } | { kind: 'kept'; reason: 'animation' | 'no encoder' };

export interface EncodeQuality {
  jpeg: number;
  webp: number;
  avif: number;
}

export interface EngineOptions {
  /** Largest width × height (all frames for animations) an engine will decode. */
  maxPixels: number;
  /** A resize running longer than this fails with `bad_image`. */
  timeoutSeconds: number;
  /**
   * CPU threads one engine may use. sharp: libvips threads per image
   * (`sharp.concurrency`); jimp: size of the worker-thread pool, i.e. how many
   * images are resized at once (at least 1).
   */
  concurrency: number;
  quality: EncodeQuality;
  /** sharp only: JPEG through mozjpeg (config `mozjpeg`). @default true */
  mozjpeg?: boolean;
}

export interface ResizeEngine {
  readonly name: EngineName;
  resize(request: ResizeRequest): Promise<ResizeResult>;
  /**
   * What `convert` starts from. `original`: the stored original, decoded and resized as
   * for the source-format thumbnail (sharp: a JPEG is never compressed twice, and both
   * are made side by side). `thumbnail`: the source-format thumbnail's bytes (jimp, which
   * writes neither format, has sharp encode its thumbnail).
   */
  readonly convertsFrom: 'original' | 'thumbnail';
  /** The thumbnail for a format class; failures as `resize`'s (`bad_image`, `too_many_pixels`). */
  convert(request: ConvertRequest): Promise<Conversion>;
  /** Frees the engine's threads; the engine must not be used afterwards. */
  close(): Promise<void>;
}

/**
 * Default encoder qualities (config `quality`), 1-100 on each encoder's own scale. jpeg
 * 80: with mozjpeg's trellis quantisation no visible loss on a thumbnail (imgproxy ships
 * 80, Next.js 75); webp 80: libwebp's default, looks like JPEG 80 in fewer bytes; avif
 * 50: sharp's default, AVIF's scale runs lower, 50 looks like JPEG 80 in fewer bytes still.
 */
export const DEFAULT_QUALITY: Readonly<EncodeQuality> = Object.freeze({ jpeg: 80, webp: 80, avif: 50 });

/** The one error every decode or encode failure of either engine becomes. */
export function badImage(cause: unknown, detail: string): ImageproxyError {
  return new ImageproxyError('bad_image', 'image could not be decoded', { cause, detail });
}

/** An original with more pixels than `maxPixels`, refused before its pixels are decoded. */
export function tooManyPixels(detail: string, cause?: unknown): ImageproxyError {
  return new ImageproxyError('too_many_pixels', 'image has too many pixels', { cause, detail });
}

/** The detail line for a pixel count found in the header above the limit. */
export function pixelCountDetail(width: number, height: number, maxPixels: number): string {
  return `${width}×${height} = ${width * height} pixels, limit ${maxPixels}`;
}
