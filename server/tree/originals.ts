/**
 * The one step every original goes through before it lands in the tree, whether fetched
 * from its origin or adopted from an imageproxy-py tree: prepare the bytes (metadata
 * stripping), digest them, and describe them in a sidecar. Pure; ImageStore.commitOriginal
 * (server/tree/store.ts) writes sidecar and image.
 */
import { createHash } from 'node:crypto';
import { stripMetadata } from '../images/metadataStrip.js';
import type { ImageInfo } from '../images/sniff.js';
import { FORMAT_INFO, inspectImage } from '../images/sniff.js';

/** An original as sniffing read it: format, pixel size, frames, and its bytes. */
export interface OriginalImage extends ImageInfo {
  bytes: Buffer;
  /** sha256 (hex) of `bytes` when already computed: a 2 MB hash on the event loop is worth doing once. */
  sha256?: string;
}

/** Where an original came from, for its sidecar. */
export interface OriginalProvenance {
  /** null when unknown: a sidecar rebuilt from stored bytes (server/tree/healthWalk.ts). */
  sourceUrl: string | null;
  originContentType: string | null;
  fetchedAt: string;
}

/** An original after `prepareOriginal`, and what happened to it. */
export interface PreparedOriginal<Image extends OriginalImage> {
  /** The image to store: stripped, or the input itself. */
  image: Image;
  /** Metadata segments removed (e.g. `APP1 XMP`, `tEXt`); empty when nothing was. */
  removed: string[];
  /** Why the bytes are stored as they came although stripping is on; null otherwise. */
  unchangedReason: string | null;
  /** True when `unchangedReason` is a failure (bytes that did not parse exactly), not a design choice (AVIF). */
  failed: boolean;
}

/**
 * Removes identifying metadata (EXIF, XMP, IPTC, comments) without re-encoding the
 * pixels; see server/images/metadataStrip.ts. Pure. Whatever does not strip cleanly is kept
 * byte for byte: a stripped result must read back with the same format, size and
 * frames as the input, else the input is returned with the reason.
 */
export function prepareOriginal<Image extends OriginalImage>(
  image: Image,
  options: { stripMetadata: boolean },
): PreparedOriginal<Image> {
  const unchanged = (unchangedReason: string | null, failed: boolean): PreparedOriginal<Image> => ({
    image,
    removed: [],
    unchangedReason,
    failed,
  });
  if (!options.stripMetadata) return unchanged(null, false);
  const result = stripMetadata(image.bytes, image.format);
  if (result.kind === 'kept') return unchanged(result.reason, false);
  if (result.kind === 'malformed') return unchanged(result.reason, true);
  if (result.removed.length === 0) return unchanged(null, false);
  const reread = inspectImage(result.bytes);
  if (
    reread === null ||
    reread.format !== image.format ||
    reread.width !== image.width ||
    reread.height !== image.height ||
    reread.frames !== image.frames
  ) {
    const found = reread === null ? 'unreadable' : `${reread.format} ${reread.width}x${reread.height}x${reread.frames}`;
    return unchanged(`stripped bytes read back as ${found}, not ${image.format} ${image.width}x${image.height}x${image.frames}`, true);
  }
  return { image: { ...image, bytes: result.bytes }, removed: result.removed, unchangedReason: null, failed: false };
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * The digests a blocked image is matched on: of the bytes as fetched (or read) and of the
 * bytes as they will be stored, one hash when they are the same. Returns the image to
 * store with its digest attached, so its sidecar does not hash it again.
 */
export function digestsOf(source: Uint8Array, toStore: OriginalImage): { digests: string[]; image: OriginalImage } {
  const sourceDigest = sha256Hex(source);
  const storedDigest = toStore.bytes === source ? sourceDigest : sha256Hex(toStore.bytes);
  const digests = storedDigest === sourceDigest ? [sourceDigest] : [sourceDigest, storedDigest];
  return { digests, image: { ...toStore, sha256: storedDigest } };
}

/** What an original's sidecar (`{key}.json`) holds. */
export interface ImageMetadata {
  /**
   * The image URL it was fetched from; null in a sidecar rebuilt from the stored bytes
   * (heal pass, `check --repair`), where the URL is unknown: only its hash is the key.
   */
  sourceUrl: string | null;
  contentType: string;
  originContentType: string | null;
  bytes: number;
  width: number;
  height: number;
  frames: number;
  /** sha256 (hex) of the stored bytes: what `purge --block` records to refuse the same image elsewhere. */
  sha256: string;
  fetchedAt: string;
  /** The key's variants as made (ImageStore.recordVariant), by label; absent until one is. */
  variants?: Record<string, VariantRecord>;
}


/** The sidecar of an original. */
export function originalMetadata(image: OriginalImage, provenance: OriginalProvenance): ImageMetadata {
  return {
    sourceUrl: provenance.sourceUrl,
    contentType: FORMAT_INFO[image.format].contentType,
    originContentType: provenance.originContentType,
    bytes: image.bytes.length,
    width: image.width,
    height: image.height,
    frames: image.frames,
    sha256: image.sha256 ?? sha256Hex(image.bytes),
    fetchedAt: provenance.fetchedAt,
  };
}

/** What a sidecar on disk says, each field checked on its own: a damaged or older sidecar yields nulls, never a throw. */
export interface SidecarFields {
  bytes: number | null;
  sourceUrl: string | null;
  sha256: string | null;
}

/** The JSON object of a sidecar's (or a state file's) text, or null when the text is not one (truncated, hand-edited, not JSON). */
export function parseJsonObject(text: string): Record<string, unknown> | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return null;
  return parsed as Record<string, unknown>;
}

