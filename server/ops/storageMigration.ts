/**
 * Copying the images between the tree and a bucket (`imageproxy migrate-storage`), both
 * ways, resumable: an object or file already there with the same sha256 is left as it
 * is, so a rerun after an interruption copies only the rest.
 *
 * Tree → bucket: every original with its sidecar's facts as object metadata
 * (server/storage/objectMetadata.ts), every thumbnail (source-format and format-class
 * files; a class file hard-linked to the source thumbnail becomes an object of its own),
 * the blocklist, and each line of the audit log as an audit object
 * (server/takedown/bucketAudit.ts) named by its time and digest. Every file is read through server/tree/regularFile.ts (no symlink
 * followed, capped) and checked before it leaves: bytes whose digest, type or size
 * disagree with the sidecar (or with their own name) stay behind with a report line, so
 * the bucket never holds damage the tree could have told. Sidecars, locks, backoff
 * records and temp files have no object.
 *
 * Bucket → tree: through ImageStore (server/tree/store.ts, its one atomic writer): the
 * original with a sidecar rebuilt from its metadata and its thumbnails' records, then
 * the thumbnails. An object whose bytes disagree with its own digest stays behind. The
 * audit objects are appended to the tree's log in time order, those it lacks only.
 *
 * The run stops at the first failure that is the gateway's rather than one object's
 * (unreachable, credentials refused, bucket missing): every later object would fail the
 * same way.
 */
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { classifyTreeFile, keyDirectory, keyOfTreeFile, metadataFileName, parseThumbnailName, variantRecordName, type ImageExtension } from '../contract/layout.js';
import { asError, isImageproxyError, type ImageproxyError } from '../errors.js';
import { FORMAT_INFO, formatFromExt, sniffImageType } from '../images/sniff.js';
import { originalFactsOf, originalObjectMetadata, variantObjectMetadata, variantRecordOfObject, type ObjectFacts } from '../storage/objectMetadata.js';
import { BLOCKLIST_OBJECT_NAME, imageObjectName, parseImageObjectName, treeFileNameOfObject, type ImageObjectName } from '../storage/objectNames.js';
import type { ObjectInfo, ObjectStore } from '../storage/objectStore.js';
import { isGatewayFailure } from '../storage/storageErrors.js';
import { blocklistPath } from '../takedown/blocklistStore.js';
import { appendAuditRecord, auditLogPath } from '../takedown/auditStore.js';
import {
  AUDIT_OBJECT_DIRECTORY,
  auditObjectTime,
  copiedAuditObjectName,
  parseAuditLine,
  readBucketAuditLog,
  readBucketAuditRecord,
} from '../takedown/bucketAudit.js';
import { writeFileAtomic } from '../tree/atomicFile.js';
import { parseJsonObject, sha256Hex, variantRecordsOf, type ImageMetadata, type VariantRecord } from '../tree/originals.js';
import { isIrregularFileError, readRegularFile, readRegularText } from '../tree/regularFile.js';
import type { ImageStore, StoredImage } from '../tree/store.js';
import { walkShardFiles } from '../tree/walk.js';

/** Far above any original limits.maxBytes admits; only a file past it is refused as too large. */
const MIGRATION_READ_CAP = 256 * 1024 * 1024;

/** The report's reasons: why an object or file was not copied (or was found wrong). */
export const MIGRATION_REASONS = {
  /** Its bytes disagree with their sidecar, their digest or their name: `imageproxy check --repair` first. */
  damaged: 'damaged',
  /** An original without a readable sidecar: its facts are unknown (`check --repair` rebuilds it). */
  noSidecar: 'no_sidecar',
  /** A symlink, FIFO or other non-regular entry: never followed, never copied. */
  notRegular: 'not_regular',
  /** An object under a bucket's name that no image of ours is named like: not copied into the tree. */
  notOurs: 'not_ours',
  /** The copy was there with the right digest in its metadata but other bytes (`--verify`): copied again. */
  altered: 'altered',
  /** Read back after the copy (`--verify`), the bytes differ. */
  verifyFailed: 'verify_failed',
  /** The tree's state file differs from the bucket's: left as it is. */
  stateDiffers: 'state_differs',
  /** A file or object that could not be read or written (disk, gateway): a rerun may copy it. */
  ioError: 'io_error',
} as const;
type MigrationReason = (typeof MIGRATION_REASONS)[keyof typeof MIGRATION_REASONS];

