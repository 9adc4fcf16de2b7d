import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, get } from 'node:http';
import type { AddressInfo } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import sharp, { type Sharp } from 'sharp';
import { isImageproxyError, type ErrorCode } from '../server/errors.js';
import { orientedSize, planResize, type ResizeBox } from '../server/images/resizePlan.js';
import { createEngine } from '../server/images/engineChoice.js';
import {
  DEFAULT_QUALITY,
  type EngineName,
  type EngineOptions,
  type ImageFormat,
  type ResizeEngine,
} from '../server/images/engine.js';

// ---------------------------------------------------------------------------------
// Inputs, made here with sharp

const OPTIONS: EngineOptions = { maxPixels: 40_000_000, timeoutSeconds: 20, concurrency: 2, quality: { ...DEFAULT_QUALITY } };

function photo(width: number, height: number): Sharp {
  // Noise, so the encoders and decoders do the work a real photo asks of them.
  return sharp({ create: { width, height, channels: 3, background: '#6a8caf', noise: { type: 'gaussian', mean: 128, sigma: 30 } } });
}

function frame(red: number): Promise<Buffer> {
  return sharp({ create: { width: 300, height: 200, channels: 3, background: { r: red, g: 60, b: 120 } } }).png().toBuffer();
}

const animationFrames = await Promise.all([frame(250), frame(150), frame(50)]);
const animation = (): Sharp => sharp(animationFrames, { join: { animated: true } });

/** Stored landscape 800×600 (left half red, right half blue) tagged orientation 6: upright it is 600×800, red on top. */
async function rotatedJpeg(): Promise<Buffer> {
  const blue = await sharp({ create: { width: 400, height: 600, channels: 3, background: '#0000ff' } }).png().toBuffer();
  const stored = await sharp({ create: { width: 800, height: 600, channels: 3, background: '#ff0000' } })
    .composite([{ input: blue, left: 400, top: 0 }])
    .png()
    .toBuffer();
  return sharp(stored).jpeg({ quality: 90 }).withMetadata({ orientation: 6 }).toBuffer();
}

interface Input {
  name: string;
  format: ImageFormat;
  bytes: Buffer;
  /** Stored size of one frame. */
  stored: { width: number; height: number };
  orientation?: number;
  frames: number;
  alpha: boolean;
  /** Engines that cannot take this input, and the code they answer with instead. */
  refusedBy?: { engine: EngineName; code: ErrorCode };
}

const inputs: Input[] = [
  { name: 'JPEG landscape 1600×1200', format: 'jpeg', bytes: await photo(1600, 1200).jpeg().toBuffer(), stored: { width: 1600, height: 1200 }, frames: 1, alpha: false },
  { name: 'JPEG portrait 600×900', format: 'jpeg', bytes: await photo(600, 900).jpeg().toBuffer(), stored: { width: 600, height: 900 }, frames: 1, alpha: false },
  { name: 'JPEG small 100×80', format: 'jpeg', bytes: await photo(100, 80).jpeg().toBuffer(), stored: { width: 100, height: 80 }, frames: 1, alpha: false },
  {
    name: 'PNG with alpha 800×600',
    format: 'png',
    bytes: await sharp({ create: { width: 800, height: 600, channels: 4, background: { r: 20, g: 200, b: 90, alpha: 0.5 } } }).png().toBuffer(),
    stored: { width: 800, height: 600 },
    frames: 1,
    alpha: true,
  },
  { name: 'GIF animated 3×300×200', format: 'gif', bytes: await animation().gif().toBuffer(), stored: { width: 300, height: 200 }, frames: 3, alpha: false },
  {
    name: 'WebP animated 3×300×200',
    format: 'webp',
    bytes: await animation().webp().toBuffer(),
    stored: { width: 300, height: 200 },
    frames: 3,
    alpha: false,
    refusedBy: { engine: 'jimp', code: 'bad_image' },
  },
  { name: 'WebP still 800×600', format: 'webp', bytes: await photo(800, 600).webp().toBuffer(), stored: { width: 800, height: 600 }, frames: 1, alpha: false },
  { name: 'AVIF 640×480', format: 'avif', bytes: await photo(640, 480).avif().toBuffer(), stored: { width: 640, height: 480 }, frames: 1, alpha: false },
  { name: 'JPEG EXIF orientation 6, stored 800×600', format: 'jpeg', bytes: await rotatedJpeg(), stored: { width: 800, height: 600 }, orientation: 6, frames: 1, alpha: false },
];

/** The `{h}x{w}` sizes of the URL contract under test. */
const boxes: Array<{ label: string; box: ResizeBox }> = [
  { label: '150x', box: { maxHeight: 150, maxWidth: null } },
  { label: 'x200', box: { maxHeight: null, maxWidth: 200 } },
  { label: '250x250', box: { maxHeight: 250, maxWidth: 250 } },
  { label: '500x500', box: { maxHeight: 500, maxWidth: 500 } },
];

