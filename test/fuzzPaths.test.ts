/**
 * 10 000 generated request paths (seeded: the same run every time) through real nginx in
 * front of the app (accel), and the same paths straight to the app. Each path is a link
 * of the grammar gone wrong: signed with a wrong secret and then mutated (segment
 * counts, percent-escapes valid and invalid, NUL, overlong segments, unicode, `..`,
 * `//`, bad base64, query strings, huge sizes, `/proxy` variants), or a real signed link
 * with one character flipped outside its size segment (the size is not signed, so a
 * flip there could make another valid link), plus a sample of real links and broken
 * ones with methods other than GET and HEAD.
 *
 * Not one of them is a valid GET or HEAD link, so: no answer is a 5xx or a success,
 * every answer is a text error with X-Imageproxy-Error, nothing is written to the tree,
 * and the loopback origin every link points at sees no request at all.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { Agent } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildConfig } from '../server/config/config.js';
import { startServer, type RunningServer } from '../server/http/server.js';
import { createLogger } from '../server/observe/log.js';
import { lightRequest, listTree, mapConcurrently, type LightAnswer } from './faultHarness.js';
import { makeTempRoot, removeTempRoot, signedPath } from './helpers.js';
import { freePort, nginxMissing, renderStandaloneWithCli, startNginx, type RunningNginx } from './nginxHarness.js';
import { startOrigin, type Origin } from './origin.js';
import { seededRandom } from './seededRandom.js';

const SECRET = 'fuzz-secret';
const WRONG_SECRET = 'not-the-fuzz-secret';
const PATHS = 10_000;
const CONCURRENCY = 32;
const SEED = 0x1badf00d;
const missing = nginxMissing();
if (missing !== null) console.log(`# fuzzed paths skipped: ${missing}`);

interface FuzzCase {
  method: string;
  path: string;
  kind: string;
}

const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const SIZES = ['full', '150x', 'x200', '250x250', '500x', '150x999', '', 'x', '0x0', '99999999999999999999x', '150x150x150', '-150x', '1e3x', '0150x', 'FULL', '%31%35%30x'];
const OTHER_METHODS = ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'PROPFIND'];
const FIXED_PATHS = ['/', '//', '/i', '/i/', '/i/full', '/i/full/', '/metrics', '/Metrics', '/metrics/', '/readyz', '/favicon.ico', '/_imageproxy/i/a/b/x.jpg', '/_imageproxy/../etc/passwd', '/%2e%2e/%2e%2e/etc/passwd', '/i/full/../../etc/passwd', '/.imageproxy/blocklist.json', '/i/A/A/AAAA.jpg', '/proxy', '/i/full/x/y/proxy/'];

function generateCases(imageUrls: readonly string[]): FuzzCase[] {
  const random = seededRandom(SEED);
  const below = (count: number): number => Math.floor(random() * count);
  const pick = <T>(items: readonly T[]): T => items[below(items.length)] as T;
  const atMs = Date.now();
  const realLink = (): string =>
    signedPath({ secret: SECRET, imageUrl: pick(imageUrls), atMs, size: pick(['full', '150x', 'x200', '250x250']), proxy: random() < 0.15 });
  const wrongLink = (): string =>
    signedPath({ secret: WRONG_SECRET, imageUrl: pick(imageUrls), atMs, bucket: pick(['i', 'i', 'f', 't', 'x', 'old']), proxy: random() < 0.15 });
  const randomText = (length: number, alphabet = BASE64URL): string => Array.from({ length }, () => alphabet[below(alphabet.length)]).join('');
  const escape = (text: string): string => [...Buffer.from(text, 'utf8')].map((byte) => `%${byte.toString(16).padStart(2, '0').toUpperCase()}`).join('');

  /** One character of a real link changed, outside its size segment. */
  const flipped = (link: string): string => {
    const sizeStart = link.indexOf('/', 1);
    const sizeEnd = link.indexOf('/', sizeStart + 1);
    let position = below(link.length);
    while (position >= sizeStart && position < sizeEnd) position = below(link.length);
    const original = link[position] as string;
    let replacement = pick([...`${BASE64URL}/.%=+~`]);
    while (replacement === original) replacement = pick([...`${BASE64URL}/.%=+~`]);
    return link.slice(0, position) + replacement + link.slice(position + 1);
  };

  const mutations: Array<(segments: string[]) => string[]> = [
    (segments) => segments.slice(0, Math.max(1, below(segments.length))), // too few segments
    (segments) => [...segments, ...Array.from({ length: 1 + below(3) }, () => pick(['proxy', 'x', '', '..', randomText(5)]))], // too many
    (segments) => segments.map((segment, index) => (index === 1 ? pick(SIZES) : segment)), // sizes, huge numbers included
    (segments) => {
      // a character percent-escaped (decodes to the same link: still a wrong signature)
      const index = below(segments.length);
      const segment = segments[index] ?? '';
      const at = below(segment.length + 1);
      return segments.with(index, segment.slice(0, at) + escape(segment.slice(at, at + 1)) + segment.slice(at + 1));
    },
    (segments) => {
      // invalid and dangerous escapes: NUL, broken %, encoded slash and dot-dot
      const index = below(segments.length);
      const segment = segments[index] ?? '';
      const at = below(segment.length + 1);
      return segments.with(index, segment.slice(0, at) + pick(['%00', '%', '%zz', '%4', '%2F', '%2f', '%2e%2e', '%5C', '%u0041', '%C0%AF', '%FF%FE', '%0A', '%0D%0A']) + segment.slice(at));
    },
    (segments) => segments.with(below(segments.length), randomText(pick([200, 2000, 8193, 9000]))), // overlong
    (segments) => {
      // unicode: escaped UTF-8, or raw bytes above 0x7f as node:http sends them (latin1)
      const index = below(segments.length);
      const text = String.fromCodePoint(pick([0xe9, 0x2028, 0x202e, 0xfeff, 0x1f600, 0xd7ff, 0x30c6]));
      return segments.with(index, `${segments[index] ?? ''}${random() < 0.5 ? escape(text) : pick(['\u00e9', '\u00ff', '\u0080', '\u00a0'])}`);
    },
    (segments) => {
      const at = below(segments.length + 1);
      return [...segments.slice(0, at), pick(['..', '.', '', '...', '%2e%2e']), ...segments.slice(at)]; // `..`, `.`, `//`
    },
    (segments) => segments.with(Math.min(3, segments.length - 1), pick(['', '====', 'a+b/c', '!!!!', 'aHR0cDovL', 'aHR0cDovLzEyNy4wLjAuMTo', 'Zm9v', 'amF2YXNjcmlwdDphbGVydCgxKQ', randomText(43)])), // bad base64 and URLs that are not http
    (segments) => segments.with(Math.min(2, segments.length - 1), randomText(16)), // valid-looking signature, wrong
    (segments) => segments.with(0, pick(['I', 'ii', '', '.', '..', '%69', 'metrics', '_imageproxy', '.imageproxy', randomText(3)])), // buckets
    (segments) => [...segments.slice(0, -1), `${segments.at(-1) ?? ''}${pick(['/proxy', '/PROXY', '/proxy/', '/proxy/proxy', 'proxy', '/proxyx', '/%70roxy'])}`],
  ];

  const cases: FuzzCase[] = [];
  for (const path of FIXED_PATHS) cases.push({ method: 'GET', path, kind: 'fixed' });
  while (cases.length < PATHS) {
    const roll = random();
    if (roll < 0.25) {
      cases.push({ method: pick(['GET', 'GET', 'HEAD']), path: flipped(realLink()), kind: 'flipped' });
      continue;
    }
    if (roll < 0.3) {
      // Methods other than GET and HEAD, on real links too: refused before anything is fetched.
      cases.push({ method: pick(OTHER_METHODS), path: random() < 0.5 ? realLink() : wrongLink(), kind: 'method' });
      continue;
    }
    let segments = wrongLink().slice(1).split('/');
    const rounds = 1 + below(3);
    for (let round = 0; round < rounds; round += 1) segments = pick(mutations)(segments);
    let path = `/${segments.join('/')}`;
    if (random() < 0.1) path = `/${path}`;
    if (random() < 0.15) path += pick(['?', '?a=b', '?size=full&x=%00', `?${randomText(300)}`, '?../../etc/passwd', '#frag', '?%zz']);
    // node:http refuses spaces and controls in a path; they go escaped.
    cases.push({ method: pick(['GET', 'GET', 'GET', 'HEAD']), path: path.replace(/[\u0000-\u0020\u007f]/g, (char) => escape(char)), kind: 'mutated' });
  }
  return cases;
}

