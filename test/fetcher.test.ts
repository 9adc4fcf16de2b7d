// Every origin here is a node:http server on a loopback address, started on port 0
// and closed afterwards. No test names a host other than `localhost` or a loopback
// address, so nothing (DNS included) can leave the machine even if the code is broken.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import sharp from 'sharp';
import { isImageproxyError, type ErrorCode } from '../server/errors.js';
import {
  createFetcher,
  type FetchLimits,
  type FetchOptions,
  type FetchedImage,
  type Fetcher,
} from '../server/fetch/fetcher.js';
import { until } from './helpers.js';
import { startOrigin, type Handler, type Origin } from './origin.js';

/** A deadline for a hung test, not a measure: a loaded machine may take seconds for what takes milliseconds. */
const TEST_TIMEOUT_MS = 60_000;

/**
 * Generous timeouts: a fetch that should succeed must not fail on a loaded machine. The
 * timeout cases set SHORT_TIMEOUT_MS themselves and are judged by the error code, never
 * by how long they took.
 */
const LIMITS: FetchLimits = {
  maxBytes: 64 * 1024,
  maxPixels: 1_000_000,
  connectTimeoutMs: 10_000,
  totalTimeoutMs: 10_000,
  maxRedirects: 3,
};
const SHORT_TIMEOUT_MS = 300;

const USER_AGENT = 'imageproxy-test/1 (+https://example.invalid/imageproxy)';

function fetcherOptions(overrides: Partial<FetchOptions> = {}): FetchOptions {
  return { limits: LIMITS, allowPrivateNetworks: true, userAgent: USER_AGENT, ...overrides };
}

// ---------------------------------------------------------------------------------
/** The ImageproxyError code the promise rejects with (fails on anything else). */
async function rejectionCode(promise: Promise<unknown>): Promise<ErrorCode> {
  try {
    await promise;
  } catch (error) {
    assert.ok(isImageproxyError(error), `not an ImageproxyError: ${String(error)}`);
    assert.ok(error.detail, 'every fetch error says its real cause');
    return error.code;
  }
  assert.fail('expected a rejection');
}

/** Runs `use` with a fresh fetcher, then closes it and the origins the test started. */
async function withFetcher<T>(
  overrides: Partial<FetchOptions>,
  use: (fetcher: Fetcher) => Promise<T>,
  ...origins: Origin[]
): Promise<T> {
  const fetcher = createFetcher(fetcherOptions(overrides));
  try {
    return await use(fetcher);
  } finally {
    fetcher.close();
    await Promise.all(origins.map((origin) => origin.close()));
  }
}

/** Origins shared by a suite's tests: started before them, closed after. */
function suiteOrigins<K extends string>(handler: Handler, hosts: Record<K, string>): Record<K, Origin> {
  const origins = {} as Record<K, Origin>;
  before(async () => {
    for (const key of Object.keys(hosts) as K[]) origins[key] = await startOrigin(handler, hosts[key]);
  });
  after(() => Promise.all(Object.values<Origin>(origins).map((origin) => origin.close())));
  return origins;
}

// ---------------------------------------------------------------------------------
// Bodies

const png = await sharp({ create: { width: 40, height: 30, channels: 3, background: '#3a6' } }).png().toBuffer();

function u32(value: number): Buffer {
  const buffer = Buffer.alloc(4);
  buffer.writeUInt32BE(value);
  return buffer;
}

/** PNG signature and an IHDR declaring 60000×60000 (CRC not checked by a sniffer). */
const hugePngHeader = Buffer.concat([
  png.subarray(0, 16),
  u32(60000),
  u32(60000),
  png.subarray(24, 64),
]);

const html = Buffer.from('<!DOCTYPE html><html><script>alert(1)</script></html>');
const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>');

function send(status: number, body: Buffer, headers: http.OutgoingHttpHeaders = {}): Handler {
  return (_request, response) => {
    response.writeHead(status, { 'content-length': body.length, ...headers });
    response.end(body);
  };
}

/** Writes `chunk` for as long as the client reads (stops when the socket closes). */
function endless(chunk: Buffer, headers: http.OutgoingHttpHeaders = {}): Handler {
  return (_request, response) => {
    response.writeHead(200, { 'content-type': 'image/png', ...headers });
    const pump = (): void => {
      while (!response.destroyed && response.write(chunk)) {
        // until the socket buffer is full
      }
    };
    response.on('drain', pump);
    pump();
  };
}

