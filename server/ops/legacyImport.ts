/**
 * Adopts an imageproxy-py tree into ours, with no network access: each legacy image is
 * checked as a fetched one would be (URL from its `.headers`, type and size from its
 * bytes) and placed under our key with our sidecar, by copy, hard link or move; or, with
 * `storage.type: "s3"`, stored in the bucket as the service stores a fetched original
 * (server/storage/imageBackend.ts: `create`, the sidecar's facts as object metadata). The
 * tree
 * is walked as a stream with a small pool of entries in flight, so memory stays bounded
 * on trees of millions of files. server/ops/legacyTree.ts decides; this module does the I/O.
 *
 * The old tree is untrusted: its files are read only through server/tree/regularFile.ts (no
 * symlink followed, no FIFO opened into a wait, no read past a cap), its symlinks are
 * reported and never walked, and every entry not imported gets one report line.
 */
import { lstat, readlink, realpath, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeFailure } from '../images/imageDecode.js';
import { digestsOf, originalMetadata, type OriginalImage } from '../tree/originals.js';
import { imageFileName } from '../contract/layout.js';
import {
  decideLegacyEntry,
  headersFileName,
  isInsideTree,
  judgeLegacyExtUrl,
  legacyNameMatches,
  parseLegacyHeaders,
  rerunMightFix,
  type LegacyProblemReason,
} from './legacyTree.js';
import { IrregularFileError, METADATA_READ_CAP, readRegularFileAndFacts, readRegularText } from '../tree/regularFile.js';
import { FORMAT_INFO, inspectImage, pixelCount } from '../images/sniff.js';
import type { Committable, ImageStore } from '../tree/store.js';
import { damagedImageReason } from '../tree/health.js';
import { walkLegacyBucket, type TreeEntryType } from '../tree/walk.js';
import type { ImageBackend } from '../storage/imageBackend.js';
import { isGatewayFailure } from '../storage/storageErrors.js';
import type { ImageproxyError } from '../errors.js';

export type ImportMode = 'copy' | 'link' | 'move';

/**
 * Where the originals go: the tree (copy, link or move), or a bucket through the
 * service's backend (copy or move: a bucket has no hard links). imageproxy-py kept no
 * thumbnails (imgproxy made them per request), so neither target gets any: they are made
 * on first use.
 */
export type ImportTarget = { kind: 'tree'; store: ImageStore } | { kind: 'bucket'; backend: ImageBackend };

type EntryOutcome = 'ok' | 'failed' | 'skipped';

interface ImportProblem {
  /** `{bucket}/{A}/{B}/{name}` (or a shorter path for a bucket or shard directory), relative to the py root. */
  path: string;
  reason: LegacyProblemReason;
  detail: string;
}

/** What the blocklist is asked about an entry before it is placed. */
export interface BlockCandidate {
  key: string;
  host: string;
  /**
   * sha256 (hex) of the legacy bytes and, when stripping changed them, of the bytes to
   * store (what `purge --block` records); empty for the first check, before any read.
   */
  digests: readonly string[];
}

export interface ImportOptions {
  pyRoot: string;
  buckets: readonly string[];
  target: ImportTarget;
  mode: ImportMode;
  dryRun: boolean;
  /** Decode every image in full, as `check --decode` does; one that fails is not imported (`damaged`). */
  decode: boolean;
  limits: { maxBytes: number; maxPixels: number };
  /** Entries in flight at once. */
  concurrency: number;
  signal: AbortSignal;
  /**
   * The bytes step every original takes before placement (metadata stripping, as for
   * fetched originals). Returns the image itself when the bytes stay, or a new one with
   * new bytes, which are written even in link and move mode, never linked; `warning`
   * goes to the report (bytes kept because they could not be stripped).
   */
  prepare: (image: OriginalImage) => { image: OriginalImage; warning: string | null };
  /** A reason text when the entry is blocked, else null. */
  blockedReason: (candidate: BlockCandidate) => string | null;
  /** Called once per counted entry, as it finishes. */
  onEntry: (outcome: EntryOutcome) => void;
  /** Called for each report line (failures and warnings). */
  onProblem: (problem: ImportProblem) => void;
}

