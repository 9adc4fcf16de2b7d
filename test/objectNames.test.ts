// Object names in an S3 bucket (server/storage/objectNames.ts): the prefix, the image
// names (the tree's names without the extension), and tree files mapped to objects.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { classVariantStem, fileStem, keyDirectory } from '../server/contract/layout.js';
import {
  MAX_PREFIX_LENGTH,
  imageObjectName,
  nameOfObjectKey,
  normalizeStorePrefix,
  objectKeyOf,
  objectNameOfTreeImage,
  parseImageObjectName,
  storePrefixProblem,
  treeFileNameOfObject,
} from '../server/storage/objectNames.js';
import type { ImageExtension } from '../server/contract/layout.js';

const KEY = 'J2oawAuk8OpH7ur8okKE9BvHjcWTrx8EhhWs66RKudk';

describe('store prefix', () => {
  const table: Array<[raw: string, normalized: string | null]> = [
    ['', ''],
    ['/', ''],
    ['images', 'images/'],
    ['images/', 'images/'],
    ['/images/', 'images/'],
    ['site-a/images_v2/', 'site-a/images_v2/'],
    ['a.b/c', 'a.b/c/'],
    ['a//b', null],
    ['a/./b', null],
    ['../b', null],
    ['a/..', null],
    ['a b', null],
    ['a%2Fb', null],
    ['bild-ü', null],
    ['a?b', null],
    ['x'.repeat(MAX_PREFIX_LENGTH), `${'x'.repeat(MAX_PREFIX_LENGTH)}/`],
    ['x'.repeat(MAX_PREFIX_LENGTH + 1), null],
  ];
  for (const [raw, normalized] of table) {
    it(`${JSON.stringify(raw.length > 40 ? `${raw.slice(0, 10)}…(${raw.length})` : raw)} -> ${normalized === null ? 'refused' : JSON.stringify(normalized.slice(0, 20))}`, () => {
      if (normalized === null) {
        assert.notEqual(storePrefixProblem(raw), null);
        assert.throws(() => normalizeStorePrefix(raw), /storage prefix/);
      } else {
        assert.equal(storePrefixProblem(raw), null);
        assert.equal(normalizeStorePrefix(raw), normalized);
      }
    });
  }
});

describe('object keys under a prefix', () => {
  const table: Array<[prefix: string, name: string, key: string]> = [
    ['', 'i/J/2/x', 'i/J/2/x'],
    ['images/', 'i/J/2/x', 'images/i/J/2/x'],
    ['a/b/', '.imageproxy/blocklist', 'a/b/.imageproxy/blocklist'],
  ];
  for (const [prefix, name, key] of table) {
    it(`${JSON.stringify(prefix)} + ${name} <-> ${key}`, () => {
      assert.equal(objectKeyOf(prefix, name), key);
      assert.equal(nameOfObjectKey(prefix, key), name);
    });
  }
  it('a key outside the prefix, or the prefix itself, has no name', () => {
    assert.equal(nameOfObjectKey('images/', 'other/i/J/2/x'), null);
    assert.equal(nameOfObjectKey('images/', 'images/'), null);
    assert.equal(nameOfObjectKey('images/', 'imagesX/i'), null);
  });
});

describe('image object names: the tree name without the extension', () => {
  const table: Array<[what: string, stem: string, expected: string]> = [
    ['original', fileStem(KEY, null), `i/J/2/${KEY}`],
    ['thumbnail', fileStem(KEY, '150x'), `i/J/2/${KEY}.150x`],
    ['thumbnail for the avif class', classVariantStem(KEY, 'x250', 'avif'), `i/J/2/${KEY}.x250.avif`],
  ];
  for (const [what, stem, expected] of table) {
    it(`${what}: ${expected.slice(6)}`, () => {
      assert.equal(imageObjectName('i', KEY, stem), expected);
      // The same as the stem nginx's link check yields, `/{bucket}/{k0}/{k1}/{stem}`, without its slash.
      assert.equal(imageObjectName('i', KEY, stem), `${keyDirectory('i', KEY)}/${stem}`);
    });
  }
});

