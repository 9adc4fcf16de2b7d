/**
 * Where a takedown acts: the tree on disk or an S3 bucket. The takedown commands (purge,
 * block, unblock) do the same steps on either; this is what differs: the blocklist's
 * home and how it is changed safely, the audit log's form, how a key's images are
 * removed, found and swept.
 *
 * - Tree: `{root}/.imageproxy/blocklist.json` under a file lock, `audit.log` appended,
 *   files by the image store (server/tree/store.ts), sidecars swept.
 * - Bucket: `.imageproxy/blocklist.json` by compare-and-swap
 *   (server/takedown/bucketBlocklist.ts), one audit object per record
 *   (server/takedown/bucketAudit.ts), objects listed and deleted
 *   (server/takedown/bucketImages.ts).
 */
import { join, relative } from 'node:path';
import type { AuditRecord } from './audit.js';
import { appendAuditRecord } from './auditStore.js';
import { appendBucketAuditRecord } from './bucketAudit.js';
import { updateBucketBlocklist } from './bucketBlocklist.js';
import { removeKeyObjects, removeObjectsMatching, storedObjectDigests } from './bucketImages.js';
import type { Blocklist } from './blocklist.js';
import { updateBlocklist } from './blocklistStore.js';
import { removeStoredMatching, type StoredMatch, type SweepResult } from './sidecarSweep.js';
import { metadataFileName } from '../contract/layout.js';
import type { ObjectStore } from '../storage/objectStore.js';
import { parseSidecarFields, sha256Hex } from '../tree/originals.js';
import { readRegularFile, readRegularText } from '../tree/regularFile.js';
import { ImageStore } from '../tree/store.js';

export interface TakedownStore {
  /** What the sweep reads per original, for its report line. */
  readonly sweepReads: string;
  /** Reads the blocklist, applies `change` and writes the result, safely beside other writers (`change` may run more than once). */
  updateBlocklist<T>(change: (list: Blocklist) => { list: Blocklist; result: T }): Promise<T>;
  appendAudit(record: AuditRecord): Promise<void>;
  /** Removes everything stored for the key in `bucket`: the names removed (tree: relative to the root; bucket: object names). */
  removeKey(bucket: string, key: string): Promise<string[]>;
  /** A removed name as the operator is shown it (tree: the absolute path). */
  shown(name: string): string;
  /** The sha256 of every stored original of the key: its bytes', and its recorded one if that says otherwise. */
  storedDigests(buckets: readonly string[], key: string, maxImageBytes: number): Promise<string[]>;
  /** Removes every key whose stored original `match` names (but `skipKeys`); names as removeKey's. */
  removeMatching(buckets: readonly string[], match: StoredMatch, options: { signal: AbortSignal; skipKeys?: ReadonlySet<string> }): Promise<SweepResult>;
}

export function treeTakedownStore(root: string): TakedownStore {
  const store = new ImageStore(root);
  return {
    sweepReads: 'sidecar(s)',
    updateBlocklist: (change) => updateBlocklist(root, change),
    appendAudit: (record) => appendAuditRecord(root, record),
    removeKey: async (bucket, key) => (await store.purge(bucket, key)).map((path) => relative(root, path)),
    shown: (name) => join(root, name),
    async storedDigests(buckets, key, maxImageBytes) {
      const digests = new Set<string>();
      for (const bucket of buckets) {
        const original = await store.find(bucket, key, null);
        if (original !== null) {
          const bytes = await readRegularFile(original.path, maxImageBytes).catch(() => null);
          if (bytes !== null) digests.add(sha256Hex(bytes));
        }
        const sidecar = await readRegularText(`${store.directoryOf(bucket, key)}/${metadataFileName(key)}`).catch(() => null);
        // A damaged sidecar records nothing: the file's own bytes were hashed above.
        const recorded = sidecar === null ? null : (parseSidecarFields(sidecar)?.sha256 ?? null);
        if (recorded !== null) digests.add(recorded);
      }
      return [...digests].sort();
    },
    removeMatching: (buckets, match, options) => removeStoredMatching(store, buckets, match, options),
  };
}

/** `where` names the bucket for the operator (`s3://bucket/prefix/`): removed objects are shown under it. */
export function bucketTakedownStore(store: ObjectStore, where: string): TakedownStore {
  return {
    sweepReads: "original(s)' metadata",
    updateBlocklist: (change) => updateBucketBlocklist(store, change),
    appendAudit: async (record) => {
      await appendBucketAuditRecord(store, record);
    },
    removeKey: (bucket, key) => removeKeyObjects(store, bucket, key),
    shown: (name) => `${where}${name}`,
    storedDigests: (buckets, key, maxImageBytes) => storedObjectDigests(store, buckets, key, maxImageBytes),
    removeMatching: (buckets, match, options) => removeObjectsMatching(store, buckets, match, options),
  };
}
