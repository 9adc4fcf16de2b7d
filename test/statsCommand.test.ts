// `imageproxy stats` as a real process (`npm run build` first) over trees made in temp
// roots with known files, sizes and mtimes: the exact figures in text and JSON, the
// bucket filter, usage errors, a missing or empty tree, an unreadable blocklist, and an
// interrupt that leaves partial figures marked as such.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { link, mkdir, readdir, readlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { formatBlocklist } from '../server/takedown/blocklist.js';
import { STATE_DIRECTORY, storageKey } from '../server/contract/layout.js';
import { finishCli, lines, runCli, startCli } from './cliProcess.js';
import { makeTempRoot, removeTempRoot, until } from './helpers.js';

const T_OLD = Date.parse('2025-06-01T10:00:00Z');
const T_MID = Date.parse('2025-09-15T12:30:45Z');
const T_NEW = Date.parse('2026-02-03T04:05:06Z');

const KEY_A = storageKey(Buffer.from('https://origin.test/a.jpg'));
const KEY_B = storageKey(Buffer.from('https://origin.test/b.png'));
const KEY_C = storageKey(Buffer.from('https://origin.test/c.jpg'));
const KEY_D = storageKey(Buffer.from('https://origin.test/d.gif'));

function keyDir(root: string, bucket: string, key: string): string {
  return join(root, bucket, key[0] ?? '', key[1] ?? '');
}

async function place(path: string, size: number, mtimeMs?: number): Promise<void> {
  await mkdir(join(path, '..'), { recursive: true });
  await writeFile(path, Buffer.alloc(size, 1));
  if (mtimeMs !== undefined) await utimes(path, mtimeMs / 1000, mtimeMs / 1000);
}

/**
 * Bucket i: originals A (1000 B, T_OLD) and B (3000 B, T_NEW) with sidecars, three
 * thumbnails (200 + 50 + 70 B), two backoff records, a temp file, a stray file and a lock
 * directory. Bucket f: original D (500 B, T_MID) with its sidecar. Bucket t: never made.
 * Blocklist: two keys and a host.
 */
async function makeKnownTree(root: string): Promise<void> {
  const dirA = keyDir(root, 'i', KEY_A);
  const dirB = keyDir(root, 'i', KEY_B);
  const dirC = keyDir(root, 'i', KEY_C);
  await place(join(dirA, `${KEY_A}.jpg`), 1000, T_OLD);
  await place(join(dirA, `${KEY_A}.json`), 321);
  await place(join(dirA, `${KEY_A}.150x.jpg`), 200, T_NEW + 86_400_000);
  await mkdir(join(dirA, `${KEY_A}.lock`), { recursive: true });
  await place(join(dirB, `${KEY_B}.png`), 3000, T_NEW);
  await place(join(dirB, `${KEY_B}.json`), 300);
  await place(join(dirB, `${KEY_B}.x200.png`), 50);
  await place(join(dirB, `${KEY_B}.250x250.png`), 70);
  await place(join(dirB, `.${KEY_B}.png.77.abc.tmp`), 10);
  await place(join(dirC, `${KEY_C}.fail`), 40);
  await place(join(dirC, `${KEY_C}.150x.fail`), 40);
  await place(join(dirC, 'notes.txt'), 5);
  const dirD = keyDir(root, 'f', KEY_D);
  await place(join(dirD, `${KEY_D}.gif`), 500, T_MID);
  await place(join(dirD, `${KEY_D}.json`), 300);
  await mkdir(join(root, STATE_DIRECTORY), { recursive: true });
  await writeFile(
    join(root, STATE_DIRECTORY, 'blocklist.json'),
    formatBlocklist({
      version: 1,
      entries: [
        { kind: 'key', value: KEY_A, at: '2026-01-01T00:00:00Z', by: 'test' },
        { kind: 'key', value: KEY_C, at: '2026-01-01T00:00:00Z', by: 'test' },
        { kind: 'host', value: 'blocked.example', at: '2026-01-01T00:00:00Z', by: 'test' },
      ],
    }),
  );
}

/** A row of the table split into its cells (bytes keep their two parts together). */
function rowOf(output: string, name: string): string[] | undefined {
  const line = lines(output).find((candidate) => candidate.split(/\s+/)[0] === name);
  return line?.split(/\s{2,}/);
}

