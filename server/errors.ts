/**
 * The one error hierarchy. Every failure the service can answer carries a stable
 * `code` (sent in `X-Imageproxy-Error` and the body), an HTTP status and a short
 * public message. Details for the admin go to the log through `cause`/`detail`,
 * never to the client: the origin and the URL are untrusted and so are their errors.
 */

/** Stable error codes and the HTTP status each one answers with. */
export const ERROR_STATUS = {
  // URL contract
  bad_path: 400,
  bad_size: 400,
  bad_url: 400,
  // an ext_url past MAX_EXT_URL_LENGTH (server/contract/link.ts): its own code, so the answer says
  // what to change rather than calling a long but well-formed URL malformed
  url_too_long: 414,
  unknown_bucket: 404,
  bad_signature: 410,
  method_not_allowed: 405,
  not_stored: 404,
  // fetching from the origin
  blocked_destination: 403,
  origin_status: 502,
  origin_unreachable: 502,
  origin_timeout: 504,
  origin_too_large: 502,
  not_an_image: 502,
  too_many_pixels: 502,
  too_many_redirects: 502,
  backoff: 503,
  busy: 503,
  // an operator's takedown (server/takedown/blocklist.ts): by link, image bytes or origin host
  blocked: 451,
  // resizing
  bad_image: 502,
  // the tree on disk (server/tree/diskErrors.ts)
  storage_full: 507,
  storage_unwritable: 500,
  // the object store (server/storage/): the gateway unreachable, too slow or failing on its
  // side (retry later), refusing our credentials (the operator must act), or answering
  // what we did not foresee (a missing bucket, a refused request, an object past its cap)
  storage_unavailable: 503,
  storage_denied: 500,
  storage_failed: 502,
  // the server is stopping and this request did not finish within shutdownGraceMs
  shutting_down: 503,
  // a request that is not well-formed HTTP: answered by the app's HTTP server before any
  // route (server/http/clientError.ts) and by nginx itself (NGINX_ERROR_ANSWERS)
  bad_request: 400,
  request_timeout: 408,
  headers_too_large: 431,
  // answered by nginx itself, never by the app (server/deploy/nginxConfig.ts NGINX_ERROR_ANSWERS)
  forbidden: 403,
  request_too_large: 413,
  // a Transfer-Encoding other than chunked (gzip, xchunked, `chunked, identity`)
  unsupported_transfer_encoding: 501,
  link_too_long: 414,
  range_not_satisfiable: 416,
  app_unavailable: 502,
  app_timeout: 504,
  // anything we did not foresee
  internal: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export interface ImageproxyErrorOptions {
  /** The underlying error (logged, never sent to the client). */
  cause?: unknown;
  /** Extra facts for the log line (never sent to the client). */
  detail?: string;
  /** For `backoff`, `busy`, `shutting_down` and `storage_unavailable`: seconds until a retry may succeed (sent as Retry-After). */
  retryAfterSeconds?: number;
  /** For a failure answered again from its backoff record: when it happened (ISO), sent as X-Imageproxy-Remembered. */
  rememberedAt?: string;
}

export class ImageproxyError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly detail: string | undefined;
  readonly retryAfterSeconds: number | undefined;
  readonly rememberedAt: string | undefined;

  /** `message` is public: keep it short and free of untrusted text. */
  constructor(code: ErrorCode, message: string, options: ImageproxyErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ImageproxyError';
    this.code = code;
    this.status = ERROR_STATUS[code];
    this.detail = options.detail;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.rememberedAt = options.rememberedAt;
  }
}

export function isImageproxyError(value: unknown): value is ImageproxyError {
  return value instanceof ImageproxyError;
}

/** Any thrown value as an ImageproxyError; unknown failures become `internal`. */
export function toImageproxyError(value: unknown): ImageproxyError {
  if (value instanceof ImageproxyError) return value;
  return new ImageproxyError('internal', 'internal error', { cause: value });
}

/** A thrown or rejected value as an Error (libraries may throw strings or plain objects). */
export function asError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}
