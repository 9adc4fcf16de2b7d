/**
 * Config `placeholder` in nginx: the rendered config run by a real nginx on loopback. Its
 * own answers (410, 404, 504, and 502 with the app down)
 * carry the placeholder to an <img> load and the text to everything else; with
 * the option off the config is exactly what it was.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { keyDirectory, storageKey } from '../server/contract/layout.js';
import { formatLink } from '../server/contract/link.js';
import { signLink } from '../server/contract/signing.js';
import {
  CONFIG_MODULE_NAME,
  NGINX_ERROR_ANSWERS,
  nginxErrorBody,
  renderConfigModule,
  renderServerBlock,
  renderStandaloneConf,
  type NginxRenderInput,
} from '../server/deploy/nginxConfig.js';
import { BROWSER_IMAGE_ACCEPTS } from '../server/deploy/placeholderNginx.js';
import { PLACEHOLDER_IMAGES } from '../server/http/placeholder.js';
import { ERROR_STATUS } from '../server/errors.js';
import { CONTENT_SECURITY_POLICY, ERROR_CACHE_CONTROL, IMAGE_CACHE_CONTROL } from '../server/http/responseHeaders.js';
import { exampleRenderInput, freePort, NJS_DIR, nginxMissing, startNginx, testWorkerUser, type RunningNginx } from './nginxHarness.js';
import { runCli } from './cliProcess.js';
import { assertSameBytes, extUrlOf, makeTempRoot, removeTempRoot, request, shortBody, type Answer } from './helpers.js';

const SECRET = 'placeholder nginx secret';
const CHROME_IMAGE = 'image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8';
const CHROME_NAVIGATION = 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8';
const DAY_MS = 86_400_000;

const BASE_INPUT = exampleRenderInput({ secrets: [SECRET] });

function link(imageUrl: string, atMs = Date.now()): string {
  const extUrl = extUrlOf(imageUrl);
  const signature = signLink(SECRET, { bucket: 'i', extUrl, proxy: false }, atMs, { legacy: false });
  return formatLink({ bucket: 'i', size: 'full', signature, extUrl, proxy: false });
}

const expiredLink = (): string => link('https://example.com/expired.jpg', Date.now() - 21 * DAY_MS);

/** An answer nginx made itself for an image load: the placeholder with the error's status and headers. */
async function assertPlaceholder(answer: Answer, status: number, code: string, name: string, format: 'png' | 'webp' = 'png'): Promise<void> {
  assert.equal(answer.status, status, `${name}: ${shortBody(answer.body, answer.headers.get('content-type'))}`);
  assert.equal(answer.headers.get('content-type'), PLACEHOLDER_IMAGES[format].contentType, name);
  assert.equal(answer.headers.get('x-imageproxy-error'), code, name);
  assert.equal(answer.headers.get('cache-control'), ERROR_CACHE_CONTROL, name);
  assert.equal(answer.headers.get('vary'), 'Accept', name);
  assert.equal(answer.headers.get('x-content-type-options'), 'nosniff', name);
  assert.equal(answer.headers.get('content-security-policy'), CONTENT_SECURITY_POLICY, name);
  assertSameBytes(answer.body, PLACEHOLDER_IMAGES[format].bytes, name);
  const decoded = await sharp(answer.body).metadata();
  assert.deepEqual([decoded.width, decoded.height], [1, 1], name);
}

/** An answer nginx made itself as text: the body of NGINX_ERROR_ANSWERS, the error headers, Vary as given. */
function assertText(answer: Answer, status: number, code: string, vary: string | null, name: string): void {
  assert.equal(answer.status, status, `${name}: ${shortBody(answer.body, answer.headers.get('content-type'))}`);
  assert.equal(answer.headers.get('content-type'), 'text/plain; charset=utf-8', name);
  assert.equal(answer.headers.get('x-imageproxy-error'), code, name);
  assert.equal(answer.headers.get('cache-control'), ERROR_CACHE_CONTROL, name);
  assert.equal(answer.headers.get('vary'), vary, name);
  const expected = NGINX_ERROR_ANSWERS.find((item) => item.code === code);
  assert.ok(expected !== undefined, code);
  assert.equal(answer.body.toString(), nginxErrorBody(expected), name);
}

describe('the rendered config', () => {
  it('is what it was with the option off', () => {
    assert.equal(renderServerBlock({ ...BASE_INPUT, placeholder: false }), renderServerBlock(BASE_INPUT));
    assert.ok(!renderServerBlock(BASE_INPUT).includes('placeholder'));
  });

  it('sends every error location on to the placeholder with its status and code', () => {
    const text = renderServerBlock({ ...BASE_INPUT, placeholder: true });
    for (const answer of NGINX_ERROR_ANSWERS) {
      const branch = `rewrite ^ /_imageproxy_placeholder/${ERROR_STATUS[answer.code]}/${answer.code} last;`;
      assert.equal(text.split(branch).length - 1, 1, answer.code);
    }
  });
});

