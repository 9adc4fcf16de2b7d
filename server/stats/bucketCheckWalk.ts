/**
 * `check` on an S3 bucket: every image object read whole (streamed, hashed on the way)
 * and judged against what its metadata says: an original's facts
 * (server/storage/objectMetadata.ts) and digest, a thumbnail's record (its digest), and
 * the type its bytes are against its Content-Type; with `decode`, a full decode by sharp.
 * A damaged object is reported in the tree's finding form (server/tree/healthWalk.ts);
 * with `repair` it is deleted, so the next request makes it again (the original fetched,
 * the thumbnail resized). A bucket has no temp files, locks or sidecars to find.
 */
import { createHash } from 'node:crypto';
import type { FindingKind } from '../tree/health.js';
import type { FindingReport, TreeHealthResult } from '../tree/healthWalk.js';
import { decodeFailure } from '../images/imageDecode.js';
import { FORMAT_INFO, sniffImageType, type ImageFormat } from '../images/sniff.js';
import { originalFactsOf, variantRecordOfObject } from '../storage/objectMetadata.js';
import { parseImageObjectName, type ImageObjectName } from '../storage/objectNames.js';
import type { ObjectInfo, ObjectStore } from '../storage/objectStore.js';
import { SHARDS_PER_BUCKET } from '../contract/layout.js';

/** Enough of an image's head for the sniffer to name its format. */
const SNIFF_BYTES = 64;

/** What reading an object found: its facts, what its bytes are and hash to, and (with decode) why they do not decode. */
export interface ObjectReading {
  image: ImageObjectName;
  info: Pick<ObjectInfo, 'bytes' | 'contentType' | 'metadata'>;
  sniffed: ImageFormat | null;
  sha256: string;
  decodeError?: string | null;
}

/** Why the object is damaged, or null when it is sound. Pure. */
export function objectDamage(reading: ObjectReading): string | null {
  const { image, info, sniffed, sha256 } = reading;
  if (info.bytes === 0) return 'empty';
  const type = info.contentType.split(';')[0]?.trim().toLowerCase() ?? '';
  if (sniffed === null) return `the bytes are no image of ours (Content-Type ${type})`;
  if (FORMAT_INFO[sniffed].contentType !== type) return `the bytes are ${sniffed}, the Content-Type says ${type}`;
  const facts = { contentType: info.contentType, bytes: info.bytes };
  const recorded = image.label === null ? originalFactsOf(info.metadata, facts)?.sha256 : variantRecordOfObject(info.metadata, facts)?.sha256;
  if (recorded === undefined) return image.label === null ? "the original's metadata is missing or malformed" : 'no sha256 metadata';
  if (recorded !== sha256) return `the bytes hash to sha256 ${sha256}, the metadata says ${recorded}`;
  if (reading.decodeError !== undefined && reading.decodeError !== null) return `does not decode: ${reading.decodeError}`;
  return null;
}

export interface BucketCheckOptions {
  store: ObjectStore;
  buckets: readonly string[];
  repair: boolean;
  decode?: boolean;
  /** The most bytes of an image read whole for a decode: limits.maxBytes. */
  maxImageBytes: number;
  onFinding: (report: FindingReport) => void;
  signal?: AbortSignal;
  onShardDone?: (bucket: string) => void;
  onBucketDone?: (bucket: string, shardsWithObjects: number) => void;
}

/** Reads the object through a hash (and, with decode, whole); null when it went since the listing. */
async function readObject(store: ObjectStore, name: string, image: ImageObjectName, decode: boolean, maxImageBytes: number): Promise<ObjectReading | null> {
  const opened = await store.open(name);
  if (opened === null) return null;
  const hash = createHash('sha256');
  const head: Buffer[] = [];
  const whole: Buffer[] = [];
  let headBytes = 0;
  let total = 0;
  for await (const chunk of opened.body) {
    const buffer = chunk as Buffer;
    hash.update(buffer);
    total += buffer.length;
    if (headBytes < SNIFF_BYTES) {
      head.push(buffer);
      headBytes += buffer.length;
    }
    if (decode && total <= maxImageBytes) whole.push(buffer);
  }
  const decodeError = decode && total <= maxImageBytes ? await decodeFailure(Buffer.concat(whole, total)) : undefined;
  return {
    image,
    info: { ...opened.info, bytes: total },
    sniffed: sniffImageType(Buffer.concat(head)),
    sha256: hash.digest('hex'),
    ...(decodeError === undefined ? {} : { decodeError }),
  };
}

function kindOf(image: ImageObjectName): FindingKind {
  return image.label === null ? 'damaged-original' : 'damaged-thumbnail';
}

export async function walkBucketHealth(options: BucketCheckOptions): Promise<TreeHealthResult> {
  const { store } = options;
  const found = { 'stale-temp': 0, 'stale-lock': 0, 'missing-sidecar': 0, 'damaged-original': 0, 'damaged-thumbnail': 0, 'not-regular': 0 } satisfies Record<FindingKind, number>;
  let repaired = 0;
  let repairFailed = 0;
  let shardsWalked = 0;
  let interrupted = false;
  for (const bucket of options.buckets) {
    let shard: string | null = null;
    let shardsWithObjects = 0;
    for await (const listed of store.list(`${bucket}/`)) {
      const image = parseImageObjectName(listed.name);
      if (image === null || image.bucket !== bucket) continue;
      const objectShard = `${image.key[0]}${image.key[1]}`;
      if (objectShard !== shard) {
        if (shard !== null) {
          shardsWithObjects += 1;
          options.onShardDone?.(bucket);
        }
        shard = objectShard;
        if (options.signal?.aborted === true) {
          interrupted = true;
          shard = null;
          break;
        }
      }
      const reading = await readObject(store, listed.name, image, options.decode === true, options.maxImageBytes);
      const damage = reading === null ? null : objectDamage(reading);
      if (damage === null) continue;
      const kind = kindOf(image);
      found[kind] += 1;
      let repair: FindingReport['repair'] = null;
      let repairDetail: string | null = null;
      if (options.repair) {
        try {
          await store.delete(listed.name);
          repair = 'repaired';
          repairDetail = 'deleted: made again on the next request';
          repaired += 1;
        } catch (error) {
          repair = 'failed';
          repairDetail = (error as Error).message;
          repairFailed += 1;
        }
      }
      const name = listed.name.slice(listed.name.lastIndexOf('/') + 1);
      options.onFinding({ kind, name, key: image.key, detail: damage, bucket, relativePath: listed.name, repair, repairDetail });
    }
    if (shard !== null) {
      shardsWithObjects += 1;
      options.onShardDone?.(bucket);
    }
    shardsWalked += interrupted ? shardsWithObjects : SHARDS_PER_BUCKET;
    if (interrupted) break;
    options.onBucketDone?.(bucket, shardsWithObjects);
  }
  return { complete: !interrupted, found, repaired, repairFailed, shardsWalked };
}
