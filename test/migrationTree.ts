/**
 * A tree as the service leaves it, for migrate-storage's tests and bench: originals with
 * their sidecars, source-format thumbnails, format-class files (own bytes, or a hard
 * link of the source thumbnail when converting did not pay), all written through
 * ImageStore so every sidecar records its thumbnails.
 */
import { storageKey } from '../server/contract/layout.js';
import { FORMAT_INFO, inspectImage } from '../server/images/sniff.js';
import { variantRecordOf } from '../server/tree/originals.js';
import { ImageStore, type StoredImage } from '../server/tree/store.js';
import { imageOf } from './formatClassFiles.js';

export interface PlantedKey {
  key: string;
  /** Relative paths of the key's image files, the original first. */
  files: string[];
}

/** Small real images, made once: a PNG original, a JPEG thumbnail, a WebP class file. */
export interface MigrationImages {
  original: Buffer;
  thumbnail: Buffer;
  webp: Buffer;
}

export async function migrationImages(): Promise<MigrationImages> {
  return { original: await imageOf('png', 40, 30), thumbnail: await imageOf('jpg', 20, 15), webp: await imageOf('webp', 20, 15) };
}

/**
 * `count` keys in bucket `i`, each an original (PNG) and a `150x` JPEG thumbnail; with
 * `classFiles`, every even key also a WebP class file and every odd one an AVIF class
 * file hard-linked to the JPEG thumbnail. The original's bytes differ per key (a
 * trailing byte after the PNG's end), so each has a digest of its own.
 */
export async function plantMigrationTree(root: string, count: number, images: MigrationImages, options: { classFiles: boolean }): Promise<PlantedKey[]> {
  const store = new ImageStore(root);
  const planted: PlantedKey[] = [];
  const info = inspectImage(images.original);
  if (info === null) throw new Error('the test original does not sniff');
  for (let index = 0; index < count; index += 1) {
    const key = storageKey(Buffer.from(`https://origin.test/migrate/${index}.png`));
    const bytes = Buffer.concat([images.original, Buffer.from([index % 256])]);
    const original = await store.storeOriginal('i', key, { ...info, bytes }, {
      sourceUrl: `https://origin.test/migrate/${index}.png`,
      originContentType: 'image/png',
      fetchedAt: '2026-01-02T03:04:05.000Z',
    });
    const files = [original.relativePath];
    const thumbnail: StoredImage = await store.commitVariant('i', key, '150x', 'jpg', images.thumbnail, variantRecordOf(images.thumbnail, FORMAT_INFO.jpeg.contentType), Promise.resolve());
    files.push(thumbnail.relativePath);
    if (options.classFiles) {
      const classFile =
        index % 2 === 0
          ? await store.commitClassVariant('i', key, '150x', 'webp', 'webp', images.webp, variantRecordOf(images.webp, FORMAT_INFO.webp.contentType))
          : await store.commitClassLink('i', key, '150x', 'avif', thumbnail, images.thumbnail, variantRecordOf(images.thumbnail, FORMAT_INFO.jpeg.contentType));
      files.push(classFile.relativePath);
    }
    planted.push({ key, files });
  }
  return planted;
}