async function listTree(directory: string): Promise<string[]> {
  const entries = await readdir(directory, { recursive: true });
  return entries.sort();
}

let cwd = '';
let root = '';
before(async () => {
  cwd = await makeTempRoot();
  root = join(cwd, 'tree');
  await makeKnownTree(root);
});
after(() => removeTempRoot(cwd));

describe('imageproxy stats on a known tree', () => {
  it('prints the exact figures per bucket and in total, exit 0, summary on stderr', async () => {
    const run = await runCli(['stats', '--root', root], { cwd });
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(rowOf(run.stdout, 'bucket'), ['bucket', 'originals', 'thumbnails', 'bytes', 'in backoff', 'oldest fetch', 'newest fetch']);
    assert.deepEqual(rowOf(run.stdout, 'i'), ['i', '2', '3', '4.2 KiB (4320)', '2', '2025-06-01T10:00:00Z', '2026-02-03T04:05:06Z']);
    assert.deepEqual(rowOf(run.stdout, 'f'), ['f', '1', '0', '500 B (500)', '0', '2025-09-15T12:30:45Z', '2025-09-15T12:30:45Z']);
    assert.deepEqual(rowOf(run.stdout, 't'), ['t', '0', '0', '0 B (0)', '0', '-', '-']);
    assert.deepEqual(rowOf(run.stdout, 'total'), ['total', '3', '3', '4.7 KiB (4820)', '2', '2025-06-01T10:00:00Z', '2026-02-03T04:05:06Z']);
    assert.ok(lines(run.stdout).includes('sidecars 3, temp files 1, other files 1'), run.stdout);
    assert.ok(lines(run.stdout).includes('blocked (all buckets): 3 entries: key 2, digest 0, host 1'), run.stdout);
    assert.ok(!run.stdout.includes('INTERRUPTED'));
    assert.match(run.stderr, /^stats: done: 12288 shard directories in [\d.]+ s \(\d+\/s\): ok 4, failed 0, skipped 12284$/m);
  });

  it('--json prints one object with the same figures', async () => {
    const run = await runCli(['stats', '--root', root, '--json'], { cwd });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(lines(run.stdout).length, 1);
    const report = JSON.parse(run.stdout) as Record<string, unknown>;
    assert.equal(report.complete, true);
    assert.equal(report.root, root);
    assert.equal(report.shardsWalked, 3 * 4096);
    assert.equal(report.shardsTotal, 3 * 4096);
    assert.deepEqual(report.buckets, {
      i: {
        originals: 2,
        thumbnails: 3,
        sidecars: 2,
        backoff: 2,
        temp: 1,
        other: 1,
        bytes: 4320,
        originalBytes: 4000,
        thumbnailBytes: 320,
        oldestFetch: '2025-06-01T10:00:00.000Z',
        newestFetch: '2026-02-03T04:05:06.000Z',
      },
      f: {
        originals: 1,
        thumbnails: 0,
        sidecars: 1,
        backoff: 0,
        temp: 0,
        other: 0,
        bytes: 500,
        originalBytes: 500,
        thumbnailBytes: 0,
        oldestFetch: '2025-09-15T12:30:45.000Z',
        newestFetch: '2025-09-15T12:30:45.000Z',
      },
      t: {
        originals: 0,
        thumbnails: 0,
        sidecars: 0,
        backoff: 0,
        temp: 0,
        other: 0,
        bytes: 0,
        originalBytes: 0,
        thumbnailBytes: 0,
        oldestFetch: null,
        newestFetch: null,
      },
    });
    assert.deepEqual(report.total, {
      originals: 3,
      thumbnails: 3,
      sidecars: 3,
      backoff: 2,
      temp: 1,
      other: 1,
      bytes: 4820,
      originalBytes: 4500,
      thumbnailBytes: 320,
      oldestFetch: '2025-06-01T10:00:00.000Z',
      newestFetch: '2026-02-03T04:05:06.000Z',
    });
    assert.deepEqual(report.blocked, { key: 2, digest: 0, host: 1, total: 3 });
    assert.equal(report.blockedError, null);
  });

  it('--bucket f: only that bucket, no total row', async () => {
    const text = await runCli(['stats', '--root', root, '--bucket', 'f'], { cwd });
    assert.equal(text.code, 0, text.stderr);
    assert.deepEqual(rowOf(text.stdout, 'f'), ['f', '1', '0', '500 B (500)', '0', '2025-09-15T12:30:45Z', '2025-09-15T12:30:45Z']);
    assert.equal(rowOf(text.stdout, 'i'), undefined);
    assert.equal(rowOf(text.stdout, 'total'), undefined);
    const json = await runCli(['stats', '--root', root, '--bucket', 'f', '--json'], { cwd });
    const report = JSON.parse(json.stdout) as { buckets: Record<string, unknown>; total: { originals: number }; shardsTotal: number };
    assert.deepEqual(Object.keys(report.buckets), ['f']);
    assert.equal(report.total.originals, 1);
    assert.equal(report.shardsTotal, 4096);
  });

  it('buckets come from the config: IMAGEPROXY_BUCKETS limits the walk', async () => {
    const run = await runCli(['stats', '--root', root, '--json'], { cwd, env: { IMAGEPROXY_BUCKETS: 'i' } });
    const report = JSON.parse(run.stdout) as { buckets: Record<string, unknown>; total: { originals: number } };
    assert.deepEqual(Object.keys(report.buckets), ['i']);
    assert.equal(report.total.originals, 2);
  });

  it('reads only: the tree is unchanged and a second run prints the same table', async () => {
    const before = await listTree(root);
    const first = await runCli(['stats', '--root', root], { cwd });
    const second = await runCli(['stats', '--root', root], { cwd });
    assert.equal(second.code, 0);
    assert.equal(second.stdout, first.stdout);
    assert.deepEqual(await listTree(root), before);
  });
});

