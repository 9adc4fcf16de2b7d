/**
 * Thumbnails in AVIF or WebP for the clients whose `Accept` lists them (config `formats`,
 * issue 20), through the whole server in-process against real origins on 127.0.0.1 and
 * real temp roots: what real browsers' Accept strings get (Content-Type, bytes that decode
 * to the thumbnail's size), `Vary: Accept` on every answer of a negotiated link, alpha and
 * animation kept, a class that gets the source format hard-linked to it, one file per
 * (size, class) and one origin fetch whatever the Accept strings, the X-Accel-Redirect
 * mode naming the class's file, and nothing changed with `formats` off.
 */
import assert from 'node:assert/strict';
import { readdir, stat } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { keyDirectory, storageKey } from '../server/contract/layout.js';
import type { RunningServer } from '../server/http/server.js';
import { IMAGE_CACHE_CONTROL } from '../server/http/responseHeaders.js';
import { loopbackConfig, makeTempRoot, removeTempRoot, request, scrapeMetrics, shortBody, signedPath, startLoopbackServer, type Answer } from './helpers.js';
import { startOrigin, type Origin } from './origin.js';

const SECRET = 'formats-service-secret';

/** What real clients send for an `<img>`, and the class each gets with formats ["avif", "webp"]. */
const CLIENTS: ReadonlyArray<{ client: string; accept: string | null; type: 'image/avif' | 'image/webp' | 'source' }> = [
  { client: 'Chrome', accept: 'image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8', type: 'image/avif' },
  { client: 'Firefox (current)', accept: 'image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5', type: 'image/avif' },
  { client: 'Firefox 65-91', accept: 'image/webp,*/*', type: 'image/webp' },
  {
    client: 'Safari 16',
    accept: 'image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5',
    type: 'image/avif',
  },
  { client: 'Safari 13', accept: 'image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5', type: 'source' },
  { client: 'old Edge', accept: 'image/png, image/svg+xml, image/*; q=0.8, */*; q=0.5', type: 'source' },
  { client: 'curl', accept: '*/*', type: 'source' },
  { client: 'image/*', accept: 'image/*', type: 'source' },
  { client: 'AVIF refused by q=0', accept: 'image/avif;q=0,image/webp', type: 'image/webp' },
  { client: 'garbage', accept: 'image/avif;q=high,,;=;', type: 'source' },
  { client: 'no Accept', accept: null, type: 'source' },
];

const CHROME = CLIENTS[0]?.accept ?? '';
const FIREFOX_WEBP = 'image/webp,*/*';

/** A photo-like JPEG (blurred noise): 800×600, so a 250x250 thumbnail is 250×188. */
async function photoJpeg(): Promise<Buffer> {
  return sharp({ create: { width: 800, height: 600, channels: 3, background: '#446688', noise: { type: 'gaussian', mean: 128, sigma: 30 } } })
    .blur(2)
    .jpeg({ quality: 90 })
    .toBuffer();
}

/** 400×300, left half fully transparent, right half opaque red over noise. */
async function transparentPng(): Promise<Buffer> {
  const opaque = await sharp({ create: { width: 200, height: 300, channels: 4, background: { r: 220, g: 30, b: 30, alpha: 1 } } }).png().toBuffer();
  return sharp({ create: { width: 400, height: 300, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } })
    .composite([{ input: opaque, left: 200, top: 0 }])
    .png()
    .toBuffer();
}

const FRAME_DELAYS = [100, 200, 300];

