/**
 * The object store on an S3 gateway (Ceph RGW, MinIO, AWS, B2, …) through the AWS SDK v3.
 * Thin: naming, metadata and error meaning are the pure modules beside it.
 *
 * - Checksums only when an operation requires them: the SDK's default sends a stream
 *   body as `aws-chunked` with a trailing checksum, which Ceph 16 refuses (HTTP 411).
 * - Every call has a deadline (`callTimeoutMs`, retries included) and a connect timeout;
 *   a streamed read's deadline covers the answer's headers, its body then stays bounded
 *   by the socket idle timeout.
 * - Credentials: the SDK's standard chain (environment, shared files, …) unless given.
 *   Tests give static ones, so nothing looks beyond loopback for them.
 */
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type PutObjectCommandInput,
} from '@aws-sdk/client-s3';
import { ImageproxyError } from '../errors.js';
import { nameOfObjectKey, normalizeStorePrefix, objectKeyOf } from './objectNames.js';
import type { GetOptions, ListedObject, ObjectBody, ObjectInfo, ObjectStore, OpenedObject, OpenOptions, PutOptions } from './objectStore.js';
import { failureFactsOf, failureKindOf, storageError, type FailureContext, type FailureKind, type StorageOperation } from './storageErrors.js';

export interface S3StoreSettings {
  /** The gateway's base URL (`http://127.0.0.1:7480`); absent for AWS itself, whose endpoint follows from the region. */
  endpoint?: string;
  bucket: string;
  region: string;
  /** Names live under it (server/storage/objectNames.ts normalizeStorePrefix). */
  prefix: string;
  /** `/{bucket}/{key}` rather than `{bucket}.{host}/{key}`: what gateways without wildcard DNS need. */
  forcePathStyle: boolean;
  /** Absent: the SDK's standard credential chain. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  callTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** Attempts per call, first included; the SDK retries what S3 marks retryable (5xx, throttling, resets). */
  maxAttempts?: number;
}

const S3_STORE_DEFAULTS = {
  // long enough for a thumbnail-sized PUT over a slow link, short enough that a stuck gateway fails a miss well within nginx's proxy_read_timeout
  callTimeoutMs: 10_000,
  // a gateway on the local network connects in a millisecond; seconds mean it is down
  connectTimeoutMs: 2_000,
  maxAttempts: 3,
  // sockets kept open to the gateway per process: a miss holds one for a PUT or GET
  maxSockets: 64,
  listPageSize: 1000,
} as const;

const SILENT_LOGGER = { trace() {}, debug() {}, info() {}, warn() {}, error() {} };

/** What a failed call may mean beside a failure: also 304 Not Modified, the answer of a conditional get. */
type AnswerKind = Extract<FailureKind, 'not_found' | 'precondition_failed'> | 'not_modified';

/** Failures that are answers for one call: absence for a read, an existing object for a create, an unchanged one for a conditional get. */
type ExpectedFailures<A> = Partial<Record<AnswerKind, A>>;

const ABSENT: ExpectedFailures<null> = { not_found: null };
const ABSENT_OR_UNCHANGED: ExpectedFailures<null | 'unchanged'> = { not_found: null, not_modified: 'unchanged' };
/** The answer of a conditional PUT that lost: false. An If-Match PUT on an object removed since answers 412 on Ceph RGW, 404 on others. */
const LOST_RACE: Readonly<Record<PutCondition['kind'], ExpectedFailures<false> | null>> = {
  none: null,
  absent: { precondition_failed: false },
  etag: { precondition_failed: false, not_found: false },
};

/** The condition of a PUT: none, create only (`If-None-Match: *`), or replace only this version (`If-Match`). */
type PutCondition = { kind: 'none' } | { kind: 'absent' } | { kind: 'etag'; etag: string };

/**
 * An ETag as a condition header carries it: bare. Ceph RGW 16 compares If-Match with the
 * ETag unquoted and refuses every quoted one (412, measured); AWS and MinIO take it bare
 * as well.
 */
function conditionEtag(etag: string): string {
  return unquoted(etag);
}

