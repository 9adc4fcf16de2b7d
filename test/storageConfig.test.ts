// The `storage` settings (server/config/schema.ts, server/config/storageSettings.ts):
// defaults, variables, refusals that name the key (credentials above all), and the
// commands that refuse `storage.type: "s3"` because they work on the tree only.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigError, DEFAULT_CONFIG, buildConfig, envLayer, type ConfigLayer } from '../server/config/config.js';
import { s3StoreSettingsOf } from '../server/config/storageSettings.js';
import { runCli } from './cliProcess.js';
import { makeTempRoot, removeTempRoot } from './helpers.js';

function refusal(layer: ConfigLayer): ConfigError {
  try {
    buildConfig({ file: layer });
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error;
  }
  assert.fail('refused');
}

describe('storage settings', () => {
  it('default: the tree; an S3 bucket only when configured', () => {
    assert.deepEqual(DEFAULT_CONFIG.storage, {
      type: 'tree',
      endpoint: null,
      bucket: null,
      region: 'us-east-1',
      prefix: '',
      forcePathStyle: null,
      cacheDir: null,
      cacheMaxSize: '10g',
      callTimeoutMs: 10_000,
      connectTimeoutMs: 2000,
    });
  });

  it('set by variables', () => {
    const config = buildConfig({
      env: envLayer({
        IMAGEPROXY_STORAGE_TYPE: 's3',
        IMAGEPROXY_STORAGE_ENDPOINT: 'http://127.0.0.1:7480',
        IMAGEPROXY_STORAGE_BUCKET: 'images',
        IMAGEPROXY_STORAGE_REGION: 'eu-central-1',
        IMAGEPROXY_STORAGE_PREFIX: 'site-a/',
        IMAGEPROXY_STORAGE_FORCE_PATH_STYLE: 'false',
        IMAGEPROXY_STORAGE_CACHE_DIR: '/var/cache/imageproxy',
        IMAGEPROXY_STORAGE_CACHE_MAX_SIZE: '512m',
        IMAGEPROXY_STORAGE_CALL_TIMEOUT_MS: '4000',
        IMAGEPROXY_STORAGE_CONNECT_TIMEOUT_MS: '500',
      }),
    });
    assert.deepEqual(config.storage, {
      type: 's3',
      endpoint: 'http://127.0.0.1:7480',
      bucket: 'images',
      region: 'eu-central-1',
      prefix: 'site-a/',
      forcePathStyle: false,
      cacheDir: '/var/cache/imageproxy',
      cacheMaxSize: '512m',
      callTimeoutMs: 4000,
      connectTimeoutMs: 500,
    });
    assert.equal(buildConfig({ env: envLayer({ IMAGEPROXY_STORAGE_FORCE_PATH_STYLE: 'auto' }) }).storage.forcePathStyle, null);
  });

  const CREDENTIALS = /credentials are never read from the config: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/;
  const REFUSED: Array<{ name: string; storage: Record<string, unknown>; key: string; message: RegExp }> = [
    { name: 's3 without a bucket', storage: { type: 's3' }, key: 'storage.bucket', message: /must be set when storage.type is s3/ },
    { name: 'an unknown type', storage: { type: 'gcs' }, key: 'storage.type', message: /must be one of tree, s3/ },
    { name: 'an endpoint that is no http(s) URL', storage: { endpoint: 'ftp://gateway' }, key: 'storage.endpoint', message: /http\(s\) URL/ },
    { name: 'an endpoint with a key in it', storage: { endpoint: 'http://AKID:secret@127.0.0.1:7480' }, key: 'storage.endpoint', message: CREDENTIALS },
    { name: 'a bucket name S3 refuses', storage: { bucket: 'a b' }, key: 'storage.bucket', message: /S3 bucket name/ },
    { name: 'a prefix with ..', storage: { prefix: 'a/../b' }, key: 'storage.prefix', message: /`\.\.` segment/ },
    { name: 'a prefix with a space', storage: { prefix: 'a b' }, key: 'storage.prefix', message: /letters, digits/ },
    { name: 'forcePathStyle not a boolean', storage: { forcePathStyle: 'yes' }, key: 'storage.forcePathStyle', message: /true or false/ },
    { name: 'a cache size without a unit', storage: { cacheMaxSize: '10' }, key: 'storage.cacheMaxSize', message: /size such as 512m or 10g/ },
    { name: 'a cache size under a megabyte', storage: { cacheMaxSize: '100k' }, key: 'storage.cacheMaxSize', message: /size such as 512m or 10g/ },
    { name: 'an empty cache directory', storage: { cacheDir: '' }, key: 'storage.cacheDir', message: /must not be empty/ },
    { name: 'a call deadline under 100 ms', storage: { callTimeoutMs: 50 }, key: 'storage.callTimeoutMs', message: /100/ },
    { name: 'a connect timeout of 0', storage: { connectTimeoutMs: 0 }, key: 'storage.connectTimeoutMs', message: /100/ },
    { name: 'secretAccessKey', storage: { secretAccessKey: 'x' }, key: 'storage.secretAccessKey', message: CREDENTIALS },
    { name: 'accessKeyId', storage: { accessKeyId: 'AKID' }, key: 'storage.accessKeyId', message: CREDENTIALS },
    { name: 'credentials', storage: { credentials: {} }, key: 'storage.credentials', message: CREDENTIALS },
    { name: 'sessionToken', storage: { sessionToken: 'x' }, key: 'storage.sessionToken', message: CREDENTIALS },
    { name: 'a credential beside another unknown key', storage: { bucketPolicy: 'x', password: 'x' }, key: 'storage.password', message: CREDENTIALS },
    { name: 'an unknown key', storage: { bucketPolicy: 'x' }, key: 'storage.bucketPolicy', message: /unknown key/ },
  ];
  for (const testCase of REFUSED) {
    it(`refused: ${testCase.name}`, () => {
      const error = refusal({ storage: testCase.storage });
      assert.equal(error.key, testCase.key);
      assert.match(error.message, testCase.message);
    });
  }

  for (const name of ['IMAGEPROXY_STORAGE_SECRET_ACCESS_KEY', 'IMAGEPROXY_STORAGE_ACCESS_KEY_ID']) {
    it(`refused: the variable ${name}`, () => {
      assert.throws(() => envLayer({ [name]: 'x' }), (error: unknown) => error instanceof ConfigError && error.key === name && CREDENTIALS.test(error.message));
    });
  }

  const SETTINGS_CASES: Array<{ name: string; storage: Record<string, unknown>; endpoint: string | undefined; forcePathStyle: boolean }> = [
    { name: 'a gateway: path style', storage: { endpoint: 'http://127.0.0.1:7480' }, endpoint: 'http://127.0.0.1:7480', forcePathStyle: true },
    { name: 'AWS: virtual-hosted', storage: {}, endpoint: undefined, forcePathStyle: false },
    { name: 'a gateway told otherwise', storage: { endpoint: 'https://s3.example.net', forcePathStyle: false }, endpoint: 'https://s3.example.net', forcePathStyle: false },
  ];
  for (const testCase of SETTINGS_CASES) {
    it(`store settings: ${testCase.name}`, () => {
      const settings = s3StoreSettingsOf(buildConfig({ file: { storage: { bucket: 'images', ...testCase.storage } } }).storage);
      assert.equal(settings.endpoint, testCase.endpoint);
      assert.equal(settings.forcePathStyle, testCase.forcePathStyle);
      assert.equal(settings.credentials, undefined, "the SDK's chain, never the config");
      assert.deepEqual([settings.callTimeoutMs, settings.connectTimeoutMs], [10_000, 2000], 'the timeouts reach the store');
    });
  }

  it('store settings without a bucket: a config error naming storage.bucket', () => {
    assert.throws(() => s3StoreSettingsOf(DEFAULT_CONFIG.storage), (error: unknown) => error instanceof ConfigError && error.key === 'storage.bucket');
  });
});