function byteCount(value: unknown): number | null {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : null;
}

function sha256Field(value: unknown): string | null {
  return typeof value === 'string' && /^[0-9a-f]{64}$/.test(value) ? value : null;
}

/** Reads a sidecar's text defensively (it may be truncated, hand-edited or from an older version); null when not a JSON object. */
export function parseSidecarFields(text: string): SidecarFields | null {
  const parsed = parseJsonObject(text);
  return parsed === null ? null : sidecarFieldsOf(parsed);
}

/** The fields of a parsed sidecar (see parseJsonObject), each checked on its own. */
export function sidecarFieldsOf(parsed: Record<string, unknown>): SidecarFields {
  const { bytes, sourceUrl, sha256 } = parsed;
  return { bytes: byteCount(bytes), sourceUrl: typeof sourceUrl === 'string' ? sourceUrl : null, sha256: sha256Field(sha256) };
}

/**
 * What the key's sidecar records of one of its variants (thumbnails), written before the
 * variant is renamed into place: the lookup compares size and type, the heal pass's
 * sample the digest.
 */
export interface VariantRecord {
  bytes: number;
  /** sha256 (hex) of the stored bytes. */
  sha256: string;
  contentType: string;
}

export function variantRecordOf(bytes: Uint8Array, contentType: string): VariantRecord {
  return { bytes: bytes.length, sha256: sha256Hex(bytes), contentType };
}

/** The well-formed variant records of a parsed sidecar, by label; a malformed entry is left out (its variant is then unknown, not damaged). */
export function variantRecordsOf(sidecar: Record<string, unknown>): Record<string, VariantRecord> {
  const records: Record<string, VariantRecord> = {};
  const variants = sidecar.variants;
  if (typeof variants !== 'object' || variants === null || Array.isArray(variants)) return records;
  for (const [label, value] of Object.entries(variants as Record<string, unknown>)) {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) continue;
    const { bytes, sha256, contentType } = value as Record<string, unknown>;
    const count = byteCount(bytes);
    const digest = sha256Field(sha256);
    if (count === null || digest === null || typeof contentType !== 'string') continue;
    Object.defineProperty(records, label, { value: { bytes: count, sha256: digest, contentType }, enumerable: true, writable: true, configurable: true });
  }
  return records;
}

/**
 * A sidecar's text with the record of one variant set (every other field kept as it
 * was); null when the text is no original's sidecar (no byte count): a record is only
 * added beside an original's.
 */
export function withVariantRecord(text: string, label: string, record: VariantRecord): string | null {
  const parsed = parseJsonObject(text);
  if (parsed === null || byteCount(parsed.bytes) === null) return null;
  const variants = { ...variantRecordsOf(parsed) };
  Object.defineProperty(variants, label, { value: record, enumerable: true, writable: true, configurable: true });
  return sidecarText({ ...parsed, variants });
}

/** A sidecar as written to disk. */
export function sidecarText(sidecar: object): string {
  return `${JSON.stringify(sidecar, null, 2)}\n`;
}