export class S3ObjectStore implements ObjectStore {
  private readonly client: S3Client;
  private readonly prefix: string;
  private readonly bucket: string;
  private readonly endpointLabel: string;
  private readonly callTimeoutMs: number;
  private readonly staticAccessKeyId: string | undefined;

  constructor(settings: S3StoreSettings) {
    this.prefix = normalizeStorePrefix(settings.prefix);
    this.bucket = settings.bucket;
    this.endpointLabel = settings.endpoint ?? `s3.${settings.region}.amazonaws.com`;
    this.callTimeoutMs = settings.callTimeoutMs ?? S3_STORE_DEFAULTS.callTimeoutMs;
    this.staticAccessKeyId = settings.credentials?.accessKeyId;
    const agentOptions = { keepAlive: true, maxSockets: S3_STORE_DEFAULTS.maxSockets };
    this.client = new S3Client({
      region: settings.region,
      ...(settings.endpoint === undefined ? {} : { endpoint: settings.endpoint }),
      forcePathStyle: settings.forcePathStyle,
      ...(settings.credentials === undefined ? {} : { credentials: settings.credentials }),
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: settings.maxAttempts ?? S3_STORE_DEFAULTS.maxAttempts,
      // The SDK writes some warnings to the console unless given a logger; every failure
      // it could warn about reaches the caller as a storage_* error with the details.
      logger: SILENT_LOGGER,
      requestHandler: {
        connectionTimeout: settings.connectTimeoutMs ?? S3_STORE_DEFAULTS.connectTimeoutMs,
        socketTimeout: this.callTimeoutMs,
        httpAgent: new HttpAgent(agentOptions),
        httpsAgent: new HttpsAgent(agentOptions),
      },
    });
  }

  async put(name: string, body: ObjectBody, options: PutOptions): Promise<void> {
    await this.upload('put', name, body, options, { kind: 'none' });
  }

  async create(name: string, body: ObjectBody, options: PutOptions): Promise<'created' | 'exists'> {
    return (await this.upload('create', name, body, options, { kind: 'absent' })) ? 'created' : 'exists';
  }

  async replace(name: string, body: ObjectBody, options: PutOptions, etag: string): Promise<'replaced' | 'changed'> {
    return (await this.upload('put', name, body, options, { kind: 'etag', etag })) ? 'replaced' : 'changed';
  }

  async get(name: string, options: GetOptions): Promise<{ info: ObjectInfo; bytes: Buffer } | null> {
    const answer = await this.getChanged(name, null, options);
    return answer === 'unchanged' ? null : answer;
  }