export interface MigrationProblem {
  reason: MigrationReason;
  /** The tree path (relative to the root) or the object name. */
  source: string;
  detail: string;
}

/** What became of one image or state file. */
export type MigrationOutcome = 'copied' | 'present' | 'failed';

interface MigrationEvents {
  onItem(outcome: MigrationOutcome): void;
  /** Every failure and every entry left behind, one each. */
  onProblem(problem: MigrationProblem): void;
  /** A dry run's copy that would be made. */
  onPlanned(source: string, target: string): void;
}

export interface MigrationOptions {
  /** The bucket names of the config (the tree's top directories, the objects' first segment). */
  buckets: readonly string[];
  store: ObjectStore;
  imageStore: ImageStore;
  concurrency: number;
  dryRun: boolean;
  /** Read every object back (GET) and compare its bytes' digest, copied or already there. */
  verify: boolean;
  signal: AbortSignal;
  events: MigrationEvents;
}

export interface MigrationResult {
  /** Every object or file, audit records included. */
  copied: number;
  present: number;
  /** Of copied and present, the audit log's records. */
  audit: { copied: number; present: number };
  failed: number;
  /** Entries reported and left behind that no rerun changes (not_regular). */
  leftBehind: number;
  interrupted: boolean;
  /** The gateway's failure that stopped the run (unreachable, refused, no bucket); null when none did. */
  stoppedBy: ImageproxyError | null;
}

function describe(error: unknown): string {
  if (isImageproxyError(error)) return error.detail ?? error.message;
  return asError(error).message;
}

function isMissing(error: unknown): boolean {
  return (error as NodeJS.ErrnoException).code === 'ENOENT';
}

function extOfContentType(contentType: string): ImageExtension | null {
  const format = Object.values(FORMAT_INFO).find((info) => info.contentType === contentType);
  return format?.ext ?? null;
}

/** Runs `work` on every item of `items` with at most `concurrency` at once, taking no new item once `signal` aborts. */
async function forEachBounded<T>(items: AsyncIterable<T>, concurrency: number, signal: AbortSignal, work: (item: T) => Promise<void>): Promise<void> {
  const iterator = items[Symbol.asyncIterator]();
  const worker = async (): Promise<void> => {
    while (!signal.aborted) {
      // Async generators queue concurrent next() calls: each item goes to one worker.
      const next = await iterator.next();
      if (next.done === true) return;
      await work(next.value);
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, worker));
  } finally {
    await iterator.return?.();
  }
}

/** The run's bookkeeping, shared by both directions. */
class Run {
  readonly result: MigrationResult = { copied: 0, present: 0, audit: { copied: 0, present: 0 }, failed: 0, leftBehind: 0, interrupted: false, stoppedBy: null };
  /** Aborted by the caller's signal or by a gateway failure. */
  readonly stop = new AbortController();

  constructor(readonly options: MigrationOptions) {
    options.signal.addEventListener('abort', () => this.stop.abort(), { once: true });
  }

  count(outcome: MigrationOutcome): void {
    this.result[outcome] += 1;
    this.options.events.onItem(outcome);
  }

  countAuditRecord(outcome: 'copied' | 'present'): void {
    this.result.audit[outcome] += 1;
    this.count(outcome);
  }

  fail(reason: MigrationReason, source: string, detail: string): void {
    this.options.events.onProblem({ reason, source, detail });
    this.count('failed');
  }

  leaveBehind(reason: MigrationReason, source: string, detail: string): void {
    this.options.events.onProblem({ reason, source, detail });
    this.result.leftBehind += 1;
  }

