/**
 * The heal pass's sample (server/tree/healSample.ts): up to `limit` stored images read whole
 * each pass, from where the previous pass stopped. An image with a recorded digest (an
 * original's in its sidecar, a thumbnail's record there) is hashed and compared; one
 * without (a thumbnail of an older tree) is decoded by sharp as `check --decode` does,
 * and a thumbnail that decodes is recorded then. A mismatch is a `damaged-original` or
 * `damaged-thumbnail` finding, repaired as the walk repairs it (moved aside; the next
 * request fetches or makes it again). Bit rot inside a file of the right size and type is
 * invisible to the lookup and to the walk; this is what finds it.
 */
import { lstat, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { HEAL_CURSOR_FILE_NAME, formatSampleCursor, parseSampleCursor, sampleOfShard, shardsFrom, type SamplePosition } from './healSample.js';
import { decodeFailure } from '../images/imageDecode.js';
import { STATE_DIRECTORY, classifyTreeFile, keyOfTreeFile, metadataFileName } from '../contract/layout.js';
import { sha256Hex, variantRecordOf } from './originals.js';
import { isIrregularFileError, readRegularFile, readRegularText } from './regularFile.js';
import { FORMAT_INFO, sniffImageType } from '../images/sniff.js';
import { ImageStore, SNIFF_BYTES } from './store.js';
import { writeFileAtomic } from './atomicFile.js';
import { damagedImageReason, variantRecordIn, variantRecordNameOf, type Finding, type SidecarReading } from './health.js';
import { repairFinding, type FindingReport } from './healthWalk.js';

/** Far above any image the service stores (limits.maxBytes); a larger file is skipped, not judged. */
const LARGEST_VERIFIED_FILE = 64 * 1024 * 1024;

export interface TreeVerifyOptions {
  root: string;
  buckets: readonly string[];
  /** Images read whole at most this pass. */
  limit: number;
  /** Aborted: stop after the current image; the cursor keeps what was done. */
  signal?: AbortSignal;
  /** Each damaged image found, with its repair. */
  onFinding?: (report: FindingReport) => void;
  now?: () => number;
}

export interface TreeVerifyResult {
  /** Images read whole and judged. */
  verified: number;
  /** Of those, found damaged (and moved aside unless the repair failed). */
  damaged: number;
  /** Thumbnails without a record that decoded and were recorded. */
  recorded: number;
  repairFailed: number;
  /** The pass reached the end of the tree: the next one starts over. */
  wrapped: boolean;
  /** Where the next pass starts after (null: the start). */
  cursor: SamplePosition | null;
}

export function healCursorPath(root: string): string {
  return join(root, STATE_DIRECTORY, HEAL_CURSOR_FILE_NAME);
}

async function readCursor(root: string): Promise<SamplePosition | null> {
  try {
    return parseSampleCursor(await readRegularText(healCursorPath(root)));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' || isIrregularFileError(error)) return null;
    throw error;
  }
}

async function listShard(directory: string): Promise<string[]> {
  try {
    return await readdir(directory);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw error;
  }
}

type Judgement = { kind: 'gone' | 'skipped' | 'sound' } | { kind: 'recorded' } | { kind: 'damaged'; reason: string; bytes: number; modifiedMs: number };

/** Reads one image whole and judges it against its record, or by decoding it. */
async function judgeImage(store: ImageStore, bucket: string, directory: string, name: string, sidecar: SidecarReading | undefined): Promise<Judgement> {
  const path = join(directory, name);
  let bytes: Buffer;
  let facts: { bytes: number; modifiedMs: number };
  try {
    const info = await lstat(path);
    facts = { bytes: info.size, modifiedMs: info.mtimeMs };
    bytes = await readRegularFile(path, LARGEST_VERIFIED_FILE);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'gone' };
    if (isIrregularFileError(error)) {
      return error.reason === 'too_large' ? { kind: 'skipped' } : { kind: 'damaged', reason: 'not a regular file', bytes: 0, modifiedMs: 0 };
    }
    throw error;
  }
  const sniffed = sniffImageType(bytes.subarray(0, SNIFF_BYTES));
  const isOriginal = classifyTreeFile(name) === 'original';
  const variantRecord = isOriginal ? undefined : variantRecordIn(sidecar, name);
  const recorded = isOriginal ? (sidecar ?? null) : (variantRecord ?? null);
  const judged = {
    name,
    bytes: bytes.length,
    sniffed,
    ...(isOriginal && sidecar !== undefined ? { sidecar } : {}),
    ...(variantRecord === undefined ? {} : { variantRecord }),
  };
  if (recorded?.sha256 !== undefined) {
    const reason = damagedImageReason({ ...judged, sha256: sha256Hex(bytes) });
    return reason === null ? { kind: 'sound' } : { kind: 'damaged', reason, ...facts };
  }
  // No digest to compare with: the bytes must decode.
  const typeReason = damagedImageReason(judged);
  if (typeReason !== null) return { kind: 'damaged', reason: typeReason, ...facts };
  const failure = await decodeFailure(bytes);
  if (failure !== null) return { kind: 'damaged', reason: `does not decode: ${failure}`, ...facts };
  // A format class's file is recorded under its own name, never over the source-format thumbnail's record.
  const recordName = variantRecordNameOf(name);
  const key = keyOfTreeFile(name);
  if (isOriginal || recordName === null || key === null || sniffed === null) return { kind: 'sound' };
  const recordedNow = await store.recordVariant(bucket, key, recordName, variantRecordOf(bytes, FORMAT_INFO[sniffed].contentType));
  return { kind: recordedNow ? 'recorded' : 'sound' };
}

