/**
 * The image service for a tree that is only read: stored originals and variants are
 * served, anything else is `not_stored`. The fetching service builds on this lookup.
 */
import { ImageproxyError } from './errors.js';
import type { ImageAnswer, ImageRequest, ImageService } from './imageService.js';
import type { ImageStore } from './store.js';

export function variantLabelOf(request: ImageRequest): string | null {
  return request.link.size.kind === 'box' ? request.link.size.label : null;
}

export function createStoredImageService(store: ImageStore): ImageService {
  return {
    async get(request: ImageRequest): Promise<ImageAnswer> {
      const image = await store.find(request.link.bucket, request.key, variantLabelOf(request));
      if (image === null) throw new ImageproxyError('not_stored', 'image is not stored');
      return { kind: 'stored', image };
    },
    async close() {},
  };
}
