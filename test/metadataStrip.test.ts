/**
 * Metadata stripping without re-encoding: per format, what goes (EXIF, XMP, IPTC,
 * comments, text chunks, trailers), what stays (ICC, orientation, animation), pixels
 * decoded before and after compared byte for byte; malformed inputs left unchanged with
 * a reason; and prepareOriginal, the step every stored original goes through.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { crc32 } from 'node:zlib';
import sharp, { type Sharp } from 'sharp';
import { exifOrientation, orientationOnlyTiff, pngChunk, stripMetadata } from '../server/images/metadataStrip.js';
import { prepareOriginal, type OriginalImage } from '../server/tree/originals.js';
import { inspectImage, type ImageFormat } from '../server/images/sniff.js';

// ---------------------------------------------------------------------------------
// Fixtures, made here

const SERIAL = 'SN-12345678';
const OWNER = 'Jane Owner';
const XMP = `<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:rights>${OWNER}</dc:rights></rdf:Description></rdf:RDF></x:xmpmeta>`;
const EXIF = {
  IFD0: { Make: 'Cam', Model: 'Cam One', Artist: OWNER },
  IFD2: { BodySerialNumber: SERIAL },
  IFD3: { GPSLatitudeRef: 'N', GPSLatitude: '52/1 31/1 12/1', GPSLongitudeRef: 'E', GPSLongitude: '13/1 24/1 0/1' },
};
const GPS_IFD_POINTER = 0x8825;

/** 80×60 noise, left half red-ish: stored landscape. */
async function pixels(): Promise<Buffer> {
  const red = await sharp({ create: { width: 40, height: 60, channels: 3, background: '#ff0000' } }).png().toBuffer();
  return sharp({ create: { width: 80, height: 60, channels: 3, background: '#3366cc', noise: { type: 'gaussian', mean: 128, sigma: 30 } } })
    .composite([{ input: red, left: 0, top: 0 }])
    .png()
    .toBuffer();
}

const PIXELS = await pixels();

/** The photo as a camera would leave it: EXIF with GPS, serial and owner, XMP, a P3 profile. */
function tagged(options: { orientation?: number } = {}): Sharp {
  const image = sharp(PIXELS).withIccProfile('p3').withExif(EXIF).withXmp(XMP);
  return options.orientation === undefined ? image : image.withMetadata({ orientation: options.orientation });
}

function encode(image: Sharp, format: 'jpeg' | 'png' | 'webp', progressive = false): Promise<Buffer> {
  if (format === 'jpeg') return image.jpeg({ progressive }).toBuffer();
  return format === 'png' ? image.png().toBuffer() : image.webp().toBuffer();
}

function jpegSegment(marker: number, payload: Buffer): Buffer {
  const header = Buffer.from([0xff, marker, 0, 0]);
  header.writeUInt16BE(payload.length + 2, 2);
  return Buffer.concat([header, payload]);
}

/** SOI, the extra segments, then the rest of `jpeg` (its own segments included). */
function withJpegSegments(jpeg: Buffer, segments: Buffer[]): Buffer {
  return Buffer.concat([jpeg.subarray(0, 2), ...segments, jpeg.subarray(2)]);
}

/** Photoshop IRB with one IPTC record (2:80 by-line = the owner). */
function iptcSegment(): Buffer {
  const record = Buffer.concat([Buffer.from([0x1c, 0x02, 0x50, 0x00, OWNER.length]), Buffer.from(OWNER, 'latin1')]);
  const resource = Buffer.alloc(12);
  resource.write('8BIM', 0, 'latin1');
  resource.writeUInt16BE(0x0404, 4); // IPTC-NAA
  resource.writeUInt32BE(record.length, 8); // empty name (2 bytes of 0), then size
  const padded = record.length % 2 === 0 ? record : Buffer.concat([record, Buffer.alloc(1)]);
  return jpegSegment(0xed, Buffer.concat([Buffer.from('Photoshop 3.0\0', 'latin1'), resource, padded]));
}

/** A PNG with `chunks` inserted right after IHDR. */
function withPngChunks(png: Buffer, chunks: Buffer[]): Buffer {
  const afterIhdr = 8 + 12 + png.readUInt32BE(8);
  return Buffer.concat([png.subarray(0, afterIhdr), ...chunks, png.subarray(afterIhdr)]);
}

