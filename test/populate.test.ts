/**
 * `imageproxy populate` as a real process of the built CLI (`npm run build` first)
 * against temp roots and loopback origins that count their requests: the report files,
 * the stored files and thumbnail pixel sizes, reruns that contact nobody, backoff, the
 * per-host and total bounds, a server sharing the tree, SIGINT mid-run, dry runs and
 * usage errors.
 */
import assert from 'node:assert/strict';
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { buildConfig } from '../server/config/config.js';
import { startServer } from '../server/http/server.js';
import { keyDirectory, storageKey } from '../server/contract/layout.js';
import { createLogger } from '../server/observe/log.js';
import { finishCli, lines, runCli, startCli, type CliRun } from './cliProcess.js';
import { makeTempRoot, removeTempRoot, request, signedPath, until } from './helpers.js';
import { startOrigin, type Origin } from './origin.js';

const SECRET = 'populate-test-secret';
const ENV = { IMAGEPROXY_ALLOW_PRIVATE_NETWORKS: 'true' };
/** For populate to stop after SIGINT: a deadline for a hung process, not a measure. */
const WITHIN_MS = 30_000;
// A process start (node, sharp) on a loaded machine.
const STARTUP_MS = 60_000;

let jpeg: Buffer;
let png: Buffer;
before(async () => {
  jpeg = await sharp({ create: { width: 600, height: 400, channels: 3, background: '#3080c0' } }).jpeg().toBuffer();
  png = await sharp({ create: { width: 300, height: 300, channels: 4, background: '#ff000080' } }).png().toBuffer();
});

const work: string[] = [];
after(async () => {
  for (const directory of work) await removeTempRoot(directory);
});

/** A fresh directory holding the list and, in `root/`, the bucket tree. */
async function workDirectory(): Promise<{ dir: string; root: string; list: string }> {
  const dir = await makeTempRoot('imageproxy-populate-');
  work.push(dir);
  return { dir, root: join(dir, 'root'), list: join(dir, 'list.txt') };
}

function populate(args: string[], dir: string, timeoutMs?: number): Promise<CliRun> {
  return runCli(['populate', ...args], { cwd: dir, env: ENV, ...(timeoutMs === undefined ? {} : { timeoutMs }) });
}

function keyOf(imageUrl: string): string {
  return storageKey(Buffer.from(imageUrl, 'utf8'));
}

/** Names in the key's directory that belong to the key, sorted. */
async function storedNames(root: string, imageUrl: string, bucket = 'i'): Promise<string[]> {
  const key = keyOf(imageUrl);
  try {
    return (await readdir(join(root, keyDirectory(bucket, key)))).filter((name) => name.startsWith(`${key}.`)).map((name) => name.slice(key.length)).sort();
  } catch {
    return [];
  }
}

async function pixelSize(root: string, imageUrl: string, suffix: string, bucket = 'i'): Promise<string> {
  const key = keyOf(imageUrl);
  const { width, height } = await sharp(join(root, keyDirectory(bucket, key), `${key}${suffix}`)).metadata();
  return `${width}x${height}`;
}

async function readLines(path: string): Promise<string[]> {
  return lines(await readFile(path, 'utf8'));
}

function requestedPaths(origin: Origin): string[] {
  return origin.requests.map((request) => request.url ?? '');
}

/** Serves /*.jpg and /*.png from the fixtures, 404 for /missing*, HTML for /page*. */
function imageHandler(holdMs = 0): (request: IncomingMessage, response: ServerResponse) => void {
  return (request, response) => {
    const path = request.url ?? '/';
    const answer = (): void => {
      if (path.startsWith('/missing')) {
        response.writeHead(404).end('no');
      } else if (path.startsWith('/page')) {
        response.writeHead(200, { 'Content-Type': 'image/jpeg' }).end('<!doctype html><html><body>hello</body></html>');
      } else if (path.endsWith('.png')) {
        response.writeHead(200, { 'Content-Type': 'image/png' }).end(png);
      } else {
        response.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg);
      }
    };
    if (holdMs === 0) answer();
    else setTimeout(answer, holdMs);
  };
}