  /** A thrown failure of one item: reported; the gateway's own also stops the run. */
  failWith(source: string, error: unknown): void {
    this.fail(MIGRATION_REASONS.ioError, source, describe(error));
    if (isGatewayFailure(error) && this.result.stoppedBy === null) {
      this.result.stoppedBy = error;
      this.stop.abort();
    }
  }

  finish(): MigrationResult {
    this.result.interrupted = this.options.signal.aborted;
    return this.result;
  }
}

// ---- tree → bucket ------------------------------------------------------------------------

/** The files of one key in one shard directory, and the entries there that are no regular file. */
interface TreeKeyGroup {
  bucket: string;
  directory: string;
  key: string;
  /** Image file names, the original first. */
  images: string[];
  hasSidecar: boolean;
}

type TreeWalkItem = { kind: 'key'; group: TreeKeyGroup } | { kind: 'irregular'; path: string; what: string };

/** The tree's image files grouped by key, a shard directory at a time (one in memory). */
async function* treeKeyGroups(root: string, buckets: readonly string[]): AsyncGenerator<TreeWalkItem> {
  for (const bucket of buckets) {
    const skipped: TreeWalkItem[] = [];
    let directory: string | null = null;
    let groups = new Map<string, TreeKeyGroup>();
    const flush = function* (): Generator<TreeWalkItem> {
      for (const group of groups.values()) {
        if (group.images.length > 0) yield { kind: 'key', group };
      }
      groups = new Map();
    };
    const walk = walkShardFiles(join(root, bucket), {
      irregular: true,
      onSkippedDirectory: (path, what) => skipped.push({ kind: 'irregular', path, what }),
    });
    for await (const file of walk) {
      yield* skipped.splice(0);
      if (file.directory !== directory) {
        yield* flush();
        directory = file.directory;
      }
      const path = join(file.directory, file.name);
      if (file.irregular !== undefined) {
        yield { kind: 'irregular', path, what: file.irregular };
        continue;
      }
      const kind = classifyTreeFile(file.name);
      const key = keyOfTreeFile(file.name);
      if (key === null || (kind !== 'original' && kind !== 'thumbnail' && kind !== 'sidecar')) continue;
      let group = groups.get(key);
      if (group === undefined) {
        group = { bucket, directory: file.directory, key, images: [], hasSidecar: false };
        groups.set(key, group);
      }
      if (kind === 'sidecar') group.hasSidecar = true;
      else if (kind === 'original') group.images.unshift(file.name);
      else group.images.push(file.name);
    }
    yield* skipped.splice(0);
    yield* flush();
  }
}

/** How many image files the tree holds (and its blocklist and audit records): the progress display's total. */
export async function countTreeImages(root: string, buckets: readonly string[], signal: AbortSignal): Promise<number> {
  // A log that cannot be read is the copy's to report, not the count's.
  let total = ((await exists(blocklistPath(root))) ? 1 : 0) + (await readTreeAuditLines(root).catch(() => [])).length;
  for (const bucket of buckets) {
    for await (const file of walkShardFiles(join(root, bucket))) {
      if (signal.aborted) return total;
      const kind = classifyTreeFile(file.name);
      if (kind === 'original' || kind === 'thumbnail') total += 1;
    }
  }
  return total;
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  );
}

/** An original's facts from its sidecar and its bytes, or null when the sidecar lacks or garbles one. */
function sidecarFactsOf(sidecar: Record<string, unknown>, image: ObjectFacts): ImageMetadata | null {
  const { sourceUrl, originContentType, width, height, frames, sha256, fetchedAt } = sidecar;
  const isOptionalText = (value: unknown): value is string | null => value === null || typeof value === 'string';
  const isCount = (value: unknown): value is number => typeof value === 'number' && Number.isSafeInteger(value);
  if (!isOptionalText(sourceUrl) || !isOptionalText(originContentType) || typeof sha256 !== 'string' || typeof fetchedAt !== 'string') return null;
  if (!isCount(width) || !isCount(height) || !isCount(frames)) return null;
  const facts: ImageMetadata = { sourceUrl, contentType: image.contentType, originContentType, bytes: image.bytes, width, height, frames, sha256, fetchedAt };
  // The checks a reader of the bucket applies: what is written reads back.
  return originalFactsOf(originalObjectMetadata(facts), image) === null ? null : facts;
}