function gifExtension(label: number, data: Buffer[]): Buffer {
  const blocks = data.flatMap((block) => [Buffer.from([block.length]), block]);
  return Buffer.concat([Buffer.from([0x21, label]), ...blocks, Buffer.from([0])]);
}

/** A GIF with `blocks` inserted before the first block after the global colour table. */
function withGifBlocks(gif: Buffer, blocks: Buffer[]): Buffer {
  const packed = gif[10] as number;
  const headerEnd = 13 + (packed & 0x80 ? 3 * (1 << ((packed & 7) + 1)) : 0);
  return Buffer.concat([gif.subarray(0, headerEnd), ...blocks, gif.subarray(headerEnd)]);
}

/** Tags of IFD0 in a TIFF stream (with or without "Exif\0\0" before it). */
function ifd0Tags(exif: Buffer): number[] {
  const tiff = exif.subarray(0, 6).toString('latin1') === 'Exif\0\0' ? exif.subarray(6) : exif;
  const little = tiff.subarray(0, 2).toString('latin1') === 'II';
  const u16 = (offset: number): number => (little ? tiff.readUInt16LE(offset) : tiff.readUInt16BE(offset));
  const ifd0 = little ? tiff.readUInt32LE(4) : tiff.readUInt32BE(4);
  return Array.from({ length: u16(ifd0) }, (_, index) => u16(ifd0 + 2 + index * 12));
}

async function decoded(bytes: Buffer, animated = false): Promise<Buffer> {
  return sharp(bytes, { animated }).raw().toBuffer();
}

function stripped(bytes: Buffer, format: ImageFormat): { bytes: Buffer; removed: string[] } {
  const result = stripMetadata(bytes, format);
  assert.equal(result.kind, 'stripped', JSON.stringify(result));
  if (result.kind !== 'stripped') throw new Error('unreachable');
  return result;
}

function assertNoIdentifyingBytes(bytes: Buffer): void {
  assert.equal(bytes.includes(SERIAL), false, 'camera serial left');
  assert.equal(bytes.includes(OWNER), false, 'owner name left');
  assert.equal(bytes.includes('xmpmeta'), false, 'XMP left');
}

// ---------------------------------------------------------------------------------

describe('camera photos: GPS, serial, owner and XMP go; pixels, ICC and orientation stay', () => {
  const cases: Array<{ format: 'jpeg' | 'png' | 'webp'; progressive?: boolean }> = [
    { format: 'jpeg' },
    { format: 'jpeg', progressive: true },
    { format: 'png' },
    { format: 'webp' },
  ];
  for (const { format, progressive = false } of cases) {
    const name = `${format}${progressive ? ' (progressive)' : ''}`;

    test(`${name}, upright: every metadata block removed, pixels and ICC profile identical`, async () => {
      const input = await encode(tagged(), format, progressive);
      const before = await sharp(input).metadata();
      assert.ok(before.exif !== undefined && before.xmp !== undefined && before.icc !== undefined, 'fixture carries EXIF, XMP, ICC');
      assert.ok(ifd0Tags(before.exif).includes(GPS_IFD_POINTER), 'fixture carries GPS');
      assert.ok(input.includes(SERIAL) && input.includes(OWNER));

      const result = stripped(input, format);
      const after = await sharp(result.bytes).metadata();
      assert.ok(result.removed.length >= 2, result.removed.join(', '));
      assert.equal(after.exif, undefined);
      assert.equal(after.xmp, undefined);
      assert.equal(after.iptc, undefined);
      assert.ok(after.icc?.equals(before.icc), 'ICC profile kept byte for byte');
      assert.equal(after.width, before.width);
      assert.equal(after.height, before.height);
      assertNoIdentifyingBytes(result.bytes);
      assert.ok(result.bytes.length < input.length);
      assert.ok((await decoded(result.bytes)).equals(await decoded(input)), 'decoded pixels identical');
    });

    test(`${name}, orientation 6: only the Orientation tag is kept and the image still turns upright`, async () => {
      const input = await encode(tagged({ orientation: 6 }), format, progressive);
      assert.equal((await sharp(input).metadata()).orientation, 6);

      const result = stripped(input, format);
      const after = await sharp(result.bytes).metadata();
      assert.equal(after.orientation, 6);
      assert.ok(after.exif !== undefined);
      assert.deepEqual(ifd0Tags(after.exif), [0x0112], 'IFD0 holds Orientation alone (no GPS pointer, no EXIF IFD)');
      assert.equal(after.xmp, undefined);
      assert.ok(after.icc !== undefined);
      assertNoIdentifyingBytes(result.bytes);
      assert.ok((await decoded(result.bytes)).equals(await decoded(input)), 'decoded pixels identical');
      // Stored 80×60 landscape; upright it is portrait, the red half on top.
      const upright = await sharp(result.bytes).autoOrient().resize(25, 25, { fit: 'inside' }).raw().toBuffer({ resolveWithObject: true });
      assert.deepEqual([upright.info.width, upright.info.height], [19, 25]);
      const topLeft = [...upright.data.subarray(0, 3)];
      assert.ok((topLeft[0] as number) > 200 && (topLeft[2] as number) < 60, `top left is red: ${topLeft.join(',')}`);
    });

    test(`${name} without metadata: nothing removed, the input returned as it is`, async () => {
      const input = await encode(sharp(PIXELS), format, progressive);
      const result = stripped(input, format);
      assert.deepEqual(result.removed, []);
      assert.ok(result.bytes.equals(input));
    });
  }
});

