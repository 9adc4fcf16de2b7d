/**
 * Takedowns that stick: the whole server in-process on a temp root, loopback origins that
 * count requests and connections, and `purge --block`, `block --host`, `unblock` run as
 * processes of the built CLI on the same root while the server keeps running.
 */
import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import type { AuditRecord } from '../server/takedown/audit.js';
import { parseBlocklist, type Blocklist } from '../server/takedown/blocklist.js';
import { blocklistPath } from '../server/takedown/blocklistStore.js';
import { auditLogPath } from '../server/takedown/auditStore.js';
import { buildConfig } from '../server/config/config.js';
import { startServer, type RunningServer } from '../server/http/server.js';
import { keyDirectory, storageKey } from '../server/contract/layout.js';
import { createLogger } from '../server/observe/log.js';
import { ERROR_CACHE_CONTROL } from '../server/http/responseHeaders.js';
import { finishCli, lines, runCli, startCli, type CliRun } from './cliProcess.js';
import { makeTempRoot, removeTempRoot, request, shortBody, signedPath, until, type Answer } from './helpers.js';
import { startOrigin, type Origin } from './origin.js';

const SECRET = 'takedown-secret';

describe('takedowns: purge --block, block --host, unblock, audit log', () => {
  let workDir = '';
  let root = '';
  let jpeg: Buffer;
  let origin: Origin;
  let origin2: Origin;
  let origin3: Origin;
  let app: RunningServer;
  let env: Record<string, string> = {};

  const link = (imageUrl: string, options: { size?: string; proxy?: boolean; bucket?: string } = {}): string =>
    signedPath({ secret: SECRET, imageUrl, atMs: Date.now(), ...options });
  const get = (path: string): Promise<Answer> => request(app.url, path);
  const cli = (args: string[], extraEnv: Record<string, string> = {}): Promise<CliRun> =>
    runCli(args, { cwd: workDir, env: { ...env, ...extraEnv } });
  const requestsFor = (server: Origin, path: string): number =>
    server.requests.filter((incoming) => incoming.url === path).length;
  const filesOf = async (imageUrl: string, bucket = 'i'): Promise<string[]> => {
    const key = storageKey(Buffer.from(imageUrl));
    try {
      return (await readdir(join(root, keyDirectory(bucket, key)))).filter((name) => name.startsWith(key)).sort();
    } catch {
      return [];
    }
  };
  const blocklist = async (): Promise<Blocklist> => parseBlocklist(await readFile(blocklistPath(root), 'utf8'));
  const auditRecords = async (): Promise<AuditRecord[]> =>
    lines(await readFile(auditLogPath(root), 'utf8')).map((line) => JSON.parse(line) as AuditRecord);

  let probes = 0;
  /**
   * Asks for links on `host` at a port nothing listens on until an answer shows the server
   * has read the blocklist's latest change (it rereads the file at most once a recheck
   * period, on a request). No origin is contacted whatever the answer: blocked, 451;
   * unreadable list, 500; otherwise the connection is refused.
   */
  const untilServerReads = (what: string, host: string, done: (answer: Answer) => boolean): Promise<Answer> =>
    until(() => get(link(`http://${host}:1/blocklist-probe-${(probes += 1)}.jpg`)), {
      message: `the server reads the blocklist: ${what}`,
      done,
      intervalMs: 100,
    });

  function assertBlocked(answer: Answer, what: string): void {
    assert.equal(answer.status, 451, `${what}: ${answer.status} ${shortBody(answer.body, answer.headers.get('content-type'))}`);
    assert.equal(answer.headers.get('x-imageproxy-error'), 'blocked', what);
    assert.equal(answer.headers.get('cache-control'), ERROR_CACHE_CONTROL, what);
    assert.match(answer.body.toString(), /^blocked: /, what);
  }

  before(async () => {
    jpeg = await sharp({ create: { width: 400, height: 300, channels: 3, background: '#aa3355' } }).jpeg().toBuffer();
    // Other bytes than the photo the tests block by content: for images that must stay unblocked.
    const otherJpeg = await sharp({ create: { width: 300, height: 400, channels: 3, background: '#3355aa' } }).jpeg().toBuffer();
    // Bytes stored under several URLs before a block (purge --copies).
    const copiedJpeg = await sharp({ create: { width: 320, height: 240, channels: 3, background: '#55aa33' } }).jpeg().toBuffer();
    const handler = (req: { url?: string }, res: ServerResponse): void => {
      const path = (req.url ?? '').split('?')[0] ?? '';
      if (path.startsWith('/other-bytes/')) res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(otherJpeg);
      else if (path.startsWith('/copies/')) res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(copiedJpeg);
      else if (path.endsWith('.jpg')) res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg);
      else res.writeHead(404).end('no');
    };
    origin = await startOrigin(handler);
    origin2 = await startOrigin(handler, '127.0.0.2');
    origin3 = await startOrigin(handler, '127.0.0.3');
    workDir = await makeTempRoot('imageproxy-takedown-');
    root = join(workDir, 'tree');
    env = { IMAGEPROXY_ROOT: root };
    const config = buildConfig({
      flags: {
        listen: '127.0.0.1:0',
        admin: { listen: null },
        root,
        secrets: [SECRET],
        allowPrivateNetworks: true,
        logLevel: 'silent',
        blockedHosts: ['127.0.0.3'],
      },
    });
    app = await startServer({ config, secrets: config.secrets, logger: createLogger('silent') });
  });

  after(async () => {
    await app?.close();
    await origin?.close();
    await origin2?.close();
    await origin3?.close();
    await removeTempRoot(workDir);
  });

  let photoUrl = '';

  it('purge --block <link>: every link to the image (any size, /proxy, other bucket) answers 451 without the origin; files gone', async () => {
    photoUrl = origin.url('/photo.jpg').href;
    assert.equal((await get(link(photoUrl))).status, 200);
    assert.equal((await get(link(photoUrl, { size: '150x' }))).status, 200);
    assert.equal((await get(link(photoUrl, { bucket: 'f' }))).status, 200);
    assert.equal(requestsFor(origin, '/photo.jpg'), 2);
    const key = storageKey(Buffer.from(photoUrl));
    assert.deepEqual(await filesOf(photoUrl), [`${key}.150x.jpg`, `${key}.jpg`, `${key}.json`]);

    // Any size of the link will do, and the signature does not matter.
    const run = await cli(['purge', '--block', link(photoUrl, { size: '250x250' }), '--note', 'ticket 7']);
    assert.equal(run.code, 0, run.stderr + run.stdout);
    assert.equal(lines(run.stdout).filter((line) => line.startsWith('removed ')).length, 5, run.stdout);
    assert.match(run.stdout, new RegExp(`blocked key ${key} \\(1 digest\\(s\\)\\); removed 5 file\\(s\\)`));

    // No wait here: the command waits for running servers before it removes files.
    for (const [what, path] of [
      ['full', link(photoUrl)],
      ['150x', link(photoUrl, { size: '150x' })],
      ['250x250 (never stored)', link(photoUrl, { size: '250x250' })],
      ['proxy', link(photoUrl, { proxy: true })],
      ['bucket f', link(photoUrl, { bucket: 'f' })],
    ] as const) {
      assertBlocked(await get(path), what);
    }
    assert.equal(requestsFor(origin, '/photo.jpg'), 2, 'no request reached the origin');
    assert.deepEqual(await filesOf(photoUrl), []);
    assert.deepEqual(await filesOf(photoUrl, 'f'), []);
    const list = await blocklist();
    assert.deepEqual(
      list.entries.map((entry) => [entry.kind, entry.kind === 'digest' ? entry.key : entry.value, entry.note]),
      [
        ['key', key, 'ticket 7'],
        ['digest', key, 'ticket 7'],
      ],
    );
  });

  it('the same bytes under another URL (?a=1, another host, /proxy) are refused with 451 and not stored', async () => {
    const withQuery = `${photoUrl}?a=1`;
    assertBlocked(await get(link(withQuery)), '?a=1');
    assert.equal(requestsFor(origin, '/photo.jpg?a=1'), 1, 'fetched once to see the bytes');
    assert.deepEqual(await filesOf(withQuery), [], 'nothing stored, no backoff record');
    // Not in backoff: asking again fetches again and is refused again.
    assertBlocked(await get(link(withQuery)), '?a=1 again');
    assert.equal(requestsFor(origin, '/photo.jpg?a=1'), 2);

    const repost = origin2.url('/repost.jpg').href;
    assertBlocked(await get(link(repost, { size: '150x' })), 'other host');
    assert.deepEqual(await filesOf(repost), []);
    assertBlocked(await get(link(origin2.url('/proxied.jpg').href, { proxy: true })), 'other host, /proxy');
  });

  it('rerun of purge --block: exit 1, nothing to do, no duplicate entries', async () => {
    const before = (await blocklist()).entries.length;
    const run = await cli(['purge', '--block', link(photoUrl)]);
    assert.equal(run.code, 1, run.stderr + run.stdout);
    assert.match(run.stdout, /already blocked and nothing stored/);
    assert.equal((await blocklist()).entries.length, before);
  });

  let copiesUrl = '';

  it('purge --block --copies: the same bytes stored under other URLs before the block go too; without --copies they stay', async () => {
    const [first, second, third] = ['/copies/a.jpg', '/copies/b.jpg?x=1', '/copies/c.jpg'].map((path) => origin.url(path).href) as [string, string, string];
    copiesUrl = first;
    for (const path of [link(first), link(second), link(second, { size: '150x' }), link(third)]) assert.equal((await get(path)).status, 200);
    const secondKey = storageKey(Buffer.from(second));
    const thirdKey = storageKey(Buffer.from(third));

    const plain = await cli(['purge', '--block', link(first)]);
    assert.equal(plain.code, 0, plain.stderr + plain.stdout);
    assert.deepEqual(await filesOf(second), [`${secondKey}.150x.jpg`, `${secondKey}.jpg`, `${secondKey}.json`], 'stored copies stay without --copies');
    assert.deepEqual(await filesOf(third), [`${thirdKey}.jpg`, `${thirdKey}.json`]);

    // Already blocked, its own files gone: the digests recorded in the list are looked for.
    const run = await cli(['purge', '--block', '--copies', link(first), '--note', 'ticket 9']);
    assert.equal(run.code, 0, run.stderr + run.stdout);
    assert.match(run.stdout, /removed 5 file\(s\), 5 of them copies under other URLs/);
    assert.match(run.stdout, /--copies read \d+ sidecar\(s\)/);
    assert.deepEqual(await filesOf(second), []);
    assert.deepEqual(await filesOf(third), []);
    const record = (await auditRecords()).at(-1) as AuditRecord;
    assert.equal(record.note, 'ticket 9');
    assert.equal(record.removed?.filter((path) => path.includes(secondKey)).length, 3);
    assert.equal(record.removed?.filter((path) => path.includes(thirdKey)).length, 2);
    // The copies' links: fetched again to see the bytes, refused, nothing stored.
    const before = requestsFor(origin, '/copies/c.jpg');
    assertBlocked(await get(link(third)), 'a removed copy');
    assert.equal(requestsFor(origin, '/copies/c.jpg'), before + 1);
    assert.deepEqual(await filesOf(third), []);

    const misuse = await cli(['purge', '--copies', link(first)]);
    assert.equal(misuse.code, 2, misuse.stderr);
    assert.match(misuse.stderr, /--copies goes with --block/);
    // Left as the later tests expect it: only the photo's entries in the list.
    const undo = await cli(['unblock', link(first)]);
    assert.equal(undo.code, 0, undo.stderr + undo.stdout);
  });

  it('block --host 127.0.0.2: its stored images are removed, links to it answer 451 without a connection; a rerun exits 1', async () => {
    const storedThere = origin2.url('/other-bytes/stored-before.jpg').href;
    const storedElsewhere = origin.url('/other-bytes/other-host.jpg').href;
    for (const path of [link(storedThere), link(storedThere, { size: '150x' }), link(storedThere, { bucket: 'f' }), link(storedElsewhere)]) {
      assert.equal((await get(path)).status, 200, path);
    }
    assert.equal((await filesOf(storedThere)).length, 3, 'original, thumbnail and sidecar stored');
    const run = await cli(['block', '--host', '127.0.0.2', '--secret', 'not-for-the-log']);
    assert.equal(run.code, 0, run.stderr + run.stdout);
    assert.match(run.stdout, /^blocked host 127\.0\.0\.2; removed 5 stored file\(s\) from it$/m);
    assert.deepEqual(await filesOf(storedThere), [], 'nothing of the blocked host left in bucket i (nginx would serve it)');
    assert.deepEqual(await filesOf(storedThere, 'f'), [], 'nor in bucket f');
    assert.equal((await filesOf(storedElsewhere)).length, 2, 'another host keeps its image');
    assert.equal((await get(link(storedElsewhere))).status, 200);
    await untilServerReads('host 127.0.0.2 blocked', '127.0.0.2', (answer) => answer.status === 451);
    const connections = origin2.connections;
    assertBlocked(await get(link(origin2.url('/fresh.jpg').href)), 'blocked host');
    assertBlocked(await get(link(origin2.url('/fresh.jpg').href, { proxy: true })), 'blocked host, /proxy');
    assert.equal(origin2.connections, connections, 'no connection to the blocked host');

    const again = await cli(['block', '--host', '127.0.0.2']);
    assert.equal(again.code, 1);
    assert.match(again.stdout, /already blocked/);
    assert.equal((await blocklist()).entries.filter((entry) => entry.kind === 'host').length, 1);
  });

  it('config blockedHosts: 451 without a connection; unblock --host says it stays blocked there', async () => {
    assertBlocked(await get(link(origin3.url('/a.jpg').href)), 'config host');
    assert.equal(origin3.connections, 0);
    const run = await cli(['unblock', '--host', '127.0.0.3'], { IMAGEPROXY_BLOCKED_HOSTS: '127.0.0.3' });
    assert.equal(run.code, 1, run.stderr + run.stdout);
    assert.match(run.stdout, /stays blocked by the config \(blockedHosts\)/);
  });

  it('unblock reverses each: the image and its bytes are fetched again, the host is contacted again', async () => {
    const run = await cli(['unblock', link(photoUrl)]);
    assert.equal(run.code, 0, run.stderr + run.stdout);
    assert.match(run.stdout, /unblocked key .* \(1 digest\(s\)\)/);
    const hostRun = await cli(['unblock', '--host', '127.0.0.2']);
    assert.equal(hostRun.code, 0, hostRun.stderr + hostRun.stdout);
    assert.deepEqual((await blocklist()).entries, []);
    await untilServerReads('host 127.0.0.2 unblocked', '127.0.0.2', (answer) => answer.status !== 451);

    const fetches = requestsFor(origin, '/photo.jpg');
    assert.equal((await get(link(photoUrl))).status, 200);
    assert.equal(requestsFor(origin, '/photo.jpg'), fetches + 1);
    assert.equal((await get(link(`${photoUrl}?a=1`))).status, 200);
    assert.equal((await get(link(origin2.url('/fresh.jpg').href))).status, 200);
    assert.equal(requestsFor(origin2, '/fresh.jpg'), 1);

    const again = await cli(['unblock', link(photoUrl)]);
    assert.equal(again.code, 1);
    assert.match(again.stdout, /not blocked/);
  });

  it('audit log: one line per purge, block and unblock, with target, user and argv (secrets redacted)', async () => {
    const records = await auditRecords();
    assert.deepEqual(
      records.map((record) => [record.action, record.target]),
      [
        ['block', link(photoUrl, { size: '250x250' })],
        ['block', link(photoUrl)],
        ['block', link(copiesUrl)],
        ['block', link(copiesUrl)],
        ['unblock', link(copiesUrl)],
        ['block', '127.0.0.2'],
        ['block', '127.0.0.2'],
        ['unblock', '127.0.0.3'],
        ['unblock', link(photoUrl)],
        ['unblock', '127.0.0.2'],
        ['unblock', link(photoUrl)],
      ],
    );
    const first = records[0];
    assert.ok(first !== undefined);
    assert.equal(first.action, 'block');
    assert.equal(first.removed?.length, 5);
    assert.equal(first.digests?.length, 1);
    assert.equal(first.key, storageKey(Buffer.from(photoUrl)));
    assert.deepEqual(first.argv.slice(0, 2), ['purge', '--block']);
    assert.equal(first.note, 'ticket 7');
    assert.ok(first.user.length > 0);
    assert.equal(records[1]?.changed, 0, 'the rerun changed nothing');
    assert.deepEqual(records[5]?.argv, ['block', '--host', '127.0.0.2', '--secret', '<redacted>']);
    assert.equal(records[5]?.host, '127.0.0.2');
    assert.equal(records[5]?.removedCount, 5, 'the stored files of the host, counted');
    assert.equal(records[6]?.removedCount, 0, 'the rerun found nothing left');
    assert.ok(!(await readFile(auditLogPath(root), 'utf8')).includes('not-for-the-log'));
    assert.ok(!(await readFile(blocklistPath(root), 'utf8')).includes('not-for-the-log'));
  });

  it('purge --from-file: links and image URLs, comments and blanks skipped; a bad line makes exit 1', async () => {
    const first = origin.url('/list-1.jpg').href;
    const second = origin.url('/list-2.jpg').href;
    assert.equal((await get(link(first))).status, 200);
    assert.equal((await get(link(second, { bucket: 't', size: '150x' }))).status, 200);
    const listFile = join(workDir, 'takedowns.txt');
    await writeFile(listFile, ['# DMCA batch', '', link(first), `  ${second}  `, 'not a link', ''].join('\n'));
    const run = await cli(['purge', '--from-file', listFile]);
    assert.equal(run.code, 1, run.stderr + run.stdout);
    assert.match(run.stderr, /line 5: not a link: neither a link/);
    assert.match(run.stdout, /ok 2, failed 1, skipped 0/);
    assert.deepEqual(await filesOf(first), []);
    assert.deepEqual(await filesOf(second, 't'), []);
    const purges = (await auditRecords()).filter((record) => record.action === 'purge');
    assert.deepEqual(purges.map((record) => record.target), [link(first), second]);
  });

  it('Ctrl-C: purge --block --from-file stops, blocks and removes only whole targets, exits 130; a rerun finishes', async () => {
    const listFile = join(workDir, 'many.txt');
    const urls = Array.from({ length: 300 }, (_, index) => `https://example.org/many/${index}.jpg`);
    await writeFile(listFile, `${urls.join('\n')}\n`);
    const keysBlocked = async (): Promise<Set<string>> =>
      new Set((await blocklist()).entries.filter((entry) => entry.kind === 'key').map((entry) => entry.value));
    const child = startCli(['purge', '--block', '--from-file', listFile], { cwd: workDir, env });
    const finished = finishCli(child);
    // Interrupt once the first entries are in the blocklist.
    await until(() => readFile(blocklistPath(root), 'utf8'), {
      message: 'the first entries in the blocklist',
      done: (text) => text.split('many/').length >= 3,
      intervalMs: 10,
    });
    child.kill('SIGINT');
    const run = await finished;
    assert.equal(run.code, 130, run.stderr + run.stdout);
    assert.match(run.stdout, /purge: interrupted after \d+ entries/);
    const blocked = await keysBlocked();
    const audited = (await auditRecords()).filter((record) => record.action === 'block' && record.target.includes('/many/'));
    assert.ok(blocked.size < urls.length, `interrupted before the end: ${blocked.size}`);
    assert.deepEqual(new Set(audited.map((record) => record.key)), blocked, 'every blocked target is audited');

    const rerun = await cli(['purge', '--block', '--from-file', listFile]);
    assert.equal(rerun.code, 0, rerun.stderr + rerun.stdout);
    const entries = (await blocklist()).entries.filter((entry) => entry.kind === 'key');
    assert.equal(entries.length, new Set(entries.map((entry) => entry.value)).size, 'no duplicates');
    assert.equal((await keysBlocked()).size, urls.length);
    assert.match(rerun.stdout, new RegExp(`blocklist: added ${urls.length - blocked.size} key\\(s\\)`));
  });

  it('a blocklist that does not parse: the app refuses (500) rather than serve, the commands do not rewrite it', async () => {
    const path = blocklistPath(root);
    const good = await readFile(path, 'utf8');
    await writeFile(path, '{"version":1,"entries":[{"kind":"nonsense"');
    try {
      await untilServerReads('a list that does not parse', '127.0.0.1', (answer) => answer.status === 500);
      const answer = await get(link(photoUrl));
      assert.equal(answer.status, 500);
      assert.equal(answer.headers.get('x-imageproxy-error'), 'internal');
      const run = await cli(['block', '--host', '127.0.0.9']);
      assert.equal(run.code, 1, run.stderr + run.stdout);
      assert.match(run.stderr, /blocklist\.json: not valid JSON/);
      assert.equal(await readFile(path, 'utf8'), '{"version":1,"entries":[{"kind":"nonsense"');
    } finally {
      await writeFile(path, good);
    }
    await untilServerReads('the good list back', '127.0.0.1', (answer) => answer.status !== 500);
    assert.equal((await get(link(photoUrl))).status, 200);
  });

  it('--help of each command names its exit codes', async () => {
    for (const command of ['purge', 'block', 'unblock']) {
      const run = await cli([command, '--help']);
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, new RegExp(`^Usage: imageproxy ${command}`));
      assert.match(run.stdout.replace(/\s+/g, ' '), /exit 0 .*1 nothing to do.*2 usage/);
      assert.match(run.stdout, /--config <file>/);
      assert.match(run.stdout, /--root <dir>/);
    }
  });

  it('usage errors exit 2 and change nothing', async () => {
    const before = await readFile(auditLogPath(root), 'utf8');
    for (const args of [
      ['purge', '--block', '--bucket', 'f', link(photoUrl)],
      ['purge', 'not-a-link'],
      ['block'],
      ['block', '--host', 'http://example.org/'],
      ['unblock'],
    ]) {
      const run = await cli(args);
      assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
      assert.equal(lines(run.stderr).length, 1, run.stderr);
    }
    assert.equal(await readFile(auditLogPath(root), 'utf8'), before);
  });
});
