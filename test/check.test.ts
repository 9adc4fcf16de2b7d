/**
 * A tree that heals: `imageproxy check` (the built CLI as a process) on a tree holding
 * every kind of leftover and damage reports exactly those, `--repair` fixes exactly
 * those and a second check is clean, `--decode` finds what sniffs but does not decode;
 * the whole server (in-process) heals the same tree at start; the app moves a damaged
 * original or thumbnail aside and fetches or remakes it.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, readFile, readdir, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import sharp from 'sharp';
import { buildConfig, type ConfigLayer } from '../server/config/config.js';
import { startServer, type RunningServer } from '../server/http/server.js';
import { keyDirectory, storageKey, tempFileName, tempUnique } from '../server/contract/layout.js';
import { createLogger } from '../server/observe/log.js';
import { sha256Hex } from '../server/tree/originals.js';
import { inspectImage } from '../server/images/sniff.js';
import { ImageStore, type ImageMetadata } from '../server/tree/store.js';
import { THIS_HOST_TAG } from '../server/tree/atomicFile.js';
import { lines, runCli } from './cliProcess.js';
import { assertSameBytes, makeTempRoot, removeTempRoot, signedPath } from './helpers.js';
import { startOrigin } from './origin.js';

const SECRET = 'check-test-secret';

async function jpeg(width: number, height: number, seed: number): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 3, background: { r: seed % 256, g: (seed * 7) % 256, b: 90 } } })
    .jpeg()
    .toBuffer();
}

async function png(width: number, height: number): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 4, background: { r: 10, g: 200, b: 30, alpha: 0.5 } } })
    .png()
    .toBuffer();
}

/** A PNG whose header reads fine but whose pixel data is garbage: sniffs, does not decode. */
async function undecodablePng(): Promise<Buffer> {
  const bytes = Buffer.from(await png(64, 64));
  const idat = bytes.indexOf('IDAT');
  bytes.fill(0x5a, idat + 4, bytes.length - 12);
  return bytes;
}

/** The pid of a process that existed and has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  await new Promise((done) => child.once('exit', done));
  assert.ok(child.pid !== undefined);
  return child.pid;
}

function keyOf(name: string): string {
  return storageKey(Buffer.from(`http://127.0.0.1/${name}`));
}

function dirOf(root: string, key: string): string {
  return join(root, keyDirectory('i', key));
}

type PathName =
  | 'liveTemp'
  | 'deadTemp'
  | 'oldTemp'
  | 'freshLock'
  | 'staleLock'
  | 'noSidecar'
  | 'empty'
  | 'truncated'
  | 'truncatedThumb'
  | 'html'
  | 'emptyThumb'
  | 'htmlThumb'
  | 'undecodable';

interface Leftovers {
  /** `kind path` lines check must print, sorted. */
  expected: string[];
  keys: Record<'sound' | 'locked' | 'staleLocked' | 'noSidecar' | 'empty' | 'truncated' | 'html' | 'undecodable' | 'sidecarOnly', string>;
  paths: Record<PathName, string>;
  noSidecarBytes: Buffer;
}

/**
 * Every kind of finding once, beside what must be left alone: a sound original with a
 * thumbnail, a temp of a live writer (this process), a fresh lock, a sidecar alone.
 */
