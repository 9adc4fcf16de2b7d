// scripts/setup-tree.sh as root: it refuses (exit 1) a checkout or config the app's user
// cannot read, naming the directory or file; it makes the tree, then warns when nginx's
// user cannot enter a directory above it, naming that directory and the chmod (exit 0).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, copyFile, mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { cleanEnv } from './cliProcess.js';
import { makeTempRoot, removeTempRoot } from './helpers.js';

const SCRIPT = fileURLToPath(new URL('../scripts/setup-tree.sh', import.meta.url));

/**
 * A checkout in `parent` (the script and an empty built CLI): where the real one lies
 * (a CI clone may sit below a 0700 directory) must not decide what a test sees.
 */
async function placeCheckout(parent: string): Promise<string> {
  const checkout = join(parent, 'checkout');
  await mkdir(join(checkout, 'scripts'), { recursive: true });
  await mkdir(join(checkout, 'dist', 'server'), { recursive: true });
  await copyFile(SCRIPT, join(checkout, 'scripts', 'setup-tree.sh'));
  await writeFile(join(checkout, 'dist', 'server', 'cli.js'), '');
  return checkout;
}

describe('scripts/setup-tree.sh', { skip: process.getuid?.() === 0 ? false : 'needs root (runuser, chown)' }, () => {
  let work = '';
  let config = '';
  before(async () => {
    work = await makeTempRoot('imageproxy-setup-tree-');
    config = join(work, 'config.json');
    await writeFile(config, JSON.stringify({ root: join(work, 'tree'), secrets: ['x'], buckets: { i: {} } }), { mode: 0o600 });
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

  it("a checkout the app's user cannot enter: exit 1 naming the directory and the fix, nothing made", async () => {
    const hidden = await makeTempRoot('imageproxy-setup-checkout-');
    try {
      await chmod(hidden, 0o700);
      const checkout = await placeCheckout(hidden);
      const treeConfig = join(hidden, 'config.json');
      await writeFile(treeConfig, JSON.stringify({ root: join(hidden, 'tree'), buckets: { i: {} } }), { mode: 0o644 });
      const result = spawnSync('sh', [join(checkout, 'scripts', 'setup-tree.sh'), treeConfig, 'nobody', 'nobody'], { encoding: 'utf8', env: cleanEnv() });
      assert.equal(result.status, 1, result.stderr);
      assert.equal(
        result.stderr,
        `setup-tree: the app's user nobody cannot enter ${hidden} (mode 700, owner root:root), so it cannot run ${join(checkout, 'dist', 'server', 'cli.js')}: ` +
          `install the checkout where it can (e.g. /opt/imageproxy), or run chmod o+x '${hidden}'\n`,
      );
      await assert.rejects(stat(join(hidden, 'tree')), { code: 'ENOENT' });
    } finally {
      await removeTempRoot(hidden);
    }
  });

  it("a config the app's user cannot read: exit 1 naming the file and the chown/chmod", async () => {
    await chmod(work, 0o755);
    const privateConfig = join(work, 'private-config.json');
    await writeFile(privateConfig, JSON.stringify({ root: join(work, 'private-tree'), buckets: { i: {} } }), { mode: 0o600 });
    const checkout = await placeCheckout(work);
    const result = spawnSync('sh', [join(checkout, 'scripts', 'setup-tree.sh'), privateConfig, 'nobody', 'nobody'], { encoding: 'utf8', env: cleanEnv() });
    assert.equal(result.status, 1, result.stderr);
    assert.equal(
      result.stderr,
      `setup-tree: the app's user nobody cannot read ${privateConfig} (mode 600, owner root:root): run chown root:nobody '${privateConfig}' && chmod 0640 '${privateConfig}'\n`,
    );
  });

  it('an unknown nginx user: a warning that nothing could be checked', () => {
    const result = run('root', 'no-such-nginx-user');
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stderr, /^setup-tree: warning: no user no-such-nginx-user: cannot check/m);
  });
});
