/**
 * `check`, `check --repair` and the heal pass's sample on a tree holding the files of
 * format classes (`{key}.{label}.{avif|webp}.{ext}`, real AVIF and WebP made by sharp,
 * hard links of source-format thumbnails): sound ones, hard links included, are not
 * reported; a class file cut short, of another size than its own record, or whose bytes
 * are not of its extension is damaged and moved aside like any thumbnail; a class file
 * without its original is judged as a thumbnail without one is; class locks are locks;
 * a damaged thumbnail's hard links (one file, one damage) go with it.
 * The record of a class file lives under its own name in the sidecar, never over the
 * source-format thumbnail's.
 */
import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, stat, truncate, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { keyDirectory, storageKey, type ImageExtension } from '../server/contract/layout.js';
import { inspectImage } from '../server/images/sniff.js';
import { variantRecordOf, type ImageMetadata } from '../server/tree/originals.js';
import { ImageStore } from '../server/tree/store.js';
import { verifyTreeSample } from '../server/tree/verify.js';
import type { FindingReport } from '../server/tree/healthWalk.js';
import { lines, runCli } from './cliProcess.js';
import { imageOf, linkClassFile, plantClassFile } from './formatClassFiles.js';
import { makeTempRoot, removeTempRoot } from './helpers.js';

const SECRET = 'format-check-secret';
const CONTENT_TYPE: Record<ImageExtension, string> = { jpg: 'image/jpeg', png: 'image/png', webp: 'image/webp', gif: 'image/gif', avif: 'image/avif' };

const keyOf = (name: string): string => storageKey(Buffer.from(`http://127.0.0.1/${name}`));

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** `kind name` of each finding line of check's stdout, sorted. */
function findingsOf(stdout: string): string[] {
  return lines(stdout)
    .filter((line) => line.includes('\t'))
    .map((line) => {
      const [kind, path] = line.split('\t');
      return `${kind} ${(path ?? '').split('/').pop()}`;
    })
    .sort();
}

