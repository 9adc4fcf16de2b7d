/**
 * The heal pass over a bucket tree: a streaming walk (server/tree/walk.ts, lock
 * directories included), one shard directory at a time, its facts gathered (lstat of
 * every entry, sidecars of originals, the first bytes of every image, and with `decode`
 * a full decode by sharp), judged by server/tree/health.ts and, with `repair`, fixed.
 * Used by `imageproxy check` and by the server at start and every healIntervalSeconds.
 *
 * The pid rule for temp files holds on the host that wrote them: temp names carry a tag
 * of the writer's host (layout.tempUnique), and temps of other hosts, or of older names
 * without the tag, are removed only once older than tempMaxAgeSeconds.
 */
import { lstat, rm } from 'node:fs/promises';
import { basename, join, relative } from 'node:path';
import { SHARDS_PER_BUCKET, classifyTreeFile, isLockDirectoryName, metadataFileName } from '../contract/layout.js';
import { decodeFailure } from '../images/imageDecode.js';
import { originalMetadata } from './originals.js';
import { isIrregularFileError, openRegularFile, readRegularFile, readRegularFileAndFacts, readRegularText } from './regularFile.js';
import { LOCK_STALE_MS } from '../fetch/singleFlight.js';
import { inspectImage, sniffImageType, type ImageFormat } from '../images/sniff.js';
import { ImageStore } from './store.js';
import { THIS_HOST_TAG } from './atomicFile.js';
import {
  FINDING_KINDS,
  parseSidecar,
  repairSteps,
  shardFindings,
  type Finding,
  type FindingKind,
  type ShardEntry,
  type SidecarReading,
} from './health.js';
import { walkShardFiles, type ShardFile } from './walk.js';


/** Enough of a file's start for every format's magic number (AVIF's `ftyp` box included). */
const SNIFF_BYTES = 64;
/** Decodes in flight per shard: each holds a whole image's pixels. */
const DECODE_CONCURRENCY = 2;

type RepairOutcome = 'repaired' | 'failed';

export interface FindingReport extends Finding {
  bucket: string;
  /** `{bucket}/{a}/{b}/{name}`, relative to the root. */
  relativePath: string;
  /** null without `repair`. */
  repair: RepairOutcome | null;
  /** What the repair did, or why it failed. */
  repairDetail: string | null;
}

export interface TreeHealthOptions {
  root: string;
  buckets: readonly string[];
  tempMaxAgeMs: number;
  repair: boolean;
  /** Decode every image with sharp; one that fails is damaged. */
  decode?: boolean;
  /** The most bytes of an image read whole (decode, sidecar rebuild): limits.maxBytes, the largest we store. */
  maxImageBytes: number;
  /** Aborted: stop after the current shard directory; the result says `complete: false`. */
  signal?: AbortSignal;
  onFinding?: (report: FindingReport) => void;
  /** Each lock directory seen still fresh: a crashed holder's lock is one until LOCK_STALE_MS has passed. */
  onFreshLock?: (lock: { path: string; modifiedMs: number }) => void;
  /** After each shard directory that held entries. */
  onShardDone?: (bucket: string) => void;
  /** After each bucket, with how many of its shard directories held entries. */
  onBucketDone?: (bucket: string, shardsWithEntries: number) => void;
  now?: () => number;
}

export interface TreeHealthResult {
  complete: boolean;
  found: Record<FindingKind, number>;
  repaired: number;
  repairFailed: number;
  shardsWalked: number;
}

/** Whether a process with this pid exists here: signal 0 checks without sending anything. */
function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists, under another user.
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

async function sniffHead(path: string): Promise<ImageFormat | null> {
  // Any size: only the first bytes are read.
  const { handle } = await openRegularFile(path, Number.MAX_SAFE_INTEGER);
  try {
    const head = Buffer.alloc(SNIFF_BYTES);
    const { bytesRead } = await handle.read(head, 0, SNIFF_BYTES, 0);
    return sniffImageType(head.subarray(0, bytesRead));
  } finally {
    await handle.close();
  }
}

