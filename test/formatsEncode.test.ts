/**
 * Facts about WebP and AVIF thumbnails through sharp, checked on the bytes read back:
 * alpha kept, animation kept by WebP (frames and delays), AVIF unable to hold an
 * animation (refused), orientation applied by the pipeline it is given.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import {
  DEFAULT_FORMAT_SETTINGS,
  encodeThumbnailAs,
  isWorthServing,
  keepsAnimation,
} from '../server/images/formatEncode.js';
import { MODERN_FORMATS } from '../server/contract/accept.js';

/** 80×60, left half fully transparent, right half opaque red. */
async function halfTransparentPng(): Promise<Buffer> {
  const red = await sharp({ create: { width: 40, height: 60, channels: 4, background: { r: 255, g: 0, b: 0, alpha: 1 } } }).png().toBuffer();
  return sharp({ create: { width: 80, height: 60, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } })
    .composite([{ input: red, left: 40, top: 0 }])
    .png()
    .toBuffer();
}

const FRAME_DELAYS = [100, 200, 300];

/** A 3-frame 60×40 GIF: red, green, blue frames with delays 100, 200, 300 ms, looping forever. */
async function threeFrameGif(): Promise<Buffer> {
  const colours = [{ r: 220, g: 20, b: 20 }, { r: 20, g: 200, b: 20 }, { r: 20, g: 20, b: 220 }];
  const frames = await Promise.all(colours.map((background) => sharp({ create: { width: 60, height: 40, channels: 3, background } }).png().toBuffer()));
  return sharp(frames, { join: { animated: true } }).gif({ delay: FRAME_DELAYS, loop: 0 }).toBuffer();
}

/** RGBA of one pixel of a (possibly animated) image, frame `frame`. */
async function pixelAt(bytes: Buffer, x: number, y: number, frame = 0): Promise<number[]> {
  const { data, info } = await sharp(bytes, { animated: true }).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
  const frameHeight = info.pageHeight ?? info.height;
  const offset = ((frame * frameHeight + y) * info.width + x) * 4;
  return [...data.subarray(offset, offset + 4)];
}

function near(actual: number, expected: number, tolerance: number): boolean {
  return Math.abs(actual - expected) <= tolerance;
}

describe('alpha is kept', () => {
  for (const format of MODERN_FORMATS) {
    it(`transparent PNG → ${format}: four channels, a transparent pixel stays transparent, an opaque one stays red`, async () => {
      const encoded = await encodeThumbnailAs(format, await halfTransparentPng());
      assert.equal(encoded.format, format);
      assert.equal(encoded.hasAlpha, true);
      const header = await sharp(encoded.bytes).metadata();
      assert.equal(header.format, format === 'avif' ? 'heif' : 'webp');
      assert.equal(header.hasAlpha, true);
      assert.equal(header.channels, 4);
      const transparent = await pixelAt(encoded.bytes, 10, 30);
      assert.equal(transparent[3], 0, `alpha of a transparent pixel: ${transparent.join(',')}`);
      const opaque = await pixelAt(encoded.bytes, 70, 30);
      assert.ok(opaque[3] === 255 && near(opaque[0] ?? 0, 255, 24) && (opaque[1] ?? 255) < 40, `opaque red pixel: ${opaque.join(',')}`);
    });
  }
});

