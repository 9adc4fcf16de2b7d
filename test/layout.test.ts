// Storage layout (pure names) and the ImageStore over a real temp root.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  IMAGE_EXTENSIONS,
  classFileExtensions,
  classVariantStem,
  classifyTreeFile,
  parseThumbnailName,
  type ThumbnailName,
  failureFileName,
  fileStem,
  hostLockName,
  imageFileName,
  isImageExtension,
  isTempFileName,
  keyDirectory,
  lockFileName,
  metadataFileName,
  storageKey,
  tempFileName,
  type TreeFileKind,
} from '../server/contract/layout.js';
import { imageUrlBytes, parseLink } from '../server/contract/link.js';
import { ImageStore } from '../server/tree/store.js';
import sharp from 'sharp';
import { extUrlOf, makeTempRoot, removeTempRoot } from './helpers.js';

const KEY_PATTERN = /^[A-Za-z0-9_-]{43}$/;

interface KeyCase {
  name: string;
  imageUrl: string;
  /** Computed outside this code: printf '%s' URL | openssl dgst -sha256 -binary | basenc --base64url | tr -d = */
  expectedKey: string;
}

const KEY_CASES: KeyCase[] = [
  { name: 'plain https', imageUrl: 'https://example.com/a.jpg', expectedKey: 'J2oawAuk8OpH7ur8okKE9BvHjcWTrx8EhhWs66RKudk' },
  {
    name: 'query string',
    imageUrl: 'https://example.com/a.jpg?size=large&x=1',
    expectedKey: 'qciEQK_gpqEOniGdcxWfWrhHw060C8LlsSvDhrc_U3U',
  },
  { name: 'non-ASCII path', imageUrl: 'https://example.com/bild-ü.png', expectedKey: 'Vl0Q-0TpVGZdJ9L8miBb8sNgsYBm41e4ByK4v03oxi8' },
  { name: 'IDN host', imageUrl: 'https://bücher.example/a.gif', expectedKey: 'BDrzWpp5tZEeJ-zj4kDX6CxFs7P3fQlCMWf-Wx4-Bi4' },
  {
    name: 'long URL',
    imageUrl: `https://example.com/${'a'.repeat(2000)}.webp`,
    expectedKey: 'VXMCdeVDhFGvBWxgYD75e3ANaEO93ajUwFUTsrpp29E',
  },
];

describe('storageKey', () => {
  for (const testCase of KEY_CASES) {
    it(`${testCase.name}: 43 base64url characters, sha256 of the decoded bytes`, () => {
      const key = storageKey(imageUrlBytes(extUrlOf(testCase.imageUrl)));
      assert.match(key, KEY_PATTERN);
      assert.equal(key, testCase.expectedKey);
    });
  }

  it('different URLs give different keys', () => {
    const keys = KEY_CASES.map((testCase) => storageKey(Buffer.from(testCase.imageUrl)));
    assert.equal(new Set(keys).size, keys.length);
  });

  it('padding variants of one link share one key', () => {
    const rules = { buckets: new Set(['i']), sizes: [150] };
    const unpadded = extUrlOf('https://example.com/a.jpg'); // 25 bytes: two padding characters
    const paths = [`/i/full/AAAAAAAAAAAAAAAA/${unpadded}`, `/i/full/AAAAAAAAAAAAAAAA/${unpadded}==`, `/i/full/AAAAAAAAAAAAAAAA/${unpadded}%3D%3D`];
    const keys = paths.map((path) => storageKey(imageUrlBytes(parseLink(path, rules).extUrl)));
    assert.equal(new Set(keys).size, 1, keys.join(' '));
  });

  it('keyDirectory shards by the first two characters', () => {
    assert.equal(keyDirectory('i', 'Ab-_rest'), 'i/A/b');
    assert.equal(keyDirectory('t', '-_xyz'), 't/-/_');
  });
});

const KEY = storageKey(Buffer.from('https://example.com/a.jpg'));

interface NameCase {
  name: string;
  fileName: string;
  expected: string;
  /** Whether a lookup may ever serve it. */
  servable: boolean;
}