/** Why sharp cannot decode the file (server/images/imageDecode.ts), or null when every frame decodes (or it is no regular file or over the cap: not judged here). */
async function decodeError(path: string, maxImageBytes: number): Promise<string | null> {
  let bytes: Buffer;
  try {
    bytes = await readRegularFile(path, maxImageBytes);
  } catch (error) {
    if (isIrregularFileError(error)) return null;
    throw error;
  }
  return decodeFailure(bytes);
}

async function mapLimited<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const runners = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next] as T;
      next += 1;
      await work(item);
    }
  });
  await Promise.all(runners);
}

/** Removed since the listing, or replaced by something that is no regular file (the next pass sees that). */
function isGone(error: unknown): boolean {
  return (error as NodeJS.ErrnoException).code === 'ENOENT' || isIrregularFileError(error);
}

/** The facts of one shard directory; entries gone since the listing are left out. */
async function gatherFacts(directory: string, files: readonly ShardFile[], decode: boolean, maxImageBytes: number) {
  const stated = await Promise.all(
    files.map(async (file): Promise<ShardEntry | null> => {
      try {
        const info = await lstat(join(directory, file.name));
        const irregular = file.irregular === undefined ? {} : { irregular: file.irregular };
        return { name: file.name, isDirectory: file.isDirectory, bytes: info.size, modifiedMs: info.mtimeMs, ...irregular };
      } catch (error) {
        if (isGone(error)) return null;
        throw error;
      }
    }),
  );
  const entries = stated.filter((entry): entry is ShardEntry => entry !== null);
  // Only regular files are read: a link or a FIFO at a sidecar's or an image's name is a finding of its own.
  const regular = entries.filter((entry) => !entry.isDirectory && entry.irregular === undefined);
  const names = new Set(regular.map((entry) => entry.name));
  const images = regular.filter((entry) => {
    const kind = classifyTreeFile(entry.name);
    return (kind === 'original' || kind === 'thumbnail') && entry.bytes > 0;
  });
  const sidecars = new Map<string, SidecarReading>();
  const sniffed = new Map<string, ImageFormat | null>();
  await Promise.all(
    images.map(async (image) => {
      try {
        sniffed.set(image.name, await sniffHead(join(directory, image.name)));
        const key = image.name.split('.')[0] ?? '';
        if (classifyTreeFile(image.name) === 'original' && names.has(metadataFileName(key))) {
          sidecars.set(key, await readSidecarText(join(directory, metadataFileName(key))));
        }
      } catch (error) {
        if (!isGone(error)) throw error;
      }
    }),
  );
  const decodeErrors = new Map<string, string>();
  if (decode) {
    await mapLimited(images, DECODE_CONCURRENCY, async (image) => {
      if (sniffed.get(image.name) === null) return;
      const error = await decodeError(join(directory, image.name), maxImageBytes).catch((thrown: unknown) => (isGone(thrown) ? null : String(thrown)));
      if (error !== null) decodeErrors.set(image.name, error);
    });
  }
  return { entries, sidecars, sniffed, decodeErrors };
}

/** A sidecar's reading; one over the cap is unreadable (null), as one that does not parse. */
async function readSidecarText(path: string): Promise<SidecarReading> {
  try {
    return parseSidecar(await readRegularText(path));
  } catch (error) {
    if (isIrregularFileError(error) && error.reason === 'too_large') return null;
    throw error;
  }
}

/**
 * Rebuilds an original's sidecar from its bytes: sourceUrl null (unknown), fetchedAt the
 * file's mtime (when it was stored). A file whose header cannot be read is moved aside
 * instead, as a damaged original. Returns what was done.
 */
