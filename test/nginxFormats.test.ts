/**
 * Format negotiation in real nginx (config and module rendered by `nginx-config` from a
 * config with `formats: ["avif", "webp"]`): for a thumbnail link nginx picks the class
 * from `Accept` as server/contract/accept.ts does and serves the class file from the
 * tree, `Vary: Accept` on every 200/206/304 of such a link, with the app stopped; a class
 * file not made yet goes to the app (here a tiny fake app on the configured port that
 * makes it and answers X-Accel-Redirect, as the real one does). Full-size and /proxy
 * links are never negotiated, and `formats: []` serves as before: no Vary.
 *
 * The planted files are real images made with sharp, different per class, so the body
 * says which file nginx served.
 */
import assert from 'node:assert/strict';
import { link as hardLink, mkdir, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { formatClassOf, type FormatClass, type ModernFormat } from '../server/contract/accept.js';
import { classVariantStem, keyDirectory, storageKey } from '../server/contract/layout.js';
import { KNOWN_ACCEPT_HEADERS } from '../server/deploy/nginxConfig.js';
import { IMAGE_CACHE_CONTROL } from '../server/http/responseHeaders.js';
import { makeTempRoot, removeTempRoot, request, signedPath, type Answer } from './helpers.js';
import { freePort, nginxMissing, renderStandaloneWithCli, startNginx, type RunningNginx } from './nginxHarness.js';
import { seededRandom } from './seededRandom.js';

const SECRET = 'formats-nginx-secret';
const OFFERED: readonly ModernFormat[] = ['avif', 'webp'];
const LABEL = '250x250';
const missing = nginxMissing();
if (missing !== null) console.log(`# format negotiation through nginx skipped: ${missing}`);

const [CHROME, , FIREFOX, , FIREFOX_65, SAFARI_16, , SAFARI_13, OLD_EDGE] = KNOWN_ACCEPT_HEADERS;

/** Which file a request must get: the class, by the Accept it sends (undefined: none). */
const BROWSERS: ReadonlyArray<{ name: string; accept: string | undefined; expected: FormatClass }> = [
  { name: 'Chrome', accept: CHROME, expected: 'avif' },
  { name: 'Firefox', accept: FIREFOX, expected: 'avif' },
  { name: 'Firefox 65-91', accept: FIREFOX_65, expected: 'webp' },
  { name: 'Safari 16 (webp listed first, server order wins)', accept: SAFARI_16, expected: 'avif' },
  { name: 'Safari 13', accept: SAFARI_13, expected: 'source' },
  { name: 'old Edge <img>', accept: OLD_EDGE, expected: 'source' },
  { name: 'curl */*', accept: '*/*', expected: 'source' },
  { name: 'image/*', accept: 'image/*', expected: 'source' },
  { name: 'avif q=0', accept: 'image/avif;q=0,image/webp', expected: 'webp' },
  { name: 'both q=0', accept: 'image/avif;q=0,image/webp;q=0,*/*', expected: 'source' },
  { name: 'webp ranked above avif (parsed, not in the table)', accept: 'image/avif;q=0.5, image/webp', expected: 'webp' },
  { name: 'upper case (parsed)', accept: 'IMAGE/AVIF,IMAGE/WEBP', expected: 'avif' },
  { name: 'garbage', accept: '"><script>alert(1)</script>', expected: 'source' },
  { name: 'malformed q', accept: 'image/avif;q=.5,image/webp', expected: 'source' },
  { name: 'no Accept', accept: undefined, expected: 'source' },
];

const CONTENT_TYPES: Record<string, string> = { jpg: 'image/jpeg', png: 'image/png', webp: 'image/webp', avif: 'image/avif' };

interface Planted {
  path: string;
  bytes: Buffer;
  contentType: string;
}

/** A tiny loopback app on a fixed port: records each request, answers with `handle`. */
interface FakeApp {
  requests: Array<{ url: string; accept: string | undefined }>;
  close(): Promise<void>;
}

async function startFakeApp(port: number, handle: (request: IncomingMessage) => Promise<Record<string, string>>): Promise<FakeApp> {
  const requests: FakeApp['requests'] = [];
  const server: Server = createServer((incoming, response) => {
    requests.push({ url: incoming.url ?? '', accept: incoming.headers.accept });
    handle(incoming).then(
      (headers) => response.writeHead(200, headers).end(),
      () => response.writeHead(500).end('fake app failed\n'),
    );
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    requests,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

describe('format negotiation through real nginx', { skip: missing ?? false }, () => {
  let workDir = '';
  let root = '';
  let appPort = 0;
  let negotiating: RunningNginx | null = null;
  let plain: RunningNginx | null = null;
  let base = '';
  let plainBase = '';
  let fakeApp: FakeApp | null = null;
  const imageUrl = (name: string): string => `http://images.example/${name}.jpg`;
  const link = (name: string, size: string = LABEL, proxy = false): string =>
    signedPath({ secret: SECRET, imageUrl: imageUrl(name), atMs: Date.now(), size, proxy });
  const keyOf = (name: string): string => storageKey(Buffer.from(imageUrl(name)));
  const fileOf = (name: string, file: string): string => join(root, keyDirectory('i', keyOf(name)), file);
  const get = (baseUrl: string, path: string, accept: string | undefined, extra: Record<string, string> = {}): Promise<Answer> =>
    request(baseUrl, path, { headers: { ...(accept === undefined ? {} : { Accept: accept }), ...extra } });

  /** Files of image `all`: the original, the source thumbnail and both class files. */
  const planted: Record<string, Planted> = {};

  async function plant(name: string, file: string, bytes: Buffer, ext: string): Promise<Planted> {
    const path = fileOf(name, file);
    await mkdir(join(path, '..'), { recursive: true });
    await writeFile(path, bytes);
    return { path, bytes, contentType: CONTENT_TYPES[ext] ?? '' };
  }

  async function renderAndStart(name: string, formats: readonly ModernFormat[]): Promise<{ nginx: RunningNginx; base: string }> {
    const port = await freePort();
    const configPath = join(workDir, `${name}.json`);
    const config = {
      listen: `127.0.0.1:${appPort}`,
      root,
      secrets: [SECRET],
      formats,
      nginx: { listen: `127.0.0.1:${port}`, internalPrefix: '/_imageproxy' },
    };
    await writeFile(configPath, JSON.stringify(config), { mode: 0o600 });
    const rendered = await renderStandaloneWithCli(configPath, join(workDir, name));
    return { nginx: await startNginx(join(workDir, name), rendered, port), base: `http://127.0.0.1:${port}` };
  }

  before(async () => {
    workDir = await makeTempRoot('imageproxy-formats-nginx-');
    root = join(workDir, 'tree');
    appPort = await freePort(); // nothing listens here until a test starts the fake app
    const square = (background: string) => sharp({ create: { width: 64, height: 64, channels: 3, background } });
    const key = keyOf('all');
    planted.original = await plant('all', `${key}.jpg`, await square('#102030').jpeg().toBuffer(), 'jpg');
    planted.source = await plant('all', `${key}.${LABEL}.jpg`, await square('#203040').jpeg().toBuffer(), 'jpg');
    planted.avif = await plant('all', `${classVariantStem(key, LABEL, 'avif')}.avif`, await square('#304050').avif().toBuffer(), 'avif');
    planted.webp = await plant('all', `${classVariantStem(key, LABEL, 'webp')}.webp`, await square('#405060').webp().toBuffer(), 'webp');
    // Converting did not pay: the avif class's file is a hard link of the JPEG thumbnail.
    const linkedKey = keyOf('linked');
    planted.linkedSource = await plant('linked', `${linkedKey}.${LABEL}.jpg`, await square('#506070').jpeg().toBuffer(), 'jpg');
    await hardLink(planted.linkedSource.path, fileOf('linked', `${classVariantStem(linkedKey, LABEL, 'avif')}.jpg`));
    ({ nginx: negotiating, base } = await renderAndStart('negotiating', OFFERED));
    ({ nginx: plain, base: plainBase } = await renderAndStart('plain', []));
  });

  after(async () => {
    await fakeApp?.close();
    await negotiating?.stop();
    await plain?.stop();
    await removeTempRoot(workDir);
  });

  /** A 200, a 206 and two 304s of `path` with `accept`, each with the file's headers. */
  async function assertServedFile(baseUrl: string, path: string, accept: string | undefined, file: Planted, vary: string | null, what: string): Promise<void> {
    const full = await get(baseUrl, path, accept);
    assert.equal(full.status, 200, what);
    assert.ok(full.body.equals(file.bytes), `${what}: the planted file, not ${full.body.length} other bytes`);
    const etag = full.headers.get('etag');
    const lastModified = full.headers.get('last-modified');
    assert.ok(etag !== null && lastModified !== null, what);
    const partial = await get(baseUrl, path, accept, { Range: 'bytes=0-9' });
    assert.equal(partial.status, 206, what);
    assert.ok(partial.body.equals(file.bytes.subarray(0, 10)), `${what}: the range of the file`);
    const byTag = await get(baseUrl, path, accept, { 'If-None-Match': etag });
    assert.equal(byTag.status, 304, what);
    const byDate = await get(baseUrl, path, accept, { 'If-Modified-Since': lastModified });
    assert.equal(byDate.status, 304, what);
    for (const [kind, answer] of [['200', full], ['206', partial], ['304 If-None-Match', byTag], ['304 If-Modified-Since', byDate]] as const) {
      assert.equal(answer.headers.get('vary'), vary, `${what}: Vary on the ${kind}`);
      assert.equal(answer.headers.get('cache-control'), IMAGE_CACHE_CONTROL, `${what}: Cache-Control on the ${kind}`);
      if (kind !== '304 If-None-Match' && kind !== '304 If-Modified-Since') assert.equal(answer.headers.get('content-type'), file.contentType, `${what}: Content-Type on the ${kind}`);
    }
  }

  it('with the app stopped, each browser gets its class file from disk, Vary: Accept on 200, 206 and 304', async () => {
    for (const browser of BROWSERS) {
      assert.equal(formatClassOf(browser.accept, OFFERED), browser.expected, `${browser.name}: the table agrees with accept.ts`);
      const file = planted[browser.expected];
      assert.ok(file !== undefined);
      await assertServedFile(base, link('all'), browser.accept, file, 'Accept', browser.name);
    }
  });

  it("with the app stopped, a class whose file is the source thumbnail's hard link gets it as image/jpeg, Vary: Accept", async () => {
    const file = planted.linkedSource;
    assert.ok(file !== undefined);
    await assertServedFile(base, link('linked'), CHROME, file, 'Accept', 'avif class, JPEG bytes');
    await assertServedFile(base, link('linked'), SAFARI_13, file, 'Accept', 'source class');
  });

  it('full-size and /proxy links are never negotiated: the original, no Vary', async () => {
    const original = planted.original;
    assert.ok(original !== undefined);
    for (const accept of [CHROME, FIREFOX_65, undefined]) {
      await assertServedFile(base, link('all', 'full'), accept, original, null, `full size, Accept ${accept ?? 'none'}`);
      await assertServedFile(base, link('all', LABEL, true), accept, original, null, `/proxy, Accept ${accept ?? 'none'}`);
    }
  });

  it('formats [] serves as before: the source thumbnail to every client, no Vary', async () => {
    const source = planted.source;
    assert.ok(source !== undefined);
    for (const browser of BROWSERS) await assertServedFile(plainBase, link('all'), browser.accept, source, null, `formats [], ${browser.name}`);
  });

  it('an unsatisfiable range of a negotiated link is the 416 error, without Vary', async () => {
    const answer = await get(base, link('all'), CHROME, { Range: 'bytes=999999-' });
    assert.equal(answer.status, 416);
    assert.equal(answer.headers.get('vary'), null);
    assert.equal(answer.headers.get('x-imageproxy-error'), 'range_not_satisfiable');
  });

  it('a class file not made yet goes to the app; its X-Accel-Redirect answer gets Vary: Accept; then served from disk', async () => {
    // As the app: make the class file of this Accept (here a copy of the JPEG thumbnail) and point nginx at it.
    const sourceBytes = await sharp({ create: { width: 32, height: 32, channels: 3, background: '#607080' } }).jpeg().toBuffer();
    const name = 'missing';
    const key = keyOf(name);
    await plant(name, `${key}.${LABEL}.jpg`, sourceBytes, 'jpg');
    await plant(name, `${key}.jpg`, sourceBytes, 'jpg');
    const made: string[] = [];
    fakeApp = await startFakeApp(appPort, async (incoming) => {
      const formatClass = formatClassOf(incoming.headers.accept, OFFERED);
      const thumbnail = (incoming.url ?? '').includes(`/${LABEL}/`);
      const file = !thumbnail ? `${key}.jpg` : formatClass === 'source' ? `${key}.${LABEL}.jpg` : `${classVariantStem(key, LABEL, formatClass)}.jpg`;
      if (thumbnail && formatClass !== 'source') {
        await writeFile(fileOf(name, file), sourceBytes);
        made.push(file);
      }
      return {
        'X-Accel-Redirect': `/_imageproxy/${keyDirectory('i', key)}/${file}`,
        'Content-Type': 'image/jpeg',
        'Cache-Control': IMAGE_CACHE_CONTROL,
        ...(thumbnail ? { Vary: 'Accept' } : {}),
      };
    });
    const path = link(name);
    const first = await get(base, path, CHROME);
    assert.equal(first.status, 200);
    assert.ok(first.body.equals(sourceBytes), 'the file the app made');
    assert.deepEqual(fakeApp.requests, [{ url: path, accept: CHROME }], 'the link and its Accept reached the app');
    assert.equal(first.headers.get('vary'), 'Accept', "one Vary, from nginx (it drops the app's on X-Accel-Redirect)");
    assert.equal(first.headers.get('cache-control'), IMAGE_CACHE_CONTROL);
    assert.equal(first.headers.get('content-type'), 'image/jpeg');
    const again = await get(base, path, CHROME);
    assert.equal(again.status, 200);
    assert.equal(again.headers.get('vary'), 'Accept');
    assert.equal(fakeApp.requests.length, 1, 'the second request was served from disk');
    // The source class of the same link is on disk already.
    assert.equal((await get(base, path, SAFARI_13)).status, 200);
    assert.equal(fakeApp.requests.length, 1);

    // 1000 distinct Accept headers: the app is asked once per class at most (webp here,
    // avif made above), which holds only if nginx and the app agree on every one.
    const random = seededRandom(1000);
    const pieces = ['image/avif', 'image/webp', 'image/png', 'image/*', '*/*', 'video/*', 'text/html', 'image/avif;q=0', 'image/webp;q=0', 'image/webp;q=0.5', 'image/avif;q=0.4', 'IMAGE/WEBP', 'image/jxl', 'image/x;q=.5', 'image/heic'];
    const headers = new Set<string>();
    while (headers.size < 1000) {
      const count = 1 + Math.floor(random() * 6);
      const parts = Array.from({ length: count }, () => pieces[Math.floor(random() * pieces.length)] ?? '');
      headers.add(`${parts.join(random() < 0.5 ? ',' : ', ')};level=${Math.floor(random() * 1000)}`);
    }
    const classes = new Map<FormatClass, number>();
    for (const accept of headers) {
      const answer = await get(base, path, accept);
      assert.equal(answer.status, 200, accept);
      assert.equal(answer.headers.get('vary'), 'Accept', accept);
      const formatClass = formatClassOf(accept, OFFERED);
      classes.set(formatClass, (classes.get(formatClass) ?? 0) + 1);
    }
    assert.deepEqual([...classes.keys()].sort(), ['avif', 'source', 'webp'], 'the generated headers cover every class');
    assert.deepEqual(made, [`${classVariantStem(key, LABEL, 'avif')}.jpg`, `${classVariantStem(key, LABEL, 'webp')}.jpg`], 'one file made per class');
    assert.equal(fakeApp.requests.length, 2, 'the app was asked once per class');

    // A full-size miss through the app (the fake app points at this image's original): no Vary.
    const fullFirst = await get(base, link('not-stored', 'full'), CHROME);
    assert.equal(fullFirst.status, 200);
    assert.equal(fullFirst.headers.get('vary'), null, 'full size: no Vary, even through the app');
    assert.equal(fakeApp.requests.length, 3, 'the full-size miss reached the app');
  });
});