describe('commands with storage.type "s3" (the built command)', () => {
  let work: string;
  let config: string;

  before(async () => {
    work = await makeTempRoot('imageproxy-storage-config-');
    config = join(work, 'config.json');
    await writeFile(config, JSON.stringify({ root: join(work, 'root'), secrets: ['s3cr3t-for-tests'], storage: { type: 's3', bucket: 'images' } }), { mode: 0o600 });
  });

  after(() => removeTempRoot(work));

  // serve, populate (test/s3Serve.test.ts), the takedown commands, stats and check
  // (test/bucketTakedown.test.ts), import-legacy (test/importLegacyBucket.test.ts) and
  // nginx-config (test/nginxS3.test.ts) work with a bucket.
  for (const command of [['init-buckets']]) {
    it(`${command.join(' ')} refuses to start, naming the commands that work on a bucket`, async () => {
      const run = await runCli([...command, '--config', config], { cwd: work });
      assert.equal(run.code, 2, run.stderr);
      assert.match(run.stderr, /config storage\.type: is "s3": this command works on the tree only; on a bucket work serve, populate, purge, block, unblock, stats, check, import-legacy and nginx-config, and `imageproxy migrate-storage` copies between tree and bucket/);
      assert.equal(run.stderr.trim().split('\n').length, 1, 'one line');
    });
  }

  it('nginx-config renders the bucket\'s config (test/nginxS3.test.ts runs it)', async () => {
    const run = await runCli(['nginx-config', '--config', config], { cwd: work });
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /proxy_cache_path ".*\/root\/\.imageproxy\/nginx-cache" /);
  });

  it('sign works: links need no storage', async () => {
    const run = await runCli(['sign', '--config', config, 'https://origin.test/a.png'], { cwd: work });
    assert.equal(run.code, 0, run.stderr);
  });
});