async function rebuildSidecar(
  store: ImageStore,
  bucket: string,
  key: string,
  name: string,
  names: Iterable<string>,
  maxImageBytes: number,
): Promise<string> {
  const path = join(store.directoryOf(bucket, key), name);
  // Written meanwhile by a fetch (sidecar first, then image): nothing to rebuild.
  const current = await store.readSidecar(bucket, key);
  if (current !== undefined && current !== null) return 'sidecar present now; left alone';
  const { bytes, facts } = await readRegularFileAndFacts(path, maxImageBytes);
  const image = inspectImage(bytes);
  if (image === null) {
    const moved = await store.applyRepairSteps(bucket, store.directoryOf(bucket, key), repairSteps({ kind: 'damaged-original', name, key }, names));
    return `header unreadable: moved aside to ${moved[0] ?? '(gone)'}`;
  }
  await store.writeMetadata(
    bucket,
    key,
    originalMetadata({ ...image, bytes }, { sourceUrl: null, originContentType: null, fetchedAt: new Date(facts.modifiedMs).toISOString() }),
  );
  return `sidecar rebuilt (${image.format} ${image.width}x${image.height}, ${bytes.length} bytes)`;
}

/**
 * Repairs one finding (server/tree/health.ts repairSteps), unless the file changed since
 * it was judged (`seen`); returns what was done. Also used by the heal pass's sample
 * (server/tree/verify.ts).
 */
export async function repairFinding(
  store: ImageStore,
  bucket: string,
  directory: string,
  finding: Finding,
  names: readonly string[],
  seen: ShardEntry | undefined,
  maxImageBytes: number,
): Promise<string> {
  const key = finding.key ?? '';
  const steps = repairSteps(finding, names);
  if (finding.kind === 'missing-sidecar') return rebuildSidecar(store, bucket, key, finding.name, names, maxImageBytes);
  if (finding.kind === 'not-regular') {
    // Written over since the listing (a fetch renames a regular file into its place).
    const now = await lstat(join(directory, finding.name)).catch(() => null);
    if (now !== null && (now.isFile() || now.isDirectory())) return 'replaced meanwhile; left alone';
    const moved = await store.applyRepairSteps(bucket, directory, steps);
    return `moved aside to ${moved.join(', ') || '(gone)'}`;
  }
  if (finding.kind === 'stale-lock') {
    // Refreshed since the listing: its holder is alive after all.
    const now = await lstat(join(directory, finding.name)).catch(() => null);
    if (now !== null && seen !== undefined && now.mtimeMs !== seen.modifiedMs) return 'refreshed meanwhile; left alone';
  }
  if (finding.kind === 'damaged-original' || finding.kind === 'damaged-thumbnail') {
    // Replaced since it was judged (a refetch): the new file is not the damaged one.
    const now = await lstat(join(directory, finding.name)).catch(() => null);
    if (now !== null && seen !== undefined && (now.size !== seen.bytes || now.mtimeMs !== seen.modifiedMs)) {
      return 'replaced meanwhile; left alone';
    }
    const damagedSteps = store.damagedFileSteps(directory, finding, names);
    const moved = await store.applyRepairSteps(bucket, directory, damagedSteps);
    const removed = damagedSteps.filter((step) => step.action === 'remove').map((step) => step.name);
    return `moved aside to ${moved.join(', ') || '(gone)'}${removed.length > 0 ? `; removed ${removed.join(', ')}` : ''}`;
  }
  await store.applyRepairSteps(bucket, directory, steps);
  return 'removed';
}

/**
 * Removes the locks of `seen` that nobody refreshed since: called LOCK_STALE_MS after
 * they were seen, an unchanged mtime means a dead holder. Returns how many.
 */
export async function removeUnrefreshedLocks(seen: ReadonlyArray<{ path: string; modifiedMs: number }>): Promise<number> {
  let removed = 0;
  for (const lock of seen) {
    const now = await lstat(lock.path).catch(() => null);
    if (now === null || now.mtimeMs !== lock.modifiedMs) continue;
    await rm(lock.path, { recursive: true, force: true });
    removed += 1;
  }
  return removed;
}