/**
 * Paths that are not well-formed HTTP: a request target not starting with `/`, raw bytes
 * above 0x7f (RFC 3986 wants them escaped; browsers always do) or a request line past
 * node's 16 KB header limit. nginx answers the first itself; the others it
 * passes on as they are, and node's own parser refuses them before
 * the app sees them, with a bare status (no text, no X-Imageproxy-Error).
 */
function isMalformedHttp(path: string): boolean {
  return !path.startsWith('/') || /[\u0080-\u00ff]/.test(path) || path.length > 16_000;
}

interface Tally {
  byStatus: Map<number, number>;
  /** Answers that are not a 4xx, or no answer at all. */
  notRefusals: string[];
  /** 4xx answers that are not text with X-Imageproxy-Error, well-formed requests only. */
  bareRefusals: string[];
  /** The same, for requests that are not well-formed HTTP. */
  bareMalformed: string[];
}

/** A refusal as the project makes them: a 4xx, text, with its code in X-Imageproxy-Error. */
function check(fuzzCase: FuzzCase, answer: LightAnswer | Error, tally: Tally): void {
  const name = `${fuzzCase.method} ${JSON.stringify(fuzzCase.path.slice(0, 160))} (${fuzzCase.kind})`;
  if (answer instanceof Error) {
    tally.notRefusals.push(`${name}: ${answer.message}`);
    return;
  }
  tally.byStatus.set(answer.status, (tally.byStatus.get(answer.status) ?? 0) + 1);
  if (answer.status < 400 || answer.status >= 500) {
    tally.notRefusals.push(`${name}: status ${answer.status}`);
    return;
  }
  const contentType = String(answer.headers['content-type'] ?? '');
  const code = answer.headers['x-imageproxy-error'];
  let bare: string | null = null;
  if (!contentType.startsWith('text/plain')) bare = `${name}: ${answer.status} with Content-Type ${JSON.stringify(contentType)}`;
  else if (typeof code !== 'string' || code === '') bare = `${name}: ${answer.status} without X-Imageproxy-Error`;
  else if (fuzzCase.method !== 'HEAD' && !answer.bodyStart.startsWith(`${code}: `)) bare = `${name}: ${answer.status} body ${JSON.stringify(answer.bodyStart)}`;
  if (bare !== null) (isMalformedHttp(fuzzCase.path) ? tally.bareMalformed : tally.bareRefusals).push(bare);
}

