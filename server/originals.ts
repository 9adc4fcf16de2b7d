/**
 * The one step every original goes through before it lands in the tree, whether fetched
 * from its origin or adopted from an imageproxy-py tree: prepare the bytes (metadata
 * stripping), then write the image and its metadata sidecar atomically.
 */
import { createHash } from 'node:crypto';
import type { ImageInfo } from './sniff.js';
import { FORMAT_INFO } from './sniff.js';
import type { ImageStore, StoredImage } from './store.js';

/** An original as sniffing read it: format, pixel size, frames, and its bytes. */
export interface OriginalImage extends ImageInfo {
  bytes: Buffer;
}

/** Where an original came from, for its sidecar. */
export interface OriginalProvenance {
  sourceUrl: string;
  originContentType: string | null;
  fetchedAt: string;
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Writes the original under `key` and then its sidecar; returns the stored image. */
export async function storeOriginal(
  store: ImageStore,
  bucket: string,
  key: string,
  image: OriginalImage,
  provenance: OriginalProvenance,
): Promise<StoredImage> {
  const info = FORMAT_INFO[image.format];
  const stored = await store.storeImage(bucket, key, null, info.ext, image.bytes);
  await store.writeMetadata(bucket, key, {
    sourceUrl: provenance.sourceUrl,
    contentType: info.contentType,
    originContentType: provenance.originContentType,
    bytes: image.bytes.length,
    width: image.width,
    height: image.height,
    frames: image.frames,
    sha256: sha256Hex(image.bytes),
    fetchedAt: provenance.fetchedAt,
  });
  return stored;
}
