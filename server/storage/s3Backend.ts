/**
 * A bucket of an S3 gateway as the image backend (server/storage/imageBackend.ts): one
 * object per image named by server/storage/objectNames.ts (no extension: its
 * Content-Type says the format), the sidecar's facts as the original's metadata and a
 * thumbnail's record as its own (server/storage/objectMetadata.ts).
 *
 * - An original is stored with `create` (`If-None-Match: *`): of nodes that fetched the
 *   same image at once, one object wins and the others discard their bytes and answer
 *   the winner's. Within a node the single-flight lock (host or tree scope, named after
 *   the node's own root) keeps it to one fetch.
 * - A thumbnail or a format class's file is a plain PUT, after its original's: a reader
 *   never finds a thumbnail whose original is missing. A class file that did not pay is
 *   a copy of the source-format thumbnail's bytes under the class's name (a bucket has no
 *   hard links).
 * - Backoff records live in memory, per node: they save an origin repeated failing
 *   fetches, and a node that restarts or another node tries once more, which costs one
 *   fetch, not a wrong answer. Bounded in count.
 */
import { createHash } from 'node:crypto';
import { classVariantStem, fileStem, type ImageExtension } from '../contract/layout.js';
import { ImageproxyError } from '../errors.js';
import type { FailureRecord } from '../fetch/backoff.js';
import { FORMAT_INFO, type ImageFormat } from '../images/sniff.js';
import { originalMetadata, sha256Hex, type OriginalImage, type OriginalProvenance, type VariantRecord } from '../tree/originals.js';
import type { ImageStore, StagedFile, StoredImage, ThumbnailToCommit } from '../tree/store.js';
import type { ImageBackend, OpenedImage } from './imageBackend.js';
import { originalObjectMetadata, variantObjectMetadata } from './objectMetadata.js';
import { imageObjectName } from './objectNames.js';
import type { ObjectInfo, ObjectStore } from './objectStore.js';

/** Backoff records one node keeps at most; past it the oldest go (each costs the origin one more try). */
const MAX_FAILURE_RECORDS = 10_000;

const SHA256_PATTERN = /^[0-9a-f]{64}$/;

/** An image object the lookup cannot serve (a type that is no image of ours): removed, so it is made again. */
interface DamagedObjectEvent {
  relativePath: string;
  reason: string;
}

export interface S3BackendOptions {
  /**
   * The node's own tree (its root): the single-flight locks are named after it, so the
   * processes of one node share them and other nodes' do not. Nothing else is written there.
   */
  locks: ImageStore;
  onDamaged?: (event: DamagedObjectEvent) => void;
  now?: () => number;
}

/** The extension of an image object's Content-Type, or null when it is none of ours. */
function extensionOfContentType(contentType: string): ImageExtension | null {
  const type = (contentType.split(';')[0] ?? '').trim().toLowerCase();
  const format = (Object.keys(FORMAT_INFO) as ImageFormat[]).find((candidate) => FORMAT_INFO[candidate].contentType === type);
  return format === undefined ? null : FORMAT_INFO[format].ext;
}

function contentTypeOf(ext: ImageExtension): string {
  const format = (Object.keys(FORMAT_INFO) as ImageFormat[]).find((candidate) => FORMAT_INFO[candidate].ext === ext);
  if (format === undefined) throw new Error(`no content type for .${ext}`);
  return FORMAT_INFO[format].contentType;
}

/** What S3 answers as the ETag of a single-part PUT without SSE-KMS: the bytes' MD5. */
function md5Hex(bytes: Uint8Array): string {
  return createHash('md5').update(bytes).digest('hex');
}

