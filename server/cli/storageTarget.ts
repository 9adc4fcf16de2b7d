/**
 * The bucket a command works on when the config says `storage.type: "s3"`, and what a
 * gateway failure makes of the command: one line on stderr naming the gateway, the bucket
 * and the object (the error's detail), exit 1 when it may pass (unreachable, too slow)
 * and 2 when the setup is wrong (credentials refused, no such bucket). Credentials come
 * from the AWS SDK's chain, never from the config.
 */
import type { Config } from '../config/config.js';
import { s3StoreSettingsOf } from '../config/storageSettings.js';
import { isImageproxyError, type ImageproxyError } from '../errors.js';
import { openS3Store } from '../storage/openS3Store.js';
import type { S3ObjectStore } from '../storage/s3Store.js';
import { EXIT_FAILURES, EXIT_USAGE } from './common.js';

/** A failure of the gateway (storage_unavailable, storage_denied, storage_failed), or null for any other error. */
export function gatewayFailureOf(error: unknown): ImageproxyError | null {
  return isImageproxyError(error) && error.code.startsWith('storage_') ? error : null;
}

/** Says the gateway's failure in one line and answers the exit code. */
function reportGatewayFailure(label: string, failure: ImageproxyError): number {
  process.stderr.write(`${label}: ${failure.message}: ${failure.detail ?? failure.code}\n`);
  return failure.code === 'storage_unavailable' ? EXIT_FAILURES : EXIT_USAGE;
}

export interface OpenBucket {
  store: S3ObjectStore;
  /** `s3://{bucket}/{prefix}`: where object names are shown to be. */
  where: string;
}

/**
 * Opens the config's bucket, runs `work` on it and closes it. A gateway failure, at the
 * first small listing (the gateway answers, takes the credentials, has the bucket) or
 * later, ends the command with one line and its exit code.
 */
export async function withBucket(label: string, config: Config, work: (bucket: OpenBucket) => Promise<number>): Promise<number> {
  const settings = s3StoreSettingsOf(config.storage);
  const store = await openS3Store(settings);
  try {
    for await (const listed of store.list('', { pageSize: 1 })) {
      void listed;
      break;
    }
    return await work({ store, where: `s3://${settings.bucket}/${config.storage.prefix === '' ? '' : `${config.storage.prefix.replace(/^\/+|\/+$/g, '')}/`}` });
  } catch (error) {
    const failure = gatewayFailureOf(error);
    if (failure === null) throw error;
    return reportGatewayFailure(label, failure);
  } finally {
    store.close();
  }
}
