import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import {
  FORMAT_INFO,
  formatFromExt,
  inspectImage,
  pixelCount,
  sniffImageType,
  type ImageFormat,
  type ImageInfo,
} from '../server/images/sniff.js';

// ---------------------------------------------------------------------------------
// Real images made with sharp, and hand-made headers

const WIDTH = 30;
const HEIGHT = 20;

function solidPng(red: number): Promise<Buffer> {
  return sharp({ create: { width: WIDTH, height: HEIGHT, channels: 3, background: { r: red, g: 40, b: 90 } } })
    .png()
    .toBuffer();
}

const frames = await Promise.all([solidPng(255), solidPng(128), solidPng(0)]);
const animated = () => sharp(frames, { join: { animated: true } });
const [firstFrame] = frames;
assert.ok(firstFrame);

const jpeg = await sharp(firstFrame).jpeg().toBuffer();
const png = firstFrame;
const gifStill = await sharp(firstFrame).gif().toBuffer();
const gifAnimated = await animated().gif().toBuffer();
const webpStill = await sharp(firstFrame).webp().toBuffer();
const webpAnimated = await animated().webp().toBuffer();
const avif = await sharp(firstFrame).avif().toBuffer();

function u32(value: number): Buffer {
  const buffer = Buffer.alloc(4);
  buffer.writeUInt32BE(value);
  return buffer;
}

