// `imageproxy import-legacy` as a real process of the built CLI against imageproxy-py
// trees that fight back: FIFOs, symlinks in and out of the tree, /dev/zero, sparse giant
// `.headers`, symlink loops, a bucket that is a symlink to /etc, a directory at an
// image's name. Every planted entry gets exactly one report line, nothing outside the
// tree is read, memory stays low, and the command ends when asked to, however stuck.
// Also: `--link` as a user the kernel refuses links to, the exit codes a migration script
// reads, and one judgement of a truncated JPEG by import and check.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, chown, lstat, mkdir, readFile, readdir, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { keyDirectory, storageKey } from '../server/contract/layout.js';
import { headersFileName, legacyImageName } from '../server/ops/legacyTree.js';
import { finishCli, lines, runCli, startCli, whyUserCannotRunCli, type CliOptions, type CliRun } from './cliProcess.js';
import { extUrlOf, makeTempRoot, removeTempRoot } from './helpers.js';
import { legacyHeadersText, writeLegacyEntry } from './legacyFixture.js';

const SECRET = 'hostile-secret';
const MAX_BYTES = 200_000;
// Never contacted: the import makes no request.
const ORIGIN = 'http://127.0.0.1:9';
const SPARSE_HEADERS_BYTES = 400 * 1024 * 1024;
const PEAK_RSS_LIMIT_KIB = 300 * 1024;
const PEAK_RSS_PROBE = fileURLToPath(new URL('./peakRssProbe.mjs', import.meta.url));

let work = '';
let configPath = '';

const urlOf = (label: string): string => `${ORIGIN}/hostile/${label}.png`;
const keyOf = (imageUrl: string): string => storageKey(Buffer.from(imageUrl, 'utf8'));

function mkfifo(path: string): void {
  execFileSync('mkfifo', [path]);
}

function png(shade: number): Promise<Buffer> {
  return sharp({ create: { width: 24, height: 16, channels: 3, background: { r: shade, g: 80, b: 200 } } }).png().toBuffer();
}

function importLegacy(args: string[], options: Partial<CliOptions> & { timeoutMs?: number } = {}): Promise<CliRun> {
  return runCli(['import-legacy', ...args, '--config', configPath], { cwd: work, ...options });
}

function reportPathOf(run: CliRun): string {
  const match = /report: (\S+)/.exec(run.stdout);
  assert.ok(match?.[1], `no report named in: ${run.stdout}`);
  return match[1];
}

/** The report's rows as [path, reason] pairs, header checked and skipped. */
async function reportRows(path: string): Promise<Array<[string, string]>> {
  const [header, ...rows] = lines(await readFile(path, 'utf8'));
  assert.equal(header, 'path\treason\tdetail');
  return rows.map((row) => {
    const [rowPath = '', reason = ''] = row.split('\t');
    return [rowPath, reason];
  });
}

