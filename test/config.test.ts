// Configuration: defaults, layering, validation errors that name the key, env parsing.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ConfigError,
  DEFAULT_CONFIG,
  buildConfig,
  envLayer,
  readConfigFile,
  splitListen,
  type ConfigLayer,
} from '../server/config/config.js';
import { makeTempRoot, removeTempRoot } from './helpers.js';

function expectKey(key: string): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
    assert.equal(error.key, key);
    assert.ok(error.message.includes(key), `message names the key: ${error.message}`);
    return true;
  };
}

/** Every key set, as an admin would write it (the shape of the sample). */
const SAMPLE_CONFIG = `{
  "listen": "127.0.0.1:8091",
  "root": "/var/lib/imageproxy",
  "secretFile": "/etc/imageproxy/secret",
  "buckets": { "i": {}, "f": {}, "t": {}, "old": { "legacySignatures": true } },
  "sizes": [150, 200, 250, 500],
  "skewSeconds": 3600,
  "delivery": "accel",
  "engine": "sharp",
  "allowPrivateNetworks": false,
  "limits": { "maxBytes": 2097152, "maxPixels": 50000000, "connectTimeoutMs": 5000, "totalTimeoutMs": 30000, "maxRedirects": 3 },
  "singleFlightWaitMs": 30000,
  "tempMaxAgeSeconds": 3600,
  "backoff": { "initialSeconds": 60, "maxSeconds": 86400 },
  "quality": { "jpeg": 82, "webp": 80, "avif": 55 },
  "userAgent": "imageproxy/0.1",
  "logLevel": "info",
  "nginx": { "listen": "127.0.0.1:8080", "internalPrefix": "/_imageproxy" }
}`;

describe('buildConfig', () => {
  it('defaults alone are valid and unchanged', () => {
    assert.deepEqual(buildConfig({}), DEFAULT_CONFIG);
  });

  it("accepts the sample config and keeps what it says", () => {
    const config = buildConfig({ file: JSON.parse(SAMPLE_CONFIG) as ConfigLayer });
    assert.equal(config.delivery, 'accel');
    assert.equal(config.secretFile, '/etc/imageproxy/secret');
    assert.deepEqual(config.buckets, {
      i: { legacySignatures: false },
      f: { legacySignatures: false },
      t: { legacySignatures: false },
      old: { legacySignatures: true },
    });
  });

  it('precedence: defaults < file < env < flags', () => {
    const config = buildConfig({
      file: { listen: '127.0.0.1:1', root: '/from-file', delivery: 'accel', limits: { maxBytes: 10 } },
      env: { listen: '127.0.0.1:2', root: '/from-env', limits: { maxPixels: 20 } },
      flags: { listen: '127.0.0.1:3' },
    });
    assert.equal(config.listen, '127.0.0.1:3');
    assert.equal(config.root, '/from-env');
    assert.equal(config.delivery, 'accel');
    assert.deepEqual(config.limits, { ...DEFAULT_CONFIG.limits, maxBytes: 10, maxPixels: 20 });
    assert.equal(config.engine, DEFAULT_CONFIG.engine);
  });

  it('buckets of a later layer replace the earlier ones as a whole', () => {
    const config = buildConfig({ file: { buckets: { x: {} } }, env: { buckets: { y: { legacySignatures: true } } } });
    assert.deepEqual(config.buckets, { y: { legacySignatures: true } });
  });

  it('sizes are sorted and deduplicated', () => {
    assert.deepEqual(buildConfig({ flags: { sizes: [500, 150, 500] } }).sizes, [150, 500]);
  });
});

interface InvalidCase {
  name: string;
  layer: ConfigLayer;
  key: string;
}

