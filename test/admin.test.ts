// The admin listener against the whole server in-process: metrics only there (no spelling
// of /metrics answers metrics on the public listener), /healthz on both, /readyz proves
// the tree takes a write and the engine answers. Nothing leaves 127.0.0.1.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import sharp from 'sharp';
import type { ConfigLayer } from '../server/config/config.js';
import type { RunningServer } from '../server/http/server.js';
import { STATE_DIRECTORY } from '../server/contract/layout.js';
import { makeTempRoot, removeTempRoot, request, shortBody, signedPath, startLoopbackServer } from './helpers.js';
import { startOrigin, type Origin } from './origin.js';

const SECRET = 'admin-secret';

function start(root: string, overrides: ConfigLayer = {}): Promise<RunningServer> {
  return startLoopbackServer(root, SECRET, { statsRefreshSeconds: 0, ...overrides });
}

const METRICS_SPELLINGS = ['/metrics', '/metrics/', '/Metrics', '/METRICS?x=1', '//metrics', '/%6detrics'];

describe('admin listener', () => {
  let workDir: string;
  let app: RunningServer;
  let origin: Origin;
  let jpeg: Buffer;

  before(async () => {
    workDir = await makeTempRoot('imageproxy-admin-');
    jpeg = await sharp({ create: { width: 64, height: 48, channels: 3, background: '#3a6' } }).jpeg().toBuffer();
    origin = await startOrigin((_req, res) => res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg));
    app = await start(join(workDir, 'tree'));
  });
  after(async () => {
    await app.close();
    await origin.close();
    await removeTempRoot(workDir);
  });

  for (const spelling of METRICS_SPELLINGS) {
    it(`public ${spelling}: no metrics (a link refusal instead)`, async () => {
      const answer = await request(app.url, spelling);
      assert.notEqual(answer.status, 200);
      assert.ok([400, 404].includes(answer.status), `status ${answer.status}`);
      assert.ok(answer.headers.get('x-imageproxy-error'), 'answered by the link parser');
      assert.doesNotMatch(answer.body.toString(), /imageproxy_|# HELP|# TYPE/);
    });
  }

  it('admin /metrics: 200, Prometheus text with the app and process metrics', async () => {
    assert.ok(app.adminUrl);
    const answer = await request(app.adminUrl, '/metrics');
    assert.equal(answer.status, 200);
    assert.match(answer.headers.get('content-type') ?? '', /^text\/plain/);
    const text = answer.body.toString();
    assert.match(text, /^# TYPE imageproxy_responses_total counter$/m);
    assert.match(text, /^# TYPE imageproxy_queue_depth gauge$/m);
    assert.match(text, /^imageproxy_queue_depth\{queue="requests"\} \d+$/m);
    assert.match(text, /^imageproxy_queue_depth\{queue="resize"\} 0$/m);
    assert.match(text, /^imageproxy_nodejs_eventloop_lag_p99_seconds /m);
    assert.match(text, /^imageproxy_process_resident_memory_bytes /m);
  });

  it('admin serves exact paths only: /Metrics and /metrics/ are 404 there too', async () => {
    assert.ok(app.adminUrl);
    for (const path of ['/Metrics', '/metrics/', '/nothing']) {
      assert.equal((await request(app.adminUrl, path)).status, 404, path);
    }
    assert.equal((await request(app.adminUrl, '/metrics', { method: 'POST' })).status, 405);
  });

  it('/healthz answers 200 ok on both listeners', async () => {
    assert.ok(app.adminUrl);
    for (const base of [app.url, app.adminUrl]) {
      const answer = await request(base, '/healthz');
      assert.equal(answer.status, 200, base);
      assert.equal(answer.body.toString(), 'ok\n');
    }
  });

  it('the public /healthz is an exact path: /HEALTHZ and /healthz/ are link refusals, not the probe', async () => {
    for (const spelling of ['/HEALTHZ', '/healthz/', '/Healthz']) {
      const answer = await request(app.url, spelling);
      assert.ok(answer.status >= 400 && answer.status < 500, `${spelling}: ${answer.status}`);
      assert.ok(answer.headers.get('x-imageproxy-error') !== null, spelling);
      assert.notEqual(answer.body.toString(), 'ok\n', spelling);
    }
  });

  it('/readyz: 200 ready, leaves no probe file, and is not on the public listener', async () => {
    assert.ok(app.adminUrl);
    const answer = await request(app.adminUrl, '/readyz');
    assert.equal(answer.status, 200, shortBody(answer.body, answer.headers.get('content-type')));
    assert.equal(answer.body.toString(), 'ready\n');
    assert.deepEqual(await readdir(join(workDir, 'tree', STATE_DIRECTORY)), []);
    assert.notEqual((await request(app.url, '/readyz')).status, 200);
  });

  it('responses_total counts miss, variant and hit by bucket', async () => {
    assert.ok(app.adminUrl);
    const imageUrl = origin.url('/counted.jpg').href;
    const link = (size: string, bucket = 'f'): string => signedPath({ secret: SECRET, imageUrl, atMs: Date.now(), size, bucket });
    assert.equal((await request(app.url, link('full'))).status, 200); // nothing stored: miss
    assert.equal((await request(app.url, link('full'))).status, 200); // hit
    assert.equal((await request(app.url, link('x200'))).status, 200); // original stored, thumbnail made: variant
    assert.equal((await request(app.url, link('x200'))).status, 200); // hit
    assert.equal((await request(app.url, link('150x', 't'))).status, 200); // other bucket, nothing stored: miss
    const text = (await request(app.adminUrl, '/metrics')).body.toString();
    assert.match(text, /^imageproxy_responses_total\{outcome="miss",bucket="f"\} 1$/m);
    assert.match(text, /^imageproxy_responses_total\{outcome="hit",bucket="f"\} 2$/m);
    assert.match(text, /^imageproxy_responses_total\{outcome="variant",bucket="f"\} 1$/m);
    assert.match(text, /^imageproxy_responses_total\{outcome="miss",bucket="t"\} 1$/m);
    assert.equal(origin.requests.length, 2);
  });

  it('responses_total counts a refusal under its bucket once the link is read; a malformed link under none', async () => {
    assert.ok(app.adminUrl);
    const link = signedPath({ secret: 'not-the-secret', imageUrl: origin.url('/refused.jpg').href, atMs: Date.now(), size: 'full', bucket: 't' });
    assert.equal((await request(app.url, link)).status, 410);
    assert.equal((await request(app.url, '/t/full/short')).status, 400);
    const text = (await request(app.adminUrl, '/metrics')).body.toString();
    assert.match(text, /^imageproxy_responses_total\{outcome="bad_signature",bucket="t"\} 1$/m);
    assert.match(text, /^imageproxy_responses_total\{outcome="bad_path"\} [1-9]\d*$/m);
    assert.doesNotMatch(text, /outcome="bad_path",bucket=/);
  });
});

describe('admin listener off and readiness failures', () => {
  let workDir: string;
  before(async () => {
    workDir = await makeTempRoot('imageproxy-admin-off-');
  });
  after(async () => {
    await removeTempRoot(workDir);
  });

  it('admin.listen null: no admin listener, and still no metrics on the public one', async () => {
    const app = await start(join(workDir, 'off'), { admin: { listen: null } });
    try {
      assert.equal(app.adminUrl, null);
      for (const spelling of METRICS_SPELLINGS) {
        const answer = await request(app.url, spelling);
        assert.notEqual(answer.status, 200, spelling);
        assert.doesNotMatch(answer.body.toString(), /# TYPE/);
      }
    } finally {
      await app.close();
    }
  });

  /**
   * Switches `mounted` between read-only and writable, or null (the test is skipped) when
   * that is impossible here. chmod does not stop root: as root `mounted` becomes a tmpfs
   * that is remounted read-only (unmounted by `release`); otherwise `chmodded` is made 0555.
   */
  function readOnlySwitch(mounted: string, chmodded: string, t: TestContext): { makeReadOnly(): Promise<void>; makeWritable(): Promise<void>; release(): void } | null {
    if (process.getuid?.() !== 0) {
      return { makeReadOnly: () => chmod(chmodded, 0o555), makeWritable: () => chmod(chmodded, 0o755), release: () => undefined };
    }
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mounted], { stdio: 'ignore' });
    } catch {
      t.skip('running as root without permission to mount a tmpfs: cannot make a directory read-only');
      return null;
    }
    return {
      makeReadOnly: async () => void execFileSync('mount', ['-o', 'remount,ro', mounted]),
      makeWritable: async () => void execFileSync('mount', ['-o', 'remount,rw', mounted]),
      release: () => void execFileSync('umount', [mounted], { stdio: 'ignore' }),
    };
  }

  it('a bucket directory that turns read-only makes /readyz 503 naming the bucket, the others and the tree still ok', async (t) => {
    const root = join(workDir, 'bucket-ro');
    const bucket = join(root, 't');
    await mkdir(bucket, { recursive: true });
    const readOnly = readOnlySwitch(bucket, bucket, t);
    if (readOnly === null) return;
    const app = await start(root);
    try {
      assert.ok(app.adminUrl);
      assert.equal((await request(app.adminUrl, '/readyz')).status, 200);
      await readOnly.makeReadOnly();
      const refused = await request(app.adminUrl, '/readyz');
      assert.equal(refused.status, 503);
      const text = refused.body.toString();
      assert.match(text, /^not ready: bucket t: E(ROFS|ACCES)\b/);
      assert.ok(text.includes(bucket), 'the answer names the directory');
      assert.doesNotMatch(text, /tree:|bucket i:|bucket f:|engine:/);
      await readOnly.makeWritable();
      assert.equal((await request(app.adminUrl, '/readyz')).status, 200);
      assert.deepEqual(await readdir(bucket), [], 'no probe file left');
    } finally {
      await readOnly.makeWritable().catch(() => {});
      await app.close();
      readOnly.release();
    }
  });

  it('a root that turns read-only makes /readyz 503 naming the tree check, and 200 again once writable', async (t) => {
    const root = join(workDir, 'ro');
    await mkdir(root, { recursive: true });
    const readOnly = readOnlySwitch(root, join(root, STATE_DIRECTORY), t);
    if (readOnly === null) return;
    const app = await start(root);
    try {
      assert.ok(app.adminUrl);
      assert.equal((await request(app.adminUrl, '/readyz')).status, 200);
      await readOnly.makeReadOnly();
      const refused = await request(app.adminUrl, '/readyz');
      assert.equal(refused.status, 503);
      assert.match(refused.body.toString(), /^not ready: tree: /);
      assert.doesNotMatch(refused.body.toString(), /engine:/);
      // Liveness is not readiness: the process is alive.
      assert.equal((await request(app.adminUrl, '/healthz')).status, 200);
      await readOnly.makeWritable();
      assert.equal((await request(app.adminUrl, '/readyz')).status, 200);
    } finally {
      await readOnly.makeWritable().catch(() => {});
      await app.close();
      readOnly.release();
    }
  });
});
