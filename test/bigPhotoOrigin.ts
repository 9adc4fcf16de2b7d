/**
 * A loopback origin of big photos, shared by the memory fault test and
 * scripts/bench-memory.ts: one noisy 12 MP JPEG just under the default `maxBytes`, served
 * under any path, so every distinct URL is a cold miss of the heaviest image the default
 * limits let in.
 */
import sharp from 'sharp';
import { startOrigin, type Origin } from './origin.js';

export const PHOTO_WIDTH = 4000;
export const PHOTO_HEIGHT = 3000;
/** RGB, as a JPEG decodes. */
export const PHOTO_CHANNELS = 3;

/**
 * A 4000×3000 noise photo, blurred just enough to land under `maxBytes` (the default
 * limit unless given): noise keeps the file near the limit, so each fetch carries as many
 * bytes as a real request may.
 */
export async function twelveMegapixelJpeg(maxBytes = 2 * 1024 * 1024): Promise<Buffer> {
  const raw = Buffer.alloc(PHOTO_WIDTH * PHOTO_HEIGHT * PHOTO_CHANNELS);
  let seed = 12345;
  for (let index = 0; index < raw.length; index += 1) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    raw[index] = seed >> 23;
  }
  let best = Buffer.alloc(0);
  for (const sigma of [1.2, 1.5, 2, 2.5, 3, 4, 6]) {
    for (const quality of [85, 75, 65, 55, 45]) {
      const jpeg = await sharp(raw, { raw: { width: PHOTO_WIDTH, height: PHOTO_HEIGHT, channels: PHOTO_CHANNELS } })
        .blur(sigma)
        .jpeg({ quality })
        .toBuffer();
      if (jpeg.length < maxBytes - 16_384) {
        if (jpeg.length > best.length) best = jpeg;
        break;
      }
    }
    if (best.length > maxBytes * 0.85) break;
  }
  return best;
}

/** An origin answering every path with `jpeg` (Content-Length set, as a real server would). */
export function startBigPhotoOrigin(jpeg: Buffer): Promise<Origin> {
  return startOrigin((_request, response) => {
    response.writeHead(200, { 'Content-Type': 'image/jpeg', 'Content-Length': jpeg.length }).end(jpeg);
  });
}