export interface ImportResult {
  imported: number;
  skipped: number;
  /** Entries reported and not imported. */
  failed: number;
  /** Of `failed`, those a rerun might import (rerunMightFix): what the exit code counts. */
  failedRetryable: number;
  warnings: number;
  /** `.err` and `.tmp` files seen and left alone. */
  ignored: number;
  /** `--link`: files copied because the kernel refused the hard link, by errno code. */
  copiedNotLinked: Map<string, number>;
  interrupted: boolean;
  /** The gateway's failure that stopped a bucket import (unreachable, refused, no bucket); null when none did. */
  stoppedBy: ImageproxyError | null;
}

/** Counts the entries a run will tick, for the progress total: names and types only, no stat. */
export async function countLegacyEntries(pyRoot: string, buckets: readonly string[], signal: AbortSignal): Promise<number> {
  let count = 0;
  for (const bucket of buckets) {
    const place = await lstat(join(pyRoot, bucket)).catch(() => null);
    if (place === null) continue;
    if (!place.isDirectory()) {
      count += 1;
      continue;
    }
    for await (const item of walkLegacyBucket(join(pyRoot, bucket))) {
      if (signal.aborted) return count;
      const action = item.kind === 'unreadable' ? 'report' : decideLegacyEntry(item).action;
      if (action !== 'ignore' && action !== 'headers') count += 1;
    }
  }
  return count;
}

class EntryFailure extends Error {
  constructor(
    readonly reason: LegacyProblemReason,
    readonly detail: string,
  ) {
    super(`${reason}: ${detail}`);
  }
}

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException).code;
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return false;
    throw error;
  }
}

/** Where a symlink leads, for the report: it is never followed, only its name resolved. */
async function symlinkTarget(path: string, resolvedPyRoot: string): Promise<{ outside: boolean; detail: string }> {
  const written = await readlink(path).catch(() => '?');
  let resolved: string;
  try {
    resolved = await realpath(path);
  } catch (error) {
    const code = errorCode(error);
    const why = code === 'ENOENT' ? 'dangling' : code === 'ELOOP' ? 'looping' : `unresolvable (${code ?? 'error'})`;
    return { outside: false, detail: `a ${why} symbolic link to ${written}; not followed` };
  }
  const outside = !isInsideTree(resolvedPyRoot, resolved);
  return { outside, detail: `a symbolic link to ${written}${outside ? ', outside the tree' : ''}; not followed` };
}

// The kernel's refusals of a hard link that a copy gets past: another user's file with
// fs.protected_hardlinks=1 (EPERM), another filesystem under one mount (EXDEV), a file
// at its link limit (EMLINK).
const LINK_REFUSALS: ReadonlySet<string> = new Set(['EPERM', 'EXDEV', 'EMLINK']);

/** What one legacy image entry needs to be placed. */
interface LegacyImage {
  bucket: string;
  name: string;
  relativePath: string;
  sourcePath: string;
  headersPath: string;
}

/** The legacy bytes as read, with the inode and mtime of the file they came from. */
interface ReadImage {
  bytes: Buffer;
  ino: number;
  modifiedMs: number;
}

