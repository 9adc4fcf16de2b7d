/**
 * A takedown through the production shape: real nginx (config rendered by the CLI) in
 * front of the app in `accel` delivery, a loopback origin. nginx serves the stored image
 * itself from a handle in its open_file_cache; `purge --block` runs as a process while
 * requests keep coming; nginx must answer 451 once the command has exited, within the
 * open file cache's recheck (judged by when each request was sent, whatever the load).
 * Every format of a link goes with it: the files of format classes leave the disk. (This
 * config's nginx serves the source-format file to every client; the same block holds
 * once nginx picks class files by Accept, as nothing of them is left to pick.)
 */
import assert from 'node:assert/strict';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { buildConfig } from '../server/config/config.js';
import { startServer, type RunningServer } from '../server/http/server.js';
import { keyDirectory, storageKey } from '../server/contract/layout.js';
import { createLogger } from '../server/observe/log.js';
import { ERROR_CACHE_CONTROL } from '../server/http/responseHeaders.js';
import { finishCli, startCli } from './cliProcess.js';
import { IMG_ACCEPTS, imageOf, linkClassFile, plantClassFile } from './formatClassFiles.js';
import { makeTempRoot, removeTempRoot, request, signedPath, until, type Answer } from './helpers.js';
import { freePort, nginxMissing, startNginx, renderStandaloneWithCli, type RunningNginx } from './nginxHarness.js';
import { startOrigin, type Origin } from './origin.js';

const SECRET = 'takedown-nginx-secret';
/**
 * After the command's exit the file is gone: a request sent this long after it is past
 * open_file_cache_valid (1 s, counted in whole seconds by nginx) and must not get the image.
 */
const AFTER_EXIT_MS = 2000;
const POLL_MS = 50;
const missing = nginxMissing();
if (missing !== null) console.log(`# takedown through nginx skipped: ${missing}`);

