// scripts/setup-tree.sh as root: it makes the tree, then warns when nginx's user cannot
// enter a directory above it, naming that directory and the chmod (exit 0 either way).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { cleanEnv } from './cliProcess.js';
import { makeTempRoot, removeTempRoot } from './helpers.js';

const SCRIPT = fileURLToPath(new URL('../scripts/setup-tree.sh', import.meta.url));

describe('scripts/setup-tree.sh', { skip: process.getuid?.() === 0 ? false : 'needs root (runuser, chown)' }, () => {
  let work = '';
  let config = '';
  before(async () => {
    work = await makeTempRoot('imageproxy-setup-tree-');
    config = join(work, 'config.json');
    await writeFile(config, JSON.stringify({ root: join(work, 'tree'), secrets: ['x'], buckets: { i: {} } }));
  });
  after(() => removeTempRoot(work));

  const run = (...args: string[]) => spawnSync('sh', [SCRIPT, config, ...args], { encoding: 'utf8', env: cleanEnv() });

  it('below a 0700 directory: the tree is made, one warning names the directory and the fix', async () => {
    await chmod(work, 0o700);
    const result = run('root', 'nobody');
    assert.equal(result.status, 0, result.stderr);
    assert.ok((await stat(join(work, 'tree', 'i', 'A', 'A'))).isDirectory());
    const warnings = result.stderr.split('\n').filter((line) => line.includes('warning'));
    assert.deepEqual(warnings, [
      `setup-tree: warning: nginx's user nobody cannot enter ${work} (mode 700, owner root:root), so nginx cannot read ${join(work, 'tree')}: ` +
        `run chmod o+x '${work}' (or chgrp nobody '${work}' && chmod g+x '${work}')`,
    ]);
  });

  it('no warning once nginx can enter every directory', async () => {
    await chmod(work, 0o755);
    const result = run('root', 'nobody');
    assert.equal(result.status, 0, result.stderr);
    assert.doesNotMatch(result.stderr, /warning/);
  });

  it('an unknown nginx user: a warning that nothing could be checked', () => {
    const result = run('root', 'no-such-nginx-user');
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stderr, /^setup-tree: warning: no user no-such-nginx-user: cannot check/m);
  });
});
