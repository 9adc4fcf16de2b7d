/**
 * server/deploy/systemdUnit.ts and `imageproxy systemd-unit`: the rendered text (tables), the
 * shipped contrib/imageproxy.service as its rendering of the Debian layout, and systemd's
 * own verdicts on it: `systemd-analyze security --offline=yes` (exposure ≤ 1.5) and
 * `systemd-analyze verify` (skipped, saying so, where systemd-analyze is missing).
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { ConfigError } from '../server/config/config.js';
import { DEBIAN_UNIT_INPUT, renderSystemdUnit, type SystemdUnitInput } from '../server/deploy/systemdUnit.js';
import { runCli } from './cliProcess.js';
import { makeTempRoot, removeTempRoot } from './helpers.js';

const CONTRIB_UNIT = new URL('../contrib/imageproxy.service', import.meta.url);
const CHECKOUT = new URL('..', import.meta.url).pathname.replace(/\/$/, '');
const MAX_EXPOSURE = 1.5;

function systemdAnalyzeMissing(): string | false {
  try {
    execFileSync('systemd-analyze', ['--version'], { stdio: 'ignore' });
    return false;
  } catch {
    return 'systemd-analyze is not installed: the unit is not checked by systemd';
  }
}
const skipAnalyze = systemdAnalyzeMissing();

/** The lines of a unit that set `directive`, without the `directive=`. */
function settings(unit: string, directive: string): string[] {
  return unit
    .split('\n')
    .filter((line) => line.startsWith(`${directive}=`))
    .map((line) => line.slice(directive.length + 1));
}

let work = '';
before(async () => {
  work = await makeTempRoot('imageproxy-systemd-unit-');
});
after(() => removeTempRoot(work));

describe('renderSystemdUnit', () => {
  const cases: Array<{ name: string; input: Partial<SystemdUnitInput>; expect: Record<string, string[]> }> = [
    {
      name: "docs/deploy.md's Debian layout",
      input: {},
      expect: {
        ExecStart: ['/usr/bin/node /opt/imageproxy/dist/server/cli.js serve --config /etc/imageproxy/config.json'],
        WorkingDirectory: ['/opt/imageproxy'],
        ReadWritePaths: ['/srv/imageproxy'],
        ProtectHome: ['yes'],
        User: ['imageproxy'],
        Group: ['imageproxy'],
        TimeoutStopSec: ['15s'],
        Documentation: ['file:///opt/imageproxy/docs/deploy.md'],
      },
    },
    {
      name: "an imageproxy-py admin's paths",
      input: { installDir: '/data/imageproxy/', root: '/data/imageproxy-py', configPath: '/data/imageproxy/config.json', user: 'www-images', group: 'www-data' },
      expect: {
        ExecStart: ['/usr/bin/node /data/imageproxy/dist/server/cli.js serve --config /data/imageproxy/config.json'],
        WorkingDirectory: ['/data/imageproxy'],
        ReadWritePaths: ['/data/imageproxy-py'],
        ProtectHome: ['yes'],
        User: ['www-images'],
        Group: ['www-data'],
      },
    },
    {
      name: 'a tree below /home: homes read-only, the tree writable',
      input: { root: '/home/ops/tree' },
      expect: { ReadWritePaths: ['/home/ops/tree'], ProtectHome: ['read-only'] },
    },
    {
      name: 'node installed below /root (nvm)',
      input: { nodePath: '/root/.nvm/versions/node/v22.1.0/bin/node' },
      expect: { ProtectHome: ['read-only'], ExecStart: ['/root/.nvm/versions/node/v22.1.0/bin/node /opt/imageproxy/dist/server/cli.js serve --config /etc/imageproxy/config.json'] },
    },
    {
      name: 'a longer grace period: systemd waits it and a margin',
      input: { shutdownGraceMs: 29_500 },
      expect: { TimeoutStopSec: ['35s'] },
    },
    {
      name: 'the sandbox keeps what Node, sharp and the abstract-socket lock need',
      input: {},
      expect: {
        RestrictAddressFamilies: ['AF_INET AF_INET6 AF_UNIX'],
        SystemCallFilter: ['@system-service pkey_alloc pkey_free pkey_mprotect', '~@privileged @resources'],
        SystemCallErrorNumber: ['EPERM'],
        PrivateNetwork: [],
        MemoryDenyWriteExecute: [],
        ProtectProc: ['invisible'],
        ProcSubset: ['pid'],
      },
    },
  ];
  for (const { name, input, expect } of cases) {
    it(name, () => {
      const unit = renderSystemdUnit({ ...DEBIAN_UNIT_INPUT, ...input });
      for (const [directive, values] of Object.entries(expect)) assert.deepEqual(settings(unit, directive), values, directive);
    });
  }

  const refused: Array<{ name: string; input: Partial<SystemdUnitInput>; key: string }> = [
    { name: 'a relative tree', input: { root: 'data' }, key: 'root' },
    { name: 'a space in the checkout', input: { installDir: '/opt/image proxy' }, key: 'installDir' },
    { name: 'a specifier in the config path', input: { configPath: '/etc/%n.json' }, key: 'configPath' },
    { name: 'a variable in the node path', input: { nodePath: '/usr/bin/$NODE' }, key: 'nodePath' },
    { name: 'a .. segment', input: { root: '/srv/../etc' }, key: 'root' },
    { name: 'a newline in the user', input: { user: 'imageproxy\nExecStartPre=/bin/sh' }, key: 'user' },
    { name: 'a negative grace', input: { shutdownGraceMs: -1 }, key: 'shutdownGraceMs' },
  ];
  for (const { name, input, key } of refused) {
    it(`refuses ${name}, naming ${key}`, () => {
      assert.throws(
        () => renderSystemdUnit({ ...DEBIAN_UNIT_INPUT, ...input }),
        (error: unknown) => error instanceof ConfigError && error.key === key,
      );
    });
  }

  it('reads the optional environment file beside the config (the bucket credentials of storage.type s3)', () => {
    const unit = renderSystemdUnit({ ...DEBIAN_UNIT_INPUT, configPath: '/srv/site-a/imageproxy.json' });
    assert.deepEqual(
      unit.split('\n').filter((line) => line.startsWith('EnvironmentFile=')),
      ['EnvironmentFile=-/srv/site-a/environment'],
    );
  });

  it('contrib/imageproxy.service is the rendering of the Debian layout', async () => {
    assert.equal(await readFile(CONTRIB_UNIT, 'utf8'), renderSystemdUnit(DEBIAN_UNIT_INPUT));
  });
});