  async getChanged(name: string, etag: string | null, options: GetOptions): Promise<{ info: ObjectInfo; bytes: Buffer } | null | 'unchanged'> {
    const key = objectKeyOf(this.prefix, name);
    const condition = etag === null ? {} : { IfNoneMatch: conditionEtag(etag) };
    return this.attempt('get', key, options.signal, ABSENT_OR_UNCHANGED, async (signal) => {
      const answer = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, ...condition }), { abortSignal: signal });
      const body = readableOf(answer.Body);
      const info = this.infoOf(name, answer);
      if (info.bytes > options.maxBytes) {
        body.destroy();
        throw this.overCap(key, info.bytes, options.maxBytes);
      }
      const bytes = await readCapped(body, options.maxBytes, signal, () => this.overCap(key, null, options.maxBytes));
      return { info: { ...info, bytes: bytes.length }, bytes };
    });
  }

  async open(name: string, options: OpenOptions = {}): Promise<OpenedObject | null> {
    const key = objectKeyOf(this.prefix, name);
    const { range } = options;
    return this.attempt('get', key, options.signal, ABSENT, async (signal) => {
      const answer = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: key, ...(range === undefined ? {} : { Range: `bytes=${range.start}-${range.end}` }) }),
        { abortSignal: signal },
      );
      const info = this.infoOf(name, answer);
      // A ranged answer's Content-Length is the part's; its Content-Range names the whole.
      const part = answer.ContentRange === undefined ? null : contentRangeOf(answer.ContentRange);
      if (part === null) return { info, body: readableOf(answer.Body), range: null };
      return { info: { ...info, bytes: part.size }, body: readableOf(answer.Body), range: { start: part.start, end: part.end } };
    });
  }

  async head(name: string): Promise<ObjectInfo | null> {
    const key = objectKeyOf(this.prefix, name);
    return this.attempt('head', key, undefined, ABSENT, async (signal) =>
      this.infoOf(name, await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: signal })),
    );
  }

  async delete(name: string): Promise<void> {
    const key = objectKeyOf(this.prefix, name);
    await this.attempt('delete', key, undefined, null, async (signal) => {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: signal });
    });
  }

  async *list(namePrefix: string, options: { pageSize?: number } = {}): AsyncIterable<ListedObject> {
    const keyPrefix = objectKeyOf(this.prefix, namePrefix);
    let continuationToken: string | undefined;
    do {
      const page = await this.attempt('list', keyPrefix, undefined, null, async (signal) =>
        this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: keyPrefix,
            MaxKeys: options.pageSize ?? S3_STORE_DEFAULTS.listPageSize,
            ...(continuationToken === undefined ? {} : { ContinuationToken: continuationToken }),
          }),
          { abortSignal: signal },
        ),
      );
      for (const item of page.Contents ?? []) {
        const name = item.Key === undefined ? null : nameOfObjectKey(this.prefix, item.Key);
        if (name === null) continue;
        yield { name, bytes: item.Size ?? 0, etag: unquoted(item.ETag), modifiedMs: item.LastModified?.getTime() ?? 0 };
      }
      continuationToken = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (continuationToken !== undefined);
  }

  /** Closes the kept-alive sockets; the store is unusable afterwards. */
  close(): void {
    this.client.destroy();
  }

  /** true when stored; false when the condition did not hold (another writer got there first). */
  private async upload(operation: StorageOperation, name: string, body: ObjectBody, options: PutOptions, condition: PutCondition): Promise<boolean> {
    const key = objectKeyOf(this.prefix, name);
    const isStream = body instanceof Readable;
    if (isStream && options.bytes === undefined) throw new TypeError('a stream body needs its length (options.bytes)');
    const input: PutObjectCommandInput = {
      Bucket: this.bucket,
      Key: key,
      Body: body,
      ContentType: options.contentType,
      ...(options.bytes === undefined ? {} : { ContentLength: options.bytes }),
      ...(options.metadata === undefined ? {} : { Metadata: { ...options.metadata } }),
      ...(condition.kind === 'absent' ? { IfNoneMatch: '*' } : {}),
      ...(condition.kind === 'etag' ? { IfMatch: conditionEtag(condition.etag) } : {}),
    };
    return this.attempt(operation, key, options.signal, LOST_RACE[condition.kind], async (signal) => {
      // The SDK pipes a stream body without watching it: a source that fails would leave
      // the request waiting for bytes until the deadline. Its failure abandons the upload
      // at once (the gateway then discards what it got) and is the caller's error.
      const bodyFailed = new AbortController();
      const onBodyError = (): void => bodyFailed.abort();
      if (isStream) body.once('error', onBodyError);
      try {
        await this.client.send(new PutObjectCommand(input), { abortSignal: isStream ? AbortSignal.any([signal, bodyFailed.signal]) : signal });
      } catch (error) {
        if (isStream && body.errored !== null) throw new BodyFailure(body.errored);
        throw error;
      } finally {
        if (isStream) body.off('error', onBodyError);
      }
      return true;
    });
  }

  /**
   * Runs one call under its deadline (and the caller's signal). The expected failure, if
   * any, comes back as its answer; every other failure as a storage_* error (a 404 where
   * none is expected is `storage_failed`).
   */
  private async attempt<T, A = never>(
    operation: StorageOperation,
    objectKey: string,
    callerSignal: AbortSignal | undefined,
    expected: ExpectedFailures<A> | null,
    work: (signal: AbortSignal) => Promise<T>,
  ): Promise<T | A> {
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(new Error(`no answer within ${this.callTimeoutMs} ms`)), this.callTimeoutMs);
    const signal = callerSignal === undefined ? deadline.signal : AbortSignal.any([deadline.signal, callerSignal]);
    try {
      return await work(signal);
    } catch (error) {
      if (callerSignal?.aborted === true) throw callerSignal.reason;
      if (error instanceof BodyFailure) throw error.cause;
      if (error instanceof ImageproxyError) throw error;
      const facts = failureFactsOf(error, deadline.signal.aborted);
      const kind = failureKindOf(facts);
      // 304 is no failure but the answer to If-None-Match; the SDK throws it all the same.
      const answerKind: AnswerKind | null = facts.httpStatus === 304 ? 'not_modified' : kind === 'not_found' || kind === 'precondition_failed' ? kind : null;
      if (expected !== null && answerKind !== null && Object.hasOwn(expected, answerKind)) return expected[answerKind] as A;
      const accessKeyId = kind === 'denied' ? await this.accessKeyId() : null;
      throw storageError(kind, facts, this.context(operation, objectKey, accessKeyId), error);
    } finally {
      clearTimeout(timer);
    }
  }

  private context(operation: StorageOperation, objectKey: string, accessKeyId: string | null): FailureContext {
    return { operation, objectKey, bucket: this.bucket, endpoint: this.endpointLabel, accessKeyId, timeoutMs: this.callTimeoutMs };
  }

  /** The access key id in use, for a refusal's log line: given, or what the credential chain resolves to. */
  private async accessKeyId(): Promise<string | null> {
    if (this.staticAccessKeyId !== undefined) return this.staticAccessKeyId;
    try {
      return (await this.client.config.credentials()).accessKeyId;
    } catch {
      return null;
    }
  }

  private infoOf(
    name: string,
    answer: { ContentLength?: number; ContentType?: string; ETag?: string; LastModified?: Date; Metadata?: Record<string, string> },
  ): ObjectInfo {
    return {
      name,
      bytes: answer.ContentLength ?? 0,
      contentType: answer.ContentType ?? 'application/octet-stream',
      etag: unquoted(answer.ETag),
      modifiedMs: answer.LastModified?.getTime() ?? 0,
      metadata: answer.Metadata ?? {},
    };
  }

  private overCap(objectKey: string, bytes: number | null, maxBytes: number): ImageproxyError {
    const size = bytes === null ? `more than ${maxBytes} bytes` : `${bytes} bytes`;
    return new ImageproxyError('storage_failed', 'storage failed', { detail: `get ${this.bucket}/${objectKey}: ${size}, over the cap of ${maxBytes}` });
  }
}

