/**
 * What a takedown does to the images in an S3 bucket: remove every object of a key (the
 * original, every thumbnail of every size and format class: the objects named
 * `{bucket}/{k0}/{k1}/{key}` and `{key}.…`, found by one listing), read the digests of a
 * stored original before it goes, and sweep a bucket for originals whose metadata names
 * a blocked host or digest (the bucket's form of server/takedown/sidecarSweep.ts: one
 * listing, one HEAD per original). Thin I/O over the store.
 */
import { keyDirectory } from '../contract/layout.js';
import { originalFactsOf } from '../storage/objectMetadata.js';
import { imageObjectName, parseImageObjectName } from '../storage/objectNames.js';
import type { ObjectStore } from '../storage/objectStore.js';
import { sha256Hex } from '../tree/originals.js';
import { sweepStored, type StoredMatch, type SweepOptions, type SweptOriginal, type SweepResult } from './sidecarSweep.js';

/** Removes every object of the key in `bucket`; answers their names, in name order. */
export async function removeKeyObjects(store: ObjectStore, bucket: string, key: string): Promise<string[]> {
  const stem = `${keyDirectory(bucket, key)}/${key}`;
  const names: string[] = [];
  for await (const listed of store.list(stem)) {
    // A key has 43 characters: a longer name with this start is another key's, never ours to remove.
    if (listed.name === stem || listed.name.startsWith(`${stem}.`)) names.push(listed.name);
  }
  for (const name of names) await store.delete(name);
  return names;
}

/**
 * The sha256 of each stored original of the key: of its bytes (read when within
 * `maxImageBytes`), and its metadata's when that says otherwise (an object altered
 * behind its metadata's back: both are blocked).
 */
export async function storedObjectDigests(store: ObjectStore, buckets: readonly string[], key: string, maxImageBytes: number): Promise<string[]> {
  const digests = new Set<string>();
  for (const bucket of buckets) {
    const name = imageObjectName(bucket, key, key);
    const info = await store.head(name);
    if (info === null) continue;
    const recorded = info.metadata.sha256;
    if (recorded !== undefined && /^[0-9a-f]{64}$/.test(recorded)) digests.add(recorded);
    if (info.bytes > maxImageBytes) continue;
    const found = await store.get(name, { maxBytes: maxImageBytes });
    if (found !== null) digests.add(sha256Hex(found.bytes));
  }
  return [...digests].sort();
}

/** The bucket's originals, by a listing; their facts are their metadata (one HEAD each). */
async function* objectOriginals(store: ObjectStore, bucket: string): AsyncIterable<SweptOriginal> {
  for await (const listed of store.list(`${bucket}/`)) {
    const image = parseImageObjectName(listed.name);
    if (image === null || image.label !== null) continue;
    yield {
      key: image.key,
      readFacts: async () => {
        const info = await store.head(listed.name);
        return info === null ? null : originalFactsOf(info.metadata, info);
      },
    };
  }
}

/**
 * Lists `buckets` and removes every key whose original's metadata `match` names, except
 * `skipKeys`. A key's objects are removed while the listing goes on: they sort right
 * after its original, so the listing only misses what went.
 */
export function removeObjectsMatching(store: ObjectStore, buckets: readonly string[], match: StoredMatch, options: SweepOptions): Promise<SweepResult> {
  return sweepStored({ originals: (bucket) => objectOriginals(store, bucket), removeKey: (bucket, key) => removeKeyObjects(store, bucket, key) }, buckets, match, options);
}
