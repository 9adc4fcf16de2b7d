/**
 * Removes identifying metadata from an original without re-encoding it. Pure: no I/O,
 * nothing decoded.
 *
 * A photo's EXIF (camera serial, GPS position, owner), XMP, IPTC and comments would
 * otherwise reach every visitor of the full-size image. Stripping walks the container
 * (JPEG markers, PNG chunks, RIFF chunks, GIF blocks) and drops whole metadata
 * segments; every other byte, the compressed pixels above all, is copied as it was, so
 * the image decodes to exactly the same pixels.
 *
 * Kept, because rendering needs it: ICC profiles (JPEG APP2 ICC_PROFILE, PNG iCCP,
 * WebP ICCP, GIF ICCRGBG1), JFIF APP0, Adobe APP14, tables, frames, animation control.
 *
 * Orientation: when the dropped EXIF said anything but orientation 1 (upright), a new
 * minimal EXIF holding only the Orientation tag takes its place, so browsers and the
 * thumbnail engines still turn the image upright. Rotating the pixels instead would
 * mean re-encoding them (lossy for JPEG), which is what this module exists to avoid.
 *
 * Also dropped: bytes after the end of the image (JPEG after EOI, PNG after IEND, WebP
 * after the RIFF chunk, GIF after the trailer), which no decoder renders but which can
 * carry whole further images with their own EXIF (MPO, motion photos); the JPEG APP2 MPF
 * index of those images goes with them.
 *
 * Anything that does not parse exactly (a length past the end, a missing end marker,
 * a structure we do not know) leaves the input unchanged, with the reason: we never
 * write around a damage we do not understand. AVIF is not stripped (see docs/security.md): its
 * Exif and XMP are items located by absolute offsets in `iloc`, so removing them means
 * rewriting the box tree, not dropping a segment.
 */
import { crc32 } from 'node:zlib';
import type { ImageFormat } from './sniff.js';

export type StripResult =
  /** `removed` names what was dropped; when it is empty, `bytes` is the input itself. */
  | { kind: 'stripped'; bytes: Buffer; removed: string[] }
  /** A format this module leaves as it is, by design. */
  | { kind: 'kept'; reason: string }
  /** The structure did not parse exactly: the input must be stored unchanged. */
  | { kind: 'malformed'; reason: string };

export function stripMetadata(bytes: Uint8Array, format: ImageFormat): StripResult {
  if (format === 'avif') return { kind: 'kept', reason: 'AVIF metadata is not stripped' };
  const input = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  try {
    const walked = WALKERS[format](input);
    if (walked.removed.length === 0) return { kind: 'stripped', bytes: input, removed: [] };
    return { kind: 'stripped', bytes: Buffer.concat(walked.pieces), removed: walked.removed };
  } catch (error) {
    if (error instanceof MalformedImage) return { kind: 'malformed', reason: `${format}: ${error.message}` };
    throw error;
  }
}

/** What a walker found: the output as pieces (views into the input, or new segments) and what it dropped. */
interface Walked {
  pieces: Uint8Array[];
  removed: string[];
}

const WALKERS: Record<Exclude<ImageFormat, 'avif'>, (input: Buffer) => Walked> = {
  jpeg: walkJpeg,
  png: walkPng,
  webp: walkWebp,
  gif: walkGif,
};

class MalformedImage extends Error {}

function need(input: Buffer, end: number, what: string): void {
  if (end > input.length) throw new MalformedImage(`${what} runs past the end of the file (needs ${end} bytes, has ${input.length})`);
}

function ascii(input: Uint8Array, start: number, end: number): string {
  return String.fromCharCode(...input.subarray(start, end));
}

function startsWith(input: Uint8Array, start: number, prefix: string): boolean {
  return start + prefix.length <= input.length && ascii(input, start, start + prefix.length) === prefix;
}

// ---------------------------------------------------------------------------------
// EXIF orientation (a TIFF stream: byte order, 42, offset of IFD0, then IFD entries)

const ORIENTATION_TAG = 0x0112;
const TIFF_SHORT = 3;

