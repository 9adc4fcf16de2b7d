/**
 * Shared test helpers: temp roots, the signature vectors, signed paths, an in-process
 * app on 127.0.0.1 port 0, and `until`, the one way a test waits. Nothing here talks to
 * anything beyond loopback.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { buildConfig, type Config, type ConfigLayer } from '../server/config/config.js';
import { createApp } from '../server/http/app.js';
import { startServer, type RunningServer } from '../server/http/server.js';
import { createLogger } from '../server/observe/log.js';
import { encodeImageUrl, formatLink } from '../server/contract/link.js';
import { signLink } from '../server/contract/signing.js';
import { ImageproxyError } from '../server/errors.js';
import { variantLabelOf, type ImageService } from '../server/service/imageService.js';
import { ImageStore } from '../server/tree/store.js';
import type { WeekRule } from '../server/contract/weeks.js';

export interface Vector {
  name: string;
  secret: string;
  /** Epoch seconds, UTC. */
  at: number;
  bucket: string;
  imageUrl: string;
  /** The link's size segment. */
  size: string;
  proxy: boolean;
  legacy: boolean;
  /** Present (true) on vectors signed with the calendar-year rule: they verify only with that option. */
  calendarYearWeeks?: boolean;
  weekSuffix: string;
  path: string;
  /** Storage key (server/contract/layout.ts) and the stored file's name without extension. */
  key: string;
  fileStem: string;
}

export const VECTORS: readonly Vector[] = (
  JSON.parse(readFileSync(new URL('./vectors.json', import.meta.url), 'utf8')) as { signatures: Vector[] }
).signatures;

/** The year rule a vector was signed under: ISO unless it is marked calendarYearWeeks. */
export function ruleOf(vector: Vector): WeekRule {
  return vector.calendarYearWeeks === true ? 'calendar' : 'iso';
}

/** A fresh directory under the OS temp dir; `prefix` may start with a dot to make a hidden one. */
export function makeTempRoot(prefix = 'imageproxy-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export function removeTempRoot(root: string): Promise<void> {
  return rm(root, { recursive: true, force: true });
}

export function extUrlOf(imageUrl: string): string {
  return encodeImageUrl(imageUrl);
}

export interface LinkSpec {
  secret: string;
  imageUrl: string;
  atMs: number;
  bucket?: string;
  size?: string;
  proxy?: boolean;
  legacy?: boolean;
}

/** The path Gazelle would emit for this link (ISO week rule, no padding). */
export function signedPath(spec: LinkSpec): string {
  const bucket = spec.bucket ?? 'i';
  const proxy = spec.proxy ?? false;
  const extUrl = extUrlOf(spec.imageUrl);
  const signature = signLink(spec.secret, { bucket, extUrl, proxy }, spec.atMs, { legacy: spec.legacy ?? false });
  return formatLink({ bucket, size: spec.size ?? 'full', signature, extUrl, proxy });
}

export interface Answer {
  status: number;
  headers: Headers;
  body: Buffer;
}

/**
 * One request to a local server with node:http, body read whole. Not fetch: it adds
 * `Cache-Control: no-cache` to conditional requests and normalizes paths.
 */
export function request(
  baseUrl: string,
  path: string,
  options: { method?: string; headers?: Record<string, string> } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const { hostname, port } = new URL(baseUrl);
    const outgoing = httpRequest({ hostname, port, path, method: options.method ?? 'GET', headers: options.headers }, (incoming) => {
      const chunks: Buffer[] = [];
      incoming.on('data', (chunk: Buffer) => chunks.push(chunk));
      incoming.on('error', reject);
      incoming.on('end', () => {
        const headers = new Headers();
        for (const [name, value] of Object.entries(incoming.headers)) {
          for (const item of Array.isArray(value) ? value : [value ?? '']) headers.append(name, item);
        }
        resolve({ status: incoming.statusCode ?? 0, headers, body: Buffer.concat(chunks) });
      });
    });
    outgoing.on('error', reject);
    outgoing.end();
  });
}

/**
 * What an answer's body can show in an assertion's output: the text of a short text
 * answer (an error's), else only its length and type, never an image's bytes.
 */
export function shortBody(body: Buffer, contentType: string | null): string {
  if (contentType?.startsWith('text/') === true && body.length <= 500) return body.toString('utf8');
  return `${body.length} bytes of ${contentType ?? 'no content-type'}`;
}

/**
 * Fails unless `actual` holds exactly the bytes of `expected`; the message names `what`,
 * both lengths and the first offset that differs, never the bytes themselves.
 */
export function assertSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (Buffer.compare(actual, expected) === 0) return;
  let offset = 0;
  while (offset < actual.length && offset < expected.length && actual[offset] === expected[offset]) offset += 1;
  assert.fail(`${what}: ${actual.length} bytes where ${expected.length} were expected, first difference at byte ${offset}`);
}

/** Every sample of one scrape of `adminUrl`/metrics: `name{labels}` as exposed → value. */
export async function scrapeMetrics(adminUrl: string): Promise<Map<string, number>> {
  const answer = await request(adminUrl, '/metrics');
  if (answer.status !== 200) throw new Error(`/metrics answered ${answer.status}`);
  return parseSamples(answer.body.toString('utf8'));
}

