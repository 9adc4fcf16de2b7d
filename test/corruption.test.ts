/**
 * Corruption found before a visitor sees it, against the whole server (startServer) and a
 * loopback origin that counts its requests, on real files: a stored original overwritten
 * by an HTML page of its exact size, and a thumbnail so overwritten or grown, are refused
 * by the lookup and fetched or made again; 64 KiB of bit rot inside a stored original and
 * inside a thumbnail (right size, right type) are found by one heal pass's sample and
 * moved aside, and the next request fetches or makes them again; the sample verifies no
 * more than its bound a pass and moves its cursor on until the whole tree is covered.
 */
import assert from 'node:assert/strict';
import { lstat, open, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import sharp from 'sharp';
import type { ConfigLayer } from '../server/config/config.js';
import { SHARD_ORDER, parseSampleCursor } from '../server/tree/healSample.js';
import type { RunningServer } from '../server/http/server.js';
import { keyDirectory, storageKey } from '../server/contract/layout.js';
import { sha256Hex, variantRecordOf } from '../server/tree/originals.js';
import { inspectImage } from '../server/images/sniff.js';
import { ImageStore, type ImageMetadata } from '../server/tree/store.js';
import { healCursorPath, verifyTreeSample } from '../server/tree/verify.js';
import { makeTempRoot, removeTempRoot, signedPath, startLoopbackServer } from './helpers.js';
import { startOrigin, type Origin } from './origin.js';

const SECRET = 'corruption-test-secret';
const ROT_BYTES = 64 * 1024;

/** A photo of noise: its JPEG (and its thumbnails) stay large, so 64 KiB of rot fits well inside. */
async function noisePhoto(width: number, height: number, seed: number): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * 3);
  let state = seed;
  for (let index = 0; index < raw.length; index += 1) {
    state = (state * 1103515245 + 12345) & 0x7fffffff;
    raw[index] = state >> 23;
  }
  return sharp(raw, { raw: { width, height, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
}

function startApp(root: string, overrides: ConfigLayer = {}): Promise<RunningServer> {
  // Stored bytes are the origin's: the test compares them.
  return startLoopbackServer(root, SECRET, { stripMetadata: false, healIntervalSeconds: 0, ...overrides });
}

/** Serves `photos` by path; every request counted by the origin. */
function photoOrigin(photos: Record<string, Buffer>): Promise<Origin> {
  return startOrigin((request, response) => {
    const photo = photos[request.url ?? ''];
    if (photo === undefined) response.writeHead(404).end();
    else response.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(photo);
  });
}

function keyDir(root: string, key: string): string {
  return join(root, keyDirectory('i', key));
}

async function quarantined(root: string): Promise<string[]> {
  return (await readdir(join(root, '.imageproxy', 'quarantine', 'i')).catch(() => [])).sort();
}

async function metricsText(app: RunningServer): Promise<string> {
  return (await fetch(`${app.adminUrl}/metrics`)).text();
}

/** Overwrites `length` bytes in the middle of the file with other bytes: size and head unchanged. */
async function rot(path: string, length: number): Promise<void> {
  const bytes = await readFile(path);
  assert.ok(bytes.length > length * 1.5, `a file of ${bytes.length} bytes is too small for ${length} bytes of rot inside it`);
  const start = Math.floor((bytes.length - length) / 2);
  const handle = await open(path, 'r+');
  try {
    const rotten = Buffer.from(bytes.subarray(start, start + length).map((byte) => byte ^ 0x5a));
    await handle.write(rotten, 0, length, start);
  } finally {
    await handle.close();
  }
}

async function answer(app: RunningServer, imageUrl: string, size?: string): Promise<{ status: number; type: string | null; bytes: Buffer }> {
  const response = await fetch(app.url + signedPath({ secret: SECRET, imageUrl, atMs: Date.now(), ...(size === undefined ? {} : { size }) }));
  return { status: response.status, type: response.headers.get('content-type'), bytes: Buffer.from(await response.arrayBuffer()) };
}

describe('the lookup refuses a stored file that is not what its record says', () => {
  test('an original overwritten by HTML of its exact size is never served: moved aside and fetched again', async () => {
    const root = await makeTempRoot('imageproxy-corrupt-');
    const photo = await noisePhoto(120, 90, 1);
    const origin = await photoOrigin({ '/photo.jpg': photo });
    const app = await startApp(root);
    try {
      const imageUrl = origin.url('/photo.jpg').href;
      const key = storageKey(Buffer.from(imageUrl));
      const first = await answer(app, imageUrl);
      assert.equal(first.status, 200);
      assert.ok(first.bytes.equals(photo), 'first answer: the origin bytes');
      assert.equal(origin.requests.length, 1);

      const stored = join(keyDir(root, key), `${key}.jpg`);
      const page = Buffer.alloc(photo.length, ' ');
      page.write('<!doctype html><html><body>502 Bad Gateway</body></html>');
      await writeFile(stored, page);

      const second = await answer(app, imageUrl);
      assert.equal(second.status, 200);
      assert.equal(second.type, 'image/jpeg');
      assert.ok(second.bytes.equals(photo), 'second answer: the origin bytes again, not the page');
      assert.equal(origin.requests.length, 2, 'fetched again');
      assert.ok((await readFile(stored)).equals(photo), 'the tree holds the image again');
      const aside = await quarantined(root);
      assert.deepEqual(aside.map((name) => name.split('.').slice(0, 2).join('.')), [`${key}.jpg`, `${key}.json`]);
      const pageAside = await readFile(join(root, '.imageproxy', 'quarantine', 'i', aside[0] as string));
      assert.ok(pageAside.equals(page), 'the page is kept in the quarantine');
      assert.match(await metricsText(app), /^imageproxy_damaged_files_total\{found_by="lookup",kind="original"\} 1$/m);
    } finally {
      await app.close();
      await origin.close();
      await removeTempRoot(root);
    }
  });

  test('a thumbnail is recorded when made; overwritten by HTML of its size, or grown, it is made again without a fetch', async () => {
    const root = await makeTempRoot('imageproxy-corrupt-');
    const photo = await noisePhoto(300, 200, 2);
    const origin = await photoOrigin({ '/photo.jpg': photo });
    const app = await startApp(root);
    try {
      const imageUrl = origin.url('/photo.jpg').href;
      const key = storageKey(Buffer.from(imageUrl));
      const made = await answer(app, imageUrl, '150x');
      assert.equal(made.status, 200);
      const thumbnail = join(keyDir(root, key), `${key}.150x.jpg`);
      const sidecar = JSON.parse(await readFile(join(keyDir(root, key), `${key}.json`), 'utf8')) as ImageMetadata;
      assert.deepEqual(sidecar.variants, { '150x': variantRecordOf(made.bytes, 'image/jpeg') }, 'the record: size, sha256 and type of the bytes served');

      const page = Buffer.alloc(made.bytes.length, ' ');
      page.write('<html>not a thumbnail</html>');
      await writeFile(thumbnail, page);
      const remade = await answer(app, imageUrl, '150x');
      assert.equal(remade.status, 200);
      assert.equal(remade.type, 'image/jpeg');
      assert.equal(sha256Hex(remade.bytes), sha256Hex(made.bytes), 'the same thumbnail, made again');

      await writeFile(thumbnail, Buffer.concat([made.bytes, Buffer.from('trailing')]));
      const again = await answer(app, imageUrl, '150x');
      assert.equal(again.status, 200);
      assert.equal(sha256Hex(again.bytes), sha256Hex(made.bytes));
      assert.equal(sha256Hex(await readFile(thumbnail)), sha256Hex(made.bytes), 'the tree holds the thumbnail as recorded');

      assert.equal(origin.requests.length, 1, 'made from the stored original: nothing fetched again');
      assert.equal((await quarantined(root)).filter((name) => name.startsWith(`${key}.150x.jpg.`)).length, 2);
      assert.match(await metricsText(app), /^imageproxy_damaged_files_total\{found_by="lookup",kind="thumbnail"\} 2$/m);
    } finally {
      await app.close();
      await origin.close();
      await removeTempRoot(root);
    }
  });
  test('a symlink planted at an original\'s name is not followed: moved aside and the image fetched again', async () => {
    const root = await makeTempRoot('imageproxy-corrupt-');
    const photo = await noisePhoto(60, 40, 5);
    const origin = await photoOrigin({ '/photo.jpg': photo });
    const app = await startApp(root);
    try {
      const imageUrl = origin.url('/photo.jpg').href;
      const key = storageKey(Buffer.from(imageUrl));
      assert.equal((await answer(app, imageUrl)).status, 200);
      const stored = join(keyDir(root, key), `${key}.jpg`);
      // Another JPEG of the same size elsewhere: only the symlink makes it wrong.
      const elsewhere = join(root, 'elsewhere.jpg');
      await writeFile(elsewhere, photo);
      await rm(stored);
      await symlink(elsewhere, stored);
      const second = await answer(app, imageUrl);
      assert.equal(second.status, 200);
      assert.ok(second.bytes.equals(photo));
      assert.equal(origin.requests.length, 2, 'fetched again');
      assert.equal((await lstat(stored)).isSymbolicLink(), false, 'a regular file in its place');
    } finally {
      await app.close();
      await origin.close();
      await removeTempRoot(root);
    }
  });
});

describe('variant records', () => {
  test('thumbnails of one key recorded at once all land in its sidecar, every other field kept; no sidecar: nothing recorded', async () => {
    const root = await makeTempRoot('imageproxy-corrupt-');
    const store = new ImageStore(root);
    try {
      const key = storageKey(Buffer.from('https://example.org/records.jpg'));
      const bytes = await noisePhoto(40, 30, 6);
      const info = inspectImage(bytes);
      assert.ok(info !== null);
      await store.storeOriginal('i', key, { ...info, bytes }, { sourceUrl: 'https://example.org/records.jpg', originContentType: 'image/jpeg', fetchedAt: '2026-01-01T00:00:00.000Z' });
      const before = JSON.parse(await readFile(join(keyDir(root, key), `${key}.json`), 'utf8')) as ImageMetadata;
      const labels = ['150x', 'x200', '250x250', '500x500'];
      const records = labels.map((label) => [label, variantRecordOf(Buffer.from(label), 'image/webp')] as const);
      const written = await Promise.all(records.map(([label, record]) => store.recordVariant('i', key, label, record)));
      assert.deepEqual(written, [true, true, true, true]);
      const after = JSON.parse(await readFile(join(keyDir(root, key), `${key}.json`), 'utf8')) as ImageMetadata;
      assert.deepEqual(after, { ...before, variants: Object.fromEntries(records) });

      const bare = storageKey(Buffer.from('https://example.org/no-sidecar.jpg'));
      await store.storeImage('i', bare, null, 'jpg', bytes);
      assert.equal(await store.recordVariant('i', bare, '150x', variantRecordOf(bytes, 'image/jpeg')), false);
      assert.deepEqual((await readdir(keyDir(root, bare))).filter((name) => name.startsWith(bare)), [`${bare}.jpg`], 'no sidecar made for it');
    } finally {
      await removeTempRoot(root);
    }
  });
});

describe("the heal pass's sample", () => {
  test('64 KiB of bit rot inside an original and inside a thumbnail: found by one pass, moved aside, fetched or made again on the next request', async () => {
    const root = await makeTempRoot('imageproxy-corrupt-');
    const photos = { '/rotten.jpg': await noisePhoto(800, 600, 3), '/sound.jpg': await noisePhoto(800, 600, 4) };
    const origin = await photoOrigin(photos);
    const rottenUrl = origin.url('/rotten.jpg').href;
    const soundUrl = origin.url('/sound.jpg').href;
    const rottenKey = storageKey(Buffer.from(rottenUrl));
    const soundKey = storageKey(Buffer.from(soundUrl));
    const original = join(keyDir(root, rottenKey), `${rottenKey}.jpg`);
    const thumbnail = join(keyDir(root, soundKey), `${soundKey}.500x500.jpg`);
    // Quality 100: the thumbnail of noise keeps well over 64 KiB.
    const quality = { quality: { jpeg: 100 } };
    let app: RunningServer | null = null;
    try {
      const filling = await startApp(root, quality);
      let thumbnailBefore: Buffer;
      try {
        assert.equal((await answer(filling, rottenUrl)).status, 200);
        const made = await answer(filling, soundUrl, '500x500');
        assert.equal(made.status, 200);
        thumbnailBefore = made.bytes;
      } finally {
        await filling.close();
      }
      const countOf = (path: string) => origin.requests.filter((request) => request.url === path).length;
      assert.deepEqual([countOf('/rotten.jpg'), countOf('/sound.jpg')], [1, 1]);
      await rot(original, ROT_BYTES);
      await rot(thumbnail, ROT_BYTES);

      app = await startApp(root, { ...quality, healIntervalSeconds: 3600, healVerifyPerPass: 100 });
      await app.firstHeal;
      const aside = await quarantined(root);
      assert.ok(aside.some((name) => name.startsWith(`${rottenKey}.jpg.`)), 'the rotten original moved aside');
      assert.ok(aside.some((name) => name.startsWith(`${soundKey}.500x500.jpg.`)), 'the rotten thumbnail moved aside');
      assert.equal(aside.some((name) => name.startsWith(`${soundKey}.jpg.`)), false, 'the sound original stays');
      const metrics = await metricsText(app);
      assert.match(metrics, /^imageproxy_damaged_files_total\{found_by="heal",kind="original"\} 1$/m);
      assert.match(metrics, /^imageproxy_damaged_files_total\{found_by="heal",kind="thumbnail"\} 1$/m);

      const refetched = await answer(app, rottenUrl);
      assert.equal(refetched.status, 200);
      assert.ok(refetched.bytes.equals(photos['/rotten.jpg']), 'the origin bytes again');
      const remade = await answer(app, soundUrl, '500x500');
      assert.equal(remade.status, 200);
      assert.equal(sha256Hex(remade.bytes), sha256Hex(thumbnailBefore), 'the thumbnail as it was made first');
      assert.deepEqual([countOf('/rotten.jpg'), countOf('/sound.jpg')], [2, 1], 'the original fetched again; the thumbnail made from its stored original');
    } finally {
      await app?.close();
      await origin.close();
      await removeTempRoot(root);
    }
  });

  test('a pass verifies at most its bound, the cursor moves on, and the tree is covered in ⌈N / bound⌉ passes; unrecorded thumbnails are decoded and recorded', async () => {
    const root = await makeTempRoot('imageproxy-corrupt-');
    const store = new ImageStore(root);
    try {
      // 8 originals with sidecars, and a thumbnail without a record (an older tree) for 4 of them: 12 images.
      const images: Array<{ shard: string; name: string }> = [];
      for (let index = 0; index < 8; index += 1) {
        const key = storageKey(Buffer.from(`https://example.org/${index}.jpg`));
        const bytes = await sharp({ create: { width: 40, height: 30, channels: 3, background: { r: index * 20, g: 90, b: 30 } } }).jpeg().toBuffer();
        const info = inspectImage(bytes);
        assert.ok(info !== null);
        await store.storeOriginal('i', key, { ...info, bytes }, { sourceUrl: `https://example.org/${index}.jpg`, originContentType: 'image/jpeg', fetchedAt: new Date().toISOString() });
        images.push({ shard: `${key[0]}/${key[1]}`, name: `${key}.jpg` });
        if (index % 2 === 0) {
          await store.storeImage('i', key, '150x', 'jpg', await sharp(bytes).resize(20).jpeg().toBuffer());
          images.push({ shard: `${key[0]}/${key[1]}`, name: `${key}.150x.jpg` });
        }
      }
      const order = (image: { shard: string; name: string }) => `${String(SHARD_ORDER.indexOf(image.shard)).padStart(4, '0')}/${image.name}`;
      images.sort((a, b) => (order(a) < order(b) ? -1 : 1));
      // Rot in the last image of the order: only the pass that reaches it finds it.
      const last = images[images.length - 1] as { shard: string; name: string };
      const lastPath = join(root, 'i', last.shard, last.name);
      const lastBytes = await readFile(lastPath);
      lastBytes[lastBytes.length - 10] = (lastBytes[lastBytes.length - 10] as number) ^ 0xff;
      await writeFile(lastPath, lastBytes);

      const found: string[] = [];
      const pass = () => verifyTreeSample({ root, buckets: ['i'], limit: 5, onFinding: (report) => found.push(report.relativePath) });
      const first = await pass();
      assert.deepEqual([first.verified, first.wrapped], [5, false]);
      const cursor = parseSampleCursor(await readFile(healCursorPath(root), 'utf8'));
      assert.deepEqual(cursor, { bucket: 'i', ...(images[4] as { shard: string; name: string }) }, 'the cursor on the fifth image of the order');
      const second = await pass();
      assert.deepEqual([second.verified, second.wrapped], [5, false]);
      assert.deepEqual(found, [], 'the rot lies beyond the first ten');
      const third = await pass();
      assert.deepEqual([third.verified, third.wrapped], [2, true]);
      assert.deepEqual(found, [`i/${last.shard}/${last.name}`]);
      assert.equal(parseSampleCursor(await readFile(healCursorPath(root), 'utf8')), null, 'the next pass starts over');
      assert.equal(first.recorded + second.recorded + third.recorded, 4 - (last.name.includes('.150x.') ? 1 : 0), 'each sound thumbnail without a record decoded and recorded');
      const fourth = await pass();
      assert.equal(fourth.verified, 5, 'starting over');
      assert.equal(fourth.recorded, 0, 'recorded thumbnails are now hashed, not decoded');
    } finally {
      await removeTempRoot(root);
    }
  });
});