describe('imageproxy stats by format', () => {
  const KEY_E = storageKey(Buffer.from('https://origin.test/e.jpg'));
  const KEY_F = storageKey(Buffer.from('https://origin.test/f.png'));
  let formatsRoot = '';

  /**
   * Bucket i: E, a JPEG original (1000 B) with its 250x250 JPEG (300 B), an AVIF of it for
   * class avif (120 B), a hard link of the JPEG for class webp, a 150x WebP for class webp
   * (80 B), a class backoff record and a class lock; F, a PNG original (500 B) with its
   * x200 PNG (60 B), a hard link of it for class avif and a WebP for class webp (40 B).
   */
  before(async () => {
    formatsRoot = join(cwd, 'formats');
    const dirE = keyDir(formatsRoot, 'i', KEY_E);
    const dirF = keyDir(formatsRoot, 'i', KEY_F);
    await place(join(dirE, `${KEY_E}.jpg`), 1000, T_OLD);
    await place(join(dirE, `${KEY_E}.json`), 300);
    await place(join(dirE, `${KEY_E}.250x250.jpg`), 300);
    await place(join(dirE, `${KEY_E}.250x250.avif.avif`), 120);
    await link(join(dirE, `${KEY_E}.250x250.jpg`), join(dirE, `${KEY_E}.250x250.webp.jpg`));
    await place(join(dirE, `${KEY_E}.150x.webp.webp`), 80);
    await place(join(dirE, `${KEY_E}.150x.avif.fail`), 40);
    await mkdir(join(dirE, `${KEY_E}.250x250.avif.lock`));
    await place(join(dirF, `${KEY_F}.png`), 500, T_NEW);
    await place(join(dirF, `${KEY_F}.x200.png`), 60);
    await link(join(dirF, `${KEY_F}.x200.png`), join(dirF, `${KEY_F}.x200.avif.png`));
    await place(join(dirF, `${KEY_F}.x200.webp.webp`), 40);
  });

  it('the table: every file counted, a hard link\'s bytes once; lines by class and by type under it', async () => {
    const run = await runCli(['stats', '--root', formatsRoot, '--bucket', 'i'], { cwd });
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(rowOf(run.stdout, 'i'), ['i', '2', '7', '2.1 KiB (2100)', '1', '2025-06-01T10:00:00Z', '2026-02-03T04:05:06Z']);
    const output = lines(run.stdout);
    assert.ok(output.includes('thumbnails by class: source 2 (360 B), avif 2 (120 B, 1 hard-linked), webp 3 (120 B, 1 hard-linked)'), run.stdout);
    assert.ok(output.includes('thumbnails by type: jpg 2 (300 B), png 2 (60 B), webp 2 (120 B), avif 1 (120 B)'), run.stdout);
    assert.ok(output.includes('originals by type: jpg 1 (1000 B), png 1 (500 B)'), run.stdout);
    assert.ok(output.includes('sidecars 1, temp files 0, other files 0'), run.stdout);
  });

  it('--json: the bucket figures as before, and formats per bucket and in total', async () => {
    const run = await runCli(['stats', '--root', formatsRoot, '--bucket', 'i', '--json'], { cwd });
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(run.stdout) as { buckets: Record<string, Record<string, unknown>>; formats: { buckets: Record<string, unknown>; total: unknown } };
    assert.deepEqual(
      Object.keys(report.buckets.i ?? {}),
      ['originals', 'thumbnails', 'sidecars', 'backoff', 'temp', 'other', 'bytes', 'originalBytes', 'thumbnailBytes', 'oldestFetch', 'newestFetch'],
      'the fields of a bucket are those of before',
    );
    assert.deepEqual([report.buckets.i?.thumbnails, report.buckets.i?.thumbnailBytes, report.buckets.i?.bytes], [7, 600, 2100]);
    const zero = { files: 0, bytes: 0 };
    const expected = {
      originalsByType: { jpg: { files: 1, bytes: 1000 }, png: { files: 1, bytes: 500 }, webp: zero, gif: zero, avif: zero },
      thumbnailsByClass: {
        source: { files: 2, bytes: 360, linked: 0 },
        avif: { files: 2, bytes: 120, linked: 1 },
        webp: { files: 3, bytes: 120, linked: 1 },
      },
      thumbnailsByType: { jpg: { files: 2, bytes: 300 }, png: { files: 2, bytes: 60 }, webp: { files: 2, bytes: 120 }, gif: zero, avif: { files: 1, bytes: 120 } },
    };
    assert.deepEqual(report.formats, { buckets: { i: expected }, total: expected });
  });

  it('--help says how hard links are counted', async () => {
    const run = await runCli(['stats', '--help'], { cwd });
    assert.match(run.stdout, /hard link/);
  });
});