describe('JPEG segments', () => {
  test('APP13 IPTC, COM, extended XMP and data after EOI are removed; JFIF, DQT, scans kept', async () => {
    const base = await sharp(PIXELS).jpeg().toBuffer();
    const input = Buffer.concat([
      withJpegSegments(base, [
        iptcSegment(),
        jpegSegment(0xfe, Buffer.from(`shot by ${OWNER}`, 'latin1')),
        jpegSegment(0xe1, Buffer.from(`http://ns.adobe.com/xmp/extension/\0${XMP}`, 'latin1')),
      ]),
      Buffer.from(`trailer ${SERIAL}`, 'latin1'),
    ]);
    assert.ok((await sharp(input).metadata()).iptc !== undefined, 'fixture carries IPTC');
    const result = stripped(input, 'jpeg');
    assert.deepEqual(result.removed, ['APP13 Photoshop/IPTC', 'COM', 'APP1 extended XMP', `${SERIAL.length + 8} bytes after EOI`]);
    assert.ok(result.bytes.equals(base), 'exactly the image without the added segments');
    assertNoIdentifyingBytes(result.bytes);
  });

  test('a second EXIF block goes entirely, the first keeps its orientation', async () => {
    const rotated = await sharp(PIXELS).withMetadata({ orientation: 8 }).jpeg().toBuffer();
    const secondExif = jpegSegment(0xe1, Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), orientationOnlyTiff(3)]));
    const sosIndex = rotated.indexOf(Buffer.from([0xff, 0xda]));
    const withSecond = Buffer.concat([rotated.subarray(0, sosIndex), secondExif, rotated.subarray(sosIndex)]);
    const result = stripped(withSecond, 'jpeg');
    assert.deepEqual(result.removed, ['APP1 EXIF (Orientation 8 kept)', 'APP1 EXIF']);
    assert.equal((await sharp(result.bytes).metadata()).orientation, 8);
  });

  test('Adobe APP14 and the ICC profile of a CMYK JPEG are kept, pixels identical', async () => {
    const input = await sharp(PIXELS).withIccProfile('cmyk').withExif(EXIF).jpeg().toBuffer();
    const before = await sharp(input).metadata();
    assert.equal(before.space, 'cmyk');
    assert.ok(before.icc !== undefined && input.includes('Adobe'), 'fixture has an ICC profile and APP14 Adobe');
    const result = stripped(input, 'jpeg');
    const after = await sharp(result.bytes).metadata();
    assert.equal(after.space, 'cmyk');
    assert.equal(after.exif, undefined);
    assert.ok(after.icc?.equals(before.icc ?? Buffer.alloc(0)));
    assert.ok((await decoded(result.bytes)).equals(await decoded(input)));
  });
});