describe('purge --block through real nginx', { skip: missing ?? false }, () => {
  let workDir = '';
  let root = '';
  let origin: Origin;
  let app: RunningServer | null = null;
  let nginx: RunningNginx | null = null;
  let base = '';
  let jpeg: Buffer;
  let everyFormatJpeg: Buffer;

  const link = (path: string, options: { size?: string; proxy?: boolean } = {}): string =>
    signedPath({ secret: SECRET, imageUrl: origin.url(path).href, atMs: Date.now(), ...options });
  const get = (path: string): Promise<Answer> => request(base, path);
  const fetchesOf = (path: string): number => origin.requests.filter((incoming) => incoming.url === path).length;

  before(async () => {
    jpeg = await sharp({ create: { width: 640, height: 480, channels: 3, background: '#336699' } }).jpeg().toBuffer();
    everyFormatJpeg = await sharp({ create: { width: 480, height: 360, channels: 3, background: '#993366' } }).jpeg().toBuffer();
    workDir = await makeTempRoot('imageproxy-takedown-nginx-');
    root = join(workDir, 'tree');
    origin = await startOrigin((req, res) => {
      // Other bytes for the second test: the first blocks these by digest too.
      if (req.url === '/every-format.jpg') res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(everyFormatJpeg);
      else if ((req.url ?? '').endsWith('.jpg')) res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg);
      else res.writeHead(404).end('no');
    });
    const nginxPort = await freePort();
    const config = buildConfig({
      flags: {
        listen: '127.0.0.1:0',
        admin: { listen: null },
        root,
        secrets: [SECRET],
        delivery: 'accel',
        allowPrivateNetworks: true,
        logLevel: 'silent',
        nginx: { listen: `127.0.0.1:${nginxPort}`, internalPrefix: '/_imageproxy' },
      },
    });
    app = await startServer({ config, secrets: config.secrets, logger: createLogger('silent') });
    const configPath = join(workDir, 'config.json');
    await writeFile(configPath, JSON.stringify({ ...config, listen: new URL(app.url).host }, null, 2), { mode: 0o600 });
    const prefix = join(workDir, 'nginx');
    const rendered = await renderStandaloneWithCli(configPath, prefix);
    nginx = await startNginx(prefix, rendered, nginxPort);
    base = `http://127.0.0.1:${nginxPort}`;
  });

  after(async () => {
    await nginx?.stop();
    await app?.close();
    await origin?.close();
    await removeTempRoot(workDir);
  });

  it('a hit nginx serves from its open file cache answers 451 blocked within 2 s of the command\'s exit', async () => {
    const full = link('/taken-down.jpg');
    const thumbnail = link('/taken-down.jpg', { size: '150x' });
    for (const path of [full, thumbnail, full, thumbnail, full]) {
      const answer = await get(path);
      assert.equal(answer.status, 200);
    }
    assert.equal(fetchesOf('/taken-down.jpg'), 1, 'stored once, then hits');

    const started = performance.now();
    const command = finishCli(startCli(['purge', '--block', full], { cwd: workDir, env: { IMAGEPROXY_ROOT: root } }));
    let exitedAt: number | null = null;
    void command.then(() => {
      exitedAt = performance.now();
    });
    const seen = new Map<number, number>();
    const servedLate: number[] = [];
    const blocked = await until(
      async () => {
        const sentAt = performance.now();
        const answer = await get(full);
        seen.set(answer.status, (seen.get(answer.status) ?? 0) + 1);
        if (answer.status === 451) return answer;
        assert.equal(answer.status, 200, `before the block takes effect only the image, got ${answer.status}`);
        assert.ok(answer.body.equals(jpeg), `the stored image, not ${answer.body.length} other bytes`);
        if (exitedAt !== null && sentAt - exitedAt >= AFTER_EXIT_MS) servedLate.push(Math.round(sentAt - exitedAt));
        return null;
      },
      { message: 'a 451 through nginx', intervalMs: POLL_MS, timeoutMs: 60_000 },
    );
    const blockedAfterMs = performance.now() - started;
    const run = await command;
    assert.equal(run.code, 0, run.stderr + run.stdout);
    console.log(
      `# takedown through nginx: first 451 ${(blockedAfterMs / 1000).toFixed(2)} s after purge --block started ` +
        `(command exited after ${exitedAt === null ? '?' : ((exitedAt - started) / 1000).toFixed(2)} s; ${seen.get(200) ?? 0} hits served before)`,
    );
    assert.deepEqual(servedLate, [], `the image served to requests sent ${AFTER_EXIT_MS} ms or more after the command exited (ms after it)`);
    assert.equal(blocked.headers.get('x-imageproxy-error'), 'blocked');
    assert.equal(blocked.headers.get('cache-control'), ERROR_CACHE_CONTROL);

    for (const path of [thumbnail, link('/taken-down.jpg', { proxy: true }), link('/taken-down.jpg', { size: '250x250' })]) {
      const answer = await get(path);
      assert.equal(answer.status, 451, path);
      assert.equal(answer.headers.get('x-imageproxy-error'), 'blocked');
    }
    assert.equal(fetchesOf('/taken-down.jpg'), 1, 'the origin was never asked again');
  });

  it('every format of a link: the files of format classes gone from disk, and 451 through nginx to a browser that accepts AVIF and to */*', async () => {
    const full = link('/every-format.jpg');
    const thumbnail = link('/every-format.jpg', { size: '250x250' });
    for (const path of [full, thumbnail]) assert.equal((await get(path)).status, 200);
    const key = storageKey(Buffer.from(origin.url('/every-format.jpg').href));
    const directory = join(root, keyDirectory('i', key));
    const classFiles = [
      await plantClassFile(directory, key, '250x250', 'avif', 'avif', await imageOf('avif', 250, 188)),
      await linkClassFile(directory, key, '250x250', 'webp', 'jpg'),
    ];
    const run = await finishCli(startCli(['purge', '--block', thumbnail], { cwd: workDir, env: { IMAGEPROXY_ROOT: root } }));
    assert.equal(run.code, 0, run.stderr + run.stdout);
    for (const name of classFiles) assert.ok(run.stdout.includes(`removed ${join(directory, name)}\n`), name);
    assert.deepEqual((await readdir(directory)).filter((name) => name.startsWith(key)), []);
    // A hit nginx opened before may be served from its open file cache until it looks again (within 2 s).
    for (const path of [thumbnail, full, link('/every-format.jpg', { size: '150x' })]) {
      for (const accept of IMG_ACCEPTS) {
        const answer = await until(() => request(base, path, { headers: { accept } }), {
          message: `451 through nginx for ${path} with Accept ${accept}`,
          done: (seen) => seen.status !== 200,
          intervalMs: POLL_MS,
        });
        assert.equal(answer.status, 451, `${path}, Accept ${accept}`);
        assert.equal(answer.headers.get('x-imageproxy-error'), 'blocked');
      }
    }
    assert.equal(fetchesOf('/every-format.jpg'), 1, 'the origin was never asked again');
  });
});
