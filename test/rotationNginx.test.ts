/**
 * Secret rotation through the production shape, as the procedure of docs/operations.md does it: real
 * nginx (config and secrets module rendered by `nginx-config --out`) in front of
 * `imageproxy serve` as a process reading a secretFile, a loopback origin. A client
 * keeps asking for links signed with the old and the new secret, hits and misses, while
 * the new secret is added (app SIGHUP, nginx reload) and the old one removed after its
 * grace. No request that was valid at its moment may fail; at the end old links are 410.
 */
import assert from 'node:assert/strict';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { spawnSync } from 'node:child_process';
import { chmod, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { finishCli, runCli, startCli, type CliRun } from './cliProcess.js';
import { makeTempRoot, removeTempRoot, request, signedPath, until, type Answer } from './helpers.js';
import { freePort, nginxMissing, startNginx, testWorkerUser, type RunningNginx } from './nginxHarness.js';
import { startOrigin, type Origin } from './origin.js';

const OLD_SECRET = 'rotation-old-secret';
const NEW_SECRET = 'rotation-new-secret';
/** For a process to start or reload on a loaded machine; a condition that holds ends the wait at once. */
const WAIT_MS = 60_000;
const missing = nginxMissing();
if (missing !== null) console.log(`# rotation through nginx skipped: ${missing}`);

/** What a link signed with one secret must get at this moment. */
type Expectation = 'valid' | 'refused' | 'either';

interface Outcome {
  secret: 'old' | 'new';
  kind: 'hit' | 'miss';
  expected: Expectation;
  status: number | string;
}

describe('secret rotation through real nginx and serve', { skip: missing ?? false }, () => {
  let workDir = '';
  let prefix = '';
  let secretFile = '';
  let configPath = '';
  let origin: Origin;
  let app: ChildProcessWithoutNullStreams | null = null;
  let appRun: Promise<CliRun> | null = null;
  let appLog = '';
  let appUrl = '';
  let nginx: RunningNginx | null = null;
  let base = '';
  let jpeg: Buffer;

  const link = (secret: string, path: string): string => signedPath({ secret, imageUrl: origin.url(path).href, atMs: Date.now() });
  // A new connection per request: a keepalive socket an old worker closes on reload is
  // the client's retry to make, not a failure of the rotation.
  const get = (base: string, path: string): Promise<Answer> => request(base, path, { headers: { Connection: 'close' } });

  async function writeSecrets(secrets: string[]): Promise<void> {
    // Atomically, as an editor or config management would: the app never reads half a file.
    const temp = `${secretFile}.tmp`;
    await writeFile(temp, `${secrets.join('\n')}\n`, { mode: 0o600 });
    await rename(temp, secretFile);
  }

  /** SIGHUP, then the app's own word that it reloaded. */
  async function reloadApp(): Promise<void> {
    const reloads = (): number => appLog.split('\n').filter((line) => line.includes('"msg":"reloaded')).length;
    const reloadsBefore = reloads();
    app?.kill('SIGHUP');
    await until(() => reloads() > reloadsBefore, { message: 'the app logs "reloaded"', timeoutMs: WAIT_MS });
    assert.doesNotMatch(appLog, /RELOAD REFUSED/);
  }

  function workerPids(): number[] {
    const pid = nginx?.process.pid ?? 0;
    const children = spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).stdout;
    return children.split('\n').filter((line) => line !== '').map(Number);
  }

  /** `nginx-config --out` then `nginx -s reload`, and waits until every old worker is gone. */
  async function reloadNginx(): Promise<void> {
    const user = testWorkerUser();
    const render = await runCli(
      ['nginx-config', '--config', configPath, '--standalone-conf', '--out', prefix, '--workers', '1', ...(user === undefined ? [] : ['--user', user])],
      { cwd: workDir },
    );
    assert.equal(render.code, 0, render.stderr);
    const oldWorkers = workerPids();
    assert.ok(oldWorkers.length > 0);
    const confPath = join(prefix, 'nginx.conf');
    const reload = spawnSync('nginx', ['-p', prefix, '-c', confPath, '-e', join(prefix, 'error.log'), '-s', 'reload'], { encoding: 'utf8' });
    assert.equal(reload.status, 0, reload.stderr);
    await until(() => {
      const now = workerPids();
      return now.length > 0 && oldWorkers.every((pid) => !now.includes(pid));
    }, { message: 'the old nginx workers exit', timeoutMs: WAIT_MS });
  }

  before(async () => {
    jpeg = await sharp({ create: { width: 320, height: 240, channels: 3, background: '#552288' } }).jpeg().toBuffer();
    workDir = await makeTempRoot('imageproxy-rotation-');
    prefix = join(workDir, 'nginx');
    secretFile = join(workDir, 'secret');
    await writeSecrets([OLD_SECRET]);
    origin = await startOrigin((req, res) => {
      if ((req.url ?? '').endsWith('.jpg')) res.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg);
      else res.writeHead(404).end('no');
    });
    const appPort = await freePort();
    const nginxPort = await freePort();
    appUrl = `http://127.0.0.1:${appPort}`;
    base = `http://127.0.0.1:${nginxPort}`;
    configPath = join(workDir, 'config.json');
    await writeFile(
      configPath,
      JSON.stringify({
        listen: `127.0.0.1:${appPort}`,
        admin: { listen: null },
        root: join(workDir, 'tree'),
        secretFile,
        delivery: 'accel',
        allowPrivateNetworks: true,
        logLevel: 'info',
        nginx: { listen: `127.0.0.1:${nginxPort}`, internalPrefix: '/_imageproxy' },
      }),
    );
    await chmod(configPath, 0o600);
    app = startCli(['serve', '--config', configPath], { cwd: workDir });
    app.stdout.on('data', (chunk: Buffer) => (appLog += chunk.toString('utf8')));
    appRun = finishCli(app, 600_000);
    await until(() => appLog.includes('listening on'), { message: 'serve logs "listening"', timeoutMs: WAIT_MS });

    const user = testWorkerUser();
    const render = await runCli(
      ['nginx-config', '--config', configPath, '--standalone-conf', '--out', prefix, '--workers', '1', ...(user === undefined ? [] : ['--user', user])],
      { cwd: workDir },
    );
    assert.equal(render.code, 0, render.stderr);
    nginx = await startNginx(prefix, await readFile(join(prefix, 'nginx.conf'), 'utf8'), nginxPort);
  });

  after(async () => {
    await nginx?.stop();
    app?.kill('SIGTERM');
    await appRun;
    await origin?.close();
    await removeTempRoot(workDir);
  });

  it('adds the new secret, removes the old after its grace: 0 failed requests, old links refused at the end', async () => {
    const expectations: Record<'old' | 'new', Expectation> = { old: 'valid', new: 'refused' };
    const secrets = { old: OLD_SECRET, new: NEW_SECRET };
    const outcomes: Outcome[] = [];
    let running = true;
    let round = 0;

    // Stored once, then served by nginx itself: a hit checks nginx's secrets.
    assert.equal((await get(base, link(OLD_SECRET, '/hit.jpg'))).status, 200);

    const client = (async () => {
      while (running) {
        round += 1;
        for (const secret of ['old', 'new'] as const) {
          // A fresh image each round: a miss, so the app's secrets are checked too.
          for (const [kind, path] of [['hit', '/hit.jpg'], ['miss', `/miss-${secret}-${round}.jpg`]] as const) {
            const expected = expectations[secret];
            const status = await get(base, link(secrets[secret], path)).then(
              (answer) => answer.status,
              (error: unknown) => (error as Error).message,
            );
            outcomes.push({ secret, kind, expected, status });
          }
        }
      }
    })();
    await until(() => outcomes.length > 40, { message: 'a few rounds', timeoutMs: WAIT_MS });
    // 1. Add the new secret (first: it signs from now on), app first, then nginx.
    expectations.new = 'either';
    await writeSecrets([NEW_SECRET, OLD_SECRET]);
    await reloadApp();
    await reloadNginx();
    expectations.new = 'valid';
    const afterAdd = outcomes.length;
    await until(() => outcomes.length > afterAdd + 40, { message: 'both secrets in use for a while', timeoutMs: WAIT_MS });

    // 2. The old secret's grace is over (two weeks in production): remove it.
    expectations.old = 'either';
    await writeSecrets([NEW_SECRET]);
    await reloadNginx();
    await reloadApp();
    expectations.old = 'refused';
    const afterRemove = outcomes.length;
    await until(() => outcomes.length > afterRemove + 40, { message: 'the new secret alone for a while', timeoutMs: WAIT_MS });
    running = false;
    await client;

    const failed = outcomes.filter(
      (outcome) =>
        (outcome.expected === 'valid' && outcome.status !== 200) || (outcome.expected === 'refused' && outcome.status !== 410),
    );
    const count = (secret: 'old' | 'new', expected: Expectation, status: number): number =>
      outcomes.filter((outcome) => outcome.secret === secret && outcome.expected === expected && outcome.status === status).length;
    console.log(
      `# rotation: ${outcomes.length} requests, ${failed.length} failed; old valid 200: ${count('old', 'valid', 200)}, ` +
        `new valid 200: ${count('new', 'valid', 200)}, new before the reload 410: ${count('new', 'refused', 410)}, ` +
        `old after removal 410: ${count('old', 'refused', 410)}`,
    );
    assert.deepEqual(failed, []);
    for (const [secret, expected, status] of [['old', 'valid', 200], ['new', 'valid', 200], ['new', 'refused', 410], ['old', 'refused', 410]] as const) {
      assert.ok(count(secret, expected, status) > 0, `${secret} ${expected} ${status} was exercised`);
    }

    // Old links at the end: nginx refuses hit and miss alike, and so does the app on its own address.
    for (const path of ['/hit.jpg', '/never-asked.jpg']) {
      const answer = await get(base, link(OLD_SECRET, path));
      assert.equal(answer.status, 410, path);
      assert.equal(answer.headers.get('x-imageproxy-error'), 'bad_signature');
      assert.equal((await get(appUrl, link(OLD_SECRET, path))).status, 410, `app ${path}`);
    }
    assert.equal((await get(appUrl, link(NEW_SECRET, '/never-asked.jpg'))).status, 200);
  });
});
