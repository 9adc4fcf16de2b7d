/**
 * Resize planning: which size a `{h}x{w}` thumbnail of a stored original has.
 * Pure: no I/O, no image library. Both engines and the tests use it, so the
 * answer to "how big is the thumbnail" is written down once.
 *
 * Rules (the URL contract for sized links):
 * - the image is scaled to fit inside maxWidth × maxHeight, keeping its aspect ratio;
 * - a null side does not limit (only the other one does; both null: no resize);
 * - never enlarge: an image already inside the box keeps its own size.
 *
 * Rounding: the limiting side comes out exactly at the box edge; the other side is
 * `source × scale` rounded to the nearest pixel (halves round up) and at least 1 px,
 * so a 10000×1 strip fit into 100×100 becomes 100×1, not 100×0. libvips rounds the
 * same way, but for JPEG it does the arithmetic on the shrink-on-load size and can land
 * a pixel off; so both engines resize to exactly this plan and always agree.
 */

export interface PixelSize {
  width: number;
  height: number;
}

export interface ResizeBox {
  /** Largest height in pixels, or null when only the width limits. */
  maxHeight: number | null;
  /** Largest width in pixels, or null when only the height limits. */
  maxWidth: number | null;
}

export interface ResizePlan extends PixelSize {
  /** False when the source already fits: the engine re-encodes at the source size. */
  resize: boolean;
}

/**
 * Size of the image as displayed once its EXIF orientation is applied.
 * Orientations 5-8 are transposed (rotated a quarter turn, maybe mirrored): stored
 * width and height swap. 1-4 (and a missing or unknown tag) keep them.
 */
export function orientedSize(stored: PixelSize, exifOrientation: number | undefined): PixelSize {
  const transposed = exifOrientation !== undefined && exifOrientation >= 5 && exifOrientation <= 8;
  return transposed ? { width: stored.height, height: stored.width } : { width: stored.width, height: stored.height };
}

/** The thumbnail size for an (upright) source and a box; see the module comment for the rules. */
export function planResize(source: PixelSize, box: ResizeBox): ResizePlan {
  assertPositiveInteger('source.width', source.width);
  assertPositiveInteger('source.height', source.height);
  if (box.maxWidth !== null) assertPositiveInteger('box.maxWidth', box.maxWidth);
  if (box.maxHeight !== null) assertPositiveInteger('box.maxHeight', box.maxHeight);

  const widthScale = box.maxWidth === null ? Infinity : box.maxWidth / source.width;
  const heightScale = box.maxHeight === null ? Infinity : box.maxHeight / source.height;
  const scale = Math.min(widthScale, heightScale);
  if (scale >= 1) return { width: source.width, height: source.height, resize: false };

  // The limiting side is set to the box edge exactly: source × (edge / source) can
  // land a hair below the edge in floating point.
  const width = widthScale <= heightScale && box.maxWidth !== null ? box.maxWidth : scaledSide(source.width, scale);
  const height = heightScale <= widthScale && box.maxHeight !== null ? box.maxHeight : scaledSide(source.height, scale);
  return { width, height, resize: true };
}

function scaledSide(sourceSide: number, scale: number): number {
  return Math.max(1, Math.round(sourceSide * scale));
}

function assertPositiveInteger(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
}
