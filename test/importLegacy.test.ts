// `imageproxy import-legacy` as a real process of the built CLI against imageproxy-py
// trees built here (real images made by sharp, correct sha224 names and `.headers`, and
// bad entries), then the imported tree served by the whole server in-process and by real
// nginx with the origin unreachable: every image URL points at a closed 127.0.0.1 port.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdir, mkdtemp, readFile, readdir, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp, { type Sharp } from 'sharp';
import { createHash } from 'node:crypto';
import { formatBlocklist, type Blocklist } from '../server/takedown/blocklist.js';
import { buildConfig } from '../server/config/config.js';
import { startServer, type RunningServer } from '../server/http/server.js';
import { classifyTreeFile, keyDirectory, parseThumbnailName, storageKey } from '../server/contract/layout.js';
import { legacyImageName } from '../server/ops/legacyTree.js';
import { createLogger } from '../server/observe/log.js';
import type { ImageMetadata } from '../server/tree/store.js';
import { walkShardFiles } from '../server/tree/walk.js';
import { finishCli, lines, runCli, startCli, type CliRun } from './cliProcess.js';
import { extUrlOf, makeTempRoot, removeTempRoot, request, signedPath, until } from './helpers.js';
import { writeLegacyEntry } from './legacyFixture.js';
import { freePort, nginxMissing, renderStandaloneWithCli, startNginx } from './nginxHarness.js';

const SECRET = 'legacy-secret';
const MAX_BYTES = 100_000;
const LEGACY_MTIME = new Date('2023-04-05T06:07:08.000Z');

interface GoodEntry {
  label: string;
  bucket: string;
  imageUrl: string;
  extUrl: string;
  bytes: Buffer;
  ext: string;
  contentType: string;
  /** What `.headers` claimed. */
  claimedType: string;
  width: number;
  height: number;
  relativePath: string;
}

let work = '';
let closedOrigin = '';
let pyRoot = '';
let configPath = '';
const good: GoodEntry[] = [];
/** Legacy relative path → the reason the report must give. */
const expectedFailures = new Map<string, string>();
let mismatchPath = '';

const keyOf = (imageUrl: string): string => storageKey(Buffer.from(imageUrl, 'utf8'));
const run = (args: string[], timeoutMs?: number): Promise<CliRun> =>
  runCli(['import-legacy', ...args, '--config', configPath], { cwd: work, ...(timeoutMs === undefined ? {} : { timeoutMs }) });

/** Every file below a directory, relative path → size and mtime: a snapshot to compare. */
async function snapshot(directory: string): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  const visit = async (current: string, prefix: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(current, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      const path = join(current, entry.name);
      if (entry.isDirectory()) await visit(path, `${prefix}${entry.name}/`);
      else {
        const info = await stat(path);
        found.set(`${prefix}${entry.name}`, `${info.size} ${info.mtimeMs} ${info.ino}`);
      }
    }
  };
  await visit(directory, '');
  return found;
}

function reportOf(runResult: CliRun): string {
  const match = /report: (\S+)/.exec(runResult.stdout);
  assert.ok(match?.[1], `no report named in: ${runResult.stdout}`);
  return match[1];
}

/** The report's lines as path → reason (header skipped). */
async function reportReasons(path: string): Promise<Map<string, string>> {
  const [header, ...rows] = lines(await readFile(path, 'utf8'));
  assert.equal(header, 'path\treason\tdetail');
  return new Map(rows.map((row) => row.split('\t') as [string, string]));
}

interface Summary {
  ok: number;
  failed: number;
  skipped: number;
  ignored: number;
  imported: number;
}

