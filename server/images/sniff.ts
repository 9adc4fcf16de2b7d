/**
 * What an image really is, from its bytes alone. Pure: no I/O, nothing decoded.
 *
 * The origin's Content-Type and the URL's extension are never trusted: a body is one
 * of the five formats we serve only if its magic numbers say so. SVG, HTML, XML and
 * every other format (BMP, TIFF, HEIC, ...) are refused by returning null.
 */
import { imageSize } from 'image-size';
import type { ImageExtension } from '../contract/layout.js';

export type ImageFormat = 'jpeg' | 'png' | 'gif' | 'webp' | 'avif';

/** File extension (stored names) and Content-Type (responses) of each format. */
export const FORMAT_INFO: Readonly<Record<ImageFormat, { ext: ImageExtension; contentType: string }>> = {
  jpeg: { ext: 'jpg', contentType: 'image/jpeg' },
  png: { ext: 'png', contentType: 'image/png' },
  gif: { ext: 'gif', contentType: 'image/gif' },
  webp: { ext: 'webp', contentType: 'image/webp' },
  avif: { ext: 'avif', contentType: 'image/avif' },
};

const FORMATS = Object.keys(FORMAT_INFO) as ImageFormat[];

/**
 * The format whose `FORMAT_INFO` ext is exactly `ext` (lower case, no dot), else null.
 * Strict on purpose: it reads our own stored names, which only ever use these.
 */
export function formatFromExt(ext: string): ImageFormat | null {
  return FORMATS.find((format) => FORMAT_INFO[format].ext === ext) ?? null;
}

/** Magic numbers at offset 0 (ISO-BMFF and RIFF need more than a prefix: see below). */
const PREFIX_SIGNATURES: ReadonlyArray<{ format: ImageFormat; prefix: readonly number[] }> = [
  { format: 'jpeg', prefix: [0xff, 0xd8, 0xff] },
  { format: 'png', prefix: [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a] },
  { format: 'gif', prefix: [...'GIF87a'].map((char) => char.charCodeAt(0)) },
  { format: 'gif', prefix: [...'GIF89a'].map((char) => char.charCodeAt(0)) },
];

/** WebP is `RIFF<size>WEBP` followed by one of these chunks. */
const WEBP_FIRST_CHUNKS = new Set(['VP8 ', 'VP8L', 'VP8X']);

/** `ftyp` brands that make an ISO-BMFF file AVIF (still and sequence). HEIC is not. */
const AVIF_BRANDS = new Set(['avif', 'avis']);

