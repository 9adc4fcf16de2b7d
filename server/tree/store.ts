/**
 * The bucket tree on disk: lookups, atomic writes, metadata, directory setup. Thin I/O
 * over server/contract/layout.ts, which decides every name.
 */
import { accessSync, constants as fsConstants, lstatSync, statSync, type Stats } from 'node:fs';
import { access, link, mkdir, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { parseFailureRecord, type FailureRecord } from '../fetch/backoff.js';
import { dirname, join } from 'node:path';
import {
  IMAGE_EXTENSIONS,
  SHARD_CHARACTERS,
  classFileExtensions,
  classVariantStem,
  classifyTreeFile,
  failureFileName,
  fileStem,
  hostLockName,
  imageFileName,
  keyOfTreeFile,
  lockFileName,
  keyDirectory,
  metadataFileName,
  quarantinePath,
  tempFileName,
  variantRecordName,
  type ImageExtension,
  type TreeIdentity,
} from '../contract/layout.js';
import type { ModernFormat } from '../contract/accept.js';
import { ImageproxyError } from '../errors.js';
import { originalMetadata, sidecarText, withVariantRecord, type ImageMetadata, type OriginalImage, type OriginalProvenance, type VariantRecord } from './originals.js';
import { METADATA_READ_CAP, isIrregularFileError, kindOf, readRegularFile, readRegularHeadSync, readRegularText } from './regularFile.js';
import { FORMAT_INFO, sniffImageType, type ImageFormat } from '../images/sniff.js';
import { damagedImageReason, parseSidecar, repairSteps, type Finding, type RepairStep, type SidecarReading } from './health.js';
import { stageFile, syncDirectory, writerUnique } from './atomicFile.js';
import { isMissingAfterMkdir, storageError } from './diskErrors.js';

export type { ImageMetadata };

/*
 * Lookups (stat) are made synchronously, as nginx makes them on its own event loop: a
 * stat of a cached directory entry is microseconds, while through libuv's thread pool it
 * costs two thread wake-ups, more than the call itself, and waits in the pool's queue
 * behind resizes and fsyncs. Whatever changes the tree (mkdir, rename, writes, fsync)
 * stays asynchronous: creating a directory or a file allocates an inode, which on a busy
 * filesystem can take long enough to stall every other request.
 */

/** A sidecar at its name that is no regular file (readSidecarForLookup). */
const IRREGULAR = Symbol('irregular');

/** The file's stat, or null when there is none (no error object is made for a miss). */
function statIfPresent(path: string): Stats | null {
  return statSync(path, { throwIfNoEntry: false }) ?? null;
}

/** The entry's own lstat (a symlink is not followed), or null when there is none. */
function lstatIfPresent(path: string): Stats | null {
  return lstatSync(path, { throwIfNoEntry: false }) ?? null;
}

/** Enough of a file's start for every format's magic number (AVIF's `ftyp` box included). */
export const SNIFF_BYTES = 64;

/**
 * The format a stored file's first bytes say (null: none of ours): one small read,
 * synchronous as the lookup's stat is, through server/tree/regularFile.ts (no symlink followed).
 */
function sniffStoredFile(path: string): ImageFormat | null {
  return sniffImageType(readRegularHeadSync(path, SNIFF_BYTES));
}

/** A stored file the lookup found damaged and moved aside (see ImageStore.find). */
interface DamagedFileEvent {
  relativePath: string;
  reason: string;
  /** Where it went, relative to the root. */
  quarantinedAs: string;
}

export interface ImageStoreOptions {
  /** Told about each damaged file `find` moves aside (the server logs it). */
  onDamaged?: (event: DamagedFileEvent) => void;
  now?: () => number;
}

export interface StoredImage {
  /** Absolute path on disk; '' for an object (no file). */
  path: string;
  /** `/`-separated path below the root, or an object's name: what nginx's internal location appends. */
  relativePath: string;
  ext: ImageExtension;
  bytes: number;
  modifiedMs: number;
  /** Set for an image kept as an object in a bucket (server/storage/s3Backend.ts) rather than a file. */
  object?: StoredObjectFacts;
}

/** What an image object says of itself beside a file's facts. */
interface StoredObjectFacts {
  /** The gateway's entity tag, unquoted. */
  etag: string;
  /** The bytes' sha256 from the object's metadata; null when it has none. */
  sha256: string | null;
}

/** Something ready to become visible in the tree, not visible yet (server/tree/atomicFile.ts). */
export interface Committable<Committed> {
  /** Puts it into place durably: from then on readers see the whole file, after a crash too. */
  commit(): Promise<Committed>;
  /** Removes what was staged (the write is abandoned). */
  discard(): Promise<void>;
}

/** A file staged in a key's directory, to be renamed into place. */
interface Staged<Committed> extends Committable<Committed> {
  /** Renames it into place only: the next commit in the same directory makes it durable (StagedWrite.place). */
  place(): Promise<Committed>;
}

/** A file written and fsynced under a temp name, not yet visible under its own. */
export type StagedFile = Staged<StoredImage>;

/** A source-format thumbnail made from an original not yet stored, to be committed with it (storeOriginalWithThumbnail). */
export interface ThumbnailToCommit {
  /** Its record's name in the original's sidecar (layout.variantRecordName). */
  recordName: string;
  record: VariantRecord;
  /** Its bytes being staged (stageImage). */
  staged: Promise<StagedFile>;
}

export class ImageStore {
  constructor(
    readonly root: string,
    private readonly options: ImageStoreOptions = {},
  ) {}

  private treeIdentity: TreeIdentity | undefined;
  /** The variant records being written, by key directory and key: one read-modify-write of a sidecar at a time. */
  private readonly recordWrites = new Map<string, Promise<unknown>>();

  /**
   * The name of the `host` lock of a key's original (server/fetch/singleFlight.ts). The root's
   * identity is read once, the root made first if it is missing (a first `populate`).
   */
  async hostLockName(bucket: string, key: string): Promise<string> {
    if (this.treeIdentity === undefined) {
      await mkdir(this.root, { recursive: true });
      const { dev, ino } = statSync(this.root, { bigint: true });
      this.treeIdentity = { dev, ino };
    }
    return hostLockName(this.treeIdentity, bucket, key);
  }

  /**
   * Makes the key's directory if it is missing (a tree without init-buckets), then
   * throws the errno error (EROFS, EACCES) if it cannot be written: a miss then fetches
   * nothing it could not keep. No file is made: access(2) only asks.
   */
  async prepareToWrite(bucket: string, key: string): Promise<void> {
    const directory = await this.prepareKeyDirectory(bucket, key);
    accessSync(directory, fsConstants.W_OK);
  }

  private async prepareKeyDirectory(bucket: string, key: string): Promise<string> {
    const directory = this.directoryOf(bucket, key);
    // Almost always there already (init-buckets, or an earlier image): a lookup says so.
    if (statIfPresent(directory)?.isDirectory() !== true) await mkdir(directory, { recursive: true });
    return directory;
  }

  directoryOf(bucket: string, key: string): string {
    return join(this.root, keyDirectory(bucket, key));
  }

  /**
   * The stored original (variantLabel null) or variant, whatever its format, or null.
   * A file found damaged is moved aside (with, for an original, its sidecar and
   * thumbnails) and counts as absent, so the caller fetches or remakes it. The check is
   * kept cheap, as it runs on every lookup: the file's first bytes must be of its
   * extension's format (an HTML page of the original's exact size is caught here), and
   * its size that of its record (an original's sidecar, a variant's record in that
   * sidecar; a variant without one, from an older tree, is judged by its head alone).
   * No digest: the heal pass's sample and `check` look deeper. A symlink, FIFO or
   * directory at an image's name is moved aside, never followed or opened.
   */
  async find(
    bucket: string,
    key: string,
    variantLabel: string | null,
    likelyExt: ImageExtension | null = null,
  ): Promise<StoredImage | null> {
    // The likely extension first (the URL's, or the original's for its thumbnails): a
    // stored file is then found with one stat instead of up to five.
    const extensions = likelyExt === null ? IMAGE_EXTENSIONS : [likelyExt, ...IMAGE_EXTENSIONS.filter((ext) => ext !== likelyExt)];
    const recordName = variantLabel === null ? null : variantRecordName(variantLabel, 'source');
    return this.findStem(bucket, key, fileStem(key, variantLabel), extensions, recordName);
  }

  /**
   * The thumbnail made for the clients of a format class, `{key}.{label}.{format}.{ext}`,
   * whatever its bytes are (its own format first: classFileExtensions), or null; judged
   * and moved aside as `find` does.
   */
  findClassVariant(bucket: string, key: string, variantLabel: string, format: ModernFormat): Promise<StoredImage | null> {
    return this.findStem(bucket, key, classVariantStem(key, variantLabel, format), classFileExtensions(format), variantRecordName(variantLabel, format));
  }

  /** `find` for one stem: the first sound file of `extensions`; `recordName` null for an original. */
  private async findStem(
    bucket: string,
    key: string,
    stem: string,
    extensions: readonly ImageExtension[],
    recordName: string | null,
  ): Promise<StoredImage | null> {
    const directory = keyDirectory(bucket, key);
    for (const ext of extensions) {
      const name = imageFileName(stem, ext);
      const relativePath = `${directory}/${name}`;
      const path = join(this.root, relativePath);
      const info = lstatIfPresent(path);
      if (info === null) continue;
      if (!info.isFile()) {
        await this.moveIrregularAside(bucket, key, name);
        continue;
      }
      const reason = info.size === 0 ? 'empty' : await this.lookupDamage(bucket, key, recordName, name, path, info.size);
      if (reason === undefined) continue; // gone since the stat
      if (reason === null) return { path, relativePath, ext, bytes: info.size, modifiedMs: info.mtimeMs };
      await this.moveDamagedAside(bucket, key, name, { bytes: info.size, ino: info.ino }, reason);
    }
    return null;
  }

  /** Why a stored file found by `find` cannot be served (null: sound; undefined: gone meanwhile). */
  private async lookupDamage(
    bucket: string,
    key: string,
    recordName: string | null,
    name: string,
    path: string,
    bytes: number,
  ): Promise<string | null | undefined> {
    let sniffed: ImageFormat | null;
    try {
      sniffed = sniffStoredFile(path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      if (isIrregularFileError(error)) return 'not a regular file';
      throw error;
    }
    const typeReason = damagedImageReason({ name, bytes, sniffed });
    if (typeReason !== null) return typeReason;
    // The sidecar is read after the image's stat: it is written before the image, so
    // it is never older than the image seen.
    let sidecar = this.readSidecarForLookup(bucket, key);
    if (sidecar === IRREGULAR) {
      await this.moveIrregularAside(bucket, key, metadataFileName(key));
      sidecar = undefined;
    }
    if (recordName === null) return damagedImageReason({ name, bytes, ...(sidecar === undefined ? {} : { sidecar }) });
    const variants = sidecar?.variants;
    const variantRecord = variants !== undefined && Object.hasOwn(variants, recordName) ? variants[recordName] : undefined;
    return damagedImageReason({ name, bytes, ...(variantRecord === undefined ? {} : { variantRecord }) });
  }

  /**
   * Records a variant in its key's sidecar (size, digest, type), before the variant is
   * renamed into place: once it is served, its record exists. A read-modify-write of the
   * sidecar, one at a time per key in this process; it is written only if the sidecar is
   * still the one read (same inode, size, mtime), so a sidecar a refetch wrote meanwhile
   * is never replaced by an older one. Returns false when nothing was recorded: no
   * readable sidecar (an older tree), or the sidecar changed; the variant is then
   * unknown, judged by its type alone until the heal pass's sample decodes and records it.
   * `label` is the record's name (layout.variantRecordName): `{label}.{format}` for a
   * format class's file.
   */
  recordVariant(bucket: string, key: string, recordName: string, record: VariantRecord, options: { durable?: boolean } = {}): Promise<boolean> {
    const id = `${keyDirectory(bucket, key)}/${key}`;
    const previous = this.recordWrites.get(id) ?? Promise.resolve();
    const write = previous.catch(() => undefined).then(() => this.writeVariantRecord(bucket, key, recordName, record, options.durable ?? true));
    this.recordWrites.set(id, write);
    void write.finally(() => {
      if (this.recordWrites.get(id) === write) this.recordWrites.delete(id);
    }).catch(() => undefined);
    return write;
  }

  private async writeVariantRecord(bucket: string, key: string, recordName: string, record: VariantRecord, durable: boolean): Promise<boolean> {
    const path = join(this.directoryOf(bucket, key), metadataFileName(key));
    const before = await stat(path).catch(() => null);
    if (before === null) return false;
    let text: string;
    try {
      text = await readRegularText(path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' || isIrregularFileError(error)) return false;
      throw error;
    }
    const updated = withVariantRecord(text, recordName, record);
    if (updated === null) return false;
    const staged = await this.stage(bucket, key, metadataFileName(key), Buffer.from(updated));
    const now = await stat(path).catch(() => null);
    if (now === null || now.ino !== before.ino || now.size !== before.size || now.mtimeMs !== before.mtimeMs) {
      await staged.discard();
      return false;
    }
    await (durable ? staged.commit() : staged.place());
    return true;
  }

  /** A source-format thumbnail `{key}.{label}.{ext}`, committed as commitRecorded says. */
  async commitVariant(
    bucket: string,
    key: string,
    label: string,
    ext: ImageExtension,
    bytes: Uint8Array,
    record: VariantRecord,
    original: Promise<unknown>,
  ): Promise<StoredImage> {
    return this.commitRecorded(bucket, key, variantRecordName(label, 'source'), () => this.stageImage(bucket, key, label, ext, bytes), record, original);
  }

  /**
   * A format class's thumbnail, `{key}.{label}.{format}.{ext}`, committed as commitVariant
   * commits the source-format one (its record, `{label}.{format}`, first). Made after the
   * source-format thumbnail, so after its original.
   */
  commitClassVariant(bucket: string, key: string, label: string, format: ModernFormat, ext: ImageExtension, bytes: Uint8Array, record: VariantRecord): Promise<StoredImage> {
    const fileName = imageFileName(classVariantStem(key, label, format), ext);
    return this.commitRecorded(bucket, key, variantRecordName(label, format), () => this.stage(bucket, key, fileName, bytes), record, Promise.resolve());
  }

  /**
   * A format class that gets the source-format thumbnail (converting did not pay, or
   * cannot keep the image): that file hard-linked as `{key}.{label}.{format}.{ext}`, so
   * nginx and later lookups find the class's file without a new encode, for no disk
   * space. A copy of `bytes` (the source thumbnail's) where the link is refused (EXDEV,
   * EPERM, EMLINK, a filesystem without hard links) or the file changed meanwhile.
   */
  async commitClassLink(bucket: string, key: string, label: string, format: ModernFormat, source: StoredImage, bytes: Uint8Array, record: VariantRecord): Promise<StoredImage> {
    const fileName = imageFileName(classVariantStem(key, label, format), source.ext);
    const stageLinkOrCopy = async (): Promise<StagedFile> => {
      const seen = lstatIfPresent(source.path);
      if (seen !== null && seen.isFile() && seen.size === bytes.length) {
        try {
          const linked = await this.stageLinkAs(bucket, key, fileName, source.path, seen.ino);
          if (linked !== null) return linked;
        } catch {
          // Refused: the copy below.
        }
      }
      return this.stage(bucket, key, fileName, bytes);
    };
    return this.commitRecorded(bucket, key, variantRecordName(label, format), stageLinkOrCopy, record, Promise.resolve());
  }

  /**
   * A thumbnail made visible never ahead of its original, and with its record: its bytes
   * are staged while `original` (the original's commit) finishes and the record is
   * written into the original's sidecar (recordVariant); then the record is renamed into
   * place, the thumbnail after it, and the directory fsynced once for both. The staged
   * thumbnail is discarded if anything before its rename fails.
   */
  private async commitRecorded(
    bucket: string,
    key: string,
    recordName: string,
    stageThumbnail: () => Promise<StagedFile>,
    record: VariantRecord,
    original: Promise<unknown>,
  ): Promise<StoredImage> {
    const [staged, recorded] = await Promise.allSettled([
      stageThumbnail(),
      original.then(() => this.recordVariant(bucket, key, recordName, record, { durable: false })),
    ]);
    if (staged.status === 'fulfilled' && recorded.status === 'fulfilled') return staged.value.commit();
    if (staged.status === 'fulfilled') await staged.value.discard();
    throw staged.status === 'rejected' ? staged.reason : (recorded as PromiseRejectedResult).reason;
  }

  /**
   * readSidecar for `find`: synchronous, as its stat and head read are (a few hundred
   * bytes, in the directory just looked up), instead of four trips through libuv's pool
   * behind resizes on every hit. One past the cap is unreadable (null); one that is no
   * regular file (a FIFO, a symlink) is IRREGULAR, for the caller to move aside unread.
   */
  private readSidecarForLookup(bucket: string, key: string): SidecarReading | undefined | typeof IRREGULAR {
    let text: Buffer;
    try {
      text = readRegularHeadSync(join(this.directoryOf(bucket, key), metadataFileName(key)), METADATA_READ_CAP + 1);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      if (isIrregularFileError(error)) return IRREGULAR;
      throw error;
    }
    return text.length > METADATA_READ_CAP ? null : parseSidecar(text.toString('utf8'));
  }

  /**
   * The sidecar of a key as its byte count: undefined when there is none, null when
   * unreadable (over the metadata cap included). One that is no regular file (a FIFO, a
   * symlink) is moved aside unread and counts as none.
   */
  async readSidecar(bucket: string, key: string): Promise<SidecarReading | undefined> {
    const text = await this.readMetadataText(bucket, key, metadataFileName(key));
    if (text === undefined) return undefined;
    return text === null ? null : parseSidecar(text);
  }

  /**
   * A small file of a key (sidecar, failure record), read through server/tree/regularFile.ts:
   * undefined when absent or not a regular file (then moved aside), null when over the
   * metadata cap.
   */
  private async readMetadataText(bucket: string, key: string, name: string): Promise<string | null | undefined> {
    try {
      return await readRegularText(join(this.directoryOf(bucket, key), name));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      if (!isIrregularFileError(error)) throw error;
      if (error.reason === 'too_large') return null;
      await this.moveIrregularAside(bucket, key, name);
      return undefined;
    }
  }

  /**
   * Moves aside an entry of a key's directory that is no regular file (a symlink, FIFO,
   * socket, device or directory where a file of ours belongs), unless a regular file was
   * renamed into its place meanwhile. Nothing is opened: the rename moves the entry itself.
   */
  private async moveIrregularAside(bucket: string, key: string, name: string): Promise<void> {
    const directory = this.directoryOf(bucket, key);
    const now = lstatIfPresent(join(directory, name));
    if (now === null || now.isFile()) return;
    const quarantined = await this.applyRepairSteps(bucket, directory, [{ action: 'quarantine', name }]);
    this.options.onDamaged?.({
      relativePath: `${keyDirectory(bucket, key)}/${name}`,
      reason: `${kindOf(now)}, not a regular file`,
      quarantinedAs: quarantined[0] ?? '',
    });
  }

  /**
   * Moves a damaged original or thumbnail aside, unless it changed since it was judged
   * (same inode and size: another process may have replaced it meanwhile). Returns
   * whether it moved.
   */
  private async moveDamagedAside(
    bucket: string,
    key: string,
    name: string,
    seen: { bytes: number; ino: number },
    reason: string,
  ): Promise<boolean> {
    const directory = this.directoryOf(bucket, key);
    const now = lstatIfPresent(join(directory, name));
    if (now === null || now.ino !== seen.ino || now.size !== seen.bytes) return false;
    const names = await readdir(directory);
    const isOriginal = name.split('.').length === 2;
    const steps = this.damagedFileSteps(directory, { kind: isOriginal ? 'damaged-original' : 'damaged-thumbnail', name, key }, names);
    const quarantined = await this.applyRepairSteps(bucket, directory, steps);
    this.options.onDamaged?.({
      relativePath: `${keyDirectory(bucket, key)}/${name}`,
      reason,
      quarantinedAs: quarantined[0] ?? '',
    });
    return true;
  }

  /**
   * The repair steps of a damaged original or thumbnail (health.repairSteps) in
   * `directory` (absolute path), and for a thumbnail the removal of its other names
   * there: hard links of one file (a format class's file where converting did not pay,
   * and the source-format thumbnail it links) hold the same bytes, so the same damage,
   * whatever their records say. The file itself goes to the quarantine once.
   */
  damagedFileSteps(directory: string, finding: Pick<Finding, 'kind' | 'name' | 'key'>, names: readonly string[]): RepairStep[] {
    const steps = repairSteps(finding, names);
    if (finding.kind !== 'damaged-thumbnail' || finding.key === null) return steps;
    const damaged = lstatSync(join(directory, finding.name), { bigint: true, throwIfNoEntry: false });
    if (damaged === undefined || damaged.nlink < 2n) return steps;
    for (const name of names) {
      if (name === finding.name || keyOfTreeFile(name) !== finding.key || classifyTreeFile(name) !== 'thumbnail') continue;
      const other = lstatSync(join(directory, name), { bigint: true, throwIfNoEntry: false });
      if (other !== undefined && other.ino === damaged.ino && other.dev === damaged.dev) steps.push({ action: 'remove', name });
    }
    return steps;
  }

  /**
   * Carries out repair steps (server/tree/health.ts) in a shard directory of `bucket`
   * (absolute path), except `rebuild-sidecar`, which needs the image read
   * (server/tree/healthWalk.ts). A file already gone counts as done. Returns where
   * quarantined files went, relative to the root.
   */
  async applyRepairSteps(bucket: string, directory: string, steps: readonly RepairStep[]): Promise<string[]> {
    const quarantined: string[] = [];
    const nowMs = (this.options.now ?? Date.now)();
    for (const step of steps) {
      const path = join(directory, step.name);
      if (step.action === 'remove') await rm(path, { force: true });
      else if (step.action === 'remove-directory') await rm(path, { force: true, recursive: true });
      else if (step.action === 'quarantine') {
        const target = quarantinePath(bucket, step.name, nowMs);
        await mkdir(dirname(join(this.root, target)), { recursive: true });
        try {
          await rename(path, join(this.root, target));
          quarantined.push(target);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
        }
      }
    }
    return quarantined;
  }

  /**
   * Writes bytes under a temporary name in the target directory, fsyncs, then renames
   * into place: readers see the whole file or none, and a crash leaves only a temp file.
   */
  async writeAtomic(bucket: string, key: string, fileName: string, bytes: Uint8Array): Promise<string> {
    return (await (await this.stage(bucket, key, fileName, bytes)).commit()).path;
  }

  /**
   * The first half of writeAtomic: the bytes written and fsynced under a temp name. The
   * caller commits (renames) when the order of several files allows it, so their writes
   * can run at once while what becomes visible, and when, stays decided.
   */
  async stage(bucket: string, key: string, fileName: string, bytes: Uint8Array): Promise<StagedFile> {
    const staged = await stageFile(join(this.directoryOf(bucket, key), fileName), bytes, { makeDirectory: true });
    const stored: StoredImage = {
      path: staged.path,
      relativePath: `${keyDirectory(bucket, key)}/${fileName}`,
      ext: fileName.slice(fileName.lastIndexOf('.') + 1) as ImageExtension,
      bytes: bytes.length,
      modifiedMs: staged.modifiedMs,
    };
    return {
      commit: async () => {
        await staged.commit();
        return stored;
      },
      place: async () => {
        await staged.place();
        return stored;
      },
      discard: () => staged.discard(),
    };
  }

  async storeImage(
    bucket: string,
    key: string,
    variantLabel: string | null,
    ext: ImageExtension,
    bytes: Uint8Array,
  ): Promise<StoredImage> {
    return (await this.stageImage(bucket, key, variantLabel, ext, bytes)).commit();
  }

  /** An image staged (see `stage`) under its final name's temp. */
  stageImage(bucket: string, key: string, variantLabel: string | null, ext: ImageExtension, bytes: Uint8Array): Promise<StagedFile> {
    return this.stage(bucket, key, imageFileName(fileStem(key, variantLabel), ext), bytes);
  }

  /** The metadata sidecar staged (see `stage`), with a thumbnail's record in it if `variant` is given. */
  stageMetadata(bucket: string, key: string, metadata: ImageMetadata, variant: Pick<ThumbnailToCommit, 'recordName' | 'record'> | null = null): Promise<StagedFile> {
    const text = sidecarText(metadata);
    const withRecord = variant === null ? null : withVariantRecord(text, variant.recordName, variant.record);
    return this.stage(bucket, key, metadataFileName(key), Buffer.from(withRecord ?? text));
  }

  async writeMetadata(bucket: string, key: string, metadata: ImageMetadata): Promise<void> {
    await (await this.stageMetadata(bucket, key, metadata)).commit();
  }

  /**
   * Sidecar first, image last: the one order in which an original lands in the tree
   * (fetched, imported, or written by a test). Both are staged at once, then the sidecar
   * is renamed into place and the image after it. The image is what every lookup finds,
   * so once it exists its sidecar does too; a crash in between leaves only a sidecar,
   * which nothing serves and the next store rewrites. `stageImage` stages the image's
   * bytes (stageImage) or, for an import by link or move, the legacy file itself.
   */
  async commitOriginal<Committed>(
    bucket: string,
    key: string,
    metadata: ImageMetadata,
    stageImage: () => Promise<Committable<Committed>>,
  ): Promise<Committed> {
    const [sidecarResult, imageResult] = await Promise.allSettled([this.stageMetadata(bucket, key, metadata), stageImage()]);
    if (sidecarResult.status === 'rejected' || imageResult.status === 'rejected') {
      if (sidecarResult.status === 'fulfilled') await sidecarResult.value.discard();
      if (imageResult.status === 'fulfilled') await imageResult.value.discard();
      throw sidecarResult.status === 'rejected' ? sidecarResult.reason : (imageResult as PromiseRejectedResult).reason;
    }
    const sidecar = sidecarResult.value;
    const image = imageResult.value;
    try {
      // Both in the key's directory: the image's commit fsyncs it once for the two renames.
      await sidecar.place();
    } catch (error) {
      await image.discard();
      throw error;
    }
    return image.commit();
  }

  /**
   * A file of another tree hard-linked under the temp name of a key's original (an
   * import by link), for commitOriginal. Null when the name no longer holds the file
   * `expectedIno` that was read and judged (replaced meanwhile; nothing is staged). A
   * refused link (EPERM, EXDEV, EMLINK) throws its errno error.
   */
  stageLink(bucket: string, key: string, ext: ImageExtension, sourcePath: string, expectedIno: number): Promise<StagedFile | null> {
    return this.stageLinkAs(bucket, key, imageFileName(key, ext), sourcePath, expectedIno);
  }

  /** stageLink for any file name of a key's directory. */
  private async stageLinkAs(bucket: string, key: string, fileName: string, sourcePath: string, expectedIno: number): Promise<StagedFile | null> {
    const directory = await this.prepareKeyDirectory(bucket, key);
    const ext = fileName.slice(fileName.lastIndexOf('.') + 1) as ImageExtension;
    const tempPath = join(directory, tempFileName(fileName, writerUnique()));
    await link(sourcePath, tempPath);
    const place = async (): Promise<StoredImage> => {
      try {
        await rename(tempPath, join(directory, fileName));
      } catch (error) {
        await unlink(tempPath).catch(() => undefined);
        throw error;
      }
      return this.storedAfterRename(bucket, key, fileName, ext);
    };
    const staged: StagedFile = {
      place,
      commit: async () => {
        const stored = await place();
        await syncDirectory(directory);
        return stored;
      },
      discard: () => unlink(tempPath).catch(() => undefined),
    };
    try {
      // link() takes a symlink as it is: the linked entry must be the regular file read.
      const info = lstatIfPresent(tempPath);
      if (info !== null && info.isFile() && info.ino === expectedIno) return staged;
    } catch (error) {
      await staged.discard();
      throw error;
    }
    await staged.discard();
    return null;
  }

  /**
   * Renames a file of another tree on the same filesystem into place as a key's
   * original (an import by move), for commitOriginal's commit step. Throws EXDEV across
   * filesystems.
   */
  async moveIn(bucket: string, key: string, ext: ImageExtension, sourcePath: string): Promise<StoredImage> {
    const fileName = imageFileName(key, ext);
    await rename(sourcePath, join(this.directoryOf(bucket, key), fileName));
    await syncDirectory(this.directoryOf(bucket, key));
    return this.storedAfterRename(bucket, key, fileName, ext);
  }

  private storedAfterRename(bucket: string, key: string, fileName: string, ext: ImageExtension): StoredImage {
    const path = join(this.directoryOf(bucket, key), fileName);
    const info = statSync(path);
    return { path, relativePath: `${keyDirectory(bucket, key)}/${fileName}`, ext, bytes: info.size, modifiedMs: info.mtime.getTime() };
  }

  /** An original's bytes and their sidecar, written by commitOriginal. */
  storeOriginal(bucket: string, key: string, image: OriginalImage, provenance: OriginalProvenance): Promise<StoredImage> {
    return this.commitOriginal(bucket, key, originalMetadata(image, provenance), () =>
      this.stageImage(bucket, key, null, FORMAT_INFO[image.format].ext, image.bytes),
    );
  }

  /**
   * storeOriginal for an original fetched for a thumbnail, which is made from the bytes
   * while the original is staged: once `thumbnail` says what was made (null: nothing
   * will be), the sidecar is staged with the thumbnail's record already in it, beside
   * the thumbnail's own staging, and the three are renamed in the one order (sidecar,
   * original, thumbnail) with one directory fsync for all: one sidecar write instead
   * of two, one directory fsync instead of two. The original is committed whatever
   * becomes of the thumbnail; `thumbnail` in the result is the thumbnail's own outcome.
   */
  async storeOriginalWithThumbnail(
    bucket: string,
    key: string,
    image: OriginalImage,
    provenance: OriginalProvenance,
    thumbnail: Promise<ThumbnailToCommit | null>,
  ): Promise<{ original: StoredImage; thumbnail: PromiseSettledResult<StoredImage> | null }> {
    const metadata = originalMetadata(image, provenance);
    const [sidecarResult, imageResult, thumbnailResult] = await Promise.allSettled([
      thumbnail.then((made) => this.stageMetadata(bucket, key, metadata, made)),
      this.stageImage(bucket, key, null, FORMAT_INFO[image.format].ext, image.bytes),
      thumbnail.then((made) => (made === null ? null : made.staged)),
    ]);
    const stagedThumbnail = thumbnailResult.status === 'fulfilled' ? thumbnailResult.value : null;
    const thumbnailFailure: PromiseSettledResult<StoredImage> | null = thumbnailResult.status === 'rejected' ? thumbnailResult : null;
    if (sidecarResult.status === 'rejected' || imageResult.status === 'rejected') {
      for (const result of [sidecarResult, imageResult]) if (result.status === 'fulfilled') await result.value.discard();
      await stagedThumbnail?.discard();
      throw sidecarResult.status === 'rejected' ? sidecarResult.reason : (imageResult as PromiseRejectedResult).reason;
    }
    try {
      // All three in the key's directory: one fsync of it makes the three renames durable,
      // and a journaling filesystem replays renames of one directory in their order.
      await sidecarResult.value.place();
    } catch (error) {
      await imageResult.value.discard();
      await stagedThumbnail?.discard();
      throw error;
    }
    if (stagedThumbnail === null) return { original: await imageResult.value.commit(), thumbnail: thumbnailFailure };
    let original: StoredImage;
    try {
      original = await imageResult.value.place();
    } catch (error) {
      await stagedThumbnail.discard();
      throw error;
    }
    let placed: PromiseSettledResult<StoredImage>;
    try {
      placed = { status: 'fulfilled', value: await stagedThumbnail.place() };
    } catch (error) {
      placed = { status: 'rejected', reason: error };
    }
    await syncDirectory(this.directoryOf(bucket, key));
    return { original, thumbnail: placed };
  }

  /**
   * A stored image's bytes (what `find` returned), read through server/tree/regularFile.ts:
   * no symlink followed, no FIFO opened, at most `maxBytes`. `not_stored` if it was
   * removed (purged) or replaced by something that is no regular file since the lookup;
   * `bad_image` if it is over the cap.
   */
  async readImage(stored: StoredImage, maxBytes: number): Promise<Buffer> {
    try {
      return await readRegularFile(stored.path, maxBytes);
    } catch (error) {
      if (isIrregularFileError(error) && error.reason === 'too_large') {
        throw new ImageproxyError('bad_image', 'image cannot be resized', { detail: `${stored.relativePath}: over limits.maxBytes`, cause: error });
      }
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' && !isIrregularFileError(error)) throw error;
      throw new ImageproxyError('not_stored', 'image is not stored', { detail: `${stored.relativePath} removed since it was looked up`, cause: error });
    }
  }

  /**
   * A failed write below a key's directory as 507 `storage_full` or 500
   * `storage_unwritable` naming the directory (server/tree/diskErrors.ts); anything else
   * unchanged. Recursive mkdir says ENOENT on a read-only tree: the nearest existing
   * parent is then asked why.
   */
  async explainWriteFailure(thrown: unknown, bucket: string, key: string): Promise<unknown> {
    const directory = this.directoryOf(bucket, key);
    if (isMissingAfterMkdir(thrown)) {
      for (let parent = directory; parent !== dirname(parent); parent = dirname(parent)) {
        try {
          await access(parent, fsConstants.F_OK);
        } catch {
          continue;
        }
        try {
          await access(parent, fsConstants.W_OK);
        } catch (probe) {
          return storageError(probe, parent) ?? thrown;
        }
        break;
      }
    }
    return storageError(thrown, directory) ?? thrown;
  }

  async readFailure(bucket: string, key: string, stem: string): Promise<FailureRecord | null> {
    const name = failureFileName(stem);
    // Almost every miss has no record: one lstat says so without opening anything.
    if (lstatIfPresent(join(this.directoryOf(bucket, key), name)) === null) return null;
    const text = await this.readMetadataText(bucket, key, name);
    return text === undefined || text === null ? null : parseFailureRecord(text);
  }

  async writeFailure(bucket: string, key: string, stem: string, record: FailureRecord): Promise<void> {
    await this.writeAtomic(bucket, key, failureFileName(stem), Buffer.from(`${JSON.stringify(record)}\n`));
  }

  async clearFailure(bucket: string, key: string, stem: string): Promise<void> {
    await rm(join(this.directoryOf(bucket, key), failureFileName(stem)), { force: true });
  }

  /**
   * The `tree` lock of a key's original (a directory proper-lockfile makes), after
   * creating the key's directory: a tree without init-buckets works too.
   */
  async prepareLock(bucket: string, key: string): Promise<string> {
    return join(await this.prepareKeyDirectory(bucket, key), lockFileName(key));
  }

  /**
   * Removes everything stored for a key: original, thumbnails (the files of format
   * classes and their hard links included: every `{key}.*` name), metadata and backoff
   * records (not a lock or temp file of a write in progress). Returns the removed paths.
   */
  async purge(bucket: string, key: string): Promise<string[]> {
    const removed: string[] = [];
    for (const path of await this.keyFiles(bucket, key)) {
      if (path.endsWith('.lock')) continue;
      await rm(path, { force: true });
      removed.push(path);
    }
    return removed;
  }

  /** Every entry of the key's directory that belongs to the key (images, sidecar, records, locks), sorted. */
  async keyFiles(bucket: string, key: string): Promise<string[]> {
    const directory = this.directoryOf(bucket, key);
    try {
      const names = await readdir(directory);
      return names.filter((name) => name.startsWith(`${key}.`)).sort().map((name) => join(directory, name));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
  }

  /**
   * Creates `{bucket}/{c1}/{c2}` for all 64 × 64 pairs. Idempotent: existing directories
   * are kept. Returns how many directories were created.
   */
  async initBuckets(buckets: readonly string[]): Promise<number> {
    let created = 0;
    for (const bucket of buckets) {
      for (const first of SHARD_CHARACTERS) {
        for (const second of SHARD_CHARACTERS) {
          const made = await mkdir(join(this.root, bucket, first, second), { recursive: true });
          if (made !== undefined) created += 1;
        }
      }
    }
    return created;
  }
}
