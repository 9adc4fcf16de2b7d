/**
 * The sidecar's facts as object metadata. Pure.
 *
 * In the tree an original's facts live in its sidecar `{key}.json`, written before the
 * image. In a bucket they ride on the image object itself (`x-amz-meta-*`), so the one
 * PUT that makes the image visible also makes its facts visible: no order to keep, no
 * sidecar without image or image without sidecar. The type and the size are the
 * object's own Content-Type and Content-Length. A thumbnail object carries its own
 * record (its sha256), since metadata cannot change after the PUT.
 *
 * Metadata values travel as HTTP headers: every value written here is printable ASCII
 * (untrusted text, the source URL and the origin's Content-Type, percent-encoded), and
 * the whole stays within METADATA_BUDGET_BYTES, the smallest limit among S3 servers
 * (AWS's 2 KB of user metadata). A source URL that does not fit is left out: the facts
 * then read back with `sourceUrl: null`, as a sidecar rebuilt from the bytes does.
 * Reading checks each field on its own: a malformed or missing field makes the object's
 * facts unknown (null), never a throw.
 */
import type { ImageMetadata, VariantRecord } from '../tree/originals.js';

/** AWS counts the UTF-8 bytes of every metadata name and value (without `x-amz-meta-`). */
export const METADATA_BUDGET_BYTES = 2048;

/** Metadata names (S3 lower-cases them). */
const FIELD = {
  sha256: 'sha256',
  width: 'width',
  height: 'height',
  frames: 'frames',
  fetchedAt: 'fetched-at',
  originContentType: 'origin-type',
  sourceUrl: 'source-url',
} as const;

/** What an object says about itself beside its metadata. */
export interface ObjectFacts {
  contentType: string;
  bytes: number;
}

const SHA256_PATTERN = /^[0-9a-f]{64}$/;
const COUNT_PATTERN = /^[1-9][0-9]{0,8}$/;
const INSTANT_PATTERN = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;

/** The metadata of an original's object: its sidecar's facts but the variants (each thumbnail object carries its own). */
export function originalObjectMetadata(facts: ImageMetadata): Record<string, string> {
  const metadata: Record<string, string> = {
    [FIELD.sha256]: facts.sha256,
    [FIELD.width]: String(facts.width),
    [FIELD.height]: String(facts.height),
    [FIELD.frames]: String(facts.frames),
    [FIELD.fetchedAt]: facts.fetchedAt,
  };
  const originType = facts.originContentType === null ? null : percentEncoded(facts.originContentType);
  if (originType !== null) metadata[FIELD.originContentType] = originType;
  const sourceUrl = facts.sourceUrl === null ? null : percentEncoded(facts.sourceUrl);
  if (sourceUrl !== null && metadataBytes(metadata) + FIELD.sourceUrl.length + sourceUrl.length <= METADATA_BUDGET_BYTES) {
    metadata[FIELD.sourceUrl] = sourceUrl;
  }
  return metadata;
}

/** An original's facts from its object's metadata, or null when a needed field is missing or malformed. */
export function originalFactsOf(metadata: Readonly<Record<string, string | undefined>>, object: ObjectFacts): ImageMetadata | null {
  const sha256 = metadata[FIELD.sha256];
  const width = countOf(metadata[FIELD.width]);
  const height = countOf(metadata[FIELD.height]);
  const frames = countOf(metadata[FIELD.frames]);
  const fetchedAt = metadata[FIELD.fetchedAt];
  if (sha256 === undefined || !SHA256_PATTERN.test(sha256) || width === null || height === null || frames === null) return null;
  if (fetchedAt === undefined || !INSTANT_PATTERN.test(fetchedAt) || !Number.isFinite(Date.parse(fetchedAt))) return null;
  return {
    sourceUrl: percentDecoded(metadata[FIELD.sourceUrl]),
    contentType: object.contentType,
    originContentType: percentDecoded(metadata[FIELD.originContentType]),
    bytes: object.bytes,
    width,
    height,
    frames,
    sha256,
    fetchedAt,
  };
}

/** The metadata of a thumbnail's object. */
export function variantObjectMetadata(record: VariantRecord): Record<string, string> {
  return { [FIELD.sha256]: record.sha256 };
}

/** A thumbnail's record from its object, or null when its digest is missing or malformed. */
export function variantRecordOfObject(metadata: Readonly<Record<string, string | undefined>>, object: ObjectFacts): VariantRecord | null {
  const sha256 = metadata[FIELD.sha256];
  if (sha256 === undefined || !SHA256_PATTERN.test(sha256)) return null;
  return { bytes: object.bytes, sha256, contentType: object.contentType };
}

/** The bytes AWS counts for a metadata set: names and values, UTF-8. */
export function metadataBytes(metadata: Readonly<Record<string, string>>): number {
  let total = 0;
  for (const [name, value] of Object.entries(metadata)) total += Buffer.byteLength(name) + Buffer.byteLength(value);
  return total;
}

function countOf(value: string | undefined): number | null {
  return value !== undefined && COUNT_PATTERN.test(value) ? Number(value) : null;
}

/** Printable ASCII for any text; null for text that is not well-formed UTF-16 (a lone surrogate). */
function percentEncoded(text: string): string | null {
  try {
    return encodeURIComponent(text);
  } catch {
    return null;
  }
}

function percentDecoded(value: string | undefined): string | null {
  if (value === undefined) return null;
  try {
    return decodeURIComponent(value);
  } catch {
    return null;
  }
}