describe('PNG chunks', () => {
  test('tEXt, zTXt, iTXt, tIME and data after IEND are removed with their CRCs; the rest kept byte for byte', async () => {
    const base = await sharp(PIXELS).png().toBuffer();
    const time = Buffer.from([0x07, 0xea, 1, 2, 3, 4, 5]);
    const input = Buffer.concat([
      withPngChunks(base, [
        pngChunk('tEXt', Buffer.from(`Author\0${OWNER}`, 'latin1')),
        pngChunk('zTXt', Buffer.from(`Comment\0\0x\x9c\x03\0\0\0\0\x01`, 'latin1')),
        pngChunk('iTXt', Buffer.from(`XML:com.adobe.xmp\0\0\0\0\0${XMP}`, 'latin1')),
        pngChunk('tIME', time),
      ]),
      Buffer.from(SERIAL, 'latin1'),
    ]);
    assert.ok((await sharp(input).metadata()).xmp !== undefined, 'fixture carries XMP');
    const result = stripped(input, 'png');
    assert.deepEqual(result.removed, ['tEXt', 'zTXt', 'iTXt', 'tIME', `${SERIAL.length} bytes after IEND`]);
    assert.ok(result.bytes.equals(base));
    assertNoIdentifyingBytes(result.bytes);
  });

  test('iCCP, gAMA and an unknown ancillary chunk are kept', async () => {
    const base = await sharp(PIXELS).withIccProfile('p3').png().toBuffer();
    const custom = pngChunk('prIv', Buffer.from('kept', 'latin1'));
    const gama = pngChunk('gAMA', Buffer.from([0, 0, 0xb1, 0x8f]));
    const input = withPngChunks(base, [gama, custom, pngChunk('tEXt', Buffer.from('Software\0x', 'latin1'))]);
    const result = stripped(input, 'png');
    assert.deepEqual(result.removed, ['tEXt']);
    assert.ok(result.bytes.includes(custom) && result.bytes.includes(gama));
    assert.ok((await sharp(result.bytes).metadata()).icc !== undefined);
  });

  test('the replacement eXIf chunk carries a correct CRC', async () => {
    const input = await tagged({ orientation: 6 }).png().toBuffer();
    const result = stripped(input, 'png');
    const at = result.bytes.indexOf('eXIf') - 4;
    const length = result.bytes.readUInt32BE(at);
    assert.equal(result.bytes.readUInt32BE(at + 8 + length), crc32(result.bytes.subarray(at + 4, at + 8 + length)));
  });
});

describe('WebP chunks and VP8X flags', () => {
  function vp8xFlags(webp: Buffer): number {
    assert.equal(webp.subarray(12, 16).toString('latin1'), 'VP8X');
    return webp[20] as number;
  }

  test('EXIF and XMP chunks removed, their flags cleared, the ICC flag and RIFF size right', async () => {
    const input = await tagged().webp().toBuffer();
    assert.equal(vp8xFlags(input) & 0x2c, 0x2c, 'fixture flags ICC, EXIF, XMP');
    const result = stripped(input, 'webp');
    assert.deepEqual(result.removed, ['EXIF chunk EXIF', 'XMP chunk']);
    assert.equal(vp8xFlags(result.bytes) & 0x2c, 0x20);
    assert.equal(result.bytes.readUInt32LE(4), result.bytes.length - 8);
  });

  test('orientation kept: the EXIF flag stays set', async () => {
    const result = stripped(await tagged({ orientation: 6 }).webp().toBuffer(), 'webp');
    assert.equal(vp8xFlags(result.bytes) & 0x2c, 0x28);
  });

  test('an animated WebP keeps every frame', async () => {
    const frames = await Promise.all([0, 120, 240].map((red) => sharp({ create: { width: 30, height: 20, channels: 3, background: { r: red, g: 9, b: 9 } } }).png().toBuffer()));
    const input = await sharp(frames, { join: { animated: true } }).withXmp(XMP).webp().toBuffer();
    const result = stripped(input, 'webp');
    assert.deepEqual(result.removed, ['XMP chunk']);
    assert.equal(inspectImage(result.bytes)?.frames, 3);
    assert.ok((await decoded(result.bytes, true)).equals(await decoded(input, true)));
  });
});