describe('imageproxy stats: usage and edge cases', () => {
  it('an unknown bucket exits 2 with one line naming it', async () => {
    const run = await runCli(['stats', '--root', root, '--bucket', 'nope'], { cwd });
    assert.equal(run.code, 2);
    assert.equal(run.stdout, '');
    assert.deepEqual(lines(run.stderr), ['imageproxy: --bucket: nope is not a configured bucket (i, f, t)']);
  });

  it('an unknown flag exits 2', async () => {
    const run = await runCli(['stats', '--root', root, '--recount'], { cwd });
    assert.equal(run.code, 2);
    assert.equal(run.stdout, '');
  });

  it('--help names the flags and the exit codes', async () => {
    const run = await runCli(['stats', '--help'], { cwd });
    assert.equal(run.code, 0);
    for (const text of ['--bucket', '--json', '--root', '--config', '130 interrupted', '2 usage']) {
      assert.ok(run.stdout.includes(text), `${text} in ${run.stdout}`);
    }
  });

  it('a missing root prints zeros, exit 0, and creates nothing', async () => {
    const missing = join(cwd, 'no-such-tree');
    const run = await runCli(['stats', '--root', missing, '--json'], { cwd });
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(run.stdout) as { complete: boolean; total: Record<string, unknown>; blocked: unknown };
    assert.equal(report.complete, true);
    assert.deepEqual(report.total, {
      originals: 0,
      thumbnails: 0,
      sidecars: 0,
      backoff: 0,
      temp: 0,
      other: 0,
      bytes: 0,
      originalBytes: 0,
      thumbnailBytes: 0,
      oldestFetch: null,
      newestFetch: null,
    });
    assert.deepEqual(report.blocked, { key: 0, digest: 0, host: 0, total: 0 });
    assert.ok(!(await readdir(cwd)).includes('no-such-tree'));
  });

  it('an empty tree (init-buckets only) prints zeros in the table', async () => {
    const empty = join(cwd, 'empty');
    const init = await runCli(['init-buckets', '--root', empty], { cwd });
    assert.equal(init.code, 0, init.stderr);
    const run = await runCli(['stats', '--root', empty], { cwd });
    assert.equal(run.code, 0, run.stderr);
    for (const bucket of ['i', 'f', 't', 'total']) {
      assert.deepEqual(rowOf(run.stdout, bucket), [bucket, '0', '0', '0 B (0)', '0', '-', '-']);
    }
    assert.ok(lines(run.stdout).includes('blocked (all buckets): 0 entries: key 0, digest 0, host 0'));
    assert.match(run.stderr, /ok 0, failed 0, skipped 12288$/m);
  });

  it('an unreadable blocklist: the figures still come, blocked is unknown with the reason', async () => {
    const broken = join(cwd, 'broken-blocklist');
    await place(join(keyDir(broken, 'i', KEY_A), `${KEY_A}.jpg`), 10, T_OLD);
    await mkdir(join(broken, STATE_DIRECTORY));
    await writeFile(join(broken, STATE_DIRECTORY, 'blocklist.json'), '{ not json');
    const text = await runCli(['stats', '--root', broken, '--bucket', 'i'], { cwd });
    assert.equal(text.code, 0, text.stderr);
    assert.deepEqual(rowOf(text.stdout, 'i')?.slice(0, 2), ['i', '1']);
    assert.match(text.stdout, /^blocked: unknown: .*blocklist\.json: not valid JSON/m);
    const json = await runCli(['stats', '--root', broken, '--bucket', 'i', '--json'], { cwd });
    const report = JSON.parse(json.stdout) as { blocked: unknown; blockedError: string };
    assert.equal(report.blocked, null);
    assert.match(report.blockedError, /not valid JSON/);
  });
});

