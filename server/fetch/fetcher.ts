/**
 * Downloads one image from an untrusted origin, within hard limits. Thin I/O over got.
 *
 * Where the address policy is checked (allowPrivateNetworks false), three times over:
 * - before every request, redirect hops included (got's beforeRequest hook): scheme,
 *   credentials, and an IP-literal host against netPolicy;
 * - inside the socket's DNS lookup (got's `dnsLookup`, used by net.connect): every
 *   address a name resolves to, against netPolicy, so DNS rebinding is covered;
 * - request-filtering-agent on the same address, refusing anything ipaddr.js does not
 *   call `unicast` (stricter than netPolicy: it also refuses NAT64 and 6to4 of public
 *   addresses, which matters on a DNS64 network).
 *
 * The type comes from the bytes only, and nothing half-received is ever returned.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import got, { RequestError, TimeoutError, type Request, type Response } from 'got';
import { RequestFilteringHttpAgent, RequestFilteringHttpsAgent } from 'request-filtering-agent';
import { ImageproxyError, isImageproxyError, type ErrorCode } from '../errors.js';
import { connectRefusal, parseAllowList, type AddressAllowList } from './netPolicy.js';
import { inspectImage, pixelCount, type ImageInfo } from '../images/sniff.js';

export interface FetchLimits {
  /** Largest body accepted, counted after decompression. */
  maxBytes: number;
  /** Largest width × height × frames accepted. */
  maxPixels: number;
  /** DNS lookup, TCP connect and TLS handshake, each. */
  connectTimeoutMs: number;
  /** The whole fetch, redirects and body included. */
  totalTimeoutMs: number;
  maxRedirects: number;
}

export interface FetchOptions {
  limits: FetchLimits;
  /** True only for tests and trusted intranets: turns the address policy off. */
  allowPrivateNetworks: boolean;
  userAgent: string;
  /**
   * Addresses (exact, or CIDR) allowed although the policy blocks them, for an origin
   * on a network the operator trusts. @default [] (none)
   */
  allowedAddresses?: readonly string[];
}

/** The image as inspectImage read it (format, width, height, frames), and its bytes. */
export interface FetchedImage extends ImageInfo {
  bytes: Buffer;
  originContentType: string | undefined;
  finalUrl: string;
}

export interface Fetcher {
  fetchImage(url: URL, signal?: AbortSignal): Promise<FetchedImage>;
  /** Closes the kept-alive connections (shutdown, tests). */
  close(): void;
}

/** What we ask for; the origin's answer is judged by its bytes anyway. */
const ACCEPT = 'image/avif,image/webp,image/*';

const ALLOWED_PROTOCOLS = new Set(['http:', 'https:']);

/** Public messages: fixed text, never anything from the URL or the origin. */
const PUBLIC_MESSAGE = {
  blocked_destination: 'destination not allowed',
  origin_status: 'origin answered with an error',
  origin_unreachable: 'origin unreachable',
  origin_timeout: 'origin timed out',
  origin_too_large: 'image too large',
  not_an_image: 'not an image',
  too_many_pixels: 'image has too many pixels',
  too_many_redirects: 'too many redirects',
} as const satisfies Partial<Record<ErrorCode, string>>;

type FetchErrorCode = keyof typeof PUBLIC_MESSAGE;

function fetchError(code: FetchErrorCode, detail: string, cause?: unknown): ImageproxyError {
  return new ImageproxyError(code, PUBLIC_MESSAGE[code], { detail, cause });
}

/** Scheme and credentials always; an IP-literal host too when the policy is on. */
function checkUrl(url: URL, allowList: AddressAllowList | null): void {
  if (!ALLOWED_PROTOCOLS.has(url.protocol)) {
    throw fetchError('blocked_destination', `scheme ${url.protocol} is not http or https`);
  }
  if (url.username !== '' || url.password !== '') {
    throw fetchError('blocked_destination', 'URL carries credentials');
  }
  if (allowList === null) return;
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (isIP(host) === 0) return; // a name: checked after DNS, in guardedLookup
  const refusal = connectRefusal(host, allowList);
  if (refusal !== null) throw fetchError('blocked_destination', refusal);
}

/**
 * dns.lookup that refuses a name if any address it resolves to is blocked (a name
 * mixing public and private records is an attack, not a fallback).
 */
function guardedLookup(allowList: AddressAllowList): LookupFunction {
  return (hostname, lookupOptions, callback) => {
    dnsLookup(hostname, { ...lookupOptions, all: true }, (error, addresses: LookupAddress[]) => {
      if (error !== null) {
        callback(error, '');
        return;
      }
      for (const { address } of addresses) {
        const refusal = connectRefusal(address, allowList);
        if (refusal !== null) {
          callback(fetchError('blocked_destination', `${hostname} resolved to ${refusal}`), '');
          return;
        }
      }
      const [first] = addresses;
      if (lookupOptions.all === true) callback(null, addresses);
      else if (first === undefined) callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), '');
      else callback(null, first.address, first.family);
    });
  };
}

interface Agents {
  http: http.Agent;
  https: https.Agent;
}