describe('check and the heal pass know the files of format classes', () => {
  let root = '';
  const store = (): ImageStore => new ImageStore(root);
  const dirOf = (key: string): string => join(root, keyDirectory('i', key));
  const keys = {
    sound: keyOf('sound'),
    linked: keyOf('linked'),
    shortRecorded: keyOf('short-recorded'),
    shortUnrecorded: keyOf('short-unrecorded'),
    mislabelled: keyOf('mislabelled'),
    orphan: keyOf('orphan'),
    damagedOriginal: keyOf('damaged-original'),
    damagedLinked: keyOf('damaged-linked'),
  };
  let sourceRecordBefore: unknown;
  let linkedIno = 0;

  /** An original with its sidecar, and its source-format thumbnail recorded in it. */
  async function original(key: string, label: string, thumbnailExt: ImageExtension): Promise<void> {
    const bytes = await imageOf('jpg', 320, 240);
    const info = inspectImage(bytes);
    assert.ok(info !== null);
    await store().storeOriginal('i', key, { ...info, bytes }, { sourceUrl: `http://127.0.0.1/${key}`, originContentType: 'image/jpeg', fetchedAt: new Date().toISOString() });
    const thumbnail = await imageOf(thumbnailExt, 125, 94);
    await store().storeImage('i', key, label, thumbnailExt, thumbnail);
    assert.equal(await store().recordVariant('i', key, label, variantRecordOf(thumbnail, CONTENT_TYPE[thumbnailExt])), true);
  }

  /** A class file with real bytes, recorded under its own name when `recorded`. */
  async function classFile(key: string, label: string, format: 'avif' | 'webp', bytes: Buffer, recorded: boolean): Promise<string> {
    await mkdir(dirOf(key), { recursive: true });
    const name = await plantClassFile(dirOf(key), key, label, format, format, bytes);
    if (recorded) assert.equal(await store().recordVariant('i', key, `${label}.${format}`, variantRecordOf(bytes, CONTENT_TYPE[format])), true);
    return name;
  }

  const sidecarOf = async (key: string): Promise<ImageMetadata> => JSON.parse(await readFile(join(dirOf(key), `${key}.json`), 'utf8')) as ImageMetadata;
  const check = (...args: string[]) => runCli(['check', '--root', root, '--secret', SECRET, ...args], { cwd: root });

  before(async () => {
    root = await makeTempRoot('imageproxy-format-check-');
    const avif = await imageOf('avif', 125, 94);
    const webp = await imageOf('webp', 125, 94);

    // Sound: an AVIF recorded under 250x250.avif beside the JPEG recorded under 250x250, a WebP never recorded.
    await original(keys.sound, '250x250', 'jpg');
    await classFile(keys.sound, '250x250', 'avif', avif, true);
    await classFile(keys.sound, '250x250', 'webp', webp, false);
    sourceRecordBefore = (await sidecarOf(keys.sound)).variants?.['250x250'];
    // Converting did not pay: both classes get a hard link of the PNG thumbnail.
    await original(keys.linked, '150x', 'png');
    await linkClassFile(dirOf(keys.linked), keys.linked, '150x', 'avif', 'png');
    await linkClassFile(dirOf(keys.linked), keys.linked, '150x', 'webp', 'png');
    linkedIno = (await stat(join(dirOf(keys.linked), `${keys.linked}.150x.png`))).ino;

    // Cut short: one with its record (the walk sees the size), one without (only a decode sees it).
    await original(keys.shortRecorded, '250x250', 'jpg');
    const shortAvif = await classFile(keys.shortRecorded, '250x250', 'avif', avif, true);
    await truncate(join(dirOf(keys.shortRecorded), shortAvif), Math.floor(avif.length / 2));
    await original(keys.shortUnrecorded, '250x250', 'jpg');
    const shortWebp = await classFile(keys.shortUnrecorded, '250x250', 'webp', webp, false);
    await truncate(join(dirOf(keys.shortUnrecorded), shortWebp), Math.floor(webp.length / 2));

    // JPEG bytes under an .avif name.
    await original(keys.mislabelled, '250x250', 'jpg');
    await classFile(keys.mislabelled, '250x250', 'avif', await imageOf('jpg', 125, 94), false);

    // No original, no sidecar: a sound WebP and a stale lock of its stem.
    await classFile(keys.orphan, '250x250', 'webp', webp, false);
    const staleLock = join(dirOf(keys.orphan), `${keys.orphan}.250x250.webp.lock`);
    await mkdir(staleLock);
    const minuteAgo = new Date(Date.now() - 60_000);
    await utimes(staleLock, minuteAgo, minuteAgo);
    // A fresh lock of a class stem: a holder refreshes it every 5 s; a minute ahead stays fresh.
    const freshLock = join(dirOf(keys.sound), `${keys.sound}.250x250.avif.lock`);
    await mkdir(freshLock);
    const ahead = new Date(Date.now() + 60_000);
    await utimes(freshLock, ahead, ahead);

    // An empty original: its class files and their backoff record go with its thumbnails.
    await original(keys.damagedOriginal, '250x250', 'jpg');
    await classFile(keys.damagedOriginal, '250x250', 'avif', avif, true);
    await linkClassFile(dirOf(keys.damagedOriginal), keys.damagedOriginal, '250x250', 'webp', 'jpg');
    await store().writeFailure('i', keys.damagedOriginal, `${keys.damagedOriginal}.250x250.avif`, { failures: 1, lastFailureAt: new Date().toISOString(), retryAtMs: Date.now(), code: 'bad_image', detail: null, message: null });
    await truncate(join(dirOf(keys.damagedOriginal), `${keys.damagedOriginal}.jpg`), 0);

    // A recorded JPEG thumbnail cut short, and its unrecorded hard link for class webp: one file, one damage.
    await original(keys.damagedLinked, '250x250', 'jpg');
    await linkClassFile(dirOf(keys.damagedLinked), keys.damagedLinked, '250x250', 'webp', 'jpg');
    await truncate(join(dirOf(keys.damagedLinked), `${keys.damagedLinked}.250x250.jpg`), 200);
  });
  after(() => removeTempRoot(root));

  const expectedWithoutDecode = [
    `damaged-original ${keys.damagedOriginal}.jpg`,
    `damaged-thumbnail ${keys.damagedLinked}.250x250.jpg`,
    `damaged-thumbnail ${keys.mislabelled}.250x250.avif.avif`,
    `damaged-thumbnail ${keys.shortRecorded}.250x250.avif.avif`,
    `stale-lock ${keys.orphan}.250x250.webp.lock`,
  ].sort();

  test('check reports the damaged class files, a stale class lock, nothing about sound ones, hard links or the orphan', async () => {
    const run = await check();
    assert.equal(run.code, 1, run.stderr);
    assert.deepEqual(findingsOf(run.stdout), expectedWithoutDecode);
    assert.match(run.stdout, new RegExp(`${keys.mislabelled}\\.250x250\\.avif\\.avif\\ta jpeg image stored as \\.avif`));
    assert.match(run.stdout, new RegExp(`${keys.shortRecorded}\\.250x250\\.avif\\.avif\\t\\d+ bytes, its record says \\d+`));
  });

  test('check --decode also finds the class file cut short that has no record', async () => {
    const run = await check('--decode');
    assert.equal(run.code, 1, run.stderr);
    assert.deepEqual(
      findingsOf(run.stdout),
      [...expectedWithoutDecode, `damaged-thumbnail ${keys.shortUnrecorded}.250x250.webp.webp`, `damaged-thumbnail ${keys.damagedLinked}.250x250.webp.jpg`].sort(),
    );
  });

  test('--repair moves the damaged class files aside, removes the stale lock and the class files of a damaged original; the rest stays', async () => {
    const run = await check('--repair');
    assert.equal(run.code, 0, run.stderr + run.stdout);
    assert.deepEqual(findingsOf(run.stdout), expectedWithoutDecode);
    const quarantined = (await readdir(join(root, '.imageproxy', 'quarantine', 'i'))).map((name) => name.replace(/\.\d{8}T[\d.]+Z$/, '')).sort();
    assert.deepEqual(
      quarantined,
      [
        `${keys.damagedOriginal}.jpg`,
        `${keys.damagedOriginal}.json`,
        `${keys.damagedLinked}.250x250.jpg`,
        `${keys.mislabelled}.250x250.avif.avif`,
        `${keys.shortRecorded}.250x250.avif.avif`,
      ].sort(),
    );
    assert.deepEqual((await readdir(dirOf(keys.damagedOriginal))).filter((name) => name.startsWith(keys.damagedOriginal)), [], 'thumbnails, class files and their records gone');
    assert.match(run.stdout, new RegExp(`${keys.damagedLinked}\\.250x250\\.jpg\\t.*repaired: moved aside to .*; removed ${keys.damagedLinked}\\.250x250\\.webp\\.jpg`));
    assert.deepEqual(
      (await readdir(dirOf(keys.damagedLinked))).filter((name) => name.startsWith(keys.damagedLinked)).sort(),
      [`${keys.damagedLinked}.jpg`, `${keys.damagedLinked}.json`],
      'the hard link of the damaged thumbnail went with it',
    );
    assert.equal(await exists(join(dirOf(keys.orphan), `${keys.orphan}.250x250.webp.lock`)), false, 'stale class lock removed');
    assert.equal(await exists(join(dirOf(keys.sound), `${keys.sound}.250x250.avif.lock`)), true, 'fresh class lock kept');
    for (const [key, name] of [
      [keys.sound, `${keys.sound}.250x250.avif.avif`],
      [keys.sound, `${keys.sound}.250x250.webp.webp`],
      [keys.sound, `${keys.sound}.250x250.jpg`],
      [keys.orphan, `${keys.orphan}.250x250.webp.webp`],
    ] as const) {
      assert.equal(await exists(join(dirOf(key), name)), true, `${name} kept`);
    }
    for (const name of [`${keys.linked}.150x.png`, `${keys.linked}.150x.avif.png`, `${keys.linked}.150x.webp.png`]) {
      const info = await stat(join(dirOf(keys.linked), name));
      assert.equal(info.ino, linkedIno, `${name} still one file with the source-format thumbnail`);
      assert.equal(info.nlink, 3, name);
    }
    const again = await check();
    assert.equal(again.code, 0, again.stdout);
    assert.match(again.stdout, /^findings 0: /);
  });

  test("the heal pass's sample: the unrecorded class file cut short is moved aside; sound ones are recorded under their own names, the source record untouched", async () => {
    const reports: FindingReport[] = [];
    const result = await verifyTreeSample({ root, buckets: ['i'], limit: 1000, onFinding: (report) => reports.push(report) });
    assert.equal(result.wrapped, true);
    assert.deepEqual(
      reports.map((report) => `${report.kind} ${report.name} ${report.repair ?? ''}`),
      [`damaged-thumbnail ${keys.shortUnrecorded}.250x250.webp.webp repaired`],
    );
    assert.equal(result.damaged, 1);
    const sound = await sidecarOf(keys.sound);
    assert.deepEqual(sound.variants?.['250x250'], sourceRecordBefore, 'the source-format thumbnail keeps its record');
    const webpBytes = await readFile(join(dirOf(keys.sound), `${keys.sound}.250x250.webp.webp`));
    assert.deepEqual(sound.variants?.['250x250.webp'], variantRecordOf(webpBytes, 'image/webp'));
    const linked = await sidecarOf(keys.linked);
    const pngBytes = await readFile(join(dirOf(keys.linked), `${keys.linked}.150x.png`));
    for (const recordName of ['150x', '150x.avif', '150x.webp']) {
      assert.deepEqual(linked.variants?.[recordName], variantRecordOf(pngBytes, 'image/png'), recordName);
    }

    // The app's lookup then serves each file of the key, each judged against its own record.
    for (const [label, ext] of [['250x250', 'jpg'], ['250x250.avif', 'avif'], ['250x250.webp', 'webp']] as const) {
      const found = await store().find('i', keys.sound, label, ext);
      assert.equal(found?.ext, ext, label);
    }
    const clean = await check('--decode');
    assert.equal(clean.code, 0, clean.stdout);
  });
});

