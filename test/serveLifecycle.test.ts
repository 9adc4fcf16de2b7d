// `imageproxy serve` as a real process (the built CLI; `npm run build` first): start
// refusals, SIGHUP reload of config and secrets, SIGTERM's grace period, --version and the
// bare help. Origins and listeners on 127.0.0.1 only.
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { Socket, createServer, type AddressInfo, type Server } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { lines, runCli, startCli } from './cliProcess.js';
import { makeTempRoot, removeTempRoot, request, shortBody, signedPath, until } from './helpers.js';
import { startOrigin, type Origin } from './origin.js';

/** For a process to start, log or stop on a loaded machine; a condition that holds ends the wait at once. */
const WAIT_MS = 60_000;

interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

interface Served {
  child: ChildProcessWithoutNullStreams;
  baseUrl: string;
  logs: LogLine[];
  stderr(): string;
  /** Resolves with the first log line (already seen or to come) that matches. */
  waitForLog(match: (line: LogLine) => boolean): Promise<LogLine>;
  exited: Promise<number | null>;
  stop(): Promise<number | null>;
}

/** Starts serve with the given args and waits for its listening line. */
async function serve(cwd: string, args: string[]): Promise<Served> {
  const child = startCli(['serve', ...args], { cwd });
  const logs: LogLine[] = [];
  const waiters: Array<{ match: (line: LogLine) => boolean; resolve: (line: LogLine) => void }> = [];
  let stderr = '';
  let partial = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  child.stdout.on('data', (chunk: Buffer) => {
    partial += chunk.toString('utf8');
    const complete = partial.split('\n');
    partial = complete.pop() ?? '';
    for (const text of complete) {
      if (!text.startsWith('{')) continue;
      const line = JSON.parse(text) as LogLine;
      logs.push(line);
      for (const waiter of [...waiters]) {
        if (waiter.match(line)) {
          waiters.splice(waiters.indexOf(waiter), 1);
          waiter.resolve(line);
        }
      }
    }
  });
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  const waitForLog = (match: (line: LogLine) => boolean): Promise<LogLine> => {
    const seen = logs.find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no such log line within ${WAIT_MS} ms; stderr: ${stderr}`)), WAIT_MS);
      waiters.push({ match, resolve: (line) => (clearTimeout(timer), resolve(line)) });
      void exited.then((code) => reject(new Error(`serve exited ${code}: ${stderr}`)));
    });
  };
  const listening = await waitForLog((line) => typeof line.msg === 'string' && line.msg.startsWith('listening on'));
  return {
    child,
    baseUrl: String(listening.address),
    logs,
    stderr: () => stderr,
    waitForLog,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), WAIT_MS);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

function occupyPort(): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

/** Whether a new TCP connection to the address is accepted. */
function connects(baseUrl: string): Promise<boolean> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve) => {
    const socket = new Socket();
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
    socket.connect(Number(port), hostname);
  });
}

describe('serve: command line', () => {
  let cwd: string;
  before(async () => {
    cwd = await makeTempRoot('imageproxy-lifecycle-cli-');
  });
  after(async () => {
    await removeTempRoot(cwd);
  });

  it("--version prints package.json's version", async () => {
    const manifest = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    const run = await runCli(['--version'], { cwd });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `${manifest.version}\n`);
  });

  it('a bare imageproxy prints the help on many lines and exits 2', async () => {
    const run = await runCli([], { cwd });
    assert.equal(run.code, 2);
    const helpLines = lines(run.stderr);
    assert.ok(helpLines.length > 10, run.stderr);
    assert.match(helpLines[0] ?? '', /^Usage: imageproxy /);
    assert.ok(helpLines.some((line) => /^\s+serve\b/.test(line)));
    assert.ok(helpLines.some((line) => /^\s+init-buckets\b/.test(line)));
  });

  it('a wrong flag is still one line, exit 2', async () => {
    const run = await runCli(['serve', '--bogus'], { cwd });
    assert.equal(run.code, 2);
    assert.equal(lines(run.stderr).length, 1, run.stderr);
  });

  it('init-buckets takes --root', async () => {
    const root = join(cwd, 'init-root');
    // 12 288 directories: minutes on a loaded machine, not the default minute.
    const run = await runCli(['init-buckets', '--root', root, '--secret', 's'], { cwd, timeoutMs: 180_000 });
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, new RegExp(`^${root}: i, f, t: created 12288 of 12288 directories$`, 'm'));
  });
});

describe('serve: start refusals', () => {
  let cwd: string;
  before(async () => {
    cwd = await makeTempRoot('imageproxy-lifecycle-refuse-');
  });
  after(async () => {
    await removeTempRoot(cwd);
  });

  const refused = async (args: string[]): Promise<string> => {
    const run = await runCli(['serve', '--secret', 's', ...args], { cwd });
    assert.equal(run.code, 2, `${run.stdout}\n${run.stderr}`);
    const errorLines = lines(run.stderr);
    assert.equal(errorLines.length, 1, run.stderr);
    assert.equal(lines(run.stdout).length, 0, 'nothing listened, nothing logged');
    return errorLines[0] ?? '';
  };

  it('a root that cannot be created: one line, exit 2', async () => {
    await writeFile(join(cwd, 'a-file'), 'not a directory\n');
    const root = join(cwd, 'a-file', 'tree');
    const line = await refused(['--root', root, '--listen', '127.0.0.1:0', '--admin-listen', 'off']);
    assert.match(line, new RegExp(`^imageproxy: root ${root} cannot be created or written: .*ENOTDIR`));
  });

  it('a root that cannot be written: one line, exit 2', async (t) => {
    const root = join(cwd, 'read-only');
    await mkdir(root);
    const asRoot = process.getuid?.() === 0;
    if (asRoot) {
      try {
        execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', root], { stdio: 'ignore' });
      } catch {
        t.skip('running as root without permission to mount a tmpfs: cannot make a read-only root');
        return;
      }
    } else {
      execFileSync('chmod', ['0555', root]);
    }
    try {
      const line = await refused(['--root', root, '--listen', '127.0.0.1:0', '--admin-listen', 'off']);
      assert.match(line, new RegExp(`^imageproxy: root ${root} cannot be created or written: .*(EROFS|EACCES)`));
    } finally {
      if (asRoot) execFileSync('umount', [root]);
      else execFileSync('chmod', ['0755', root]);
    }
  });

  for (const which of ['listen', 'admin-listen'] as const) {
    it(`--${which} on an address in use: one line naming it, exit 2`, async () => {
      const taken = await occupyPort();
      try {
        const address = `127.0.0.1:${(taken.address() as AddressInfo).port}`;
        const args =
          which === 'listen' ? ['--listen', address, '--admin-listen', 'off'] : ['--listen', '127.0.0.1:0', '--admin-listen', address];
        const line = await refused(['--root', join(cwd, `tree-${which}`), ...args]);
        const key = which === 'listen' ? 'listen' : 'admin.listen';
        assert.equal(line, `imageproxy: ${key} ${address}: address already in use`);
      } finally {
        taken.close();
      }
    });
  }
});

describe('serve: SIGHUP reload', () => {
  let cwd: string;
  let origin: Origin;
  let png: Buffer;
  before(async () => {
    cwd = await makeTempRoot('imageproxy-lifecycle-reload-');
    png = await sharp({ create: { width: 40, height: 30, channels: 3, background: '#c33' } }).png().toBuffer();
    origin = await startOrigin((_req, res) => res.writeHead(200, { 'Content-Type': 'image/png' }).end(png));
  });
  after(async () => {
    await origin.close();
    await removeTempRoot(cwd);
  });

  const writeConfig = (path: string, layer: Record<string, unknown>): Promise<void> =>
    writeFile(
      path,
      JSON.stringify({
        listen: '127.0.0.1:0',
        admin: { listen: '127.0.0.1:0' },
        root: join(cwd, 'tree'),
        allowPrivateNetworks: true,
        statsRefreshSeconds: 0,
        ...layer,
      }),
      { mode: 0o600 },
    );

  it('new secrets verify after SIGHUP, old ones while listed; invalid configs and listen changes are refused', async () => {
    const configPath = join(cwd, 'config.json');
    await writeConfig(configPath, { secrets: ['old-secret'] });
    const served = await serve(cwd, ['--config', configPath]);
    try {
      const imageUrl = origin.url('/reload.png').href;
      const link = (secret: string): string => signedPath({ secret, imageUrl, atMs: Date.now() });
      const status = async (secret: string): Promise<number> => (await request(served.baseUrl, link(secret))).status;
      let reloads = 0;
      const hangUp = async (): Promise<LogLine> => {
        reloads += 1;
        const seen = reloads;
        served.child.kill('SIGHUP');
        let count = 0;
        return served.waitForLog((line) => /^(reloaded|RELOAD REFUSED)/.test(line.msg) && ++count === seen);
      };
      assert.equal(await status('old-secret'), 200);
      assert.equal(await status('new-secret'), 410);

      await writeConfig(configPath, { secrets: ['new-secret', 'old-secret'] });
      const added = await hangUp();
      assert.match(added.msg, /^reloaded: secrets changed; 2 secrets$/);
      assert.doesNotMatch(JSON.stringify(served.logs), /new-secret/, 'secret values are never logged');
      assert.equal(await status('new-secret'), 200);
      assert.equal(await status('old-secret'), 200);

      await writeFile(configPath, '{ "secrets": ["x"], "nosuchkey": 1 }', { mode: 0o600 });
      const invalid = await hangUp();
      assert.equal(invalid.level, 50);
      assert.match(invalid.msg, /^RELOAD REFUSED: config nosuchkey: unknown key; still running with the previous config/);
      assert.equal(await status('new-secret'), 200);
      assert.equal(await status('old-secret'), 200);

      await writeConfig(configPath, { secrets: ['new-secret'], listen: '127.0.0.1:1' });
      const moved = await hangUp();
      assert.match(moved.msg, /^RELOAD REFUSED: listen cannot change on reload/);
      assert.equal(await status('old-secret'), 200);

      await writeConfig(configPath, { secrets: ['new-secret'] });
      const removed = await hangUp();
      assert.match(removed.msg, /^reloaded: secrets changed; 1 secrets$/);
      assert.equal(await status('new-secret'), 200);
      assert.equal(await status('old-secret'), 410);
      assert.equal(origin.requests.length, 1, 'one fetch: the image stayed stored across reloads');
      assert.equal(await served.stop(), 0);
    } finally {
      await served.stop();
    }
  });

  it('requests looping through reloads (a rebuilt image service included): no failure', async () => {
    const configPath = join(cwd, 'loop.json');
    await writeConfig(configPath, { secrets: ['loop-secret'], userAgent: 'loop/0' });
    const served = await serve(cwd, ['--config', configPath]);
    try {
      const links = Array.from({ length: 8 }, (_, index) =>
        signedPath({ secret: 'loop-secret', imageUrl: origin.url(`/loop-${index}.png`).href, atMs: Date.now(), size: index % 2 === 0 ? 'full' : '150x' }),
      );
      let stop = false;
      const failures: string[] = [];
      let answered = 0;
      const loop = async (worker: number): Promise<void> => {
        for (let round = 0; !stop && round < 2000; round += 1) {
          const path = links[(worker + round) % links.length] ?? '';
          try {
            const answer = await request(served.baseUrl, path);
            answered += 1;
            if (answer.status !== 200) failures.push(`${answer.status} ${shortBody(answer.body, answer.headers.get('content-type')).trim()}`);
          } catch (error) {
            failures.push(String(error));
          }
        }
      };
      const workers = Array.from({ length: 4 }, (_, worker) => loop(worker));
      const answeredMore = async (count: number): Promise<void> => {
        const target = answered + count;
        await until(() => answered >= target, { message: `${count} more answers`, timeoutMs: WAIT_MS, intervalMs: 10 });
      };
      for (let reload = 1; reload <= 5; reload += 1) {
        // Requests before, during and after each reload.
        await answeredMore(10);
        // userAgent changes rebuild the image service; secrets change on every other one.
        const secrets = reload % 2 === 0 ? ['loop-secret'] : ['rotated', 'loop-secret'];
        await writeConfig(configPath, { secrets, userAgent: `loop/${reload}` });
        served.child.kill('SIGHUP');
        let count = 0;
        await served.waitForLog((line) => line.msg.startsWith('reloaded') && ++count === reload);
      }
      await answeredMore(10);
      stop = true;
      await Promise.all(workers);
      assert.ok(answered >= 60, `only ${answered} answers`);
      assert.deepEqual(failures, []);
      assert.equal(served.logs.filter((line) => line.msg.startsWith('RELOAD REFUSED')).length, 0);
      assert.equal(await served.stop(), 0);
    } finally {
      await served.stop();
    }
  });
});

describe('serve: SIGTERM', () => {
  let cwd: string;
  let origin: Origin;
  let png: Buffer;
  const held: Array<() => void> = [];
  /** Answered once the server is shutting down: a fetch in flight at the signal that ends within the grace. */
  const quickHeld: Array<() => void> = [];
  before(async () => {
    cwd = await makeTempRoot('imageproxy-lifecycle-stop-');
    png = await sharp({ create: { width: 20, height: 20, channels: 3, background: '#33c' } }).png().toBuffer();
    origin = await startOrigin((req, res) => {
      const send = (): void => void res.writeHead(200, { 'Content-Type': 'image/png' }).end(png);
      if (req.url === '/quick-enough.png') quickHeld.push(send);
      else if (req.url === '/never.png') held.push(send);
      else send();
    });
  });
  after(async () => {
    for (const release of [...held, ...quickHeld]) release();
    await origin.close();
    await removeTempRoot(cwd);
  });

  it('finishes what ends within the grace, answers the rest 503 shutting_down, refuses new connections, exits 0', async () => {
    const configPath = join(cwd, 'config.json');
    await writeFile(
      configPath,
      JSON.stringify({
        listen: '127.0.0.1:0',
        admin: { listen: null },
        root: join(cwd, 'tree'),
        secrets: ['stop-secret'],
        allowPrivateNetworks: true,
        statsRefreshSeconds: 0,
        // Seconds for the quick fetch, released at the signal, to end on a loaded machine.
        shutdownGraceMs: 5000,
      }),
      { mode: 0o600 },
    );
    const served = await serve(cwd, ['--config', configPath]);
    try {
      const link = (path: string): string => signedPath({ secret: 'stop-secret', imageUrl: origin.url(path).href, atMs: Date.now() });
      const quick = request(served.baseUrl, link('/quick-enough.png'));
      const slow = request(served.baseUrl, link('/never.png'));
      // Awaited below; until then a failure must not surface as an unhandled rejection.
      quick.catch(() => {});
      slow.catch(() => {});
      // Both misses are at the origin: in flight in the app.
      await until(() => origin.requests.length === 2, { message: 'both misses at the origin', timeoutMs: WAIT_MS });

      served.child.kill('SIGTERM');
      await served.waitForLog((line) => line.msg.startsWith('shutting down'));
      // The quick one's origin answers now, within the grace.
      for (const release of quickHeld.splice(0)) release();
      // The listening socket closes within the event-loop turn that logged the line.
      await until(async () => !(await connects(served.baseUrl)), { message: 'new connections refused after the signal', timeoutMs: WAIT_MS });

      const quickAnswer = await quick.catch((error: unknown) => assert.fail(`quick: ${String(error)}; app: ${JSON.stringify(served.logs)}`));
      assert.equal(quickAnswer.status, 200, shortBody(quickAnswer.body, quickAnswer.headers.get('content-type')));
      assert.ok(quickAnswer.body.equals(png));

      const slowAnswer = await slow.catch((error: unknown) => assert.fail(`slow: ${String(error)}; app: ${JSON.stringify(served.logs)}`));
      assert.equal(slowAnswer.status, 503);
      assert.equal(slowAnswer.headers.get('x-imageproxy-error'), 'shutting_down');
      assert.match(slowAnswer.headers.get('retry-after') ?? '', /^[1-9]\d*$/);
      assert.match(slowAnswer.body.toString(), /^shutting_down: /);

      assert.equal(await served.exited, 0);
      const stopped = await served.waitForLog((line) => line.msg === 'stopped');
      assert.equal(stopped.finished, 1);
      assert.equal(stopped.cutShort, 1);
    } finally {
      await served.stop();
    }
  });
});