const NAME_CASES: NameCase[] = [
  { name: 'original', fileName: imageFileName(fileStem(KEY, null), 'jpg'), expected: `${KEY}.jpg`, servable: true },
  { name: 'variant', fileName: imageFileName(fileStem(KEY, '150x'), 'webp'), expected: `${KEY}.150x.webp`, servable: true },
  { name: 'variant with both sides', fileName: imageFileName(fileStem(KEY, '250x250'), 'png'), expected: `${KEY}.250x250.png`, servable: true },
  { name: 'metadata', fileName: metadataFileName(KEY), expected: `${KEY}.json`, servable: false },
  { name: 'lock of the original', fileName: lockFileName(fileStem(KEY, null)), expected: `${KEY}.lock`, servable: false },
  { name: 'lock of a variant', fileName: lockFileName(fileStem(KEY, 'x200')), expected: `${KEY}.x200.lock`, servable: false },
  { name: 'failure record', fileName: failureFileName(KEY), expected: `${KEY}.fail`, servable: false },
  { name: 'failure record of a variant', fileName: failureFileName(fileStem(KEY, '150x')), expected: `${KEY}.150x.fail`, servable: false },
  ...IMAGE_EXTENSIONS.map((ext) => ({
    name: `temp of a .${ext} original`,
    fileName: tempFileName(`${KEY}.${ext}`, '123.abcdef'),
    expected: `.${KEY}.${ext}.123.abcdef.tmp`,
    servable: false,
  })),
  { name: 'temp of metadata', fileName: tempFileName(metadataFileName(KEY), '9.ff'), expected: `.${KEY}.json.9.ff.tmp`, servable: false },
];

describe('file names', () => {
  for (const testCase of NAME_CASES) {
    it(testCase.name, () => {
      assert.equal(testCase.fileName, testCase.expected);
      const extension = testCase.fileName.slice(testCase.fileName.lastIndexOf('.') + 1);
      assert.equal(isImageExtension(extension), testCase.servable, 'only image names end in an image extension');
      assert.equal(isTempFileName(testCase.fileName), testCase.fileName.endsWith('.tmp'));
      if (!testCase.servable) {
        for (const ext of IMAGE_EXTENSIONS) assert.ok(!testCase.fileName.endsWith(`.${ext}`));
      }
    });
  }

  it('isTempFileName needs both the leading dot and .tmp', () => {
    assert.equal(isTempFileName(`${KEY}.tmp`), false);
    assert.equal(isTempFileName('.imageproxy-secret'), false);
    assert.equal(isTempFileName(`${KEY}.jpg`), false);
  });
});

describe('hostLockName', () => {
  // The largest identity the kernel can give (64-bit device and inode numbers).
  const widest = { dev: 2n ** 64n - 1n, ino: 2n ** 64n - 1n };
  const small = { dev: 2049n, ino: 2n };
  const cases: Array<{ name: string; a: string; b: string; same: boolean }> = [
    { name: 'same tree, bucket and stem', a: hostLockName(small, 'i', KEY), b: hostLockName(small, 'i', KEY), same: true },
    { name: 'another tree (inode)', a: hostLockName(small, 'i', KEY), b: hostLockName({ dev: 2049n, ino: 3n }, 'i', KEY), same: false },
    { name: 'another tree (device)', a: hostLockName(small, 'i', KEY), b: hostLockName({ dev: 2050n, ino: 2n }, 'i', KEY), same: false },
    { name: 'another bucket', a: hostLockName(small, 'i', KEY), b: hostLockName(small, 't', KEY), same: false },
    { name: 'a variant of the key', a: hostLockName(small, 'i', KEY), b: hostLockName(small, 'i', fileStem(KEY, '250x250')), same: false },
  ];
  for (const testCase of cases) {
    it(testCase.name, () => assert.equal(testCase.a === testCase.b, testCase.same));
  }

  it('fits an abstract socket name (107 bytes) with the widest identity, a long bucket and label', () => {
    const name = hostLockName(widest, 'b'.repeat(200), fileStem(KEY, '99999x99999'));
    assert.ok(Buffer.byteLength(name) <= 107, `${Buffer.byteLength(name)} bytes: ${name}`);
    assert.match(name, /^imageproxy\/18446744073709551615:18446744073709551615\/[A-Za-z0-9_-]{43}$/);
  });
});