function redirect(location: (request: http.IncomingMessage, origin: Origin) => string): Handler {
  return (request, response, origin) => {
    response.writeHead(302, { location: location(request, origin), 'content-length': 0 });
    response.end();
  };
}

// ---------------------------------------------------------------------------------

interface OriginCase {
  name: string;
  handler: Handler;
  limits?: Partial<FetchLimits>;
  /** The error code, or null for a fetched image. */
  code: ErrorCode | null;
  check?: (result: { image: FetchedImage | null; origin: Origin }) => void;
}

const ORIGIN_CASES: OriginCase[] = [
  {
    name: 'PNG served as application/octet-stream is accepted by its bytes',
    handler: send(200, png, { 'content-type': 'application/octet-stream' }),
    code: null,
    check: ({ image }) => {
      assert.ok(image);
      assert.ok(image.bytes.equals(png), `${image.bytes.length} bytes, not the origin's ${png.length}`);
      assert.equal(image.format, 'png');
      assert.deepEqual([image.width, image.height, image.frames], [40, 30, 1]);
      assert.equal(image.originContentType, 'application/octet-stream');
    },
  },
  {
    name: 'body of exactly maxBytes is accepted',
    handler: send(200, Buffer.concat([png, Buffer.alloc(LIMITS.maxBytes - png.length)])),
    code: null,
    check: ({ image }) => assert.equal(image?.bytes.length, LIMITS.maxBytes),
  },
  {
    name: 'gzip-encoded body is decoded',
    handler: send(200, gzipSync(png), { 'content-encoding': 'gzip', 'content-type': 'image/png' }),
    code: null,
    check: ({ image }) => assert.ok(image?.bytes.equals(png), `${image?.bytes.length} bytes, not the origin's ${png.length}`),
  },
  {
    name: 'endless body',
    handler: endless(Buffer.alloc(16 * 1024, 1)),
    code: 'origin_too_large',
  },
  {
    name: 'body larger than maxBytes, no Content-Length',
    handler: (_request, response) => {
      response.writeHead(200, { 'content-type': 'image/png' });
      response.end(Buffer.concat([png, Buffer.alloc(LIMITS.maxBytes)]));
    },
    code: 'origin_too_large',
  },
  {
    name: 'Content-Length larger than maxBytes is refused before the body',
    handler: (_request, response) => {
      response.writeHead(200, { 'content-length': 10 * LIMITS.maxBytes, 'content-type': 'image/png' });
      response.write(png); // then hangs: only the header can have been judged (else origin_timeout)
    },
    code: 'origin_too_large',
  },
  {
    name: 'gzip bomb: small on the wire, decoded past maxBytes',
    handler: send(200, gzipSync(Buffer.concat([png, Buffer.alloc(50 * LIMITS.maxBytes)])), { 'content-encoding': 'gzip' }),
    code: 'origin_too_large',
    check: ({ origin }) => assert.equal(origin.requests.length, 1),
  },
  {
    name: 'gzip body whose compressed size fits but decoded size does not (endless gzip)',
    handler: (_request, response) => {
      response.writeHead(200, { 'content-encoding': 'gzip' });
      response.end(gzipSync(Buffer.alloc(LIMITS.maxBytes + 1)));
    },
    code: 'origin_too_large',
  },
  {
    name: 'slow drip past the total timeout',
    handler: (_request, response) => {
      response.writeHead(200, { 'content-length': png.length, 'content-type': 'image/png' });
      let sent = 0;
      const timer = setInterval(() => {
        if (response.destroyed || sent >= png.length) {
          clearInterval(timer);
          return;
        }
        response.write(png.subarray(sent, sent + 1));
        sent += 1;
      }, SHORT_TIMEOUT_MS / 2); // each byte in time for an idle timeout; the whole body far past the total
      response.on('close', () => clearInterval(timer));
    },
    limits: { totalTimeoutMs: SHORT_TIMEOUT_MS },
    code: 'origin_timeout',
  },
  {
    name: 'headers never come',
    handler: () => {
      // accept the request and say nothing
    },
    limits: { totalTimeoutMs: SHORT_TIMEOUT_MS },
    code: 'origin_timeout',
  },
  {
    name: 'total timeout spans redirect hops (each hop alone is fast enough)',
    handler: (request, response, origin) => {
      const hop = Number(request.url?.slice('/hop/'.length));
      // Timers never fire early: the second hop ends past the total, whatever the load.
      const delayMs = (SHORT_TIMEOUT_MS * 2) / 3;
      setTimeout(() => {
        if (hop >= LIMITS.maxRedirects) send(200, png)(request, response, origin);
        else redirect(() => `/hop/${hop + 1}`)(request, response, origin);
      }, delayMs);
    },
    limits: { totalTimeoutMs: SHORT_TIMEOUT_MS },
    code: 'origin_timeout',
    check: ({ origin }) => assert.ok(origin.requests.length < LIMITS.maxRedirects + 1, `${origin.requests.length} hops made`),
  },
  {
    name: 'redirect loop',
    handler: redirect(() => '/loop'),
    code: 'too_many_redirects',
    check: ({ origin }) => assert.equal(origin.requests.length, LIMITS.maxRedirects + 1),
  },
  {
    name: 'redirect chain one longer than maxRedirects',
    handler: (request, response, origin) => {
      const hop = Number(request.url?.slice('/hop/'.length));
      if (hop > LIMITS.maxRedirects) send(200, png)(request, response, origin);
      else redirect(() => `/hop/${hop + 1}`)(request, response, origin);
    },
    limits: { maxRedirects: LIMITS.maxRedirects - 1 },
    code: 'too_many_redirects',
    check: ({ origin }) => assert.equal(origin.requests.length, LIMITS.maxRedirects),
  },
  {
    name: 'redirect chain of exactly maxRedirects is followed',
    handler: (request, response, origin) => {
      const hop = Number(request.url?.slice('/hop/'.length));
      if (hop >= LIMITS.maxRedirects) send(200, png)(request, response, origin);
      else redirect(() => `/hop/${hop + 1}`)(request, response, origin);
    },
    code: null,
    check: ({ image, origin }) => {
      assert.equal(image?.finalUrl, origin.url(`/hop/${LIMITS.maxRedirects}`).href);
      assert.equal(origin.requests.length, LIMITS.maxRedirects + 1);
    },
  },
  {
    name: 'redirect to a non-HTTP scheme',
    handler: redirect(() => 'file:///etc/passwd'),
    code: 'blocked_destination',
  },
  { name: 'HTML served as image/jpeg', handler: send(200, html, { 'content-type': 'image/jpeg' }), code: 'not_an_image' },
  { name: 'SVG served as image/jpeg', handler: send(200, svg, { 'content-type': 'image/jpeg' }), code: 'not_an_image' },
  { name: 'SVG served as image/svg+xml', handler: send(200, svg, { 'content-type': 'image/svg+xml' }), code: 'not_an_image' },
  { name: 'empty 200', handler: send(200, Buffer.alloc(0), { 'content-type': 'image/png' }), code: 'not_an_image' },
  {
    name: 'PNG whose header declares 60000×60000',
    handler: send(200, hugePngHeader, { 'content-type': 'image/png' }),
    code: 'too_many_pixels',
  },
  {
    name: 'pixel limit counts every frame',
    handler: send(200, png),
    limits: { maxPixels: 40 * 30 - 1 },
    code: 'too_many_pixels',
  },
  {
    name: 'truncated body: Content-Length 1000, 500 bytes, then close',
    handler: (_request, response) => {
      response.writeHead(200, { 'content-length': 1000, 'content-type': 'image/png' });
      response.write(Buffer.concat([png, Buffer.alloc(500)]).subarray(0, 500), () => response.socket?.destroy());
    },
    code: 'origin_unreachable',
  },
  { name: '404', handler: send(404, png), code: 'origin_status' },
  { name: '500', handler: send(500, png), code: 'origin_status' },
  { name: '206 partial content', handler: send(206, png, { 'content-range': `bytes 0-9/${png.length}` }), code: 'origin_status' },
  { name: '204 no content', handler: (_request, response) => response.writeHead(204).end(), code: 'origin_status' },
  { name: '302 without Location', handler: send(302, png), code: 'origin_status' },
  {
    name: 'connection dropped before any response',
    handler: (request) => request.socket.destroy(),
    code: 'origin_unreachable',
  },
];

