/**
 * The bucket's store with the AWS SDK loaded on first use: a process on the tree never
 * loads the SDK, whose modules would otherwise stay in its heap (about 4 MiB that every
 * major collection walks again).
 */
import type { S3ObjectStore, S3StoreSettings } from './s3Store.js';

export async function openS3Store(settings: S3StoreSettings): Promise<S3ObjectStore> {
  const { S3ObjectStore: Store } = await import('./s3Store.js');
  return new Store(settings);
}
