/**
 * Limits the config and the rendered nginx config (server/deploy/nginxConfig.ts) must
 * agree on: the validator checks the app's settings against them, the renderer writes
 * them into nginx's directives. Pure constants; one place, so the two cannot drift.
 */

/**
 * nginx's proxy_read_timeout towards the app, in seconds. A miss may wait for another
 * request's fetch (singleFlightWaitMs, 30 s) and then fetch and resize itself
 * (totalTimeoutMs, 30 s): nginx's 60 s default is too short.
 */
export const NGINX_PROXY_READ_TIMEOUT_SECONDS = 120;

/**
 * The longest limits.maxQueueWaitMs: a wait in the app's queues must end before nginx
 * gives up on the app, so the client gets `busy` with Retry-After, not nginx's 504 after
 * work it can no longer receive.
 */
export const MAX_QUEUE_WAIT_MS = NGINX_PROXY_READ_TIMEOUT_SECONDS * 1000 - 1;