describe('fetchImage against misbehaving origins (policy off: the origin is loopback)', () => {
  for (const testCase of ORIGIN_CASES) {
    it(testCase.name, { timeout: TEST_TIMEOUT_MS }, async () => {
      const origin = await startOrigin(testCase.handler);
      const limits = { ...LIMITS, ...testCase.limits };
      await withFetcher(
        { limits },
        async (fetcher) => {
          let image: FetchedImage | null = null;
          if (testCase.code === null) image = await fetcher.fetchImage(origin.url('/hop/0'));
          else assert.equal(await rejectionCode(fetcher.fetchImage(origin.url('/hop/0'))), testCase.code);
          testCase.check?.({ image, origin });
        },
        origin,
      );
    });
  }
});

describe('fetchImage request and connection handling', () => {
  const shared = suiteOrigins(send(200, png, { 'content-type': 'image/png', 'set-cookie': 'session=1; Path=/' }), {
    origin: '127.0.0.1',
  });

  it('sends our User-Agent and Accept, and nothing about the visitor', { timeout: TEST_TIMEOUT_MS }, async () => {
    const { origin } = shared;
    await withFetcher({}, async (fetcher) => {
      await fetcher.fetchImage(origin.url('/one'));
      await fetcher.fetchImage(origin.url('/two')); // after a Set-Cookie
    });
    const [, second] = origin.requests.slice(-2);
    assert.ok(second);
    assert.equal(second.headers['user-agent'], USER_AGENT);
    assert.equal(second.headers.accept, 'image/avif,image/webp,image/*');
    for (const header of ['cookie', 'referer', 'x-forwarded-for', 'forwarded', 'authorization']) {
      assert.equal(second.headers[header], undefined, header);
    }
  });

  it('reuses one kept-alive connection across requests', { timeout: TEST_TIMEOUT_MS }, async () => {
    const { origin } = shared;
    const connectionsBefore = origin.connections;
    await withFetcher({}, async (fetcher) => {
      for (let count = 0; count < 3; count += 1) await fetcher.fetchImage(origin.url(`/again/${count}`));
    });
    assert.equal(origin.connections - connectionsBefore, 1);
  });

  it('refuses non-HTTP URLs and credentials without any request', { timeout: TEST_TIMEOUT_MS }, async () => {
    const { origin } = shared;
    const connectionsBefore = origin.connections;
    const withCredentials = origin.url('/');
    withCredentials.username = 'user';
    await withFetcher({}, async (fetcher) => {
      for (const url of [new URL('file:///etc/passwd'), new URL('ftp://127.0.0.1/x.png'), withCredentials]) {
        assert.equal(await rejectionCode(fetcher.fetchImage(url)), 'blocked_destination', url.href);
      }
    });
    assert.equal(origin.connections, connectionsBefore);
  });

  it('refuses a redirect to another origin with credentials in the URL', { timeout: TEST_TIMEOUT_MS }, async () => {
    const other = await startOrigin(send(200, png));
    const redirector = await startOrigin(redirect(() => other.url('/').href.replace('http://', 'http://user:secret@')));
    await withFetcher(
      {},
      async (fetcher) => {
        assert.equal(await rejectionCode(fetcher.fetchImage(redirector.url())), 'blocked_destination');
        assert.equal(other.connections, 0);
      },
      redirector,
      other,
    );
  });

  it('refused connection is origin_unreachable', { timeout: TEST_TIMEOUT_MS }, async () => {
    const closed = await startOrigin(send(200, png));
    const url = closed.url();
    await closed.close();
    await withFetcher({}, async (fetcher) => {
      assert.equal(await rejectionCode(fetcher.fetchImage(url)), 'origin_unreachable');
    });
  });

  it('a caller abort rejects with the caller reason', { timeout: TEST_TIMEOUT_MS }, async () => {
    const silent = await startOrigin(() => undefined);
    const controller = new AbortController();
    const reason = new Error('client went away');
    await withFetcher(
      {},
      async (fetcher) => {
        const fetching = fetcher.fetchImage(silent.url(), controller.signal);
        // Awaited below; until then a rejection must not surface as unhandled.
        fetching.catch(() => undefined);
        await until(() => silent.requests.length === 1, { message: 'the request at the origin' });
        controller.abort(reason);
        await assert.rejects(fetching, (error) => error === reason);
      },
      silent,
    );
  });
});