describe('GIF blocks', () => {
  test('comment and XMP application extensions removed; loop extension and frames kept', async () => {
    const frames = await Promise.all([0, 120, 240].map((red) => sharp({ create: { width: 30, height: 20, channels: 3, background: { r: red, g: 9, b: 9 } } }).png().toBuffer()));
    const base = await sharp(frames, { join: { animated: true } }).gif({ loop: 3 }).toBuffer();
    const xmpData = Buffer.from(XMP, 'latin1');
    const input = withGifBlocks(base, [
      gifExtension(0xfe, [Buffer.from(`by ${OWNER}`, 'latin1')]),
      gifExtension(0xff, [Buffer.from('XMP DataXMP', 'latin1'), ...Array.from({ length: Math.ceil(xmpData.length / 255) }, (_, index) => xmpData.subarray(index * 255, index * 255 + 255))]),
    ]);
    const result = stripped(input, 'gif');
    assert.deepEqual(result.removed, ['comment extension', 'XMP application extension']);
    assert.ok(result.bytes.equals(base));
    assert.equal((await sharp(result.bytes).metadata()).loop, 3);
    assert.equal(inspectImage(result.bytes)?.frames, 3);
  });
});

describe('AVIF', () => {
  test('kept as it is, by design', async () => {
    const input = await sharp(PIXELS).withExif(EXIF).avif().toBuffer();
    assert.deepEqual(stripMetadata(input, 'avif'), { kind: 'kept', reason: 'AVIF metadata is not stripped' });
  });
});

// ---------------------------------------------------------------------------------

const [jpeg, png, webp, gif] = await Promise.all([
  tagged().jpeg().toBuffer(),
  tagged().png().toBuffer(),
  tagged().webp().toBuffer(),
  sharp(PIXELS).gif().toBuffer(),
]);

describe('malformed structures: input left unchanged, with the reason', () => {
  const app1 = jpeg.indexOf(Buffer.from([0xff, 0xe1]));
  const sos = jpeg.indexOf(Buffer.from([0xff, 0xda]));
  const badExif = Buffer.from(jpeg);
  badExif.write('XX', app1 + 10, 'latin1'); // byte order of the TIFF stream
  const hugeLength = Buffer.from(jpeg);
  hugeLength.writeUInt16BE(0xfff0, app1 + 2);
  const shortLength = Buffer.from(jpeg);
  shortLength.writeUInt16BE(1, app1 + 2);
  const pngChunkPastEnd = Buffer.from(png);
  pngChunkPastEnd.writeUInt32BE(0x7fffffff, 8 + 25);
  const pngBadType = Buffer.from(png);
  pngBadType.write('1234', 8 + 25 + 4, 'latin1');
  const webpRiffPastEnd = Buffer.from(webp);
  webpRiffPastEnd.writeUInt32LE(webp.length + 100, 4);
  const webpChunkPastRiff = Buffer.from(webp);
  webpChunkPastRiff.writeUInt32LE(webp.length, 16);

  const cases: Array<{ name: string; format: ImageFormat; bytes: Buffer; reason: RegExp }> = [
    { name: 'JPEG segment length past the end', format: 'jpeg', bytes: hugeLength, reason: /runs past the end/ },
    { name: 'JPEG segment length below 2', format: 'jpeg', bytes: shortLength, reason: /has length 1/ },
    { name: 'JPEG cut inside the metadata', format: 'jpeg', bytes: jpeg.subarray(0, app1 + 40), reason: /runs past the end/ },
    { name: 'JPEG cut inside the scan (no EOI)', format: 'jpeg', bytes: jpeg.subarray(0, jpeg.length - 40), reason: /no end marker/ },
    { name: 'JPEG garbage after SOI', format: 'jpeg', bytes: Buffer.concat([jpeg.subarray(0, 2), Buffer.from('garbage'), jpeg.subarray(2)]), reason: /expected a marker/ },
    { name: 'JPEG EOI before any scan', format: 'jpeg', bytes: Buffer.concat([jpeg.subarray(0, sos), Buffer.from([0xff, 0xd9])]), reason: /EOI before any scan/ },
    { name: 'JPEG EXIF with an unknown byte order', format: 'jpeg', bytes: badExif, reason: /byte order/ },
    { name: 'PNG chunk length past the end', format: 'png', bytes: pngChunkPastEnd, reason: /runs past the end/ },
    { name: 'PNG without IEND', format: 'png', bytes: png.subarray(0, png.length - 12), reason: /runs past the end/ },
    { name: 'PNG chunk type not letters', format: 'png', bytes: pngBadType, reason: /has type/ },
    { name: 'PNG not starting with IHDR', format: 'png', bytes: Buffer.concat([png.subarray(0, 8), pngChunk('tEXt', Buffer.from('a\0b')), png.subarray(8)]), reason: /not IHDR/ },
    { name: 'WebP RIFF size past the end', format: 'webp', bytes: webpRiffPastEnd, reason: /RIFF chunk runs past the end/ },
    { name: 'WebP chunk size past the RIFF size', format: 'webp', bytes: webpChunkPastRiff, reason: /runs past the RIFF size/ },
    { name: 'GIF unknown block', format: 'gif', bytes: Buffer.concat([gif.subarray(0, gif.length - 1), Buffer.from([0x99])]), reason: /unknown block 0x99/ },
    { name: 'GIF cut inside the image data', format: 'gif', bytes: gif.subarray(0, gif.length - 10), reason: /runs past the end/ },
  ];
  for (const { name, format, bytes, reason } of cases) {
    test(name, () => {
      const result = stripMetadata(bytes, format);
      assert.equal(result.kind, 'malformed', JSON.stringify(result));
      if (result.kind === 'malformed') assert.match(result.reason, reason);
    });
  }
});