describe('nginx-config', () => {
  it('renders the placeholder from the config file and from IMAGEPROXY_PLACEHOLDER, and nothing of it by default', async () => {
    const work = await makeTempRoot('imageproxy-placeholder-cli-');
    try {
      const configFile = async (layer: Record<string, unknown>): Promise<string> => {
        const path = join(work, `config-${Object.keys(layer).join('-') || 'plain'}.json`);
        const base = { listen: '127.0.0.1:18091', root: join(work, 'tree'), secrets: [SECRET], nginx: { listen: '127.0.0.1:18080' } };
        await writeFile(path, JSON.stringify({ ...base, ...layer }), { mode: 0o600 });
        return path;
      };
      const runs: Array<[string, string[], Record<string, string>, boolean]> = [
        ['config file', ['--config', await configFile({ placeholder: true })], {}, true],
        ['environment', ['--config', await configFile({})], { IMAGEPROXY_PLACEHOLDER: 'true' }, true],
        ['default', ['--config', await configFile({})], {}, false],
      ];
      for (const [name, args, env, expected] of runs) {
        const run = await runCli(['nginx-config', ...args], { cwd: work, env });
        assert.equal(run.code, 0, `${name}: ${run.stderr}`);
        assert.equal(run.stdout.includes('js_import imageproxy_placeholder from placeholder.js;'), expected, name);
        assert.equal(run.stdout.includes('rewrite ^ /_imageproxy_placeholder/410/bad_signature last;'), expected, name);
      }
    } finally {
      await removeTempRoot(work);
    }
  });
});

const skip = nginxMissing();