// ---------------------------------------------------------------------------------
// Policy on: loopback in every spelling is refused before any connection

const POLICY_ON: Partial<FetchOptions> = { allowPrivateNetworks: false };

describe('fetchImage with the address policy on', () => {
  const targets = suiteOrigins(send(200, png), { v4: '127.0.0.1', v6: '::1' });

  const SPELLINGS: Array<{ name: string; url: () => URL; server: () => Origin }> = [
    { name: 'http://127.0.0.1', url: () => targets.v4.url('/', '127.0.0.1'), server: () => targets.v4 },
    { name: 'http://localhost (refused after DNS)', url: () => targets.v4.url('/', 'localhost'), server: () => targets.v4 },
    { name: 'http://[::1]', url: () => targets.v6.url('/', '::1'), server: () => targets.v6 },
    { name: 'http://[::ffff:127.0.0.1]', url: () => targets.v4.url('/', '::ffff:127.0.0.1'), server: () => targets.v4 },
    { name: 'http://0.0.0.0 (reaches local listeners on Linux)', url: () => targets.v4.url('/', '0.0.0.0'), server: () => targets.v4 },
    { name: 'http://127.1', url: () => targets.v4.url('/', '127.1'), server: () => targets.v4 },
    { name: 'http://2130706433', url: () => targets.v4.url('/', '2130706433'), server: () => targets.v4 },
    { name: 'http://0x7f000001', url: () => targets.v4.url('/', '0x7f000001'), server: () => targets.v4 },
  ];

  for (const spelling of SPELLINGS) {
    it(`refuses ${spelling.name}`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const connectionsBefore = spelling.server().connections;
      await withFetcher(POLICY_ON, async (fetcher) => {
        assert.equal(await rejectionCode(fetcher.fetchImage(spelling.url())), 'blocked_destination');
      });
      assert.equal(spelling.server().connections, connectionsBefore);
    });
  }

  it('says which rule refused, for the log', { timeout: TEST_TIMEOUT_MS }, async () => {
    await withFetcher(POLICY_ON, async (fetcher) => {
      await assert.rejects(fetcher.fetchImage(targets.v4.url('/', 'localhost')), (error) => {
        assert.ok(isImageproxyError(error));
        assert.equal(error.message, 'destination not allowed');
        assert.match(error.detail ?? '', /localhost resolved to address 127\.0\.0\.1 is loopback/);
        return true;
      });
    });
  });
});