/** The Orientation of IFD0 (1 when absent or out of range); throws when the TIFF structure is cut short. */
export function exifOrientation(tiff: Uint8Array): number {
  const buffer = Buffer.from(tiff.buffer, tiff.byteOffset, tiff.byteLength);
  need(buffer, 8, 'EXIF header');
  const order = ascii(buffer, 0, 2);
  if (order !== 'II' && order !== 'MM') throw new MalformedImage(`EXIF byte order ${JSON.stringify(order)} is neither II nor MM`);
  const little = order === 'II';
  const u16 = (offset: number): number => (little ? buffer.readUInt16LE(offset) : buffer.readUInt16BE(offset));
  const u32 = (offset: number): number => (little ? buffer.readUInt32LE(offset) : buffer.readUInt32BE(offset));
  if (u16(2) !== 42) throw new MalformedImage('EXIF header lacks the TIFF magic 42');
  const ifd0 = u32(4);
  need(buffer, ifd0 + 2, 'EXIF IFD0');
  const count = u16(ifd0);
  need(buffer, ifd0 + 2 + count * 12, 'EXIF IFD0 entries');
  for (let index = 0; index < count; index += 1) {
    const entry = ifd0 + 2 + index * 12;
    if (u16(entry) !== ORIENTATION_TAG) continue;
    if (u16(entry + 2) !== TIFF_SHORT || u32(entry + 4) < 1) return 1;
    const value = u16(entry + 8);
    return value >= 1 && value <= 8 ? value : 1;
  }
  return 1;
}

/** A TIFF stream with one entry in IFD0: Orientation. */
export function orientationOnlyTiff(orientation: number): Buffer {
  const tiff = Buffer.alloc(26);
  tiff.write('MM', 0, 'latin1');
  tiff.writeUInt16BE(42, 2);
  tiff.writeUInt32BE(8, 4); // IFD0 right after the header
  tiff.writeUInt16BE(1, 8); // one entry
  tiff.writeUInt16BE(ORIENTATION_TAG, 10);
  tiff.writeUInt16BE(TIFF_SHORT, 12);
  tiff.writeUInt32BE(1, 14); // count
  tiff.writeUInt16BE(orientation, 18); // value, left-justified in the 4-byte field
  tiff.writeUInt32BE(0, 22); // no next IFD
  return tiff;
}

/**
 * What replaces a dropped EXIF block: the minimal orientation-only one when the image
 * is not upright as stored, else nothing. Only the first EXIF block counts, as for
 * decoders.
 */
function replacementExif(tiff: Uint8Array, state: { exifSeen: boolean }): { tiff: Buffer | null; label: string } {
  const first = !state.exifSeen;
  state.exifSeen = true;
  const orientation = exifOrientation(tiff);
  if (first && orientation !== 1) return { tiff: orientationOnlyTiff(orientation), label: `EXIF (Orientation ${orientation} kept)` };
  return { tiff: null, label: 'EXIF' };
}

// ---------------------------------------------------------------------------------
// JPEG: markers up to and between scans; entropy-coded data copied as it is

const EXIF_HEADER = 'Exif\0\0';
const XMP_HEADER = 'http://ns.adobe.com/xap/1.0/\0';
const EXTENDED_XMP_HEADER = 'http://ns.adobe.com/xmp/extension/\0';

const SOS = 0xda;
const EOI = 0xd9;
const APP1 = 0xe1;
const APP2 = 0xe2;
const APP13 = 0xed;
const COM = 0xfe;

/** Markers without a length field: TEM and RST0-7. */
function isStandaloneMarker(marker: number): boolean {
  return marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7);
}

function jpegSegment(marker: number, payload: Uint8Array): Buffer {
  const segment = Buffer.alloc(4 + payload.length);
  segment[0] = 0xff;
  segment[1] = marker;
  segment.writeUInt16BE(2 + payload.length, 2);
  segment.set(payload, 4);
  return segment;
}

