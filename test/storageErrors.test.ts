// What an S3 failure means (server/storage/storageErrors.ts): the facts read off thrown
// values shaped as the SDK and Node throw them, their kind, and the error each kind becomes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  STORAGE_RETRY_AFTER_SECONDS,
  failureFactsOf,
  failureKindOf,
  storageError,
  type FailureContext,
  type FailureKind,
} from '../server/storage/storageErrors.js';

/** A service exception as the SDK builds it: name = S3 code, `$metadata.httpStatusCode`. */
function serviceError(name: string, httpStatusCode: number): Error {
  return Object.assign(new Error(name), { name, Code: name, $fault: httpStatusCode >= 500 ? 'server' : 'client', $metadata: { httpStatusCode, attempts: 1 } });
}

function socketError(code: string): Error {
  return Object.assign(new Error(`connect ${code} 127.0.0.1:1`), { code, $metadata: { attempts: 3 } });
}

describe('failure kinds', () => {
  const table: Array<[what: string, thrown: unknown, deadlinePassed: boolean, kind: FailureKind]> = [
    ['GET of a missing key', serviceError('NoSuchKey', 404), false, 'not_found'],
    ['HEAD of a missing key (no body: named by status)', serviceError('NotFound', 404), false, 'not_found'],
    ['a missing bucket', serviceError('NoSuchBucket', 404), false, 'failed'],
    ['conditional create of an existing key', serviceError('PreconditionFailed', 412), false, 'precondition_failed'],
    ['unknown access key', serviceError('InvalidAccessKeyId', 403), false, 'denied'],
    ['wrong secret', serviceError('SignatureDoesNotMatch', 403), false, 'denied'],
    ['no rights on the bucket', serviceError('AccessDenied', 403), false, 'denied'],
    ['HEAD refused (no body)', serviceError('Forbidden', 403), false, 'denied'],
    ['clock skew', serviceError('RequestTimeTooSkewed', 403), false, 'denied'],
    ['no credentials found by the chain', Object.assign(new Error('Could not load credentials'), { name: 'CredentialsProviderError' }), false, 'denied'],
    ['gateway error', serviceError('InternalError', 500), false, 'unavailable'],
    ['gateway overloaded', serviceError('SlowDown', 503), false, 'unavailable'],
    ['an unnamed 502 from a proxy in front', serviceError('UnknownError', 502), false, 'unavailable'],
    ['throttled', serviceError('TooManyRequests', 429), false, 'unavailable'],
    ['concurrent conditional writes (AWS)', serviceError('ConditionalRequestConflict', 409), false, 'unavailable'],
    ['gateway down', socketError('ECONNREFUSED'), false, 'unavailable'],
    ['connection reset', socketError('ECONNRESET'), false, 'unavailable'],
    ['no such host', socketError('ENOTFOUND'), false, 'unavailable'],
    ['connect timeout of the SDK', Object.assign(new Error('timed out'), { name: 'TimeoutError' }), false, 'unavailable'],
    ['our deadline (the SDK says AbortError)', Object.assign(new Error('aborted'), { name: 'AbortError' }), true, 'unavailable'],
    ['a denied answer after the deadline counts as the deadline', serviceError('AccessDenied', 403), true, 'unavailable'],
    ['a refused request', serviceError('InvalidArgument', 400), false, 'failed'],
    ['too large', serviceError('EntityTooLarge', 400), false, 'failed'],
    ['an error of unknown shape', new Error('something'), false, 'failed'],
    ['a thrown string', 'boom', false, 'failed'],
  ];
  for (const [what, thrown, deadlinePassed, kind] of table) {
    it(`${what}: ${kind}`, () => {
      assert.equal(failureKindOf(failureFactsOf(thrown, deadlinePassed)), kind);
    });
  }
});

describe('failure facts', () => {
  it('a service exception: its S3 code and status', () => {
    assert.deepEqual(failureFactsOf(serviceError('NoSuchKey', 404), false), { name: 'NoSuchKey', httpStatus: 404, errno: null, deadlinePassed: false });
  });
  it('a socket error: its errno, no name ("Error" says nothing)', () => {
    assert.deepEqual(failureFactsOf(socketError('ECONNREFUSED'), false), { name: null, httpStatus: null, errno: 'ECONNREFUSED', deadlinePassed: false });
  });
});

describe('the errors each kind becomes', () => {
  const context: FailureContext = {
    operation: 'get',
    objectKey: 'images/i/J/2/Jkey.150x',
    bucket: 'imageproxy',
    endpoint: 'http://127.0.0.1:7480',
    accessKeyId: 'AKEXAMPLE',
    timeoutMs: 10_000,
  };
  it('denied: storage_denied 500, the log detail names the access key id', () => {
    const facts = failureFactsOf(serviceError('InvalidAccessKeyId', 403), false);
    const error = storageError('denied', facts, context, null);
    assert.equal(error.code, 'storage_denied');
    assert.equal(error.status, 500);
    assert.match(error.detail ?? '', /access key AKEXAMPLE/);
    assert.match(error.detail ?? '', /get imageproxy\/images\/i\/J\/2\/Jkey\.150x at http:\/\/127\.0\.0\.1:7480: InvalidAccessKeyId HTTP 403/);
    assert.doesNotMatch(error.message, /AKEXAMPLE|127\.0\.0\.1/, 'the public message says nothing of the setup');
  });
  it('denied without credentials: says none was found', () => {
    const error = storageError('denied', failureFactsOf(new Error('x'), false), { ...context, accessKeyId: null }, null);
    assert.match(error.detail ?? '', /no access key found/);
  });
  it('unavailable: storage_unavailable 503 with Retry-After; a deadline says how long it waited', () => {
    const error = storageError('unavailable', failureFactsOf(new Error('aborted'), true), context, null);
    assert.equal(error.code, 'storage_unavailable');
    assert.equal(error.status, 503);
    assert.equal(error.retryAfterSeconds, STORAGE_RETRY_AFTER_SECONDS);
    assert.match(error.detail ?? '', /no answer within 10000 ms/);
  });
  it('unavailable from a socket error names the errno', () => {
    const error = storageError('unavailable', failureFactsOf(socketError('ECONNREFUSED'), false), context, null);
    assert.match(error.detail ?? '', /: ECONNREFUSED$/);
  });
  it('failed: storage_failed 502 with the gateway\'s code', () => {
    const cause = serviceError('NoSuchBucket', 404);
    const error = storageError('failed', failureFactsOf(cause, false), context, cause);
    assert.equal(error.code, 'storage_failed');
    assert.equal(error.status, 502);
    assert.match(error.detail ?? '', /NoSuchBucket HTTP 404/);
    assert.equal(error.cause, cause);
  });
});