describe('imageproxy stats: interrupted', () => {
  it('SIGINT: exit 130, the output says INTERRUPTED and JSON says complete: false', async () => {
    // The interrupt lands while the command walks bucket `i` of a tree made by
    // init-buckets: the test waits until the command holds that directory open (its
    // /proc fd table says so), so the walk is under way and the last bucket not reached.
    const tree = join(cwd, 'interrupted');
    assert.equal((await runCli(['init-buckets', '--root', tree, '--secret', 's'], { cwd })).code, 0);
    await place(join(keyDir(tree, 'i', KEY_A), `${KEY_A}.jpg`), 10, T_OLD);
    await mkdir(join(tree, STATE_DIRECTORY), { recursive: true });
    await writeFile(
      join(tree, STATE_DIRECTORY, 'blocklist.json'),
      formatBlocklist({ version: 1, entries: [{ kind: 'host', value: 'blocked.example', at: '', by: 'test' }] }),
    );
    const bucketDir = join(tree, 'i');

    for (const json of [false, true]) {
      const child = startCli(['stats', '--root', tree, ...(json ? ['--json'] : [])], { cwd });
      const finished = finishCli(child);
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
      const walkingBucket = async (): Promise<boolean> => {
        const fds = await readdir(`/proc/${child.pid}/fd`).catch(() => []);
        const targets = await Promise.all(fds.map((fd) => readlink(`/proc/${child.pid}/fd/${fd}`).catch(() => '')));
        return targets.some((target) => target === bucketDir || target.startsWith(`${bucketDir}/`));
      };
      await until(async () => child.exitCode === null && (await walkingBucket()), { message: 'the command walks bucket i', timeoutMs: 60_000, intervalMs: 5 });
      child.kill('SIGINT');
      await until(() => stderr.includes('SIGINT'), { message: 'the command takes the interrupt', timeoutMs: 60_000, intervalMs: 10 });
      const run = await finished;
      assert.equal(run.code, 130, run.stderr);
      assert.match(run.stderr, /stats: SIGINT: finishing/);
      assert.match(run.stderr, /^stats: interrupted after /m);
      if (json) {
        const report = JSON.parse(run.stdout) as { complete: boolean; blocked: unknown; shardsWalked: number };
        assert.equal(report.complete, false);
        assert.ok(report.shardsWalked < 12288, `${report.shardsWalked} shard directories walked`);
        assert.deepEqual(report.blocked, { key: 0, digest: 0, host: 1, total: 1 });
      } else {
        assert.match(lines(run.stdout)[0] ?? '', /^INTERRUPTED: partial figures, \d+ of 12288 shard directories walked$/);
      }
    }
  });
});