const INVALID_CASES: InvalidCase[] = [
  { name: 'listen without port', layer: { listen: 'localhost' }, key: 'listen' },
  { name: 'listen port above 65535', layer: { listen: '127.0.0.1:70000' }, key: 'listen' },
  { name: 'listen not a string', layer: { listen: 8091 }, key: 'listen' },
  { name: 'sizes empty', layer: { sizes: [] }, key: 'sizes' },
  { name: 'sizes not a list', layer: { sizes: '150' }, key: 'sizes' },
  { name: 'sizes[1] negative', layer: { sizes: [150, -1] }, key: 'sizes[1]' },
  { name: 'sizes[0] fractional', layer: { sizes: [1.5] }, key: 'sizes[0]' },
  { name: 'unknown key', layer: { colour: 'blue' }, key: 'colour' },
  { name: 'unknown key named like an Object method', layer: { constructor: 1 }, key: 'constructor' },
  { name: 'limits.maxBytes 0', layer: { limits: { maxBytes: 0 } }, key: 'limits.maxBytes' },
  { name: 'limits.maxRedirects above 20', layer: { limits: { maxRedirects: 21 } }, key: 'limits.maxRedirects' },
  { name: 'nested unknown key limits.foo', layer: { limits: { foo: 1 } }, key: 'limits.foo' },
  { name: 'nested unknown key limits.toString', layer: { limits: { toString: 1 } }, key: 'limits.toString' },
  { name: 'limits not an object', layer: { limits: 5 }, key: 'limits' },
  { name: 'delivery bogus', layer: { delivery: 'bogus' }, key: 'delivery' },
  { name: 'engine bogus', layer: { engine: 'bogus' }, key: 'engine' },
  { name: 'singleFlightScope bogus', layer: { singleFlightScope: 'cluster' }, key: 'singleFlightScope' },
  { name: 'buckets.bad name', layer: { buckets: { 'bad name': {} } }, key: 'buckets.bad name' },
  { name: 'buckets empty', layer: { buckets: {} }, key: 'buckets' },
  { name: 'bucket legacySignatures not boolean', layer: { buckets: { i: { legacySignatures: 'yes' } } }, key: 'buckets.i.legacySignatures' },
  { name: 'bucket unknown key', layer: { buckets: { i: { legacy: true } } }, key: 'buckets.i.legacy' },
  { name: 'nginx.internalPrefix without slash', layer: { nginx: { internalPrefix: '_imageproxy' } }, key: 'nginx.internalPrefix' },
  { name: 'nginx.internalPrefix with a dot', layer: { nginx: { internalPrefix: '/../x' } }, key: 'nginx.internalPrefix' },
  { name: 'nginx.internalPrefix equal to a bucket', layer: { nginx: { internalPrefix: '/i' } }, key: 'nginx.internalPrefix' },
  { name: 'nginx.listen bad', layer: { nginx: { listen: ':8080' } }, key: 'nginx.listen' },
  { name: 'secrets not a list', layer: { secrets: 'abc' }, key: 'secrets' },
  { name: 'secrets[0] empty', layer: { secrets: [''] }, key: 'secrets[0]' },
  { name: 'secrets[1] not a string', layer: { secrets: ['a', 2] }, key: 'secrets[1]' },
  { name: 'skewSeconds fractional', layer: { skewSeconds: 1.5 }, key: 'skewSeconds' },
  { name: 'skewSeconds above a day', layer: { skewSeconds: 86_401 }, key: 'skewSeconds' },
  { name: 'allowPrivateNetworks as a string', layer: { allowPrivateNetworks: 'true' }, key: 'allowPrivateNetworks' },
  { name: 'root empty', layer: { root: '' }, key: 'root' },
  { name: 'allowedAddresses not a list', layer: { allowedAddresses: '10.0.0.1' }, key: 'allowedAddresses' },
  { name: 'allowedAddresses[1] not an address', layer: { allowedAddresses: ['10.0.0.1', 'intranet.local'] }, key: 'allowedAddresses[1]' },
  { name: 'allowedAddresses[0] bad CIDR', layer: { allowedAddresses: ['10.0.0.0/33'] }, key: 'allowedAddresses[0]' },
  { name: 'limits.maxQueuedResizes negative', layer: { limits: { maxQueuedResizes: -1 } }, key: 'limits.maxQueuedResizes' },
  { name: 'limits.maxWaitingResizeBytes fractional', layer: { limits: { maxWaitingResizeBytes: 1.5 } }, key: 'limits.maxWaitingResizeBytes' },
  { name: 'limits.maxConcurrentFetches 0', layer: { limits: { maxConcurrentFetches: 0 } }, key: 'limits.maxConcurrentFetches' },
  { name: 'limits.maxConcurrentResizes 0', layer: { limits: { maxConcurrentResizes: 0 } }, key: 'limits.maxConcurrentResizes' },
  { name: 'limits.maxQueueWaitMs at nginx proxy_read_timeout', layer: { limits: { maxQueueWaitMs: 120_000 } }, key: 'limits.maxQueueWaitMs' },
  { name: 'userAgent with a newline', layer: { userAgent: 'a\r\nX-Evil: 1' }, key: 'userAgent' },
  { name: 'logLevel bogus', layer: { logLevel: 'loud' }, key: 'logLevel' },
  { name: 'quality.jpeg above 100', layer: { quality: { jpeg: 101 } }, key: 'quality.jpeg' },
  { name: 'backoff.maxSeconds below initialSeconds', layer: { backoff: { initialSeconds: 60, maxSeconds: 59 } }, key: 'backoff.maxSeconds' },
  { name: '__proto__ from a JSON file', layer: JSON.parse('{"__proto__": {"listen": "x"}}') as ConfigLayer, key: '__proto__' },
];

