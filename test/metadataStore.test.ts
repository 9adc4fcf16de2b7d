/**
 * Metadata stripping through the whole server: a loopback origin serves camera photos
 * (GPS, serial, owner, XMP, ICC, orientation 6); what lands on disk carries none of the
 * identifying metadata, decodes to the origin's pixels, and its thumbnails (sharp and
 * jimp) are upright without EXIF or XMP. With `stripMetadata: false` the stored bytes are
 * the origin's bytes.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import sharp from 'sharp';
import { buildConfig, type ConfigLayer } from '../server/config/config.js';
import { startServer } from '../server/http/server.js';
import { keyDirectory, storageKey } from '../server/contract/layout.js';
import { makeTempRoot, removeTempRoot, signedPath } from './helpers.js';
import { startOrigin } from './origin.js';

const SECRET = 'strip-test-secret';
const SERIAL = 'SN-12345678';
const OWNER = 'Jane Owner';
const XMP = `<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:rights>${OWNER}</dc:rights></rdf:Description></rdf:RDF></x:xmpmeta>`;
const EXIF = {
  IFD0: { Make: 'Cam', Artist: OWNER },
  IFD2: { BodySerialNumber: SERIAL },
  IFD3: { GPSLatitudeRef: 'N', GPSLatitude: '52/1 31/1 12/1', GPSLongitudeRef: 'E', GPSLongitude: '13/1 24/1 0/1' },
};

/** Stored landscape 800×600, left half red: tagged orientation 6 it is upright 600×800, red on top. */
async function photo(format: 'jpeg' | 'png' | 'webp', orientation = 6): Promise<Buffer> {
  const red = await sharp({ create: { width: 400, height: 600, channels: 3, background: '#ff0000' } }).png().toBuffer();
  const pixels = await sharp({ create: { width: 800, height: 600, channels: 3, background: '#3366cc', noise: { type: 'gaussian', mean: 128, sigma: 20 } } })
    .composite([{ input: red, left: 0, top: 0 }])
    .png()
    .toBuffer();
  const tagged = sharp(pixels).withIccProfile('p3').withExif(EXIF).withXmp(XMP).withMetadata({ orientation });
  return tagged.toFormat(format).toBuffer();
}

const EXTENSIONS = { jpeg: 'jpg', png: 'png', webp: 'webp' } as const;

/** One server run: origin serving `body`, fresh root, optional log capture; returns what the test needs. */
async function withServer(
  body: Buffer,
  config: ConfigLayer,
  run: (context: { imageUrl: string; get: (size?: string) => Promise<Response>; getProxy: () => Promise<Response>; stored: (ext: string) => Promise<Buffer>; logs: () => Array<Record<string, unknown>> }) => Promise<void>,
): Promise<void> {
  const origin = await startOrigin((_request, response) => response.writeHead(200, { 'Content-Type': 'application/octet-stream' }).end(body));
  const root = await makeTempRoot('imageproxy-strip-');
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter((line) => line !== ''));
      done();
    },
  });
  const resolved = buildConfig({ flags: { listen: '127.0.0.1:0', admin: { listen: null }, root, secrets: [SECRET], allowPrivateNetworks: true, logLevel: 'debug', ...config } });
  const app = await startServer({ config: resolved, secrets: resolved.secrets, logger: pino({ level: 'debug' }, sink) });
  const imageUrl = origin.url('/photo').href;
  const key = storageKey(Buffer.from(imageUrl));
  try {
    await run({
      imageUrl,
      get: (size) => fetch(app.url + signedPath({ secret: SECRET, imageUrl, atMs: Date.now(), ...(size === undefined ? {} : { size }) })),
      getProxy: () => fetch(app.url + signedPath({ secret: SECRET, imageUrl, atMs: Date.now(), proxy: true })),
      stored: (ext) => readFile(join(root, keyDirectory('i', key), `${key}.${ext}`)),
      logs: () => lines.map((line) => JSON.parse(line) as Record<string, unknown>),
    });
  } finally {
    await app.close();
    await origin.close();
    await removeTempRoot(root);
  }
}

async function rawPixels(bytes: Buffer): Promise<Buffer> {
  return sharp(bytes).raw().toBuffer();
}

function assertNothingIdentifying(bytes: Buffer): void {
  assert.equal(bytes.includes(SERIAL), false, 'camera serial left');
  assert.equal(bytes.includes(OWNER), false, 'owner name left');
  assert.equal(bytes.includes('xmpmeta'), false, 'XMP left');
}

