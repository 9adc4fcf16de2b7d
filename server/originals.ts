/**
 * The one step every original goes through before it lands in the tree, whether fetched
 * from its origin or adopted from an imageproxy-py tree: prepare the bytes (metadata
 * stripping), then write the image and its metadata sidecar atomically.
 */
import { createHash } from 'node:crypto';
import type { ImageInfo } from './sniff.js';
import { FORMAT_INFO } from './sniff.js';
import type { ImageMetadata, ImageStore, StoredImage } from './store.js';

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

/**
 * Writes the sidecar and then the original under `key`; returns the stored image. The
 * image comes last: it is what every lookup finds, so once it exists its sidecar does
 * too, and a crash in between leaves only a sidecar, which nothing serves and the next
 * store rewrites.
 */
export async function storeOriginal(
  store: ImageStore,
  bucket: string,
  key: string,
  image: OriginalImage,
  provenance: OriginalProvenance,
): Promise<StoredImage> {
  const info = FORMAT_INFO[image.format];
  await store.writeMetadata(bucket, key, originalMetadata(image, provenance));
  return store.storeImage(bucket, key, null, info.ext, image.bytes);
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
    sha256: sha256Hex(image.bytes),
    fetchedAt: provenance.fetchedAt,
  };
}
