// The built command (`npm test` builds first): exit codes, output lines, and `serve` as a
// real process on 127.0.0.1 port 0. Every spawned server is killed; temp roots removed.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { storageKey } from '../server/contract/layout.js';
import { ImageStore } from '../server/tree/store.js';
import { finishCli } from './cliProcess.js';
import { VECTORS, assertSameBytes, extUrlOf, makeTempRoot, removeTempRoot, request, ruleOf, shortBody, signedPath, type Vector } from './helpers.js';

const CLI = fileURLToPath(new URL('../dist/server/cli.js', import.meta.url));
/** A kill deadline, not a measure: a loaded machine may take seconds to start node. */
const TIMEOUT_MS = 60_000;

/** The environment without any IMAGEPROXY_* the developer may have set. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('IMAGEPROXY_')));
  return { ...env, ...extra };
}

interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

function startCli(args: string[], options: { cwd: string; env?: Record<string, string> }): ChildProcessWithoutNullStreams {
  return spawn(process.execPath, [CLI, ...args], { cwd: options.cwd, env: cleanEnv(options.env) });
}

function runCli(args: string[], options: { cwd: string; env?: Record<string, string> }): Promise<CliRun> {
  const child = startCli(args, options);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function lines(text: string): string[] {
  return text.split('\n').filter((line) => line !== '');
}

let cwd = '';
before(async () => {
  cwd = await makeTempRoot();
});
after(() => removeTempRoot(cwd));

/** The --height/--width flags of a vector's size segment. */
function sizeArgs(size: string): string[] {
  const [height = '', width = ''] = size === 'full' ? [] : size.split('x');
  return [...(height === '' ? [] : ['--height', height]), ...(width === '' ? [] : ['--width', width])];
}

const signArgs = (vector: Vector): string[] => [
  'sign',
  vector.imageUrl,
  '--secret',
  vector.secret,
  '--at',
  String(vector.at),
  '--bucket',
  vector.bucket,
  ...sizeArgs(vector.size),
  ...(vector.proxy ? ['--proxy'] : []),
  ...(vector.legacy ? ['--legacy'] : []),
  ...(vector.calendarYearWeeks === true ? ['--calendar-year-weeks'] : []),
];

/** A legacy vector needs its bucket to accept legacy signatures. */
const envFor = (vector: Vector): Record<string, string> => (vector.legacy ? { IMAGEPROXY_BUCKETS: `i,f,t,${vector.bucket}:legacy` } : {});

const ISO_VECTORS = VECTORS.filter((vector) => ruleOf(vector) === 'iso');

describe('sign', () => {
  for (const vector of VECTORS) {
    it(`reproduces the vector: ${vector.name}`, async () => {
      const run = await runCli(signArgs(vector), { cwd, env: envFor(vector) });
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stdout, `${vector.path}\n`, 'exactly one line, the path');
      assert.equal(run.stderr, '');
    });
  }

  it('--at as an ISO date gives the same path as epoch seconds', async () => {
    const [vector] = ISO_VECTORS;
    assert.ok(vector !== undefined);
    const args = signArgs(vector).map((arg) => (arg === String(vector.at) ? new Date(vector.at * 1000).toISOString() : arg));
    const run = await runCli(args, { cwd });
    assert.equal(run.stdout, `${vector.path}\n`);
  });

  it('--height and --width make a size; --proxy forces full', async () => {
    const base = ['sign', 'https://example.com/a.jpg', '--secret', 's', '--at', '1735560000'];
    const sized = await runCli([...base, '--height', '150', '--width', '200'], { cwd });
    assert.match(sized.stdout, /^\/i\/150x200\/[A-Za-z0-9_-]{16}\/[A-Za-z0-9_-]+\n$/);
    const proxied = await runCli([...base, '--height', '150', '--proxy'], { cwd });
    assert.equal(proxied.code, 0, proxied.stderr);
    assert.match(proxied.stdout, /^\/i\/full\/[A-Za-z0-9_-]{16}\/[A-Za-z0-9_-]+\/proxy\n$/);
    // Even a size no config allows: proxy ignores the size, as the app does.
    const oddSize = await runCli([...base, '--height', '999', '--proxy'], { cwd });
    assert.equal(oddSize.stdout, proxied.stdout);
  });

  it('--calendar-year-weeks signs with the calendar-year key at New Year, as old Gazelle did', async () => {
    const base = ['sign', 'https://example.com/a.jpg', '--secret', 's', '--at', '2024-12-30T12:00:00Z'];
    const iso = await runCli(base, { cwd });
    const calendar = await runCli([...base, '--calendar-year-weeks'], { cwd });
    assert.equal(calendar.code, 0, calendar.stderr);
    assert.notEqual(calendar.stdout, iso.stdout);
    const checked = await runCli(['verify', calendar.stdout.trim(), '--secret', 's', '--at', '2024-12-30T12:00:00Z', '--calendar-year-weeks'], { cwd });
    assert.match(checked.stdout, /^valid: .*week 202401 \(calendar year rule/);
  });
});

