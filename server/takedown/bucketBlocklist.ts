/**
 * The blocklist in an S3 bucket, `.imageproxy/blocklist.json` (server/storage/objectNames.ts
 * BLOCKLIST_OBJECT_NAME; the same bytes as the tree's file, server/takedown/blocklist.ts):
 * read it, change it with a compare-and-swap (two admins at once lose nothing), and watch
 * it from a running server. Thin I/O over the pure module.
 *
 * - S3 has no lock: a change reads the object and its ETag, and writes the result only
 *   while the ETag is still that one (`If-Match`; `If-None-Match: *` while there is no
 *   object yet). A writer that lost the race reads again and applies its change to the
 *   winner's list.
 * - A watcher polls with a conditional GET (`If-None-Match` on the last ETag) at most once
 *   a recheck period, on the next request after it: an unchanged list costs one small
 *   answer (304) a period, never a request per image request.
 * - The gateway unreachable: the last list stays in force (a block must not be lost
 *   because the gateway blinked), logged once per outage. Never loaded yet: every request
 *   is refused (fail closed). An object that does not parse is refused like the tree's file.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { emptyBlocklist, formatBlocklist, parseBlocklist, withConfigHosts, type Blocklist } from './blocklist.js';
import { recheckGate, type BlocklistWatcher, type WatchOptions } from './blocklistStore.js';
import { ImageproxyError, isImageproxyError } from '../errors.js';
import { BLOCKLIST_OBJECT_NAME } from '../storage/objectNames.js';
import type { ObjectStore } from '../storage/objectStore.js';

/** As the tree's file: hundreds of thousands of entries; past it the object is refused, not loaded whole. */
const BLOCKLIST_READ_CAP = 64 * 1024 * 1024;
const BLOCKLIST_CONTENT_TYPE = 'application/json';

/**
 * Attempts of one change before giving up: each lost race means another admin's change
 * landed, so this many in a row means a storm of writers, not bad luck.
 */
const UPDATE_ATTEMPTS = 50;
/** The pause after a lost race grows from this, doubled, with jitter, up to the max: writers spread out. */
const RETRY_PAUSE_MS = 20;
const RETRY_PAUSE_MAX_MS = 500;

function parsedOrThrow(bytes: Buffer): Blocklist {
  try {
    return parseBlocklist(bytes.toString('utf8'));
  } catch (error) {
    throw new Error(`bucket object ${BLOCKLIST_OBJECT_NAME}: ${(error as Error).message}`, { cause: error });
  }
}

/** The blocklist in the bucket and its ETag (null: no object, an empty list). Throws on an object that does not parse, and on the gateway's failures. */
export async function readBucketBlocklist(store: ObjectStore): Promise<{ list: Blocklist; etag: string | null }> {
  const found = await store.get(BLOCKLIST_OBJECT_NAME, { maxBytes: BLOCKLIST_READ_CAP });
  if (found === null) return { list: emptyBlocklist(), etag: null };
  return { list: parsedOrThrow(found.bytes), etag: found.info.etag };
}

/**
 * Reads the list, applies `change`, and writes the result when it differs, only over the
 * version read: on a lost race (another writer changed the object in between) the change
 * is applied again to the new list. `change` must be pure: it may run several times.
 */
export async function updateBucketBlocklist<T>(store: ObjectStore, change: (list: Blocklist) => { list: Blocklist; result: T }): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    const before = await readBucketBlocklist(store);
    const { list, result } = change(before.list);
    const text = formatBlocklist(list);
    if (text === formatBlocklist(before.list)) return result;
    const body = Buffer.from(text, 'utf8');
    const options = { contentType: BLOCKLIST_CONTENT_TYPE };
    const written =
      before.etag === null ? (await store.create(BLOCKLIST_OBJECT_NAME, body, options)) === 'created' : (await store.replace(BLOCKLIST_OBJECT_NAME, body, options, before.etag)) === 'replaced';
    if (written) return result;
    if (attempt >= UPDATE_ATTEMPTS) {
      throw new Error(`bucket object ${BLOCKLIST_OBJECT_NAME}: changed by other writers ${attempt} times in a row while this change was applied; run the command again`);
    }
    const pause = Math.min(RETRY_PAUSE_MAX_MS, RETRY_PAUSE_MS * 2 ** Math.min(attempt - 1, 8));
    await sleep(pause / 2 + Math.random() * pause);
  }
}