describe('nginx with the placeholder on', { skip: skip ?? false }, () => {
  let prefixDir = '';
  let root = '';
  let app: Server | null = null;
  let nginx: RunningNginx | null = null;
  let downNginx: RunningNginx | null = null;
  let plainNginx: RunningNginx | null = null;
  let baseUrl = '';
  let downUrl = '';
  let plainUrl = '';
  const appRequests: string[] = [];
  const accelAnswers = new Map<string, string>();

  function appAnswers(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '';
    appRequests.push(url);
    req.resume();
    if (url.endsWith('/stall')) return; // never answers: nginx's read timeout ends it
    const target = accelAnswers.get(url);
    if (target !== undefined) {
      res.writeHead(200, { 'X-Accel-Redirect': target, 'Content-Type': 'image/jpeg', 'Cache-Control': IMAGE_CACHE_CONTROL });
      res.end();
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Imageproxy-Error': 'not_found', 'Cache-Control': ERROR_CACHE_CONTROL });
    res.end('not_found: from the app\n');
  }

  async function startOne(name: string, overrides: Partial<NginxRenderInput>, port: number): Promise<RunningNginx> {
    const dir = join(prefixDir, name);
    const configModuleDir = join(dir, 'njs');
    await mkdir(configModuleDir, { recursive: true });
    const input: NginxRenderInput = { ...BASE_INPUT, nginxListen: `127.0.0.1:${port}`, root, njsDir: NJS_DIR, configModuleDir, ...overrides };
    await writeFile(join(configModuleDir, CONFIG_MODULE_NAME), renderConfigModule(input), { mode: 0o600 });
    const user = testWorkerUser();
    // A stalled app must meet nginx's read timeout within the test, not after minutes.
    const conf = renderStandaloneConf(input, dir, { workerProcesses: 1, ...(user === undefined ? {} : { user }) }).replace(
      /proxy_read_timeout \d+s;/g,
      'proxy_read_timeout 1s;',
    );
    return startNginx(dir, conf, port);
  }

  before(async () => {
    prefixDir = await makeTempRoot('imageproxy-placeholder-nginx-');
    root = join(prefixDir, 'root');
    await mkdir(root, { recursive: true });
    app = createServer(appAnswers);
    await new Promise<void>((resolve) => app?.listen(0, '127.0.0.1', resolve));
    const appListen = `127.0.0.1:${(app.address() as AddressInfo).port}`;
    // Nobody listens there: the app is down.
    const downListen = `127.0.0.1:${await freePort()}`;
    const [port, downPort, plainPort] = [await freePort(), await freePort(), await freePort()];
    baseUrl = `http://127.0.0.1:${port}`;
    downUrl = `http://127.0.0.1:${downPort}`;
    plainUrl = `http://127.0.0.1:${plainPort}`;
    nginx = await startOne('on', { appListen, placeholder: true }, port);
    downNginx = await startOne('down', { appListen: downListen, placeholder: true }, downPort);
    plainNginx = await startOne('off', { appListen }, plainPort);
  });

  after(async () => {
    await nginx?.stop();
    await downNginx?.stop();
    await plainNginx?.stop();
    await new Promise<void>((resolve) => (app === null ? resolve() : app.close(() => resolve())));
    if (prefixDir !== '') await removeTempRoot(prefixDir);
  });

  it("answers an expired link's <img> load with the placeholder, 410, its code and no-store, never asking the app", async () => {
    const before = appRequests.length;
    await assertPlaceholder(await request(baseUrl, expiredLink(), { headers: { Accept: CHROME_IMAGE } }), 410, 'bad_signature', 'Chrome <img>');
    assert.equal(appRequests.length, before);
  });

  it('gives every browser <img> Accept listed, and one it does not list, the image', async () => {
    for (const accept of [...BROWSER_IMAGE_ACCEPTS, 'image/avif,image/webp,image/png;q=0.9, image/*;q=0.8']) {
      await assertPlaceholder(await request(baseUrl, expiredLink(), { headers: { Accept: accept } }), 410, 'bad_signature', accept);
    }
    await assertPlaceholder(await request(baseUrl, expiredLink(), { headers: { Accept: 'image/webp' } }), 410, 'bad_signature', 'webp only', 'webp');
  });

  it('answers a navigation, curl, no Accept and a header it cannot read plainly with the text', async () => {
    const table: Array<[string, Record<string, string>]> = [
      ['Chrome navigation', { Accept: CHROME_NAVIGATION }],
      ['curl', { Accept: '*/*' }],
      ['no Accept', {}],
      // The app would give these an image; nginx's patterns only say yes where the decision is plain.
      ['a parameter other than q', { Accept: 'image/png;level=1' }],
      ['q=0 anywhere', { Accept: 'image/png,text/html;q=0' }],
      ['garbage', { Accept: 'image/png;;,,\\x' }],
    ];
    for (const [name, headers] of table) {
      assertText(await request(baseUrl, expiredLink(), { headers }), 410, 'bad_signature', 'Accept', name);
    }
  });

  it('answers HEAD of an <img> load with the image headers and no body', async () => {
    const answer = await request(baseUrl, expiredLink(), { method: 'HEAD', headers: { Accept: CHROME_IMAGE } });
    assert.equal(answer.status, 410);
    assert.equal(answer.headers.get('content-type'), 'image/png');
    assert.equal(answer.headers.get('content-length'), String(PLACEHOLDER_IMAGES.png.bytes.length));
    assert.equal(answer.headers.get('x-imageproxy-error'), 'bad_signature');
    assert.equal(answer.body.length, 0);
  });

  it('answers 404 and 504 of its own with the placeholder too', async () => {
    await assertPlaceholder(await request(baseUrl, '/metrics', { headers: { Accept: CHROME_IMAGE } }), 404, 'not_stored', '/metrics');
    await assertPlaceholder(await request(baseUrl, '/not-a-link/stall', { headers: { Accept: CHROME_IMAGE } }), 504, 'app_timeout', 'stalled app');
    assertText(await request(baseUrl, '/not-a-link/stall', { headers: { Accept: CHROME_NAVIGATION } }), 504, 'app_timeout', 'Accept', 'stalled app, navigation');
  });

  it("answers a file gone after the app's X-Accel-Redirect with the placeholder, without the app's image Cache-Control", async () => {
    const imageUrl = 'https://example.com/gone.jpg';
    const key = storageKey(Buffer.from(imageUrl));
    const path = link(imageUrl);
    accelAnswers.set(path, `/_imageproxy/${keyDirectory('i', key)}/${key}.jpg`);
    const answer = await request(baseUrl, path, { headers: { Accept: CHROME_IMAGE } });
    await assertPlaceholder(answer, 404, 'not_stored', 'file gone');
    assert.equal(answer.headers.get('cache-control'), ERROR_CACHE_CONTROL);
  });

  it('still serves a hit, and passes the app’s own answers through untouched', async () => {
    const imageUrl = 'https://example.com/hit.jpg';
    const key = storageKey(Buffer.from(imageUrl));
    const bytes = randomBytes(3000);
    await mkdir(join(root, keyDirectory('i', key)), { recursive: true });
    await writeFile(join(root, keyDirectory('i', key), `${key}.jpg`), bytes);
    const hit = await request(baseUrl, link(imageUrl), { headers: { Accept: CHROME_IMAGE } });
    assert.equal(hit.status, 200);
    assertSameBytes(hit.body, bytes, 'the hit');
    assert.equal(hit.headers.get('vary'), null);
    const fromApp = await request(baseUrl, '/i/full/x', { headers: { Accept: CHROME_IMAGE } });
    assert.equal(fromApp.status, 404);
    assert.equal(fromApp.body.toString(), 'not_found: from the app\n');
  });

  it('answers 502 with the placeholder when the app is down, and 410 itself', async () => {
    await assertPlaceholder(await request(downUrl, link('https://example.com/miss.jpg'), { headers: { Accept: CHROME_IMAGE } }), 502, 'app_unavailable', 'app down');
    assertText(await request(downUrl, link('https://example.com/miss.jpg'), { headers: { Accept: CHROME_NAVIGATION } }), 502, 'app_unavailable', 'Accept', 'app down, navigation');
    await assertPlaceholder(await request(downUrl, expiredLink(), { headers: { Accept: CHROME_IMAGE } }), 410, 'bad_signature', 'expired, app down');
  });

  it('answers with the text as before when the option is off', async () => {
    assertText(await request(plainUrl, expiredLink(), { headers: { Accept: CHROME_IMAGE } }), 410, 'bad_signature', null, 'expired, option off');
    assertText(await request(plainUrl, '/not-a-link/stall', { headers: { Accept: CHROME_IMAGE } }), 504, 'app_timeout', null, 'stalled, option off');
  });
});