export async function walkTreeHealth(options: TreeHealthOptions): Promise<TreeHealthResult> {
  const now = options.now ?? Date.now;
  const store = new ImageStore(options.root, { now });
  const found = Object.fromEntries(FINDING_KINDS.map((kind) => [kind, 0])) as Record<FindingKind, number>;
  const result: TreeHealthResult = { complete: true, found, repaired: 0, repairFailed: 0, shardsWalked: 0 };
  const aborted = (): boolean => options.signal?.aborted === true;

  const healShard = async (bucket: string, shard: string, directory: string, files: ShardFile[]): Promise<void> => {
    const facts = await gatherFacts(directory, files, options.decode === true, options.maxImageBytes);
    const findings = shardFindings(facts, {
      nowMs: now(),
      tempMaxAgeMs: options.tempMaxAgeMs,
      lockStaleMs: LOCK_STALE_MS,
      thisHostTag: THIS_HOST_TAG,
      pidAlive,
    });
    const names = facts.entries.map((entry) => entry.name);
    if (options.onFreshLock !== undefined) {
      const stale = new Set(findings.filter((finding) => finding.kind === 'stale-lock').map((finding) => finding.name));
      for (const entry of facts.entries) {
        if (entry.isDirectory && isLockDirectoryName(entry.name) && !stale.has(entry.name)) {
          options.onFreshLock({ path: join(directory, entry.name), modifiedMs: entry.modifiedMs });
        }
      }
    }
    for (const finding of findings) {
      found[finding.kind] += 1;
      let repair: RepairOutcome | null = null;
      let repairDetail: string | null = null;
      if (options.repair) {
        try {
          const seen = facts.entries.find((entry) => entry.name === finding.name);
          repairDetail = await repairFinding(store, bucket, directory, finding, names, seen, options.maxImageBytes);
          repair = 'repaired';
          result.repaired += 1;
        } catch (error) {
          repair = 'failed';
          repairDetail = (error as Error).message;
          result.repairFailed += 1;
        }
      }
      options.onFinding?.({ ...finding, bucket, relativePath: `${bucket}/${shard}/${finding.name}`, repair, repairDetail });
    }
  };

  for (const bucket of options.buckets) {
    if (aborted()) {
      result.complete = false;
      break;
    }
    let shard: string | null = null;
    let directory = '';
    let files: ShardFile[] = [];
    let shardsWithEntries = 0;
    const finishShard = async (): Promise<void> => {
      if (shard === null) return;
      await healShard(bucket, shard, directory, files);
      shardsWithEntries += 1;
      options.onShardDone?.(bucket);
    };
    const onSkippedDirectory = (path: string, what: string): void => {
      found['not-regular'] += 1;
      // Never moved: a bucket linked to another disk may be the admin's doing; they decide.
      const repairDetail = options.repair ? 'left alone: put the directory itself (or a bind mount) in place of the link' : null;
      if (options.repair) result.repairFailed += 1;
      options.onFinding?.({ kind: 'not-regular', name: basename(path), key: null, detail: `${what}: not walked`, bucket, relativePath: relative(options.root, path), repair: options.repair ? 'failed' : null, repairDetail });
    };
    const walk = walkShardFiles(join(options.root, bucket), { directories: true, irregular: true, onSkippedDirectory });
    for await (const file of walk) {
      if (file.shard !== shard) {
        await finishShard();
        shard = file.shard;
        directory = file.directory;
        files = [];
        if (aborted()) {
          result.complete = false;
          shard = null;
          break;
        }
      }
      files.push(file);
    }
    await finishShard();
    result.shardsWalked += result.complete ? SHARDS_PER_BUCKET : shardsWithEntries;
    if (!result.complete) break;
    options.onBucketDone?.(bucket, shardsWithEntries);
  }
  return result;
}