/** What sharp's metadata calls each format (AVIF is read by libheif). */
const SHARP_FORMAT: Record<ImageFormat, string> = { jpeg: 'jpeg', png: 'png', gif: 'gif', webp: 'webp', avif: 'heif' };

async function assertRejects(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isImageproxyError(error), `an ImageproxyError, got ${String(error)}`);
    assert.equal(error.code, code, error.detail);
    return true;
  });
}

/** RGB of the pixel at (x, y) of an encoded image. */
async function pixelAt(image: Buffer, x: number, y: number): Promise<[number, number, number]> {
  const { data, info } = await sharp(image).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const offset = (y * info.width + x) * info.channels;
  return [data[offset] ?? -1, data[offset + 1] ?? -1, data[offset + 2] ?? -1];
}

/** node:http rather than fetch: fetch compiles its HTTP parser on first use, on this thread. */
function httpGet(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    get(url, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve(body));
      response.on('error', reject);
    }).on('error', reject);
  });
}

// ---------------------------------------------------------------------------------
// Both engines, every input, every size

const engineNames: EngineName[] = ['sharp', 'jimp'];

for (const engineName of engineNames) {
  describe(`${engineName} engine`, () => {
    let engine: ResizeEngine;
    before(async () => {
      engine = await createEngine(engineName, OPTIONS);
      assert.equal(engine.name, engineName);
    });
    after(() => engine.close());

    for (const input of inputs) {
      if (input.refusedBy?.engine === engineName) {
        const { code } = input.refusedBy;
        it(`${input.name}: refused with ${code}`, () =>
          assertRejects(engine.resize({ input: input.bytes, format: input.format, maxHeight: 150, maxWidth: null }), code));
        continue;
      }
      for (const { label, box } of boxes) {
        it(`${input.name} → ${label}`, async () => {
          const result = await engine.resize({ input: input.bytes, format: input.format, ...box });
          const plan = planResize(orientedSize(input.stored, input.orientation), box);
          // jimp decodes the first frame of a GIF only.
          const frames = engineName === 'jimp' ? 1 : input.frames;

          const written = await sharp(result.bytes, { animated: true }).metadata();
          assert.equal(written.format, SHARP_FORMAT[input.format]);
          if (input.format === 'avif') assert.equal(written.compression, 'av1');
          assert.equal(result.format, input.format);
          assert.deepEqual(
            { width: written.width, height: written.pageHeight ?? written.height, frames: written.pages ?? 1 },
            { width: plan.width, height: plan.height, frames },
            'pixels written',
          );
          assert.deepEqual({ width: result.width, height: result.height, frames: result.frames }, { width: plan.width, height: plan.height, frames }, 'reported');
          if (input.alpha) assert.equal(written.hasAlpha, true, 'alpha kept');
          assert.equal(written.orientation, undefined, 'no EXIF orientation left');
          assert.equal(written.exif, undefined, 'no EXIF at all');

          if (input.orientation !== undefined) {
            // Upright: the stored left (red) half is on top, the right (blue) half below.
            const [topRed, , topBlue] = await pixelAt(result.bytes, Math.floor(plan.width / 2), 2);
            const [bottomRed, , bottomBlue] = await pixelAt(result.bytes, Math.floor(plan.width / 2), plan.height - 3);
            assert.ok(topRed > 200 && topBlue < 60, `top is red: ${topRed},${topBlue}`);
            assert.ok(bottomBlue > 200 && bottomRed < 60, `bottom is blue: ${bottomRed},${bottomBlue}`);
          }
        });
      }
    }

    const jpeg = inputs[0];
    assert.ok(jpeg);
    const sos = jpeg.bytes.indexOf(Buffer.from([0xff, 0xda]));
    const scanStart = sos + 2 + jpeg.bytes.readUInt16BE(sos + 2);
    const corruptInputs: Array<[string, Buffer]> = [
      ['JPEG start of image then garbage', Buffer.concat([jpeg.bytes.subarray(0, 20), randomBytes(20_000)])],
      ['JPEG with valid headers then garbage scan data', Buffer.concat([jpeg.bytes.subarray(0, scanStart), randomBytes(20_000)])],
      ['PNG signature then garbage', Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), randomBytes(2_000)])],
    ];
    for (const [name, bytes] of corruptInputs) {
      it(`${name} → bad_image`, () =>
        assertRejects(engine.resize({ input: bytes, format: name.startsWith('PNG') ? 'png' : 'jpeg', maxHeight: 150, maxWidth: 150 }), 'bad_image'));
    }

    it('still answers after the corrupt inputs', async () => {
      const small = inputs[2];
      assert.ok(small);
      const result = await engine.resize({ input: small.bytes, format: 'jpeg', maxHeight: 50, maxWidth: null });
      assert.deepEqual([result.width, result.height], [63, 50]);
    });
  });
}

