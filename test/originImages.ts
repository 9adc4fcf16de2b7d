/**
 * Images on a test origin (test/origin.ts) as the bucket tests name them: the image URL,
 * its storage key, a signed link for it (bucket `i`), the object name of the original or
 * a thumbnail, and how many times the origin was asked for the path.
 */
import { fileStem, storageKey } from '../server/contract/layout.js';
import { imageObjectName } from '../server/storage/objectNames.js';
import { signedPath } from './helpers.js';
import type { Origin } from './origin.js';

export interface OriginImages {
  fetchesOf: (path: string) => number;
  imageUrlOf: (path: string) => string;
  keyOf: (path: string) => string;
  /** A link signed now; full size unless `size`. */
  linkOf: (path: string, size?: string) => string;
  /** The original's object name, or the thumbnail's of `label`. */
  objectOf: (path: string, label?: string | null) => string;
}

/** `origin` is read at each call: tests start it in `before`. */
export function originImages(origin: () => Origin, secret: string): OriginImages {
  const imageUrlOf = (path: string): string => origin().url(path).href;
  const keyOf = (path: string): string => storageKey(Buffer.from(imageUrlOf(path)));
  return {
    fetchesOf: (path) => origin().requests.filter((incoming) => incoming.url === path).length,
    imageUrlOf,
    keyOf,
    linkOf: (path, size) => signedPath({ secret, imageUrl: imageUrlOf(path), atMs: Date.now(), ...(size === undefined ? {} : { size }) }),
    objectOf: (path, label = null) => imageObjectName('i', keyOf(path), fileStem(keyOf(path), label)),
  };
}