describe('sign --from-file', () => {
  const urls = ['https://example.com/1.jpg', 'ftp://example.com/2.jpg', '', 'https://u:p@example.com/3.jpg', 'https://example.com/4 five.png'];

  it('prints one link per signable line, in order, and each unsignable line on stderr with its number (exit 1)', async () => {
    const file = join(cwd, 'urls.txt');
    await writeFile(file, `${urls.join('\r\n')}\n`);
    const run = await runCli(['sign', '--from-file', file, '--secret', 's', '--height', '150', '--at', '1735560000'], { cwd });
    assert.equal(run.code, 1, run.stderr);
    const single = async (url: string): Promise<string> =>
      (await runCli(['sign', url, '--secret', 's', '--height', '150', '--at', '1735560000'], { cwd })).stdout;
    assert.equal(run.stdout, (await single(urls[0] ?? '')) + (await single(urls[4] ?? '')));
    const errors = lines(run.stderr);
    assert.match(errors[0] ?? '', /line 2: bad_url: .*http/);
    assert.match(errors[1] ?? '', /line 3: empty line/);
    assert.match(errors[2] ?? '', /line 4: bad_url: .*credentials/);
    assert.match(errors[3] ?? '', /2 of 5 lines not signed|3 of 5 lines not signed/);
  });

  it('reads stdin with -, exit 0 when every line signs', async () => {
    const child = startCli(['sign', '--from-file', '-', '--secret', 's', '--at', '1735560000'], { cwd });
    child.stdin.end('https://example.com/a.jpg\nhttps://example.com/b.jpg\n');
    const run = await finishCli(child);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(lines(run.stdout).length, 2);
    assert.equal(run.stderr, '');
  });

  it('a missing file is a usage error (exit 2)', async () => {
    const run = await runCli(['sign', '--from-file', join(cwd, 'nope.txt'), '--secret', 's'], { cwd });
    assert.equal(run.code, 2);
    assert.match(run.stderr, /--from-file/);
  });
});

