/**
 * One link grammar, checked as a property over generated image URLs (odd schemes,
 * credentials, IPv6 literals, unicode hosts and paths, spaces, percent-escapes, query
 * and fragment, 8 KB long) and size combinations:
 *
 *   sign succeeds  <=>  the app answers neither 400 nor 414 (url_too_long)
 *   verify says the signature fails (expired, wrong, malformed)  <=>  the app answers 410
 *                                                                <=>  nginx answers 410
 *   so for a link sign printed: verify valid  <=>  neither answers 410
 *
 * sign and verify are the pure functions the CLI calls (server/contract/linkTools.ts), run
 * in-process thousands of times. The app is a stored-images app (never fetches) on
 * 127.0.0.1; nginx runs the config the CLI renders, in front of that same app. Generated
 * hosts are never resolved or contacted: nothing is fetched.
 *
 * Excluded by construction: a size with one allowed and one disallowed value (sign
 * refuses it, since the link would not mean what was asked; the app ignores the
 * disallowed half), and legacy signing in a bucket without legacy signatures (sign
 * refuses; the app answers 410).
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isImageproxyError } from '../server/errors.js';
import { encodeImageUrl, formatLink } from '../server/contract/link.js';
import { isSignatureRefusal, judgeLink, signLinkFor, type LinkPolicy, type SignRequest } from '../server/contract/linkTools.js';
import { signLink } from '../server/contract/signing.js';
import { sizeLabel } from '../server/contract/sizes.js';
import { makeTempRoot, removeTempRoot, request, startApp, type RunningApp } from './helpers.js';
import { freePort, nginxMissing, startNginx, renderStandaloneWithCli, type RunningNginx } from './nginxHarness.js';
import { seededRandom } from './seededRandom.js';

const SECRET = 'property secret';
const CASES = 2500;
const DAY_MS = 86_400_000;

const SCHEMES = ['http://', 'https://', 'HTTPS://', 'ftp://', 'file://', 'javascript:', 'data:', 'http:/', '//', '', 'ht tp://'];
const CREDENTIALS = ['', '', '', 'user@', 'user:pass@', ':pass@', '@'];
const HOSTS = [
  'example.com', 'img.example.org:8080', '127.0.0.1', '[::1]', '[2001:db8::1]:443', '[::ffff:10.0.0.1]', 'bücher.example',
  'xn--bcher-kva.example', 'EXAMPLE.COM', '%65xample.com', 'exa mple.com', '', 'a..b', '[::1', '例え.テスト',
];
const PATHS = [
  '/a.jpg', '/ünïcødé/ñ.png', '/with space.gif', '/%20%41%zz.jpg', '/a.jpg?b=c&d=%20#frag', '', '/', '/..//./x.webp',
  '/emoji/😀.png', '/tab\there.jpg', '/new\nline.jpg', '/q?' + 'k=v&'.repeat(40), '/#only-fragment', '/\u0000nul.png',
];
const SIZES: Array<[number | undefined, number | undefined]> = [
  [undefined, undefined], [150, undefined], [undefined, 250], [150, 250], [500, 500], [999, undefined], [undefined, 7], [999, 7],
];

type Signing = 'fresh' | 'expired' | 'tampered' | 'other secret' | 'malformed';
const SIGNINGS: Signing[] = ['fresh', 'fresh', 'fresh', 'expired', 'tampered', 'other secret', 'malformed'];

interface Case {
  imageUrl: string;
  request: SignRequest;
  signing: Signing;
}

function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)] as T;
}

function generateCases(nowMs: number): Case[] {
  const random = seededRandom(20_241_230);
  const cases: Case[] = [];
  // Half the parts are plain ones, so that about half the URLs are signable.
  const part = (items: readonly string[], plain: string): string => (random() < 0.5 ? plain : pick(random, items));
  for (let index = 0; index < CASES; index += 1) {
    let imageUrl = `${part(SCHEMES, 'https://')}${part(CREDENTIALS, '')}${part(HOSTS, 'example.com')}${pick(random, PATHS)}`;
    // Around the ext_url limit: 8 KB of URL is ~10.9 K of base64url; 6 KB is ~8 K.
    if (random() < 0.05) imageUrl += `/${'z'.repeat(random() < 0.5 ? 8192 : 6100 + Math.floor(random() * 60))}`;
    const [height, width] = random() < 0.5 ? [undefined, undefined] : pick(random, SIZES);
    const legacyBucket = random() < 0.2;
    cases.push({
      imageUrl,
      signing: pick(random, SIGNINGS),
      request: {
        imageUrl,
        bucket: legacyBucket ? 'old' : 'i',
        legacy: legacyBucket && random() < 0.5,
        proxy: random() < 0.15,
        atMs: nowMs,
        ...(height === undefined ? {} : { height }),
        ...(width === undefined ? {} : { width }),
      },
    });
  }
  return cases;
}

/** The link a case names, written with formatLink whether or not sign would print it. */
function linkOf(testCase: Case, nowMs: number): string {
  const { request: spec } = testCase;
  const extUrl = encodeImageUrl(testCase.imageUrl);
  const proxy = spec.proxy ?? false;
  const parts = { bucket: spec.bucket, extUrl, proxy };
  const legacy = { legacy: spec.legacy ?? false };
  let signature: string;
  switch (testCase.signing) {
    case 'fresh':
      signature = signLink(SECRET, parts, nowMs, legacy);
      break;
    case 'expired':
      signature = signLink(SECRET, parts, nowMs - 21 * DAY_MS, legacy);
      break;
    case 'tampered': {
      const good = signLink(SECRET, parts, nowMs, legacy);
      signature = `${good.slice(0, 5)}${good[5] === 'A' ? 'B' : 'A'}${good.slice(6)}`;
      break;
    }
    case 'other secret':
      signature = signLink('not the secret', parts, nowMs, legacy);
      break;
    case 'malformed':
      signature = signLink(SECRET, parts, nowMs, legacy).slice(1);
      break;
  }
  // As Gazelle writes them: a proxy link says full (the app ignores its size anyway).
  const size =
    proxy || (spec.height === undefined && spec.width === undefined) ? 'full' : sizeLabel(spec.height ?? null, spec.width ?? null);
  return formatLink({ bucket: spec.bucket, size, signature, extUrl, proxy });
}