describe('validation names the key', () => {
  for (const testCase of INVALID_CASES) {
    it(testCase.name, () => {
      assert.throws(() => buildConfig({ file: testCase.layer }), expectKey(testCase.key));
    });
  }

  it('an invalid value from the environment is named by its config key', () => {
    assert.throws(() => buildConfig({ env: envLayer({ IMAGEPROXY_MAX_BYTES: '1.5' }) }), expectKey('limits.maxBytes'));
  });
});

describe('settings that were removed', () => {
  const removedCases: Array<[string, () => unknown, string]> = [
    ['nginx.cacheSeconds in a file, even at 0', () => buildConfig({ file: { nginx: { cacheSeconds: 0 } } }), 'nginx.cacheSeconds'],
    ['nginx.cacheDir in a file', () => buildConfig({ file: { nginx: { cacheDir: '/var/cache/x' } } }), 'nginx.cacheDir'],
    ['nginx.cacheMaxSize in a file', () => buildConfig({ file: { nginx: { cacheMaxSize: '256m' } } }), 'nginx.cacheMaxSize'],
    ['IMAGEPROXY_NGINX_CACHE_DIR in the environment', () => envLayer({ IMAGEPROXY_NGINX_CACHE_DIR: '/var/cache/x' }), 'IMAGEPROXY_NGINX_CACHE_DIR'],
  ];
  for (const [name, build, key] of removedCases) {
    it(`refuses ${name}, naming it and saying to delete it`, () => {
      assert.throws(build, (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.equal(error.key, key);
        assert.match(error.message, /removed: nginx's verdict cache is gone .*delete this setting/);
        return true;
      });
    });
  }

  it('still calls a misspelt key unknown', () => {
    assert.throws(() => buildConfig({ file: { nginx: { cacheSecs: 2 } } }), /config nginx\.cacheSecs: unknown key/);
  });
});

interface EnvCase {
  name: string;
  env: Record<string, string>;
  expected: ConfigLayer | { errorKey: string };
}

const ENV_CASES: EnvCase[] = [
  { name: 'nothing set', env: { PATH: '/bin' }, expected: {} },
  { name: 'misspelt variable refused', env: { IMAGEPROXY_SECRET: 'x' }, expected: { errorKey: 'IMAGEPROXY_SECRET' } },
  {
    name: 'buckets with a legacy one',
    env: { IMAGEPROXY_BUCKETS: 'i,old:legacy' },
    expected: { buckets: { i: { legacySignatures: false }, old: { legacySignatures: true } } },
  },
  { name: 'buckets with spaces and an empty item', env: { IMAGEPROXY_BUCKETS: ' i , ,f ' }, expected: { buckets: { i: { legacySignatures: false }, f: { legacySignatures: false } } } },
  { name: 'bucket flag other than legacy', env: { IMAGEPROXY_BUCKETS: 'i:old' }, expected: { errorKey: 'buckets' } },
  { name: 'bucket with two flags', env: { IMAGEPROXY_BUCKETS: 'i:legacy:x' }, expected: { errorKey: 'buckets' } },
  { name: 'secrets list', env: { IMAGEPROXY_SECRETS: 'new,old' }, expected: { secrets: ['new', 'old'] } },
  { name: 'sizes list', env: { IMAGEPROXY_SIZES: '150, 300' }, expected: { sizes: [150, 300] } },
  { name: 'sizes with a word', env: { IMAGEPROXY_SIZES: '150,big' }, expected: { errorKey: 'sizes' } },
  { name: 'number', env: { IMAGEPROXY_MAX_BYTES: '1000' }, expected: { limits: { maxBytes: 1000 } } },
  { name: 'two numbers in one object', env: { IMAGEPROXY_MAX_BYTES: '1', IMAGEPROXY_MAX_REDIRECTS: '0' }, expected: { limits: { maxBytes: 1, maxRedirects: 0 } } },
  { name: 'number not a number', env: { IMAGEPROXY_MAX_BYTES: 'lots' }, expected: { errorKey: 'limits.maxBytes' } },
  { name: 'number empty', env: { IMAGEPROXY_SKEW_SECONDS: '' }, expected: { errorKey: 'skewSeconds' } },
  { name: 'boolean true', env: { IMAGEPROXY_ALLOW_PRIVATE_NETWORKS: 'true' }, expected: { allowPrivateNetworks: true } },
  { name: 'boolean 1', env: { IMAGEPROXY_ALLOW_PRIVATE_NETWORKS: '1' }, expected: { allowPrivateNetworks: true } },
  { name: 'boolean YES', env: { IMAGEPROXY_ALLOW_PRIVATE_NETWORKS: 'YES' }, expected: { allowPrivateNetworks: true } },
  { name: 'boolean off', env: { IMAGEPROXY_ALLOW_PRIVATE_NETWORKS: 'off' }, expected: { allowPrivateNetworks: false } },
  { name: 'boolean 0', env: { IMAGEPROXY_ALLOW_PRIVATE_NETWORKS: '0' }, expected: { allowPrivateNetworks: false } },
  { name: 'boolean maybe', env: { IMAGEPROXY_ALLOW_PRIVATE_NETWORKS: 'maybe' }, expected: { errorKey: 'allowPrivateNetworks' } },
  { name: 'nginx prefix', env: { IMAGEPROXY_NGINX_INTERNAL_PREFIX: '/_x' }, expected: { nginx: { internalPrefix: '/_x' } } },
  { name: 'single-flight scope', env: { IMAGEPROXY_SINGLE_FLIGHT_SCOPE: 'tree' }, expected: { singleFlightScope: 'tree' } },
  { name: 'waiting resize bytes 0', env: { IMAGEPROXY_MAX_WAITING_RESIZE_BYTES: '0' }, expected: { limits: { maxWaitingResizeBytes: 0 } } },
  { name: 'strings kept as written', env: { IMAGEPROXY_LISTEN: '0.0.0.0:80', IMAGEPROXY_ROOT: ' /srv ' }, expected: { listen: '0.0.0.0:80', root: ' /srv ' } },
];

describe('formats', () => {
  const cases: ReadonlyArray<{ name: string; env?: string; file?: unknown; formats?: string[]; error?: string }> = [
    { name: 'off by default', formats: [] },
    { name: 'IMAGEPROXY_FORMATS=avif,webp keeps the order', env: 'avif,webp', formats: ['avif', 'webp'] },
    { name: 'IMAGEPROXY_FORMATS=webp', env: ' webp ', formats: ['webp'] },
    { name: 'IMAGEPROXY_FORMATS= (empty) is off', env: '', formats: [] },
    { name: 'a format named twice is refused', env: 'webp,webp', error: 'formats' },
    { name: 'an unknown format is refused', env: 'jxl', error: 'formats[0]' },
    { name: 'a file list in the server\'s order', file: ['webp', 'avif'], formats: ['webp', 'avif'] },
    { name: 'a file value that is no list is refused', file: 'avif', error: 'formats' },
  ];
  for (const testCase of cases) {
    it(testCase.name, () => {
      const build = () =>
        buildConfig({
          ...(testCase.env === undefined ? {} : { env: envLayer({ IMAGEPROXY_FORMATS: testCase.env }) }),
          ...(testCase.file === undefined ? {} : { file: { formats: testCase.file } }),
        });
      if (testCase.error !== undefined) assert.throws(build, expectKey(testCase.error));
      else assert.deepEqual(build().formats, testCase.formats);
    });
  }
});

describe('envLayer', () => {
  for (const testCase of ENV_CASES) {
    it(testCase.name, () => {
      const { expected } = testCase;
      if ('errorKey' in expected && typeof expected.errorKey === 'string') {
        assert.throws(() => envLayer(testCase.env), expectKey(expected.errorKey));
      } else {
        assert.deepEqual(envLayer(testCase.env), expected);
      }
    });
  }
});

describe('readConfigFile', () => {
  let directory = '';
  before(async () => {
    directory = await makeTempRoot();
  });
  after(() => removeTempRoot(directory));

  interface FileCase {
    name: string;
    text: string | null;
    expected: ConfigLayer | 'error';
  }
  const FILE_CASES: FileCase[] = [
    { name: 'the sample', text: SAMPLE_CONFIG, expected: JSON.parse(SAMPLE_CONFIG) as ConfigLayer },
    { name: 'missing file', text: null, expected: 'error' },
    { name: 'not JSON', text: '{ listen: 1 }', expected: 'error' },
    { name: 'a list, not an object', text: '[1, 2]', expected: 'error' },
    { name: 'null', text: 'null', expected: 'error' },
  ];
  for (const [index, testCase] of FILE_CASES.entries()) {
    it(testCase.name, async () => {
      const path = join(directory, `config-${index}.json`);
      if (testCase.text !== null) await writeFile(path, testCase.text);
      if (testCase.expected === 'error') assert.throws(() => readConfigFile(path), expectKey('--config'));
      else assert.deepEqual(readConfigFile(path), testCase.expected);
    });
  }
});

describe('splitListen', () => {
  const CASES = [
    { listen: '127.0.0.1:8091', host: '127.0.0.1', port: 8091 },
    { listen: '[::1]:0', host: '::1', port: 0 },
    { listen: 'localhost:80', host: 'localhost', port: 80 },
  ];
  for (const testCase of CASES) {
    it(testCase.listen, () => {
      assert.deepEqual(splitListen(testCase.listen), { host: testCase.host, port: testCase.port });
    });
  }
});
