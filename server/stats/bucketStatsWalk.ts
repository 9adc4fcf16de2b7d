/**
 * The statistics of the images in an S3 bucket, as the tree's (server/stats/treeStatsWalk.ts)
 * and in its form (server/stats/treeStats.ts): a streaming listing of each of our buckets
 * (`{bucket}/`, a page at a time, in name order, so a shard `{k0}/{k1}` comes whole), every
 * name classified (server/storage/objectNames.ts), and one HEAD per image for what a
 * listing does not say: its type (the figures by type) and, for an original, when it was
 * fetched (its metadata). A bucket has no sidecars, temp files, backoff records or hard
 * links: a format class's object holds its own bytes. Read-only.
 */
import { isImageExtension, type ImageExtension } from '../contract/layout.js';
import { FORMAT_INFO } from '../images/sniff.js';
import { originalFactsOf } from '../storage/objectMetadata.js';
import { parseImageObjectName, treeFileNameOfObject, type ImageObjectName } from '../storage/objectNames.js';
import type { ListedObject, ObjectStore } from '../storage/objectStore.js';
import { readBucketBlocklist } from '../takedown/bucketBlocklist.js';
import { walkStats, type StatsWalkOptions } from './statsWalk.js';
import { addFormatFile, addTreeFile, type BucketStats, type FormatFigures, type TreeStats } from './treeStats.js';

/** HEADs in flight at once: enough to hide the gateway's round trip, few enough not to crowd it. */
const HEAD_CONCURRENCY = 8;

export interface BucketStatsWalkOptions extends StatsWalkOptions {
  store: ObjectStore;
  /** Where the objects are (`s3://bucket/prefix/`): the report's root. */
  where: string;
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
  return walkStats<PendingObject>(
    {
      root: options.where,
      readBlocklist: async () => (await readBucketBlocklist(store)).list,
      async *entries(bucket) {
        for await (const listed of store.list(`${bucket}/`)) {
          const parts = listed.name.split('/');
          const shard = parts.length === 4 ? `${parts[1]}/${parts[2]}` : '';
          const image = parseImageObjectName(listed.name);
          yield image === null || image.bucket !== bucket ? { shard, other: 'other' } : { shard, image: { listed, image } };
        }
      },
      measure: (totals, formats, objects) => addObjects(store, totals, formats, objects),
    },
    options,
  );
}
