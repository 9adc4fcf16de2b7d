// server/deploy/pathAccess.ts: which directory keeps nginx's user out of the tree, and the fix.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  blockedDirectoryMessage,
  canEnter,
  directoriesDownTo,
  firstBlockedDirectory,
  type Account,
  type DirectoryOwnership,
} from '../server/deploy/pathAccess.js';

const WWW_DATA: Account = { name: 'www-data', uid: 33, gids: [33] };
const IN_APP_GROUP: Account = { name: 'www-data', uid: 33, gids: [33, 999] };
const ROOT: Account = { name: 'root', uid: 0, gids: [0] };
const DIRECTORY = 0o040000;

describe('directoriesDownTo', () => {
  const table: Array<[string, string[]]> = [
    ['/', ['/']],
    ['/srv', ['/', '/srv']],
    ['/srv/imageproxy/tree', ['/', '/srv', '/srv/imageproxy', '/srv/imageproxy/tree']],
    ['/srv//imageproxy/./tree/', ['/', '/srv', '/srv/imageproxy', '/srv/imageproxy/tree']],
  ];
  for (const [path, expected] of table) it(path, () => assert.deepEqual(directoriesDownTo(path), expected));
  it('refuses a relative path', () => assert.throws(() => directoriesDownTo('data')));
});

describe('canEnter: the one permission class the kernel applies', () => {
  const table: Array<[string, DirectoryOwnership, Account, boolean]> = [
    ['others may search', { mode: 0o755, uid: 0, gid: 0 }, WWW_DATA, true],
    ['others may not: 0700 of root', { mode: 0o700, uid: 0, gid: 0 }, WWW_DATA, false],
    ['others may only read, not search', { mode: 0o754, uid: 0, gid: 0 }, WWW_DATA, false],
    ['the group may search, the user is in it', { mode: 0o750, uid: 999, gid: 999 }, IN_APP_GROUP, true],
    ['the group may search, the user is not in it', { mode: 0o750, uid: 999, gid: 999 }, WWW_DATA, false],
    ['owner without x, others with: the owner class wins', { mode: 0o601, uid: 33, gid: 0 }, WWW_DATA, false],
    ['group without x, others with: the group class wins', { mode: 0o701, uid: 0, gid: 33 }, WWW_DATA, false],
    ['owner with x', { mode: 0o700, uid: 33, gid: 0 }, WWW_DATA, true],
    ['root enters anything', { mode: 0o000, uid: 5, gid: 5 }, ROOT, true],
    ['type bits ignored', { mode: DIRECTORY | 0o711, uid: 0, gid: 0 }, WWW_DATA, true],
  ];
  for (const [name, ownership, account, expected] of table) {
    it(name, () => assert.equal(canEnter(ownership, account), expected));
  }
});

describe('firstBlockedDirectory', () => {
  const open: DirectoryOwnership = { mode: 0o755, uid: 0, gid: 0 };
  const tree = (modes: Record<string, DirectoryOwnership>) => (directory: string): DirectoryOwnership | null =>
    modes[directory] ?? null;
  const closed: DirectoryOwnership = { mode: 0o700, uid: 0, gid: 0 };
  const table: Array<[string, string, Record<string, DirectoryOwnership>, Account, string | null, RegExp | null]> = [
    ['all open', '/srv/t', { '/': open, '/srv': open, '/srv/t': open }, WWW_DATA, null, null],
    ['a 0700 home above the tree', '/root/t', { '/': open, '/root': closed, '/root/t': open }, WWW_DATA, '/root', /^chmod o\+x '\/root' \(or chgrp www-data '\/root' && chmod g\+x '\/root'\)$/],
    ['the root itself', '/srv/t', { '/': open, '/srv': open, '/srv/t': { mode: 0o750, uid: 999, gid: 999 } }, WWW_DATA, '/srv/t', /^chmod o\+x /],
    ['group without x, user in it', '/srv/t', { '/': open, '/srv': { mode: 0o740, uid: 0, gid: 33 }, '/srv/t': open }, WWW_DATA, '/srv', /^chmod g\+x '\/srv'$/],
    ['the top one that blocks, not a lower one', '/a/b', { '/': open, '/a': closed, '/a/b': closed }, WWW_DATA, '/a', null],
    ['missing below an open one: nothing to say yet', '/srv/t/u', { '/': open, '/srv': open }, WWW_DATA, null, null],
    ['missing below a blocking one: the blocking one', '/srv/t', { '/': open, '/srv': closed }, WWW_DATA, '/srv', null],
    ['root is never blocked', '/srv/t', { '/': open, '/srv': { mode: 0o000, uid: 5, gid: 5 }, '/srv/t': open }, ROOT, null, null],
  ];
  for (const [name, path, modes, account, expected, fix] of table) {
    it(name, () => {
      const blocked = firstBlockedDirectory(path, account, tree(modes));
      assert.equal(blocked?.directory ?? null, expected);
      if (fix !== null) assert.match(blocked?.fix ?? '', fix);
    });
  }

  it('says who, where, why and the fix in one line', () => {
    const blocked = firstBlockedDirectory('/root/t', WWW_DATA, tree({ '/': open, '/root': { mode: DIRECTORY | 0o700, uid: 0, gid: 0 } }));
    assert.ok(blocked !== null);
    const message = blockedDirectoryMessage(blocked, WWW_DATA, '/root/t');
    assert.equal(
      message,
      "nginx's user www-data cannot enter /root (mode 0700, owner 0:0), so nginx cannot read /root/t: run chmod o+x '/root' (or chgrp www-data '/root' && chmod g+x '/root')",
    );
    assert.doesNotMatch(message, /\n/);
  });
});