/** Decides one segment: kept (null), dropped (label) or replaced (label and bytes). */
function jpegSegmentVerdict(
  marker: number,
  payload: Uint8Array,
  state: { exifSeen: boolean },
): { label: string; replacement: Buffer | null } | null {
  if (marker === APP1) {
    if (startsWith(payload, 0, EXIF_HEADER)) {
      const { tiff, label } = replacementExif(payload.subarray(EXIF_HEADER.length), state);
      const replacement = tiff === null ? null : jpegSegment(APP1, Buffer.concat([Buffer.from(EXIF_HEADER, 'latin1'), tiff]));
      return { label: `APP1 ${label}`, replacement };
    }
    if (startsWith(payload, 0, XMP_HEADER)) return { label: 'APP1 XMP', replacement: null };
    if (startsWith(payload, 0, EXTENDED_XMP_HEADER)) return { label: 'APP1 extended XMP', replacement: null };
    return { label: 'APP1', replacement: null };
  }
  if (marker === APP2 && (startsWith(payload, 0, 'MPF\0') || startsWith(payload, 0, 'FPXR\0'))) {
    return { label: `APP2 ${ascii(payload, 0, payload.indexOf(0))}`, replacement: null };
  }
  if (marker === APP13) return { label: 'APP13 Photoshop/IPTC', replacement: null };
  if (marker === COM) return { label: 'COM', replacement: null };
  return null;
}

/** Position of the marker that ends the entropy-coded data starting at `start`. */
function endOfEntropyData(input: Buffer, start: number): number {
  let position = start;
  for (;;) {
    const candidate = input.indexOf(0xff, position);
    if (candidate === -1 || candidate + 1 >= input.length) throw new MalformedImage('scan data has no end marker (EOI missing: file cut short?)');
    const next = input[candidate + 1] as number;
    // 0xFF00 is a stuffed data byte, RSTn sit inside the scan, 0xFFFF is a fill byte before a marker.
    if (next === 0x00 || (next >= 0xd0 && next <= 0xd7) || next === 0xff) {
      position = candidate + 1;
      continue;
    }
    return candidate;
  }
}

function walkJpeg(input: Buffer): Walked {
  const pieces: Uint8Array[] = [input.subarray(0, 2)];
  const removed: string[] = [];
  const state = { exifSeen: false };
  let sawScan = false;
  let position = 2;
  for (;;) {
    need(input, position + 2, `marker at ${position}`);
    if (input[position] !== 0xff) throw new MalformedImage(`expected a marker at ${position}, found 0x${(input[position] as number).toString(16)}`);
    const marker = input[position + 1] as number;
    if (marker === 0xff) {
      pieces.push(input.subarray(position, position + 1)); // fill byte
      position += 1;
      continue;
    }
    if (marker === EOI) {
      if (!sawScan) throw new MalformedImage('EOI before any scan');
      pieces.push(input.subarray(position, position + 2));
      if (position + 2 < input.length) removed.push(`${input.length - position - 2} bytes after EOI`);
      return { pieces, removed };
    }
    if (isStandaloneMarker(marker)) {
      pieces.push(input.subarray(position, position + 2));
      position += 2;
      continue;
    }
    need(input, position + 4, `length of marker 0x${marker.toString(16)} at ${position}`);
    const length = input.readUInt16BE(position + 2);
    if (length < 2) throw new MalformedImage(`marker 0x${marker.toString(16)} at ${position} has length ${length}`);
    const end = position + 2 + length;
    need(input, end, `segment 0x${marker.toString(16)} at ${position}`);
    const verdict = jpegSegmentVerdict(marker, input.subarray(position + 4, end), state);
    if (verdict === null) {
      pieces.push(input.subarray(position, end));
    } else {
      removed.push(verdict.label);
      if (verdict.replacement !== null) pieces.push(verdict.replacement);
    }
    position = end;
    if (marker === SOS) {
      sawScan = true;
      const scanEnd = endOfEntropyData(input, position);
      pieces.push(input.subarray(position, scanEnd));
      position = scanEnd;
    }
  }
}

// ---------------------------------------------------------------------------------
// PNG: length, type, data, CRC; chunks kept byte for byte (CRC included, right or wrong)

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const PNG_METADATA_CHUNKS = new Set(['tEXt', 'zTXt', 'iTXt', 'eXIf', 'tIME', 'dSIG']);