describe('ImageStore', () => {
  let root = '';
  before(async () => {
    root = await makeTempRoot();
  });
  after(() => removeTempRoot(root));

  // find sniffs a stored file's head against its extension, so the files placed as
  // images are real ones (1×1, made once per format).
  const imageOf = new Map<string, Buffer>();
  before(async () => {
    for (const ext of IMAGE_EXTENSIONS) {
      const format = ext === 'jpg' ? 'jpeg' : ext;
      imageOf.set(ext, await sharp({ create: { width: 1, height: 1, channels: 3, background: '#808080' } }).toFormat(format).toBuffer());
    }
  });

  function realImage(relativePath: string): Buffer {
    const ext = relativePath.slice(relativePath.lastIndexOf('.') + 1);
    const bytes = imageOf.get(ext);
    assert.ok(bytes, `no image made for .${ext}`);
    return bytes;
  }

  async function place(relativePath: string, bytes: string | Buffer = realImage(relativePath)): Promise<string> {
    const path = join(root, relativePath);
    await mkdir(join(path, '..'), { recursive: true });
    await writeFile(path, bytes);
    return path;
  }

  it('find tries every extension and returns the relative path', async () => {
    const store = new ImageStore(root);
    const key = storageKey(Buffer.from('https://example.com/find.avif'));
    assert.equal(await store.find('i', key, null), null);
    const path = await place(`i/${key[0]}/${key[1]}/${key}.avif`);
    const found = await store.find('i', key, null);
    assert.deepEqual(found && { ...found, modifiedMs: 0 }, {
      path,
      relativePath: `i/${key[0]}/${key[1]}/${key}.avif`,
      ext: 'avif',
      bytes: (await stat(path)).size,
      modifiedMs: 0,
    });
  });

  it('find keeps original and variant apart, and buckets apart', async () => {
    const store = new ImageStore(root);
    const key = storageKey(Buffer.from('https://example.com/variant.png'));
    await place(`i/${key[0]}/${key[1]}/${key}.150x.webp`);
    assert.equal(await store.find('i', key, null), null);
    assert.equal(await store.find('i', key, 'x150'), null);
    assert.equal(await store.find('f', key, '150x'), null);
    assert.equal((await store.find('i', key, '150x'))?.ext, 'webp');
  });

  it('find takes jpg first when two formats exist', async () => {
    const store = new ImageStore(root);
    const key = storageKey(Buffer.from('https://example.com/both'));
    await place(`t/${key[0]}/${key[1]}/${key}.png`);
    await place(`t/${key[0]}/${key[1]}/${key}.jpg`);
    assert.equal((await store.find('t', key, null))?.ext, 'jpg');
  });

  it('find with a likely extension: one found there is returned; an empty one there is moved aside and the real one found', async () => {
    const store = new ImageStore(root);
    const key = storageKey(Buffer.from('https://example.com/likely'));
    const directory = `i/${key[0]}/${key[1]}`;
    await place(`${directory}/${key}.png`);
    assert.equal((await store.find('i', key, null, 'png'))?.ext, 'png', 'likely extension right');
    assert.equal((await store.find('i', key, null, 'webp'))?.ext, 'png', 'likely extension wrong: the others are looked at');
    await place(`${directory}/${key}.jpg`, '');
    const found = await store.find('i', key, null, 'jpg');
    assert.equal(found?.ext, 'png', 'the empty likely file is not served');
    assert.deepEqual((await readdir(join(root, directory))).filter((name) => name.startsWith(key)), [`${key}.png`], 'the empty one moved aside');
  });

  it('find skips a directory with an image name, and temp, json, lock and fail files', async () => {
    const store = new ImageStore(root);
    const key = storageKey(Buffer.from('https://example.com/not-files'));
    const directory = `f/${key[0]}/${key[1]}`;
    await mkdir(join(root, directory, `${key}.jpg`), { recursive: true });
    for (const name of [tempFileName(`${key}.png`, '1.a'), metadataFileName(key), lockFileName(key), failureFileName(key)]) {
      await place(`${directory}/${name}`, 'x');
    }
    assert.equal(await store.find('f', key, null), null);
    await place(`${directory}/${key}.gif`);
    assert.equal((await store.find('f', key, null))?.ext, 'gif');
  });

  it('writeAtomic writes the bytes and leaves no temp file', async () => {
    const store = new ImageStore(root);
    const key = storageKey(Buffer.from('https://example.com/atomic'));
    const bytes = Buffer.from('the whole file');
    const path = await store.writeAtomic('i', key, `${key}.png`, bytes);
    assert.equal(path, join(root, 'i', key[0] ?? '', key[1] ?? '', `${key}.png`));
    assert.deepEqual(await readdir(join(root, 'i', key[0] ?? '', key[1] ?? '')), [`${key}.png`]);
    assert.equal((await stat(path)).size, bytes.length);
    const stored = await store.storeImage('i', key, '150x', 'jpg', bytes);
    assert.equal(stored.relativePath, `i/${key[0]}/${key[1]}/${key}.150x.jpg`);
    assert.deepEqual((await readdir(join(root, 'i', key[0] ?? '', key[1] ?? ''))).sort(), [`${key}.150x.jpg`, `${key}.png`]);
  });
});