/** Verifies the next sample of the tree and moves the cursor on; see the module comment. */
export async function verifyTreeSample(options: TreeVerifyOptions): Promise<TreeVerifyResult> {
  const store = new ImageStore(options.root, options.now === undefined ? {} : { now: options.now });
  const start = await readCursor(options.root);
  const result: TreeVerifyResult = { verified: 0, damaged: 0, recorded: 0, repairFailed: 0, wrapped: false, cursor: start };
  let finished = true;
  const aborted = (): boolean => options.signal?.aborted === true;
  walk: for (const { bucket, shard } of shardsFrom(options.buckets, start)) {
    const room = options.limit - result.verified;
    if (room <= 0 || aborted()) {
      finished = false;
      break;
    }
    const directory = join(options.root, bucket, ...shard.split('/'));
    const names = await listShard(directory);
    const after = start !== null && start.bucket === bucket && start.shard === shard ? start.name : null;
    const sample = sampleOfShard(names, after, room);
    const sidecars = new Map<string, SidecarReading | undefined>();
    for (const name of sample) {
      if (aborted()) {
        finished = false;
        break walk;
      }
      const key = keyOfTreeFile(name) ?? '';
      if (!sidecars.has(key)) sidecars.set(key, names.includes(metadataFileName(key)) ? await readSidecarQuietly(store, bucket, key) : undefined);
      const judgement = await judgeImage(store, bucket, directory, name, sidecars.get(key));
      result.cursor = { bucket, shard, name };
      if (judgement.kind === 'gone' || judgement.kind === 'skipped') continue;
      result.verified += 1;
      if (judgement.kind === 'recorded') result.recorded += 1;
      if (judgement.kind !== 'damaged') continue;
      result.damaged += 1;
      const kind = classifyTreeFile(name) === 'original' ? 'damaged-original' : 'damaged-thumbnail';
      const finding: Finding = { kind, name, key, detail: judgement.reason };
      let repairDetail: string;
      let repair: FindingReport['repair'] = 'repaired';
      try {
        const seen = judgement.bytes === 0 && judgement.modifiedMs === 0 ? undefined : { name, isDirectory: false, bytes: judgement.bytes, modifiedMs: judgement.modifiedMs };
        repairDetail = await repairFinding(store, bucket, directory, finding, names, seen, LARGEST_VERIFIED_FILE);
      } catch (error) {
        repair = 'failed';
        repairDetail = (error as Error).message;
        result.repairFailed += 1;
      }
      options.onFinding?.({ ...finding, bucket, relativePath: `${bucket}/${shard}/${name}`, repair, repairDetail });
    }
  }
  if (finished) {
    result.wrapped = true;
    result.cursor = null;
  }
  await mkdir(join(options.root, STATE_DIRECTORY), { recursive: true });
  await writeFileAtomic(healCursorPath(options.root), formatSampleCursor(result.cursor));
  return result;
}

/** The key's sidecar, or null (unreadable) when it cannot be read: a sample goes on past it. */
async function readSidecarQuietly(store: ImageStore, bucket: string, key: string): Promise<SidecarReading | undefined> {
  try {
    return await store.readSidecar(bucket, key);
  } catch {
    return null;
  }
}