/** A 3-frame 300×200 GIF with delays 100, 200, 300 ms. */
async function animatedGif(): Promise<Buffer> {
  const colours = ['#dc1414', '#14c814', '#1414dc'];
  const frames = await Promise.all(
    colours.map((colour, index) =>
      sharp(Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="300" height="200"><rect width="300" height="200" fill="${colour}"/><circle cx="${60 + index * 90}" cy="100" r="40" fill="#fff"/></svg>`))
        .png()
        .toBuffer(),
    ),
  );
  return sharp(frames, { join: { animated: true } }).gif({ delay: FRAME_DELAYS, loop: 0 }).toBuffer();
}

/** 16×16 of one colour: as AVIF larger than as PNG, so the AVIF class gets the PNG. */
async function tinyFlatPng(): Promise<Buffer> {
  return sharp({ create: { width: 16, height: 16, channels: 3, background: '#3366aa' } }).png().toBuffer();
}

const CONTENT_TYPES: Record<string, string> = { '.jpg': 'image/jpeg', '.png': 'image/png', '.gif': 'image/gif' };

let origin: Origin;
const originBodies = new Map<string, Buffer>();

/** Origin requests for `path` so far. */
function fetchesOf(path: string): number {
  return origin.requests.filter((incoming) => incoming.url === path).length;
}

function imageUrlOf(path: string): string {
  return origin.url(path).href;
}

function linkOf(path: string, options: { size?: string; proxy?: boolean } = {}): string {
  return signedPath({ secret: SECRET, imageUrl: imageUrlOf(path), atMs: Date.now(), ...options });
}

function keyOf(path: string): string {
  return storageKey(Buffer.from(imageUrlOf(path)));
}

async function get(server: RunningServer, path: string, accept: string | null, extra: Record<string, string> = {}, method = 'GET'): Promise<Answer> {
  return request(server.url, path, { method, headers: { ...(accept === null ? {} : { Accept: accept }), ...extra } });
}

function assertImageAnswer(answer: Answer, what: string): void {
  assert.equal(answer.status, 200, `${what}: ${answer.status} ${shortBody(answer.body, answer.headers.get('content-type'))}`);
}

/** The files of a key's directory, sorted. */
async function keyFiles(root: string, path: string): Promise<string[]> {
  const key = keyOf(path);
  return (await readdir(join(root, keyDirectory('i', key)))).filter((name) => name.startsWith(key)).sort();
}

async function inodeOf(root: string, path: string, name: string): Promise<number> {
  return (await stat(join(root, keyDirectory('i', keyOf(path)), name))).ino;
}

before(async () => {
  originBodies.set('/photo.jpg', await photoJpeg());
  originBodies.set('/alpha.png', await transparentPng());
  originBodies.set('/anim.gif', await animatedGif());
  originBodies.set('/flat.png', await tinyFlatPng());
  for (let index = 0; index < 3; index += 1) originBodies.set(`/crowd${index}.jpg`, await photoJpeg());
  origin = await startOrigin((incoming, response) => {
    const path = incoming.url ?? '/';
    const body = originBodies.get(path);
    if (body === undefined) {
      response.writeHead(404, { 'Content-Type': 'text/plain' }).end('not here');
      return;
    }
    response.writeHead(200, { 'Content-Type': CONTENT_TYPES[path.slice(path.lastIndexOf('.'))] ?? 'application/octet-stream' }).end(body);
  });
});

after(async () => {
  await origin.close();
});

describe('formats ["avif", "webp"], the app sending the bytes', () => {
  let root: string;
  let server: RunningServer;

  before(async () => {
    root = await makeTempRoot('imageproxy-formats-');
    server = await startLoopbackServer(root, SECRET, { formats: ['avif', 'webp'] });
  });

  after(async () => {
    await server.close();
    await removeTempRoot(root);
  });

  it("real browsers' Accept strings: the type each gets, Vary and a week's Cache-Control on every answer, bytes of the thumbnail's size; one fetch", async () => {
    const link = linkOf('/photo.jpg', { size: '250x250' });
    for (const { client, accept, type } of CLIENTS) {
      for (const round of ['miss or first', 'hit']) {
        const answer = await get(server, link, accept);
        const what = `${client} (${round})`;
        assertImageAnswer(answer, what);
        const expectedType = type === 'source' ? 'image/jpeg' : type;
        assert.equal(answer.headers.get('content-type'), expectedType, what);
        assert.equal(answer.headers.get('vary'), 'Accept', what);
        assert.equal(answer.headers.get('cache-control'), IMAGE_CACHE_CONTROL, what);
        const decoded = await sharp(answer.body).metadata();
        assert.equal(decoded.format, { 'image/jpeg': 'jpeg', 'image/avif': 'heif', 'image/webp': 'webp' }[expectedType], what);
        assert.deepEqual([decoded.width, decoded.height], [250, 188], what);
      }
    }
    assert.equal(fetchesOf('/photo.jpg'), 1, 'one origin fetch for every class');
    const key = keyOf('/photo.jpg');
    assert.deepEqual(await keyFiles(root, '/photo.jpg'), [`${key}.250x250.avif.avif`, `${key}.250x250.jpg`, `${key}.250x250.webp.webp`, `${key}.jpg`, `${key}.json`]);
  });

  it('two Accept headers: the class of the first, as nginx ($http_accept) picks it; the file nginx will look for is made', async () => {
    originBodies.set('/two-accepts.jpg', await photoJpeg());
    const link = linkOf('/two-accepts.jpg', { size: '250x250' });
    const { port } = new URL(server.url);
    const answer = await new Promise<{ status: number; type: string | undefined; vary: string | undefined }>((resolve, reject) => {
      // Raw headers, in order: a Headers object (fetch) would join the two into one.
      const outgoing = http.request({ host: '127.0.0.1', port, path: link, headers: ['Host', `127.0.0.1:${port}`, 'Accept', FIREFOX_WEBP, 'Accept', 'image/avif,*/*'] }, (incoming) => {
        incoming.resume();
        incoming.on('end', () => resolve({ status: incoming.statusCode ?? 0, type: incoming.headers['content-type'], vary: incoming.headers.vary }));
      });
      outgoing.on('error', reject);
      outgoing.end();
    });
    assert.deepEqual(answer, { status: 200, type: 'image/webp', vary: 'Accept' });
    const key = keyOf('/two-accepts.jpg');
    assert.deepEqual(await keyFiles(root, '/two-accepts.jpg'), [`${key}.250x250.jpg`, `${key}.250x250.webp.webp`, `${key}.jpg`, `${key}.json`]);
  });

  it('a stored class file answers conditional and HEAD requests with Vary (304 included)', async () => {
    const link = linkOf('/photo.jpg', { size: '250x250' });
    const first = await get(server, link, CHROME);
    assertImageAnswer(first, 'Chrome');
    const etag = first.headers.get('etag');
    assert.ok(etag !== null);
    const revalidated = await get(server, link, CHROME, { 'If-None-Match': etag });
    assert.equal(revalidated.status, 304);
    assert.equal(revalidated.headers.get('vary'), 'Accept');
    assert.equal(revalidated.headers.get('cache-control'), IMAGE_CACHE_CONTROL);
    const ranged = await get(server, link, CHROME, { Range: 'bytes=0-9' });
    assert.equal(ranged.status, 206);
    assert.equal(ranged.headers.get('vary'), 'Accept');
    assert.equal(ranged.headers.get('content-type'), 'image/avif');
    const head = await get(server, link, FIREFOX_WEBP, {}, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-type'), 'image/webp');
    assert.equal(head.headers.get('vary'), 'Accept');
  });

  it('full-size and /proxy links are not negotiated: the origin\'s type, no Vary', async () => {
    for (const options of [{}, { proxy: true }]) {
      const answer = await get(server, linkOf('/photo.jpg', options), CHROME);
      assertImageAnswer(answer, JSON.stringify(options));
      assert.equal(answer.headers.get('content-type'), 'image/jpeg');
      assert.equal(answer.headers.get('vary'), null, JSON.stringify(options));
    }
  });

  it('an error answer of a negotiated link is unchanged: no Vary', async () => {
    const answer = await get(server, linkOf('/missing.jpg', { size: '250x250' }), CHROME);
    assert.equal(answer.status, 502);
    assert.equal(answer.headers.get('vary'), null);
    assert.equal(answer.headers.get('cache-control'), 'no-store');
  });

  it('a transparent PNG keeps its alpha as AVIF and as WebP', async () => {
    const link = linkOf('/alpha.png', { size: '200x200' });
    for (const [accept, format] of [[CHROME, 'heif'], [FIREFOX_WEBP, 'webp']] as const) {
      const answer = await get(server, link, accept);
      assertImageAnswer(answer, format);
      assert.equal(answer.headers.get('vary'), 'Accept');
      const image = sharp(answer.body);
      const header = await image.metadata();
      assert.deepEqual([header.format, header.width, header.height, header.hasAlpha], [format, 200, 150, true]);
      const { data, info } = await image.ensureAlpha().raw().toBuffer({ resolveWithObject: true });
      const alphaAt = (x: number, y: number): number => data[(y * info.width + x) * 4 + 3] ?? -1;
      assert.equal(alphaAt(20, 75), 0, `${format}: a transparent pixel stays transparent`);
      assert.equal(alphaAt(180, 75), 255, `${format}: an opaque pixel stays opaque`);
    }
  });

  it('an animated GIF: WebP keeps every frame and delay; the AVIF class gets the GIF, hard-linked', async () => {
    const link = linkOf('/anim.gif', { size: '150x150' });
    const webp = await get(server, link, FIREFOX_WEBP);
    assertImageAnswer(webp, 'webp class');
    assert.equal(webp.headers.get('content-type'), 'image/webp');
    const webpHeader = await sharp(webp.body, { animated: true }).metadata();
    assert.deepEqual([webpHeader.format, webpHeader.width, webpHeader.pageHeight, webpHeader.pages], ['webp', 150, 100, 3]);
    assert.deepEqual(webpHeader.delay, FRAME_DELAYS);

    const avif = await get(server, link, CHROME);
    assertImageAnswer(avif, 'avif class');
    assert.equal(avif.headers.get('content-type'), 'image/gif');
    assert.equal(avif.headers.get('vary'), 'Accept');
    const gifHeader = await sharp(avif.body, { animated: true }).metadata();
    assert.deepEqual([gifHeader.format, gifHeader.width, gifHeader.pageHeight, gifHeader.pages], ['gif', 150, 100, 3]);
    const key = keyOf('/anim.gif');
    assert.equal(await inodeOf(root, '/anim.gif', `${key}.150x150.avif.gif`), await inodeOf(root, '/anim.gif', `${key}.150x150.gif`), 'a hard link of the source-format thumbnail');
    const again = await get(server, link, CHROME);
    assert.equal(again.headers.get('content-type'), 'image/gif');
    assert.ok(again.body.equals(avif.body), 'the same bytes again');
    assert.equal(fetchesOf('/anim.gif'), 1);
  });

  it('a tiny flat image whose AVIF is larger: the AVIF class gets the PNG bytes, the same inode; WebP, smaller, its own file', async () => {
    const link = linkOf('/flat.png', { size: '150x150' });
    const source = await get(server, link, '*/*');
    assertImageAnswer(source, 'source');
    const avif = await get(server, link, CHROME);
    assertImageAnswer(avif, 'avif class');
    assert.equal(avif.headers.get('content-type'), 'image/png');
    assert.equal(avif.headers.get('vary'), 'Accept');
    assert.ok(avif.body.equals(source.body), 'the source-format thumbnail, byte for byte');
    const key = keyOf('/flat.png');
    assert.equal(await inodeOf(root, '/flat.png', `${key}.150x150.avif.png`), await inodeOf(root, '/flat.png', `${key}.150x150.png`));
    const webp = await get(server, link, FIREFOX_WEBP);
    assert.equal(webp.headers.get('content-type'), 'image/webp');
    assert.ok(webp.body.length < source.body.length);
    assert.deepEqual(await keyFiles(root, '/flat.png'), [`${key}.150x150.avif.png`, `${key}.150x150.png`, `${key}.150x150.webp.webp`, `${key}.json`, `${key}.png`]);
  });

  it('1000 distinct Accept strings at once: at most one file per (size, class), one origin fetch', async () => {
    const path = '/crowd0.jpg';
    const link = linkOf(path, { size: '250x250' });
    const accepts = Array.from({ length: 1000 }, (_, index) => {
      const q = `0.${String(index % 1000).padStart(3, '0')}`;
      switch (index % 5) {
        case 0:
          return `image/avif;q=${q},image/webp,*/*;v=${index}`;
        case 1:
          return `image/webp;q=${q},image/png;x=${index}`;
        case 2:
          return `text/html;level=${index},*/*;q=0.8`;
        case 3:
          return `IMAGE/AVIF ; Q=${q} , image/jpeg;n=${index}`;
        default:
          return `image/avif;q=0,image/webp;q=0,image/x-${index}`;
      }
    });
    const types = new Set<string>();
    const batch = 100;
    for (let start = 0; start < accepts.length; start += batch) {
      const answers = await Promise.all(accepts.slice(start, start + batch).map((accept) => get(server, link, accept)));
      for (const answer of answers) {
        assertImageAnswer(answer, 'a crowd request');
        assert.equal(answer.headers.get('vary'), 'Accept');
        types.add(answer.headers.get('content-type') ?? '');
      }
    }
    assert.deepEqual([...types].sort(), ['image/avif', 'image/jpeg', 'image/webp']);
    assert.equal(fetchesOf(path), 1);
    const key = keyOf(path);
    assert.deepEqual(await keyFiles(root, path), [`${key}.250x250.avif.avif`, `${key}.250x250.jpg`, `${key}.250x250.webp.webp`, `${key}.jpg`, `${key}.json`]);
  });

  it('counts answers and bytes by served format, and encode time by format', async () => {
    assert.ok(server.adminUrl !== null);
    const samples = await scrapeMetrics(server.adminUrl);
    for (const format of ['avif', 'webp', 'jpg', 'gif', 'png']) {
      assert.ok((samples.get(`imageproxy_served_responses_total{format="${format}"}`) ?? 0) > 0, `responses of ${format}`);
      assert.ok((samples.get(`imageproxy_served_bytes_total{format="${format}"}`) ?? 0) > 0, `bytes of ${format}`);
    }
    for (const format of ['source', 'avif', 'webp']) {
      assert.ok((samples.get(`imageproxy_resize_seconds_count{engine="sharp",format="${format}"}`) ?? 0) > 0, `encode time of ${format}`);
    }
  });
});

describe('formats ["avif", "webp"], X-Accel-Redirect', () => {
  let root: string;
  let server: RunningServer;

  before(async () => {
    root = await makeTempRoot('imageproxy-formats-accel-');
    server = await startLoopbackServer(root, SECRET, { formats: ['avif', 'webp'], delivery: 'accel' });
  });

  after(async () => {
    await server.close();
    await removeTempRoot(root);
  });

  it("names the class's file under the internal prefix, with its type, Vary and a week's Cache-Control", async () => {
    const path = '/crowd1.jpg';
    const key = keyOf(path);
    const directory = `/_imageproxy/${keyDirectory('i', key)}`;
    const link = linkOf(path, { size: '250x250' });
    for (const [accept, file, type] of [
      [CHROME, `${key}.250x250.avif.avif`, 'image/avif'],
      ['*/*', `${key}.250x250.jpg`, 'image/jpeg'],
      [FIREFOX_WEBP, `${key}.250x250.webp.webp`, 'image/webp'],
      [CHROME, `${key}.250x250.avif.avif`, 'image/avif'],
    ] as const) {
      const answer = await get(server, link, accept);
      assert.equal(answer.status, 200, accept);
      assert.equal(answer.headers.get('x-accel-redirect'), `${directory}/${file}`, accept);
      assert.equal(answer.headers.get('content-type'), type, accept);
      assert.equal(answer.headers.get('vary'), 'Accept', accept);
      assert.equal(answer.headers.get('cache-control'), IMAGE_CACHE_CONTROL, accept);
      assert.equal(answer.body.length, 0);
    }
    const full = await get(server, linkOf(path), CHROME);
    assert.equal(full.headers.get('x-accel-redirect'), `${directory}/${key}.jpg`);
    assert.equal(full.headers.get('vary'), null);
    assert.equal(fetchesOf(path), 1);
  });
});

describe('formats ["avif", "webp"] with the jimp engine', () => {
  let root: string;
  let server: RunningServer;

  before(async () => {
    root = await makeTempRoot('imageproxy-formats-jimp-');
    server = await startLoopbackServer(root, SECRET, { formats: ['avif', 'webp'], engine: 'jimp' });
  });

  after(async () => {
    await server.close();
    await removeTempRoot(root);
  });

  it("sharp encodes the class from jimp's thumbnail (sharp loads here): AVIF of the thumbnail's size, Vary", async () => {
    const answer = await get(server, linkOf('/photo.jpg', { size: '150x150' }), CHROME);
    assertImageAnswer(answer, 'Chrome');
    assert.equal(answer.headers.get('content-type'), 'image/avif');
    assert.equal(answer.headers.get('vary'), 'Accept');
    const decoded = await sharp(answer.body).metadata();
    assert.deepEqual([decoded.format, decoded.width, decoded.height], ['heif', 150, 113]);
  });
});

describe('formats [] (the default): nothing changes', () => {
  let root: string;
  let server: RunningServer;

  before(async () => {
    root = await makeTempRoot('imageproxy-formats-off-');
    server = await startLoopbackServer(root, SECRET);
  });

  after(async () => {
    await server.close();
    await removeTempRoot(root);
  });

  it('Chrome gets the source format, no Vary, and no class file is made', async () => {
    const path = '/crowd2.jpg';
    const answer = await get(server, linkOf(path, { size: '250x250' }), CHROME);
    assertImageAnswer(answer, 'Chrome');
    assert.equal(answer.headers.get('content-type'), 'image/jpeg');
    assert.equal(answer.headers.get('vary'), null);
    const key = keyOf(path);
    assert.deepEqual(await keyFiles(root, path), [`${key}.250x250.jpg`, `${key}.jpg`, `${key}.json`]);
  });

  it('a reload that turns formats on answers the next request by its class', async () => {
    const path = '/crowd2.jpg';
    const summary = await server.reload(loopbackConfig(root, SECRET, { formats: ['webp'] }), [SECRET]);
    assert.equal(summary.imageServiceRebuilt, true);
    const answer = await get(server, linkOf(path, { size: '250x250' }), CHROME);
    assertImageAnswer(answer, 'Chrome after the reload');
    assert.equal(answer.headers.get('content-type'), 'image/webp');
    assert.equal(answer.headers.get('vary'), 'Accept');
    assert.equal(fetchesOf(path), 1);
  });
});
