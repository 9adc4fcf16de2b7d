/**
 * nginx/s3sign.js, run by the real njs 0.7.9 (the Debian `njs` command-line tool), against
 * the AWS SDK's own SigV4 signer (@smithy/signature-v4) as the oracle: the same
 * Authorization header and x-amz-date for a table of objects, times, regions and keys.
 * The oracle encodes the raw path itself (uriEscapePath), so the njs path encoding is
 * checked too. One njs run evaluates every case and prints one line per case.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SignatureV4 } from '@smithy/signature-v4';
import { NJS_DIR, njsMissing } from './nginxHarness.js';

interface SignCase {
  name: string;
  host: string;
  /** Unencoded, path-style: `/{bucket}/{key}`. */
  path: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  epochMs: number;
}

const KEY = 'J2oawAuk8OpH7ur8okKE9BvHjcWTrx8EhhWs66RKudk';
const AT = Date.parse('2026-12-07T14:20:35.789Z');
const BASE = {
  host: '127.0.0.1:7480',
  region: 'us-east-1',
  accessKeyId: 'AKIAIOSFODNN7EXAMPLE',
  secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
  epochMs: AT,
};

const CASES: SignCase[] = [
  { ...BASE, name: 'an original', path: `/imageproxy/i/J/2/${KEY}` },
  { ...BASE, name: 'a thumbnail under a prefix', path: `/imageproxy/site-a/images/i/J/2/${KEY}.150x` },
  { ...BASE, name: 'a class thumbnail', path: `/imageproxy/i/J/2/${KEY}.x250.avif` },
  { ...BASE, name: 'key with - and _', path: '/imageproxy/i/-/_/-_abc' },
  { ...BASE, name: 'space, plus, equals', path: '/b/a b+c=d' },
  { ...BASE, name: 'the five characters encodeURIComponent keeps', path: "/b/it's(1)!*" },
  { ...BASE, name: 'tilde stays', path: '/b/~user/x' },
  { ...BASE, name: 'non-ASCII', path: '/b/bild-ü/ä€😀.png' },
  { ...BASE, name: 'percent and ampersand', path: '/b/100%&a?b#c' },
  { ...BASE, name: 'other region', path: '/b/x', region: 'eu-central-1' },
  { ...BASE, name: 'a hostname with a default port', path: '/b/x', host: 'gateway.example.org' },
  { ...BASE, name: 'secret with symbols', path: '/b/x', secretAccessKey: 'a+b/c=d_e-f~g' },
  { ...BASE, name: 'temporary credentials (session token)', path: '/b/x', sessionToken: 'FwoGZXIvYXdzEXAMPLE//token+with=symbols' },
  { ...BASE, name: 'midnight UTC', path: '/b/x', epochMs: Date.parse('2027-01-01T00:00:00.000Z') },
  { ...BASE, name: 'one millisecond before midnight (the day in the scope)', path: '/b/x', epochMs: Date.parse('2026-12-31T23:59:59.999Z') },
  { ...BASE, name: 'a leap day', path: '/b/x', epochMs: Date.parse('2028-02-29T12:34:56.000Z') },
];

function bytesOf(data: ArrayBuffer | ArrayBufferView): Uint8Array {
  return data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** node:crypto as the SDK's Checksum: a hash, or an HMAC when given a secret. */
class NodeSha256 {
  private state: Hash | Hmac;
  private readonly secret: string | Uint8Array | undefined;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.secret = secret === undefined || typeof secret === 'string' ? secret : bytesOf(secret);
    this.state = this.fresh();
  }
  private fresh(): Hash | Hmac {
    return this.secret === undefined ? createHash('sha256') : createHmac('sha256', this.secret);
  }
  update(data: string | ArrayBuffer | ArrayBufferView): void {
    this.state.update(typeof data === 'string' ? data : bytesOf(data));
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(this.state.digest()));
  }
  reset(): void {
    this.state = this.fresh();
  }
}

interface Signed {
  authorization: string;
  amzDate: string;
}

