// server/observe/descriptorWatch.ts: the limits parser and the verdict (tables), then a real
// `serve` whose RLIMIT_NOFILE is low (128), flooded with connections on 127.0.0.1: it resets
// those it cannot take, as before, and now logs it, once for all the time at the limit.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DESCRIPTOR_CHECK_INTERVAL_MS, atDescriptorLimit, parseOpenFileLimit } from '../server/observe/descriptorWatch.js';
import { CLI, cleanEnv } from './cliProcess.js';
import { makeTempRoot, removeTempRoot } from './helpers.js';

const LIMITS = [
  'Limit                     Soft Limit           Hard Limit           Units     ',
  'Max cpu time              unlimited            unlimited            seconds   ',
  'Max open files            %s                 524288               files     ',
  'Max locked memory         8388608              8388608              bytes     ',
].join('\n');

describe('parseOpenFileLimit', () => {
  const cases: Array<[string, string, number | null]> = [
    ['a number', LIMITS.replace('%s', '1024'), 1024],
    ['a small one', LIMITS.replace('%s', '64  '), 64],
    ['unlimited', LIMITS.replace('%s', 'unlimited'), null],
    ['no such line', 'Limit  Soft Limit\n', null],
  ];
  for (const [name, text, expected] of cases) it(name, () => assert.equal(parseOpenFileLimit(text), expected));
});

describe('atDescriptorLimit', () => {
  const cases: Array<[string, number | null, number, boolean]> = [
    ['well below', 20, 64, false],
    ['two below', 62, 64, false],
    ['one below (libuv keeps one in reserve)', 63, 64, true],
    ['at it', 64, 64, true],
    ['counting failed with EMFILE', null, 64, true],
  ];
  for (const [name, open, limit, expected] of cases) it(name, () => assert.equal(atDescriptorLimit(open, limit), expected));
});

interface LogLine {
  level: number;
  msg: string;
  code?: string;
  open?: number;
  limit?: number;
}

const delay = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms));

const DESCRIPTOR_LIMIT = 128;

describe('serve at its descriptor limit', () => {
  it('logs EMFILE once while connections are reset, not once a second', async () => {
    const work = await makeTempRoot('imageproxy-emfile-');
    const sockets: Socket[] = [];
    const secretFile = join(work, 'secret');
    await writeFile(secretFile, 'emfile-secret\n', { mode: 0o600 });
    // Low enough to reach with a few hundred connections, high enough for Node to load the
    // app's modules (it opens several at once while loading them).
    const command = `ulimit -n ${DESCRIPTOR_LIMIT} && exec "$0" "$@"`;
    const args = [CLI, 'serve', '--root', join(work, 'tree'), '--secret-file', secretFile, '--listen', '127.0.0.1:0', '--admin-listen', 'off'];
    const child = spawn('sh', ['-c', command, process.execPath, ...args], { cwd: work, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    const logs: LogLine[] = [];
    let stderr = '';
    let pending = '';
    child.stdout.on('data', (chunk: Buffer) => {
      pending += chunk.toString();
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) if (line.startsWith('{')) logs.push(JSON.parse(line) as LogLine);
    });
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const until = async (condition: () => boolean, what: string): Promise<void> => {
      const deadline = Date.now() + 30_000;
      while (!condition() && child.exitCode === null && Date.now() < deadline) await delay(20);
      assert.ok(condition(), `${what} within 30 s; stderr: ${stderr}`);
    };
    const emfileLines = (): LogLine[] => logs.filter((line) => line.code === 'EMFILE');
    try {
      await until(() => logs.some((line) => line.msg.startsWith('listening on')), 'serve listening');
      const port = Number(/:(\d+)/.exec(logs.find((line) => line.msg.startsWith('listening on'))?.msg ?? '')?.[1]);
      // More connections than descriptors, all held open: the last ones are reset.
      let resetOrClosed = 0;
      for (let index = 0; index < 3 * DESCRIPTOR_LIMIT; index += 1) {
        const socket = connect(port, '127.0.0.1', () => socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'));
        socket.on('error', () => (resetOrClosed += 1));
        socket.on('end', () => (resetOrClosed += 1));
        sockets.push(socket);
      }
      await until(() => resetOrClosed > 0, 'a connection refused at the limit');
      await until(() => emfileLines().length > 0, 'an EMFILE log line');
      const [line] = emfileLines();
      assert.equal(line?.level, 50);
      assert.equal(line?.limit, DESCRIPTOR_LIMIT);
      assert.match(line?.msg ?? '', new RegExp(`^out of file descriptors \\(EMFILE\\): \\d+ of ${DESCRIPTOR_LIMIT} open; new connections are reset .*LimitNOFILE`));
      // Still at the limit for several of the watch's checks: no second line (one a minute at most).
      await delay(DESCRIPTOR_CHECK_INTERVAL_MS * 4);
      assert.equal(emfileLines().length, 1);
    } finally {
      for (const socket of sockets) socket.destroy();
      if (child.exitCode === null) {
        const exited = new Promise((done) => child.once('exit', done));
        child.kill('SIGTERM');
        await exited;
      }
      await removeTempRoot(work);
    }
  });
});