/** A file on its way into the bucket: where it goes and what rides with it. */
interface Upload {
  source: string;
  name: string;
  bytes: Buffer;
  sha256: string;
  contentType: string;
  metadata: Record<string, string>;
}

/** Copies the tree under `root` into the store. */
export async function copyTreeToBucket(root: string, options: MigrationOptions): Promise<MigrationResult> {
  const run = new Run(options);
  const relative = (path: string): string => path.slice(root.length + 1);

  const copyKey = async (group: TreeKeyGroup): Promise<void> => {
    const { bucket, key, directory } = group;
    let sidecar: Record<string, unknown> | null = null;
    let sidecarProblem = 'none';
    if (group.hasSidecar) {
      try {
        sidecar = parseJsonObject(await readRegularText(join(directory, metadataFileName(key))));
        if (sidecar === null) sidecarProblem = 'not a JSON object';
      } catch (error) {
        sidecarProblem = isMissing(error) ? 'none' : describe(error);
      }
    }
    const records = sidecar === null ? {} : variantRecordsOf(sidecar);
    for (const fileName of group.images) {
      if (run.stop.signal.aborted) return;
      const source = relative(join(directory, fileName));
      let bytes: Buffer;
      try {
        bytes = await readRegularFile(join(directory, fileName), MIGRATION_READ_CAP);
      } catch (error) {
        if (isMissing(error)) continue;
        if (isIrregularFileError(error) && error.reason === 'not_a_regular_file') run.leaveBehind(MIGRATION_REASONS.notRegular, source, describe(error));
        else run.fail(MIGRATION_REASONS.ioError, source, describe(error));
        continue;
      }
      const ext = fileName.slice(fileName.lastIndexOf('.') + 1);
      const sniffed = sniffImageType(bytes);
      if (sniffed === null || sniffed !== formatFromExt(ext)) {
        run.fail(MIGRATION_REASONS.damaged, source, `its bytes are ${sniffed ?? 'no image of ours'}, its name says .${ext}`);
        continue;
      }
      const contentType = FORMAT_INFO[sniffed].contentType;
      const sha256 = sha256Hex(bytes);
      const name = imageObjectName(bucket, key, fileName.slice(0, fileName.lastIndexOf('.')));
      const thumbnail = parseThumbnailName(fileName);
      if (thumbnail === null) {
        const facts = sidecar === null ? null : sidecarFactsOf(sidecar, { contentType, bytes: bytes.length });
        if (facts === null) {
          const why = sidecar === null ? (sidecarProblem === 'none' ? 'no sidecar' : `sidecar unreadable: ${sidecarProblem}`) : 'the sidecar lacks a fact';
          run.fail(MIGRATION_REASONS.noSidecar, source, `${why}; \`imageproxy check --repair\` rebuilds it`);
          continue;
        }
        const recordedBytes = sidecar?.bytes;
        if (facts.sha256 !== sha256 || (typeof recordedBytes === 'number' && recordedBytes !== bytes.length)) {
          run.fail(MIGRATION_REASONS.damaged, source, 'its bytes disagree with the digest or size its sidecar records');
          continue;
        }
        await upload({ source, name, bytes, sha256, contentType, metadata: originalObjectMetadata(facts) });
      } else {
        const record = records[variantRecordName(thumbnail.label, thumbnail.formatClass)];
        if (record !== undefined && record.sha256 !== sha256) {
          run.fail(MIGRATION_REASONS.damaged, source, "its bytes disagree with the digest its key's sidecar records");
          continue;
        }
        await upload({ source, name, bytes, sha256, contentType, metadata: variantObjectMetadata({ bytes: bytes.length, sha256, contentType }) });
      }
    }
  };

  const readBack = async (name: string, bytes: number): Promise<string | null> => {
    const got = await options.store.get(name, { maxBytes: bytes + 1 });
    return got === null ? null : sha256Hex(got.bytes);
  };

  const upload = async (item: Upload): Promise<void> => {
    try {
      const head = await options.store.head(item.name);
      if (head !== null && head.metadata.sha256 === item.sha256 && head.bytes === item.bytes.length && head.contentType === item.contentType) {
        if (!options.verify) return run.count('present');
        const found = await readBack(item.name, item.bytes.length);
        if (found === item.sha256) return run.count('present');
        // Reported, then copied again below: the copy is what the tree holds.
        options.events.onProblem({ reason: MIGRATION_REASONS.altered, source: item.name, detail: `its metadata says sha256 ${item.sha256}, its bytes hash to ${found ?? 'nothing'}; copied again` });
        run.result.failed += 1;
      }
      if (options.dryRun) {
        options.events.onPlanned(item.source, item.name);
        return run.count('copied');
      }
      await options.store.put(item.name, item.bytes, { contentType: item.contentType, metadata: item.metadata });
      if (options.verify && (await readBack(item.name, item.bytes.length)) !== item.sha256) {
        return run.fail(MIGRATION_REASONS.verifyFailed, item.name, 'read back after the copy, its bytes differ');
      }
      run.count('copied');
    } catch (error) {
      run.failWith(item.source, error);
    }
  };

  await forEachBounded(treeKeyGroups(root, options.buckets), options.concurrency, run.stop.signal, async (item) => {
    if (item.kind === 'irregular') return run.leaveBehind(MIGRATION_REASONS.notRegular, relative(item.path), `is ${item.what}: never followed`);
    await copyKey(item.group);
  });

  if (!run.stop.signal.aborted) await copyBlocklistToBucket(root, run, upload);
  if (!run.stop.signal.aborted) await copyAuditLogToBucket(root, run);
  return run.finish();
}

