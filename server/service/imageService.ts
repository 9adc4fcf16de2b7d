/**
 * What the HTTP layer asks for: "the image this signed link names". The service decides
 * between the stored file, a fetch (server/service/fetchingImages.ts) and a resize; the HTTP layer
 * only delivers the answer.
 */
import type { FormatClass } from '../contract/accept.js';
import type { ParsedLink } from '../contract/link.js';
import type { StoredImage } from '../tree/store.js';
import type { OpenedImage } from '../storage/imageBackend.js';
import type { OpenOptions } from '../storage/objectStore.js';

export interface ImageRequest {
  link: ParsedLink;
  imageUrl: URL;
  /** Storage key: base64url(sha256(decoded image URL bytes)). */
  key: string;
  /** The request's `Accept` header: a thumbnail link's format class when config `formats` is on. */
  accept?: string | undefined;
  /**
   * The format class to make and answer, chosen by the caller instead of by `Accept`
   * (`populate --formats`, which makes them ahead, before config `formats` is on too).
   * Thumbnail links only.
   */
  formatClass?: FormatClass;
}

/**
 * What the tree held when the request came: `hit` the file asked for; `variant` only its
 * original (the thumbnail was made, or waited for, now); `miss` nothing (the original was
 * fetched, or waited for, now).
 */
type CacheOutcome = 'hit' | 'variant' | 'miss';

export type ImageAnswer =
  | {
      kind: 'stored';
      image: StoredImage;
      cache: CacheOutcome;
      /**
       * The file's bytes when this request has just written them (a miss): answered
       * without reading the file back. Absent for a file found stored.
       */
      content?: Buffer;
      /**
       * A thumbnail link negotiated by `Accept` (config `formats` on): the answer varies
       * with `Accept`, whichever file it is, the source-format one included.
       */
      negotiated?: boolean;
      /** Answered for now in place of a format class's file that could not be made: cache it briefly. */
      provisional?: boolean;
    }
  /** `/proxy` of an image we do not keep: bytes fetched for this answer only. */
  | { kind: 'passthrough'; bytes: Buffer; contentType: string };

/** The thumbnail label a request asks for, or null for the original. */
export function variantLabelOf(request: ImageRequest): string | null {
  return request.link.size.kind === 'box' ? request.link.size.label : null;
}

export interface ImageService {
  get(request: ImageRequest): Promise<ImageAnswer>;
  /**
   * A stored image kept as an object (`image.object` set), opened for sending; null when
   * it went away since the lookup. Absent or null for a file: the app sends it by path.
   */
  openStored?(image: StoredImage, options?: OpenOptions): Promise<OpenedImage | null>;
  /** Work waiting or running now, by queue name (for the `imageproxy_queue_depth` gauge). */
  queueDepths?(): Record<string, number>;
  close(): Promise<void>;
}