/** Every file below a directory (the state directory left out), as relative paths. */
async function filesBelow(directory: string): Promise<string[]> {
  const entries = await readdir(directory, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .filter((entry) => !entry.isDirectory())
    .map((entry) => join(entry.parentPath, entry.name).slice(directory.length + 1))
    .filter((path) => !path.startsWith('.imageproxy/'))
    .sort();
}

function importedNumber(run: CliRun): number {
  return Number(/(?:imported \(\w+\)|would import) (\d+)/.exec(run.stdout)?.[1] ?? NaN);
}

before(async () => {
  work = await makeTempRoot('imageproxy-hostile-');
  // Another user runs the CLI in one test: the temp tree must be open to it.
  await chmod(work, 0o755);
  configPath = join(work, 'config.json');
  // Private, as a config holding secrets must be.
  await writeFile(configPath, JSON.stringify({ root: join(work, 'unused-root'), secrets: [SECRET], limits: { maxBytes: MAX_BYTES } }), { mode: 0o600 });
});

after(() => removeTempRoot(work));

describe('import-legacy on a hostile tree', () => {
  let pyRoot = '';
  let outside = '';
  /** Report path → the one reason it must be given. */
  const expected = new Map<string, string>();
  const goodLabels = ['good-1', 'good-2'];
  const outsideUrl = `${ORIGIN}/read-from-outside.png`;

  /** The directory and name of a label's legacy entry in bucket i (directory created). */
  async function placeOf(label: string): Promise<{ directory: string; name: string; relative: string }> {
    const name = legacyImageName(extUrlOf(urlOf(label)));
    const relativeDirectory = `i/${name[0]}/${name[1]}`;
    const directory = join(pyRoot, relativeDirectory);
    await mkdir(directory, { recursive: true });
    return { directory, name, relative: `${relativeDirectory}/${name}` };
  }

  before(async () => {
    pyRoot = join(work, 'py');
    outside = join(work, 'outside');
    await mkdir(outside, { recursive: true });
    await writeFile(join(outside, 'outside.png'), await png(7));
    await writeFile(join(outside, 'outside.headers'), legacyHeadersText(extUrlOf(outsideUrl), 'image/png'));

    for (const [index, label] of goodLabels.entries()) {
      await writeLegacyEntry(pyRoot, { bucket: 'i', extUrl: extUrlOf(urlOf(label)), bytes: await png(index * 40), contentType: 'image/png' });
    }
    const goodPlace = await placeOf('good-1');
    const headersOf = (label: string): string => legacyHeadersText(extUrlOf(urlOf(label)), 'image/png');
    const bytes = await png(99);

    const plant = async (label: string, reason: string, make: (place: { directory: string; name: string }) => Promise<void>) => {
      const place = await placeOf(label);
      await make(place);
      expected.set(place.relative, reason);
      return place;
    };
    const imageAt = ({ directory, name }: { directory: string; name: string }) => writeFile(join(directory, name), bytes);
    const headersAt = (label: string) => ({ directory, name }: { directory: string; name: string }) =>
      writeFile(join(directory, headersFileName(name)), headersOf(label));

    await plant('fifo-headers', 'not_a_regular_file', async (place) => {
      await imageAt(place);
      mkfifo(join(place.directory, headersFileName(place.name)));
    });
    await plant('fifo-image', 'not_a_regular_file', async (place) => {
      mkfifo(join(place.directory, place.name));
      await headersAt('fifo-image')(place);
    });
    await plant('image-to-outside', 'outside_tree', async (place) => {
      await symlink(join(outside, 'outside.png'), join(place.directory, place.name));
      await headersAt('image-to-outside')(place);
    });
    await plant('image-to-inside', 'not_a_regular_file', async (place) => {
      await symlink(join(goodPlace.directory, goodPlace.name), join(place.directory, place.name));
      await headersAt('image-to-inside')(place);
    });
    await plant('headers-to-outside', 'outside_tree', async (place) => {
      await imageAt(place);
      await symlink(join(outside, 'outside.headers'), join(place.directory, headersFileName(place.name)));
    });
    await plant('headers-to-inside', 'not_a_regular_file', async (place) => {
      await imageAt(place);
      await symlink(join(goodPlace.directory, headersFileName(goodPlace.name)), join(place.directory, headersFileName(place.name)));
    });
    await plant('headers-to-dev-zero', 'outside_tree', async (place) => {
      await imageAt(place);
      await symlink('/dev/zero', join(place.directory, headersFileName(place.name)));
    });
    for (const index of [1, 2, 3, 4]) {
      await plant(`sparse-headers-${index}`, 'too_large', async (place) => {
        await imageAt(place);
        const headersPath = join(place.directory, headersFileName(place.name));
        await headersAt(`sparse-headers-${index}`)(place);
        await truncate(headersPath, SPARSE_HEADERS_BYTES);
      });
    }
    await plant('directory-image', 'not_a_regular_file', async (place) => {
      await mkdir(join(place.directory, place.name));
      await writeFile(join(place.directory, place.name, 'inside.png'), bytes);
      await headersAt('directory-image')(place);
    });
    await plant('no-headers', 'no_headers', imageAt);
    const orphan = await placeOf('orphan');
    await writeFile(join(orphan.directory, headersFileName(orphan.name)), headersOf('orphan'));
    expected.set(`${orphan.relative}.headers`, 'orphan_headers');
    const fifoOrphan = await placeOf('fifo-orphan');
    mkfifo(join(fifoOrphan.directory, headersFileName(fifoOrphan.name)));
    expected.set(`${fifoOrphan.relative}.headers`, 'orphan_headers');

    // Loops: a shard directory that is a symlink to itself, one back to the bucket, and
    // one inside a shard directory back to its parent. None is walked.
    await symlink('zz', join(pyRoot, 'i', 'zz'));
    expected.set('i/zz', 'not_a_directory');
    await mkdir(join(pyRoot, 'i', 'Lo', 'ok'), { recursive: true });
    await symlink('../..', join(pyRoot, 'i', 'Lo', 'op'));
    expected.set('i/Lo/op', 'not_a_directory');
    await symlink('..', join(pyRoot, 'i', 'Lo', 'ok', 'loop'));
    expected.set('i/Lo/ok/loop', 'not_a_regular_file');
    // A bucket directory that is a symlink to /etc: one line, nothing under /etc listed.
    await symlink('/etc', join(pyRoot, 'f'));
    expected.set('f', 'outside_tree');
  });

  it('imports the good entries, gives every planted one exactly one report line, exits 0, and stays small', async () => {
    const root = join(work, 'hostile-root');
    const peakFile = join(work, 'hostile-peak-rss');
    const run = await importLegacy([pyRoot, '--root', root], {
      nodeArgs: ['--import', PEAK_RSS_PROBE],
      env: { PEAK_RSS_FILE: peakFile },
      timeoutMs: 60_000,
    });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(importedNumber(run), goodLabels.length, run.stdout);
    const rows = await reportRows(reportPathOf(run));
    assert.deepEqual(new Map(rows), expected);
    assert.equal(rows.length, expected.size, 'one line per planted entry');

    // Only the good entries are in our tree: nothing read outside it was imported.
    const wanted = goodLabels.flatMap((label) => {
      const key = keyOf(urlOf(label));
      return [`${keyDirectory('i', key)}/${key}.json`, `${keyDirectory('i', key)}/${key}.png`];
    });
    assert.deepEqual(await filesBelow(root), wanted.sort());
    await assert.rejects(stat(join(root, keyDirectory('i', keyOf(outsideUrl)))), { code: 'ENOENT' });

    const peakKiB = Number(await readFile(peakFile, 'utf8'));
    assert.ok(peakKiB > 0 && peakKiB < PEAK_RSS_LIMIT_KIB, `peak RSS ${peakKiB} KiB`);
  });

  it('a rerun with the same leftovers (orphan .headers, no .headers…) imports nothing and exits 0', async () => {
    const root = join(work, 'hostile-root');
    const rerun = await importLegacy([pyRoot, '--root', root], { timeoutMs: 60_000 });
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.equal(importedNumber(rerun), 0);
    assert.match(rerun.stdout, new RegExp(`skipped ${goodLabels.length}`));
    assert.deepEqual(new Map(await reportRows(reportPathOf(rerun))), expected);
  });

  it('--dry-run ends too, with the same report', async () => {
    const root = join(work, 'hostile-dry-root');
    const report = join(work, 'hostile-dry.tsv');
    const dry = await importLegacy([pyRoot, '--root', root, '--dry-run', '--report', report], { timeoutMs: 60_000 });
    assert.equal(dry.code, 0, dry.stderr);
    assert.equal(importedNumber(dry), goodLabels.length);
    assert.deepEqual(new Map(await reportRows(report)), expected);
    assert.deepEqual(await filesBelow(root), []);
  });

  // Last: it empties the good entries out of the py tree.
  it('--move takes only the good entries and leaves every planted one and what it points at in place', async () => {
    const root = join(work, 'hostile-move-root');
    const outsideBefore = await Promise.all(['outside.png', 'outside.headers'].map((name) => readFile(join(outside, name))));
    const moved = await importLegacy([pyRoot, '--root', root, '--move'], { timeoutMs: 60_000 });
    assert.equal(moved.code, 0, moved.stderr);
    assert.equal(importedNumber(moved), goodLabels.length);
    assert.deepEqual(new Map(await reportRows(reportPathOf(moved))), expected);
    for (const path of expected.keys()) await lstat(join(pyRoot, path));
    for (const label of goodLabels) {
      await assert.rejects(lstat(join(pyRoot, (await placeOf(label)).relative)), { code: 'ENOENT' }, label);
    }
    const outsideAfter = await Promise.all(['outside.png', 'outside.headers'].map((name) => readFile(join(outside, name))));
    assert.ok(outsideAfter.every((bytes, index) => bytes.equals(outsideBefore[index] ?? Buffer.alloc(0))), 'outside files untouched');
  });
});

describe('import-legacy --link on files the kernel will not link for this user', () => {
  it('copies them instead, counts them, says why once, and exits 0', async (context) => {
    if (process.getuid?.() !== 0) {
      context.skip('needs root, to run the CLI as another user');
      return;
    }
    const protectedLinks = (await readFile('/proc/sys/fs/protected_hardlinks', 'utf8').catch(() => '')).trim();
    if (protectedLinks !== '1') {
      context.skip(`fs.protected_hardlinks is ${protectedLinks || 'unknown'}, not 1: the kernel links any readable file`);
      return;
    }
    const uid = Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'nobody'], { encoding: 'utf8' }).trim());
    const cannotRun = whyUserCannotRunCli(uid, gid, work);
    if (cannotRun !== null) {
      context.skip(cannotRun);
      return;
    }
    const pyRoot = join(work, 'py-owned-by-root');
    const root = join(work, 'root-of-nobody');
    const labels = ['root-1', 'root-2', 'nobody-own'];
    const sources = new Map<string, { path: string; bytes: Buffer }>();
    for (const [index, label] of labels.entries()) {
      const bytes = await png(index * 30 + 5);
      const relative = await writeLegacyEntry(pyRoot, { bucket: 'i', extUrl: extUrlOf(urlOf(label)), bytes, contentType: 'image/png' });
      sources.set(label, { path: join(pyRoot, relative), bytes });
    }
    // One legacy file is nobody's own: that one links.
    await chown(sources.get('nobody-own')?.path ?? '', uid, gid);
    await mkdir(root);
    await chown(root, uid, gid);
    // The config is private to the user who runs the command (root reads it anyway).
    await chown(configPath, uid, gid);

    const run = await importLegacy([pyRoot, '--root', root, '--link'], { uid, gid, timeoutMs: 60_000 });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(importedNumber(run), labels.length, run.stdout);
    const notes = lines(run.stdout).filter((line) => line.includes('refused hard links'));
    assert.equal(notes.length, 1, run.stdout);
    assert.match(notes[0] ?? '', /: 2 files copied because the kernel refused hard links \(EPERM\): the legacy files belong to another user/);
    for (const [label, source] of sources) {
      const key = keyOf(urlOf(label));
      const storedPath = join(root, keyDirectory('i', key), `${key}.png`);
      const [stored, legacy] = await Promise.all([stat(storedPath), stat(source.path)]);
      assert.ok((await readFile(storedPath)).equals(source.bytes), `${label}: bytes`);
      if (label === 'nobody-own') assert.equal(stored.ino, legacy.ino, `${label}: linked`);
      else {
        assert.notEqual(stored.ino, legacy.ino, `${label}: copied`);
        assert.equal(stored.uid, uid, `${label}: the copy is the running user's`);
      }
    }
  });
});

