// `imageproxy serve --workers 2` as real processes (the built CLI; `npm run build` first):
// one port shared by two workers, the single-flight across them through its cross-process lock,
// a killed worker replaced, SIGHUP reaching both, SIGTERM after in-flight requests, and
// /metrics on the primary's admin listener adding up both workers; Ctrl-C during a start of
// many workers. Loopback only.
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { Agent, request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { CLI, cleanEnv, startCli } from './cliProcess.js';
import { makeTempRoot, removeTempRoot, signedPath, until } from './helpers.js';
import { startOrigin, type Origin } from './origin.js';

/** For processes to start, log or stop on a loaded machine; a condition that holds ends the wait at once. */
const WAIT_MS = 60_000;

interface LogLine {
  level: number;
  msg: string;
  worker?: number;
  pid?: number;
  [field: string]: unknown;
}

interface Answer {
  status: number;
  body: Buffer;
}

/** One GET on a connection of its own, so that the cluster hands each to the next worker. */
function get(baseUrl: string, path: string): Promise<Answer> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const outgoing = httpRequest({ hostname, port, path, agent: new Agent({ keepAlive: false }) }, (incoming) => {
      const chunks: Buffer[] = [];
      incoming.on('data', (chunk: Buffer) => chunks.push(chunk));
      incoming.on('error', reject);
      incoming.on('end', () => resolve({ status: incoming.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    outgoing.on('error', reject);
    outgoing.end();
  });
}

/** Sum of a counter's samples in Prometheus text, over the lines matching `filter`. */
function counterSum(text: string, name: string, filter: (labels: string) => boolean = () => true): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    const match = new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\S+)$`).exec(line);
    if (match !== null && filter(match[1] ?? '')) sum += Number(match[2]);
  }
  return sum;
}

describe('serve --workers 2', () => {
  let cwd: string;
  let configPath: string;
  let origin: Origin;
  let jpeg: Buffer;
  let originDelayMs = 0;
  let child: ChildProcessWithoutNullStreams;
  let exited: Promise<number | null>;
  const logs: LogLine[] = [];
  let stderr = '';
  let baseUrl: string;
  let adminUrl: string;
  let secret = 'first-secret';

  const waitForLogs = async (match: (line: LogLine) => boolean, count = 1): Promise<LogLine[]> => {
    const found = await until(() => logs.filter(match), {
      message: `${count} matching log lines`,
      // An exited process logs nothing more: no point waiting out the deadline.
      done: (lines) => lines.length >= count || child.exitCode !== null,
      timeoutMs: WAIT_MS,
      intervalMs: 25,
    });
    if (found.length < count) throw new Error(`fewer than ${count} matching log lines, serve exited; stderr: ${stderr}`);
    return found;
  };
  const link = (name: string, size = 'full'): string =>
    signedPath({ secret, imageUrl: origin.url(`/${name}.jpg`).href, atMs: Date.now(), size });

  before(async () => {
    cwd = await makeTempRoot('imageproxy-workers-');
    jpeg = await sharp({ create: { width: 320, height: 240, channels: 3, background: { r: 200, g: 40, b: 90 } } }).jpeg().toBuffer();
    origin = await startOrigin((_request, response) => {
      setTimeout(() => response.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(jpeg), originDelayMs);
    });
    configPath = join(cwd, 'config.json');
    await writeFile(configPath, JSON.stringify({ secrets: [secret], shutdownGraceMs: 10_000 }), { mode: 0o600 });
    child = startCli(
      ['serve', '--config', configPath, '--root', join(cwd, 'tree'), '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--allow-private-networks', '--workers', '2'],
      { cwd, env: { IMAGEPROXY_STATS_REFRESH_SECONDS: '0' } },
    );
    let partial = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.stdout.on('data', (chunk: Buffer) => {
      partial += chunk.toString('utf8');
      const complete = partial.split('\n');
      partial = complete.pop() ?? '';
      for (const text of complete) if (text.startsWith('{')) logs.push(JSON.parse(text) as LogLine);
    });
    exited = new Promise((resolve) => child.once('close', (code) => resolve(code)));
    const [listening] = await waitForLogs((line) => line.msg.startsWith('listening on'));
    baseUrl = String(listening?.address);
    adminUrl = String(listening?.admin);
  });

  after(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    await origin.close();
    await removeTempRoot(cwd);
  });

  it('starts two workers on one port and says so', async () => {
    const [listening] = await waitForLogs((line) => line.msg.startsWith('listening on'));
    assert.match(listening?.msg ?? '', /^listening on http:\/\/127\.0\.0\.1:\d+ with 2 workers, admin/);
    const workers = await waitForLogs((line) => /^worker \d serving on/.test(line.msg), 2);
    assert.deepEqual(workers.map((line) => line.worker).sort(), [1, 2]);
    assert.notEqual(workers[0]?.pid, workers[1]?.pid);
    assert.ok(workers.every((line) => line.address === baseUrl), 'both workers report the shared address');
  });

  it('100 concurrent requests for one new image: 1 origin request, 100 × 200 with identical bytes', async () => {
    originDelayMs = 1000;
    const path = link('one-new-image');
    const answers = await Promise.all(Array.from({ length: 100 }, () => get(baseUrl, path)));
    originDelayMs = 0;
    assert.deepEqual(
      answers.map((answer) => answer.status),
      Array.from({ length: 100 }, () => 200),
    );
    const first = answers[0]?.body ?? Buffer.alloc(0);
    assert.ok(first.length > 0);
    assert.ok(answers.every((answer) => answer.body.equals(first)), 'identical bytes');
    assert.equal(origin.requests.filter((request) => request.url === '/one-new-image.jpg').length, 1);
  });

  it('/metrics on the admin listener adds up the answers of both workers (build_info stays 1)', async () => {
    const beforeText = await (await fetch(`${adminUrl}/metrics`)).text();
    const before = counterSum(beforeText, 'imageproxy_responses_total');
    const durationsBefore = counterSum(beforeText, 'imageproxy_request_duration_seconds_count');
    // Errors are logged with the worker that answered: 20 fresh connections reach both.
    const answers = await Promise.all(Array.from({ length: 20 }, () => get(baseUrl, '/i/not-a-link')));
    assert.ok(answers.every((answer) => answer.status === 400 || answer.status === 404), answers.map((a) => a.status).join(','));
    const text = await (await fetch(`${adminUrl}/metrics`)).text();
    assert.equal(counterSum(text, 'imageproxy_responses_total') - before, 20);
    assert.equal(counterSum(text, 'imageproxy_request_duration_seconds_count') - durationsBefore, 20, 'histograms summed');
    const buildInfo = text.split('\n').filter((line) => line.startsWith('imageproxy_build_info{'));
    assert.equal(buildInfo.length, 1, buildInfo.join('; '));
    assert.match(buildInfo[0] ?? '', /^imageproxy_build_info\{version="[^"]+",engine="sharp",node="v[\d.]+"\} 1$/, 'one per version, not one per worker');
    const answeredBy = new Set(logs.filter((line) => line.level >= 30 && line.worker !== undefined && /not-a-link|path/.test(JSON.stringify(line))).map((line) => line.worker));
    assert.deepEqual([...answeredBy].sort(), [1, 2], 'both workers answered and both are counted');
    assert.equal(await (await fetch(`${adminUrl}/healthz`)).text(), 'ok\n');
    assert.equal(await (await fetch(`${adminUrl}/readyz`)).text(), 'ready\n');
  });

  it('SIGHUP reaches both workers: a new secret verifies on each, the removed one on none', async () => {
    const oldSecret = secret;
    const stored = link('one-new-image');
    await writeFile(configPath, JSON.stringify({ secrets: ['second-secret'], shutdownGraceMs: 10_000 }), { mode: 0o600 });
    const seen = logs.length;
    child.kill('SIGHUP');
    const reloaded = await waitForLogs((line) => logs.indexOf(line) >= seen && line.msg.startsWith('reloaded'), 2);
    assert.deepEqual(reloaded.map((line) => line.worker).sort(), [1, 2]);
    secret = 'second-secret';
    const fresh = await Promise.all(Array.from({ length: 20 }, () => get(baseUrl, link('one-new-image'))));
    assert.deepEqual(new Set(fresh.map((answer) => answer.status)), new Set([200]));
    const beforeRefusals = logs.length;
    const refused = await Promise.all(Array.from({ length: 20 }, () => get(baseUrl, stored)));
    assert.deepEqual(new Set(refused.map((answer) => answer.status)), new Set([410]), "bad_signature");
    const refusedBy = await waitForLogs((line) => logs.indexOf(line) >= beforeRefusals && line.worker !== undefined && line.level >= 30, 20);
    assert.deepEqual([...new Set(refusedBy.map((line) => line.worker))].sort(), [1, 2], `old secret ${oldSecret} refused by both workers`);
  });

  it('kill -9 of a worker: it is replaced by a new process and requests keep succeeding', async () => {
    const workers = await waitForLogs((line) => /^worker 2 serving on/.test(line.msg));
    const victim = Number(workers[0]?.pid);
    process.kill(victim, 'SIGKILL');
    const replaced = await waitForLogs((line) => /^worker 2 serving on/.test(line.msg), 2);
    const newPid = Number(replaced[1]?.pid);
    assert.notEqual(newPid, victim);
    assert.ok(logs.some((line) => /^worker 2 exited unexpectedly/.test(line.msg) && line.signal === 'SIGKILL'));
    process.kill(newPid, 0);
    const answers = await Promise.all(Array.from({ length: 20 }, () => get(baseUrl, link('one-new-image', '250x250'))));
    assert.deepEqual(new Set(answers.map((answer) => answer.status)), new Set([200]));
  });

  it('SIGTERM: a request in flight completes, then the primary exits 0 after its workers', async () => {
    originDelayMs = 1500;
    const before = origin.requests.length;
    const inFlight = get(baseUrl, link('slow-at-shutdown'));
    await until(() => origin.requests.length === before + 1, { message: 'the request at the origin', timeoutMs: WAIT_MS });
    child.kill('SIGTERM');
    const answer = await inFlight;
    assert.equal(answer.status, 200);
    assert.ok(answer.body.equals(jpeg) || answer.body.length > 0);
    const timer = setTimeout(() => child.kill('SIGKILL'), WAIT_MS);
    const code = await exited;
    clearTimeout(timer);
    assert.equal(code, 0, stderr);
    assert.ok(logs.some((line) => line.msg === 'stopped: every worker has exited'));
  });
});

/** How many processes are in process group `pgid` (field 5 of /proc/PID/stat). */
async function groupSize(pgid: number): Promise<number> {
  let count = 0;
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => '');
    // The command name (field 2) may hold spaces: fields are counted after its ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[2]) === pgid) count += 1;
  }
  return count;
}

describe('serve --workers: Ctrl-C during the start', () => {
  it('stops every worker without a stack trace and exits 130', async () => {
    const cwd = await makeTempRoot('imageproxy-workers-ctrlc-');
    let pid = 0;
    try {
      const secretFile = join(cwd, 'secret');
      await writeFile(secretFile, 'ctrl-c-secret\n', { mode: 0o600 });
      const args = ['serve', '--root', join(cwd, 'tree'), '--secret-file', secretFile, '--workers', '16', '--listen', '127.0.0.1:0', '--admin-listen', 'off'];
      // Its own process group, as a terminal's foreground job: Ctrl-C reaches the primary and every worker.
      const child = spawn(process.execPath, [CLI, ...args], { cwd, env: cleanEnv(), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
      pid = child.pid ?? 0;
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const closed = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
      // Workers forked and starting (Node's own cluster setup, before any code of ours):
      // where a primary killed by Ctrl-C left each of them an EPIPE stack trace.
      await until(async () => child.exitCode !== null || (await groupSize(pid)) >= 5, { message: 'workers forked', timeoutMs: WAIT_MS, intervalMs: 10 });
      assert.ok((await groupSize(pid)) >= 5, `workers forked before serve exited: ${stderr.slice(-2000)}`);
      assert.doesNotMatch(stdout, /listening on/, 'still starting');
      process.kill(-pid, 'SIGINT');
      await until(() => child.exitCode !== null || child.signalCode !== null, { message: 'serve exits after Ctrl-C', timeoutMs: WAIT_MS, intervalMs: 25 });
      const code = await closed;
      assert.doesNotMatch(stderr, /EPIPE|Error|^\s+at /m);
      assert.equal(code, 130, stdout.slice(-2000));
      assert.match(stdout, /start interrupted by SIGINT: every worker has stopped/);
      await until(async () => (await groupSize(pid)) === 0, { message: 'no worker left behind', timeoutMs: WAIT_MS, intervalMs: 25 });
    } finally {
      if (pid !== 0 && (await groupSize(pid)) > 0) process.kill(-pid, 'SIGKILL');
      await removeTempRoot(cwd);
    }
  });
});