describe('fuzzed paths through nginx and the app', { skip: missing ?? false }, () => {
  let work = '';
  let root = '';
  let origin: Origin;
  let app: RunningServer | null = null;
  let nginx: RunningNginx | null = null;
  let nginxUrl = '';
  let cases: FuzzCase[] = [];
  let treeBefore: string[] = [];

  before(async () => {
    work = await makeTempRoot('imageproxy-fuzz-');
    root = join(work, 'tree');
    origin = await startOrigin((_request, response) => response.writeHead(404).end('the fuzz origin serves nothing'));
    const nginxPort = await freePort();
    const config = buildConfig({
      flags: {
        listen: '127.0.0.1:0',
        admin: { listen: null },
        root,
        secrets: [SECRET],
        delivery: 'accel',
        allowPrivateNetworks: true,
        logLevel: 'silent',
        statsRefreshSeconds: 0,
        nginx: { listen: `127.0.0.1:${nginxPort}`, internalPrefix: '/_imageproxy' },
      },
    });
    app = await startServer({ config, secrets: config.secrets, logger: createLogger('silent') });
    await app.firstHeal;
    const configPath = join(work, 'config.json');
    await writeFile(configPath, JSON.stringify({ ...config, listen: new URL(app.url).host, secrets: [SECRET] }), { mode: 0o600 });
    const prefix = join(work, 'nginx');
    nginx = await startNginx(prefix, await renderStandaloneWithCli(configPath, prefix), nginxPort);
    nginxUrl = `http://127.0.0.1:${nginxPort}`;
    const imageUrls = ['/a.jpg', '/b.png', '/photo?id=1', '/%E2%82%AC.gif', '/'].map((path) => origin.url(path).href);
    cases = generateCases(imageUrls);
    treeBefore = await listTree(root);
  });

  after(async () => {
    await nginx?.stop();
    await app?.close();
    await origin?.close();
    await removeTempRoot(work);
  });

  const tallies = new Map<'nginx' | 'app', Tally>();

  for (const target of ['nginx', 'app'] as const) {
    it(`${PATHS} paths to ${target === 'nginx' ? 'nginx in front of the app' : 'the app directly'}: never a 5xx, text refusals, nothing fetched, nothing written`, async (t) => {
      const base = target === 'nginx' ? nginxUrl : (app?.url ?? '');
      const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
      const tally: Tally = { byStatus: new Map(), notRefusals: [], bareRefusals: [], bareMalformed: [] };
      tallies.set(target, tally);
      const started = performance.now();
      try {
        await mapConcurrently(cases, CONCURRENCY, async (fuzzCase) => {
          const answer = await lightRequest(base, fuzzCase.path, agent, { method: fuzzCase.method, timeoutMs: 20_000 }).catch((error: unknown) => error as Error);
          check(fuzzCase, answer, tally);
        });
      } finally {
        agent.destroy();
      }
      const kinds = new Map<string, number>();
      for (const fuzzCase of cases) kinds.set(fuzzCase.kind, (kinds.get(fuzzCase.kind) ?? 0) + 1);
      const malformed = cases.filter((fuzzCase) => isMalformedHttp(fuzzCase.path)).length;
      t.diagnostic(
        `${target}: ${cases.length} paths (${[...kinds].map(([kind, count]) => `${kind} ${count}`).join(', ')}; not well-formed HTTP ${malformed}) ` +
          `in ${((performance.now() - started) / 1000).toFixed(1)} s; by status ${[...tally.byStatus].sort(([a], [b]) => a - b).map(([status, count]) => `${status}: ${count}`).join(', ')}`,
      );
      assert.deepEqual(tally.notRefusals.slice(0, 20), [], `${tally.notRefusals.length} answers were not 4xx refusals`);
      assert.deepEqual(tally.bareRefusals.slice(0, 20), [], `${tally.bareRefusals.length} refusals were not text with X-Imageproxy-Error`);
      assert.equal(origin.requests.length, 0, 'the origin saw no request');
      assert.deepEqual(await listTree(root), treeBefore, 'nothing was written to the tree');
    });
  }

  // Node's parser refuses these before any route; the server's clientError handler
  // (server/http/clientError.ts) answers them as text with the project's headers.
  it('requests that are not well-formed HTTP are refused as text with X-Imageproxy-Error too', () => {
    const bare = [...tallies].flatMap(([target, tally]) => tally.bareMalformed.map((line) => `${target}: ${line}`));
    assert.deepEqual(bare.slice(0, 10), [], `${bare.length} bare refusals`);
  });
});