describe('one judgement of a truncated JPEG: import-legacy and check', () => {
  let pyRoot = '';
  const truncatedUrl = `${ORIGIN}/truncated.jpg`;
  const wholeUrl = `${ORIGIN}/whole.jpg`;
  let truncatedPath = '';

  const check = (root: string, decode: boolean): Promise<CliRun> =>
    runCli(['check', '--root', root, '--config', configPath, ...(decode ? ['--decode'] : [])], { cwd: work, timeoutMs: 60_000 });
  const findings = (run: CliRun): string[] => lines(run.stdout).filter((line) => line.startsWith('damaged-'));

  before(async () => {
    pyRoot = join(work, 'py-truncated');
    const jpeg = await sharp({ create: { width: 160, height: 120, channels: 3, background: '#808080', noise: { type: 'gaussian', mean: 128, sigma: 40 } } })
      .jpeg()
      .toBuffer();
    const truncated = jpeg.subarray(0, Math.floor(jpeg.length * 0.6));
    truncatedPath = await writeLegacyEntry(pyRoot, { bucket: 'i', extUrl: extUrlOf(truncatedUrl), bytes: truncated });
    await writeLegacyEntry(pyRoot, { bucket: 'i', extUrl: extUrlOf(wholeUrl), bytes: jpeg });
  });

  it('without --decode: imported, and check keeps it; check --decode flags it', async () => {
    const root = join(work, 'truncated-root');
    const imported = await importLegacy([pyRoot, '--root', root]);
    assert.equal(imported.code, 0, imported.stderr);
    assert.equal(importedNumber(imported), 2);
    const kept = await check(root, false);
    assert.equal(kept.code, 0, kept.stdout);
    const decoded = await check(root, true);
    assert.equal(decoded.code, 1, decoded.stdout);
    const key = keyOf(truncatedUrl);
    assert.deepEqual(
      findings(decoded).map((line) => line.split('\t').slice(0, 2).join('\t')),
      [`damaged-original\t${keyDirectory('i', key)}/${key}.jpg`],
    );
  });

  it('with --decode: reported as damaged and not imported, and check --decode then finds nothing', async () => {
    const root = join(work, 'truncated-decoded-root');
    const imported = await importLegacy([pyRoot, '--root', root, '--decode']);
    assert.equal(imported.code, 0, imported.stderr);
    assert.equal(importedNumber(imported), 1);
    assert.deepEqual(await reportRows(reportPathOf(imported)), [[truncatedPath, 'damaged']]);
    const decoded = await check(root, true);
    assert.equal(decoded.code, 0, decoded.stdout);
    assert.deepEqual(findings(decoded), []);
  });
});