/** A stream body's own failure, carried through the SDK's error handling unchanged. */
class BodyFailure extends Error {
  constructor(override readonly cause: unknown) {
    super('the body failed');
  }
}

/**
 * A ranged answer's Content-Range (`bytes 0-9/12345`): the part and the whole object's
 * size; null for anything else (an unknown size `*` included: then the answer is taken
 * as the whole object's).
 */
export function contentRangeOf(header: string): { start: number; end: number; size: number } | null {
  const match = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(header.trim());
  if (match === null) return null;
  const [start, end, size] = [Number(match[1]), Number(match[2]), Number(match[3])];
  return start <= end && end < size ? { start, end, size } : null;
}

function readableOf(body: unknown): Readable {
  if (body instanceof Readable) return body;
  throw new ImageproxyError('storage_failed', 'storage failed', { detail: 'the SDK answered a body that is not a Node stream' });
}

function unquoted(etag: string | undefined): string {
  return (etag ?? '').replace(/^"|"$/g, '');
}

/** The whole body, failing with `overCap()` past `maxBytes` and with the signal's reason when it aborts. */
async function readCapped(body: Readable, maxBytes: number, signal: AbortSignal, overCap: () => Error): Promise<Buffer> {
  const onAbort = (): void => {
    body.destroy(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
  };
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const chunk of body) {
      const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
      total += buffer.length;
      if (total > maxBytes) {
        body.destroy();
        throw overCap();
      }
      chunks.push(buffer);
    }
    return Buffer.concat(chunks, total);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}
