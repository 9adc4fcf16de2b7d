/**
 * The checks behind `/readyz` and the start refusal: the tree takes a write (write, fsync,
 * rename and remove a probe file in `{root}/.imageproxy/`), so does every bucket
 * directory, the resize engine answers, and with `storage.type: "s3"` the bucket takes
 * a PUT, GET and DELETE of an object of this node's own.
 * Thin I/O; each check throws an Error whose message names what failed.
 */
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { isImageproxyError } from '../errors.js';
import type { ObjectStore } from '../storage/objectStore.js';
import type { ResizeEngine } from '../images/engine.js';
import { STATE_DIRECTORY } from '../contract/layout.js';
import { writerUnique } from '../tree/atomicFile.js';

/** A 2 × 2 grey PNG: the smallest real work both engines do end to end. */
const PROBE_IMAGE = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAACXBIWXMAAAPoAAAD6AG1e1JrAAAADklEQVQImWNoAAMGCAUAKg4GAeLeQoEAAAAASUVORK5CYII=',
  'base64',
);

export interface ReadinessReport {
  ready: boolean;
  /** Each check by name: `ok`, or why it failed. */
  checks: Record<string, string>;
}

/**
 * Creates the root and its state directory if needed, then writes, fsyncs, renames and
 * removes a probe file there: the steps every stored file takes (server/tree/store.ts).
 */
export async function probeTreeWritable(root: string): Promise<void> {
  const directory = join(root, STATE_DIRECTORY);
  await mkdir(root, { recursive: true });
  // Not recursive: a recursive mkdir reports a read-only filesystem as ENOENT.
  await mkdir(directory).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'EEXIST') throw error;
  });
  await probeDirectoryWritable(directory);
}

/** Writes, fsyncs, renames and removes a probe file in `directory`. */
async function probeDirectoryWritable(directory: string): Promise<void> {
  const unique = writerUnique();
  const temporary = join(directory, `.readyz.${unique}.tmp`);
  const probe = join(directory, `.readyz.${unique}.probe`);
  try {
    const handle = await open(temporary, 'wx', 0o600);
    try {
      await handle.writeFile('ready\n');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, probe);
  } finally {
    await rm(temporary, { force: true });
    await rm(probe, { force: true });
  }
}

/**
 * One check per bucket, named `bucket NAME`: its directory takes a probe write. A bucket
 * may sit on a mount or have an owner of its own, so the root's check says nothing about
 * it. A bucket directory not made yet passes: the store creates it under the root, which
 * the tree check probes.
 */
export function bucketChecks(root: string, buckets: readonly string[]): Record<string, () => Promise<void>> {
  return Object.fromEntries(
    buckets.map((bucket): [string, () => Promise<void>] => [
      `bucket ${bucket}`,
      async () => {
        const directory = join(root, bucket);
        const exists = await stat(directory).then(
          () => true,
          (error: NodeJS.ErrnoException) => {
            if (error.code === 'ENOENT') return false;
            throw error;
          },
        );
        if (exists) await probeDirectoryWritable(directory);
      },
    ]),
  );
}

/** This process among the nodes sharing a bucket: host name and pid, as object-name characters. */
export function storageNodeId(): string {
  return `${hostname().replace(/[^A-Za-z0-9._-]/g, '_')}.${process.pid}`;
}

/** `.imageproxy/readyz/{node}`: the bucket probe's object, one per process so probes never race. */
function readinessObjectName(nodeId: string): string {
  return `${STATE_DIRECTORY}/readyz/${nodeId}`;
}

/**
 * PUTs, GETs (same bytes) and DELETEs the node's probe object, all within `timeoutMs`:
 * the bucket is reachable, our credentials are taken, and it keeps what it is given. A
 * failure's message says the store's code and what the gateway said.
 */
export async function probeObjectStore(objects: ObjectStore, nodeId: string, timeoutMs: number): Promise<void> {
  const name = readinessObjectName(nodeId);
  const body = Buffer.from(`ready ${nodeId}\n`);
  const deadline = AbortSignal.timeout(timeoutMs);
  const probe = (async () => {
    await objects.put(name, body, { contentType: 'text/plain', signal: deadline });
    const got = await objects.get(name, { maxBytes: 1024, signal: deadline });
    if (got === null || !got.bytes.equals(body)) throw new Error(`${name} read back ${got === null ? 'absent' : 'with other bytes'}`);
    await objects.delete(name);
  })();
  const timedOut = new Promise<never>((_resolve, reject) => {
    deadline.addEventListener('abort', () => reject(new Error(`bucket probe ${name}: no answer within ${timeoutMs} ms`)), { once: true });
  });
  try {
    await Promise.race([probe, timedOut]);
  } catch (error) {
    probe.catch(() => undefined);
    if (deadline.aborted) throw new Error(`bucket probe ${name}: no answer within ${timeoutMs} ms`, { cause: error });
    if (isImageproxyError(error)) throw new Error(`${error.code}: ${error.detail ?? error.message}`, { cause: error });
    throw error;
  }
}

/** Resizes a tiny image: the engine (sharp's library, jimp's workers) is loaded and answers. */
export async function probeEngine(engine: ResizeEngine): Promise<void> {
  const result = await engine.resize({ input: PROBE_IMAGE, format: 'png', maxHeight: 1, maxWidth: 1 });
  if (result.width !== 1 || result.height !== 1) {
    throw new Error(`engine ${engine.name} made ${result.width}x${result.height} of a 1x1 request`);
  }
}

/** Runs every check; one failing does not hide the others. */
export async function checkReadiness(checks: Record<string, () => Promise<void>>): Promise<ReadinessReport> {
  const entries = await Promise.all(
    Object.entries(checks).map(async ([name, check]): Promise<[string, string]> => {
      try {
        await check();
        return [name, 'ok'];
      } catch (error) {
        return [name, error instanceof Error ? error.message : String(error)];
      }
    }),
  );
  return { ready: entries.every(([, verdict]) => verdict === 'ok'), checks: Object.fromEntries(entries) };
}