describe('animation', () => {
  it('animated GIF → WebP keeps every frame, each delay and the loop, resized per frame', async () => {
    const pipeline = sharp(await threeFrameGif(), { animated: true }).resize({ width: 30, height: 20, fit: 'fill' });
    const encoded = await encodeThumbnailAs('webp', pipeline);
    assert.deepEqual([encoded.width, encoded.height, encoded.frames], [30, 20, 3]);
    const header = await sharp(encoded.bytes, { animated: true }).metadata();
    assert.equal(header.format, 'webp');
    assert.equal(header.pages, 3);
    assert.deepEqual(header.delay, FRAME_DELAYS);
    assert.equal(header.loop, 0);
    assert.equal(header.pageHeight, 20);
    // Each frame keeps its own colour: red, green, blue.
    const dominant = await Promise.all([0, 1, 2].map(async (frame) => {
      const [r = 0, g = 0, b = 0] = await pixelAt(encoded.bytes, 15, 10, frame);
      return r > g && r > b ? 'red' : g > b ? 'green' : 'blue';
    }));
    assert.deepEqual(dominant, ['red', 'green', 'blue']);
  });

  it('an animated GIF given as bytes is read with all its frames', async () => {
    const encoded = await encodeThumbnailAs('webp', await threeFrameGif());
    assert.deepEqual([encoded.width, encoded.height, encoded.frames], [60, 40, 3]);
  });

  it('sharp cannot write animated AVIF: it stacks the frames into one still (the fact behind the refusal)', async () => {
    const stacked = await sharp(await threeFrameGif(), { animated: true }).avif().toBuffer();
    const header = await sharp(stacked, { animated: true }).metadata();
    assert.equal(header.pages ?? 1, 1);
    assert.equal(header.height, 120);
  });

  it('AVIF refuses an animation, from a pipeline or from bytes; keepsAnimation says so first', async () => {
    assert.equal(keepsAnimation('avif'), false);
    assert.equal(keepsAnimation('webp'), true);
    const gif = await threeFrameGif();
    await assert.rejects(encodeThumbnailAs('avif', sharp(gif, { animated: true })), RangeError);
    await assert.rejects(encodeThumbnailAs('avif', gif), RangeError);
  });

  it('AVIF of the first frame alone (a pipeline opened without animated) is a still, not refused', async () => {
    const encoded = await encodeThumbnailAs('avif', sharp(await threeFrameGif()));
    assert.deepEqual([encoded.width, encoded.height, encoded.frames], [60, 40, 1]);
  });
});

describe('the pipeline it is given', () => {
  it('is cloned: the same resized, auto-oriented pipeline then makes the source-format thumbnail', async () => {
    // Stored 80×40 with EXIF orientation 6: upright it is 40×80.
    const stored = await sharp({ create: { width: 80, height: 40, channels: 3, background: '#3366cc' } }).withMetadata({ orientation: 6 }).jpeg().toBuffer();
    const pipeline = sharp(stored).autoOrient().resize({ width: 20, height: 40, fit: 'fill' });
    for (const format of MODERN_FORMATS) {
      const encoded = await encodeThumbnailAs(format, pipeline);
      assert.deepEqual([encoded.width, encoded.height, encoded.frames, encoded.hasAlpha], [20, 40, 1, false], format);
      const header = await sharp(encoded.bytes).metadata();
      assert.deepEqual([header.width, header.height, header.orientation], [20, 40, undefined], format);
    }
    const jpeg = await pipeline.jpeg().toBuffer({ resolveWithObject: true });
    assert.deepEqual([jpeg.info.format, jpeg.info.width, jpeg.info.height], ['jpeg', 20, 40]);
  });

  it('settings change the bytes; the defaults are the chosen constants', async () => {
    const photo = await sharp({ create: { width: 120, height: 90, channels: 3, background: '#446688', noise: { type: 'gaussian', mean: 128, sigma: 30 } } }).png().toBuffer();
    const byDefault = await encodeThumbnailAs('webp', photo);
    const explicit = await encodeThumbnailAs('webp', photo, DEFAULT_FORMAT_SETTINGS);
    assert.ok(byDefault.bytes.equals(explicit.bytes), 'default settings are DEFAULT_FORMAT_SETTINGS');
    const lower = await encodeThumbnailAs('webp', photo, { ...DEFAULT_FORMAT_SETTINGS, webp: { ...DEFAULT_FORMAT_SETTINGS.webp, quality: 20 } });
    assert.ok(lower.bytes.length < byDefault.bytes.length, `quality 20: ${lower.bytes.length} bytes, default: ${byDefault.bytes.length}`);
  });
});

describe('isWorthServing', () => {
  const table: Array<[converted: number, source: number, expected: boolean]> = [
    [700, 1000, true],
    [999, 1000, true],
    [1000, 1000, false],
    [1400, 1000, false],
  ];
  for (const [converted, source, expected] of table) {
    it(`${converted} bytes against ${source}: ${expected}`, () => assert.equal(isWorthServing(converted, source), expected));
  }
});