function ascii(bytes: Uint8Array, start: number, end: number): string {
  if (end > bytes.length) return '';
  return String.fromCharCode(...bytes.subarray(start, end));
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function hasPrefix(bytes: Uint8Array, prefix: readonly number[]): boolean {
  return prefix.length <= bytes.length && prefix.every((byte, index) => bytes[index] === byte);
}

function isWebp(bytes: Uint8Array): boolean {
  return ascii(bytes, 0, 4) === 'RIFF' && ascii(bytes, 8, 12) === 'WEBP' && WEBP_FIRST_CHUNKS.has(ascii(bytes, 12, 16));
}

// ---------------------------------------------------------------------------------
// ISO-BMFF boxes (AVIF)

interface Box {
  type: string;
  /** First byte of the box's content (after the header). */
  start: number;
  /** One past the last byte of the box. */
  end: number;
}

/** The boxes between `start` and `end`; stops at the first one that is cut short. */
function readBoxes(bytes: Uint8Array, start: number, end: number): Box[] {
  const data = view(bytes);
  const found: Box[] = [];
  let position = start;
  while (position + 8 <= end) {
    const size32 = data.getUint32(position);
    const type = ascii(bytes, position + 4, position + 8);
    let headerSize = 8;
    let size = size32;
    if (size32 === 1) {
      if (position + 16 > end) break;
      size = Number(data.getBigUint64(position + 8));
      headerSize = 16;
    } else if (size32 === 0) {
      size = end - position;
    }
    if (size < headerSize || position + size > end) break;
    found.push({ type, start: position + headerSize, end: position + size });
    position += size;
  }
  return found;
}

/** Follows a path of box types; `meta` is a FullBox, so its children start 4 bytes in. */
function findBoxes(bytes: Uint8Array, parents: readonly Box[], path: readonly string[]): Box[] {
  let level: Box[] = [...parents];
  for (const type of path) {
    level = level
      .filter((box) => box.type === type)
      .flatMap((box) => readBoxes(bytes, box.type === 'meta' ? box.start + 4 : box.start, box.end));
  }
  return level;
}

function childBoxes(parents: readonly Box[], type: string): Box[] {
  return parents.filter((box) => box.type === type);
}

function isAvif(bytes: Uint8Array): boolean {
  const [ftyp] = readBoxes(bytes, 0, bytes.length);
  if (ftyp === undefined || ftyp.type !== 'ftyp' || ftyp.start !== 8) return false;
  // major brand, minor version, then compatible brands to the end of the box
  const brandOffsets = [ftyp.start];
  for (let offset = ftyp.start + 8; offset + 4 <= ftyp.end; offset += 4) brandOffsets.push(offset);
  return brandOffsets.some((offset) => AVIF_BRANDS.has(ascii(bytes, offset, offset + 4)));
}

interface Dimensions {
  width: number;
  height: number;
}

function largest(sizes: readonly Dimensions[]): Dimensions | null {
  let best: Dimensions | null = null;
  for (const size of sizes) {
    if (best === null || size.width * size.height > best.width * best.height) best = size;
  }
  return best;
}

/**
 * AVIF size: the largest `ispe` of the still image items; for a sequence without
 * items, the largest track header. Frames: the largest `stsz` sample count of any
 * track (1 for a still image). image-size does not read `avis` files, hence this.
 */
function inspectAvif(bytes: Uint8Array): { size: Dimensions | null; frames: number } {
  const data = view(bytes);
  const top = readBoxes(bytes, 0, bytes.length);
  const itemSizes = childBoxes(findBoxes(bytes, top, ['meta', 'iprp', 'ipco']), 'ispe').map((ispe) => ({
    width: data.getUint32(ispe.start + 4),
    height: data.getUint32(ispe.start + 8),
  }));
  const tracks = findBoxes(bytes, top, ['moov']).filter((box) => box.type === 'trak');
  const trackSizes = tracks.flatMap((trak) =>
    childBoxes(readBoxes(bytes, trak.start, trak.end), 'tkhd').map((tkhd) => {
      // FullBox header, then times and ids (20 bytes, 32 in version 1), then 52 bytes
      // of layer/volume/matrix; width and height are 16.16 fixed point.
      const widthOffset = tkhd.start + 4 + (data.getUint8(tkhd.start) === 1 ? 32 : 20) + 52;
      return { width: data.getUint32(widthOffset) >>> 16, height: data.getUint32(widthOffset + 4) >>> 16 };
    }),
  );
  const sampleCounts = tracks.flatMap((trak) =>
    childBoxes(
      findBoxes(bytes, readBoxes(bytes, trak.start, trak.end), ['mdia', 'minf', 'stbl']),
      'stsz',
    ).map((stsz) => data.getUint32(stsz.start + 8)),
  );
  return {
    size: largest(itemSizes) ?? largest(trackSizes),
    frames: Math.max(1, ...sampleCounts),
  };
}

// ---------------------------------------------------------------------------------
// Frame counts of the other animated formats, walking blocks without decoding

/** Skips GIF data sub-blocks (length-prefixed, ended by a zero length). */
function skipGifSubBlocks(data: DataView, position: number): number {
  let cursor = position;
  while (cursor < data.byteLength) {
    const length = data.getUint8(cursor);
    cursor += 1 + length;
    if (length === 0) break;
  }
  return cursor;
}

function gifColorTableSize(packedFields: number): number {
  return packedFields & 0x80 ? 3 * (1 << ((packedFields & 0x07) + 1)) : 0;
}

const GIF_IMAGE_DESCRIPTOR = 0x2c;
const GIF_EXTENSION = 0x21;

/** Image descriptors in a GIF; a body cut short counts the frames it holds. */
function countGifFrames(bytes: Uint8Array): number {
  const data = view(bytes);
  let position = 13 + gifColorTableSize(data.getUint8(10));
  let frames = 0;
  while (position < data.byteLength) {
    const block = data.getUint8(position);
    if (block === GIF_IMAGE_DESCRIPTOR) {
      frames += 1;
      if (position + 10 > data.byteLength) break;
      position += 10 + gifColorTableSize(data.getUint8(position + 9));
      position = skipGifSubBlocks(data, position + 1); // +1: LZW minimum code size
    } else if (block === GIF_EXTENSION) {
      position = skipGifSubBlocks(data, position + 2); // introducer and label
    } else {
      break; // trailer, or bytes that are not GIF blocks
    }
  }
  return frames;
}

/** Walks RIFF (little-endian) or PNG (big-endian) chunks; `visit` returns false to stop. */
function walkChunks(
  bytes: Uint8Array,
  layout: { start: number; littleEndian: boolean; trailer: number; padToEven: boolean },
  visit: (type: string, dataStart: number) => boolean,
): void {
  const data = view(bytes);
  let position = layout.start;
  while (position + 8 <= data.byteLength) {
    const first = layout.littleEndian ? ascii(bytes, position, position + 4) : ascii(bytes, position + 4, position + 8);
    const length = data.getUint32(layout.littleEndian ? position + 4 : position, layout.littleEndian);
    if (!visit(first, position + 8)) return;
    position += 8 + length + layout.trailer + (layout.padToEven ? length & 1 : 0);
  }
}

const RIFF_CHUNKS = { start: 12, littleEndian: true, trailer: 0, padToEven: true };
const PNG_CHUNKS = { start: 8, littleEndian: false, trailer: 4, padToEven: false }; // trailer: CRC

function countWebpFrames(bytes: Uint8Array): number {
  let frames = 0;
  walkChunks(bytes, RIFF_CHUNKS, (type) => {
    if (type === 'ANMF') frames += 1;
    return true;
  });
  return Math.max(1, frames);
}

/** APNG declares its frame count in `acTL`, which must come before the first IDAT. */
function countPngFrames(bytes: Uint8Array): number {
  const data = view(bytes);
  let frames = 1;
  walkChunks(bytes, PNG_CHUNKS, (type, dataStart) => {
    if (type === 'acTL' && dataStart + 4 <= data.byteLength) frames = Math.max(1, data.getUint32(dataStart));
    return type !== 'IDAT' && type !== 'acTL';
  });
  return frames;
}

// ---------------------------------------------------------------------------------

/** The format from magic numbers only; null for anything we do not serve. */
export function sniffImageType(bytes: Uint8Array): ImageFormat | null {
  const byPrefix = PREFIX_SIGNATURES.find((signature) => hasPrefix(bytes, signature.prefix));
  if (byPrefix !== undefined) return byPrefix.format;
  if (isWebp(bytes)) return 'webp';
  if (isAvif(bytes)) return 'avif';
  return null;
}

export interface ImageInfo {
  format: ImageFormat;
  width: number;
  height: number;
  /** Frames in an animation, 1 for a still image. */
  frames: number;
}

/** The `type` image-size reports for each format it reads for us. */
const IMAGE_SIZE_TYPE: Record<Exclude<ImageFormat, 'avif'>, string> = {
  jpeg: 'jpg',
  png: 'png',
  gif: 'gif',
  webp: 'webp',
};

/**
 * `bytes` alone in its ArrayBuffer. image-size reads through `new DataView(input.buffer,
 * offset)` with no length, so on a view into a larger buffer (a subarray, a pooled
 * Buffer under 4 KiB) a header cut short would be completed from unrelated memory.
 */
function ownBuffer(bytes: Uint8Array): Uint8Array {
  return bytes.byteOffset === 0 && bytes.buffer.byteLength === bytes.byteLength ? bytes : new Uint8Array(bytes);
}

/** The size image-size reads, if it agrees on the format. */
function imageSizeOf(bytes: Uint8Array, format: Exclude<ImageFormat, 'avif'>): Dimensions | null {
  const size = imageSize(ownBuffer(bytes));
  return size.type === IMAGE_SIZE_TYPE[format] ? { width: size.width, height: size.height } : null;
}

const HEADER_READERS: Record<ImageFormat, (bytes: Uint8Array) => { size: Dimensions | null; frames: number }> = {
  jpeg: (bytes) => ({ size: imageSizeOf(bytes, 'jpeg'), frames: 1 }),
  png: (bytes) => ({ size: imageSizeOf(bytes, 'png'), frames: countPngFrames(bytes) }),
  gif: (bytes) => ({ size: imageSizeOf(bytes, 'gif'), frames: countGifFrames(bytes) }),
  webp: (bytes) => ({ size: imageSizeOf(bytes, 'webp'), frames: countWebpFrames(bytes) }),
  avif: inspectAvif,
};

function isPositiveInteger(value: number): boolean {
  return Number.isSafeInteger(value) && value > 0;
}

/**
 * Format, size and frame count read from the headers, nothing decoded. Null when the
 * bytes are not one of our formats or the header is cut short or unreadable.
 */
export function inspectImage(bytes: Uint8Array): ImageInfo | null {
  const format = sniffImageType(bytes);
  if (format === null) return null;
  try {
    const { size, frames } = HEADER_READERS[format](bytes);
    if (size === null || !isPositiveInteger(size.width) || !isPositiveInteger(size.height) || frames < 1) {
      return null;
    }
    return { format, width: size.width, height: size.height, frames };
  } catch {
    // image-size throws on a header it cannot read; DataView throws past the end
    return null;
  }
}

/** Pixels to decode for the whole image, all frames counted. */
export function pixelCount(info: Pick<ImageInfo, 'width' | 'height' | 'frames'>): number {
  return info.width * info.height * info.frames;
}