export interface BucketWatchOptions extends WatchOptions {
  /** Where an outage of the gateway (the last list kept) and its end are said, once each (a pino logger fits); default: a line on stderr. */
  logger?: WatchLogger;
}

interface WatchLogger {
  warn(fields: object, message: string): void;
  info(fields: object, message: string): void;
}

type BucketWatchState = { etag: string | null; list: Blocklist } | { etag: string | null; error: Error };

/** The gateway's failures (unreachable, refused, …): the last list stays. Anything else (a parse error) is the list's own. */
function isGatewayFailure(error: unknown): error is ImageproxyError {
  return isImageproxyError(error) && error.code.startsWith('storage_');
}

function stderrLine(fields: object, message: string): void {
  process.stderr.write(`imageproxy: ${message} ${JSON.stringify(fields)}\n`);
}

const STDERR_LOGGER: WatchLogger = { warn: stderrLine, info: stderrLine };

export function watchBucketBlocklist(store: ObjectStore, options: BucketWatchOptions = {}): BlocklistWatcher {
  const extraHosts = options.extraHosts ?? [];
  const logger = options.logger ?? STDERR_LOGGER;
  let state: BucketWatchState | null = null;
  /** The gateway's failure while a list is kept: logged once when it starts, once when it ends. */
  let outage: ImageproxyError | null = null;
  /** The gateway's failure before any list was loaded. */
  let neverLoaded: ImageproxyError | null = null;

  async function check(): Promise<void> {
    let answer: Awaited<ReturnType<ObjectStore['getChanged']>>;
    try {
      answer = await store.getChanged(BLOCKLIST_OBJECT_NAME, state?.etag ?? null, { maxBytes: BLOCKLIST_READ_CAP });
    } catch (error) {
      if (!isGatewayFailure(error)) throw error;
      if (state === null) {
        neverLoaded = error;
      } else if (outage === null) {
        outage = error;
        const entries = 'list' in state ? state.list.entries.length : null;
        logger.warn({ object: BLOCKLIST_OBJECT_NAME, detail: error.detail ?? error.message, keptEntries: entries }, 'blocklist: the gateway failed; the last list loaded stays in force');
      }
      return;
    }
    if (outage !== null) {
      logger.info({ object: BLOCKLIST_OBJECT_NAME }, 'blocklist: the gateway answers again');
      outage = null;
    }
    neverLoaded = null;
    if (answer === 'unchanged') return;
    const etag = answer === null ? null : answer.info.etag;
    try {
      const list = answer === null ? emptyBlocklist() : parsedOrThrow(answer.bytes);
      state = { etag, list: withConfigHosts(list, extraHosts) };
      options.onReload?.(state.list);
    } catch (error) {
      // Kept with its ETag: the object is not read again until it changes.
      state = { etag, error: error as Error };
    }
  }

  const refresh = recheckGate(check, options);
  return {
    async current() {
      await refresh();
      if (state === null) {
        const cause = neverLoaded;
        throw new ImageproxyError(cause?.code ?? 'internal', cause?.message ?? 'internal error', {
          cause,
          detail: `blocklist ${BLOCKLIST_OBJECT_NAME} never loaded, so every request is refused: ${cause?.detail ?? 'no answer yet'}`,
          ...(cause?.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: cause.retryAfterSeconds }),
        });
      }
      if ('error' in state) {
        throw new ImageproxyError('internal', 'internal error', {
          cause: state.error,
          detail: `blocklist ${BLOCKLIST_OBJECT_NAME} cannot be used: ${state.error.message}`,
        });
      }
      return state.list;
    },
  };
}
