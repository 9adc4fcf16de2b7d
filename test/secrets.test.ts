// Where secrets come from and which secret files are refused: real files in a temp dir.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, buildConfig } from '../server/config/config.js';
import { generatedSecretPath, resolveSecrets } from '../server/config/secrets.js';
import { makeTempRoot, removeTempRoot } from './helpers.js';

const CLI = fileURLToPath(new URL('../dist/server/cli.js', import.meta.url));

let dir = '';
before(async () => {
  dir = await makeTempRoot();
});
after(() => removeTempRoot(dir));

async function secretFileWithMode(name: string, mode: number): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, '# the site secret\nsite-secret\n');
  await chmod(path, mode);
  return path;
}

describe('secretFile permissions', () => {
  const cases: Array<{ mode: number; refused: boolean }> = [
    { mode: 0o600, refused: false },
    { mode: 0o640, refused: false },
    { mode: 0o400, refused: false },
    { mode: 0o644, refused: true },
    { mode: 0o604, refused: true },
    { mode: 0o666, refused: true },
  ];
  for (const { mode, refused } of cases) {
    it(`mode ${mode.toString(8)}: ${refused ? 'refused, naming the file and the fix' : 'read'}`, async () => {
      const path = await secretFileWithMode(`secret-${mode.toString(8)}`, mode);
      const config = buildConfig({ flags: { root: join(dir, 'tree'), secretFile: path } });
      if (!refused) {
        assert.deepEqual(resolveSecrets(config, false).secrets, ['site-secret']);
        return;
      }
      assert.throws(
        () => resolveSecrets(config, false),
        (error: unknown) =>
          error instanceof ConfigError &&
          error.key === 'secretFile' &&
          error.message.includes(path) &&
          error.message.includes('chmod o-rwx') &&
          !error.message.includes('\n'),
      );
    });
  }

  it('a generated secret made readable by everyone is refused too', async () => {
    const root = join(dir, 'generated');
    const config = buildConfig({ flags: { root } });
    const generated = resolveSecrets(config, true);
    assert.equal(generated.generatedAt, generatedSecretPath(root));
    assert.equal((await stat(generatedSecretPath(root))).mode & 0o777, 0o600);
    assert.deepEqual(resolveSecrets(config, false).secrets, generated.secrets);
    await chmod(generatedSecretPath(root), 0o644);
    assert.throws(() => resolveSecrets(config, false), /readable by every user/);
  });

  it('serve refuses to start on a world-readable secret file: exit 2, one line', async () => {
    const path = await secretFileWithMode('serve-secret', 0o644);
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('IMAGEPROXY_')));
    const run = spawnSync(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--admin-listen', 'off', '--root', join(dir, 'serve-tree')], {
      env: { ...env, IMAGEPROXY_SECRET_FILE: path },
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(run.status, 2, run.stderr);
    const lines = run.stderr.trim().split('\n');
    assert.equal(lines.length, 1, run.stderr);
    assert.match(lines[0] ?? '', /^imageproxy: config secretFile: .*readable by every user/);
  });
});