/** keepAlive false: the agents of a retry, whose request must go out on a new connection. */
function createAgents(options: FetchOptions, keepAlive: boolean): Agents {
  const shared = { keepAlive };
  if (options.allowPrivateNetworks) {
    return { http: new http.Agent(shared), https: new https.Agent(shared) };
  }
  const filtering = {
    ...shared,
    allowPrivateIPAddress: false,
    allowMetaIPAddress: false,
    allowIPAddressList: [...(options.allowedAddresses ?? [])],
  };
  return { http: new RequestFilteringHttpAgent(filtering), https: new RequestFilteringHttpsAgent(filtering) };
}

function findImageproxyError(error: unknown): ImageproxyError | undefined {
  for (let current = error; current instanceof Error; current = current.cause) {
    if (isImageproxyError(current)) return current;
  }
  return undefined;
}

/** request-filtering-agent refuses with a plain Error worded like this. */
function isAgentRefusal(error: RequestError): boolean {
  return error.cause instanceof Error && /^DNS lookup .* is not allowed/.test(error.cause.message);
}

/** got's failures in our codes; `detail` keeps got's code and message for the log. */
function toFetchError(error: unknown, signal: AbortSignal | undefined): unknown {
  const ours = findImageproxyError(error);
  if (ours !== undefined) return ours;
  if (signal?.aborted === true && !(error instanceof TimeoutError)) return signal.reason; // the caller gave up
  if (!(error instanceof RequestError)) return error;
  const detail = `${error.code}: ${error.message}`;
  if (isAgentRefusal(error)) return fetchError('blocked_destination', detail, error);
  if (error instanceof TimeoutError) {
    // no `event`: the whole-fetch deadline, not one of got's per-hop phases
    const phase = typeof error.event === 'string' ? error.event : 'total';
    return fetchError('origin_timeout', `${phase} timeout: ${error.message}`, error);
  }
  if (error.code === 'ERR_UNSUPPORTED_PROTOCOL') return fetchError('blocked_destination', detail, error); // file: etc. on a redirect
  if (error.code === 'ERR_TOO_MANY_REDIRECTS') return fetchError('too_many_redirects', detail, error);
  // refused, reset, DNS failure, TLS failure, body shorter than Content-Length, bad gzip
  return fetchError('origin_unreachable', detail, error);
}

/**
 * Connection failures that mean a kept-alive socket was already closing when it was
 * reused: the origin closed it while idle and the request met the close.
 */
const STALE_SOCKET_CODES: ReadonlySet<string> = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

/**
 * Whether a failed request may be sent once more on a new connection: it failed on a
 * reused socket before any byte of a response, the caller has not given up, and it is
 * not a timeout (the origin is slow, not closing). GET is idempotent, and nothing was
 * received, so the retry cannot duplicate or mix anything.
 */
function isStaleSocketFailure(error: unknown, attempt: { reusedSocket: boolean; responded: boolean }, signal: AbortSignal | undefined): boolean {
  if (!attempt.reusedSocket || attempt.responded || signal?.aborted === true) return false;
  if (!(error instanceof RequestError) || error instanceof TimeoutError) return false;
  return STALE_SOCKET_CODES.has(error.code);
}

function waitForResponse(stream: Request): Promise<Response> {
  return new Promise((resolve, reject) => {
    stream.once('response', resolve);
    stream.once('error', reject);
  });
}

function declaredLength(response: Response): number | undefined {
  const header = response.headers['content-length'];
  return header !== undefined && /^\d+$/.test(header) ? Number(header) : undefined;
}

/** The status and headers are acceptable; otherwise throws before the body is read. */
function checkResponse(response: Response, limits: FetchLimits): void {
  if (response.statusCode !== 200) {
    // A status code is a number, not untrusted text: the message names it, in a fixed form.
    throw new ImageproxyError('origin_status', `origin answered ${Number(response.statusCode)}`, {
      detail: `origin answered ${response.statusCode}`,
    });
  }
  const length = declaredLength(response);
  if (length !== undefined && length > limits.maxBytes) {
    throw fetchError('origin_too_large', `Content-Length ${length} > maxBytes ${limits.maxBytes}`);
  }
}

/** The decoded body, refused as soon as it grows past maxBytes. */
async function readCapped(stream: Request, response: Response, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let received = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    received += chunk.length;
    if (received > maxBytes) {
      throw fetchError('origin_too_large', `body passed maxBytes ${maxBytes} (${received} bytes, decoded)`);
    }
    chunks.push(chunk);
  }
  // got's strictContentLength already refuses this; kept so a got change cannot slip it
  // by. (On a decompressed body got drops Content-Length, so this is identity only.)
  const length = declaredLength(response);
  if (length !== undefined && length !== received) {
    throw fetchError('origin_unreachable', `body ended at ${received} of ${length} bytes`);
  }
  return Buffer.concat(chunks, received);
}

function describeStart(bytes: Buffer): string {
  return JSON.stringify(bytes.subarray(0, 16).toString('latin1'));
}