function signs(testCase: Case, policy: LinkPolicy): { ok: true; path: string } | { ok: false; code: string } {
  try {
    return { ok: true, path: signLinkFor(testCase.request, { policy, secret: SECRET }) };
  } catch (error) {
    if (isImageproxyError(error)) return { ok: false, code: error.code };
    throw error;
  }
}

const nginxSkip = nginxMissing();

describe('one link grammar: sign, verify, the app and nginx agree', () => {
  let workDir = '';
  let app: RunningApp | null = null;
  let nginx: RunningNginx | null = null;
  let nginxBase = '';

  before(async () => {
    workDir = await makeTempRoot('imageproxy-property-');
    const root = join(workDir, 'tree');
    const nginxPort = await freePort();
    app = await startApp({
      root,
      secrets: [SECRET],
      now: () => Date.now(),
      config: {
        buckets: { i: { legacySignatures: false }, old: { legacySignatures: true } },
        nginx: { listen: `127.0.0.1:${nginxPort}`, internalPrefix: '/_imageproxy' },
      },
    });
    if (nginxSkip !== null) return;
    // The config as an admin renders it: the CLI, from a config file.
    const configPath = join(workDir, 'config.json');
    await writeFile(configPath, JSON.stringify({ ...app.config, listen: new URL(app.baseUrl).host, secrets: [SECRET] }), { mode: 0o600 });
    const prefix = join(workDir, 'nginx');
    const rendered = await renderStandaloneWithCli(configPath, prefix);
    nginx = await startNginx(prefix, rendered, nginxPort);
    nginxBase = `http://127.0.0.1:${nginxPort}`;
  });

  after(async () => {
    await nginx?.stop();
    await app?.close();
    if (workDir !== '') await removeTempRoot(workDir);
  });

  it(`holds for ${CASES} generated URLs and sizes`, { skip: nginxSkip ?? false }, async () => {
    assert.ok(app !== null);
    const policy: LinkPolicy = {
      buckets: app.config.buckets,
      sizes: app.config.sizes,
      skewSeconds: app.config.skewSeconds,
      calendarYearWeeks: app.config.calendarYearWeeks,
    };
    const nowMs = Date.now();
    const failures: string[] = [];
    const seen = { signed: 0, refused: 0, valid: 0, signatureRefused: 0, nginxTooLong: 0 };
    for (const testCase of generateCases(nowMs)) {
      const signed = signs(testCase, policy);
      // A fresh link of a URL sign accepts is exactly the link sign prints.
      const path = signed.ok && testCase.signing === 'fresh' ? signed.path : linkOf(testCase, nowMs);
      if (signed.ok && testCase.signing === 'fresh') assert.equal(path, linkOf(testCase, nowMs), 'sign prints the formatLink link');
      const verdict = judgeLink(path, { policy, secrets: [SECRET], nowMs });
      const fromApp = (await request(app.baseUrl, path)).status;
      const fromNginx = (await request(nginxBase, path)).status;
      const label = `${JSON.stringify(testCase.imageUrl.slice(0, 120))} ${JSON.stringify(testCase.request)} ${testCase.signing}: sign ${signed.ok ? 'ok' : signed.code}, verdict ${verdict.kind}${verdict.kind === 'refused' ? ` ${verdict.error.code}` : ''}, app ${fromApp}, nginx ${fromNginx}`;

      if (signed.ok) seen.signed += 1;
      else seen.refused += 1;
      if (verdict.kind === 'valid') seen.valid += 1;
      if (isSignatureRefusal(verdict)) seen.signatureRefused += 1;
      if (fromNginx === 414) seen.nginxTooLong += 1;

      // Signing is judged on the fresh link of the URL and size asked for.
      if (testCase.signing === 'fresh' && signed.ok !== (fromApp !== 400 && fromApp !== 414)) failures.push(`sign ⇔ app neither 400 nor 414: ${label}`);
      if (isSignatureRefusal(verdict) !== (fromApp === 410)) failures.push(`signature refused ⇔ app 410: ${label}`);
      // nginx answers 414 itself for a request line past its buffers (only links far
      // beyond the ext_url limit), before any check.
      if (fromNginx !== 414 && isSignatureRefusal(verdict) !== (fromNginx === 410)) failures.push(`signature refused ⇔ nginx 410: ${label}`);
      if (signed.ok && (verdict.kind === 'valid') !== (fromApp !== 410 && fromNginx !== 410)) {
        failures.push(`valid ⇔ no 410 (signable URL): ${label}`);
      }
      if (signed.ok && fromNginx === 414) failures.push(`nginx takes every link sign prints: ${label}`);
      if (verdict.kind === 'valid' && fromApp !== 404) failures.push(`a valid link of nothing stored is 404 not_stored: ${label}`);
    }
    assert.deepEqual(failures.slice(0, 20), [], `${failures.length} failures`);
    // The generator reaches every branch: a property over one kind of case proves little.
    assert.ok(seen.signed > 200 && seen.refused > 200, JSON.stringify(seen));
    assert.ok(seen.valid > 200 && seen.signatureRefused > 200, JSON.stringify(seen));
  });
});
