/**
 * Adopts an imageproxy-py tree into ours, with no network access: each legacy image is
 * checked as a fetched one would be (URL from its `.headers`, type and size from its
 * bytes) and placed under our key with our sidecar, by copy, hard link or move. The tree
 * is walked as a stream with a small pool of entries in flight, so memory stays bounded
 * on trees of millions of files. server/legacyTree.ts decides; this module does the I/O.
 */
import { link, lstat, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { digestsOf, originalMetadata, type OriginalImage } from './originals.js';
import { imageFileName, tempFileName } from './layout.js';
import {
  classifyLegacyName,
  headersFileName,
  judgeLegacyExtUrl,
  legacyNameMatches,
  parseLegacyHeaders,
  type LegacyProblemReason,
} from './legacyTree.js';
import { FORMAT_INFO, inspectImage, pixelCount } from './sniff.js';
import { writerUnique, type ImageStore } from './store.js';
import { walkShardFiles } from './treeWalk.js';

export type ImportMode = 'copy' | 'link' | 'move';

export type EntryOutcome = 'ok' | 'failed' | 'skipped';

export interface ImportProblem {
  /** `{bucket}/{A}/{B}/{name}`, relative to the py root. */
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
  store: ImageStore;
  mode: ImportMode;
  dryRun: boolean;
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
  failed: number;
  warnings: number;
  /** `.err` and `.tmp` files seen and left alone. */
  ignored: number;
  interrupted: boolean;
}

/** Counts the entries a run will tick (files other than `.headers`, `.err`, `.tmp`): names only, no stat. */
export async function countLegacyEntries(pyRoot: string, buckets: readonly string[], signal: AbortSignal): Promise<number> {
  let count = 0;
  for (const bucket of buckets) {
    for await (const file of walkShardFiles(join(pyRoot, bucket))) {
      if (signal.aborted) return count;
      const { kind } = classifyLegacyName(file.name);
      if (kind === 'image' || kind === 'unknown') count += 1;
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

/** What one legacy image entry needs to be placed. */
interface LegacyImage {
  bucket: string;
  relativePath: string;
  sourcePath: string;
  headersPath: string;
}

export async function importLegacyTree(options: ImportOptions): Promise<ImportResult> {
  const { store, signal } = options;
  const result: ImportResult = { imported: 0, skipped: 0, failed: 0, warnings: 0, ignored: 0, interrupted: false };
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
    options.onProblem({ path, reason, detail });
    finish('failed');
  };
  const warn = (path: string, reason: LegacyProblemReason, detail: string): void => {
    result.warnings += 1;
    options.onProblem({ path, reason, detail });
  };

  async function importImage(entry: LegacyImage, name: string): Promise<EntryOutcome> {
    let headersText: string;
    try {
      headersText = await readFile(entry.headersPath, 'utf8');
    } catch (error) {
      if (errorCode(error) === 'ENOENT') throw new EntryFailure('no_headers', `${headersFileName(name)} is missing`);
      throw error;
    }
    const headers = parseLegacyHeaders(headersText);
    if (headers.extUrl === null) throw new EntryFailure('bad_headers', 'no x-original-url line');
    const verdict = judgeLegacyExtUrl(headers.extUrl);
    if (!verdict.ok) throw new EntryFailure('bad_url', verdict.detail);
    if (!legacyNameMatches(name, headers.extUrl)) {
      warn(entry.relativePath, 'name_mismatch', 'the name is not sha224 of x-original-url; imported under the .headers URL');
    }
    const { key, imageUrl } = verdict;
    // Already stored under our key, in any format: nothing to do (this makes a rerun a no-op).
    if ((await store.find(entry.bucket, key, null)) !== null) return 'skipped';
    const host = new URL(imageUrl).hostname;
    const blockedBeforeRead = options.blockedReason({ key, host, digests: [] });
    if (blockedBeforeRead !== null) throw new EntryFailure('blocked', blockedBeforeRead);

    const info = await lstat(entry.sourcePath);
    if (!info.isFile()) throw new EntryFailure('unknown_file', 'not a regular file');
    if (info.size > options.limits.maxBytes) {
      throw new EntryFailure('too_large', `${info.size} bytes, more than limits.maxBytes ${options.limits.maxBytes}`);
    }
    const bytes = await readFile(entry.sourcePath);
    const sniffed = inspectImage(bytes);
    if (sniffed === null) throw new EntryFailure('not_an_image', `not JPEG, PNG, GIF, WebP or AVIF (${headers.contentType ?? 'no content-type'})`);
    if (pixelCount(sniffed) > options.limits.maxPixels) {
      throw new EntryFailure(
        'too_many_pixels',
        `${sniffed.width}x${sniffed.height}x${sniffed.frames}, more than limits.maxPixels ${options.limits.maxPixels}`,
      );
    }
    const original: OriginalImage = { ...sniffed, bytes };
    const { image: preparedImage, warning } = options.prepare(original);
    const { digests, image: prepared } = digestsOf(bytes, preparedImage);
    const blockedByBytes = options.blockedReason({ key, host, digests });
    if (blockedByBytes !== null) throw new EntryFailure('blocked', blockedByBytes);
    if (warning !== null) warn(entry.relativePath, 'metadata_kept', warning);
    if (options.dryRun) return 'ok';

    const provenance = { sourceUrl: imageUrl, originContentType: headers.contentType, fetchedAt: info.mtime.toISOString() };
    // Sidecar first, image last: the image is the commit point, as in storeOriginal.
    await store.writeMetadata(entry.bucket, key, originalMetadata(prepared, provenance));
    await place(entry, key, prepared, prepared.bytes !== original.bytes);
    if (options.mode === 'move') await rm(entry.headersPath, { force: true });
    return 'ok';
  }

  async function place(entry: LegacyImage, key: string, image: OriginalImage, bytesChanged: boolean): Promise<void> {
    const ext = FORMAT_INFO[image.format].ext;
    const finalName = imageFileName(key, ext);
    const finalPath = join(store.directoryOf(entry.bucket, key), finalName);
    if (options.mode === 'copy' || bytesChanged) {
      await store.storeImage(entry.bucket, key, null, ext, image.bytes);
      if (options.mode === 'move') await unlink(entry.sourcePath);
      return;
    }
    if (options.mode === 'link') {
      // Link under a temp name, then rename over the final one: atomic, like writeAtomic.
      const tempPath = join(store.directoryOf(entry.bucket, key), tempFileName(finalName, writerUnique()));
      await link(entry.sourcePath, tempPath);
      try {
        await rename(tempPath, finalPath);
      } catch (error) {
        await unlink(tempPath).catch(() => undefined);
        throw error;
      }
      return;
    }
    try {
      await rename(entry.sourcePath, finalPath);
    } catch (error) {
      if (errorCode(error) !== 'EXDEV') throw error;
      await store.storeImage(entry.bucket, key, null, ext, image.bytes);
      await unlink(entry.sourcePath);
    }
  }

  async function handleImage(entry: LegacyImage, name: string): Promise<void> {
    try {
      finish(await importImage(entry, name));
    } catch (error) {
      if (error instanceof EntryFailure) fail(entry.relativePath, error.reason, error.detail);
      else fail(entry.relativePath, 'io_error', error instanceof Error ? error.message : String(error));
    }
  }

  /** A `.headers` left by a move stopped between the image's rename and its own removal. */
  async function isLeftByMove(bucket: string, headersPath: string): Promise<boolean> {
    if (options.mode !== 'move') return false;
    const extUrl = parseLegacyHeaders(await readFile(headersPath, 'utf8')).extUrl;
    const verdict = extUrl === null ? null : judgeLegacyExtUrl(extUrl);
    return verdict?.ok === true && (await store.find(bucket, verdict.key, null)) !== null;
  }

  async function handleHeaders(bucket: string, relativePath: string, headersPath: string, imagePath: string): Promise<void> {
    try {
      await imagesInFlight.get(imagePath);
      // Its image is (or was, before a move) there: the image entry covers both files.
      if (await exists(imagePath)) return;
      // Gone too: removed after its image was moved by this run.
      if (!(await exists(headersPath))) return;
      if (await isLeftByMove(bucket, headersPath)) {
        if (!options.dryRun) await rm(headersPath, { force: true });
        finish('skipped');
        return;
      }
      fail(relativePath, 'orphan_headers', 'no image file beside it');
    } catch (error) {
      fail(relativePath, 'io_error', error instanceof Error ? error.message : String(error));
    }
  }

  const enqueue = async (task: Promise<void>): Promise<void> => {
    running.add(task);
    void task.finally(() => running.delete(task));
    if (running.size >= options.concurrency) await Promise.race(running);
  };

  walk: for (const bucket of options.buckets) {
    for await (const file of walkShardFiles(join(options.pyRoot, bucket))) {
      if (signal.aborted) break walk;
      const relativePath = `${bucket}/${file.shard}/${file.name}`;
      const entry = classifyLegacyName(file.name);
      if (entry.kind === 'err' || entry.kind === 'tmp') {
        result.ignored += 1;
      } else if (entry.kind === 'unknown') {
        fail(relativePath, 'unknown_file', 'not an imageproxy-py name');
      } else if (entry.kind === 'headers' && entry.imageName !== null) {
        await enqueue(handleHeaders(bucket, relativePath, join(file.directory, file.name), join(file.directory, entry.imageName)));
      } else if (entry.kind === 'image') {
        const sourcePath = join(file.directory, file.name);
        const image: LegacyImage = {
          bucket,
          relativePath,
          sourcePath,
          headersPath: join(file.directory, headersFileName(file.name)),
        };
        const task = handleImage(image, file.name).finally(() => imagesInFlight.delete(sourcePath));
        imagesInFlight.set(sourcePath, task);
        await enqueue(task);
      }
    }
  }
  await Promise.all(running);
  result.interrupted = signal.aborted;
  return result;
}

/** Whether two paths are on one filesystem (hard links and fast renames need it). */
export async function sameFilesystem(first: string, second: string): Promise<boolean> {
  const [a, b] = await Promise.all([stat(first), stat(second)]);
  return a.dev === b.dev;
}
