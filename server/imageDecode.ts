/**
 * Whether an image decodes in full: the judgement `check --decode` makes of stored images
 * and `import-legacy --decode` of legacy ones, so one file is never judged two ways (a
 * JPEG cut short has a sound header, so only a decode sees it).
 */
import sharp from 'sharp';

/** Why sharp cannot decode the bytes (the first line of its message), or null when every frame decodes. */
export async function decodeFailure(bytes: Buffer): Promise<string | null> {
  try {
    await sharp(bytes, { animated: true, limitInputPixels: false, failOn: 'warning' }).raw().toBuffer();
    return null;
  } catch (error) {
    return (error as Error).message.split('\n')[0] ?? 'decode failed';
  }
}