function toFetchedImage(bytes: Buffer, response: Response, limits: FetchLimits): FetchedImage {
  const originContentType = response.headers['content-type'];
  const info = inspectImage(bytes);
  if (info === null) {
    throw fetchError(
      'not_an_image',
      `${bytes.length} bytes starting ${describeStart(bytes)}, origin said ${originContentType ?? 'no type'}`,
    );
  }
  const pixels = pixelCount(info);
  if (pixels > limits.maxPixels) {
    throw fetchError(
      'too_many_pixels',
      `${info.format} ${info.width}×${info.height}×${info.frames} frames = ${pixels} > maxPixels ${limits.maxPixels}`,
    );
  }
  return { bytes, ...info, originContentType, finalUrl: response.url };
}

/**
 * The whole fetch's deadline, cleared the moment the fetch ends. Not AbortSignal.timeout:
 * its timer stays armed for the full limit (minutes) after a fetch that took
 * milliseconds, so a busy server would carry one armed timer and signal per miss of the
 * last minutes in its heap.
 */
function wholeFetchDeadline(ms: number): { signal: AbortSignal; clear: () => void } {
  const controller = new AbortController();
  // Named TimeoutError as AbortSignal.timeout's reason is: got reports it as its TimeoutError.
  const timer = setTimeout(() => controller.abort(new DOMException(`fetch took longer than ${ms} ms`, 'TimeoutError')), ms);
  timer.unref(); // as AbortSignal.timeout's: a fetch's deadline never keeps a stopping process alive
  return { signal: controller.signal, clear: () => clearTimeout(timer) };
}

export function createFetcher(options: FetchOptions): Fetcher {
  const { limits } = options;
  const allowList = options.allowPrivateNetworks ? null : parseAllowList(options.allowedAddresses ?? []);
  const agent = createAgents(options, true);
  const freshAgent = createAgents(options, false);
  const client = got.extend({
    agent,
    ...(allowList === null ? {} : { dnsLookup: guardedLookup(allowList) }),
    headers: { 'user-agent': options.userAgent, accept: ACCEPT },
    cookieJar: undefined, // no cookies kept or sent, ever
    decompress: true, // and the cap counts decoded bytes
    strictContentLength: true,
    enableUnixSockets: false,
    followRedirect: true,
    maxRedirects: limits.maxRedirects,
    retry: { limit: 0 },
    throwHttpErrors: false,
    // got's `request` timeout restarts on every redirect hop; the whole-fetch deadline
    // is the signal given in fetchImage (wholeFetchDeadline; got reports it as a TimeoutError).
    timeout: {
      lookup: limits.connectTimeoutMs,
      connect: limits.connectTimeoutMs,
      secureConnect: limits.connectTimeoutMs,
      request: limits.totalTimeoutMs,
    },
    hooks: {
      beforeRequest: [
        (requestOptions) => {
          // every hop, the first and each redirect
          const { url } = requestOptions;
          checkUrl(url instanceof URL ? url : new URL(String(url)), allowList);
        },
      ],
    },
  });

  /** One attempt; `attempt` tells afterwards whether its socket was reused and whether a response came. */
  async function fetchOnce(
    url: URL,
    signal: AbortSignal,
    agents: Agents,
    attempt: { reusedSocket: boolean; responded: boolean },
  ): Promise<FetchedImage> {
    const stream = client.stream(url, { signal, agent: agents });
    // Every hop's request (redirects too); the last one is the one that can fail.
    stream.on('request', (request: http.ClientRequest) => {
      attempt.reusedSocket = request.reusedSocket;
    });
    stream.on('redirect', () => {
      attempt.responded = true;
    });
    try {
      const response = await waitForResponse(stream);
      attempt.responded = true;
      checkResponse(response, limits);
      const bytes = await readCapped(stream, response, limits.maxBytes);
      return toFetchedImage(bytes, response, limits);
    } finally {
      stream.destroy(); // no-op after a complete body; frees the socket otherwise
    }
  }

  async function fetchImage(url: URL, signal?: AbortSignal): Promise<FetchedImage> {
    checkUrl(url, allowList); // fail fast, before got is involved
    const deadline = wholeFetchDeadline(limits.totalTimeoutMs);
    const combined = signal === undefined ? deadline.signal : AbortSignal.any([signal, deadline.signal]);
    const attempt = { reusedSocket: false, responded: false };
    try {
      try {
        return await fetchOnce(url, combined, agent, attempt);
      } catch (error) {
        if (!isStaleSocketFailure(error, attempt, combined)) throw toFetchError(error, signal);
      }
      // An origin closing idle kept-alive sockets races our reuse of them: once more, on a
      // connection of its own, within the same deadline.
      try {
        return await fetchOnce(url, combined, freshAgent, { reusedSocket: false, responded: false });
      } catch (error) {
        throw toFetchError(error, signal);
      }
    } finally {
      deadline.clear();
    }
  }

  return {
    fetchImage,
    close() {
      for (const agents of [agent, freshAgent]) {
        agents.http.destroy();
        agents.https.destroy();
      }
    },
  };
}