async function plantLeftovers(root: string): Promise<Leftovers> {
  const store = new ImageStore(root);
  const keys = {
    sound: keyOf('sound'),
    locked: keyOf('locked'),
    staleLocked: keyOf('stale-locked'),
    noSidecar: keyOf('no-sidecar'),
    empty: keyOf('empty'),
    truncated: keyOf('truncated'),
    html: keyOf('html'),
    undecodable: keyOf('undecodable'),
    sidecarOnly: keyOf('sidecar-only'),
  };
  const provenance = (name: string) => ({ sourceUrl: `http://127.0.0.1/${name}`, originContentType: 'image/jpeg', fetchedAt: new Date().toISOString() });
  const stored = async (key: string, bytes: Buffer, name: string) => {
    const info = inspectImage(bytes);
    assert.ok(info !== null);
    return store.storeOriginal('i', key, { ...info, bytes }, provenance(name));
  };
  const paths = {} as Record<PathName, string>;
  const relative = (key: string, name: string) => `${keyDirectory('i', key)}/${name}`;

  await stored(keys.sound, await jpeg(80, 60, 1), 'sound');
  await store.storeImage('i', keys.sound, '150x', 'jpg', await jpeg(40, 30, 1));
  paths.liveTemp = relative(keys.sound, tempFileName(`${keys.sound}.x200.jpg`, tempUnique({ pid: process.pid, hostTag: THIS_HOST_TAG }, 'live01')));
  paths.deadTemp = relative(keys.sound, tempFileName(`${keys.sound}.250x250.jpg`, tempUnique({ pid: await deadPid(), hostTag: THIS_HOST_TAG }, 'dead01')));
  paths.oldTemp = relative(keys.sound, tempFileName(`${keys.sound}.json`, '1.old01'));
  for (const path of [paths.liveTemp, paths.deadTemp, paths.oldTemp]) await writeFile(join(root, path), 'partial');
  const longAgo = new Date(Date.now() - 7_200_000);
  await utimes(join(root, paths.oldTemp), longAgo, longAgo);

  paths.freshLock = relative(keys.locked, `${keys.locked}.lock`);
  paths.staleLock = relative(keys.staleLocked, `${keys.staleLocked}.150x.lock`);
  for (const path of [paths.freshLock, paths.staleLock]) await mkdir(join(root, path), { recursive: true });
  // A holder refreshes its lock every 5 s; a minute ahead stays fresh for the whole test.
  const ahead = new Date(Date.now() + 60_000);
  await utimes(join(root, paths.freshLock), ahead, ahead);
  const minuteAgo = new Date(Date.now() - 60_000);
  await utimes(join(root, paths.staleLock), minuteAgo, minuteAgo);

  const noSidecarBytes = await png(30, 20);
  paths.noSidecar = relative(keys.noSidecar, `${keys.noSidecar}.png`);
  await store.storeImage('i', keys.noSidecar, null, 'png', noSidecarBytes);

  await stored(keys.empty, await jpeg(50, 50, 3), 'empty');
  paths.empty = relative(keys.empty, `${keys.empty}.jpg`);
  await truncate(join(root, paths.empty), 0);

  const truncatedBytes = await jpeg(120, 90, 4);
  await stored(keys.truncated, truncatedBytes, 'truncated');
  await store.storeImage('i', keys.truncated, '150x', 'jpg', await jpeg(40, 30, 4));
  paths.truncated = relative(keys.truncated, `${keys.truncated}.jpg`);
  paths.truncatedThumb = relative(keys.truncated, `${keys.truncated}.150x.jpg`);
  await truncate(join(root, paths.truncated), Math.floor(truncatedBytes.length / 2));

  paths.html = relative(keys.html, `${keys.html}.jpg`);
  await store.writeAtomic('i', keys.html, `${keys.html}.jpg`, Buffer.from('<!doctype html><html><body>Not found</body></html>'));

  paths.emptyThumb = relative(keys.sound, `${keys.sound}.x200.jpg`);
  await store.storeImage('i', keys.sound, 'x200', 'jpg', Buffer.alloc(0));
  paths.htmlThumb = relative(keys.sound, `${keys.sound}.250x250.jpg`);
  await store.storeImage('i', keys.sound, '250x250', 'jpg', Buffer.from('<html>oops</html>'));

  paths.undecodable = relative(keys.undecodable, `${keys.undecodable}.150x.png`);
  await store.storeImage('i', keys.undecodable, '150x', 'png', await undecodablePng());

  await store.writeMetadata('i', keys.sidecarOnly, {
    sourceUrl: 'http://127.0.0.1/sidecar-only',
    contentType: 'image/jpeg',
    originContentType: null,
    bytes: 10,
    width: 1,
    height: 1,
    frames: 1,
    sha256: '0'.repeat(64),
    fetchedAt: new Date().toISOString(),
  });

  const expected = [
    `stale-temp i/${paths.deadTemp}`,
    `stale-temp i/${paths.oldTemp}`,
    `stale-lock i/${paths.staleLock}`,
    `missing-sidecar i/${paths.noSidecar}`,
    `damaged-original i/${paths.empty}`,
    `damaged-original i/${paths.truncated}`,
    `damaged-original i/${paths.html}`,
    `damaged-thumbnail i/${paths.emptyThumb}`,
    `damaged-thumbnail i/${paths.htmlThumb}`,
  ].map((line) => line.replace(' i/i/', ' i/'));
  return { expected: expected.sort(), keys, paths, noSidecarBytes };
}

