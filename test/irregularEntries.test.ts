/**
 * Entries of a tree that are no regular file: a FIFO at a sidecar's or a backoff record's
 * name, a symlink at an image's name pointing out of the tree, a bucket or shard
 * directory that is a symlink. Each against real processes: `serve` (the built CLI; `npm
 * run build` first) answered over loopback, `check` and `stats` run to completion; and
 * the exit machinery (server/cli/processExit.ts) in a child whose thread pool is stuck on a
 * FIFO. Nothing may block, follow a link out of the tree, or outlive its signal.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { lstat, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { pino } from 'pino';
import type { AddressInfo } from 'node:net';
import { buildConfig } from '../server/config/config.js';
import { createApp } from '../server/http/app.js';
import { failureFileName, keyDirectory, metadataFileName, storageKey } from '../server/contract/layout.js';
import { imageUrlBytes } from '../server/contract/link.js';
import { kindOf } from '../server/tree/regularFile.js';
import { ImageStore } from '../server/tree/store.js';
import { cleanEnv, runCli, startCli } from './cliProcess.js';
import { extUrlOf, makeTempRoot, removeTempRoot, request, signedPath, until, type Answer } from './helpers.js';
import { startOrigin, type Origin } from './origin.js';

const SECRET = 'irregular-secret';
const WAIT_MS = 20_000;
/**
 * What a hit or a readiness probe may take while the FIFO link is requested: 1 s, or four
 * times the slowest of the same probes just before, on a machine too loaded for 1 s. A
 * stuck thread pool shows as a probe that never answers (WAIT_MS), far past either.
 */
const ANSWER_WITHIN_MS = 1000;
const ANSWER_SLOWDOWN_ALLOWED = 4;
const EXIT_WITHIN_MS = 15_000;

function keyOf(imageUrl: string): string {
  return storageKey(imageUrlBytes(extUrlOf(imageUrl)));
}

function keyPath(root: string, imageUrl: string, name: (key: string) => string): string {
  const key = keyOf(imageUrl);
  return join(root, keyDirectory('i', key), name(key));
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  );
}

/** The request's answer and how long it took; null when it failed or took over WAIT_MS (a hang fails the test, never holds it). */
async function timed(baseUrl: string, path: string): Promise<{ answer: Answer | null; ms: number }> {
  const started = Date.now();
  const late = new Promise<null>((done) => setTimeout(() => done(null), WAIT_MS).unref());
  const answer = await Promise.race([request(baseUrl, path).catch(() => null), late]);
  return { answer, ms: Date.now() - started };
}

interface LogLine {
  msg: string;
  [field: string]: unknown;
}

interface Served {
  child: ChildProcessWithoutNullStreams;
  url: string;
  adminUrl: string;
  logs: LogLine[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** serve over `root` with direct delivery and no heal pass: requests meet the planted entries, not a repaired tree. */
async function serve(cwd: string, root: string, extra: Record<string, unknown> = {}): Promise<Served> {
  const configPath = join(cwd, 'config.json');
  const config = {
    listen: '127.0.0.1:0',
    admin: { listen: '127.0.0.1:0' },
    root,
    secrets: [SECRET],
    delivery: 'direct',
    allowPrivateNetworks: true,
    healIntervalSeconds: 0,
    statsRefreshSeconds: 0,
    ...extra,
  };
  await writeFile(configPath, JSON.stringify(config), { mode: 0o600 });
  const child = startCli(['serve', '--config', configPath], { cwd });
  const logs: LogLine[] = [];
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) =>
    child.once('close', (code, signal) => done({ code, signal })),
  );
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (line.startsWith('{')) logs.push(JSON.parse(line) as LogLine);
  });
  let gone = false;
  void exited.then(() => (gone = true));
  await until(() => gone || logs.some((line) => line.msg.startsWith('listening on')), { message: 'serve listening', timeoutMs: WAIT_MS });
  const listening = logs.find((line) => line.msg.startsWith('listening on'));
  if (listening === undefined) throw new Error(`serve exited: ${stderr}`);
  return { child, url: String(listening.address), adminUrl: String(listening.admin), logs, exited };
}

