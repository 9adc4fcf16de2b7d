/**
 * Which stored images the heal pass verifies in full (digest against its record, or a
 * decode where there is none) on each pass: a bounded sample taken in one fixed order of
 * the tree (buckets as configured, shard directories in SHARD_CHARACTERS order, names
 * sorted), from just after where the previous pass stopped. The position is kept in
 * `{root}/.imageproxy/heal-cursor.json`, so a restart continues; once the end of the
 * tree is reached the next pass starts over. At N images a pass, a tree of M images is
 * covered in ⌈M / N⌉ passes. Pure: server/tree/verify.ts lists and reads.
 */
import { SHARD_CHARACTERS, classifyTreeFile } from '../contract/layout.js';
import { parseJsonObject } from './originals.js';

/** The last image a pass verified: the next one starts after it. */
export interface SamplePosition {
  bucket: string;
  /** `{a}/{b}`: the shard directory below the bucket. */
  shard: string;
  name: string;
}

export const HEAL_CURSOR_FILE_NAME = 'heal-cursor.json';

/** Every shard directory of a bucket, `{a}/{b}`, in the sample's order. */
export const SHARD_ORDER: readonly string[] = [...SHARD_CHARACTERS].flatMap((first) => [...SHARD_CHARACTERS].map((second) => `${first}/${second}`));

/** The cursor's text as written to disk. */
export function formatSampleCursor(position: SamplePosition | null): string {
  return `${JSON.stringify(position === null ? { start: true } : position)}\n`;
}

/** A cursor's text read back; null (start over) for one that is missing, damaged, or not of this tree's shape. */
export function parseSampleCursor(text: string): SamplePosition | null {
  const parsed = parseJsonObject(text);
  if (parsed === null) return null;
  const { bucket, shard, name } = parsed;
  if (typeof bucket !== 'string' || typeof shard !== 'string' || typeof name !== 'string') return null;
  if (!SHARD_ORDER.includes(shard)) return null;
  return { bucket, shard, name };
}

/**
 * The shard directories a pass goes through, in order, from the cursor's on (that one
 * included: it may hold images after the cursor's name). A cursor in a bucket no longer
 * configured starts over.
 */
export function* shardsFrom(buckets: readonly string[], cursor: SamplePosition | null): Generator<{ bucket: string; shard: string }> {
  const startBucket = cursor === null ? 0 : Math.max(0, buckets.indexOf(cursor.bucket));
  const resumes = cursor !== null && buckets.includes(cursor.bucket);
  for (let index = startBucket; index < buckets.length; index += 1) {
    const bucket = buckets[index] as string;
    const startShard = resumes && index === startBucket ? SHARD_ORDER.indexOf(cursor.shard) : 0;
    for (let shardIndex = Math.max(0, startShard); shardIndex < SHARD_ORDER.length; shardIndex += 1) {
      yield { bucket, shard: SHARD_ORDER[shardIndex] as string };
    }
  }
}

/**
 * The images of one shard directory to verify now: originals and thumbnails (temps,
 * sidecars, records and stray files are not in the sample), sorted, those after `after`
 * (the cursor's name when this is the cursor's shard), at most `room` of them.
 */
export function sampleOfShard(names: Iterable<string>, after: string | null, room: number): string[] {
  if (room <= 0) return [];
  const images = [...names].filter((name) => {
    const kind = classifyTreeFile(name);
    return (kind === 'original' || kind === 'thumbnail') && (after === null || name > after);
  });
  images.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return images.slice(0, room);
}