describe('systemd-unit command', () => {
  it('fills the unit from the config and the flags (a relative root lies in the checkout)', async () => {
    const configPath = join(work, 'config.json');
    await writeFile(configPath, JSON.stringify({ root: 'tree', secrets: ['s'], shutdownGraceMs: 20_000 }), { mode: 0o600 });
    const run = await runCli(['systemd-unit', '--config', 'config.json', '--install-dir', '/data/imageproxy', '--user', 'images'], { cwd: work });
    assert.equal(run.code, 0, run.stderr);
    const expected = renderSystemdUnit({
      installDir: '/data/imageproxy',
      nodePath: process.execPath,
      configPath,
      root: '/data/imageproxy/tree',
      user: 'images',
      group: 'images',
      shutdownGraceMs: 20_000,
    });
    assert.equal(run.stdout, expected);
  });

  it('defaults to the checkout it runs from', async () => {
    const configPath = join(work, 'abs-root.json');
    await writeFile(configPath, JSON.stringify({ root: '/srv/elsewhere', secrets: ['s'] }), { mode: 0o600 });
    const run = await runCli(['systemd-unit', '--config', configPath], { cwd: work });
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(settings(run.stdout, 'WorkingDirectory'), [CHECKOUT]);
    assert.deepEqual(settings(run.stdout, 'ReadWritePaths'), ['/srv/elsewhere']);
  });

  it('refuses without --config, and names the flag a path cannot be written from', async () => {
    const missing = await runCli(['systemd-unit'], { cwd: work });
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^imageproxy: --config FILE is needed/);
    assert.equal(missing.stdout, '');
    await writeFile(join(work, 'plain.json'), JSON.stringify({ root: '/srv/tree', secrets: ['s'] }), { mode: 0o600 });
    const spaced = await runCli(['systemd-unit', '--config', 'plain.json', '--install-dir', '/opt/image proxy'], { cwd: work });
    assert.equal(spaced.code, 2);
    assert.match(spaced.stderr, /^imageproxy: --install-dir: must be an absolute path/);
    assert.equal(spaced.stdout, '');
  });
});

describe('systemd-analyze on the rendered unit', { skip: skipAnalyze }, () => {
  const run = promisify(execFile);
  const layouts: Array<{ name: string; input: Partial<SystemdUnitInput> }> = [
    { name: 'the Debian layout', input: {} },
    { name: 'a tree below /home', input: { root: '/home/ops/tree' } },
  ];
  for (const { name, input } of layouts) {
    it(`${name}: exposure at most ${MAX_EXPOSURE}, and verify is clean`, async () => {
      // verify checks that ExecStart's binary exists: the node running this test does.
      const unitPath = join(work, 'imageproxy.service');
      await writeFile(unitPath, renderSystemdUnit({ ...DEBIAN_UNIT_INPUT, nodePath: process.execPath, ...input }));
      const security = await run('systemd-analyze', ['security', '--offline=yes', '--no-pager', unitPath]);
      const exposure = /Overall exposure level for imageproxy\.service: ([0-9.]+)/.exec(security.stdout);
      assert.ok(exposure !== null, 'systemd-analyze security printed an overall exposure level');
      assert.ok(Number(exposure[1]) <= MAX_EXPOSURE, `exposure ${exposure[1]} is above ${MAX_EXPOSURE}`);
      const verify = await run('systemd-analyze', ['verify', unitPath]).catch((error: { code: number; stderr: string }) => error);
      assert.equal('code' in verify ? verify.code : 0, 0, `systemd-analyze verify: ${verify.stderr}`);
      const aboutUnit = verify.stderr.split('\n').filter((line) => line.includes('imageproxy.service'));
      assert.deepEqual(aboutUnit, [], 'systemd-analyze verify says nothing about the unit');
    });
  }
});