function summaryOf(runResult: CliRun): Summary {
  const summary = lines(runResult.stdout).find((line) => line.startsWith('import-legacy: '));
  assert.ok(summary, `no summary in ${runResult.stdout}`);
  const number = (pattern: RegExp): number => Number(pattern.exec(summary)?.[1] ?? NaN);
  return {
    ok: number(/ok (\d+)/),
    failed: number(/failed (\d+)/),
    skipped: number(/skipped (\d+)/),
    ignored: number(/ignored (\d+)/),
    imported: number(/(?:imported \(\w+\)|would import) (\d+)/),
  };
}

async function assertImported(root: string, entry: GoodEntry): Promise<void> {
  const key = keyOf(entry.imageUrl);
  const directory = join(root, keyDirectory(entry.bucket, key));
  const stored = await readFile(join(directory, `${key}.${entry.ext}`));
  assert.ok(stored.equals(entry.bytes), `${entry.label}: bytes`);
  const sidecar = JSON.parse(await readFile(join(directory, `${key}.json`), 'utf8')) as ImageMetadata;
  assert.equal(sidecar.sourceUrl, entry.imageUrl, entry.label);
  assert.equal(sidecar.contentType, entry.contentType, entry.label);
  assert.equal(sidecar.originContentType, entry.claimedType, entry.label);
  assert.equal(sidecar.bytes, entry.bytes.length, entry.label);
  assert.deepEqual([sidecar.width, sidecar.height], [entry.width, entry.height], entry.label);
  assert.equal(sidecar.fetchedAt, LEGACY_MTIME.toISOString(), entry.label);
}