async function copyBlocklistToBucket(root: string, run: Run, upload: (item: Upload) => Promise<void>): Promise<void> {
  const path = blocklistPath(root);
  const source = path.slice(root.length + 1);
  let bytes: Buffer;
  try {
    bytes = await readRegularFile(path, MIGRATION_READ_CAP);
  } catch (error) {
    if (!isMissing(error)) run.fail(MIGRATION_REASONS.ioError, source, describe(error));
    return;
  }
  const sha256 = sha256Hex(bytes);
  await upload({ source, name: BLOCKLIST_OBJECT_NAME, bytes, sha256, contentType: BLOCKLIST_CONTENT_TYPE, metadata: { sha256 } });
}

const BLOCKLIST_CONTENT_TYPE = 'application/json';

/** The audit log's place in a report line. */
const AUDIT_LOG_SOURCE = auditLogPath('');

/** The tree's audit log, its non-empty lines; none when there is no log. */
async function readTreeAuditLines(root: string): Promise<string[]> {
  try {
    return (await readRegularText(auditLogPath(root), MIGRATION_READ_CAP)).split('\n').filter((line) => line !== '');
  } catch (error) {
    if (isMissing(error)) return [];
    throw error;
  }
}

/**
 * Each line of the tree's audit log becomes an audit object named by its time and digest
 * (a rerun finds it there). A record the bucket holds under another name (written there
 * by a takedown command, then copied into this tree) is found among the objects of its
 * millisecond by its text, and not copied again.
 */