describe('stored originals carry no identifying metadata', () => {
  for (const format of ['jpeg', 'png', 'webp'] as const) {
    test(`${format}: stored without GPS/serial/XMP, same pixels, ICC and orientation kept; thumbnail upright without EXIF`, async () => {
      const input = await photo(format);
      const before = await sharp(input).metadata();
      assert.ok(input.includes(SERIAL) && before.xmp !== undefined && before.icc !== undefined, 'fixture carries serial, XMP and ICC');
      await withServer(input, {}, async ({ get, stored, logs }) => {
        const full = await get();
        assert.equal(full.status, 200);
        const served = Buffer.from(await full.arrayBuffer());
        const onDisk = await stored(EXTENSIONS[format]);
        assert.ok(served.equals(onDisk));
        assertNothingIdentifying(onDisk);
        const after = await sharp(onDisk).metadata();
        assert.equal(after.xmp, undefined);
        assert.equal(after.orientation, 6);
        assert.ok(after.exif !== undefined && after.exif.length <= 32, `EXIF of ${after.exif?.length} bytes: orientation only`);
        assert.ok(after.icc?.equals(before.icc ?? Buffer.alloc(0)), 'ICC profile kept');
        assert.ok((await rawPixels(onDisk)).equals(await rawPixels(input)), 'decoded pixels identical to the origin’s');

        const thumb = await get('250x250');
        assert.equal(thumb.status, 200);
        const thumbBytes = Buffer.from(await thumb.arrayBuffer());
        const thumbMeta = await sharp(thumbBytes).metadata();
        assert.deepEqual([thumbMeta.width, thumbMeta.height], [188, 250], 'upright: portrait');
        assert.equal(thumbMeta.exif, undefined);
        assert.equal(thumbMeta.xmp, undefined);
        assert.equal(thumbMeta.orientation, undefined);
        const { data } = await sharp(thumbBytes).raw().toBuffer({ resolveWithObject: true });
        assert.ok((data[0] as number) > 200 && (data[2] as number) < 80, `top left is red: ${[...data.subarray(0, 3)].join(',')}`);

        const stripped = logs().find((line) => line.msg === 'metadata stripped');
        assert.ok(stripped !== undefined, 'debug log line names what was removed');
        assert.ok(Array.isArray(stripped.removed) && stripped.removed.length >= 2);
      });
    });
  }

  test('/proxy passes the image through stripped as well: no serial, owner or XMP, same pixels, nothing stored', async () => {
    const input = await photo('jpeg');
    await withServer(input, {}, async ({ getProxy, stored }) => {
      const answer = await getProxy();
      assert.equal(answer.status, 200);
      const served = Buffer.from(await answer.arrayBuffer());
      assertNothingIdentifying(served);
      assert.equal((await sharp(served).metadata()).orientation, 6);
      assert.ok((await rawPixels(served)).equals(await rawPixels(input)), 'decoded pixels identical to the origin’s');
      await assert.rejects(stored('jpg'), { code: 'ENOENT' });
    });
  });

  test('jimp engine: the thumbnail of an orientation-6 JPEG is upright and carries no EXIF', async () => {
    await withServer(await photo('jpeg'), { engine: 'jimp' }, async ({ get }) => {
      const thumb = await get('250x250');
      assert.equal(thumb.status, 200);
      const thumbBytes = Buffer.from(await thumb.arrayBuffer());
      const meta = await sharp(thumbBytes).metadata();
      assert.deepEqual([meta.width, meta.height], [188, 250]);
      assert.equal(meta.exif, undefined);
      assert.equal(meta.xmp, undefined);
      assertNothingIdentifying(thumbBytes);
      const { data } = await sharp(thumbBytes).raw().toBuffer({ resolveWithObject: true });
      assert.ok((data[0] as number) > 200 && (data[2] as number) < 80, `top left is red: ${[...data.subarray(0, 3)].join(',')}`);
    });
  });

  test('stripMetadata false: the stored original is the origin’s bytes exactly', async () => {
    const input = await photo('jpeg');
    await withServer(input, { stripMetadata: false }, async ({ get, stored }) => {
      assert.equal((await get()).status, 200);
      assert.ok((await stored('jpg')).equals(input));
    });
  });

  test('a malformed EXIF block: stored unchanged, a warning says why', async () => {
    const input = Buffer.from(await photo('jpeg', 1));
    const app1 = input.indexOf(Buffer.from([0xff, 0xe1]));
    input.write('XX', app1 + 10, 'latin1'); // TIFF byte order: neither II nor MM
    await withServer(input, {}, async ({ get, stored, logs }) => {
      assert.equal((await get()).status, 200);
      assert.ok((await stored('jpg')).equals(input));
      const warning = logs().find((line) => line.msg === 'metadata not stripped; kept as fetched');
      assert.ok(warning !== undefined);
      assert.equal(warning.level, 40);
      assert.match(String(warning.reason), /byte order/);
    });
  });
});