describe('ImageStore.initBuckets', () => {
  let root = '';
  before(async () => {
    root = await makeTempRoot();
  });
  after(() => removeTempRoot(root));

  it('creates 64 × 64 directories per bucket, then none on a second run', async () => {
    const store = new ImageStore(root);
    assert.equal(await store.initBuckets(['i', 'f']), 2 * 4096);
    for (const bucket of ['i', 'f']) {
      const firstLevel = await readdir(join(root, bucket));
      assert.equal(firstLevel.length, 64);
      for (const first of firstLevel) assert.equal((await readdir(join(root, bucket, first))).length, 64);
    }
    assert.equal(await store.initBuckets(['i', 'f']), 0);
    assert.equal(await store.initBuckets(['i', 'f', 't']), 4096);
  });
});

interface ClassifyCase {
  fileName: string;
  expected: TreeFileKind;
}

const TREE_KEY = storageKey(Buffer.from('https://example.com/classify.jpg'));

const CLASSIFY_CASES: ClassifyCase[] = [
  ...IMAGE_EXTENSIONS.map((ext) => ({ fileName: imageFileName(fileStem(TREE_KEY, null), ext), expected: 'original' as const })),
  { fileName: imageFileName(fileStem(TREE_KEY, '150x'), 'jpg'), expected: 'thumbnail' },
  { fileName: imageFileName(fileStem(TREE_KEY, 'x200'), 'webp'), expected: 'thumbnail' },
  { fileName: imageFileName(fileStem(TREE_KEY, '250x250'), 'png'), expected: 'thumbnail' },
  { fileName: imageFileName(classVariantStem(TREE_KEY, '250x250', 'avif'), 'avif'), expected: 'thumbnail' },
  { fileName: imageFileName(classVariantStem(TREE_KEY, '150x', 'webp'), 'webp'), expected: 'thumbnail' },
  // A class that got the source format (converting did not pay): a source extension.
  { fileName: imageFileName(classVariantStem(TREE_KEY, 'x200', 'avif'), 'gif'), expected: 'thumbnail' },
  { fileName: failureFileName(classVariantStem(TREE_KEY, '250x250', 'webp')), expected: 'failure' },
  { fileName: metadataFileName(TREE_KEY), expected: 'sidecar' },
  { fileName: failureFileName(TREE_KEY), expected: 'failure' },
  { fileName: failureFileName(fileStem(TREE_KEY, '150x')), expected: 'failure' },
  { fileName: tempFileName(`${TREE_KEY}.jpg`, '123.abcdef'), expected: 'temp' },
  { fileName: tempFileName(metadataFileName(TREE_KEY), '9.ff'), expected: 'temp' },
  { fileName: tempFileName('blocklist.json', '1.a'), expected: 'temp' },
  // Names that only look like ours.
  { fileName: `${TREE_KEY}.jpeg`, expected: 'other' },
  { fileName: `${TREE_KEY}.JPG`, expected: 'other' },
  { fileName: `${TREE_KEY}.x.jpg`, expected: 'other' },
  { fileName: `${TREE_KEY}.150.jpg`, expected: 'other' },
  { fileName: `${TREE_KEY}.150x.json`, expected: 'other' },
  { fileName: `${TREE_KEY}.150x.250x.jpg`, expected: 'other' },
  { fileName: `${TREE_KEY}.150x.source.jpg`, expected: 'other' },
  { fileName: `${TREE_KEY}.150x.jpg.jpg`, expected: 'other' },
  { fileName: `${TREE_KEY}.avif.avif`, expected: 'other' },
  { fileName: `${TREE_KEY}.150x.avif.json`, expected: 'other' },
  { fileName: `${TREE_KEY}.150x.avif.webp.webp`, expected: 'other' },
  { fileName: `${TREE_KEY}.tmp`, expected: 'other' },
  { fileName: `${TREE_KEY}`, expected: 'other' },
  { fileName: `${TREE_KEY.slice(1)}.jpg`, expected: 'other' },
  { fileName: `${TREE_KEY}A.jpg`, expected: 'other' },
  { fileName: `${TREE_KEY.slice(0, 42)}+.jpg`, expected: 'other' },
  { fileName: `.${TREE_KEY}.jpg`, expected: 'other' },
  { fileName: '0a1b2c3d4e5f.jpg', expected: 'other' },
  { fileName: '.DS_Store', expected: 'other' },
  { fileName: '', expected: 'other' },
];