describe('verify', () => {
  for (const vector of VECTORS) {
    it(`accepts the vector at its instant and says why: ${vector.name}`, async () => {
      const rule = ruleOf(vector);
      const calendar = vector.calendarYearWeeks === true ? ['--calendar-year-weeks'] : [];
      const run = await runCli(
        ['verify', vector.path, '--secret', 'a newer secret', '--secret', vector.secret, '--at', String(vector.at), ...calendar],
        { cwd, env: envFor(vector) },
      );
      assert.equal(run.code, 0, run.stdout + run.stderr);
      assert.equal(lines(run.stdout).length, 1);
      assert.match(run.stdout, /^valid: /);
      assert.ok(run.stdout.includes('secret #1'), run.stdout);
      assert.ok(run.stdout.includes(`week ${vector.weekSuffix} (${rule} year rule`), run.stdout);
      assert.ok(run.stdout.includes(vector.legacy ? 'legacy scheme' : 'bucket scheme'), run.stdout);
    });
  }

  const [vector] = VECTORS;
  assert.ok(vector !== undefined);
  const signature = vector.path.split('/')[3] ?? '';
  const tamperedPath = vector.path.replace(signature, `${signature.slice(0, -1)}${signature.endsWith('A') ? 'B' : 'A'}`);

  interface InvalidCase {
    name: string;
    args: string[];
    env?: Record<string, string>;
    reason: string;
  }
  const calendarVector = VECTORS.find((item) => item.calendarYearWeeks === true);
  assert.ok(calendarVector !== undefined);
  const INVALID_CASES: InvalidCase[] = [
    { name: 'tampered signature', args: ['verify', tamperedPath, '--secret', vector.secret, '--at', String(vector.at)], reason: 'wrong: bad_signature' },
    {
      name: 'two weeks later: expired, signed two weeks before',
      args: ['verify', vector.path, '--secret', vector.secret, '--at', String(vector.at + 14 * 86_400)],
      reason: `expired: bad_signature: signed with secret #0 in week ${vector.weekSuffix} (iso year rule, about 2 weeks ago)`,
    },
    {
      name: 'fifty weeks later: still found, expired',
      args: ['verify', vector.path, '--secret', 'newer', '--secret', vector.secret, '--at', String(vector.at + 50 * 7 * 86_400)],
      reason: `expired: bad_signature: signed with secret #1 in week ${vector.weekSuffix} (iso year rule, about 50 weeks ago)`,
    },
    { name: 'wrong secret', args: ['verify', vector.path, '--secret', 'nope', '--at', String(vector.at)], reason: 'wrong: bad_signature' },
    {
      // imageproxy-py's README vector: valid, as a legacy link, and the line names the setting.
      name: 'legacy link in a bucket without legacy',
      args: ['verify', '/i/full/ae0_4RXxKhh6_AwX/aHR0cHM6Ly9leGFtcGxlX3VybC9pbWcuanBn', '--secret', '1234', '--at', '1640730000'],
      reason:
        'legacy: bad_signature: a valid legacy link (signed without the bucket prefix, as before buckets: secret #0, week 202152, iso year rule), ' +
        'but bucket i refuses legacy signatures; set buckets.i.legacySignatures true (IMAGEPROXY_BUCKETS i:legacy) to accept it',
    },
    {
      name: 'legacy link in a bucket without legacy, two weeks later',
      args: ['verify', '/i/full/ae0_4RXxKhh6_AwX/aHR0cHM6Ly9leGFtcGxlX3VybC9pbWcuanBn', '--secret', '1234', '--at', String(1640730000 + 14 * 86_400)],
      reason:
        'expired: bad_signature: signed with secret #0 in week 202152 (iso year rule, about 2 weeks ago), legacy scheme (no bucket prefix); not accepted now ' +
        '(legacy links are accepted in bucket i only with buckets.i.legacySignatures true (IMAGEPROXY_BUCKETS i:legacy))',
    },
    {
      name: 'calendar-rule vector without --calendar-year-weeks',
      args: ['verify', calendarVector.path, '--secret', calendarVector.secret, '--at', String(calendarVector.at)],
      reason: 'expired: bad_signature: signed with secret #0 in week 202401 (calendar year rule',
    },
    { name: 'unknown bucket', args: ['verify', vector.path.replace('/i/', '/x/'), '--secret', vector.secret], reason: 'invalid: unknown_bucket' },
    { name: 'bad path', args: ['verify', '/i/full', '--secret', vector.secret], reason: 'invalid: bad_path' },
    {
      name: 'signed, but the image URL carries credentials',
      args: ['verify', signedPath({ secret: 's', imageUrl: 'http://u:p@example.com/a.jpg', atMs: vector.at * 1000 }), '--secret', 's', '--at', String(vector.at)],
      reason: 'invalid: bad_url',
    },
  ];
  for (const testCase of INVALID_CASES) {
    it(`exit 1: ${testCase.name}`, async () => {
      const run = await runCli(testCase.args, { cwd, env: testCase.env });
      assert.equal(run.code, 1, run.stdout + run.stderr);
      assert.equal(run.stdout, run.stdout.split('\n')[0] + '\n', 'one line');
      assert.ok(run.stdout.startsWith(testCase.reason), run.stdout);
    });
  }

  it('the New-Year replay: refused by default, valid with --calendar-year-weeks', async () => {
    const path = signedPath({ secret: 's', imageUrl: 'https://example.com/w1.jpg', atMs: Date.parse('2024-01-03T12:00:00Z') });
    for (const at of ['2024-12-30T12:00:00Z', '2024-12-31T12:00:00Z']) {
      const refused = await runCli(['verify', path, '--secret', 's', '--at', at], { cwd });
      assert.equal(refused.code, 1, at);
      // The same key is this week's under the calendar rule: the line names that rule and the option.
      assert.match(refused.stdout, /^expired: bad_signature: signed with secret #0 in week 202401 .*only with calendarYearWeeks/, at);
      const accepted = await runCli(['verify', path, '--secret', 's', '--at', at, '--calendar-year-weeks'], { cwd });
      assert.equal(accepted.code, 0, at);
      const viaEnv = await runCli(['verify', path, '--secret', 's', '--at', at], { cwd, env: { IMAGEPROXY_CALENDAR_YEAR_WEEKS: 'true' } });
      assert.equal(viaEnv.code, 0, at);
    }
  });

  it('accepts a full URL as well as a path', async () => {
    const run = await runCli(['verify', `https://img.example.org${vector.path}?x=1`, '--secret', vector.secret, '--at', String(vector.at)], { cwd });
    assert.equal(run.code, 0, run.stdout);
  });
});

describe('decode', () => {
  const sized = VECTORS.find((item) => item.name === 'sized thumbnail');
  assert.ok(sized !== undefined);

  it('prints bucket, size, proxy, image URL, key, stored files and the verdict', async () => {
    const root = join(cwd, 'decode-root');
    const store = new ImageStore(root);
    await store.storeImage('i', sized.key, '150x', 'jpg', Buffer.from('thumb'));
    await store.storeImage('i', sized.key, null, 'png', Buffer.from('original'));
    const run = await runCli(['decode', sized.path, '--secret', sized.secret, '--at', String(sized.at), '--root', root], { cwd });
    assert.equal(run.code, 0, run.stdout + run.stderr);
    const directory = store.directoryOf('i', sized.key);
    assert.deepEqual(lines(run.stdout).slice(0, 7), [
      'bucket: i',
      'size: 150x',
      'proxy: no',
      `image URL: ${sized.imageUrl}`,
      `key: ${sized.key}`,
      `stored: ${join(directory, `${sized.key}.150x.jpg`)}`,
      `stored: ${join(directory, `${sized.key}.png`)}`,
    ]);
    assert.match(lines(run.stdout)[7] ?? '', /^valid: secret #0, week 202152 \(iso year rule, now\)/);
  });

  it("imageproxy-py's README vector: decoded, and named a valid legacy link with the setting that accepts it", async () => {
    const run = await runCli(['decode', '/i/full/ae0_4RXxKhh6_AwX/aHR0cHM6Ly9leGFtcGxlX3VybC9pbWcuanBn', '--secret', '1234', '--at', '1640730000', '--root', join(cwd, 'decode-legacy-root')], { cwd });
    assert.equal(run.code, 1, run.stdout + run.stderr);
    assert.equal(lines(run.stdout)[3], 'image URL: https://example_url/img.jpg');
    assert.match(lines(run.stdout).at(-1) ?? '', /^legacy: bad_signature: a valid legacy link .*set buckets\.i\.legacySignatures true/);
  });

  it('tells an expired link (exit 1) from a forged one (exit 1), and says nothing is stored', async () => {
    const root = join(cwd, 'decode-empty');
    const later = String(sized.at + 30 * 86_400);
    const expired = await runCli(['decode', sized.path, '--secret', sized.secret, '--at', later, '--root', root], { cwd });
    assert.equal(expired.code, 1);
    assert.ok(lines(expired.stdout).includes(`stored: nothing in ${new ImageStore(root).directoryOf('i', sized.key)}`), expired.stdout);
    assert.match(lines(expired.stdout).at(-1) ?? '', /^expired: bad_signature: signed with secret #0 in week 202152 \(iso year rule, about 4 weeks ago\)/);
    const forged = await runCli(['decode', sized.path, '--secret', 'another', '--at', String(sized.at), '--root', root], { cwd });
    assert.equal(forged.code, 1);
    assert.match(lines(forged.stdout).at(-1) ?? '', /^wrong: bad_signature: no configured secret signed this link/);
  });

  it('escapes control characters of the image URL', async () => {
    const path = signedPath({ secret: 's', imageUrl: 'https://example.com/a\u001b[2Jb.jpg', atMs: sized.at * 1000 });
    const run = await runCli(['decode', path, '--secret', 's', '--at', String(sized.at), '--root', join(cwd, 'decode-empty')], { cwd });
    assert.ok(lines(run.stdout).includes('image URL: https://example.com/a\\u001b[2Jb.jpg'), run.stdout);
    assert.ok(!run.stdout.includes('\u001b'));
  });

  it('an unparsable link: one invalid line, exit 1', async () => {
    const run = await runCli(['decode', '/i/full', '--secret', 's'], { cwd });
    assert.equal(run.code, 1);
    assert.deepEqual(lines(run.stdout), ['invalid: bad_path: link must have 4 or 5 path segments']);
  });
});

interface UsageCase {
  name: string;
  args: string[];
  env?: Record<string, string>;
  config?: string;
  /** A word the one-line reason must contain. */
  mentions: string;
}

const USAGE_CASES: UsageCase[] = [
  { name: 'unknown flag', args: ['sign', 'https://example.com/a.jpg', '--secret', 's', '--bogus'], mentions: '--bogus' },
  {
    name: 'misspelled flag',
    args: ['sign', 'https://example.com/a.jpg', '--secrte', 's'],
    mentions: '--secrte',
  },
  { name: 'a config file every user can read holding secrets', args: ['sign', 'https://example.com/a.jpg'], config: '{"secrets": ["s"]}', mentions: 'chmod o-rwx' },
  { name: 'a config file every user can read holding secrets names secretFile', args: ['init-buckets'], config: '{"secrets": ["s"]}', mentions: 'secretFile' },
  { name: '--secret and --secret-file together', args: ['sign', 'https://example.com/a.jpg', '--secret', 's', '--secret-file', '/nonexistent'], mentions: '--secret-file' },
  // Node's recursive mkdir spins forever under /proc: refused before any, in one line.
  { name: 'serve with a root under /proc', args: ['serve', '--root', '/proc/imageproxy-tree', '--secret', 's', '--listen', '127.0.0.1:0', '--admin-listen', 'off'], mentions: 'lies on proc, a kernel pseudo filesystem' },
  { name: 'init-buckets with a root under /sys', args: ['init-buckets', '--root', '/sys/imageproxy/tree'], mentions: 'lies on sysfs' },
  { name: 'unknown command', args: ['bogus'], mentions: 'bogus' },
  { name: 'missing argument', args: ['sign'], mentions: 'image-url' },
  { name: 'bad --at', args: ['sign', 'https://example.com/a.jpg', '--secret', 's', '--at', 'yesterday-ish'], mentions: '--at' },
  { name: 'bad --at in verify', args: ['verify', '/i/full/AAAAAAAAAAAAAAAA/aGk', '--secret', 's', '--at', 'never'], mentions: '--at' },
  { name: 'bad --delivery choice', args: ['serve', '--delivery', 'bogus'], mentions: 'bogus' },
  { name: 'bad --max-bytes', args: ['serve', '--max-bytes', '-5'], mentions: '-5' },
  {
    name: 'bad --max-bytes names the flag',
    args: ['serve', '--max-bytes', '0'],
    mentions: '--max-bytes',
  },
  {
    name: 'bad --height names the flag',
    args: ['sign', 'https://example.com/a.jpg', '--secret', 's', '--height', 'tall'],
    mentions: '--height',
  },
  { name: 'sign for an unknown bucket', args: ['sign', 'https://example.com/a.jpg', '--secret', 's', '--bucket', 'zz'], mentions: '--bucket' },
  { name: 'sign an ftp URL', args: ['sign', 'ftp://example.com/a.jpg', '--secret', 's'], mentions: 'http' },
  { name: 'sign a URL with credentials (the app refuses it)', args: ['sign', 'http://u:p@example.com/a.jpg', '--secret', 's'], mentions: 'credentials' },
  { name: 'sign a size not allowed', args: ['sign', 'https://example.com/a.jpg', '--secret', 's', '--height', '999'], mentions: '999' },
  {
    name: 'sign a URL too long for a link',
    args: ['sign', `https://example.com/${'a'.repeat(8192)}`, '--secret', 's'],
    mentions: 'url_too_long',
  },
  { name: 'sign --legacy for a bucket without legacy signatures', args: ['sign', 'https://example.com/a.jpg', '--secret', 's', '--legacy'], mentions: 'legacy' },
  { name: 'sign with both a URL and --from-file', args: ['sign', 'https://example.com/a.jpg', '--from-file', '-', '--secret', 's'], mentions: '--from-file' },
  { name: 'no secret anywhere', args: ['sign', 'https://example.com/a.jpg'], mentions: 'secret' },
  { name: 'bad value in the config file', args: ['sign', 'https://example.com/a.jpg', '--secret', 's'], config: '{"limits": {"maxBytes": 0}}', mentions: 'limits.maxBytes' },
  { name: 'unknown key in the config file', args: ['init-buckets'], config: '{"sizez": [150]}', mentions: 'sizez' },
  { name: 'config file not JSON', args: ['init-buckets'], config: '{', mentions: '--config' },
  { name: 'bad value in the environment', args: ['init-buckets'], env: { IMAGEPROXY_DELIVERY: 'bogus' }, mentions: 'delivery' },
  { name: 'bad number in the environment', args: ['init-buckets'], env: { IMAGEPROXY_MAX_BYTES: 'lots' }, mentions: 'limits.maxBytes' },
];

describe('usage and config errors exit 2 with a one-line reason', () => {
  for (const [index, testCase] of USAGE_CASES.entries()) {
    it(testCase.name, async () => {
      const args = [...testCase.args];
      if (testCase.config !== undefined) {
        const path = join(cwd, `usage-${index}.json`);
        await writeFile(path, testCase.config);
        args.push('--config', path);
      }
      const run = await runCli(args, { cwd, env: { IMAGEPROXY_ROOT: join(cwd, `usage-root-${index}`), ...testCase.env } });
      assert.equal(run.code, 2, run.stdout + run.stderr);
      assert.equal(run.stdout, '');
      assert.equal(lines(run.stderr).length, 1, run.stderr);
      assert.ok(run.stderr.includes(testCase.mentions), run.stderr);
    });
  }
});

describe('--help', () => {
  for (const args of [
    ['--help'],
    ['serve', '--help'],
    ['sign', '--help'],
    ['verify', '--help'],
    ['decode', '--help'],
    ['init-buckets', '--help'],
    ['nginx-config', '--help'],
    ['purge', '--help'],
    ['help', 'sign'],
  ]) {
    it(args.join(' '), async () => {
      const run = await runCli(args, { cwd });
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, /^Usage: imageproxy/);
    });
  }
});

describe('init-buckets', () => {
  it('creates 64 × 64 directories per bucket and is idempotent', async () => {
    const root = join(cwd, 'init-root');
    const env = { IMAGEPROXY_ROOT: root, IMAGEPROXY_BUCKETS: 'i,f' };
    const first = await runCli(['init-buckets'], { cwd, env });
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /created 8192 of 8192 directories\n$/);
    assert.equal((await readdir(join(root, 'f'))).length, 64);
    assert.equal((await readdir(join(root, 'f', '_'))).length, 64);
    const second = await runCli(['init-buckets'], { cwd, env });
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /created 0 of 8192 directories\n$/);
  });
});