export function pngChunk(type: string, data: Uint8Array): Buffer {
  const chunk = Buffer.alloc(12 + data.length);
  chunk.writeUInt32BE(data.length, 0);
  chunk.write(type, 4, 'latin1');
  chunk.set(data, 8);
  chunk.writeUInt32BE(crc32(chunk.subarray(4, 8 + data.length)), 8 + data.length);
  return chunk;
}

function walkPng(input: Buffer): Walked {
  need(input, PNG_SIGNATURE.length, 'signature');
  const pieces: Uint8Array[] = [input.subarray(0, PNG_SIGNATURE.length)];
  const removed: string[] = [];
  const state = { exifSeen: false };
  let position = PNG_SIGNATURE.length;
  let first = true;
  for (;;) {
    need(input, position + 12, `chunk header at ${position}`);
    const length = input.readUInt32BE(position);
    const type = ascii(input, position + 4, position + 8);
    if (!/^[A-Za-z]{4}$/.test(type)) throw new MalformedImage(`chunk at ${position} has type ${JSON.stringify(type)}`);
    if (first && type !== 'IHDR') throw new MalformedImage(`first chunk is ${type}, not IHDR`);
    first = false;
    const end = position + 12 + length;
    need(input, end, `chunk ${type} at ${position}`);
    if (!PNG_METADATA_CHUNKS.has(type)) {
      pieces.push(input.subarray(position, end));
    } else if (type === 'eXIf') {
      const { tiff, label } = replacementExif(input.subarray(position + 8, end - 4), state);
      removed.push(`eXIf ${label}`);
      if (tiff !== null) pieces.push(pngChunk('eXIf', tiff));
    } else {
      removed.push(type);
    }
    position = end;
    if (type === 'IEND') break;
  }
  if (position < input.length) removed.push(`${input.length - position} bytes after IEND`);
  return { pieces, removed };
}

// ---------------------------------------------------------------------------------
// WebP: RIFF chunks (little-endian sizes, padded to even), VP8X feature flags

const VP8X_EXIF_FLAG = 0x08;
const VP8X_XMP_FLAG = 0x04;

function riffChunk(fourcc: string, data: Uint8Array): Buffer {
  const chunk = Buffer.alloc(8 + data.length + (data.length & 1));
  chunk.write(fourcc, 0, 'latin1');
  chunk.writeUInt32LE(data.length, 4);
  chunk.set(data, 8);
  return chunk;
}

function walkWebp(input: Buffer): Walked {
  need(input, 12, 'RIFF header');
  const riffEnd = 8 + input.readUInt32LE(4);
  need(input, riffEnd, 'RIFF chunk');
  const chunks: Uint8Array[] = [];
  const removed: string[] = [];
  const state = { exifSeen: false };
  let vp8xIndex = -1;
  let keptExif = false;
  let position = 12;
  while (position < riffEnd) {
    if (position + 8 > riffEnd) throw new MalformedImage(`chunk header at ${position} runs past the RIFF size`);
    const fourcc = ascii(input, position, position + 4);
    const size = input.readUInt32LE(position + 4);
    const dataEnd = position + 8 + size;
    const paddedEnd = dataEnd + (size & 1);
    if (paddedEnd > riffEnd) throw new MalformedImage(`chunk ${JSON.stringify(fourcc)} at ${position} runs past the RIFF size`);
    if (fourcc === 'EXIF') {
      const payload = input.subarray(position + 8, dataEnd);
      // Some writers put JPEG's "Exif\0\0" before the TIFF stream.
      const tiffStart = startsWith(payload, 0, EXIF_HEADER) ? EXIF_HEADER.length : 0;
      const { tiff, label } = replacementExif(payload.subarray(tiffStart), state);
      removed.push(`EXIF chunk ${label}`);
      if (tiff !== null) {
        // Written in the same form as found, for readers that expect one or the other.
        chunks.push(riffChunk('EXIF', tiffStart === 0 ? tiff : Buffer.concat([payload.subarray(0, tiffStart), tiff])));
        keptExif = true;
      }
    } else if (fourcc === 'XMP ') {
      removed.push('XMP chunk');
    } else {
      if (fourcc === 'VP8X') {
        if (size < 10) throw new MalformedImage(`VP8X chunk of ${size} bytes`);
        vp8xIndex = chunks.length;
      }
      chunks.push(input.subarray(position, paddedEnd));
    }
    position = paddedEnd;
  }
  if (riffEnd < input.length) removed.push(`${input.length - riffEnd} bytes after the RIFF chunk`);
  if (removed.length > 0 && vp8xIndex !== -1) {
    // The flags announce EXIF and XMP chunks; they must match what is left.
    const vp8x = Buffer.from(chunks[vp8xIndex] as Uint8Array);
    vp8x[8] = ((vp8x[8] as number) & ~(VP8X_EXIF_FLAG | VP8X_XMP_FLAG)) | (keptExif ? VP8X_EXIF_FLAG : 0);
    chunks[vp8xIndex] = vp8x;
  }
  const header = Buffer.alloc(12);
  header.write('RIFF', 0, 'latin1');
  header.writeUInt32LE(4 + chunks.reduce((total, chunk) => total + chunk.length, 0), 4);
  header.write('WEBP', 8, 'latin1');
  return { pieces: [header, ...chunks], removed };
}

