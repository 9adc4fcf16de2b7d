/**
 * server/deploy/nginxConfig.ts: the renderer's checks and text (tables), then the rendered
 * standalone config run by a real nginx on loopback, in front of a tiny node:http
 * stand-in for the app that counts its requests.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { chmod, copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigError, DEFAULT_CONFIG } from '../server/config/config.js';
import { IMAGE_EXTENSIONS, keyDirectory, storageKey } from '../server/contract/layout.js';
import { MAX_ACCEPT_ELEMENTS, MAX_ACCEPT_LENGTH } from '../server/contract/accept.js';
import {
  acceptClassTable,
  CONFIG_MODULE_NAME,
  NGINX_ERROR_ANSWERS,
  nginxErrorBody,
  renderConfigModule,
  renderServerBlock,
  renderStandaloneConf,
  sizeLabelTable,
  WORKER_CONNECTIONS,
  type NginxRenderInput,
} from '../server/deploy/nginxConfig.js';
import { formatLink } from '../server/contract/link.js';
import {
  CONTENT_SECURITY_POLICY,
  CONTENT_TYPE_BY_EXTENSION,
  ERROR_CACHE_CONTROL,
  IMAGE_CACHE_CONTROL,
} from '../server/http/responseHeaders.js';
import { signLink } from '../server/contract/signing.js';
import { exampleRenderInput, freePort, NJS_DIR, nginxMissing, startNginx, testWorkerUser, type RunningNginx } from './nginxHarness.js';
import { assertSameBytes, extUrlOf, makeTempRoot, removeTempRoot, request, ruleOf, VECTORS, type Answer } from './helpers.js';

const BASE_INPUT = exampleRenderInput({
  buckets: { i: { legacySignatures: false }, old: { legacySignatures: true } },
  secrets: ['1234', '123456'],
});

function withInput(overrides: Partial<NginxRenderInput>): NginxRenderInput {
  return { ...BASE_INPUT, ...overrides };
}

// ---- the renderer -------------------------------------------------------------------------

describe('renderServerBlock', () => {
  const text = renderServerBlock(BASE_INPUT);

  const expectedLines: Array<[string, string]> = [
    ['njs script directory', 'js_path "/opt/imageproxy/nginx/";'],
    ['config module directory', 'js_path "/etc/imageproxy/";'],
    ['import', 'js_import imageproxy from imageproxy.js;'],
    ['js_set', 'js_set $imageproxy_stem imageproxy.linkStem;'],
    ['upstream server', 'server 127.0.0.1:8091;'],
    ['miss timeout longer than a wait plus a fetch', 'proxy_read_timeout 120s;'],
    ['upstream keepalive', 'keepalive 32;'],
    ['listen', 'listen 127.0.0.1:8080;'],
    ['root', 'root "/srv/imageproxy/data";'],
    ['pass to the app', 'error_page 418 = @imageproxy_app;'],
    ['410 by its error page', 'return 410;'],
    ['410 body', 'return 410 "bad_signature: invalid or expired signature\\n";'],
    ['502 body', 'return 502 "app_unavailable: image service unavailable, try again\\n";'],
    ['error pages after a passed-on request', 'recursive_error_pages on;'],
    ['403 page', 'error_page 403 = /_imageproxy_error/forbidden;'],
    ['nginx 400, 494 and 505 page', 'error_page 400 494 505 = /_imageproxy_error/bad_request;'],
    ['errors are text whatever the path', 'types { }'],
    ['file headers cleared on errors by njs', 'js_header_filter imageproxy.clearFileHeaders;'],
    ['no-store on errors', 'add_header Cache-Control "no-store" always;'],
    ['metrics in any spelling', 'location ~* ^/metrics/?$ {'],
    ['try_files in layout order', 'try_files $imageproxy_stem.jpg $imageproxy_stem.png $imageproxy_stem.webp $imageproxy_stem.gif $imageproxy_stem.avif @imageproxy_app;'],
    ['proxy HTTP/1.1', 'proxy_http_version 1.1;'],
    ['keepalive to the app', 'proxy_set_header Connection "";'],
    ['internal location', 'location ^~ /_imageproxy/ {'],
    ['internal', 'internal;'],
    ['alias', 'alias "/srv/imageproxy/data/";'],
    ['image cache control', `add_header Cache-Control "${IMAGE_CACHE_CONTROL}";`],
    ['CSP', `add_header Content-Security-Policy "${CONTENT_SECURITY_POLICY}";`],
    ['nosniff', 'add_header X-Content-Type-Options "nosniff";'],
    ['error header on 410', 'add_header X-Imageproxy-Error "bad_signature" always;'],
    ['nosniff on errors', 'add_header X-Content-Type-Options "nosniff" always;'],
    ['avif type', 'image/avif avif;'],
    ['open file cache', 'open_file_cache max=10000 inactive=60s;'],
    ['one range per request', 'max_ranges 1;'],
    ['TRACE page', 'error_page 405 = /_imageproxy_error/method_not_allowed;'],
    ['unsupported Transfer-Encoding page', 'error_page 501 = /_imageproxy_error/unsupported_transfer_encoding;'],
    ['a purged file stops being served within seconds', 'open_file_cache_valid 1s;'],
  ];
  for (const [name, line] of expectedLines) {
    it(`has ${name}`, () => {
      assert.ok(text.split('\n').some((candidate) => candidate.trim() === line), `missing: ${line}\n${text}`);
    });
  }

  it('balances its braces', () => {
    assert.equal((text.match(/\{/g) ?? []).length, (text.match(/\}/g) ?? []).length);
  });

  it('has one error location per answer, and every error_page list in full in each location that has error pages', () => {
    for (const answer of NGINX_ERROR_ANSWERS) {
      const location = new RegExp(`location = /_imageproxy_error/${answer.code} \\{[^}]*\\}[^}]*return \\d+ "[^"]*";\\n\\s*\\}`);
      assert.match(text, location, answer.code);
      const pages = text.split('\n').filter((line) => line.trim() === `error_page ${answer.statuses.join(' ')} = /_imageproxy_error/${answer.code};`);
      assert.equal(pages.length, 2, `server level and location /: ${answer.code}`);
    }
  });

  it('puts the image Cache-Control only where it is not always (never on an error)', () => {
    const imageLines = text.split('\n').filter((line) => line.includes(IMAGE_CACHE_CONTROL));
    assert.ok(imageLines.length >= 2);
    for (const line of imageLines) assert.doesNotMatch(line, /always;$/, line);
  });
});

describe('NGINX_ERROR_ANSWERS', () => {
  it('covers every status nginx answers itself, once each, with a code: message body', () => {
    const statuses = NGINX_ERROR_ANSWERS.flatMap((answer) => answer.statuses).sort((a, b) => a - b);
    assert.deepEqual(statuses, [400, 403, 404, 405, 408, 410, 413, 414, 416, 494, 500, 501, 502, 503, 504, 505]);
    for (const answer of NGINX_ERROR_ANSWERS) {
      assert.match(nginxErrorBody(answer), new RegExp(`^${answer.code}: [A-Za-z ,]+\\n$`), answer.code);
    }
  });
});

describe('renderer refuses unsafe or invalid input', () => {
  const table: Array<[string, Partial<NginxRenderInput>, string]> = [
    ['root with ;', { root: '/srv/x; evil' }, 'root'],
    ['root with a newline', { root: '/srv/x\nlocation / {' }, 'root'],
    ['root with a brace', { root: '/srv/{x}' }, 'root'],
    ['root with a quote', { root: '/srv/"x' }, 'root'],
    ['root with a variable', { root: '/srv/$host' }, 'root'],
    ['relative root', { root: 'data' }, 'root'],
    ['njsDir with ;', { njsDir: '/a;b' }, 'njsDir'],
    ['configModuleDir with #', { configModuleDir: '/a#b' }, 'configModuleDir'],
    ['listen with a space', { nginxListen: '127.0.0.1:80 default_server' }, 'nginxListen'],
    ['listen port too large', { nginxListen: '127.0.0.1:70000' }, 'nginxListen'],
    ['app listen with ;', { appListen: '127.0.0.1:8091;' }, 'appListen'],
    ['prefix with a slash inside', { internalPrefix: '/_a/b' }, 'internalPrefix'],
    ['prefix with ;', { internalPrefix: '/_a;' }, 'internalPrefix'],
    ['prefix equal to a bucket', { internalPrefix: '/i' }, 'internalPrefix'],
    ['no bucket', { buckets: {} }, 'buckets'],
    ['bucket with a space', { buckets: { 'a b': { legacySignatures: false } } }, 'buckets.a b'],
    ['bucket __proto__', { buckets: JSON.parse('{"__proto__": {"legacySignatures": false}}') as NginxRenderInput['buckets'] }, 'buckets.__proto__'],
    ['no size', { sizes: [] }, 'sizes'],
    ['fractional size', { sizes: [150.5] }, 'sizes[0]'],
    ['zero size', { sizes: [0] }, 'sizes[0]'],
    ['negative skew', { skewSeconds: -1 }, 'skewSeconds'],
    ['no secret', { secrets: [] }, 'secrets'],
    ['empty secret', { secrets: ['a', ''] }, 'secrets[1]'],
    ['unknown format', { formats: ['jxl' as 'avif'] }, 'formats[0]'],
    ['a format twice', { formats: ['webp', 'webp'] }, 'formats'],
  ];
  for (const [name, overrides, key] of table) {
    it(name, () => {
      const input = withInput(overrides);
      for (const render of [renderServerBlock, renderConfigModule]) {
        assert.throws(() => render(input), (error: unknown) => error instanceof ConfigError && error.key === key);
      }
    });
  }

  const standaloneTable: Array<[string, string, { user?: string; workerProcesses?: number }, string]> = [
    ['relative prefix', 'nginx-prefix', {}, 'prefixDir'],
    ['prefix with ;', '/tmp/a;b', {}, 'prefixDir'],
    ['user with ;', '/tmp/p', { user: 'www-data;' }, 'user'],
    ['user with a newline', '/tmp/p', { user: 'www-data\nload_module x' }, 'user'],
    ['zero workers', '/tmp/p', { workerProcesses: 0 }, 'workerProcesses'],
  ];
  for (const [name, prefix, options, key] of standaloneTable) {
    it(`standalone: ${name}`, () => {
      assert.throws(
        () => renderStandaloneConf(BASE_INPUT, prefix, options),
        (error: unknown) => error instanceof ConfigError && error.key === key,
      );
    });
  }
});

describe('renderConfigModule', () => {
  const secrets = ['plain', 'quote " backslash \\ end', 'new\nline\u2028sep', 'ünïcødé ✓ 😀', '</script>${x}'];
  const text = renderConfigModule(withInput({ secrets, sizes: [250, 150, 250] }));
  const match = /export default (\{[\s\S]*\});\s*$/.exec(text);

  it('is plain ASCII', () => {
    assert.match(text, /^[\x20-\x7e\n]*$/);
  });

  it('holds a JSON object with the secrets, buckets, sizes, size segments, skew, week rule and contract constants', () => {
    assert.ok(match?.[1] !== undefined);
    assert.deepEqual(JSON.parse(match[1]), {
      secrets,
      buckets: '|i|',
      legacyBuckets: '|old|',
      sizes: '|150|250|',
      sizeLabels: '|x150|x250|150x|150x150|150x250|250x|250x150|250x250|',
      skewSeconds: 3600,
      calendarYearWeeks: false,
      fileHeaderNames: 'Cache-Control|Vary|X-Content-Type-Options|Content-Security-Policy|Cross-Origin-Resource-Policy|Referrer-Policy',
      maxExtUrlLength: 8192,
      signatureLength: 16,
      signatureBytes: 12,
      formats: '',
      acceptClasses: '',
      maxAcceptLength: MAX_ACCEPT_LENGTH,
      maxAcceptElements: MAX_ACCEPT_ELEMENTS,
    });
  });

  it('carries the offered formats and the class of each known Accept header', () => {
    const on = /export default (\{[\s\S]*\});\s*$/.exec(renderConfigModule(withInput({ formats: ['webp', 'avif'] })));
    const parsed = JSON.parse(on?.[1] ?? '{}') as { formats?: string; acceptClasses?: string };
    assert.equal(parsed.formats, 'webp,avif');
    assert.equal(parsed.acceptClasses, acceptClassTable(['webp', 'avif']));
  });

  it('holds no object or array but the secrets (njs rebuilds them on every request)', () => {
    const parsed = JSON.parse(match?.[1] ?? '{}') as Record<string, unknown>;
    const nested = Object.entries(parsed).filter(([, value]) => typeof value === 'object').map(([name]) => name);
    assert.deepEqual(nested, ['secrets']);
  });

  it('carries calendarYearWeeks when set', () => {
    const on = /export default (\{[\s\S]*\});\s*$/.exec(renderConfigModule(withInput({ calendarYearWeeks: true })));
    assert.equal((JSON.parse(on?.[1] ?? '{}') as { calendarYearWeeks?: boolean }).calendarYearWeeks, true);
  });
});

describe('renderServerBlock with formats', () => {
  it('formats [] renders exactly what no formats renders', () => {
    assert.equal(renderServerBlock(withInput({ formats: [] })), renderServerBlock(BASE_INPUT));
    assert.doesNotMatch(renderServerBlock(BASE_INPUT), /Vary|format_class/);
  });

  it('formats: try_files names the class files by maps, in classFileExtensions order, and Vary', () => {
    const text = renderServerBlock(withInput({ formats: ['webp', 'avif'] }));
    const lines = text.split('\n').map((line) => line.trim());
    const tries = IMAGE_EXTENSIONS.map((_, index) => `$imageproxy_stem$imageproxy_class_suffix.$imageproxy_class_ext${index + 1}`);
    for (const line of [
      'js_set $imageproxy_format_class imageproxy.formatClass;',
      `try_files ${tries.join(' ')} @imageproxy_app;`,
      'add_header Vary $imageproxy_vary;',
    ]) {
      assert.ok(lines.includes(line), line);
    }
    // What each position names per class: the maps read back.
    const mapValues = (variable: string): Record<string, string> => {
      const block = new RegExp(`map \\$imageproxy_format_class \\${variable} \\{\\n([^}]*)\\}`).exec(text)?.[1] ?? '';
      const values: Record<string, string> = {};
      for (const match of block.matchAll(/^\s*(\S+) "([^"]*)";$/gm)) values[match[1] ?? ''] = match[2] ?? '';
      return values;
    };
    const files = (formatClass: string): string[] => {
      const suffix = mapValues('$imageproxy_class_suffix');
      return IMAGE_EXTENSIONS.map((_, index) => {
        const ext = mapValues(`$imageproxy_class_ext${index + 1}`);
        return `{stem}${suffix[formatClass] ?? suffix.default}.${ext[formatClass] ?? ext.default}`;
      });
    };
    assert.deepEqual(files('avif'), ['{stem}.avif.avif', '{stem}.avif.jpg', '{stem}.avif.png', '{stem}.avif.webp', '{stem}.avif.gif']);
    assert.deepEqual(files('webp'), ['{stem}.webp.webp', '{stem}.webp.jpg', '{stem}.webp.png', '{stem}.webp.gif', '{stem}.webp.avif']);
    for (const other of ['source', '']) assert.deepEqual(files(other), IMAGE_EXTENSIONS.map((ext) => `{stem}.${ext}`), other);
    // The link location and the X-Accel-Redirect one.
    assert.equal(text.match(/add_header Vary /g)?.length, 2);
  });
});

describe('sizeLabelTable', () => {
  it('lists every segment of allowed sizes with its label, nothing else', () => {
    assert.deepEqual(sizeLabelTable([200, 100, 200]), {
      x100: 'x100', x200: 'x200', '100x': '100x', '100x100': '100x100', '100x200': '100x200',
      '200x': '200x', '200x100': '200x100', '200x200': '200x200',
    });
    const table = sizeLabelTable([150, 200, 250, 500]);
    assert.equal(Object.keys(table).length, 24);
    for (const segment of ['full', '0150x', '150x999', 'x', '']) assert.equal(Object.hasOwn(table, segment), false, segment);
  });
});

describe('renderStandaloneConf', () => {
  const text = renderStandaloneConf(BASE_INPUT, '/tmp/ipx-prefix', { workerProcesses: 1 });
  const table: Array<[string, RegExp]> = [
    ['absolute load_module', /^load_module \/usr\/lib\/nginx\/modules\/ngx_http_js_module\.so;$/m],
    ['pid under the prefix', /^pid "\/tmp\/ipx-prefix\/nginx\.pid";$/m],
    ['error log under the prefix', /^error_log "\/tmp\/ipx-prefix\/error\.log" warn;$/m],
    ['foreground', /^daemon off;$/m],
    ['one worker', /^worker_processes 1;$/m],
    ['client body temp', /client_body_temp_path "\/tmp\/ipx-prefix\/client_body_temp";/],
    ['proxy temp', /proxy_temp_path "\/tmp\/ipx-prefix\/proxy_temp";/],
    ['fastcgi temp', /fastcgi_temp_path "\/tmp\/ipx-prefix\/fastcgi_temp";/],
    ['uwsgi temp', /uwsgi_temp_path "\/tmp\/ipx-prefix\/uwsgi_temp";/],
    ['scgi temp', /scgi_temp_path "\/tmp\/ipx-prefix\/scgi_temp";/],
    ['access log under the prefix', /access_log "\/tmp\/ipx-prefix\/access\.log"/],
    ['connections per worker', new RegExp(`^    worker_connections ${WORKER_CONNECTIONS};$`, 'm')],
    ['descriptors for them, client and app side', new RegExp(`^worker_rlimit_nofile ${2 * WORKER_CONNECTIONS};$`, 'm')],
  ];
  for (const [name, pattern] of table) {
    it(`has ${name}`, () => assert.match(text, pattern));
  }

  it("lets one worker hold the app's default fetch queue full (two connections a miss), so nginx does not refuse a burst first", () => {
    const { maxConcurrentFetches, maxQueuedFetches } = DEFAULT_CONFIG.limits;
    assert.ok(WORKER_CONNECTIONS >= 2 * (maxConcurrentFetches + maxQueuedFetches));
  });

  it('has no user directive unless asked, then the one asked for', () => {
    assert.doesNotMatch(text, /^user /m);
    assert.match(renderStandaloneConf(BASE_INPUT, '/tmp/p', { user: 'www-data www-data' }), /^user www-data www-data;$/m);
  });
});

// ---- a real nginx ---------------------------------------------------------------------------

interface AppRequest {
  method: string;
  url: string;
}

interface StoredImage {
  imageUrl: string;
  bucket: string;
  key: string;
  bytes: Buffer;
}

const SECRET = '1234';
const OUTSIDE_SECRET = 'TOP-SECRET-OUTSIDE-THE-TREE';
const SIDECAR_TEXT = '{"sidecar":"never served"}';

describe('rendered config under a real nginx', { skip: nginxMissing() ?? false }, () => {
  let prefixDir = '';
  let root = '';
  let baseUrl = '';
  let nginx: RunningNginx | null = null;
  let app: Server | null = null;
  const appRequests: AppRequest[] = [];
  const accelAnswers = new Map<string, { target: string; headers: Record<string, string>; write?: () => Promise<void> }>();

  const get = (path: string, options: { method?: string; headers?: Record<string, string> } = {}): Promise<Answer> =>
    request(baseUrl, path, options);

  async function store(bucket: string, imageUrl: string, fileName: (key: string) => string, bytes: Buffer): Promise<StoredImage> {
    const key = storageKey(Buffer.from(imageUrl));
    const directory = join(root, keyDirectory(bucket, key));
    await mkdir(directory, { recursive: true });
    await writeFile(join(directory, fileName(key)), bytes);
    return { imageUrl, bucket, key, bytes };
  }

  function link(imageUrl: string, options: { bucket?: string; size?: string; proxy?: boolean; atMs?: number; legacy?: boolean } = {}): string {
    const bucket = options.bucket ?? 'i';
    const proxy = options.proxy ?? false;
    const extUrl = extUrlOf(imageUrl);
    const signature = signLink(SECRET, { bucket, extUrl, proxy }, options.atMs ?? Date.now(), { legacy: options.legacy ?? false });
    return formatLink({ bucket, size: options.size ?? 'full', signature, extUrl, proxy });
  }

  function appAnswers(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '';
    appRequests.push({ method: req.method ?? '', url });
    req.resume();
    if (url.endsWith('/stall')) return; // never answers: nginx's read timeout ends it
    const accel = accelAnswers.get(url);
    if (accel !== undefined && req.method === 'GET') {
      void (accel.write ?? (async () => undefined))().then(() => {
        res.writeHead(200, { 'X-Accel-Redirect': accel.target, ...accel.headers });
        res.end();
      });
      return;
    }
    const [status, code] = req.method === 'GET' || req.method === 'HEAD' ? [404, 'not_found'] : [405, 'method_not_allowed'];
    res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Imageproxy-Error': code, 'Cache-Control': ERROR_CACHE_CONTROL });
    res.end(`${code}: from the app\n`);
  }

  /** Runs `action` and says how many requests the app got meanwhile. */
  async function appCalls<T>(action: () => Promise<T>): Promise<{ result: T; calls: AppRequest[] }> {
    const before = appRequests.length;
    const result = await action();
    return { result, calls: appRequests.slice(before) };
  }

  /** An answer nginx made itself: text `code: message`, error and security headers, one no-store. */
  function assertNginxError(answer: Answer, status: number, code: string, name: string): void {
    assert.equal(answer.status, status, name);
    assert.equal(answer.headers.get('content-type'), 'text/plain; charset=utf-8', name);
    assert.equal(answer.headers.get('x-imageproxy-error'), code, name);
    assert.equal(answer.headers.get('x-content-type-options'), 'nosniff', name);
    assert.equal(answer.headers.get('content-security-policy'), CONTENT_SECURITY_POLICY, name);
    assert.equal(answer.headers.get('cache-control'), ERROR_CACHE_CONTROL, name);
    const expected = NGINX_ERROR_ANSWERS.find((answer) => answer.code === code);
    assert.ok(expected !== undefined, code);
    assert.equal(answer.body.toString(), nginxErrorBody(expected), name);
  }

  function assertFileHeaders(answer: Answer, contentType: string): void {
    assert.equal(answer.headers.get('content-type'), contentType);
    assert.equal(answer.headers.get('cache-control'), IMAGE_CACHE_CONTROL);
    assert.equal(answer.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(answer.headers.get('content-security-policy'), CONTENT_SECURITY_POLICY);
  }

  const images: Record<string, StoredImage> = {};

  before(async () => {
    prefixDir = await makeTempRoot('imageproxy-nginx-');
    root = join(prefixDir, 'root');
    const configModuleDir = join(prefixDir, 'njs');
    await mkdir(root, { recursive: true });
    await mkdir(configModuleDir, { recursive: true });
    await writeFile(join(prefixDir, 'secret.txt'), OUTSIDE_SECRET);

    app = createServer(appAnswers);
    await new Promise<void>((resolve) => app?.listen(0, '127.0.0.1', resolve));
    const appPort = (app.address() as AddressInfo).port;
    const port = await freePort();
    baseUrl = `http://127.0.0.1:${port}`;

    const input: NginxRenderInput = {
      ...BASE_INPUT,
      nginxListen: `127.0.0.1:${port}`,
      appListen: `127.0.0.1:${appPort}`,
      root,
      njsDir: NJS_DIR,
      configModuleDir,
    };
    await writeFile(join(configModuleDir, CONFIG_MODULE_NAME), renderConfigModule(input), { mode: 0o600 });

    images.hit = await store('i', 'https://example.com/hit.jpg', (key) => `${key}.jpg`, randomBytes(5000));
    await writeFile(join(root, keyDirectory('i', images.hit.key), `${images.hit.key}.json`), SIDECAR_TEXT);
    await writeFile(join(root, keyDirectory('i', images.hit.key), `.${images.hit.key}.jpg.123.tmp`), SIDECAR_TEXT);
    images.variant = await store('i', 'https://example.com/hit.jpg', (key) => `${key}.150x.jpg`, randomBytes(700));
    for (const ext of IMAGE_EXTENSIONS) {
      images[ext] = await store('i', `https://example.com/typed.${ext}`, (key) => `${key}.${ext}`, randomBytes(300));
    }
    for (const vector of VECTORS) {
      const bucket = vector.legacy ? 'old' : vector.bucket;
      // Several vectors share an image: store it once.
      images[`vector ${bucket} ${vector.imageUrl}`] ??= await store(bucket, vector.imageUrl, (key) => `${key}.png`, randomBytes(200));
    }

    const user = testWorkerUser();
    // A stalled app must meet nginx's read timeout within the test, not after minutes.
    const conf = renderStandaloneConf(input, prefixDir, { workerProcesses: 1, ...(user === undefined ? {} : { user }) })
      .replace(/proxy_read_timeout \d+s;/, 'proxy_read_timeout 1s;');
    nginx = await startNginx(prefixDir, conf, port);
  });

  after(async () => {
    await nginx?.stop();
    await new Promise<void>((resolve) => (app === null ? resolve() : app.close(() => resolve())));
    if (prefixDir !== '') await removeTempRoot(prefixDir);
  });

  it('serves a hit itself, with the file headers, never asking the app', async () => {
    const hit = images.hit!;
    const { result, calls } = await appCalls(() => get(link(hit.imageUrl)));
    assert.equal(result.status, 200);
    assertSameBytes(result.body, hit.bytes, 'the body');
    assertFileHeaders(result, 'image/jpeg');
    assert.match(result.headers.get('etag') ?? '', /^"[0-9a-f]+-[0-9a-f]+"$/);
    assert.equal(result.headers.get('accept-ranges'), 'bytes');
    assert.deepEqual(calls, []);
  });

  it('answers HEAD, Range and If-None-Match', async () => {
    const hit = images.hit!;
    const path = link(hit.imageUrl);
    const { result: head, calls } = await appCalls(() => get(path, { method: 'HEAD' }));
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
    assert.equal(head.headers.get('content-length'), String(hit.bytes.length));
    const range = await get(path, { headers: { Range: 'bytes=10-19' } });
    assert.equal(range.status, 206);
    assert.equal(range.headers.get('content-range'), `bytes 10-19/${hit.bytes.length}`);
    assertSameBytes(range.body, hit.bytes.subarray(10, 20), 'the range');
    const etag = range.headers.get('etag') ?? '';
    const notModified = await get(path, { headers: { 'If-None-Match': etag } });
    assert.equal(notModified.status, 304);
    assert.deepEqual(calls, []);
  });

  it('serves every stored extension with its content type', async () => {
    for (const ext of IMAGE_EXTENSIONS) {
      const image = images[ext]!;
      const answer = await get(link(image.imageUrl));
      assert.equal(answer.status, 200, ext);
      assertFileHeaders(answer, CONTENT_TYPE_BY_EXTENSION[ext]);
      assertSameBytes(answer.body, image.bytes, 'the body');
    }
  });

  it('serves a stored variant, allowed sizes only, and the original for /proxy', async () => {
    const variant = images.variant!;
    for (const size of ['150x', '150x999', '0150x']) {
      const answer = await get(link(variant.imageUrl, { size }));
      assert.equal(answer.status, 200, size);
      assertSameBytes(answer.body, variant.bytes, size);
    }
    const proxied = await get(link(images.hit!.imageUrl, { size: '150x', proxy: true }));
    assertSameBytes(proxied.body, images.hit!.bytes, 'the body');
  });

  it('verifies every shared vector re-signed this week, nginx alone', async () => {
    // The calendar-rule vector verifies only with calendarYearWeeks, which this nginx lacks.
    for (const vector of VECTORS.filter((item) => ruleOf(item) === 'iso')) {
      const bucket = vector.legacy ? 'old' : vector.bucket;
      const extUrl = vector.path.split('/')[4] ?? '';
      const signature = signLink(vector.secret, { bucket, extUrl, proxy: vector.proxy }, Date.now(), {
        legacy: vector.legacy,
      });
      const path = formatLink({ bucket, size: 'full', signature, extUrl, proxy: vector.proxy });
      const { result, calls } = await appCalls(() => get(path));
      assert.equal(result.status, 200, vector.name);
      assertSameBytes(result.body, images[`vector ${bucket} ${vector.imageUrl}`]!.bytes, vector.name);
      assert.deepEqual(calls, [], vector.name);
    }
  });

  it('answers 410 itself for tampered, expired and wrong-scheme signatures', async () => {
    const hit = images.hit!;
    const good = link(hit.imageUrl);
    const [, bucket, size, signature, extUrl] = good.split('/');
    const tampered = `/${bucket}/${size}/${(signature ?? '').slice(0, -1)}${signature?.endsWith('A') ? 'B' : 'A'}/${extUrl}`;
    const expired = link(hit.imageUrl, { atMs: Date.now() - 14 * 86_400_000 });
    const legacyOnPlainBucket = link(hit.imageUrl, { legacy: true });
    const shortSignature = `/i/full/abc/${extUrl}`;
    for (const path of [tampered, expired, legacyOnPlainBucket, shortSignature]) {
      for (const method of ['GET', 'HEAD']) {
        const { result, calls } = await appCalls(() => get(path, { method }));
        assert.equal(result.status, 410, `${method} ${path}`);
        assert.equal(result.headers.get('x-imageproxy-error'), 'bad_signature');
        assert.equal(result.headers.get('cache-control'), ERROR_CACHE_CONTROL);
        assert.equal(result.headers.get('x-content-type-options'), 'nosniff');
        assert.equal(result.headers.get('content-type'), 'text/plain; charset=utf-8');
        if (method === 'GET') assert.equal(result.body.toString(), 'bad_signature: invalid or expired signature\n');
        assert.deepEqual(calls, []);
      }
    }
  });

  it('sends a miss to the app with the original URI and serves its X-Accel-Redirect', async () => {
    const imageUrl = 'https://example.com/miss.png';
    const key = storageKey(Buffer.from(imageUrl));
    const fileName = `${key}.250x.webp`;
    const bytes = randomBytes(1234);
    const path = `${link(imageUrl, { size: '250x' })}?cache=bust`;
    accelAnswers.set(path, {
      target: `/_imageproxy/${keyDirectory('i', key)}/${fileName}`,
      // As server/http/app.ts answers in accel mode.
      headers: { 'Content-Type': 'image/webp', 'Cache-Control': IMAGE_CACHE_CONTROL },
      write: async () => {
        await mkdir(join(root, keyDirectory('i', key)), { recursive: true });
        await writeFile(join(root, keyDirectory('i', key), fileName), bytes);
      },
    });
    const { result, calls } = await appCalls(() => get(path));
    assert.deepEqual(calls, [{ method: 'GET', url: path }]);
    assert.equal(result.status, 200);
    assertSameBytes(result.body, bytes, 'the body');
    assertFileHeaders(result, 'image/webp'); // one Cache-Control, not two
    const again = await appCalls(() => get(path));
    assert.deepEqual(again.calls, [], 'stored now: a hit');
    assertSameBytes(again.result.body, bytes, 'the body');
  });

  it('adds Cache-Control and the type on an X-Accel-Redirect answer that has neither', async () => {
    const hit = images.hit!;
    const path = link(hit.imageUrl, { size: '250x150' });
    accelAnswers.set(path, { target: `/_imageproxy/${keyDirectory('i', hit.key)}/${hit.key}.jpg`, headers: {} });
    const { result, calls } = await appCalls(() => get(path));
    assert.equal(calls.length, 1);
    assert.equal(result.status, 200);
    assertFileHeaders(result, 'image/jpeg');
    assertSameBytes(result.body, hit.bytes, 'the body');
  });

  it('leaves links that are not well-formed, and other methods, to the app', async () => {
    const hit = images.hit!;
    const good = link(hit.imageUrl);
    const extUrl = extUrlOf(hit.imageUrl);
    const table: Array<[string, string, string, number]> = [
      ['unknown bucket', 'GET', good.replace(/^\/i\//, '/zz/'), 404],
      ['bad size', 'GET', good.replace('/full/', '/999x/'), 404],
      ['percent-encoded', 'GET', good.replace(extUrl, `%61${extUrl.slice(1)}`), 404],
      ['wrong segment count', 'GET', '/i/full', 404],
      ['POST to a valid link', 'POST', good, 405],
      ['DELETE to a valid link', 'DELETE', good, 405],
    ];
    for (const [name, method, path, status] of table) {
      const { result, calls } = await appCalls(() => get(path, { method }));
      assert.deepEqual(calls, [{ method, url: path }], name);
      assert.equal(result.status, status, name);
      assert.equal(result.body.toString(), `${status === 405 ? 'method_not_allowed' : 'not_found'}: from the app\n`, name);
    }
  });

  it("never passes the app's /metrics through, in any spelling", async () => {
    for (const spelling of ['/metrics', '/metrics/', '/Metrics', '/METRICS?x=1', '//metrics', '/%6detrics']) {
      const { result, calls } = await appCalls(() => get(spelling));
      assertNginxError(result, 404, 'not_stored', spelling);
      assert.deepEqual(calls, [], spelling);
    }
  });

  it("answers 404 as text when an X-Accel-Redirect names a file gone meanwhile, without the app's image Cache-Control", async () => {
    const imageUrl = 'https://example.com/purged-meanwhile.jpg';
    const key = storageKey(Buffer.from(imageUrl));
    const path = link(imageUrl);
    accelAnswers.set(path, {
      target: `/_imageproxy/${keyDirectory('i', key)}/${key}.jpg`,
      headers: { 'Content-Type': 'image/jpeg', 'Cache-Control': IMAGE_CACHE_CONTROL },
    });
    const { result, calls } = await appCalls(() => get(path));
    assert.equal(calls.length, 1);
    assertNginxError(result, 404, 'not_stored', 'file gone after the app answered');
  });

  it('answers 504 as text when the app does not answer in time, also for a request passed on by an error_page', async () => {
    const { result, calls } = await appCalls(() => get('/not-a-link/stall'));
    assert.equal(calls.length, 1);
    assertNginxError(result, 504, 'app_timeout', 'stalled app');
  });

  it("passes the app's own error answers through untouched", async () => {
    const { result } = await appCalls(() => get('/i/full/x'));
    assert.equal(result.status, 404);
    assert.equal(result.headers.get('x-imageproxy-error'), 'not_found');
    assert.equal(result.headers.get('cache-control'), ERROR_CACHE_CONTROL);
    assert.equal(result.body.toString(), 'not_found: from the app\n');
  });

  it('never serves the internal prefix directly', async () => {
    const hit = images.hit!;
    const directory = keyDirectory('i', hit.key);
    for (const path of [`/_imageproxy/${directory}/${hit.key}.jpg`, `/_imageproxy/${directory}/${hit.key}.json`, '/_imageproxy/']) {
      const { result, calls } = await appCalls(() => get(path));
      assert.equal(result.status, 404, path);
      assert.deepEqual(calls, [], path);
    }
  });

  it('never serves a sidecar, temp file or anything outside the tree', async () => {
    const hit = images.hit!;
    const directory = keyDirectory('i', hit.key);
    const sidecarLink = link('https://example.com/sidecar.jpg', { size: '150x' });
    accelAnswers.set(sidecarLink, { target: `/_imageproxy/${directory}/${hit.key}.json`, headers: {} });
    const tempLink = link('https://example.com/temp.jpg', { size: '150x' });
    accelAnswers.set(tempLink, { target: `/_imageproxy/${directory}/.${hit.key}.jpg.123.tmp`, headers: {} });
    const escapeLink = link('https://example.com/escape.jpg', { size: '150x' });
    accelAnswers.set(escapeLink, { target: '/_imageproxy/../secret.txt', headers: {} });
    const paths = [
      sidecarLink,
      tempLink,
      escapeLink,
      `/${directory}/${hit.key}.json`,
      `/${directory}/.${hit.key}.jpg.123.tmp`,
      '/../secret.txt',
      '/i/../../secret.txt',
      '/%2e%2e/secret.txt',
      '/i/full/AAAAAAAAAAAAAAAA/..%2F..%2F..%2Fsecret.txt',
      '/i/full/AAAAAAAAAAAAAAAA/%2e%2e%2f%2e%2e%2fsecret.txt',
      `/i/full/${link(hit.imageUrl).split('/')[3]}/..%2f..%2fsecret.txt`,
      '/secret.txt',
      '/root/../secret.txt',
    ];
    for (const path of paths) {
      const answer = await get(path);
      const body = answer.body.toString('latin1');
      assert.ok(!body.includes(OUTSIDE_SECRET) && !body.includes(SIDECAR_TEXT), `${path} served ${answer.status} ${body.slice(0, 80)}`);
      assert.notEqual(answer.status, 200, path);
    }
  });
});

describe('the standalone config started by an ordinary user', {
  skip:
    nginxMissing() ??
    (process.getuid?.() === 0 ? false : 'not root: every other nginx test here already runs as an ordinary user'),
}, () => {
  it('starts as nobody (no user directive needed), serves a hit and refuses a bad link', async () => {
    const nobody = { uid: Number(execFileSync('id', ['-u', 'nobody']).toString()), gid: Number(execFileSync('id', ['-g', 'nobody']).toString()) };
    const prefixDir = await makeTempRoot('imageproxy-nginx-user-');
    let nginx: RunningNginx | null = null;
    try {
      await chmod(prefixDir, 0o755);
      const root = join(prefixDir, 'root');
      const configModuleDir = join(prefixDir, 'njs');
      await mkdir(configModuleDir, { recursive: true });
      // The checkout may sit below a directory nobody cannot enter (a 0700 temp dir):
      // give nginx its own copy of the script, as an install under /opt would.
      const njsDir = join(prefixDir, 'script');
      await mkdir(njsDir);
      await copyFile(join(NJS_DIR, 'imageproxy.js'), join(njsDir, 'imageproxy.js'));
      const port = await freePort();
      const input: NginxRenderInput = {
        ...BASE_INPUT,
        nginxListen: `127.0.0.1:${port}`,
        appListen: '127.0.0.1:9', // never reached: only a hit and a refusal are asked for
        root,
        njsDir,
        configModuleDir,
      };
      await writeFile(join(configModuleDir, CONFIG_MODULE_NAME), renderConfigModule(input), { mode: 0o600 });
      const imageUrl = 'https://example.com/ordinary-user.jpg';
      const key = storageKey(Buffer.from(imageUrl));
      const bytes = randomBytes(1234);
      await mkdir(join(root, keyDirectory('i', key)), { recursive: true });
      await writeFile(join(root, keyDirectory('i', key), `${key}.jpg`), bytes);
      execFileSync('chown', ['-R', `${nobody.uid}:${nobody.gid}`, prefixDir]);

      nginx = await startNginx(prefixDir, renderStandaloneConf(input, prefixDir, { workerProcesses: 1 }), port, { asUser: nobody });
      const base = `http://127.0.0.1:${port}`;
      const signature = signLink(BASE_INPUT.secrets[0] ?? '', { bucket: 'i', extUrl: extUrlOf(imageUrl), proxy: false }, Date.now());
      const hit = await request(base, `/i/full/${signature}/${extUrlOf(imageUrl)}`);
      assert.equal(hit.status, 200);
      assertSameBytes(hit.body, bytes, 'the body');
      const refused = await request(base, `/i/full/${signature === 'A'.repeat(16) ? 'B' : 'A'}${'A'.repeat(15)}/${extUrlOf(imageUrl)}`);
      assert.equal(refused.status, 410);
      // The master really runs as nobody.
      const status = await readFile(`/proc/${nginx.process.pid}/status`, 'utf8');
      assert.match(status, new RegExp(`^Uid:\\s+${nobody.uid}\\s`, 'm'));
    } finally {
      await nginx?.stop();
      await removeTempRoot(prefixDir);
    }
  });
});