/** The samples of a Prometheus text exposition (comment lines skipped): `name{labels}` → value. */
export function parseSamples(exposition: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of exposition.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    if (space > 0) samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

/**
 * An image service that only reads the tree: stored files are served, anything else is
 * `not_stored`. Tests of the HTTP contract use it so that nothing is ever fetched.
 */
export function createStoredImageService(store: ImageStore): ImageService {
  return {
    async get(request) {
      const image = await store.find(request.link.bucket, request.key, variantLabelOf(request));
      if (image === null) throw new ImageproxyError('not_stored', 'image is not stored');
      return { kind: 'stored', image, cache: 'hit' };
    },
    async close() {},
  };
}

export interface RunningApp {
  baseUrl: string;
  root: string;
  config: Config;
  store: ImageStore;
  close(): Promise<void>;
}

/** The Express app over a stored-images service, listening on 127.0.0.1:0. */
export async function startApp(options: {
  root: string;
  secrets: string[];
  /** The app's clock; tests of expiry move it. */
  now: () => number;
  config?: ConfigLayer;
}): Promise<RunningApp> {
  const config = buildConfig({ flags: { root: options.root, secrets: options.secrets, ...options.config } });
  const store = new ImageStore(options.root);
  const images = createStoredImageService(store);
  const app = createApp({
    config,
    secrets: options.secrets,
    images,
    logger: pino({ level: 'silent' }),
    now: options.now,
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    root: options.root,
    config,
    store,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await images.close();
    },
  };
}

/**
 * The whole server in-process (public and admin listeners on 127.0.0.1:0), silent, with
 * private networks allowed for the test's loopback origins; `overrides` adds or replaces keys.
 */
export function startLoopbackServer(root: string, secret: string, overrides: ConfigLayer = {}): Promise<RunningServer> {
  const config = loopbackConfig(root, secret, overrides);
  return startServer({ config, secrets: config.secrets, logger: createLogger('silent') });
}

/** The config startLoopbackServer starts with; a test reloads the server with another one of these. */
export function loopbackConfig(root: string, secret: string, overrides: ConfigLayer = {}): Config {
  return buildConfig({
    flags: {
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      root,
      secrets: [secret],
      allowPrivateNetworks: true,
      logLevel: 'silent',
      ...overrides,
    },
  });
}

export interface UntilOptions<T> {
  /** Says what is awaited; the timeout error starts with it. */
  message: string;
  /** Generous by default: a loaded 2-core machine may take seconds for what takes milliseconds. */
  timeoutMs?: number;
  intervalMs?: number;
  /** When the probe's value means done; truthiness by default. */
  done?: (value: T) => boolean;
}

/** Long enough for a machine running the suite beside CPU hogs; a condition that holds returns at once. */
export const UNTIL_TIMEOUT_MS = 30_000;

/**
 * Polls `probe` (sync or async) until its value is done, and returns that value. A probe
 * that throws counts as not done yet (a file not written yet, a port not open yet). Past
 * the deadline it fails with the message and a short description of the last value or
 * error seen, never a body. The one way a test waits: no fixed sleeps standing in for a
 * condition.
 */
export async function until<T>(probe: () => T | Promise<T>, options: UntilOptions<T> & { done: (value: T) => boolean }): Promise<T>;
/** Without `done`, a truthy value is done: the value returned is never null, undefined or false. */
export async function until<T>(probe: () => T | Promise<T>, options: Omit<UntilOptions<T>, 'done'>): Promise<Exclude<T, null | undefined | false>>;
export async function until<T>(probe: () => T | Promise<T>, options: UntilOptions<T>): Promise<T> {
  const timeoutMs = options.timeoutMs ?? UNTIL_TIMEOUT_MS;
  const intervalMs = options.intervalMs ?? 20;
  const done = options.done ?? ((value: T) => Boolean(value));
  const deadline = Date.now() + timeoutMs;
  let lastSeen: string;
  for (;;) {
    try {
      const value = await probe();
      if (done(value)) return value;
      lastSeen = describeBriefly(value);
    } catch (error) {
      lastSeen = `error ${describeBriefly(error instanceof Error ? error.message : error)}`;
    }
    if (Date.now() >= deadline) throw new Error(`${options.message}: not within ${timeoutMs} ms; last seen: ${lastSeen}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** A value for a failure message: bytes as their length, anything else cut to one short line. */
export function describeBriefly(value: unknown, maxChars = 200): string {
  if (value instanceof Uint8Array) return `${value.length} bytes`;
  let text: string;
  try {
    const replaceBytes = (_key: string, item: unknown): unknown => (isBytes(item) ? `${byteLength(item)} bytes` : item);
    text = JSON.stringify(value, replaceBytes) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > maxChars ? `${text.slice(0, maxChars)}… (${text.length} chars)` : text;
}

/** A Buffer as JSON.stringify hands it to a replacer (toJSON has already run), or any byte array. */
function isBytes(item: unknown): item is Uint8Array | { type: 'Buffer'; data: number[] } {
  if (item instanceof Uint8Array) return true;
  if (typeof item !== 'object' || item === null) return false;
  const serialized = item as { type?: unknown; data?: unknown };
  return serialized.type === 'Buffer' && Array.isArray(serialized.data);
}

function byteLength(item: Uint8Array | { type: 'Buffer'; data: number[] }): number {
  return item instanceof Uint8Array ? item.length : item.data.length;
}