async function copyAuditLogToBucket(root: string, run: Run): Promise<void> {
  const { store, dryRun } = run.options;
  let lines: string[];
  try {
    lines = await readTreeAuditLines(root);
  } catch (error) {
    return run.fail(MIGRATION_REASONS.ioError, AUDIT_LOG_SOURCE, describe(error));
  }
  if (lines.length === 0) return;
  const namesByTime = new Map<string, string[]>();
  try {
    for await (const listed of store.list(AUDIT_OBJECT_DIRECTORY)) {
      const time = auditObjectTime(listed.name);
      if (time !== null) namesByTime.set(time, [...(namesByTime.get(time) ?? []), listed.name]);
    }
  } catch (error) {
    return run.failWith(AUDIT_OBJECT_DIRECTORY, error);
  }
  const holdsRecord = async (names: readonly string[], name: string, text: string): Promise<boolean> => {
    if (names.includes(name)) return true;
    for (const other of names) {
      const line = await readBucketAuditRecord(store, other);
      if (line !== null && parseAuditLine(line)?.text === text) return true;
    }
    return false;
  };
  for (const [index, line] of lines.entries()) {
    if (run.stop.signal.aborted) return;
    const source = `${AUDIT_LOG_SOURCE}:${index + 1}`;
    const parsed = parseAuditLine(line);
    if (parsed === null) {
      run.leaveBehind(MIGRATION_REASONS.damaged, source, 'is no audit record with an ISO time: not copied');
      continue;
    }
    const { record, text } = parsed;
    const name = copiedAuditObjectName(record, text);
    try {
      const sameTime = namesByTime.get(record.time) ?? [];
      if (await holdsRecord(sameTime, name, text)) {
        run.countAuditRecord('present');
        continue;
      }
      namesByTime.set(record.time, [...sameTime, name]);
      if (dryRun) {
        run.options.events.onPlanned(source, name);
        run.countAuditRecord('copied');
        continue;
      }
      const created = await store.create(name, Buffer.from(text, 'utf8'), { contentType: AUDIT_CONTENT_TYPE });
      run.countAuditRecord(created === 'created' ? 'copied' : 'present');
    } catch (error) {
      run.failWith(source, error);
    }
  }
}

const AUDIT_CONTENT_TYPE = 'application/json';

// ---- bucket → tree ------------------------------------------------------------------------

interface BucketKeyGroup {
  bucket: string;
  key: string;
  /** Object names in name order: the original (`…/{key}`) sorts first. */
  names: Array<{ name: string; parsed: ImageObjectName }>;
}

/** The bucket's image objects grouped by key: a key's objects are adjacent in name order (keys have one length). */
async function* bucketKeyGroups(store: ObjectStore, buckets: readonly string[], onForeign: (name: string) => void): AsyncGenerator<BucketKeyGroup> {
  for (const bucket of buckets) {
    let group: BucketKeyGroup | null = null;
    for await (const listed of store.list(`${bucket}/`)) {
      const parsed = parseImageObjectName(listed.name);
      if (parsed === null) {
        onForeign(listed.name);
        continue;
      }
      if (group !== null && group.key !== parsed.key) {
        yield group;
        group = null;
      }
      group ??= { bucket, key: parsed.key, names: [] };
      group.names.push({ name: listed.name, parsed });
    }
    if (group !== null) yield group;
  }
}

/** How many objects the bucket holds under the configured buckets (and the blocklist and audit records): the progress total. */
export async function countBucketObjects(store: ObjectStore, buckets: readonly string[], signal: AbortSignal): Promise<number> {
  let total = (await store.head(BLOCKLIST_OBJECT_NAME)) === null ? 0 : 1;
  for await (const listed of store.list(AUDIT_OBJECT_DIRECTORY)) {
    if (signal.aborted) return total;
    if (auditObjectTime(listed.name) !== null) total += 1;
  }
  for (const bucket of buckets) {
    for await (const listed of store.list(`${bucket}/`)) {
      if (signal.aborted) return total;
      if (parseImageObjectName(listed.name) !== null) total += 1;
    }
  }
  return total;
}

/** A tree file's digest, or null when there is none (or none we read: a symlink is not followed). */
async function treeFileDigest(path: string): Promise<string | null> {
  try {
    return sha256Hex(await readRegularFile(path, MIGRATION_READ_CAP));
  } catch (error) {
    if (isMissing(error) || isIrregularFileError(error)) return null;
    throw error;
  }
}