/** Counts the requests being answered at once, over every origin it is given to. */
class InFlightCounter {
  now = 0;
  max = 0;
  handler(inner: (request: IncomingMessage, response: ServerResponse) => void) {
    return (request: IncomingMessage, response: ServerResponse): void => {
      this.now += 1;
      this.max = Math.max(this.max, this.now);
      response.once('close', () => {
        this.now -= 1;
      });
      inner(request, response);
    };
  }
}

describe('populate: a list with every kind of line', () => {
  let origin: Origin;
  let dir: string;
  let root: string;
  let list: string;
  let urls: Record<'a' | 'b' | 'c' | 'missing' | 'page', string>;
  let link: string;
  let first: CliRun;

  before(async () => {
    origin = await startOrigin(imageHandler());
    ({ dir, root, list } = await workDirectory());
    urls = {
      a: origin.url('/a.jpg').href,
      b: origin.url('/b.png').href,
      c: origin.url('/c.jpg').href,
      missing: origin.url('/missing.jpg').href,
      page: origin.url('/page.jpg').href,
    };
    link = signedPath({ secret: SECRET, imageUrl: urls.c, atMs: Date.now(), size: 'x200' });
    await writeFile(
      list,
      [
        '# images from the old site',
        '',
        urls.a,
        `  ${urls.b}  `,
        link,
        urls.missing,
        '',
        urls.page,
        urls.a,
        'ftp://127.0.0.1/nothing.jpg',
        '   # the end',
      ].join('\n') + '\n',
    );
    first = await populate([list, '--root', root, '--sizes', '150x,250x250'], dir);
  });
  after(() => origin.close());

  it('exits 1 because some lines failed, with a summary', () => {
    assert.equal(first.code, 1, first.stdout + first.stderr);
    assert.match(first.stdout, /populate: done: 6 entries .*ok 3, failed 3, skipped 0/);
    assert.match(first.stdout, /1 duplicate lines/);
  });

  it('writes .success and .failed: each line once, in input order, failures with their code', async () => {
    assert.deepEqual(await readLines(`${list}.success`), [urls.a, urls.b, link]);
    assert.deepEqual(await readLines(`${list}.failed`), [
      `${urls.missing} origin_status`,
      `${urls.page} not_an_image`,
      'ftp://127.0.0.1/nothing.jpg bad_url',
    ]);
  });

  it('fetched each image once, the duplicate and the bad URL not at all', () => {
    assert.deepEqual(requestedPaths(origin).sort(), ['/a.jpg', '/b.png', '/c.jpg', '/missing.jpg', '/page.jpg']);
  });

  it('stores originals, sidecars and the thumbnails asked for (a link adds its own size)', async () => {
    assert.deepEqual(await storedNames(root, urls.a), ['.150x.jpg', '.250x250.jpg', '.jpg', '.json']);
    assert.deepEqual(await storedNames(root, urls.b), ['.150x.png', '.250x250.png', '.json', '.png']);
    assert.deepEqual(await storedNames(root, urls.c), ['.150x.jpg', '.250x250.jpg', '.jpg', '.json', '.x200.jpg']);
    assert.deepEqual(await storedNames(root, urls.missing), ['.fail']);
    assert.deepEqual(await storedNames(root, urls.page), ['.fail']);
  });

  it('makes thumbnails of the right pixel sizes', async () => {
    assert.equal(await pixelSize(root, urls.a, '.jpg'), '600x400');
    assert.equal(await pixelSize(root, urls.a, '.150x.jpg'), '225x150');
    assert.equal(await pixelSize(root, urls.a, '.250x250.jpg'), '250x167');
    assert.equal(await pixelSize(root, urls.b, '.150x.png'), '150x150');
    assert.equal(await pixelSize(root, urls.c, '.x200.jpg'), '200x133');
  });

  it('a rerun contacts no origin, keeps the files, and answers the remembered failures again', async () => {
    const before = origin.requests.length;
    const names = await Promise.all([urls.a, urls.b, urls.c].map((url) => storedNames(root, url)));
    const rerun = await populate([list, '--root', root, '--sizes', '150x,250x250'], dir);
    assert.equal(rerun.code, 1, rerun.stdout + rerun.stderr);
    assert.equal(origin.requests.length, before, 'no origin request');
    assert.match(rerun.stdout, /ok 0, failed 3, skipped 3/);
    assert.deepEqual(await readLines(`${list}.success`), [urls.a, urls.b, link]);
    assert.deepEqual(await readLines(`${list}.failed`), [
      `${urls.missing} origin_status`,
      `${urls.page} not_an_image`,
      'ftp://127.0.0.1/nothing.jpg bad_url',
    ]);
    assert.deepEqual(await Promise.all([urls.a, urls.b, urls.c].map((url) => storedNames(root, url))), names);
  });

  it('--dry-run says what is stored, in backoff, invalid or to fetch; fetches and writes nothing', async () => {
    const fresh = origin.url('/fresh.jpg').href;
    const dryList = join(dir, 'dry.txt');
    await writeFile(dryList, [urls.a, fresh, urls.missing, 'nonsense', urls.a].join('\n'));
    const before = origin.requests.length;
    const run = await populate([dryList, '--root', root, '--dry-run'], dir);
    assert.equal(run.code, 1, run.stderr);
    assert.deepEqual(lines(run.stdout).slice(0, 4), [
      `stored ${urls.a}`,
      `fetch ${fresh}`,
      `backoff ${urls.missing}`,
      'failed nonsense bad_url',
    ]);
    assert.match(run.stdout, /1 already stored, 1 to fetch or make, 1 in backoff, 1 invalid, 1 duplicate lines/);
    assert.equal(origin.requests.length, before);
    assert.deepEqual(await storedNames(root, fresh), []);
    await assert.rejects(stat(`${dryList}.success`));
    await assert.rejects(stat(`${dryList}.failed`));
  });
});