async function oracle(testCase: SignCase): Promise<Signed> {
  const signer = new SignatureV4({
    service: 's3',
    region: testCase.region,
    credentials: {
      accessKeyId: testCase.accessKeyId,
      secretAccessKey: testCase.secretAccessKey,
      ...(testCase.sessionToken === undefined ? {} : { sessionToken: testCase.sessionToken }),
    },
    sha256: NodeSha256,
    uriEscapePath: true,
    applyChecksum: false,
  });
  const [hostname = '', port] = testCase.host.split(':');
  const signed = await signer.sign(
    {
      method: 'GET',
      protocol: 'http:',
      hostname,
      ...(port === undefined ? {} : { port: Number(port) }),
      path: testCase.path,
      query: {},
      headers: { host: testCase.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' },
    },
    { signingDate: new Date(testCase.epochMs) },
  );
  const authorization = signed.headers.authorization;
  const amzDate = signed.headers['x-amz-date'];
  assert.ok(authorization !== undefined && amzDate !== undefined, 'the SDK signer set its headers');
  return { authorization, amzDate };
}

const DRIVER = `import s3 from 's3sign.js';
var fs = require('fs');
var cases = JSON.parse(fs.readFileSync(CASES_FILE, 'utf8'));
for (var i = 0; i < cases.length; i++) {
    var c = cases[i];
    var amzDate = s3.amzDateOf(c.epochMs);
    var authorization = s3.authorizationForGet({
        host: c.host, uri: s3.canonicalUri(c.path), amzDate: amzDate, region: c.region,
        accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey, sessionToken: c.sessionToken
    });
    console.log(JSON.stringify([i, { authorization: authorization, amzDate: amzDate, uri: s3.canonicalUri(c.path) }]));
}
`;

describe('nginx/s3sign.js under njs agrees with the AWS SDK signer', { skip: njsMissing() ?? false }, () => {
  let workDir = '';
  const results: Array<Signed & { uri: string }> = [];

  before(async () => {
    workDir = await mkdtemp(join(tmpdir(), 'imageproxy-s3sign-'));
    const casesFile = join(workDir, 'cases.json');
    await writeFile(casesFile, JSON.stringify(CASES));
    await writeFile(join(workDir, 'driver.js'), DRIVER.replace('CASES_FILE', JSON.stringify(casesFile)));
    const run = spawnSync('njs', ['-p', NJS_DIR, join(workDir, 'driver.js')], { encoding: 'utf8' });
    assert.equal(run.status, 0, `njs failed: ${run.stderr}${run.stdout.slice(0, 2000)}`);
    for (const line of run.stdout.split('\n')) {
      if (!line.startsWith('[')) continue;
      const [index, value] = JSON.parse(line) as [number, Signed & { uri: string }];
      results[index] = value;
    }
    assert.equal(results.length, CASES.length, 'one njs result per case');
  });

  after(async () => {
    if (workDir !== '') await rm(workDir, { recursive: true, force: true });
  });

  for (const [index, testCase] of CASES.entries()) {
    it(`${testCase.name}: same Authorization and x-amz-date`, async () => {
      const expected = await oracle(testCase);
      assert.deepEqual({ authorization: results[index]?.authorization, amzDate: results[index]?.amzDate }, expected);
    });
  }

  it('the sent URI keeps `/` and the unreserved characters, and encodes the rest once', () => {
    const table: Array<[path: string, uri: string]> = [
      [`/imageproxy/site-a/images/i/J/2/${KEY}.150x`, `/imageproxy/site-a/images/i/J/2/${KEY}.150x`],
      ['/b/a b+c=d', '/b/a%20b%2Bc%3Dd'],
      ["/b/it's(1)!*", '/b/it%27s%281%29%21%2A'],
      ['/b/100%&a?b#c', '/b/100%25%26a%3Fb%23c'],
      ['/b/~user/x', '/b/~user/x'],
    ];
    for (const [path, uri] of table) {
      const index = CASES.findIndex((testCase) => testCase.path === path);
      assert.ok(index >= 0, `a case signs ${path}`);
      assert.equal(results[index]?.uri, uri, path);
    }
  });
});