describe('import-legacy interrupted while stuck on a file nobody opens', () => {
  // A report path that is a FIFO nobody reads: opening it holds one of libuv's threads
  // forever, as a disk that stopped answering would. The import itself finishes; the
  // command cannot, and before this fix not even a second Ctrl-C ended it.
  async function startStuck(name: string): Promise<{ finished: Promise<CliRun>; child: ReturnType<typeof startCli>; stderr: () => string }> {
    const pyRoot = join(work, `py-${name}`);
    await writeLegacyEntry(pyRoot, { bucket: 'i', extUrl: extUrlOf(urlOf(name)), bytes: await png(3), contentType: 'image/png' });
    const reportFifo = join(work, `${name}-report.fifo`);
    mkfifo(reportFifo);
    const child = startCli(['import-legacy', pyRoot, '--root', join(work, `${name}-root`), '--config', configPath, '--report', reportFifo], {
      cwd: work,
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const finished = finishCli(child, 60_000);
    // Under way: the entries are counted (after the report was asked to open).
    const deadline = Date.now() + 30_000;
    while (!/ entries in /.test(stderr) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.match(stderr, / entries in /);
    return { finished, child, stderr: () => stderr };
  }

  it('a second Ctrl-C ends it at once, by SIGINT', async () => {
    const { finished, child, stderr } = await startStuck('twice');
    child.kill('SIGINT');
    // The first one is acknowledged before the second is sent.
    const deadline = Date.now() + 30_000;
    while (!/finishing the entries in progress/.test(stderr()) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    child.kill('SIGINT');
    const run = await finished;
    assert.equal(run.signal, 'SIGINT', `code ${run.code}: ${run.stderr}`);
    assert.match(run.stderr, /SIGINT again, stopping now/);
    assert.doesNotMatch(run.stderr, /not done \d+ s after/);
  });

  it('one SIGTERM ends it within a few seconds, saying so', async () => {
    const { finished, child } = await startStuck('once');
    child.kill('SIGTERM');
    const run = await finished;
    assert.equal(run.signal, 'SIGTERM', `code ${run.code}: ${run.stderr}`);
    assert.match(run.stderr, /not done 5 s after SIGTERM; stopping now/);
  });
});