describe('tree files as objects', () => {
  const table: Array<[fileName: string, expected: string | null]> = [
    [`${KEY}.jpg`, `t/J/2/${KEY}`],
    [`${KEY}.avif`, `t/J/2/${KEY}`],
    [`${KEY}.150x.png`, `t/J/2/${KEY}.150x`],
    [`${KEY}.150x250.webp`, `t/J/2/${KEY}.150x250`],
    [`${KEY}.x250.avif.avif`, `t/J/2/${KEY}.x250.avif`],
    // a class file holding the source format (converting did not pay): same object name, its type says JPEG
    [`${KEY}.x250.avif.jpg`, `t/J/2/${KEY}.x250.avif`],
    [`${KEY}.json`, null],
    [`${KEY}.fail`, null],
    [`${KEY}.150x.fail`, null],
    [`${KEY}.lock`, null],
    [`.${KEY}.jpg.123-abcdef01.xyz.tmp`, null],
    [`${KEY}.big.jpg`, null],
    [`${KEY}.150x.heic.jpg`, null],
    ['short.jpg', null],
    ['README', null],
  ];
  for (const [fileName, expected] of table) {
    it(`${fileName.replace(KEY, '{key}')} -> ${expected === null ? 'no object' : expected.replace(KEY, '{key}')}`, () => {
      assert.equal(objectNameOfTreeImage('t', fileName), expected);
    });
  }
});

describe('image objects as tree files', () => {
  // [object name, its bytes' extension, the tree file name in the key's directory, or null: no image object]
  const table: Array<[name: string, ext: ImageExtension, expected: string | null]> = [
    [`t/J/2/${KEY}`, 'png', `${KEY}.png`],
    [`t/J/2/${KEY}.150x`, 'jpg', `${KEY}.150x.jpg`],
    [`i/J/2/${KEY}.x250.avif`, 'avif', `${KEY}.x250.avif.avif`],
    // a class object holding the source format: the tree's class file of that format
    [`i/J/2/${KEY}.x250.avif`, 'jpg', `${KEY}.x250.avif.jpg`],
    [`i/J/2/${KEY}.150x.webp`, 'webp', `${KEY}.150x.webp.webp`],
    [`i/J/3/${KEY}`, 'png', null],
    [`i/J/${KEY}`, 'png', null],
    [`i/J/2/${KEY}.json`, 'png', null],
    [`i/J/2/${KEY}.big`, 'png', null],
    [`i/J/2/${KEY}.150x.heic`, 'png', null],
    [`i/J/2/${KEY}.150x.avif.x`, 'png', null],
    [`.imageproxy/blocklist.json`, 'png', null],
    [`a.b/J/2/${KEY}`, 'png', null],
    [`i/J/2/short`, 'png', null],
  ];
  for (const [name, ext, expected] of table) {
    it(`${name.replace(KEY, '{key}')} (${ext}) -> ${expected === null ? 'no image object' : expected.replace(KEY, '{key}')}`, () => {
      const parsed = parseImageObjectName(name);
      assert.equal(parsed === null ? null : treeFileNameOfObject(parsed, ext), expected);
    });
  }

  it('every tree image maps to an object that maps back to it', () => {
    for (const fileName of [`${KEY}.jpg`, `${KEY}.150x.png`, `${KEY}.x250.avif.jpg`, `${KEY}.150x250.webp.webp`]) {
      const name = objectNameOfTreeImage('i', fileName);
      const parsed = name === null ? null : parseImageObjectName(name);
      assert.ok(parsed !== null, fileName);
      assert.equal(treeFileNameOfObject(parsed, fileName.slice(fileName.lastIndexOf('.') + 1) as ImageExtension), fileName);
    }
  });
});
