/**
 * Thumbnails of format classes planted in a tree as the service leaves them
 * (server/contract/layout.ts): `{key}.{label}.{format}.{ext}` holding real bytes of
 * {ext}, or, when converting did not pay, a hard link of the source-format thumbnail
 * `{key}.{label}.{ext}`.
 */
import { link, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { classVariantStem, fileStem, imageFileName, type ImageExtension } from '../server/contract/layout.js';
import type { ModernFormat } from '../server/contract/accept.js';

/** What Chrome sends for an `<img>` (it accepts AVIF and WebP), and what curl sends. */
export const IMG_ACCEPTS = ['image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8', '*/*'] as const;

/** A real image of `ext`'s format, `width`×`height`, with a gradient so encoders have work. */
export async function imageOf(ext: ImageExtension, width: number, height: number): Promise<Buffer> {
  const pixels = Buffer.alloc(width * height * 3);
  for (let index = 0; index < width * height; index += 1) {
    pixels[index * 3] = (index * 7) % 256;
    pixels[index * 3 + 1] = Math.floor(index / width) % 256;
    pixels[index * 3 + 2] = 90;
  }
  const image = sharp(pixels, { raw: { width, height, channels: 3 } });
  switch (ext) {
    case 'jpg':
      return image.jpeg().toBuffer();
    case 'png':
      return image.png().toBuffer();
    case 'webp':
      return image.webp().toBuffer();
    case 'gif':
      return image.gif().toBuffer();
    case 'avif':
      return image.avif({ effort: 0 }).toBuffer();
  }
}

/** `{key}.{label}.{format}.{ext}` */
export function classFileName(key: string, label: string, format: ModernFormat, ext: ImageExtension): string {
  return imageFileName(classVariantStem(key, label, format), ext);
}

/** Writes a format class's file of `bytes` in `directory` (which exists); returns its name. */
export async function plantClassFile(directory: string, key: string, label: string, format: ModernFormat, ext: ImageExtension, bytes: Uint8Array): Promise<string> {
  const name = classFileName(key, label, format, ext);
  await writeFile(join(directory, name), bytes);
  return name;
}

/**
 * A format class's file that is a hard link of the source-format thumbnail
 * `{key}.{label}.{ext}` (which exists), as when converting did not pay; returns its name.
 */
export async function linkClassFile(directory: string, key: string, label: string, format: ModernFormat, ext: ImageExtension): Promise<string> {
  const name = classFileName(key, label, format, ext);
  await link(join(directory, imageFileName(fileStem(key, label), ext)), join(directory, name));
  return name;
}