export function createS3Backend(objects: ObjectStore, options: S3BackendOptions): ImageBackend {
  const now = options.now ?? Date.now;
  const failures = new Map<string, FailureRecord>();

  const storedOfInfo = (info: ObjectInfo, ext: ImageExtension): StoredImage => {
    const sha256 = info.metadata.sha256;
    return {
      path: '',
      relativePath: info.name,
      ext,
      bytes: info.bytes,
      modifiedMs: info.modifiedMs,
      object: { etag: info.etag, sha256: sha256 !== undefined && SHA256_PATTERN.test(sha256) ? sha256 : null },
    };
  };

  /** What this node has just PUT: the facts as the gateway keeps them, without asking it again. */
  const storedOfPut = (name: string, ext: ImageExtension, bytes: Uint8Array, sha256: string): StoredImage => ({
    path: '',
    relativePath: name,
    ext,
    bytes: bytes.length,
    modifiedMs: now(),
    object: { etag: md5Hex(bytes), sha256 },
  });

  async function findObject(name: string): Promise<StoredImage | null> {
    const info = await objects.head(name);
    if (info === null) return null;
    const ext = extensionOfContentType(info.contentType);
    if (ext !== null && info.bytes > 0) return storedOfInfo(info, ext);
    await objects.delete(name);
    options.onDamaged?.({ relativePath: name, reason: info.bytes === 0 ? 'empty' : `type ${info.contentType} is no image of ours` });
    return null;
  }

  async function put(name: string, ext: ImageExtension, bytes: Uint8Array, record: VariantRecord): Promise<StoredImage> {
    await objects.put(name, bytes, { contentType: contentTypeOf(ext), metadata: variantObjectMetadata(record) });
    return storedOfPut(name, ext, bytes, record.sha256);
  }

  async function storeOriginal(bucket: string, key: string, image: OriginalImage, provenance: OriginalProvenance): Promise<StoredImage> {
    const name = imageObjectName(bucket, key, key);
    const facts = originalMetadata(image, provenance);
    const { ext } = FORMAT_INFO[image.format];
    const body = { contentType: facts.contentType, metadata: originalObjectMetadata(facts) };
    // Twice at most: a winner's object removed (purged) between our create and our look at it.
    for (let attempt = 0; attempt < 2; attempt += 1) {
      if ((await objects.create(name, image.bytes, body)) === 'created') return storedOfPut(name, ext, image.bytes, facts.sha256);
      const winner = await findObject(name);
      if (winner !== null) return winner;
    }
    throw new ImageproxyError('not_stored', 'image is not stored', { detail: `${name}: created by another writer, then gone` });
  }

  /** A thumbnail's bytes held until its commit, which PUTs them. */
  function stagedObject(name: string, ext: ImageExtension, bytes: Uint8Array): StagedFile {
    const commit = (): Promise<StoredImage> => put(name, ext, bytes, { bytes: bytes.length, sha256: sha256Hex(bytes), contentType: contentTypeOf(ext) });
    return { commit, place: commit, discard: () => Promise.resolve() };
  }

  const failureId = (bucket: string, key: string, stem: string): string => imageObjectName(bucket, key, stem);

  return {
    kind: 's3',
    find: (bucket, key, variantLabel) => findObject(imageObjectName(bucket, key, fileStem(key, variantLabel))),
    findClassVariant: (bucket, key, variantLabel, format) => findObject(imageObjectName(bucket, key, classVariantStem(key, variantLabel, format))),

    async readImage(stored, maxBytes) {
      if (stored.bytes > maxBytes) {
        throw new ImageproxyError('bad_image', 'image cannot be resized', { detail: `${stored.relativePath}: over limits.maxBytes` });
      }
      const got = await objects.get(stored.relativePath, { maxBytes });
      if (got === null) throw new ImageproxyError('not_stored', 'image is not stored', { detail: `${stored.relativePath} removed since it was looked up` });
      return got.bytes;
    },

    async openImage(stored, openOptions = {}): Promise<OpenedImage | null> {
      const opened = await objects.open(stored.relativePath, openOptions);
      if (opened === null) return null;
      const { info, body, range } = opened;
      return { bytes: info.bytes, contentType: info.contentType, etag: info.etag, modifiedMs: info.modifiedMs, body, range };
    },

    storeOriginal,

    async storeOriginalWithThumbnail(bucket, key, image, provenance, thumbnail: Promise<ThumbnailToCommit | null>) {
      // The original's create runs beside the resize; the thumbnail's PUT comes after it.
      const original = storeOriginal(bucket, key, image, provenance);
      original.catch(() => undefined);
      const made = await thumbnail;
      let stored: StoredImage;
      try {
        stored = await original;
      } catch (error) {
        await made?.staged.then((staged) => staged.discard()).catch(() => undefined);
        throw error;
      }
      if (made === null) return { original: stored, thumbnail: null };
      try {
        return { original: stored, thumbnail: { status: 'fulfilled', value: await (await made.staged).commit() } };
      } catch (error) {
        return { original: stored, thumbnail: { status: 'rejected', reason: error } };
      }
    },

    stageImage: (bucket, key, variantLabel, ext, bytes) => Promise.resolve(stagedObject(imageObjectName(bucket, key, fileStem(key, variantLabel)), ext, bytes)),

    async commitVariant(bucket, key, label, ext, bytes, record, original) {
      await original;
      return put(imageObjectName(bucket, key, fileStem(key, label)), ext, bytes, record);
    },

    commitClassVariant: (bucket, key, label, format, ext, bytes, record) => put(imageObjectName(bucket, key, classVariantStem(key, label, format)), ext, bytes, record),

    commitClassLink: (bucket, key, label, format, source, bytes, record) => put(imageObjectName(bucket, key, classVariantStem(key, label, format)), source.ext, bytes, record),

    readFailure: (bucket, key, stem) => Promise.resolve(failures.get(failureId(bucket, key, stem)) ?? null),

    writeFailure(bucket, key, stem, record) {
      const id = failureId(bucket, key, stem);
      failures.delete(id);
      failures.set(id, record);
      if (failures.size > MAX_FAILURE_RECORDS) {
        const oldest = failures.keys().next();
        if (oldest.done !== true) failures.delete(oldest.value);
      }
      return Promise.resolve();
    },

    clearFailure(bucket, key, stem) {
      failures.delete(failureId(bucket, key, stem));
      return Promise.resolve();
    },

    // The store's failures are ours already (storage_unavailable, storage_denied, storage_failed).
    explainWriteFailure: (thrown) => Promise.resolve(thrown),
    // Nothing to prepare: a bucket that cannot take the PUT says so then.
    prepareToWrite: () => Promise.resolve(),
    hostLockName: (bucket, key) => options.locks.hostLockName(bucket, key),
    prepareLock: (bucket, key) => options.locks.prepareLock(bucket, key),
  };
}
