// server/http/clientError.ts: what the app's HTTP server answers to requests Node's parser
// refuses, as a table; and one real malformed request against a real server.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { buildConfig } from '../server/config/config.js';
import { startServer } from '../server/http/server.js';
import { clientErrorAnswer, isHeadRequest } from '../server/http/clientError.js';
import { createLogger } from '../server/observe/log.js';
import { CONTENT_SECURITY_POLICY, ERROR_CACHE_CONTROL } from '../server/http/responseHeaders.js';
import { makeTempRoot, removeTempRoot } from './helpers.js';

function parse(raw: string): { status: number; headers: Map<string, string>; body: string } {
  const [head = '', body = ''] = raw.split('\r\n\r\n');
  const [statusLine = '', ...headerLines] = head.split('\r\n');
  const headers = new Map(headerLines.map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 2)]));
  return { status: Number(statusLine.split(' ')[1]), headers, body };
}

describe('clientErrorAnswer', () => {
  const cases: Array<{ parserCode: string | undefined; status: number; code: string }> = [
    { parserCode: 'HPE_HEADER_OVERFLOW', status: 431, code: 'headers_too_large' },
    { parserCode: 'ERR_HTTP_REQUEST_TIMEOUT', status: 408, code: 'request_timeout' },
    { parserCode: 'HPE_INVALID_METHOD', status: 400, code: 'bad_request' },
    { parserCode: 'HPE_INVALID_URL', status: 400, code: 'bad_request' },
    { parserCode: undefined, status: 400, code: 'bad_request' },
  ];
  for (const { parserCode, status, code } of cases) {
    it(`${parserCode ?? 'no code'}: ${status} ${code}, text with the project's headers`, () => {
      const answer = parse(clientErrorAnswer(parserCode, false));
      assert.equal(answer.status, status);
      assert.equal(answer.headers.get('x-imageproxy-error'), code);
      assert.equal(answer.headers.get('content-type'), 'text/plain; charset=utf-8');
      assert.equal(answer.headers.get('cache-control'), ERROR_CACHE_CONTROL);
      assert.equal(answer.headers.get('x-content-type-options'), 'nosniff');
      assert.equal(answer.headers.get('content-security-policy'), CONTENT_SECURITY_POLICY);
      assert.equal(answer.headers.get('connection'), 'close');
      assert.match(answer.body, new RegExp(`^${code}: `));
      assert.equal(Number(answer.headers.get('content-length')), Buffer.byteLength(answer.body));
    });
  }

  it('a HEAD gets the headers without the body', () => {
    const answer = parse(clientErrorAnswer('HPE_INVALID_URL', true));
    assert.equal(answer.status, 400);
    assert.equal(answer.body, '');
    assert.ok(Number(answer.headers.get('content-length')) > 0);
  });

  it('isHeadRequest reads the raw packet', () => {
    assert.equal(isHeadRequest(Buffer.from('HEAD /x HTTP/1.1\r\n')), true);
    assert.equal(isHeadRequest(Buffer.from('GET /x HTTP/1.1\r\n')), false);
    assert.equal(isHeadRequest(undefined), false);
  });

  it('a real server answers a path without a leading / as text with X-Imageproxy-Error', async () => {
    const root = await makeTempRoot();
    const config = buildConfig({ flags: { listen: '127.0.0.1:0', root, secrets: ['s'], admin: { listen: null }, healIntervalSeconds: 0, statsRefreshSeconds: 0 } });
    const server = await startServer({ config, secrets: config.secrets, logger: createLogger('silent') });
    try {
      const { port } = new URL(server.url);
      const raw = await new Promise<string>((resolve, reject) => {
        const socket = connect(Number(port), '127.0.0.1', () => socket.write('GET i/full/x HTTP/1.1\r\nHost: a\r\n\r\n'));
        let received = '';
        socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
        socket.on('end', () => resolve(received));
        socket.on('error', reject);
      });
      const answer = parse(raw);
      assert.equal(answer.status, 400);
      assert.equal(answer.headers.get('x-imageproxy-error'), 'bad_request');
      assert.equal(answer.body, 'bad_request: malformed request\n');
    } finally {
      await server.close();
      await removeTempRoot(root);
    }
  });
});