describe('serve: a FIFO at a sidecar name, a symlink at an image name', () => {
  let cwd: string;
  let root: string;
  let origin: Origin;
  let served: Served;
  const png = new Map<string, Buffer>();
  const link = (name: string, size = 'full'): string => signedPath({ secret: SECRET, imageUrl: origin.url(`/${name}.png`).href, atMs: Date.now(), size });
  const imageUrl = (name: string): string => origin.url(`/${name}.png`).href;

  before(async () => {
    cwd = await makeTempRoot('imageproxy-irregular-serve-');
    root = join(cwd, 'tree');
    for (const [name, colour] of [['fifo', '#c33'], ['hit', '#3c3'], ['record', '#33c'], ['linked', '#cc3'], ['thumb', '#3cc']] as const) {
      png.set(name, await sharp({ create: { width: 40 + png.size, height: 30, channels: 3, background: colour } }).png().toBuffer());
    }
    origin = await startOrigin((req, res) => {
      const bytes = png.get((req.url ?? '').slice(1, -'.png'.length));
      if (bytes === undefined) res.writeHead(404).end();
      else res.writeHead(200, { 'Content-Type': 'image/png' }).end(bytes);
    });
    served = await serve(cwd, root, { shutdownGraceMs: 2000 });
  });
  after(async () => {
    if (served.child.exitCode === null && served.child.signalCode === null) served.child.kill('SIGKILL');
    await origin.close();
    await removeTempRoot(cwd);
  });

  it('8 requests for the FIFO link get clear answers; hits and /readyz answer within 1 s meanwhile; SIGTERM ends serve within 15 s', async () => {
    for (const name of ['fifo', 'hit']) {
      const first = await request(served.url, link(name));
      assert.equal(first.status, 200, `first fetch of ${name}`);
    }
    const sidecar = keyPath(root, imageUrl('fifo'), metadataFileName);
    assert.equal(await exists(sidecar), true, 'the fetch stored a sidecar');
    await rm(sidecar);
    execFileSync('mkfifo', [sidecar]);
    // A backoff record's name, for a link not fetched yet: a FIFO there too.
    const record = keyPath(root, imageUrl('record'), failureFileName);
    await mkdir(join(record, '..'), { recursive: true });
    execFileSync('mkfifo', [record]);

    const probeRound = () => Promise.all([timed(served.url, link('hit')), timed(served.adminUrl, '/readyz')]);
    let slowestBefore = 0;
    for (let round = 0; round < 3; round += 1) for (const { ms } of await probeRound()) slowestBefore = Math.max(slowestBefore, ms);
    const answerWithinMs = Math.max(ANSWER_WITHIN_MS, ANSWER_SLOWDOWN_ALLOWED * slowestBefore);
    const fifoRequests = Array.from({ length: 8 }, () => timed(served.url, link('fifo')));
    const recordRequest = timed(served.url, link('record'));
    const probes: Array<Promise<{ answer: Answer | null; ms: number; what: string }>> = [];
    for (let round = 0; round < 5; round += 1) {
      probes.push(timed(served.url, link('hit')).then((result) => ({ ...result, what: 'hit' })));
      probes.push(timed(served.adminUrl, '/readyz').then((result) => ({ ...result, what: '/readyz' })));
    }
    for (const probe of await Promise.all(probes)) {
      assert.equal(probe.answer?.status, 200, `${probe.what} answered`);
      assert.ok(probe.ms <= answerWithinMs, `${probe.what} took ${probe.ms} ms (allowed ${answerWithinMs} ms)`);
    }
    const hit = await request(served.url, link('hit'));
    assert.ok(hit.body.equals(png.get('hit') ?? Buffer.alloc(0)), 'a hit serves its own bytes');
    for (const { answer } of await Promise.all(fifoRequests)) {
      assert.equal(answer?.status, 200, 'the FIFO link is answered: its image is still stored');
      assert.ok(answer.body.equals(png.get('fifo') ?? Buffer.alloc(0)), 'with its own bytes');
    }
    const recordAnswer = (await recordRequest).answer;
    assert.equal(recordAnswer?.status, 200, 'a FIFO at a backoff record name does not stop the fetch');

    const moved = served.logs.filter((line) => line.msg.startsWith('damaged stored file moved aside'));
    assert.ok(moved.some((line) => line.reason === 'a FIFO, not a regular file' && String(line.relativePath).endsWith('.json')), 'the FIFO sidecar moved aside, logged');
    assert.ok(moved.some((line) => line.reason === 'a FIFO, not a regular file' && String(line.relativePath).endsWith('.fail')), 'the FIFO record moved aside, logged');
    assert.equal((await lstat(record).catch(() => null))?.isFIFO() === true, false, 'no FIFO left at the record name');
    const quarantine = await readdir(join(root, '.imageproxy', 'quarantine', 'i'));
    assert.ok(quarantine.some((name) => name.startsWith(`${keyOf(imageUrl('fifo'))}.json.`)), 'the FIFO is kept in the quarantine');

    const signalled = Date.now();
    served.child.kill('SIGTERM');
    const timeout = new Promise<null>((done) => setTimeout(() => done(null), EXIT_WITHIN_MS).unref());
    const exit = await Promise.race([served.exited, timeout]);
    assert.notEqual(exit, null, `serve still running ${EXIT_WITHIN_MS} ms after SIGTERM`);
    assert.equal(exit?.code, 0, 'a clean stop: nothing was stuck');
    assert.ok(Date.now() - signalled < EXIT_WITHIN_MS);
  });
});