// ---------------------------------------------------------------------------------
// GIF: header, colour tables, then image descriptors and extensions up to the trailer

const GIF_IMAGE_DESCRIPTOR = 0x2c;
const GIF_EXTENSION = 0x21;
const GIF_TRAILER = 0x3b;
const GIF_COMMENT_LABEL = 0xfe;
const GIF_APPLICATION_LABEL = 0xff;
/** Application extensions that carry metadata: XMP, and ImageMagick's 8BIM and IPTC blocks. */
const GIF_METADATA_APPLICATIONS = new Map([
  ['XMP DataXMP', 'XMP application extension'],
  ['MGK8BIM0000', '8BIM application extension'],
  ['MGKIPTC0000', 'IPTC application extension'],
]);

function gifColorTableSize(packedFields: number): number {
  return packedFields & 0x80 ? 3 * (1 << ((packedFields & 0x07) + 1)) : 0;
}

/** Position after a run of data sub-blocks (each length-prefixed, ended by a zero length). */
function skipGifSubBlocks(input: Buffer, start: number): number {
  let position = start;
  for (;;) {
    need(input, position + 1, `sub-block at ${position}`);
    const length = input[position] as number;
    position += 1 + length;
    if (length === 0) return position;
  }
}

function walkGif(input: Buffer): Walked {
  need(input, 13, 'logical screen descriptor');
  const headerEnd = 13 + gifColorTableSize(input[10] as number);
  need(input, headerEnd, 'global colour table');
  const pieces: Uint8Array[] = [input.subarray(0, headerEnd)];
  const removed: string[] = [];
  let position = headerEnd;
  for (;;) {
    need(input, position + 1, `block at ${position}`);
    const block = input[position] as number;
    if (block === GIF_TRAILER) {
      pieces.push(input.subarray(position, position + 1));
      if (position + 1 < input.length) removed.push(`${input.length - position - 1} bytes after the trailer`);
      return { pieces, removed };
    }
    if (block === GIF_IMAGE_DESCRIPTOR) {
      need(input, position + 10, `image descriptor at ${position}`);
      const dataStart = position + 10 + gifColorTableSize(input[position + 9] as number);
      need(input, dataStart + 1, `image data at ${position}`);
      const end = skipGifSubBlocks(input, dataStart + 1); // +1: LZW minimum code size
      pieces.push(input.subarray(position, end));
      position = end;
      continue;
    }
    if (block !== GIF_EXTENSION) throw new MalformedImage(`unknown block 0x${block.toString(16)} at ${position}`);
    need(input, position + 2, `extension at ${position}`);
    const label = input[position + 1] as number;
    const end = skipGifSubBlocks(input, position + 2);
    let dropped: string | undefined;
    if (label === GIF_COMMENT_LABEL) dropped = 'comment extension';
    if (label === GIF_APPLICATION_LABEL && input[position + 2] === 11) {
      dropped = GIF_METADATA_APPLICATIONS.get(ascii(input, position + 3, position + 14));
    }
    if (dropped === undefined) pieces.push(input.subarray(position, end));
    else removed.push(dropped);
    position = end;
  }
}
