/**
 * What the image store needs from a bucket of objects: the operations of S3 that the
 * tree's file work maps onto, nothing more. Names are store names, `/`-separated and
 * relative (server/storage/objectNames.ts); an implementation adds its own prefix.
 *
 * - A put is the atomic commit: the object appears whole, with its type and metadata,
 *   or not at all (an upload cut short leaves nothing), and a reader sees the old or the
 *   new object, never a mix.
 * - Absence is an answer, not a failure: get and head answer null.
 * - Every call is bounded in time; a failure throws an ImageproxyError with a storage_*
 *   code (server/storage/storageErrors.ts).
 */
import type { Readable } from 'node:stream';

export interface ObjectInfo {
  name: string;
  bytes: number;
  contentType: string;
  /** The gateway's entity tag, quotes removed (for a single-part PUT, the MD5 of the bytes). */
  etag: string;
  modifiedMs: number;
  /** User metadata, names lower-cased (server/storage/objectMetadata.ts). */
  metadata: Readonly<Record<string, string>>;
}

export interface ListedObject {
  name: string;
  bytes: number;
  etag: string;
  modifiedMs: number;
}

export interface PutOptions {
  contentType: string;
  metadata?: Readonly<Record<string, string>>;
  /** Required for a stream body: S3 needs the length up front. */
  bytes?: number;
  /** The caller gave up (its client went away): the upload is abandoned and leaves nothing. */
  signal?: AbortSignal;
}

export interface GetOptions {
  /** More bytes than this fail with `storage_failed` before or while reading: never buffered past it. */
  maxBytes: number;
  signal?: AbortSignal;
}

export type ObjectBody = Uint8Array | Readable;

/** Bytes `start` to `end` of an object, both included (an HTTP byte range). */
export interface ByteRange {
  start: number;
  end: number;
}

export interface OpenOptions {
  signal?: AbortSignal;
  /** Only these bytes; the gateway may still answer the whole object (then `range` is null). */
  range?: ByteRange;
}

export interface OpenedObject {
  /** `bytes` is the whole object's size, ranged or not. */
  info: ObjectInfo;
  /** The bytes asked for (`range`), or the whole object when `range` is null. */
  body: Readable;
  range: ByteRange | null;
}

export interface ObjectStore {
  /** Stores the object whole, replacing any object of that name. */
  put(name: string, body: ObjectBody, options: PutOptions): Promise<void>;
  /**
   * Stores the object only if none of that name exists (`If-None-Match: *`): `exists`
   * when another writer got there first, whose object is left as it is.
   */
  create(name: string, body: ObjectBody, options: PutOptions): Promise<'created' | 'exists'>;
  /**
   * Replaces the object only while its ETag is still `etag` (`If-Match`): `changed` when
   * another writer replaced or removed it since it was read, which is then left as it is.
   * With create, the compare-and-swap of a read-modify-write: S3 has no lock.
   */
  replace(name: string, body: ObjectBody, options: PutOptions, etag: string): Promise<'replaced' | 'changed'>;
  /** The object's bytes and facts, or null when it is absent. */
  get(name: string, options: GetOptions): Promise<{ info: ObjectInfo; bytes: Buffer } | null>;
  /**
   * A conditional get (`If-None-Match` on `etag`): `unchanged` while the object's ETag is
   * still `etag`, else as get. A null `etag` makes it a plain get. What a watcher polls
   * with: an unchanged object costs one small answer, not its bytes.
   */
  getChanged(name: string, etag: string | null, options: GetOptions): Promise<{ info: ObjectInfo; bytes: Buffer } | null | 'unchanged'>;
  /** The object, or a range of it, as a stream (the caller must consume or destroy it), or null when it is absent. */
  open(name: string, options?: OpenOptions): Promise<OpenedObject | null>;
  head(name: string): Promise<ObjectInfo | null>;
  /** Removes the object; removing an absent object is no error. */
  delete(name: string): Promise<void>;
  /** Every object whose name starts with `namePrefix`, in name order, fetched a page at a time. */
  list(namePrefix: string, options?: { pageSize?: number }): AsyncIterable<ListedObject>;
}