// Redirect hops: the first hop is let through by an allow-list exception for one
// loopback address (127.0.0.1), so the second hop is what the policy has to catch.
describe('redirect hops are re-checked with the policy on', () => {
  const targets = suiteOrigins(send(200, png), { second: '127.0.0.2', v6: '::1' });
  const FIRST_HOP_ALLOWED: Partial<FetchOptions> = { ...POLICY_ON, allowedAddresses: ['127.0.0.1'] };

  const HOPS: Array<{ name: string; location: () => string; server: () => Origin }> = [
    { name: 'to 127.0.0.2', location: () => targets.second.url('/').href, server: () => targets.second },
    { name: 'to [::ffff:127.0.0.2]', location: () => targets.second.url('/', '::ffff:127.0.0.2').href, server: () => targets.second },
    { name: 'to [::1]', location: () => targets.v6.url('/').href, server: () => targets.v6 },
  ];

  for (const hop of HOPS) {
    it(`refuses a redirect ${hop.name}`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const redirector = await startOrigin(redirect(() => hop.location()));
      const connectionsBefore = hop.server().connections;
      await withFetcher(
        FIRST_HOP_ALLOWED,
        async (fetcher) => {
          assert.equal(await rejectionCode(fetcher.fetchImage(redirector.url())), 'blocked_destination');
          assert.equal(redirector.requests.length, 1, 'the first hop was allowed and answered');
        },
        redirector,
      );
      assert.equal(hop.server().connections, connectionsBefore, 'the second hop never connected');
    });
  }

  it('refuses a redirect into 127.0.0.1 (the first hop on 127.0.0.2 allowed)', { timeout: TEST_TIMEOUT_MS }, async () => {
    const target = await startOrigin(send(200, png));
    const redirector = await startOrigin(redirect(() => target.url('/into-loopback.png').href), '127.0.0.2');
    await withFetcher(
      { ...POLICY_ON, allowedAddresses: ['127.0.0.2'] },
      async (fetcher) => {
        assert.equal(await rejectionCode(fetcher.fetchImage(redirector.url())), 'blocked_destination');
        assert.equal(redirector.requests.length, 1, 'the first hop was allowed and answered');
      },
      redirector,
      target,
    );
    assert.equal(target.connections, 0, '127.0.0.1 never saw a connection');
  });

  it('control: with both addresses allowed, the same redirect reaches the target', { timeout: TEST_TIMEOUT_MS }, async () => {
    const redirector = await startOrigin(redirect(() => targets.second.url('/').href));
    const requestsBefore = targets.second.requests.length;
    await withFetcher(
      { ...POLICY_ON, allowedAddresses: ['127.0.0.1', '127.0.0.2/32'] },
      async (fetcher) => {
        const image = await fetcher.fetchImage(redirector.url());
        assert.equal(image.format, 'png');
      },
      redirector,
    );
    assert.equal(targets.second.requests.length, requestsBefore + 1);
  });
});