describe('serve: a symlink at an image name is never followed', () => {
  let cwd: string;
  let root: string;
  let origin: Origin;
  let served: Served;
  let originBytes: Buffer;
  let outsideBytes: Buffer;
  let outsidePath: string;
  const imageUrl = (name: string): string => origin.url(`/${name}.png`).href;
  const link = (name: string, size = 'full'): string => signedPath({ secret: SECRET, imageUrl: imageUrl(name), atMs: Date.now(), size });

  before(async () => {
    cwd = await makeTempRoot('imageproxy-irregular-link-');
    root = join(cwd, 'tree');
    originBytes = await sharp({ create: { width: 64, height: 48, channels: 3, background: '#286' } }).png().toBuffer();
    // A valid PNG, so that nothing but the link itself could refuse it.
    outsideBytes = await sharp({ create: { width: 50, height: 50, channels: 3, background: '#f0f' } }).png({ compressionLevel: 0 }).toBuffer();
    outsidePath = join(cwd, 'secret-outside.png');
    await writeFile(outsidePath, outsideBytes);
    origin = await startOrigin((_req, res) => res.writeHead(200, { 'Content-Type': 'image/png' }).end(originBytes));
    served = await serve(cwd, root);
  });
  after(async () => {
    served.child.kill('SIGKILL');
    await served.exited;
    await origin.close();
    await removeTempRoot(cwd);
  });

  const plantLink = async (path: string): Promise<void> => {
    await mkdir(join(path, '..'), { recursive: true });
    await symlink(outsidePath, path);
  };
  const leaks = (body: Buffer): boolean => body.includes(outsideBytes.subarray(outsideBytes.length - 64));

  it('at an original name (with a sidecar that matches the target): moved aside, the origin fetched, the target never sent', async () => {
    await plantLink(keyPath(root, imageUrl('original'), (key) => `${key}.png`));
    await writeFile(keyPath(root, imageUrl('original'), metadataFileName), JSON.stringify({ bytes: outsideBytes.length, sourceUrl: null }));
    for (const headers of [{}, { Range: 'bytes=0-' }] as Array<Record<string, string>>) {
      const answer = await request(served.url, link('original'), { headers });
      assert.ok(!leaks(answer.body), 'the bytes of the target never appear');
      assert.ok(answer.status === 200 || answer.status === 206, `status ${answer.status}`);
    }
    const stored = await lstat(keyPath(root, imageUrl('original'), (key) => `${key}.png`));
    assert.equal(stored.isFile(), true, 'a real file in its place');
    assert.ok((await readFile(keyPath(root, imageUrl('original'), (key) => `${key}.png`))).equals(originBytes));
    assert.ok((await readFile(outsidePath)).equals(outsideBytes), 'the target is untouched');
  });

  it('at a thumbnail name: the thumbnail is made again, the target never sent', async () => {
    assert.equal((await request(served.url, link('thumb'))).status, 200);
    const thumbnail = keyPath(root, imageUrl('thumb'), (key) => `${key}.150x.png`);
    await plantLink(thumbnail);
    const answer = await request(served.url, link('thumb', '150x'));
    assert.equal(answer.status, 200);
    assert.ok(!leaks(answer.body), 'the bytes of the target never appear');
    assert.equal((await lstat(thumbnail)).isFile(), true, 'a real thumbnail in its place');
    const moved = served.logs.filter((line) => line.msg.startsWith('damaged stored file moved aside') && line.reason === 'a symbolic link, not a regular file');
    assert.equal(moved.length, 2, 'both links moved aside, each logged');
  });
});