describe('populate: concurrency bounds', () => {
  it('never has more than --per-host requests in flight at one host', async () => {
    const counter = new InFlightCounter();
    const origin = await startOrigin(counter.handler(imageHandler(150)));
    try {
      const { dir, root, list } = await workDirectory();
      await writeFile(list, Array.from({ length: 18 }, (_, n) => origin.url(`/${n}.jpg`).href).join('\n'));
      const run = await populate([list, '--root', root, '--per-host', '3', '--concurrency', '16'], dir);
      assert.equal(run.code, 0, run.stdout + run.stderr);
      assert.equal(origin.requests.length, 18);
      assert.ok(counter.max <= 3, `max in flight ${counter.max}`);
      assert.ok(counter.max >= 2, `requests overlapped (max ${counter.max})`);
    } finally {
      await origin.close();
    }
  });

  it('never has more than --concurrency requests in flight over several hosts', async () => {
    const counter = new InFlightCounter();
    const hosts = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5'];
    const origins = await Promise.all(hosts.map((host) => startOrigin(counter.handler(imageHandler(150)), host)));
    try {
      const { dir, root, list } = await workDirectory();
      const urls = origins.flatMap((origin) => Array.from({ length: 5 }, (_, n) => origin.url(`/${n}.jpg`).href));
      await writeFile(list, urls.join('\n'));
      const run = await populate([list, '--root', root, '--per-host', '4', '--concurrency', '3'], dir);
      assert.equal(run.code, 0, run.stdout + run.stderr);
      assert.deepEqual(
        origins.map((origin) => origin.requests.length),
        [5, 5, 5, 5],
      );
      assert.ok(counter.max <= 3, `max in flight ${counter.max}`);
      assert.ok(counter.max >= 2, `requests overlapped (max ${counter.max})`);
    } finally {
      await Promise.all(origins.map((origin) => origin.close()));
    }
  });
});