describe('EXIF orientation', () => {
  const cases: Array<{ name: string; tiff: Buffer; orientation: number }> = [
    ...[1, 3, 6, 8].map((orientation) => ({ name: `built, ${orientation}`, tiff: orientationOnlyTiff(orientation), orientation })),
    { name: 'little-endian, 5', tiff: Buffer.from([0x49, 0x49, 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]), orientation: 5 },
    { name: 'no Orientation tag', tiff: Buffer.from([0x4d, 0x4d, 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x0f, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]), orientation: 1 },
    { name: 'out of range (9) counts as upright', tiff: orientationOnlyTiff(9), orientation: 1 },
  ];
  for (const { name, tiff, orientation } of cases) {
    test(name, () => assert.equal(exifOrientation(tiff), orientation));
  }
  test('IFD0 past the end throws', () => {
    const tiff = orientationOnlyTiff(6);
    tiff.writeUInt32BE(4000, 4);
    assert.throws(() => exifOrientation(tiff), /runs past the end/);
  });
});

// ---------------------------------------------------------------------------------

describe('prepareOriginal', () => {
  async function original(bytes: Buffer): Promise<OriginalImage> {
    const info = inspectImage(bytes);
    assert.ok(info !== null);
    return { ...info, bytes };
  }

  test('strips and reports what went; size and frames unchanged', async () => {
    const image = await original(await tagged({ orientation: 6 }).jpeg().toBuffer());
    const prepared = prepareOriginal(image, { stripMetadata: true });
    assert.deepEqual(prepared.removed, ['APP1 EXIF (Orientation 6 kept)', 'APP1 XMP']);
    assert.equal(prepared.unchangedReason, null);
    assert.equal(prepared.failed, false);
    assert.ok(prepared.image.bytes.length < image.bytes.length);
    assert.deepEqual({ ...prepared.image, bytes: null }, { ...image, bytes: null });
  });

  test('off: the bytes are the input itself', async () => {
    const image = await original(await tagged().jpeg().toBuffer());
    const prepared = prepareOriginal(image, { stripMetadata: false });
    assert.equal(prepared.image, image);
    assert.deepEqual(prepared.removed, []);
  });

  test('malformed: the input unchanged, failed with the reason', async () => {
    const jpeg = await tagged().jpeg().toBuffer();
    const image = await original(jpeg.subarray(0, jpeg.length - 40));
    const prepared = prepareOriginal(image, { stripMetadata: true });
    assert.equal(prepared.image, image);
    assert.equal(prepared.failed, true);
    assert.match(prepared.unchangedReason ?? '', /no end marker/);
  });

  test('AVIF: unchanged, not a failure', async () => {
    const image = await original(await sharp(PIXELS).avif().toBuffer());
    const prepared = prepareOriginal(image, { stripMetadata: true });
    assert.equal(prepared.image, image);
    assert.equal(prepared.failed, false);
    assert.match(prepared.unchangedReason ?? '', /AVIF/);
  });
});