/** Copies the store's images (and blocklist) into the tree of `options.imageStore`. */
export async function copyBucketToTree(options: MigrationOptions): Promise<MigrationResult> {
  const run = new Run(options);
  const { store, imageStore } = options;

  /**
   * A class object with the source-format thumbnail's bytes (converting did not pay, so
   * the tree it came from had a hard link) comes back as a hard link of that thumbnail,
   * as the service makes it (ImageStore.commitClassLink), not as a second copy. The
   * source thumbnail's object sorts before its class objects, so it is in the tree by now.
   * Null when the object is no such class file: it is written as a file of its own.
   */
  const linkClassToSource = async (
    bucket: string,
    key: string,
    parsed: ImageObjectName,
    bytes: Buffer,
    record: VariantRecord,
    records: Readonly<Record<string, VariantRecord>>,
  ): Promise<StoredImage | null> => {
    const { label, formatClass } = parsed;
    if (label === null || formatClass === 'source' || records[variantRecordName(label, 'source')]?.sha256 !== record.sha256) return null;
    const source = await imageStore.find(bucket, key, label);
    if (source === null) return null;
    return imageStore.commitClassLink(bucket, key, label, formatClass, source, bytes, record);
  };

  const copyKey = async (group: BucketKeyGroup): Promise<void> => {
    const { bucket, key } = group;
    const heads: Array<{ name: string; parsed: ImageObjectName; info: ObjectInfo }> = [];
    for (const { name, parsed } of group.names) {
      try {
        const info = await store.head(name);
        if (info !== null) heads.push({ name, parsed, info });
      } catch (error) {
        run.failWith(name, error);
        return;
      }
    }
    // Every thumbnail's record, for the sidecar the original brings.
    const records: Record<string, VariantRecord> = {};
    for (const { parsed, info } of heads) {
      const record = parsed.label === null ? null : variantRecordOfObject(info.metadata, info);
      if (record !== null && parsed.label !== null) records[variantRecordName(parsed.label, parsed.formatClass)] = record;
    }
    const directory = join(imageStore.root, keyDirectory(bucket, key));
    let originalWritten = false;
    for (const { name, parsed, info } of heads) {
      if (run.stop.signal.aborted) return;
      try {
        const ext = extOfContentType(info.contentType);
        const facts = parsed.label === null ? originalFactsOf(info.metadata, info) : null;
        const record = parsed.label === null ? null : variantRecordOfObject(info.metadata, info);
        const sha256 = facts?.sha256 ?? record?.sha256 ?? null;
        if (ext === null || sha256 === null) {
          run.fail(MIGRATION_REASONS.damaged, name, ext === null ? `its type ${info.contentType} is none of ours` : 'its metadata lacks a fact (sha256, size, date)');
          continue;
        }
        const fileName = treeFileNameOfObject(parsed, ext);
        const path = join(directory, fileName);
        const recordName = parsed.label === null ? null : variantRecordName(parsed.label, parsed.formatClass);
        if ((await treeFileDigest(path)) === sha256) {
          // The file is there; so must its record be, or a lookup would not trust it.
          const sidecar = await imageStore.readSidecar(bucket, key);
          if (parsed.label === null && (sidecar === undefined || sidecar === null || sidecar.sha256 !== sha256)) {
            // The original's sidecar is missing or stale: written again with the image below.
          } else {
            if (recordName !== null && record !== null && sidecar?.variants?.[recordName]?.sha256 !== sha256) await imageStore.recordVariant(bucket, key, recordName, record);
            run.count('present');
            continue;
          }
        }
        if (options.dryRun) {
          options.events.onPlanned(name, `${keyDirectory(bucket, key)}/${fileName}`);
          run.count('copied');
          continue;
        }
        const got = await store.get(name, { maxBytes: info.bytes });
        if (got === null) continue;
        if (sha256Hex(got.bytes) !== sha256) {
          run.fail(MIGRATION_REASONS.damaged, name, `its bytes disagree with the sha256 its metadata records`);
          continue;
        }
        if (facts !== null) {
          const sidecar: ImageMetadata = Object.keys(records).length === 0 ? facts : { ...facts, variants: records };
          await imageStore.commitOriginal(bucket, key, sidecar, () => imageStore.stageImage(bucket, key, null, ext, got.bytes));
          originalWritten = true;
        } else {
          const linked = record === null ? null : await linkClassToSource(bucket, key, parsed, got.bytes, record, records);
          if (linked === null) {
            // The record first, as the service commits a thumbnail (the original's commit above wrote them all).
            if (!originalWritten && recordName !== null && record !== null) await imageStore.recordVariant(bucket, key, recordName, record);
            await imageStore.writeAtomic(bucket, key, fileName, got.bytes);
          }
        }
        if (options.verify && (await treeFileDigest(path)) !== sha256) {
          run.fail(MIGRATION_REASONS.verifyFailed, name, `read back, ${keyDirectory(bucket, key)}/${fileName} differs`);
          continue;
        }
        run.count('copied');
      } catch (error) {
        run.failWith(name, error);
      }
    }
  };

  const foreign = (name: string): void => run.leaveBehind(MIGRATION_REASONS.notOurs, name, 'is named like no image object of ours: not copied');
  try {
    await forEachBounded(bucketKeyGroups(store, options.buckets, foreign), options.concurrency, run.stop.signal, copyKey);
    if (!run.stop.signal.aborted) await copyBlocklistToTree(imageStore.root, run);
    if (!run.stop.signal.aborted) await copyAuditLogToTree(imageStore.root, run);
  } catch (error) {
    // A listing that failed: the gateway's failure, reported once.
    run.failWith('(listing)', error);
  }
  return run.finish();
}