export async function importLegacyTree(options: ImportOptions): Promise<ImportResult> {
  const { target } = options;
  // Found under our key, in any format: what makes a rerun a no-op, in either target.
  const lookup: Pick<ImageStore, 'find'> = target.kind === 'tree' ? target.store : target.backend;
  // The caller's signal, or the gateway's failure: every later entry would fail the same way.
  const stop = new AbortController();
  const signal = stop.signal;
  options.signal.addEventListener('abort', () => stop.abort(), { once: true });
  if (options.signal.aborted) stop.abort();
  const result: ImportResult = {
    imported: 0,
    skipped: 0,
    failed: 0,
    failedRetryable: 0,
    warnings: 0,
    ignored: 0,
    copiedNotLinked: new Map(),
    interrupted: false,
    stoppedBy: null,
  };
  const resolvedPyRoot = await realpath(options.pyRoot);
  const running = new Set<Promise<void>>();
  // Image entries in flight by source path: a `.headers` entry waits for its image's
  // move before deciding it is an orphan. Never larger than the pool.
  const imagesInFlight = new Map<string, Promise<void>>();

  const finish = (outcome: EntryOutcome): void => {
    if (outcome === 'ok') result.imported += 1;
    else if (outcome === 'skipped') result.skipped += 1;
    else result.failed += 1;
    options.onEntry(outcome);
  };
  const fail = (path: string, reason: LegacyProblemReason, detail: string): void => {
    if (rerunMightFix(reason)) result.failedRetryable += 1;
    options.onProblem({ path, reason, detail });
    finish('failed');
  };
  const failWith = (path: string, error: unknown): void => {
    if (error instanceof EntryFailure) return fail(path, error.reason, error.detail);
    if (!isGatewayFailure(error)) return fail(path, 'io_error', error instanceof Error ? error.message : String(error));
    fail(path, 'io_error', `${error.message}: ${error.detail ?? error.code}`);
    if (result.stoppedBy === null) {
      result.stoppedBy = error;
      stop.abort();
    }
  };
  const warn = (path: string, reason: LegacyProblemReason, detail: string): void => {
    result.warnings += 1;
    options.onProblem({ path, reason, detail });
  };

  /** The report's reason for a file regularFile.ts refused; `label` names it in the detail. */
  async function refusal(error: IrregularFileError, label: string): Promise<EntryFailure> {
    const said = error.message.slice(error.path.length + 2);
    if (error.reason === 'too_large') return new EntryFailure('too_large', `${label} ${said}`);
    if ((await lstat(error.path).catch(() => null))?.isSymbolicLink() === true) {
      const target = await symlinkTarget(error.path, resolvedPyRoot);
      return new EntryFailure(target.outside ? 'outside_tree' : 'not_a_regular_file', `${label} is ${target.detail}`);
    }
    return new EntryFailure('not_a_regular_file', `${label} ${said}`);
  }

  async function readHeaders(entry: LegacyImage): Promise<string> {
    const label = headersFileName(entry.name);
    try {
      return await readRegularText(entry.headersPath, METADATA_READ_CAP);
    } catch (error) {
      if (errorCode(error) === 'ENOENT') throw new EntryFailure('no_headers', `${label} is missing`);
      if (error instanceof IrregularFileError) throw await refusal(error, label);
      throw error;
    }
  }

  async function readImage(entry: LegacyImage): Promise<ReadImage> {
    try {
      const { bytes, facts } = await readRegularFileAndFacts(entry.sourcePath, options.limits.maxBytes);
      return { bytes, ino: facts.ino, modifiedMs: facts.modifiedMs };
    } catch (error) {
      if (error instanceof IrregularFileError) {
        const failure = await refusal(error, 'the image');
        throw failure.reason === 'too_large' ? new EntryFailure('too_large', `${failure.detail} (limits.maxBytes)`) : failure;
      }
      throw error;
    }
  }

  async function importImage(entry: LegacyImage): Promise<EntryOutcome> {
    const headers = parseLegacyHeaders(await readHeaders(entry));
    if (headers.extUrl === null) throw new EntryFailure('bad_headers', 'no x-original-url line');
    const verdict = judgeLegacyExtUrl(headers.extUrl);
    if (!verdict.ok) throw new EntryFailure('bad_url', verdict.detail);
    const { key, imageUrl } = verdict;
    // Already stored under our key, in any format: nothing to do (this makes a rerun a no-op).
    if ((await lookup.find(entry.bucket, key, null)) !== null) return 'skipped';
    const host = new URL(imageUrl).hostname;
    const blockedBeforeRead = options.blockedReason({ key, host, digests: [] });
    if (blockedBeforeRead !== null) throw new EntryFailure('blocked', blockedBeforeRead);

    const read = await readImage(entry);
    const sniffed = inspectImage(read.bytes);
    if (sniffed === null) throw new EntryFailure('not_an_image', `not JPEG, PNG, GIF, WebP or AVIF (${headers.contentType ?? 'no content-type'})`);
    if (pixelCount(sniffed) > options.limits.maxPixels) {
      throw new EntryFailure(
        'too_many_pixels',
        `${sniffed.width}x${sniffed.height}x${sniffed.frames}, more than limits.maxPixels ${options.limits.maxPixels}`,
      );
    }
    const original: OriginalImage = { ...sniffed, bytes: read.bytes };
    const { image: preparedImage, warning } = options.prepare(original);
    const { digests, image: prepared } = digestsOf(read.bytes, preparedImage);
    const blockedByBytes = options.blockedReason({ key, host, digests });
    if (blockedByBytes !== null) throw new EntryFailure('blocked', blockedByBytes);
    // The judgement `check` makes of the stored file (with --decode, a full decode): what
    // it would flag as damaged is not imported.
    const ext = FORMAT_INFO[prepared.format].ext;
    const damaged = damagedImageReason({
      name: imageFileName(key, ext),
      bytes: prepared.bytes.length,
      sniffed: prepared.format,
      ...(options.decode ? { decodeError: (await decodeFailure(prepared.bytes)) ?? undefined } : {}),
    });
    if (damaged !== null) throw new EntryFailure('damaged', damaged);
    // Warnings only for what is imported: an entry gets one report line.
    if (!legacyNameMatches(entry.name, headers.extUrl)) {
      warn(entry.relativePath, 'name_mismatch', 'the name is not sha224 of x-original-url; imported under the .headers URL');
    }
    if (warning !== null) warn(entry.relativePath, 'metadata_kept', warning);
    if (options.dryRun) return 'ok';

    const provenance = { sourceUrl: imageUrl, originContentType: headers.contentType, fetchedAt: new Date(read.modifiedMs).toISOString() };
    if (target.kind === 'bucket') {
      // One `create` carrying the facts: an object another writer stored meanwhile is left as it is.
      await target.backend.storeOriginal(entry.bucket, key, prepared, provenance);
      if (options.mode === 'move' && (await stillTheFileRead(entry.sourcePath, read))) await unlink(entry.sourcePath);
    } else {
      const { store } = target;
      // Sidecar first, image last (ImageStore.commitOriginal): the image is the commit point.
      await store.commitOriginal(entry.bucket, key, originalMetadata(prepared, provenance), () =>
        stagePlacement(store, entry, key, prepared, read, prepared.bytes !== original.bytes),
      );
    }
    if (options.mode === 'move') await rm(entry.headersPath, { force: true });
    return 'ok';
  }

  /** Whether the legacy name still holds the file that was read and judged. */
  async function stillTheFileRead(path: string, read: ReadImage): Promise<boolean> {
    const info = await lstat(path).catch(() => null);
    return info !== null && info.isFile() && info.ino === read.ino;
  }

  /**
   * How the legacy file becomes our original, staged for commitOriginal: its bytes
   * written (copy, or bytes changed by the strip), a hard link under a temp name (link),
   * or a rename at commit (move). A link refused, or a legacy name that no longer holds
   * the file read and judged, falls back to writing the judged bytes.
   */
  async function stagePlacement(
    store: ImageStore,
    entry: LegacyImage,
    key: string,
    image: OriginalImage,
    read: ReadImage,
    bytesChanged: boolean,
  ): Promise<Committable<unknown>> {
    const ext = FORMAT_INFO[image.format].ext;
    const stageBytes = (): Promise<Committable<unknown>> => store.stageImage(entry.bucket, key, null, ext, image.bytes);
    if (options.mode === 'copy' || bytesChanged) {
      const staged = await stageBytes();
      if (options.mode !== 'move') return staged;
      return {
        commit: async () => {
          await staged.commit();
          await unlink(entry.sourcePath);
        },
        discard: () => staged.discard(),
      };
    }
    if (options.mode === 'link') {
      let linked: Committable<unknown> | null;
      try {
        linked = await store.stageLink(entry.bucket, key, ext, entry.sourcePath, read.ino);
      } catch (error) {
        const code = errorCode(error);
        if (code === undefined || !LINK_REFUSALS.has(code)) throw error;
        result.copiedNotLinked.set(code, (result.copiedNotLinked.get(code) ?? 0) + 1);
        return stageBytes();
      }
      // Replaced since it was read: the judged bytes go instead.
      return linked ?? stageBytes();
    }
    if (!(await stillTheFileRead(entry.sourcePath, read))) return stageBytes();
    return {
      commit: async () => {
        try {
          await store.moveIn(entry.bucket, key, ext, entry.sourcePath);
        } catch (error) {
          if (errorCode(error) !== 'EXDEV') throw error;
          await (await stageBytes()).commit();
          await unlink(entry.sourcePath);
        }
      },
      discard: () => Promise.resolve(),
    };
  }

  async function handleImage(entry: LegacyImage): Promise<void> {
    try {
      finish(await importImage(entry));
    } catch (error) {
      failWith(entry.relativePath, error);
    }
  }

  /** A `.headers` left by a move stopped between the image's rename and its own removal. */
  async function isLeftByMove(bucket: string, headersPath: string): Promise<boolean> {
    if (options.mode !== 'move') return false;
    const text = await readRegularText(headersPath, METADATA_READ_CAP).catch(() => null);
    const extUrl = text === null ? null : parseLegacyHeaders(text).extUrl;
    const verdict = extUrl === null ? null : judgeLegacyExtUrl(extUrl);
    return verdict?.ok === true && (await lookup.find(bucket, verdict.key, null)) !== null;
  }

  async function handleHeaders(bucket: string, relativePath: string, headersPath: string, type: TreeEntryType, imagePath: string): Promise<void> {
    try {
      await imagesInFlight.get(imagePath);
      // Its image is (or was, before a move) there: the image entry covers both files.
      if (await exists(imagePath)) return;
      // Gone too: removed after its image was moved by this run.
      if (!(await exists(headersPath))) return;
      if (type === 'file' && (await isLeftByMove(bucket, headersPath))) {
        if (!options.dryRun) await rm(headersPath, { force: true });
        finish('skipped');
        return;
      }
      const what = type === 'file' ? '' : type === 'symlink' ? ' (and it is a symbolic link)' : ' (and it is not a regular file)';
      fail(relativePath, 'orphan_headers', `no image file beside it${what}`);
    } catch (error) {
      failWith(relativePath, error);
    }
  }

  const enqueue = async (task: Promise<void>): Promise<void> => {
    running.add(task);
    void task.finally(() => running.delete(task));
    if (running.size >= options.concurrency) await Promise.race(running);
  };

  /** A symlink where a file or shard directory belongs: one report line, never followed. */
  async function reportSymlink(path: string, relativePath: string, reason: LegacyProblemReason): Promise<void> {
    try {
      const target = await symlinkTarget(path, resolvedPyRoot);
      fail(relativePath, target.outside ? 'outside_tree' : reason, target.detail);
    } catch (error) {
      failWith(relativePath, error);
    }
  }

  /** The bucket directory itself: walked only when it is a real directory. */
  async function bucketWalkable(bucket: string): Promise<boolean> {
    const path = join(options.pyRoot, bucket);
    let info;
    try {
      info = await lstat(path);
    } catch (error) {
      if (errorCode(error) === 'ENOENT') return false;
      failWith(bucket, error);
      return false;
    }
    if (info.isDirectory()) return true;
    if (info.isSymbolicLink()) await reportSymlink(path, bucket, 'not_a_directory');
    else fail(bucket, 'not_a_directory', 'not a directory; not walked');
    return false;
  }

  walk: for (const bucket of options.buckets) {
    if (signal.aborted) break;
    if (!(await bucketWalkable(bucket))) continue;
    for await (const item of walkLegacyBucket(join(options.pyRoot, bucket))) {
      if (signal.aborted) break walk;
      const relativePath = item.relativePath === '' ? bucket : `${bucket}/${item.relativePath}`;
      if (item.kind === 'unreadable') {
        fail(relativePath, 'io_error', `cannot list the directory: ${item.error.message}`);
        continue;
      }
      const decision = decideLegacyEntry(item);
      const directory = item.path.slice(0, -item.name.length - 1);
      switch (decision.action) {
        case 'ignore':
          result.ignored += 1;
          break;
        case 'report':
          fail(relativePath, decision.reason, decision.detail);
          break;
        case 'symlink':
          await enqueue(reportSymlink(item.path, relativePath, decision.reason));
          break;
        case 'headers':
          await enqueue(handleHeaders(bucket, relativePath, item.path, item.type, join(directory, decision.imageName)));
          break;
        case 'import': {
          const image: LegacyImage = {
            bucket,
            name: item.name,
            relativePath,
            sourcePath: item.path,
            headersPath: join(directory, headersFileName(item.name)),
          };
          const task = handleImage(image).finally(() => imagesInFlight.delete(item.path));
          imagesInFlight.set(item.path, task);
          await enqueue(task);
          break;
        }
      }
    }
  }
  await Promise.all(running);
  result.interrupted = options.signal.aborted;
  return result;
}

/** Whether two paths are on one filesystem (hard links and fast renames need it). */
export async function sameFilesystem(first: string, second: string): Promise<boolean> {
  const [a, b] = await Promise.all([stat(first), stat(second)]);
  return a.dev === b.dev;
}
