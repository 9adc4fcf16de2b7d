/**
 * The statistics of the images in an S3 bucket, as the tree's (server/stats/treeStatsWalk.ts)
 * and in its form (server/stats/treeStats.ts): a streaming listing of each of our buckets
 * (`{bucket}/`, a page at a time, in name order, so a shard `{k0}/{k1}` comes whole), every
 * name classified (server/storage/objectNames.ts), and one HEAD per image for what a
 * listing does not say: its type (the figures by type) and, for an original, when it was
 * fetched (its metadata). A bucket has no sidecars, temp files, backoff records or hard
 * links: a format class's object holds its own bytes. Read-only.
 */
import { SHARDS_PER_BUCKET, isImageExtension, type ImageExtension } from '../contract/layout.js';
import { FORMAT_INFO } from '../images/sniff.js';
import { originalFactsOf } from '../storage/objectMetadata.js';
import { parseImageObjectName, treeFileNameOfObject, type ImageObjectName } from '../storage/objectNames.js';
import type { ListedObject, ObjectStore } from '../storage/objectStore.js';
import { readBucketBlocklist } from '../takedown/bucketBlocklist.js';
import { addFormatFile, addTreeFile, countBlocked, emptyBucketStats, emptyFormatFigures, type BucketStats, type FormatFigures, type TreeStats } from './treeStats.js';

/** HEADs in flight at once: enough to hide the gateway's round trip, few enough not to crowd it. */
const HEAD_CONCURRENCY = 8;

export interface BucketStatsWalkOptions {
  store: ObjectStore;
  /** Where the objects are (`s3://bucket/prefix/`): the report's root. */
  where: string;
  buckets: readonly string[];
  /** Aborted: stop after the current shard; the result says `complete: false`. */
  signal?: AbortSignal;
  onShardDone?: (bucket: string) => void;
  onBucketDone?: (bucket: string, shardsWithObjects: number) => void;
  now?: () => number;
}

const EXTENSION_OF_TYPE: ReadonlyMap<string, ImageExtension> = new Map(Object.values(FORMAT_INFO).map((info) => [info.contentType, info.ext]));

/** The extension a stored type stands for (`image/jpeg; charset=…` too), or null for a type that is none of ours. */
function extensionOfType(contentType: string): ImageExtension | null {
  const ext = EXTENSION_OF_TYPE.get(contentType.split(';')[0]?.trim().toLowerCase() ?? '');
  return ext !== undefined && isImageExtension(ext) ? ext : null;
}

interface PendingObject {
  listed: ListedObject;
  image: ImageObjectName;
}

/** Adds one shard's images, their HEADs overlapping; an object gone since the listing is not counted. */
async function addObjects(store: ObjectStore, totals: BucketStats, formats: FormatFigures, objects: readonly PendingObject[]): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < objects.length) {
      const pending = objects[next];
      next += 1;
      if (pending === undefined) continue;
      const info = await store.head(pending.listed.name);
      if (info === null) continue;
      const original = pending.image.label === null;
      const fetchedAt = original ? originalFactsOf(info.metadata, info)?.fetchedAt : undefined;
      const ext = extensionOfType(info.contentType);
      const file = {
        kind: original ? ('original' as const) : ('thumbnail' as const),
        ...(ext === null ? {} : { name: treeFileNameOfObject(pending.image, ext) }),
        bytes: info.bytes,
        modifiedMs: fetchedAt === undefined ? info.modifiedMs : Date.parse(fetchedAt),
      };
      addTreeFile(totals, file);
      addFormatFile(formats, file);
    }
  };
  await Promise.all(Array.from({ length: Math.min(HEAD_CONCURRENCY, objects.length) }, worker));
}

export async function walkBucketStats(options: BucketStatsWalkOptions): Promise<TreeStats> {
  const { store } = options;
  const now = options.now ?? Date.now;
  const startedMs = now();
  const buckets: Record<string, BucketStats> = {};
  const formats: Record<string, FormatFigures> = {};
  let shardsWalked = 0;
  let interrupted = false;
  const aborted = (): boolean => options.signal?.aborted === true;

  let blocked: TreeStats['blocked'] = null;
  let blockedError: string | null = null;
  try {
    blocked = countBlocked((await readBucketBlocklist(store)).list.entries);
  } catch (error) {
    blockedError = (error as Error).message;
  }

  for (const bucket of options.buckets) {
    if (aborted()) {
      interrupted = true;
      break;
    }
    const totals = emptyBucketStats();
    buckets[bucket] = totals;
    const figures = emptyFormatFigures();
    formats[bucket] = figures;
    let shard: string | null = null;
    let shardsWithObjects = 0;
    let objects: PendingObject[] = [];
    const finishShard = async (): Promise<void> => {
      await addObjects(store, totals, figures, objects);
      objects = [];
      shardsWithObjects += 1;
      options.onShardDone?.(bucket);
    };

    for await (const listed of store.list(`${bucket}/`)) {
      const parts = listed.name.split('/');
      const objectShard = parts.length === 4 ? `${parts[1]}/${parts[2]}` : '';
      if (objectShard !== shard) {
        if (shard !== null) await finishShard();
        shard = objectShard;
        if (aborted()) {
          interrupted = true;
          shard = null;
          break;
        }
      }
      const image = parseImageObjectName(listed.name);
      if (image === null || image.bucket !== bucket) addTreeFile(totals, { kind: 'other' });
      else objects.push({ listed, image });
    }
    if (shard !== null) await finishShard();
    shardsWalked += interrupted ? shardsWithObjects : SHARDS_PER_BUCKET;
    if (interrupted) break;
    options.onBucketDone?.(bucket, Math.min(shardsWithObjects, SHARDS_PER_BUCKET));
  }

  return {
    complete: !interrupted,
    root: options.where,
    buckets,
    formats,
    blocked,
    blockedError,
    shardsWalked,
    shardsTotal: options.buckets.length * SHARDS_PER_BUCKET,
    startedMs,
    durationMs: now() - startedMs,
  };
}
