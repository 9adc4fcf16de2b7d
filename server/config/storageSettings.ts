/**
 * The S3 object store's settings from the config's `storage` group. Pure. Credentials
 * are left to the AWS SDK's standard chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
 * the shared credentials file, …): the config never holds them (server/config/schema.ts).
 */
import type { S3StoreSettings } from '../storage/s3Store.js';
import { ConfigError, type Config } from './config.js';

/** The store's settings, or a ConfigError naming `storage.bucket` when no bucket is set. */
export function s3StoreSettingsOf(storage: Config['storage']): S3StoreSettings {
  if (storage.bucket === null) throw new ConfigError('storage.bucket', 'must be set to reach a bucket (IMAGEPROXY_STORAGE_BUCKET)');
  return {
    ...(storage.endpoint === null ? {} : { endpoint: storage.endpoint }),
    bucket: storage.bucket,
    region: storage.region,
    prefix: storage.prefix,
    forcePathStyle: storage.forcePathStyle ?? storage.endpoint !== null,
    callTimeoutMs: storage.callTimeoutMs,
    connectTimeoutMs: storage.connectTimeoutMs,
  };
}
