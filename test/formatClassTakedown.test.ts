/**
 * `purge` and `purge --block` remove every format of an image: the files made for format
 * classes (`{key}.{label}.{avif|webp}.{ext}`, real AVIF and WebP, hard links of the
 * source-format thumbnail) and their backoff records go with the original, the
 * source-format thumbnails and the sidecar, in every bucket; after a block every size
 * answers 451 from the app whatever the client accepts. The whole server in-process, the
 * built CLI as a process, a loopback origin.
 */
import assert from 'node:assert/strict';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { buildConfig } from '../server/config/config.js';
import { startServer, type RunningServer } from '../server/http/server.js';
import { keyDirectory, storageKey } from '../server/contract/layout.js';
import { createLogger } from '../server/observe/log.js';
import { ERROR_CACHE_CONTROL } from '../server/http/responseHeaders.js';
import { ImageStore } from '../server/tree/store.js';
import { lines, runCli, type CliRun } from './cliProcess.js';
import { IMG_ACCEPTS, imageOf, linkClassFile, plantClassFile } from './formatClassFiles.js';
import { makeTempRoot, removeTempRoot, request, shortBody, signedPath, type Answer } from './helpers.js';
import { startOrigin, type Origin } from './origin.js';

const SECRET = 'format-takedown-secret';

describe('purge and purge --block remove every format of an image', () => {
  let workDir = '';
  let root = '';
  let jpeg: Buffer;
  let origin: Origin;
  let app: RunningServer;

  const link = (imageUrl: string, options: { size?: string; bucket?: string } = {}): string =>
    signedPath({ secret: SECRET, imageUrl, atMs: Date.now(), ...options });
  const get = (path: string, accept?: string): Promise<Answer> => request(app.url, path, accept === undefined ? {} : { headers: { accept } });
  const cli = (args: string[]): Promise<CliRun> => runCli(args, { cwd: workDir, env: { IMAGEPROXY_ROOT: root } });
  const dirOf = (key: string, bucket = 'i'): string => join(root, keyDirectory(bucket, key));
  const namesOf = async (key: string, bucket = 'i'): Promise<string[]> => {
    try {
      return (await readdir(dirOf(key, bucket))).filter((name) => name.startsWith(key)).sort();
    } catch {
      return [];
    }
  };

  /**
   * The image stored through the app (original, 250x250 JPEG thumbnail in bucket i) and,
   * beside them, the files of both classes as the service leaves them, a class backoff
   * record and a class lock; a class file in bucket f too. Returns the names planted.
   */
  async function storeEveryFormat(imageUrl: string): Promise<{ key: string; classFiles: string[]; lock: string }> {
    assert.equal((await get(link(imageUrl))).status, 200);
    assert.equal((await get(link(imageUrl, { size: '250x250' }))).status, 200);
    const key = storageKey(Buffer.from(imageUrl));
    const directory = dirOf(key);
    const classFiles = [
      await plantClassFile(directory, key, '250x250', 'avif', 'avif', await imageOf('avif', 250, 188)),
      await linkClassFile(directory, key, '250x250', 'webp', 'jpg'),
      await plantClassFile(directory, key, '150x', 'webp', 'webp', await imageOf('webp', 150, 113)),
    ];
    await new ImageStore(root).writeFailure('i', key, `${key}.150x.avif`, {
      failures: 1,
      lastFailureAt: new Date().toISOString(),
      retryAtMs: Date.now() + 60_000,
      code: 'bad_image',
      detail: null,
      message: null,
    });
    const lock = `${key}.250x250.avif.lock`;
    await mkdir(join(directory, lock));
    await mkdir(dirOf(key, 'f'), { recursive: true });
    await plantClassFile(dirOf(key, 'f'), key, '250x250', 'avif', 'avif', await imageOf('avif', 250, 188));
    assert.deepEqual(
      await namesOf(key),
      [`${key}.250x250.jpg`, `${key}.jpg`, `${key}.json`, `${key}.150x.avif.fail`, lock, ...classFiles].sort(),
    );
    return { key, classFiles, lock };
  }

  function removedNames(run: CliRun): string[] {
    return lines(run.stdout)
      .filter((line) => line.startsWith('removed '))
      .map((line) => line.slice(line.lastIndexOf('/') + 1))
      .sort();
  }

  before(async () => {
    jpeg = await sharp({ create: { width: 400, height: 300, channels: 3, background: '#aa3355' } }).jpeg().toBuffer();
    origin = await startOrigin((req, res) => {
      if ((req.url ?? '').endsWith('.jpg')) res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg);
      else res.writeHead(404).end('no');
    });
    workDir = await makeTempRoot('imageproxy-format-takedown-');
    root = join(workDir, 'tree');
    const config = buildConfig({
      flags: { listen: '127.0.0.1:0', admin: { listen: null }, root, secrets: [SECRET], allowPrivateNetworks: true, logLevel: 'silent', healIntervalSeconds: 0 },
    });
    app = await startServer({ config, secrets: config.secrets, logger: createLogger('silent') });
  });

  after(async () => {
    await app?.close();
    await origin?.close();
    await removeTempRoot(workDir);
  });

  it('purge <image URL>: every class file, hard link and class backoff record goes, in every bucket; a lock in use stays', async () => {
    const imageUrl = origin.url('/purged.jpg').href;
    const { key, classFiles, lock } = await storeEveryFormat(imageUrl);
    const run = await cli(['purge', imageUrl]);
    assert.equal(run.code, 0, run.stderr + run.stdout);
    assert.deepEqual(
      removedNames(run),
      [
        `${key}.250x250.jpg`,
        `${key}.jpg`,
        `${key}.json`,
        `${key}.150x.avif.fail`,
        ...classFiles,
        // bucket f
        `${key}.250x250.avif.avif`,
      ].sort(),
    );
    assert.deepEqual(await namesOf(key), [lock], 'only the lock of a write in progress is left');
    assert.deepEqual(await namesOf(key, 'f'), []);
  });

  it('purge --block <link>: every format gone, and every size answers 451 to a browser that accepts AVIF and to */*, the origin not asked', async () => {
    const imageUrl = origin.url('/blocked.jpg').href;
    const { key } = await storeEveryFormat(imageUrl);
    const fetchesBefore = origin.requests.length;
    const run = await cli(['purge', '--block', link(imageUrl, { size: '250x250' })]);
    assert.equal(run.code, 0, run.stderr + run.stdout);
    assert.match(run.stdout, new RegExp(`blocked key ${key} \\(1 digest\\(s\\)\\); removed 8 file\\(s\\)`));
    assert.deepEqual(await namesOf(key), [`${key}.250x250.avif.lock`]);
    assert.deepEqual(await namesOf(key, 'f'), []);
    for (const size of ['full', '250x250', '150x', 'x200']) {
      for (const accept of [...IMG_ACCEPTS, undefined]) {
        const path = size === 'full' ? link(imageUrl) : link(imageUrl, { size });
        const answer = await get(path, accept);
        const what = `${size}, Accept ${accept ?? '(none)'}`;
        assert.equal(answer.status, 451, `${what}: ${answer.status} ${shortBody(answer.body, answer.headers.get('content-type'))}`);
        assert.equal(answer.headers.get('x-imageproxy-error'), 'blocked', what);
        assert.equal(answer.headers.get('cache-control'), ERROR_CACHE_CONTROL, what);
      }
    }
    assert.equal(origin.requests.length, fetchesBefore, 'no request reached the origin');
    assert.deepEqual(await namesOf(key), [`${key}.250x250.avif.lock`], 'nothing stored again');
  });
});