describe('direct delivery: a file replaced after the lookup', () => {
  let cwd: string;
  let baseUrl: string;
  let close: () => Promise<void>;
  let servedPath = '';
  let outsideBytes: Buffer;

  before(async () => {
    cwd = await makeTempRoot('imageproxy-irregular-send-');
    outsideBytes = Buffer.from('outside the tree: never to be sent\n'.repeat(20));
    await writeFile(join(cwd, 'outside.txt'), outsideBytes);
    const config = buildConfig({ flags: { root: cwd, secrets: [SECRET], delivery: 'direct' } });
    // A lookup that found a regular file, which is then swapped (a race the lookup cannot see).
    const app = createApp({
      config,
      secrets: [SECRET],
      logger: pino({ level: 'silent' }),
      images: {
        get: async () => ({ kind: 'stored', cache: 'hit', image: { path: servedPath, relativePath: 'i/x.png', ext: 'png', bytes: 10, modifiedMs: 0 } }),
        close: async () => {},
      },
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise<void>((done) => server.once('listening', done));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    close = async () => {
      server.closeAllConnections();
      await new Promise<void>((done) => server.close(() => done()));
    };
  });
  after(async () => {
    await close();
    await removeTempRoot(cwd);
  });

  const someLink = (): string => signedPath({ secret: SECRET, imageUrl: 'https://example.org/x.png', atMs: Date.now() });

  it('a symlink: 404 not_stored, the target never sent (Range and conditional requests too)', async () => {
    servedPath = join(cwd, 'swapped-link.png');
    await symlink(join(cwd, 'outside.txt'), servedPath);
    for (const headers of [{ Range: 'bytes=0-' }, { 'If-None-Match': '"x"' }] as Array<Record<string, string>>) {
      const answer = await request(baseUrl, someLink(), { headers });
      assert.equal(answer.status, 404);
      assert.equal(answer.headers.get('x-imageproxy-error'), 'not_stored');
      assert.ok(!answer.body.includes(outsideBytes.subarray(0, 30)), 'the bytes of the target never appear');
    }
  });

  it('a FIFO: 404 not_stored at once, not held', async () => {
    servedPath = join(cwd, 'swapped-fifo.png');
    execFileSync('mkfifo', [servedPath]);
    const answers = await Promise.all(Array.from({ length: 8 }, () => timed(baseUrl, someLink())));
    for (const { answer } of answers) {
      assert.equal(answer?.status, 404);
      assert.equal(answer.headers.get('x-imageproxy-error'), 'not_stored');
    }
  });
});

describe('check and stats: symlinked bucket and shard directories are not walked; a FIFO sidecar is repaired', () => {
  let cwd: string;
  let root: string;
  let outside: string;
  let outsideListing: string[];
  const KEY_IN = storageKey(Buffer.from('https://example.org/inside.png'));
  const KEY_OUT = storageKey(Buffer.from('https://example.org/outside.png'));
  const KEY_FIFO = storageKey(Buffer.from('https://example.org/fifo.png'));
  let pngBytes: Buffer;

  const listing = async (directory: string): Promise<string[]> =>
    (await readdir(directory, { recursive: true })).map(String).sort();

  before(async () => {
    cwd = await makeTempRoot('imageproxy-irregular-walk-');
    root = join(cwd, 'tree');
    outside = join(cwd, 'outside');
    pngBytes = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#123' } }).png().toBuffer();
    const store = new ImageStore(root);
    await store.writeAtomic('i', KEY_IN, `${KEY_IN}.png`, pngBytes);
    await store.writeMetadata('i', KEY_IN, { sourceUrl: null, contentType: 'image/png', originContentType: null, bytes: pngBytes.length, width: 8, height: 8, frames: 1, sha256: '0'.repeat(64), fetchedAt: new Date(0).toISOString() });
    await store.writeAtomic('i', KEY_FIFO, `${KEY_FIFO}.png`, pngBytes);
    execFileSync('mkfifo', [join(store.directoryOf('i', KEY_FIFO), metadataFileName(KEY_FIFO))]);
    // Outside the tree: an original without a sidecar (a finding, and a repair that writes, if walked).
    const outsideShard = join(outside, KEY_OUT[0] ?? '', KEY_OUT[1] ?? '');
    await mkdir(outsideShard, { recursive: true });
    await writeFile(join(outsideShard, `${KEY_OUT}.png`), pngBytes);
    await symlink(outside, join(root, 'f'));
    // A first-level shard directory of `i` linked out of the tree too.
    const unused = [...'ABCDEFGHIJ'].find((name) => name !== KEY_IN[0] && name !== KEY_FIFO[0]) ?? 'Z';
    await symlink(join(outside, KEY_OUT[0] ?? ''), join(root, 'i', unused));
    outsideListing = await listing(outside);
  });
  after(async () => {
    await removeTempRoot(cwd);
  });

  it('check reports them as not-regular, never looks inside, and exits 1', async () => {
    const run = await runCli(['check', '--root', root, '--secret', 's', '--json'], { cwd, timeoutMs: WAIT_MS });
    assert.equal(run.code, 1, run.stderr);
    const findings = run.stdout.trim().split('\n').map((line) => JSON.parse(line) as { kind?: string; relativePath?: string; detail?: string; summary?: unknown });
    const paths = findings.filter((finding) => finding.kind !== undefined).map((finding) => `${finding.kind} ${finding.relativePath}`);
    assert.ok(paths.includes('not-regular f'), paths.join('; '));
    assert.ok(paths.some((path) => /^not-regular i\/[^/]+$/.test(path)), paths.join('; '));
    assert.ok(paths.includes(`not-regular ${keyDirectory('i', KEY_FIFO)}/${KEY_FIFO}.json`), paths.join('; '));
    assert.ok(paths.includes(`missing-sidecar ${keyDirectory('i', KEY_FIFO)}/${KEY_FIFO}.png`), paths.join('; '));
    assert.ok(!paths.some((path) => path.includes(KEY_OUT)), 'nothing inside the linked directories');
    assert.ok(findings.filter((finding) => finding.kind === 'not-regular' && finding.relativePath === 'f').every((finding) => /symbolic link: not walked/.test(finding.detail ?? '')));
  });

  it('check --repair: the FIFO sidecar moved aside and rebuilt, the linked directories left alone and unread, exit 1 (repair failed for them)', async () => {
    const run = await runCli(['check', '--root', root, '--secret', 's', '--repair'], { cwd, timeoutMs: WAIT_MS });
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stdout, /^not-regular\tf\ta symbolic link: not walked\tfailed: left alone/m);
    const sidecar = join(root, keyDirectory('i', KEY_FIFO), metadataFileName(KEY_FIFO));
    assert.equal((await lstat(sidecar)).isFile(), true, 'a rebuilt sidecar in place of the FIFO');
    assert.equal((JSON.parse(await readFile(sidecar, 'utf8')) as { bytes: number }).bytes, pngBytes.length);
    assert.deepEqual(await listing(outside), outsideListing, 'nothing written or moved outside the tree');
    assert.equal((await lstat(join(root, 'f'))).isSymbolicLink(), true, 'the linked bucket is left as it is');
  });

  it('stats counts only what is inside and says what it did not walk', async () => {
    const run = await runCli(['stats', '--root', root, '--secret', 's', '--json'], { cwd, timeoutMs: WAIT_MS });
    assert.equal(run.code, 0, run.stderr);
    const stats = JSON.parse(run.stdout) as { buckets: Record<string, { originals: number }> };
    assert.equal(stats.buckets.i?.originals, 2);
    assert.equal(stats.buckets.f?.originals, 0);
    assert.match(run.stderr, /^stats: f: a symbolic link, not walked$/m);
    assert.match(run.stderr, /^stats: i\/[^/]+: a symbolic link, not walked$/m);
  });
});

describe('purge: a FIFO in the audit log\'s place', () => {
  it('fails the target with the reason at once, never blocks', async () => {
    const cwd = await makeTempRoot('imageproxy-irregular-audit-');
    try {
      const state = join(cwd, 'tree', '.imageproxy');
      await mkdir(state, { recursive: true });
      execFileSync('mkfifo', [join(state, 'audit.log')]);
      const run = await runCli(['purge', '--root', join(cwd, 'tree'), '--secret', 's', '--image-url', 'https://example.org/a.png'], { cwd, timeoutMs: WAIT_MS });
      assert.equal(run.code, 1, run.stderr);
      assert.match(run.stderr, /purge: https:\/\/example\.org\/a\.png: ENXIO/);
    } finally {
      await removeTempRoot(cwd);
    }
  });
});

describe('ending a process whose thread pool is stuck on a FIFO', () => {
  let cwd: string;
  let fifo: string;
  // tsx is found from the checkout.
  const checkout = fileURLToPath(new URL('..', import.meta.url));
  const processExit = fileURLToPath(new URL('../server/cli/processExit.ts', import.meta.url));
  const progress = fileURLToPath(new URL('../server/cli/progress.ts', import.meta.url));
  before(async () => {
    cwd = await makeTempRoot('imageproxy-irregular-exit-');
    fifo = join(cwd, 'fifo');
    execFileSync('mkfifo', [fifo]);
  });
  after(async () => {
    await removeTempRoot(cwd);
  });

  /** Runs a module body in a child (tsx), with every pool thread stuck in open() of the FIFO when `stuck`. */
  const child = (body: string, stuck: boolean): ChildProcessWithoutNullStreams => {
    const script = `import { open } from 'node:fs/promises';
${stuck ? `for (let i = 0; i < 4; i += 1) open(${JSON.stringify(fifo)}, 'r').catch(() => {});` : ''}
${body}`;
    return spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: checkout, env: cleanEnv() });
  };
  const ended = (started: ChildProcessWithoutNullStreams): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string } | null> => {
    let stderr = '';
    started.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((done) =>
      started.once('close', (code, signal) => done({ code, signal, stderr })),
    );
    const timer = setTimeout(() => started.kill('SIGKILL'), EXIT_WITHIN_MS);
    return exit.then((result) => {
      clearTimeout(timer);
      return result.signal === 'SIGKILL' ? null : result;
    });
  };

  it('exitProcess: exit code when nothing is pending; the signal when a file operation is stuck (process.exit would hang)', async () => {
    const body = `import { exitProcess } from ${JSON.stringify(processExit)};
setTimeout(() => void exitProcess(3, 'SIGTERM', 300), 200);`;
    assert.deepEqual(await ended(child(body, false)), { code: 3, signal: null, stderr: '' });
    const stuck = await ended(child(body, true));
    assert.notEqual(stuck, null, 'ended, not killed by the test');
    assert.equal(stuck?.signal, 'SIGTERM');
  });

  it("a command's interrupt: a stuck command ends within its wind-down after SIGINT", async () => {
    const body = `import { interruptOnSignals } from ${JSON.stringify(progress)};
interruptOnSignals('test', { windDownMs: 500 });
process.stderr.write('ready\\n');
setInterval(() => {}, 1000);`;
    const started = child(body, true);
    const exit = ended(started);
    let seen = '';
    started.stderr.on('data', (chunk: Buffer) => (seen += chunk.toString('utf8')));
    await until(() => seen.includes('ready'), { message: 'the child is ready', timeoutMs: WAIT_MS });
    started.kill('SIGINT');
    const result = await exit;
    assert.notEqual(result, null, 'ended, not killed by the test');
    assert.equal(result?.signal, 'SIGINT');
    assert.match(result?.stderr ?? '', /test: not done 1 s after SIGINT; stopping now/);
  });
});

describe('kindOf: what an entry that is no regular file is', () => {
  const facts = (kind: string) => ({
    isDirectory: () => kind === 'dir',
    isFIFO: () => kind === 'fifo',
    isSocket: () => kind === 'socket',
    isCharacterDevice: () => kind === 'char',
    isBlockDevice: () => kind === 'block',
    isSymbolicLink: () => kind === 'link',
  });
  const cases: Array<[string, string]> = [
    ['link', 'a symbolic link'],
    ['dir', 'a directory'],
    ['fifo', 'a FIFO'],
    ['socket', 'a socket'],
    ['char', 'a device'],
    ['block', 'a device'],
    ['file', 'not a regular file'],
  ];
  for (const [kind, expected] of cases) it(kind, () => assert.equal(kindOf(facts(kind)), expected));
});
