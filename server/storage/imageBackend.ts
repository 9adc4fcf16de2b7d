/**
 * Where the image service keeps images: the tree on disk (server/tree/store.ts) or a
 * bucket of an S3 gateway (server/storage/s3Backend.ts). One interface, the calls a miss
 * makes today, so the service (server/service/) never asks which one it has.
 *
 * The tree's steps keep their names: a "staged" image is one ready to be made visible,
 * a "commit" makes it visible whole. For the tree that is a temp file renamed into place;
 * for a bucket the bytes held in memory and one PUT (the PUT is the atomic commit).
 */
import type { Readable } from 'node:stream';
import type { ByteRange, OpenOptions } from './objectStore.js';
import type { ImageStore, StoredImage } from '../tree/store.js';

/** A stored image opened for sending: its facts as the store has them now, and its bytes as a stream. */
export interface OpenedImage {
  bytes: number;
  contentType: string;
  etag: string;
  modifiedMs: number;
  /** The bytes `range` names, or the whole image when it is null. The caller must consume or destroy it. */
  body: Readable;
  range: ByteRange | null;
}

/** The calls of the tree's store (server/tree/store.ts) the service makes, with their meaning there. */
type StoreCalls = Pick<
  ImageStore,
  | 'find'
  | 'findClassVariant'
  | 'readImage'
  | 'storeOriginal'
  | 'storeOriginalWithThumbnail'
  | 'stageImage'
  | 'commitVariant'
  | 'commitClassVariant'
  | 'commitClassLink'
  | 'readFailure'
  | 'writeFailure'
  | 'clearFailure'
  | 'explainWriteFailure'
  | 'prepareToWrite'
  | 'hostLockName'
  | 'prepareLock'
>;

/**
 * ImageStore's calls, as a bucket means them too: `storeOriginal` stores only if absent
 * and answers the winner's object when another node stored it first; `stageImage` holds
 * the bytes for a commit that PUTs them; `commitClassLink` stores a copy of the source
 * thumbnail's bytes; failure records are the node's, in memory; `prepareToWrite` has
 * nothing to prepare; the locks stay the node's own (its root).
 */
export interface ImageBackend extends StoreCalls {
  /** `tree` or `s3`: for logs only; the service never branches on it. */
  readonly kind: 'tree' | 's3';
  /** An object's bytes as a stream for delivery, or null when it went away (the tree's files are sent by path). */
  openImage(stored: StoredImage, options?: OpenOptions): Promise<OpenedImage | null>;
}

/** The tree as an image backend: ImageStore's own calls, unchanged. */
export function treeBackend(store: ImageStore): ImageBackend {
  return {
    kind: 'tree',
    find: (bucket, key, variantLabel, likelyExt = null) => store.find(bucket, key, variantLabel, likelyExt),
    findClassVariant: (bucket, key, variantLabel, format) => store.findClassVariant(bucket, key, variantLabel, format),
    readImage: (stored, maxBytes) => store.readImage(stored, maxBytes),
    // The app sends a file by its path (sendFile: Range, conditional requests).
    openImage: () => Promise.resolve(null),
    storeOriginal: (bucket, key, image, provenance) => store.storeOriginal(bucket, key, image, provenance),
    storeOriginalWithThumbnail: (bucket, key, image, provenance, thumbnail) => store.storeOriginalWithThumbnail(bucket, key, image, provenance, thumbnail),
    stageImage: (bucket, key, variantLabel, ext, bytes) => store.stageImage(bucket, key, variantLabel, ext, bytes),
    commitVariant: (bucket, key, label, ext, bytes, record, original) => store.commitVariant(bucket, key, label, ext, bytes, record, original),
    commitClassVariant: (bucket, key, label, format, ext, bytes, record) => store.commitClassVariant(bucket, key, label, format, ext, bytes, record),
    commitClassLink: (bucket, key, label, format, source, bytes, record) => store.commitClassLink(bucket, key, label, format, source, bytes, record),
    readFailure: (bucket, key, stem) => store.readFailure(bucket, key, stem),
    writeFailure: (bucket, key, stem, record) => store.writeFailure(bucket, key, stem, record),
    clearFailure: (bucket, key, stem) => store.clearFailure(bucket, key, stem),
    explainWriteFailure: (thrown, bucket, key) => store.explainWriteFailure(thrown, bucket, key),
    prepareToWrite: (bucket, key) => store.prepareToWrite(bucket, key),
    hostLockName: (bucket, key) => store.hostLockName(bucket, key),
    prepareLock: (bucket, key) => store.prepareLock(bucket, key),
  };
}