describe('kept-alive sockets the origin closes', () => {
  /** Per socket: how many requests it carried before this one. */
  function requestsBefore(request: http.IncomingMessage, seen: WeakMap<object, number>): number {
    const count = seen.get(request.socket) ?? 0;
    seen.set(request.socket, count + 1);
    return count;
  }

  it('retries once on a new connection a request whose reused socket closed before any response byte', { timeout: TEST_TIMEOUT_MS }, async () => {
    const seen = new WeakMap<object, number>();
    // The origin's side of the race: a second request on a connection meets its close.
    const origin = await startOrigin((request, response) => {
      if (requestsBefore(request, seen) > 0) request.socket.destroy();
      else response.writeHead(200, { 'content-type': 'image/png' }).end(png);
    });
    const failures: string[] = [];
    await withFetcher(
      {},
      async (fetcher) => {
        for (let index = 0; index < 20; index += 1) {
          await fetcher.fetchImage(origin.url(`/${index}.png`)).catch((error: unknown) => failures.push(String(error)));
        }
      },
      origin,
    );
    assert.deepEqual(failures, []);
    // Every other fetch met a closing socket and went out again: the retries happened.
    assert.ok(origin.requests.length > 20, `${origin.requests.length} origin requests for 20 fetches`);
    assert.ok(origin.requests.length <= 40, 'at most one retry per fetch');
  });

  it('fails without a retry when a new connection closes before any response byte', { timeout: TEST_TIMEOUT_MS }, async () => {
    const origin = await startOrigin((request) => request.socket.destroy());
    const code = await withFetcher({}, (fetcher) => rejectionCode(fetcher.fetchImage(origin.url('/a.png'))), origin);
    assert.equal(code, 'origin_unreachable');
    assert.equal(origin.requests.length, 1);
  });

  it('fails without a retry when a reused socket closes after the response began', { timeout: TEST_TIMEOUT_MS }, async () => {
    const seen = new WeakMap<object, number>();
    const origin = await startOrigin((request, response) => {
      if (requestsBefore(request, seen) === 0) {
        response.writeHead(200, { 'content-type': 'image/png' }).end(png);
        return;
      }
      response.writeHead(200, { 'content-type': 'image/png', 'content-length': String(png.length) });
      response.write(png.subarray(0, 10), () => request.socket.destroy());
    });
    const code = await withFetcher(
      {},
      async (fetcher) => {
        await fetcher.fetchImage(origin.url('/first.png'));
        return rejectionCode(fetcher.fetchImage(origin.url('/second.png')));
      },
      origin,
    );
    assert.equal(code, 'origin_unreachable');
    assert.equal(origin.requests.length, 2, 'the failed request was not sent again');
  });

  it('an origin closing idle sockets at once: sequential and concurrent fetches all succeed', { timeout: 4 * TEST_TIMEOUT_MS }, async () => {
    const server = http.createServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'image/png' }).end(png);
    });
    server.keepAliveTimeout = 1;
    let requests = 0;
    server.on('request', () => {
      requests += 1;
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const failures: string[] = [];
    const fetcher = createFetcher(fetcherOptions());
    try {
      const fetchOne = (index: number): Promise<unknown> =>
        fetcher.fetchImage(new URL(`http://127.0.0.1:${port}/${index}.png`)).catch((error: unknown) => failures.push(String(error)));
      for (let index = 0; index < 60; index += 1) {
        await fetchOne(index);
        // Behaviour under test, not a wait: about as long as the origin keeps an idle socket, so the close and the reuse meet.
        await new Promise((resolve) => setTimeout(resolve, index % 3));
      }
      for (let round = 0; round < 10; round += 1) {
        await Promise.all(Array.from({ length: 16 }, (_, index) => fetchOne(1000 + round * 16 + index)));
        await new Promise((resolve) => setTimeout(resolve, round % 3));
      }
    } finally {
      fetcher.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
    assert.deepEqual(failures, []);
    assert.ok(requests >= 220, `${requests} origin requests`);
  });
});