describe('populate beside a running server', () => {
  it('shares each fetch with a server on the same tree: every image fetched exactly once', async () => {
    const origin = await startOrigin(imageHandler(400));
    const { dir, root, list } = await workDirectory();
    const config = buildConfig({
      flags: { listen: '127.0.0.1:0', admin: { listen: null }, root, secrets: [SECRET], allowPrivateNetworks: true, logLevel: 'silent' },
    });
    const server = await startServer({ config, secrets: config.secrets, logger: createLogger('silent') });
    try {
      const urls = Array.from({ length: 10 }, (_, n) => origin.url(`/shared-${n}.jpg`).href);
      await writeFile(list, urls.join('\n'));
      const child = startCli(['populate', list, '--root', root, '--per-host', '2'], { cwd: dir, env: ENV });
      const finished = finishCli(child);
      // Once populate is fetching, the server asks for every image of the list too.
      await until(() => origin.requests.length > 0, { message: 'populate starts fetching', timeoutMs: STARTUP_MS });
      const answers = await Promise.all(
        urls.map((url) => request(server.url, signedPath({ secret: SECRET, imageUrl: url, atMs: Date.now() }))),
      );
      const run = await finished;
      assert.deepEqual(
        answers.map((answer) => answer.status),
        urls.map(() => 200),
      );
      assert.equal(run.code, 0, run.stdout + run.stderr);
      assert.deepEqual(requestedPaths(origin).sort(), urls.map((url) => new URL(url).pathname).sort());
      assert.deepEqual(await readLines(`${list}.success`), urls);
    } finally {
      await server.close();
      await origin.close();
    }
  });
});