async function copyBlocklistToTree(root: string, run: Run): Promise<void> {
  const { store, dryRun } = run.options;
  const path = blocklistPath(root);
  const target = path.slice(root.length + 1);
  try {
    const got = await store.get(BLOCKLIST_OBJECT_NAME, { maxBytes: MIGRATION_READ_CAP });
    if (got === null) return;
    const local = await treeFileDigest(path);
    const sha256 = sha256Hex(got.bytes);
    if (local === sha256) return run.count('present');
    if (local !== null) return run.fail(MIGRATION_REASONS.stateDiffers, target, "the tree's blocklist differs from the bucket's: left as it is (merge them by hand)");
    if (dryRun) {
      run.options.events.onPlanned(BLOCKLIST_OBJECT_NAME, target);
      return run.count('copied');
    }
    await writeFileAtomic(path, got.bytes, { makeDirectory: true });
    run.count('copied');
  } catch (error) {
    run.failWith(BLOCKLIST_OBJECT_NAME, error);
  }
}

/**
 * The audit objects appended to the tree's log in time order (the listing's), each
 * record the log lacks: a rerun, or a record that came from this tree, adds nothing.
 */
async function copyAuditLogToTree(root: string, run: Run): Promise<void> {
  const { store, dryRun } = run.options;
  const inTree = new Set<string>();
  try {
    for (const line of await readTreeAuditLines(root)) inTree.add(sha256Hex(Buffer.from(parseAuditLine(line)?.text ?? line, 'utf8')));
  } catch (error) {
    return run.fail(MIGRATION_REASONS.ioError, AUDIT_LOG_SOURCE, describe(error));
  }
  let name = AUDIT_OBJECT_DIRECTORY;
  try {
    for await (const object of readBucketAuditLog(store)) {
      if (run.stop.signal.aborted) return;
      name = object.name;
      const parsed = parseAuditLine(object.line);
      if (parsed === null) {
        run.leaveBehind(MIGRATION_REASONS.damaged, name, 'is no audit record with an ISO time: not copied');
        continue;
      }
      const digest = sha256Hex(Buffer.from(parsed.text, 'utf8'));
      if (inTree.has(digest)) {
        run.countAuditRecord('present');
        continue;
      }
      inTree.add(digest);
      if (dryRun) run.options.events.onPlanned(name, AUDIT_LOG_SOURCE);
      else await appendAuditRecord(root, parsed.record);
      run.countAuditRecord('copied');
    }
  } catch (error) {
    run.failWith(name, error);
  }
}

/** Objects' and files' names in a report line, for the CLI. */
export function migrationReportLine(problem: MigrationProblem): string {
  return `${problem.reason}\t${problem.source}\t${problem.detail.replace(/[\t\r\n]+/g, ' ')}\n`;
}