describe('pixel limit, before decoding', () => {
  for (const engineName of engineNames) {
    it(`${engineName}: 1600×1200 with maxPixels 1 000 000 → too_many_pixels`, async () => {
      const engine = await createEngine(engineName, { ...OPTIONS, concurrency: 1, maxPixels: 1_000_000 });
      try {
        const jpeg = inputs[0];
        assert.ok(jpeg);
        await assertRejects(engine.resize({ input: jpeg.bytes, format: 'jpeg', maxHeight: 150, maxWidth: null }), 'too_many_pixels');
      } finally {
        await engine.close();
      }
    });
  }
});

// ---------------------------------------------------------------------------------
// jimp off the main thread

describe('jimp engine worker pool', () => {
  const largeJpegs: Buffer[] = [];
  before(async () => {
    for (let index = 0; index < 4; index++) largeJpegs.push(await photo(2000, 1500).jpeg({ quality: 90 }).toBuffer());
  });

  it('jobs past the timeout fail with bad_image, and the replaced worker serves the next job', async () => {
    // 38 MP takes jimp many seconds even on a fast idle machine; a 100×80 JPEG, on a new
    // worker (warmed up before it says ready) of a machine busy with other work, far less than 2 s.
    const engine = await createEngine('jimp', { ...OPTIONS, concurrency: 1, timeoutSeconds: 2 });
    try {
      // Noise tiled rather than drawn whole: as much work to decode, a fraction of the time to make.
      const tile = await photo(700, 550).png().toBuffer();
      const large = await sharp({ create: { width: 7000, height: 5500, channels: 3, background: '#6a8caf' } })
        .composite([{ input: tile, tile: true }])
        .jpeg({ quality: 90 })
        .toBuffer();
      // Three in a row: a worker stopped for its time is replaced, never counted as one that cannot start.
      for (let attempt = 0; attempt < 3; attempt++) {
        await assertRejects(engine.resize({ input: large, format: 'jpeg', maxHeight: 150, maxWidth: null }), 'bad_image');
      }
      const small = inputs[2];
      assert.ok(small);
      const result = await engine.resize({ input: small.bytes, format: 'jpeg', maxHeight: 40, maxWidth: null });
      assert.deepEqual([result.width, result.height], [50, 40]);
    } finally {
      await engine.close();
    }
  });

  it('four large JPEGs at once leave the event loop idle; an HTTP server answers meanwhile', async (t) => {
    const engine = await createEngine('jimp', OPTIONS);
    const server = createServer((_request, response) => response.end('pong'));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    try {
      const [first] = largeJpegs;
      assert.ok(first);
      const single = performance.now();
      await engine.resize({ input: first, format: 'jpeg', maxHeight: 250, maxWidth: 250 });
      const singleResizeMs = performance.now() - single;

      const delay = monitorEventLoopDelay({ resolution: 5 });
      delay.enable();
      const utilizationBefore = performance.eventLoopUtilization();
      let resizesDone = false;
      const resizes = Promise.all(largeJpegs.map((input) => engine.resize({ input, format: 'jpeg', maxHeight: 250, maxWidth: 250 }))).finally(() => {
        resizesDone = true;
      });
      const requestStart = performance.now();
      assert.equal(await httpGet(`http://127.0.0.1:${port}/`), 'pong');
      const requestMs = performance.now() - requestStart;
      const answeredDuringResizes = !resizesDone;
      const results = await resizes;
      const utilization = performance.eventLoopUtilization(utilizationBefore).utilization;
      delay.disable();

      const maxStallMs = delay.max / 1e6;
      t.diagnostic(
        `one resize ${singleResizeMs.toFixed(0)} ms; 4 at once: event loop busy ${(utilization * 100).toFixed(0)} % of the time, ` +
          `max stall ${maxStallMs.toFixed(1)} ms, HTTP answer ${requestMs.toFixed(1)} ms`,
      );
      assert.equal(results.length, 4);
      for (const result of results) assert.deepEqual([result.width, result.height], [250, 188]);
      assert.ok(answeredDuringResizes, 'the HTTP request was answered before the resizes finished');
      // Judged by the share of time the main thread's loop was busy, not by stall lengths: a
      // loaded machine delays timers by whole scheduler slices, but a thread descheduled while
      // waiting still counts as idle. Decoding on the main thread would keep it busy throughout.
      assert.ok(utilization < 0.5, `the event loop was busy ${(utilization * 100).toFixed(0)} % of the time while the workers resized`);
    } finally {
      server.close();
      await engine.close();
    }
  });
});