describe("the app's lookup and a damaged thumbnail's hard links", () => {
  test('a thumbnail found damaged is moved aside with the class files that are hard links of it; another class file stays', async () => {
    const root = await makeTempRoot('imageproxy-format-lookup-');
    try {
      const damaged: string[] = [];
      const store = new ImageStore(root, { onDamaged: (event) => damaged.push(event.relativePath) });
      const key = keyOf('lookup');
      const bytes = await imageOf('jpg', 320, 240);
      const info = inspectImage(bytes);
      assert.ok(info !== null);
      await store.storeOriginal('i', key, { ...info, bytes }, { sourceUrl: 'http://127.0.0.1/lookup', originContentType: 'image/jpeg', fetchedAt: new Date().toISOString() });
      const thumbnail = await imageOf('jpg', 125, 94);
      await store.storeImage('i', key, '250x250', 'jpg', thumbnail);
      assert.equal(await store.recordVariant('i', key, '250x250', variantRecordOf(thumbnail, 'image/jpeg')), true);
      const directory = join(root, keyDirectory('i', key));
      const linked = await linkClassFile(directory, key, '250x250', 'webp', 'jpg');
      const avif = await plantClassFile(directory, key, '250x250', 'avif', 'avif', await imageOf('avif', 125, 94));
      await truncate(join(directory, `${key}.250x250.jpg`), 100);

      assert.equal(await store.find('i', key, '250x250', 'jpg'), null, 'not served');
      assert.deepEqual(damaged, [`${keyDirectory('i', key)}/${key}.250x250.jpg`]);
      const left = (await readdir(directory)).filter((name) => name.startsWith(key)).sort();
      assert.ok(!left.includes(linked), 'its hard link went with it');
      assert.deepEqual(left, [`${key}.250x250.avif.avif`, `${key}.jpg`, `${key}.json`].sort());
      assert.equal((await store.find('i', key, '250x250.avif', 'avif'))?.relativePath, `${keyDirectory('i', key)}/${avif}`);
    } finally {
      await removeTempRoot(root);
    }
  });
});