describe('purge', () => {
  it('removes an image with its thumbnails and sidecars, by link (even expired) or by image URL', async () => {
    const root = join(cwd, 'purge-root');
    const env = { IMAGEPROXY_ROOT: root };
    const imageUrl = 'https://example.org/purge-me.jpg';
    const key = storageKey(Buffer.from(imageUrl));
    const store = new ImageStore(root);
    const place = async (): Promise<void> => {
      await store.storeImage('i', key, null, 'jpg', Buffer.from('original'));
      await store.storeImage('i', key, '150x', 'jpg', Buffer.from('thumb'));
      await store.writeAtomic('i', key, `${key}.json`, Buffer.from('{}'));
      // Another image in the same directory stays.
      await store.writeAtomic('i', key, 'neighbour.jpg', Buffer.from('other'));
    };
    await place();
    const expiredLink = `/i/250x/AAAAAAAAAAAAAAAA/${extUrlOf(imageUrl)}`;
    const byLink = await runCli(['purge', expiredLink, '--secret', 's'], { cwd, env });
    assert.equal(byLink.code, 0, byLink.stderr);
    assert.equal(lines(byLink.stdout).filter((line) => line.startsWith('removed ')).length, 3);
    assert.deepEqual(await readdir(store.directoryOf('i', key)), ['neighbour.jpg']);

    const again = await runCli(['purge', expiredLink], { cwd, env });
    assert.equal(again.code, 1);
    assert.match(again.stdout, /nothing stored for key/);

    await place();
    const byUrl = await runCli(['purge', '--image-url', imageUrl], { cwd, env });
    assert.equal(byUrl.code, 0, byUrl.stderr);
    assert.deepEqual(await readdir(store.directoryOf('i', key)), ['neighbour.jpg']);

    const neither = await runCli(['purge'], { cwd, env });
    assert.equal(neither.code, 2);
  });
});