describe('populate interrupted', () => {
  it('SIGINT: finishes what is in flight, exits 130, reports exactly the finished lines; a rerun does the rest', async () => {
    const origin = await startOrigin(imageHandler(250));
    try {
      const { dir, root, list } = await workDirectory();
      const urls = Array.from({ length: 30 }, (_, n) => origin.url(`/slow-${n}.jpg`).href);
      await writeFile(list, urls.join('\n'));
      const child = startCli(['populate', list, '--root', root, '--per-host', '2'], { cwd: dir, env: ENV });
      const finished = finishCli(child);
      await until(() => origin.requests.length >= 5, { message: 'five fetches started', timeoutMs: STARTUP_MS });
      child.kill('SIGINT');
      const run = await Promise.race([
        finished,
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no exit within ${WITHIN_MS} ms of SIGINT`)), WITHIN_MS)),
      ]);
      assert.equal(run.code, 130, run.stdout + run.stderr);
      assert.match(run.stdout, /populate: interrupted after \d+ entries/);
      const done = await readLines(`${list}.success`);
      assert.deepEqual(await readLines(`${list}.failed`), []);
      assert.ok(done.length >= 5 && done.length < urls.length, `${done.length} lines finished`);
      // Exactly the finished lines: those whose image is stored, and every fetch started was finished.
      const stored = [];
      for (const url of urls) if ((await storedNames(root, url)).includes('.jpg')) stored.push(url);
      assert.deepEqual(done, stored);
      assert.equal(origin.requests.length, done.length, 'every fetch started was finished and reported');

      const fetchedBefore = new Set(requestedPaths(origin));
      const rerun = await populate([list, '--root', root, '--per-host', '8'], dir);
      assert.equal(rerun.code, 0, rerun.stdout + rerun.stderr);
      const again = requestedPaths(origin).slice(fetchedBefore.size);
      assert.equal(again.length, urls.length - done.length);
      assert.ok(again.every((path) => !fetchedBefore.has(path)), 'nothing fetched twice');
      assert.deepEqual(await readLines(`${list}.success`), urls);
    } finally {
      await origin.close();
    }
  });
});

describe('populate --allow-private-networks', () => {
  it('fetches from a 127.0.0.1 origin with the flag, refuses it (blocked_destination) without', async () => {
    const origin = await startOrigin(imageHandler());
    try {
      const { dir, root, list } = await workDirectory();
      const imageUrl = origin.url('/flag.jpg').href;
      await writeFile(list, `${imageUrl}\n`);
      const refused = await runCli(['populate', list, '--root', root], { cwd: dir });
      assert.equal(refused.code, 1, refused.stdout + refused.stderr);
      assert.match(await readFile(`${list}.failed`, 'utf8'), /blocked_destination/);
      assert.deepEqual(requestedPaths(origin), [], 'nothing fetched without the flag');
      // A tree of its own: the first tree remembers the refusal (backoff).
      const allowedRoot = join(dir, 'allowed-root');
      const allowed = await runCli(['populate', list, '--root', allowedRoot, '--allow-private-networks'], { cwd: dir });
      assert.equal(allowed.code, 0, allowed.stdout + allowed.stderr);
      assert.deepEqual(requestedPaths(origin), ['/flag.jpg']);
      assert.deepEqual(await storedNames(allowedRoot, imageUrl), ['.jpg', '.json']);
    } finally {
      await origin.close();
    }
  });
});

describe('populate --formats', () => {
  it('makes each thumbnail for each format class ahead, one fetch per image; a rerun makes nothing', async () => {
    const origin = await startOrigin(imageHandler());
    try {
      const { dir, root, list } = await workDirectory();
      const urls = [origin.url('/a.jpg').href, origin.url('/b.png').href];
      await writeFile(list, urls.join('\n') + '\n');
      const run = await populate([list, '--root', root, '--sizes', '150x,250x250', '--formats', 'avif,webp'], dir);
      assert.equal(run.code, 0, run.stdout + run.stderr);
      assert.deepEqual(requestedPaths(origin).sort(), ['/a.jpg', '/b.png']);
      for (const url of urls) {
        const names = await storedNames(root, url);
        for (const stem of ['.150x.avif.', '.150x.webp.', '.250x250.avif.', '.250x250.webp.']) {
          assert.equal(names.filter((name) => name.startsWith(stem)).length, 1, `${url}: one ${stem}* in ${names.join(' ')}`);
        }
      }
      const rerun = await populate([list, '--root', root, '--sizes', '150x,250x250', '--formats', 'avif,webp'], dir);
      assert.equal(rerun.code, 0, rerun.stdout + rerun.stderr);
      assert.match(rerun.stdout, /ok 0, failed 0, skipped 2/);
      assert.equal(origin.requests.length, 2, 'no origin request');
    } finally {
      await origin.close();
    }
  });
});

describe('populate: usage errors exit 2 and do nothing', () => {
  const cases: { name: string; args: (list: string) => string[]; message: RegExp }[] = [
    { name: '--formats without --sizes', args: (list) => [list, '--formats', 'avif'], message: /^imageproxy: --formats: only thumbnails have formats/ },
    { name: 'a format not known', args: (list) => [list, '--sizes', '150x', '--formats', 'avif,jxl'], message: /^imageproxy: --formats: "jxl" is not a format/ },
    { name: 'a size not allowed', args: (list) => [list, '--sizes', '150x,999x'], message: /^imageproxy: --sizes: "999x" is not a size/ },
    { name: 'a bucket not configured', args: (list) => [list, '--bucket', 'zz'], message: /^imageproxy: --bucket: zz is not a configured bucket/ },
    { name: 'a concurrency of 0', args: (list) => [list, '--concurrency', '0'], message: /^imageproxy: --concurrency: 0 is not a positive integer/ },
    { name: 'a per-host bound that is no number', args: (list) => [list, '--per-host', 'many'], message: /^imageproxy: --per-host: many/ },
    { name: 'a list that does not exist', args: (list) => [`${list}.nope`], message: /^imageproxy: .*list\.txt\.nope: cannot read it/ },
  ];
  for (const testCase of cases) {
    it(testCase.name, async () => {
      const { dir, root, list } = await workDirectory();
      await writeFile(list, 'http://127.0.0.1:9/a.jpg\n');
      const run = await populate([...testCase.args(list), '--root', root], dir);
      assert.equal(run.code, 2, run.stdout + run.stderr);
      assert.match(run.stderr, testCase.message);
      await assert.rejects(stat(`${list}.success`));
      await assert.rejects(stat(root));
    });
  }
});