/** `kind path` of each finding line of check's stdout, sorted. */
function findingsOf(stdout: string): string[] {
  return lines(stdout)
    .filter((line) => line.includes('\t'))
    .map((line) => line.split('\t').slice(0, 2).join(' '))
    .sort();
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** `lockSeenAgain`: the server looks at locks it saw fresh again once they could be stale. */
async function assertHealed(root: string, planted: Leftovers, options: { lockSeenAgain: boolean }): Promise<void> {
  const { paths, keys } = planted;
  const at = (path: string) => join(root, path);
  assert.equal(await exists(at(paths.deadTemp)), false, 'temp of a dead writer removed');
  assert.equal(await exists(at(paths.oldTemp)), false, 'old temp removed');
  assert.equal(await exists(at(paths.liveTemp)), true, 'temp of a live writer kept');
  assert.equal(await exists(at(paths.staleLock)), false, 'stale lock removed');
  assert.equal(await exists(at(paths.freshLock)), !options.lockSeenAgain, options.lockSeenAgain ? 'lock nobody refreshed removed' : 'fresh lock kept');
  const sidecar = JSON.parse(await readFile(join(dirOf(root, keys.noSidecar), `${keys.noSidecar}.json`), 'utf8')) as ImageMetadata;
  assert.equal(sidecar.sourceUrl, null);
  assert.equal(sidecar.contentType, 'image/png');
  assert.equal(sidecar.bytes, planted.noSidecarBytes.length);
  assert.equal(sidecar.sha256, sha256Hex(planted.noSidecarBytes));
  assert.deepEqual([sidecar.width, sidecar.height, sidecar.frames], [30, 20, 1]);
  for (const path of [paths.empty, paths.truncated, paths.truncatedThumb, paths.html, paths.emptyThumb, paths.htmlThumb]) {
    assert.equal(await exists(at(path)), false, `${path} no longer served`);
  }
  assert.equal(await exists(join(dirOf(root, keys.truncated), `${keys.truncated}.json`)), false, 'sidecar of a damaged original moved along');
  const quarantined = (await readdir(join(root, '.imageproxy', 'quarantine', 'i'))).map((name) => name.replace(/\.\d{8}T[\d.]+Z$/, '')).sort();
  assert.deepEqual(
    quarantined,
    [
      `${keys.empty}.jpg`,
      `${keys.empty}.json`,
      `${keys.truncated}.jpg`,
      `${keys.truncated}.json`,
      `${keys.html}.jpg`,
      `${keys.sound}.x200.jpg`,
      `${keys.sound}.250x250.jpg`,
    ].sort(),
  );
  for (const name of [`${keys.sound}.jpg`, `${keys.sound}.json`, `${keys.sound}.150x.jpg`]) {
    assert.equal(await exists(join(dirOf(root, keys.sound), name)), true, `${name} kept`);
  }
  assert.equal(await exists(join(dirOf(root, keys.sidecarOnly), `${keys.sidecarOnly}.json`)), true, 'a sidecar alone is kept');
}

describe('imageproxy check', () => {
  let root = '';
  let planted: Leftovers;
  before(async () => {
    root = await makeTempRoot('imageproxy-check-');
    planted = await plantLeftovers(root);
  });
  after(() => removeTempRoot(root));
  const check = (...args: string[]) => runCli(['check', '--root', root, '--secret', SECRET, ...args], { cwd: root });

  test('reports exactly the planted leftovers and damage, changes nothing, exits 1', async () => {
    const run = await check();
    assert.equal(run.code, 1, run.stderr);
    assert.deepEqual(findingsOf(run.stdout), planted.expected);
    assert.match(run.stdout, /findings 9: stale-temp 2, stale-lock 1, missing-sidecar 1, damaged-original 3, damaged-thumbnail 2, not-regular 0\n$/);
    assert.equal(await exists(join(root, planted.paths.deadTemp)), true);
    assert.equal(await exists(join(root, planted.paths.empty)), true);
    assert.match(run.stderr, /check: done: \d+ shard directories/);
  });

  test('--json: one object per finding and a summary', async () => {
    const run = await check('--json');
    assert.equal(run.code, 1, run.stderr);
    const objects = lines(run.stdout).map((line) => JSON.parse(line) as Record<string, unknown>);
    const summary = objects.pop() as { summary: { found: Record<string, number> } };
    assert.equal(summary.summary.found['damaged-original'], 3);
    assert.deepEqual(objects.map((object) => `${String(object.kind)} ${String(object.relativePath)}`).sort(), planted.expected);
  });

  test('--repair fixes exactly those (exit 0); a second check is clean; --decode finds what sniffs but does not decode', async () => {
    const repaired = await check('--repair');
    assert.equal(repaired.code, 0, repaired.stderr + repaired.stdout);
    assert.deepEqual(findingsOf(repaired.stdout), planted.expected);
    for (const line of lines(repaired.stdout).filter((text) => text.includes('\t'))) assert.match(line, /\trepaired: /);
    await assertHealed(root, planted, { lockSeenAgain: false });

    const again = await check();
    assert.equal(again.code, 0, again.stdout);
    assert.match(again.stdout, /^findings 0: /);

    const decoded = await check('--decode');
    assert.equal(decoded.code, 1, decoded.stderr);
    assert.deepEqual(findingsOf(decoded.stdout), [`damaged-thumbnail ${planted.paths.undecodable}`]);
    assert.match(decoded.stdout, /does not decode: /);
  });

  test('usage errors exit 2', async () => {
    const run = await check('--bucket', 'nope');
    assert.equal(run.code, 2);
    assert.match(run.stderr, /^imageproxy: --bucket: nope is not a configured bucket/);
  });
});

async function startApp(root: string, overrides: ConfigLayer = {}): Promise<RunningServer> {
  const config = buildConfig({
    flags: { listen: '127.0.0.1:0', root, secrets: [SECRET], allowPrivateNetworks: true, logLevel: 'silent', admin: { listen: null }, ...overrides },
  });
  return startServer({ config, secrets: config.secrets, logger: createLogger('silent') });
}

describe('the server heals', () => {
  test('the tree at start: the same repairs as check --repair, and a lock nobody refreshes removed once it could be stale', async () => {
    const root = await makeTempRoot('imageproxy-heal-');
    const planted = await plantLeftovers(root);
    // Without the sample (its own test: test/corruption.test.ts): it would decode, and move aside, the undecodable thumbnail.
    const app = await startApp(root, { healVerifyPerPass: 0 });
    try {
      await app.firstHeal;
      await assertHealed(root, planted, { lockSeenAgain: true });
    } finally {
      await app.close();
      await removeTempRoot(root);
    }
  });

  test('a damaged original is not served: refetched (origin +1, its bytes), its thumbnail remade; an empty thumbnail remade', async () => {
    const root = await makeTempRoot('imageproxy-heal-');
    const imageBytes = await jpeg(300, 200, 9);
    const origin = await startOrigin((_request, response) => response.writeHead(200, { 'content-type': 'image/jpeg' }).end(imageBytes));
    const app = await startApp(root, { healIntervalSeconds: 0, stripMetadata: false });
    try {
      const imageUrl = origin.url('/photo.jpg').href;
      const key = storageKey(Buffer.from(imageUrl));
      const directory = dirOf(root, key);
      const get = (size?: string) => fetch(app.url + signedPath({ secret: SECRET, imageUrl, atMs: Date.now(), ...(size ? { size } : {}) }));
      assert.equal((await get()).status, 200);
      const first = await get('150x');
      assert.equal(first.status, 200);
      const thumbnailSize = await sharp(Buffer.from(await first.arrayBuffer())).metadata();
      assert.equal(origin.requests.length, 1);
      const thumbnail = join(directory, `${key}.150x.jpg`);
      const sizeOf = async (response: Response) => {
        const { width, height } = await sharp(Buffer.from(await response.arrayBuffer())).metadata();
        return [width, height];
      };
      assert.equal(await exists(thumbnail), true);

      await truncate(join(directory, `${key}.jpg`), 100);
      const refetched = await get();
      assert.equal(refetched.status, 200);
      assert.deepEqual(Buffer.from(await refetched.arrayBuffer()), imageBytes);
      assert.equal(origin.requests.length, 2);
      assertSameBytes(await readFile(join(directory, `${key}.jpg`)), imageBytes, 'the stored original');
      assert.equal(await exists(thumbnail), false, 'thumbnail of the damaged original removed');
      const quarantine = await readdir(join(root, '.imageproxy', 'quarantine', 'i'));
      assert.ok(quarantine.some((name) => name.startsWith(`${key}.jpg.`)), quarantine.join());

      const remade = await get('150x');
      assert.equal(remade.status, 200);
      assert.deepEqual(await sizeOf(remade), [thumbnailSize.width, thumbnailSize.height]);
      assert.equal(await exists(thumbnail), true);

      await truncate(thumbnail, 0);
      const again = await get('150x');
      assert.equal(again.status, 200);
      assert.deepEqual(await sizeOf(again), [thumbnailSize.width, thumbnailSize.height]);
      assert.ok((await stat(thumbnail)).size > 0);
      assert.equal(origin.requests.length, 2, 'thumbnails are remade from the stored original');
    } finally {
      await app.close();
      await origin.close();
      await removeTempRoot(root);
    }
  });
});
