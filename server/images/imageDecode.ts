/**
 * Whether an image decodes in full: the judgement `check --decode` makes of stored images
 * and `import-legacy --decode` of legacy ones, so one file is never judged two ways (a
 * JPEG cut short has a sound header, so only a decode sees it).
 */
import sharp from 'sharp';

// Decodes in flight in the process, whoever asks: each holds a whole image's pixels
// (up to limits.maxPixels × 4 bytes), and an import has more entries than that in flight.
const DECODES_AT_ONCE = 2;
let decoding = 0;
const waiting: Array<() => void> = [];

async function oneOfFewDecodes<T>(work: () => Promise<T>): Promise<T> {
  while (decoding >= DECODES_AT_ONCE) await new Promise<void>((resolve) => waiting.push(resolve));
  decoding += 1;
  try {
    return await work();
  } finally {
    decoding -= 1;
    waiting.shift()?.();
  }
}

/** Why sharp cannot decode the bytes (the first line of its message), or null when every frame decodes. */
export function decodeFailure(bytes: Buffer): Promise<string | null> {
  return oneOfFewDecodes(async () => {
    try {
      await sharp(bytes, { animated: true, limitInputPixels: false, failOn: 'warning' }).raw().toBuffer();
      return null;
    } catch (error) {
      return (error as Error).message.split('\n')[0] ?? 'decode failed';
    }
  });
}