describe('parseThumbnailName', () => {
  const cases: Array<[string, ThumbnailName | null]> = [
    [`${TREE_KEY}.250x250.jpg`, { key: TREE_KEY, label: '250x250', formatClass: 'source', ext: 'jpg' }],
    [`${TREE_KEY}.150x.webp`, { key: TREE_KEY, label: '150x', formatClass: 'source', ext: 'webp' }],
    [`${TREE_KEY}.250x250.avif.avif`, { key: TREE_KEY, label: '250x250', formatClass: 'avif', ext: 'avif' }],
    [`${TREE_KEY}.x200.webp.png`, { key: TREE_KEY, label: 'x200', formatClass: 'webp', ext: 'png' }],
    [`${TREE_KEY}.jpg`, null],
    [`${TREE_KEY}.250x250.avif`, { key: TREE_KEY, label: '250x250', formatClass: 'source', ext: 'avif' }],
    [`${TREE_KEY}.250x250.jpeg.jpg`, null],
    [`${TREE_KEY}.250x250.avif.fail`, null],
    [`${TREE_KEY}.250x250.avif.webp.webp`, null],
    [`${TREE_KEY}.json`, null],
  ];
  for (const [name, expected] of cases) {
    it(JSON.stringify(name.replace(TREE_KEY, '{key}')), () => assert.deepEqual(parseThumbnailName(name), expected));
  }
});

describe('classFileExtensions', () => {
  it('tries the class format first, then every source format once', () => {
    assert.deepEqual(classFileExtensions('avif'), ['avif', 'jpg', 'png', 'webp', 'gif']);
    assert.deepEqual(classFileExtensions('webp'), ['webp', 'jpg', 'png', 'gif', 'avif']);
  });
});

describe('classifyTreeFile', () => {
  for (const testCase of CLASSIFY_CASES) {
    it(`${JSON.stringify(testCase.fileName.replace(TREE_KEY, '{key}'))} is ${testCase.expected}`, () => {
      assert.equal(classifyTreeFile(testCase.fileName), testCase.expected);
    });
  }
});