before(async () => {
  work = await makeTempRoot('imageproxy-legacy-');
  // A port nothing listens on: the origin of every image is unreachable.
  closedOrigin = `http://127.0.0.1:${await freePort()}`;
  pyRoot = join(work, 'py');
  configPath = join(work, 'config.json');
  await writeFile(configPath, JSON.stringify({ root: join(work, 'unused-root'), secrets: [SECRET], limits: { maxBytes: MAX_BYTES } }), { mode: 0o600 });

  const images = [
    { label: 'jpeg', ext: 'jpg', contentType: 'image/jpeg', make: (s: Sharp) => s.jpeg() },
    { label: 'png', ext: 'png', contentType: 'image/png', make: (s: Sharp) => s.png() },
    { label: 'gif', ext: 'gif', contentType: 'image/gif', make: (s: Sharp) => s.gif() },
    // .headers claims JPEG: the bytes win.
    { label: 'webp', ext: 'webp', contentType: 'image/webp', make: (s: Sharp) => s.webp() },
  ];
  for (const [index, image] of images.entries()) {
    const width = 320 + index * 8;
    const height = 240;
    const bytes = await image
      .make(sharp({ create: { width, height, channels: 3, background: { r: 40 * index, g: 90, b: 160 } } }))
      .toBuffer();
    // The gif's URL is made a length whose base64 has padding, and its link kept the `=`.
    let imageUrl = `${closedOrigin}/legacy/${image.label}.${image.ext}`;
    while (image.label === 'gif' && Buffer.byteLength(imageUrl) % 3 === 0) imageUrl = imageUrl.replace('/legacy/', '/legacy/x');
    const claimedType = image.label === 'webp' ? 'image/jpeg' : image.contentType;
    // One bucket `f` entry and one padded ext_url, as links carried them.
    const bucket = image.label === 'png' ? 'f' : 'i';
    const extUrl = image.label === 'gif' ? Buffer.from(imageUrl).toString('base64').replace(/\+/g, '-').replace(/\//g, '_') : extUrlOf(imageUrl);
    if (image.label === 'gif') assert.ok(extUrl.endsWith('='), extUrl);
    const relativePath = await writeLegacyEntry(pyRoot, { bucket, extUrl, bytes, contentType: claimedType });
    good.push({ label: image.label, bucket, imageUrl, extUrl, bytes, ext: image.ext, contentType: image.contentType, claimedType, width, height, relativePath });
  }
  // A name that is not the sha224 of its URL: imported (the .headers URL decides), with a warning.
  const mismatchUrl = `${closedOrigin}/legacy/renamed.jpg`;
  const mismatchBytes = await sharp({ create: { width: 64, height: 48, channels: 3, background: '#123456' } }).jpeg().toBuffer();
  mismatchPath = await writeLegacyEntry(pyRoot, {
    bucket: 'i',
    extUrl: extUrlOf(mismatchUrl),
    bytes: mismatchBytes,
    name: legacyImageName(extUrlOf(`${closedOrigin}/something-else.jpg`)),
  });
  good.push({
    label: 'renamed', bucket: 'i', imageUrl: mismatchUrl, extUrl: extUrlOf(mismatchUrl), bytes: mismatchBytes, ext: 'jpg',
    contentType: 'image/jpeg', claimedType: 'image/jpeg', width: 64, height: 48, relativePath: mismatchPath,
  });

  const small = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#ff0000' } }).png().toBuffer();
  const bad = async (reason: string, spec: { url: string; bytes?: Buffer; headers?: string | null; extUrl?: string }): Promise<void> => {
    const path = await writeLegacyEntry(pyRoot, {
      bucket: 'i',
      extUrl: spec.extUrl ?? extUrlOf(spec.url),
      bytes: spec.bytes ?? small,
      ...(spec.headers === undefined ? {} : { headers: spec.headers }),
    });
    expectedFailures.set(path, reason);
  };
  await bad('no_headers', { url: `${closedOrigin}/no-headers.png`, headers: null });
  await bad('bad_url', { url: 'x', extUrl: 'not base64 at all!' });
  await bad('bad_url', { url: 'https://user:secret@127.0.0.1/credentials.png' });
  await bad('bad_headers', { url: `${closedOrigin}/no-url.png`, headers: 'content-type image/png\n' });
  await bad('not_an_image', { url: `${closedOrigin}/page.html`, bytes: Buffer.from('<!doctype html><title>x</title><script>alert(1)</script>') });
  await bad('too_large', { url: `${closedOrigin}/huge.jpg`, bytes: Buffer.concat([Buffer.from([0xff, 0xd8, 0xff]), Buffer.alloc(MAX_BYTES)]) });
  // Ignored: a backoff record and an unfinished download (of an image that never arrived).
  const pendingName = legacyImageName(extUrlOf(`${closedOrigin}/pending.jpg`));
  const pendingDir = join(pyRoot, 'i', pendingName[0] ?? 'A', pendingName[1] ?? 'A');
  await mkdir(pendingDir, { recursive: true });
  await writeFile(join(pendingDir, `${pendingName}.err`), '1700000000 60');
  await writeFile(join(pendingDir, `${pendingName}.tmp`), small.subarray(0, 10));
  // An orphan .headers, and a stray file.
  const orphanName = legacyImageName(extUrlOf(`${closedOrigin}/orphan.jpg`));
  const orphanRelative = `i/${orphanName[0]}/${orphanName[1]}/${orphanName}.headers`;
  await mkdir(join(pyRoot, 'i', orphanName[0] ?? 'A', orphanName[1] ?? 'A'), { recursive: true });
  await writeFile(join(pyRoot, orphanRelative), `content-type image/jpeg\nx-original-url ${extUrlOf(`${closedOrigin}/orphan.jpg`)}\n`);
  expectedFailures.set(orphanRelative, 'orphan_headers');
  await writeFile(join(pyRoot, 'i', orphanName[0] ?? 'A', orphanName[1] ?? 'A', 'notes.txt'), 'hello');
  expectedFailures.set(`i/${orphanName[0]}/${orphanName[1]}/notes.txt`, 'unknown_file');

  for (const entry of good) await utimes(join(pyRoot, entry.relativePath), LEGACY_MTIME, LEGACY_MTIME);
});

after(() => removeTempRoot(work));

describe('import-legacy --copy (the default)', () => {
  let root = '';
  let firstRun: CliRun;
  let pyBefore: Map<string, string>;

  before(async () => {
    root = join(work, 'copy-root');
    pyBefore = await snapshot(pyRoot);
    firstRun = await run([pyRoot, '--root', root]);
  });

  it('imports every good entry under our key with its sidecar, the type from the bytes, fetchedAt from the mtime', async () => {
    for (const entry of good) await assertImported(root, entry);
  });

  it('writes originals and sidecars only: never a thumbnail, nor the file of a format class', async () => {
    const kinds = new Set<string>();
    for (const bucket of ['i', 'f']) {
      for (const path of (await snapshot(join(root, bucket))).keys()) {
        const name = path.slice(path.lastIndexOf('/') + 1);
        kinds.add(classifyTreeFile(name));
        assert.equal(parseThumbnailName(name), null, name);
      }
    }
    assert.deepEqual([...kinds].sort(), ['original', 'sidecar']);
  });

  it('exits 0 (nothing a rerun could fix) with a summary naming the report, which lists each bad entry with its reason and the warning', async () => {
    assert.equal(firstRun.code, 0, firstRun.stderr);
    const summary = summaryOf(firstRun);
    assert.deepEqual(summary, { ok: good.length, failed: expectedFailures.size, skipped: 0, ignored: 2, imported: good.length });
    const report = reportOf(firstRun);
    assert.ok(report.startsWith(join(root, '.imageproxy', 'import-legacy-')) && report.endsWith('.tsv'), report);
    const reasons = await reportReasons(report);
    assert.deepEqual(reasons, new Map([...expectedFailures, [mismatchPath, 'name_mismatch']]));
  });

  it('leaves the imageproxy-py tree untouched', async () => {
    assert.deepEqual(await snapshot(pyRoot), pyBefore);
  });

  it('a rerun does nothing: 0 imported, every good entry skipped, our tree unchanged', async () => {
    const treeBefore = await snapshot(join(root, 'i'));
    const fBefore = await snapshot(join(root, 'f'));
    const rerun = await run([pyRoot, '--root', root]);
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.deepEqual(summaryOf(rerun), { ok: 0, failed: expectedFailures.size, skipped: good.length, ignored: 2, imported: 0 });
    assert.deepEqual(await snapshot(join(root, 'i')), treeBefore);
    assert.deepEqual(await snapshot(join(root, 'f')), fBefore);
  });

  it('serves every link form from the imported tree with the origin unreachable (whole server in-process)', async () => {
    const config = buildConfig({
      flags: { listen: '127.0.0.1:0', admin: { listen: null }, root, secrets: [SECRET], allowPrivateNetworks: true, logLevel: 'silent', limits: { maxBytes: MAX_BYTES } },
    });
    const server: RunningServer = await startServer({ config, secrets: config.secrets, logger: createLogger('silent') });
    try {
      for (const entry of good) {
        const link = (options: { size?: string; proxy?: boolean }): string =>
          signedPath({ secret: SECRET, imageUrl: entry.imageUrl, atMs: Date.now(), bucket: entry.bucket, ...options });
        const full = await request(server.url, link({}));
        assert.equal(full.status, 200, `${entry.label} full: ${full.body.toString()}`);
        assert.ok(full.body.equals(entry.bytes), `${entry.label} full bytes`);
        assert.equal(full.headers.get('content-type'), entry.contentType);
        const thumbnail = await request(server.url, link({ size: '150x' }));
        assert.equal(thumbnail.status, 200, `${entry.label} 150x: ${thumbnail.body.toString()}`);
        const metadata = await sharp(thumbnail.body).metadata();
        assert.equal(metadata.height, Math.min(150, entry.height), entry.label);
        assert.equal(metadata.width, Math.round((entry.width * Math.min(150, entry.height)) / entry.height), entry.label);
        const proxied = await request(server.url, link({ proxy: true }));
        assert.equal(proxied.status, 200, `${entry.label} proxy`);
        assert.ok(proxied.body.equals(entry.bytes), `${entry.label} proxy bytes`);
      }
    } finally {
      await server.close();
    }
  });
});

describe('import-legacy --dry-run', () => {
  it('checks everything, writes only the report, and says what it would import', async () => {
    const root = join(work, 'dry-root');
    const report = join(work, 'dry-report.tsv');
    const dry = await run([pyRoot, '--root', root, '--dry-run', '--link', '--report', report]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual(summaryOf(dry), { ok: good.length, failed: expectedFailures.size, skipped: 0, ignored: 2, imported: good.length });
    assert.match(dry.stdout, /would import/);
    assert.equal(reportOf(dry), report);
    assert.deepEqual(await reportReasons(report), new Map([...expectedFailures, [mismatchPath, 'name_mismatch']]));
    assert.deepEqual([...(await snapshot(root)).keys()], []);
  });
});

describe('import-legacy --link', () => {
  let root = '';
  before(async () => {
    root = join(work, 'link-root');
  });

  it('hard-links each image (one inode with the legacy file) beside a new sidecar', async () => {
    const linked = await run([pyRoot, '--root', root, '--link']);
    assert.equal(linked.code, 0, linked.stderr);
    assert.equal(summaryOf(linked).imported, good.length);
    for (const entry of good) {
      await assertImported(root, entry);
      const key = keyOf(entry.imageUrl);
      const [source, target] = await Promise.all([
        stat(join(pyRoot, entry.relativePath)),
        stat(join(root, keyDirectory(entry.bucket, key), `${key}.${entry.ext}`)),
      ]);
      assert.equal(target.ino, source.ino, entry.label);
      assert.ok(source.nlink >= 2, entry.label);
    }
  });

  it('a rerun links nothing more', async () => {
    const before = await snapshot(root);
    const rerun = await run([pyRoot, '--root', root, '--link']);
    assert.equal(summaryOf(rerun).imported, 0);
    assert.equal(summaryOf(rerun).skipped, good.length);
    const after = await snapshot(root);
    for (const [path, state] of before) if (!path.startsWith('.imageproxy/')) assert.equal(after.get(path), state, path);
  });

  it('refuses at start, in one line, when the py tree and the root are on different filesystems', async (context) => {
    const [tmp, shm] = await Promise.all([stat(work), stat('/dev/shm').catch(() => null)]);
    if (shm === null || shm.dev === tmp.dev) {
      context.skip('no second filesystem (/dev/shm) here');
      return;
    }
    const shmRoot = await mkdtemp('/dev/shm/imageproxy-legacy-');
    try {
      const refused = await run([pyRoot, '--root', shmRoot, '--link']);
      assert.equal(refused.code, 2);
      assert.equal(refused.stdout, '');
      assert.equal(lines(refused.stderr).length, 1, refused.stderr);
      assert.match(refused.stderr, /^imageproxy: --link: .* different filesystems/);
      assert.deepEqual([...(await snapshot(shmRoot)).keys()], []);
    } finally {
      await removeTempRoot(shmRoot);
    }
  });
});

describe('import-legacy: the bytes step of fetched originals (metadata stripping)', () => {
  it('writes stripped bytes instead of linking or moving the legacy file when stripping changed them', async () => {
    const photo = await sharp({ create: { width: 120, height: 90, channels: 3, background: '#a0b0c0' } })
      .jpeg()
      .withExif({ IFD0: { Copyright: 'an owner who must not leak', Artist: 'someone' } })
      .toBuffer();
    assert.ok((await sharp(photo).metadata()).exif !== undefined);
    const imageUrl = `${closedOrigin}/legacy/with-exif.jpg`;
    const key = keyOf(imageUrl);
    for (const mode of ['link', 'move']) {
      const exifPy = join(work, `py-exif-${mode}`);
      const root = join(work, `exif-root-${mode}`);
      const relativePath = await writeLegacyEntry(exifPy, { bucket: 'i', extUrl: extUrlOf(imageUrl), bytes: photo });
      const sourceInode = (await stat(join(exifPy, relativePath))).ino;
      const imported = await run([exifPy, '--root', root, `--${mode}`]);
      assert.equal(imported.code, 0, imported.stderr);
      const storedPath = join(root, keyDirectory('i', key), `${key}.jpg`);
      const stored = await readFile(storedPath);
      assert.notEqual((await stat(storedPath)).ino, sourceInode, mode);
      assert.ok(stored.length < photo.length, mode);
      assert.equal((await sharp(stored).metadata()).exif, undefined, mode);
      assert.ok(!stored.includes(Buffer.from('an owner who must not leak')), mode);
      const sidecar = JSON.parse(await readFile(join(root, keyDirectory('i', key), `${key}.json`), 'utf8')) as ImageMetadata;
      assert.equal(sidecar.bytes, stored.length, mode);
      if (mode === 'link') {
        assert.ok((await readFile(join(exifPy, relativePath))).equals(photo), 'the legacy file is untouched');
        // A takedown recorded the digest of the stored (stripped) bytes: another import refuses them.
        const blockedRoot = join(work, 'exif-blocked-root');
        await mkdir(join(blockedRoot, '.imageproxy'), { recursive: true });
        const digest = createHash('sha256').update(stored).digest('hex');
        await writeFile(
          join(blockedRoot, '.imageproxy', 'blocklist.json'),
          formatBlocklist({ version: 1, entries: [{ kind: 'digest', value: digest, at: '2026-01-01T00:00:00.000Z', by: 'test' }] }),
        );
        const refused = await run([exifPy, '--root', blockedRoot, '--link']);
        assert.equal(refused.code, 0);
        assert.equal((await reportReasons(reportOf(refused))).get(relativePath), 'blocked');
      } else {
        await assert.rejects(stat(join(exifPy, relativePath)), { code: 'ENOENT' });
      }
    }
  });
});

describe('import-legacy and the blocklist', () => {
  it('does not bring back what was taken down: by key, and by the bytes\' sha256', async () => {
    const root = join(work, 'blocked-root');
    const jpeg = good.find((entry) => entry.label === 'jpeg');
    const png = good.find((entry) => entry.label === 'png');
    assert.ok(jpeg && png);
    const list: Blocklist = {
      version: 1,
      entries: [
        { kind: 'key', value: keyOf(jpeg.imageUrl), at: '2026-01-01T00:00:00.000Z', by: 'test' },
        { kind: 'digest', value: createHash('sha256').update(png.bytes).digest('hex'), at: '2026-01-01T00:00:00.000Z', by: 'test' },
      ],
    };
    await mkdir(join(root, '.imageproxy'), { recursive: true });
    await writeFile(join(root, '.imageproxy', 'blocklist.json'), formatBlocklist(list));
    const report = join(work, 'blocked-report.tsv');
    const imported = await run([pyRoot, '--root', root, '--report', report]);
    assert.equal(imported.code, 0);
    assert.equal(summaryOf(imported).imported, good.length - 2);
    const reasons = await reportReasons(report);
    assert.equal(reasons.get(jpeg.relativePath), 'blocked');
    assert.equal(reasons.get(png.relativePath), 'blocked');
    for (const entry of [jpeg, png]) {
      const key = keyOf(entry.imageUrl);
      await assert.rejects(stat(join(root, keyDirectory(entry.bucket, key), `${key}.json`)), { code: 'ENOENT' }, entry.label);
    }
  });
});

describe('import-legacy --move', () => {
  it('moves images and drops their .headers; bad entries stay; a rerun has nothing left to do', async () => {
    const movedPy = join(work, 'py-to-move');
    await cp(pyRoot, movedPy, { recursive: true, preserveTimestamps: true });
    const root = join(work, 'move-root');
    const moved = await run([movedPy, '--root', root, '--move']);
    assert.equal(moved.code, 0, moved.stderr);
    assert.equal(summaryOf(moved).imported, good.length);
    for (const entry of good) {
      await assertImported(root, entry);
      await assert.rejects(stat(join(movedPy, entry.relativePath)), { code: 'ENOENT' }, entry.label);
      await assert.rejects(stat(join(movedPy, `${entry.relativePath}.headers`)), { code: 'ENOENT' }, entry.label);
    }
    for (const path of expectedFailures.keys()) await stat(join(movedPy, path));
    const rerun = await run([movedPy, '--root', root, '--move']);
    assert.deepEqual(summaryOf(rerun), { ok: 0, failed: expectedFailures.size, skipped: 0, ignored: 2, imported: 0 });

    // A move stopped between the image's rename and its .headers' removal: the rerun
    // finishes it instead of reporting an orphan.
    const [leftOver] = good;
    assert.ok(leftOver);
    const leftHeaders = join(movedPy, `${leftOver.relativePath}.headers`);
    await writeFile(leftHeaders, `content-type ${leftOver.claimedType}\nx-original-url ${leftOver.extUrl}\n`);
    const finishing = await run([movedPy, '--root', root, '--move']);
    assert.deepEqual(summaryOf(finishing), { ok: 0, failed: expectedFailures.size, skipped: 1, ignored: 2, imported: 0 });
    await assert.rejects(stat(leftHeaders), { code: 'ENOENT' });
  });
});

describe('import-legacy usage', () => {
  const table: Array<[string, string[], RegExp]> = [
    ['two modes', ['--copy', '--move'], /cannot be used with/],
    ['an unknown bucket', ['--bucket', 'zz'], /--bucket: zz is not a configured bucket/],
    ['a py root that does not exist', ['--bucket', 'i'], /not a directory/],
  ];
  for (const [name, args, message] of table) {
    it(`exits 2 with one line for ${name}`, async () => {
      const target = name.includes('does not exist') ? join(work, 'missing') : pyRoot;
      const refused = await run([target, ...args]);
      assert.equal(refused.code, 2, refused.stderr);
      assert.equal(lines(refused.stderr).length, 1, refused.stderr);
      assert.match(refused.stderr, message);
    });
  }

  it('--help lists the modes, the report and the exit codes', async () => {
    const help = await runCli(['import-legacy', '--help'], { cwd: work });
    assert.equal(help.code, 0);
    for (const flag of ['--copy', '--link', '--move', '--dry-run', '--decode', '--bucket', '--report', '--root', '--config', 'Exit codes: 0', '1 some entries failed', '130 interrupted', 'outside_tree', 'io_error']) {
      assert.ok(help.stdout.includes(flag), flag);
    }
  });
});

describe('import-legacy interrupted (SIGINT) and resumed', () => {
  const ENTRIES = 3000;

  it('stops with 130, leaves no temp file and no image without sidecar, and a rerun finishes the rest', async () => {
    const bigPy = join(work, 'py-big');
    const root = join(work, 'big-root');
    const tiny = await sharp({ create: { width: 4, height: 4, channels: 3, background: '#00ff00' } }).png().toBuffer();
    for (let index = 0; index < ENTRIES; index += 1) {
      await writeLegacyEntry(bigPy, { bucket: 'i', extUrl: extUrlOf(`${closedOrigin}/many/${index}.png`), bytes: tiny });
    }
    const child = startCli(['import-legacy', bigPy, '--root', root, '--config', configPath], { cwd: work });
    const finished = finishCli(child, 60_000);
    // Interrupt once the import is under way: the first sidecars are on disk.
    await until(
      async () => {
        for await (const file of walkShardFiles(join(root, 'i'))) if (file.name.endsWith('.json')) return true;
        return false;
      },
      { message: 'the import started writing (a sidecar on disk)', intervalMs: 20 },
    );
    child.kill('SIGINT');
    const interrupted = await finished;
    assert.equal(interrupted.code, 130, interrupted.stderr);
    assert.match(interrupted.stdout, /import-legacy: interrupted after \d+ entries/);
    const first = summaryOf(interrupted);
    assert.ok(first.imported > 0 && first.imported < ENTRIES, `imported ${first.imported}`);

    const names = new Set<string>();
    for await (const file of walkShardFiles(join(root, 'i'))) names.add(file.name);
    assert.deepEqual([...names].filter((name) => name.endsWith('.tmp')), []);
    const images = [...names].filter((name) => name.endsWith('.png'));
    assert.equal(images.length, first.imported);
    for (const image of images) assert.ok(names.has(image.replace(/\.png$/, '.json')), `${image} has no sidecar`);

    const rest = await run([bigPy, '--root', root], 60_000);
    assert.equal(rest.code, 0, rest.stderr);
    assert.deepEqual(summaryOf(rest), { ok: ENTRIES - first.imported, failed: 0, skipped: first.imported, ignored: 0, imported: ENTRIES - first.imported });
    let stored = 0;
    for await (const file of walkShardFiles(join(root, 'i'))) if (file.name.endsWith('.png')) stored += 1;
    assert.equal(stored, ENTRIES);
  });
});

const missingNginx = nginxMissing();
if (missingNginx !== null) console.log(`# import-legacy nginx test skipped: ${missingNginx}`);

describe('an imported tree behind real nginx', { skip: missingNginx ?? false }, () => {
  it('nginx serves a full link itself (app down), and a thumbnail through the app via X-Accel-Redirect', async () => {
    const root = join(work, 'nginx-root');
    const imported = await run([pyRoot, '--root', root, '--link']);
    assert.equal(summaryOf(imported).imported, good.length);
    const [appPort, nginxPort] = [await freePort(), await freePort()];
    const config = buildConfig({
      flags: {
        listen: `127.0.0.1:${appPort}`,
        admin: { listen: null },
        root,
        secrets: [SECRET],
        delivery: 'accel',
        allowPrivateNetworks: true,
        logLevel: 'silent',
        nginx: { listen: `127.0.0.1:${nginxPort}`, internalPrefix: '/_imageproxy' },
      },
    });
    const nginxConfigPath = join(work, 'nginx-config.json');
    await writeFile(nginxConfigPath, JSON.stringify({ ...config, secrets: [SECRET] }, null, 2), { mode: 0o600 });
    const prefix = join(work, 'nginx');
    const rendered = await renderStandaloneWithCli(nginxConfigPath, prefix);
    const nginx = await startNginx(prefix, rendered, nginxPort);
    let app: RunningServer | null = null;
    try {
      const base = `http://127.0.0.1:${nginxPort}`;
      const jpeg = good.find((entry) => entry.label === 'jpeg');
      assert.ok(jpeg);
      const link = (size: string): string => signedPath({ secret: SECRET, imageUrl: jpeg.imageUrl, atMs: Date.now(), size });
      // No app is listening yet: only nginx can answer this.
      const full = await request(base, link('full'));
      assert.equal(full.status, 200, full.body.toString());
      assert.ok(full.body.equals(jpeg.bytes));
      assert.equal(full.headers.get('content-type'), 'image/jpeg');

      app = await startServer({ config, secrets: config.secrets, logger: createLogger('silent') });
      const thumbnail = await request(base, link('x200'));
      assert.equal(thumbnail.status, 200, thumbnail.body.toString());
      assert.equal(thumbnail.headers.get('x-accel-redirect'), null);
      const metadata = await sharp(thumbnail.body).metadata();
      assert.deepEqual([metadata.width, metadata.height], [200, Math.round((200 * jpeg.height) / jpeg.width)]);
    } finally {
      await nginx.stop();
      await app?.close();
    }
  });
});