function pngChunk(type: string, data: Buffer): Buffer {
  const typeAndData = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  return Buffer.concat([u32(data.length), typeAndData, u32(crc32(typeAndData))]);
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** A PNG that is only a header: IHDR declaring width×height, then IEND. */
function pngHeaderOnly(width: number, height: number): Buffer {
  const ihdr = Buffer.concat([u32(width), u32(height), Buffer.from([8, 2, 0, 0, 0])]);
  return Buffer.concat([PNG_SIGNATURE, pngChunk('IHDR', ihdr), pngChunk('IEND', Buffer.alloc(0))]);
}

/** The sharp PNG with an APNG `acTL` chunk (declaring `frameCount`) after IHDR. */
function apng(frameCount: number): Buffer {
  const afterIhdr = 8 + 8 + 13 + 4;
  const actl = pngChunk('acTL', Buffer.concat([u32(frameCount), u32(0)]));
  return Buffer.concat([png.subarray(0, afterIhdr), actl, png.subarray(afterIhdr)]);
}

function box(type: string, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([u32(8 + body.length), Buffer.from(type, 'latin1'), body]);
}

const brands = (...names: string[]) => Buffer.from(names.join(''), 'latin1');

/** An AVIF image sequence with no still item: size in `tkhd`, frames in `stsz`. */
function avifSequence(width: number, height: number, frameCount: number): Buffer {
  const tkhd = box(
    'tkhd',
    Buffer.alloc(4), // version 0, flags
    Buffer.alloc(20), // times, track id, reserved, duration
    Buffer.alloc(52), // reserved, layer, group, volume, matrix
    u32(width * 65536),
    u32(height * 65536),
  );
  const stsz = box('stsz', Buffer.alloc(4), u32(0), u32(frameCount));
  const trak = box('trak', tkhd, box('mdia', box('minf', box('stbl', stsz))));
  return Buffer.concat([box('ftyp', brands('avis'), u32(0), brands('avis', 'msf1', 'miaf')), box('moov', trak)]);
}

const heic = Buffer.concat([box('ftyp', brands('heic'), u32(0), brands('mif1', 'heic')), box('mdat', Buffer.alloc(16))]);
/** AVIF listed only among the compatible brands. */
const avifCompatibleOnly = Buffer.concat([avif.subarray(0, 8), brands('mif1'), avif.subarray(12)]);

const text = (value: string) => Buffer.from(value, 'utf8');

// ---------------------------------------------------------------------------------

interface SniffCase {
  name: string;
  bytes: Uint8Array;
  format: ImageFormat | null;
  /** What inspectImage reads, or null (not an image, or header unreadable). */
  info: Omit<ImageInfo, 'format'> | null;
}

const still = { width: WIDTH, height: HEIGHT, frames: 1 };

const CASES: SniffCase[] = [
  { name: 'JPEG', bytes: jpeg, format: 'jpeg', info: still },
  { name: 'PNG', bytes: png, format: 'png', info: still },
  { name: 'GIF still', bytes: gifStill, format: 'gif', info: still },
  { name: 'GIF animated, 3 frames', bytes: gifAnimated, format: 'gif', info: { ...still, frames: 3 } },
  { name: 'WebP still', bytes: webpStill, format: 'webp', info: still },
  { name: 'WebP animated, 3 frames', bytes: webpAnimated, format: 'webp', info: { ...still, frames: 3 } },
  { name: 'AVIF', bytes: avif, format: 'avif', info: still },
  { name: 'AVIF brand only among compatible brands', bytes: avifCompatibleOnly, format: 'avif', info: still },
  { name: 'APNG declaring 5 frames', bytes: apng(5), format: 'png', info: { ...still, frames: 5 } },
  { name: 'AVIF sequence (avis)', bytes: avifSequence(64, 48, 7), format: 'avif', info: { width: 64, height: 48, frames: 7 } },
  { name: 'PNG header declaring 60000×60000', bytes: pngHeaderOnly(60000, 60000), format: 'png', info: { width: 60000, height: 60000, frames: 1 } },
  { name: 'PNG header declaring width 0', bytes: pngHeaderOnly(0, 10), format: 'png', info: null },
  // cut short: recognised by the magic number, but the size cannot be read
  { name: 'PNG cut inside IHDR (a view into the whole file: no reading past its end)', bytes: png.subarray(0, 20), format: 'png', info: null },
  { name: 'JPEG cut before the frame header', bytes: jpeg.subarray(0, 40), format: 'jpeg', info: null },
  { name: 'GIF cut inside the screen descriptor', bytes: gifAnimated.subarray(0, 8), format: 'gif', info: null },
  { name: 'GIF with no image descriptor', bytes: gifStill.subarray(0, 13), format: 'gif', info: null },
  { name: 'AVIF cut inside ftyp', bytes: avif.subarray(0, 20), format: null, info: null },
  { name: 'AVIF cut after ftyp', bytes: avif.subarray(0, 40), format: 'avif', info: null },
  { name: 'WebP cut before the first chunk', bytes: webpStill.subarray(0, 14), format: null, info: null },
  { name: 'JPEG magic alone', bytes: Buffer.from([0xff, 0xd8, 0xff]), format: 'jpeg', info: null },
  { name: 'two bytes of JPEG magic', bytes: Buffer.from([0xff, 0xd8]), format: null, info: null },
  // not ours
  { name: 'empty', bytes: new Uint8Array(0), format: null, info: null },
  { name: 'HTML', bytes: text('<!DOCTYPE html><html><body>hi</body></html>'), format: null, info: null },
  { name: 'SVG', bytes: text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'), format: null, info: null },
  { name: 'SVG with XML prolog', bytes: text('<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>'), format: null, info: null },
  { name: 'XML', bytes: text('<?xml version="1.0"?><root/>'), format: null, info: null },
  { name: 'script', bytes: text('alert(document.cookie)'), format: null, info: null },
  { name: 'JSON', bytes: text('{"width":10}'), format: null, info: null },
  { name: 'BMP', bytes: Buffer.concat([text('BM'), Buffer.alloc(60)]), format: null, info: null },
  { name: 'TIFF little-endian', bytes: Buffer.concat([Buffer.from([0x49, 0x49, 0x2a, 0x00]), Buffer.alloc(60)]), format: null, info: null },
  { name: 'TIFF big-endian', bytes: Buffer.concat([Buffer.from([0x4d, 0x4d, 0x00, 0x2a]), Buffer.alloc(60)]), format: null, info: null },
  { name: 'HEIC', bytes: heic, format: null, info: null },
  { name: 'RIFF that is not WebP (WAVE)', bytes: Buffer.concat([text('RIFF'), u32(100), text('WAVEfmt '), Buffer.alloc(40)]), format: null, info: null },
  { name: 'PNG signature with one byte wrong', bytes: Buffer.concat([Buffer.from([0x89]), text('PNG\r\n\x1a\x00'), png.subarray(8)]), format: null, info: null },
  { name: 'GIF version that does not exist', bytes: Buffer.concat([text('GIF88a'), gifStill.subarray(6)]), format: null, info: null },
  { name: 'image bytes after a leading space', bytes: Buffer.concat([text(' '), png]), format: null, info: null },
];

describe('sniffImageType', () => {
  for (const testCase of CASES) {
    it(testCase.name, () => {
      assert.equal(sniffImageType(testCase.bytes), testCase.format);
    });
  }
});

describe('inspectImage', () => {
  for (const testCase of CASES) {
    it(testCase.name, () => {
      const expected = testCase.info === null || testCase.format === null ? null : { format: testCase.format, ...testCase.info };
      assert.deepEqual(inspectImage(testCase.bytes), expected);
    });
  }

  it('sharp agrees on the frame counts we read from headers', async () => {
    for (const bytes of [gifAnimated, webpAnimated]) {
      const metadata = await sharp(bytes, { animated: true }).metadata();
      assert.equal(metadata.pages, inspectImage(bytes)?.frames);
    }
  });
});

describe('pixelCount', () => {
  it('counts every frame', () => {
    assert.equal(pixelCount({ width: 30, height: 20, frames: 3 }), 1800);
  });

  it('reads the 60000×60000 header as 3.6 billion pixels', () => {
    const info = inspectImage(pngHeaderOnly(60000, 60000));
    assert.ok(info);
    assert.equal(pixelCount(info), 3_600_000_000);
  });
});

describe('FORMAT_INFO and formatFromExt', () => {
  const TABLE: Array<[ImageFormat, string, string]> = [
    ['jpeg', 'jpg', 'image/jpeg'],
    ['png', 'png', 'image/png'],
    ['gif', 'gif', 'image/gif'],
    ['webp', 'webp', 'image/webp'],
    ['avif', 'avif', 'image/avif'],
  ];
  for (const [format, ext, contentType] of TABLE) {
    it(`${format} is .${ext}, ${contentType}, and back`, () => {
      assert.deepEqual(FORMAT_INFO[format], { ext, contentType });
      assert.equal(formatFromExt(ext), format);
    });
  }

  for (const ext of ['jpeg', 'JPG', '.png', 'svg', 'html', '']) {
    it(`formatFromExt refuses ${JSON.stringify(ext)}`, () => {
      assert.equal(formatFromExt(ext), null);
    });
  }
});
