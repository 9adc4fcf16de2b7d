// server/tree/pseudoFilesystem.ts: the statfs types it refuses (a table), and the nearest
// existing directory's filesystem on this machine's own /proc, /sys and a temp dir.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pseudoFilesystemName, pseudoFilesystemOf } from '../server/tree/pseudoFilesystem.js';
import { makeTempRoot, removeTempRoot } from './helpers.js';

describe('pseudoFilesystemName', () => {
  const cases: Array<[string, number | bigint, string | null]> = [
    ['proc', 0x9fa0, 'proc'],
    ['sysfs', 0x62656572, 'sysfs'],
    ['cgroup2', 0x63677270, 'cgroup2'],
    ['devpts', 0x1cd1, 'devpts'],
    ['proc as a bigint (statfs bigint: true)', 0x9fa0n, 'proc'],
    ['ext4', 0xef53, null],
    ['tmpfs (a tree may live there)', 0x01021994, null],
    ['xfs', 0x58465342, null],
    ['btrfs', 0x9123683e, null],
  ];
  for (const [name, type, expected] of cases) {
    it(name, () => assert.equal(pseudoFilesystemName(type), expected));
  }
});

describe('pseudoFilesystemOf', () => {
  let work = '';
  before(async () => {
    work = await makeTempRoot('imageproxy-pseudo-');
  });
  after(() => removeTempRoot(work));

  const cases: Array<[string, () => string, string | null]> = [
    ['a path not made yet under /proc', () => '/proc/imageproxy/tree', 'proc'],
    ['/sys itself', () => '/sys', 'sysfs'],
    ['a temp directory', () => work, null],
    ['a path not made yet under a temp directory', () => join(work, 'a', 'b'), null],
    ['a relative path (resolved from the working directory)', () => 'data', null],
  ];
  for (const [name, path, expected] of cases) {
    it(name, () => assert.equal(pseudoFilesystemOf(path()), expected));
  }
});
