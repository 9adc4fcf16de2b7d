/**
 * What an S3 failure means for us. Pure: the facts are read off the thrown value
 * (the SDK's service exception, a socket error, our own deadline) and sorted into the
 * few outcomes the store's callers act on:
 *
 *   not_found            the object is absent: the store answers null, never throws
 *   precondition_failed  a conditional create found the object there: `exists`
 *   unavailable          unreachable, too slow, or failing on its side (5xx, throttled):
 *                        `storage_unavailable` 503 with Retry-After; retrying may succeed
 *   denied               our credentials refused (401/403): `storage_denied`, naming the
 *                        access key id in the log detail; the operator must act
 *   failed               anything else the gateway answered (a missing bucket, a refused
 *                        request): `storage_failed`
 *
 * The public message stays generic; the operation, the object and the gateway's own
 * error name go to the detail for the log.
 */
import { ImageproxyError, isImageproxyError } from '../errors.js';

export type StorageOperation = 'put' | 'create' | 'get' | 'head' | 'delete' | 'list';

export type FailureKind = 'not_found' | 'precondition_failed' | 'unavailable' | 'denied' | 'failed';

export interface FailureFacts {
  /** The S3 error code (`NoSuchKey`, `AccessDenied`) or the error's name (`TimeoutError`). */
  name: string | null;
  /** The gateway's HTTP status, when it answered. */
  httpStatus: number | null;
  /** A socket error's code (`ECONNREFUSED`). */
  errno: string | null;
  /** Our own deadline for the call passed. */
  deadlinePassed: boolean;
}

/** Seconds a client is told to wait after `storage_unavailable`. */
export const STORAGE_RETRY_AFTER_SECONDS = 5;

const DENIED_NAMES = new Set([
  'AccessDenied',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'InvalidToken',
  'ExpiredToken',
  'TokenRefreshRequired',
  'RequestTimeTooSkewed',
  'Forbidden',
  // the SDK's credential chain found none
  'CredentialsProviderError',
]);
const NOT_FOUND_NAMES = new Set(['NoSuchKey', 'NotFound']);
const UNAVAILABLE_NAMES = new Set([
  'TimeoutError',
  'RequestTimeout',
  'RequestTimeoutException',
  'SlowDown',
  'ServiceUnavailable',
  'InternalError',
  'ConditionalRequestConflict',
]);
const NETWORK_ERRNOS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

/** The facts of a thrown value; anything but an object yields no facts. */
export function failureFactsOf(error: unknown, deadlinePassed: boolean): FailureFacts {
  const facts: FailureFacts = { name: null, httpStatus: null, errno: null, deadlinePassed };
  if (typeof error !== 'object' || error === null) return facts;
  const record = error as Record<string, unknown>;
  const code = record.Code ?? record.name;
  if (typeof code === 'string' && code !== 'Error') facts.name = code;
  const metadata = record.$metadata;
  if (typeof metadata === 'object' && metadata !== null) {
    const status = (metadata as Record<string, unknown>).httpStatusCode;
    if (typeof status === 'number' && Number.isInteger(status)) facts.httpStatus = status;
  }
  if (typeof record.code === 'string') facts.errno = record.code;
  return facts;
}

export function failureKindOf(facts: FailureFacts): FailureKind {
  if (facts.deadlinePassed) return 'unavailable';
  const { name, httpStatus, errno } = facts;
  if ((name !== null && DENIED_NAMES.has(name)) || httpStatus === 401 || httpStatus === 403) return 'denied';
  if (name === 'NoSuchBucket') return 'failed';
  if ((name !== null && NOT_FOUND_NAMES.has(name)) || httpStatus === 404) return 'not_found';
  if (name === 'PreconditionFailed' || httpStatus === 412) return 'precondition_failed';
  if (name !== null && UNAVAILABLE_NAMES.has(name)) return 'unavailable';
  if (httpStatus !== null) return httpStatus >= 500 || httpStatus === 429 || httpStatus === 408 ? 'unavailable' : 'failed';
  return errno !== null && NETWORK_ERRNOS.has(errno) ? 'unavailable' : 'failed';
}

/** Where a failure happened, for the log detail. */
export interface FailureContext {
  operation: StorageOperation;
  /** The S3 key (prefix included), or the listed prefix. */
  objectKey: string;
  bucket: string;
  endpoint: string;
  /** The access key id in use; null when the credential chain found none. */
  accessKeyId: string | null;
  timeoutMs: number;
}

/** The ImageproxyError for a failure the caller does not turn into null or `exists`. */
export function storageError(kind: FailureKind, facts: FailureFacts, context: FailureContext, cause: unknown): ImageproxyError {
  const what = `${context.operation} ${context.bucket}/${context.objectKey} at ${context.endpoint}`;
  const said = facts.deadlinePassed
    ? `no answer within ${context.timeoutMs} ms`
    : [facts.name, facts.httpStatus === null ? null : `HTTP ${facts.httpStatus}`, facts.errno].filter((part) => part !== null).join(' ') || 'unknown failure';
  if (kind === 'denied') {
    const key = context.accessKeyId === null ? 'no access key found' : `access key ${context.accessKeyId}`;
    return new ImageproxyError('storage_denied', 'storage refused our credentials', { cause, detail: `${what}: ${said}; ${key}` });
  }
  if (kind === 'unavailable') {
    return new ImageproxyError('storage_unavailable', 'storage unavailable, try again', {
      cause,
      detail: `${what}: ${said}`,
      retryAfterSeconds: STORAGE_RETRY_AFTER_SECONDS,
    });
  }
  return new ImageproxyError('storage_failed', 'storage failed', { cause, detail: `${what}: ${said}` });
}

/**
 * A failure of the gateway as a whole (unreachable, credentials refused, no bucket), not
 * of one object: a bulk command stops at it rather than fail every later object the same way.
 */
export function isGatewayFailure(error: unknown): error is ImageproxyError {
  return isImageproxyError(error) && (error.code === 'storage_unavailable' || error.code === 'storage_denied' || error.code === 'storage_failed');
}