// ---- serve ---------------------------------------------------------------------

interface LogLine {
  level: number;
  msg: string;
  address?: string;
  file?: string;
}

interface Served {
  child: ChildProcessWithoutNullStreams;
  baseUrl: string;
  logs: LogLine[];
  stop(): Promise<number | null>;
}

/** Starts `serve`, reads JSON log lines until the listening line, returns its address. */
async function serve(args: string[], env: Record<string, string>): Promise<Served> {
  const child = startCli(['serve', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', ...args], { cwd, env });
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  const stop = async (): Promise<number | null> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
    const code = await exited;
    clearTimeout(timer);
    return code;
  };
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const logs: LogLine[] = [];
  try {
    const baseUrl = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`serve did not listen in time: ${stderr}`)), TIMEOUT_MS);
      void exited.then((code) => reject(new Error(`serve exited ${code}: ${stderr}`)));
      createInterface({ input: child.stdout }).on('line', (line) => {
        const log = JSON.parse(line) as LogLine;
        logs.push(log);
        if (log.msg.startsWith('listening on http://') && log.address !== undefined) {
          clearTimeout(timer);
          resolve(log.address);
        }
      });
    });
    return { child, baseUrl, logs, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

describe('serve', () => {
  it('--listen 127.0.0.1:0 logs the picked port and answers /healthz', async () => {
    const root = join(cwd, 'serve-root');
    const secretFile = join(cwd, 'serve-secret');
    await writeFile(secretFile, 'configured\n', { mode: 0o600 });
    const served = await serve(['--root', root, '--secret-file', secretFile], {});
    try {
      assert.match(served.baseUrl, /^http:\/\/127\.0\.0\.1:[1-9]\d*$/);
      const health = await request(served.baseUrl, '/healthz');
      assert.equal(health.status, 200);
      assert.equal(served.logs.some((log) => log.level === 40), false, 'no warning when a secret file is configured');
    } finally {
      assert.equal(await served.stop(), 0, 'SIGTERM ends serve with 0');
    }
  });

  it('--secret: one warning that ps shows it, naming --secret-file', async () => {
    const served = await serve(['--root', join(cwd, 'serve-flag-root'), '--secret', 'on-the-command-line'], {});
    try {
      // Logged just after the listening line serve() waited for.
      const deadline = Date.now() + 10_000;
      while (!served.logs.some((log) => log.level === 40) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      const warnings = served.logs.filter((log) => log.level === 40);
      assert.equal(warnings.length, 1);
      assert.match(warnings[0]?.msg ?? '', /--secret puts the secret on the command line.*\bps\b.*--secret-file/);
      assert.doesNotMatch(JSON.stringify(served.logs), /on-the-command-line/, 'the secret itself is never logged');
    } finally {
      await served.stop();
    }
  });

  it('without a secret: generates one 0600 under the root, warns, and sign uses it', async () => {
    const root = join(cwd, 'generated-root');
    const served = await serve([], { IMAGEPROXY_ROOT: root });
    try {
      const secretPath = join(root, '.imageproxy-secret');
      assert.equal((await stat(secretPath)).mode & 0o777, 0o600);
      const warning = served.logs.find((log) => log.level === 40);
      assert.ok(warning !== undefined, 'a warning is logged');
      assert.ok(warning.msg.includes(secretPath), warning.msg);

      const imageUrl = 'https://example.com/generated.png';
      const signed = await runCli(['sign', imageUrl], { cwd, env: { IMAGEPROXY_ROOT: root } });
      assert.equal(signed.code, 0, signed.stderr);
      const path = lines(signed.stdout)[0] ?? '';
      assert.ok(path.endsWith(`/${extUrlOf(imageUrl)}`), path);

      // Stored in advance, so the server answers from the tree and fetches nothing.
      const key = storageKey(Buffer.from(imageUrl));
      const png = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#123456' } }).png().toBuffer();
      await new ImageStore(root).storeImage('i', key, null, 'png', png);
      const answer = await request(served.baseUrl, path);
      assert.equal(answer.status, 200, shortBody(answer.body, answer.headers.get('content-type')));
      assertSameBytes(answer.body, png, 'the body');

      const verified = await runCli(['verify', path], { cwd, env: { IMAGEPROXY_ROOT: root } });
      assert.equal(verified.code, 0, verified.stdout);

      const forged = await request(served.baseUrl, path.replace(/\/[A-Za-z0-9_-]{16}\//, '/AAAAAAAAAAAAAAAA/'));
      assert.equal(forged.status, 410);
    } finally {
      await served.stop();
    }
  });

  it('a second start keeps the generated secret and warns again that it runs on it', async () => {
    const root = join(cwd, 'generated-twice');
    const first = await serve([], { IMAGEPROXY_ROOT: root });
    await first.stop();
    const secretBefore = await stat(join(root, '.imageproxy-secret'));
    const second = await serve([], { IMAGEPROXY_ROOT: root });
    try {
      const warnings = second.logs.filter((log) => log.level === 40);
      assert.equal(warnings.length, 1);
      assert.match(warnings[0]?.msg ?? '', /running on the secret generated in .*\.imageproxy-secret/);
      assert.equal((await stat(join(root, '.imageproxy-secret'))).mtimeMs, secretBefore.mtimeMs);
    } finally {
      await second.stop();
    }
  });
});
